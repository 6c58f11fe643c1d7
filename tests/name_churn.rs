//! Slots are capacity for live connections, not for every name ever seen:
//! names that log in and leave one after another never lock a new name
//! out, and a name that comes back after the churn still gets what it had
//! not consumed (its queue file stayed on disk).

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use tcpshm::server::ConnId;
use tcpshm::wire::{Login, LoginResponse, Name};
use tcpshm::{
    Accept, Client, ClientHandler, CloseReason, ConnTx, Connection, Received, Server,
    ServerHandler, Transport,
};

const WELCOME: u16 = 77;

/// Greets every logon with a message carrying the client's name and the
/// logon count.
#[derive(Default)]
struct Greeter {
    logons: u32,
    disconnects: u32,
}

impl ServerHandler for Greeter {
    fn on_new_connection(
        &mut self,
        _: std::net::SocketAddr,
        _: &Login,
        _: &mut LoginResponse,
    ) -> Accept {
        Accept::Group(0)
    }
    fn on_client_logon(&mut self, _: std::net::SocketAddr, _: ConnId, conn: &mut Connection) {
        self.logons += 1;
        let text = format!("{} #{}", conn.remote_name().unwrap(), self.logons);
        let mut m = conn.alloc(WELCOME, text.len()).unwrap();
        m.payload_mut().copy_from_slice(text.as_bytes());
        m.push();
    }
    fn on_client_disconnected(&mut self, _: &Name, _: ConnId, _: CloseReason, _: i32) {
        self.disconnects += 1;
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

#[derive(Default)]
struct Inbox {
    got: Vec<String>,
    rejects: Vec<String>,
}

impl ClientHandler for Inbox {
    fn on_login_success(&mut self, _: &LoginResponse) -> i64 {
        now()
    }
    fn on_login_reject(&mut self, r: &LoginResponse) {
        self.rejects.push(r.error_text());
    }
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        self.got
            .push(String::from_utf8_lossy(msg.payload()).into_owned());
        msg.pop();
    }
}

#[test]
fn twelve_names_through_four_slots_and_the_first_comes_back() {
    let dir = scratch("churn");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    assert_eq!(cfg.tcp_conns_per_group, 4);
    let mut server = Server::new("srv", dir.join("s"), cfg.clone(), Greeter::default()).unwrap();
    server.start("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let disconnects = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (stop, disconnects, server) = (&stop, &disconnects, &mut server);
        s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.poll_ctl(now());
                server.poll_tcp(now(), 0);
                disconnects.store(
                    server.handler().disconnects,
                    std::sync::atomic::Ordering::Relaxed,
                );
                std::thread::yield_now();
            }
        });
        let left = |n: u32| {
            wait_until(10, "the server to see the client leave", || {
                disconnects.load(std::sync::atomic::Ordering::Relaxed) >= n
            })
        };
        // n0 logs in and leaves without consuming its welcome.
        let mut first = Client::new("n0", dir.join("n0"), cfg.clone(), Inbox::default()).unwrap();
        first.connect(Transport::Tcp, addr, 0).unwrap();
        drop(first);
        left(1);
        // Eleven more names, one after another, through four slots.
        for i in 1..12u32 {
            let name = format!("n{i}");
            let mut c = Client::new(&name, dir.join(&name), cfg.clone(), Inbox::default()).unwrap();
            c.connect(Transport::Tcp, addr, 0)
                .unwrap_or_else(|e| panic!("{name} refused after {i} names: {e}"));
            wait_until(10, "the welcome", || {
                c.poll_tcp(now());
                !c.handler().got.is_empty()
            });
            assert!(c.handler().got[0].starts_with(&format!("{name} #")));
            drop(c);
            left(i + 1);
        }
        // n0 again, in a slot other names have used since: first what it
        // had not consumed, then this logon's welcome.
        let mut back = Client::new("n0", dir.join("n0"), cfg.clone(), Inbox::default()).unwrap();
        back.connect(Transport::Tcp, addr, 0).unwrap();
        wait_until(10, "both welcomes", || {
            back.poll_tcp(now());
            back.handler().got.len() == 2
        });
        assert_eq!(back.handler().got, vec!["n0 #1", "n0 #13"]);
        assert!(back.handler().rejects.is_empty());
    });
}
