//! Slots are capacity for live connections, not for every name ever seen:
//! names that log in and leave one after another never lock a new name
//! out, and a name that comes back after the churn still gets what it had
//! not consumed (its queue file stayed on disk).

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use tcpshm::{
    Accept, ClientHandler, Close, ConnId, ConnTx, Connection, ControlHandler, GroupHandler,
    LoginRequest, Name, Received, Server, Transport,
};

const WELCOME: u16 = 77;

/// Greets every logon with a message carrying the client's name and the
/// logon count.
#[derive(Default)]
struct Greeter {
    logons: u32,
    disconnects: u32,
}

impl ControlHandler for Greeter {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Greeter {
    fn on_client_logon(&mut self, _: ConnId, _: &LoginRequest, conn: &mut Connection) {
        self.logons += 1;
        let text = format!("{} #{}", conn.remote_name().unwrap(), self.logons);
        let mut m = conn.alloc(WELCOME, text.len()).unwrap();
        m.payload_mut().copy_from_slice(text.as_bytes());
        m.push();
    }
    fn on_client_disconnected(&mut self, _: ConnId, _: &Name, _: Close) {
        self.disconnects += 1;
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

#[derive(Default)]
struct Inbox {
    got: Vec<String>,
}

impl ClientHandler for Inbox {
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
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let mut greeter = Greeter::default();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let disconnects = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (stop, disconnects, server) = (&stop, &disconnects, &mut server);
        let greeter = &mut greeter;
        s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.poll(now(), greeter);
                disconnects.store(greeter.disconnects, std::sync::atomic::Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        let left = |n: u32| {
            wait_until(10, "the server to see the client leave", || {
                disconnects.load(std::sync::atomic::Ordering::Relaxed) >= n
            })
        };
        // n0 logs in and leaves without consuming its welcome.
        let mut first = client(&dir, "n0", &cfg);
        first.connect(Transport::Tcp, addr, 0).unwrap();
        drop(first);
        left(1);
        // Eleven more names, one after another, through four slots.
        for i in 1..12u32 {
            let name = format!("n{i}");
            let mut c = client(&dir, &name, &cfg);
            let mut inbox = Inbox::default();
            c.connect(Transport::Tcp, addr, 0)
                .unwrap_or_else(|e| panic!("{name} refused after {i} names: {e}"));
            wait_until(10, "the welcome", || {
                c.poll(now(), &mut inbox);
                !inbox.got.is_empty()
            });
            assert!(inbox.got[0].starts_with(&format!("{name} #")));
            drop(c);
            left(i + 1);
        }
        // n0 again, in a slot other names have used since: first what it
        // had not consumed, then this logon's welcome.
        let mut back = client(&dir, "n0", &cfg);
        let mut inbox = Inbox::default();
        back.connect(Transport::Tcp, addr, 0).unwrap();
        wait_until(10, "both welcomes", || {
            back.poll(now(), &mut inbox);
            inbox.got.len() == 2
        });
        assert_eq!(inbox.got, vec!["n0 #1", "n0 #13"]);
    });
}
