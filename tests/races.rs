//! The races the sound-core redesign closed, each driven for real:
//! - after a server rename over shared memory, a message the server pushes
//!   in `on_client_logon` reaches the client (the client used to zero the
//!   server's queue after the server was live);
//! - `Client::connect` fails when the session cannot start, instead of
//!   returning Ok with a closed connection;
//! - `on_client_msg` never runs for a connection after its
//!   `on_client_disconnected`, with the control part (which sees the TCP
//!   side end) and the group on two threads.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tcpshm::{
    Accept, ClientHandler, Close, CloseReason, ConnId, ConnTx, ConnectError, Connection,
    ControlHandler, GroupHandler, LoginRequest, Name, Received, Server, ServerParts, Transport,
};
use tcpshm_v1::{Login, Response, STATUS_OK};

/// Greets every client in `on_client_logon`, then echoes.
#[derive(Default)]
struct Greeter;

const WELCOME: u16 = 77;

impl ControlHandler for Greeter {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Greeter {
    fn on_client_logon(&mut self, _: ConnId, _: &LoginRequest, conn: &mut Connection) {
        let mut m = conn.alloc(WELCOME, 7).unwrap();
        m.payload_mut().copy_from_slice(b"welcome");
        m.push();
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        msg.pop();
        rsp.push();
    }
}

#[derive(Default)]
struct Log {
    got: Vec<(u16, Vec<u8>)>,
}

impl ClientHandler for Log {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        self.got.push((msg.msg_type(), msg.payload().to_vec()));
        msg.pop();
    }
}

/// Logs in to a server named `server`, waits for its welcome, echoes one
/// message; returns what arrived.
fn session(dir: &std::path::Path, server: &str, cfg: &tcpshm::Config) -> Vec<(u16, Vec<u8>)> {
    let mut srv: Server = Server::new(server, dir.join("s"), cfg.clone()).unwrap();
    srv.listen("127.0.0.1:0").unwrap();
    let addr = srv.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut greeter = Greeter;
    std::thread::scope(|s| {
        serve(s, &mut srv, &mut greeter, &stop);
        let _stop = StopOnDrop(&stop);
        let mut c = client(dir, "cli", cfg);
        let mut log = Log::default();
        c.connect(Transport::Shm, addr, 0).unwrap();
        wait_until(10, "the welcome", || {
            c.poll(now(), &mut log);
            !log.got.is_empty()
        });
        let mut m = c.connection().alloc(5, 4).unwrap();
        m.payload_mut().copy_from_slice(b"ping");
        m.push();
        wait_until(10, "the echo", || {
            c.poll(now(), &mut log);
            log.got.len() == 2
        });
        log.got
    })
}

#[test]
fn a_message_pushed_at_logon_after_a_rename_arrives_over_shm() {
    let dir = scratch("rename");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let expected = vec![(WELCOME, b"welcome".to_vec()), (5, b"ping".to_vec())];
    // Several renames: each starts a new pair whose first message is
    // pushed while the client is still taking in the login response.
    for (i, name) in ["monday", "tuesday", "wednesday", "thursday"]
        .iter()
        .enumerate()
    {
        assert_eq!(session(&dir, name, &cfg), expected, "server {name} (#{i})");
    }
}

#[test]
fn connect_fails_when_the_session_cannot_start() {
    let dir = scratch("badack");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    // A server that accepts the login but acknowledges 1000 messages the
    // client never sent.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut login = vec![0u8; tcpshm_v1::padded(Login::size(Login::U8))];
        s.read_exact(&mut login).unwrap();
        let rsp = Response {
            ack: 1000,
            seq_start: 0,
            seq_end: 0,
            user_data: vec![0],
            status: STATUS_OK,
            server: tcpshm_v1::name16("fake"),
            error: [0; 32],
        };
        s.write_all(&rsp.encode(Login::U8)).unwrap();
        let mut rest = [0u8; 64];
        let _ = s.read(&mut rest); // until the client closes
    });
    let mut c = client(&dir, "cli", &cfg);
    match c.connect(Transport::Tcp, addr, 0) {
        Err(ConnectError::Session(Close {
            reason: CloseReason::AckBeyondSent,
            ..
        })) => {}
        other => panic!("expected a session error, got {other:?}"),
    }
    assert!(c.connection().is_closed());
    drop(c);
    fake.join().unwrap();
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Msg,
    Disconnected,
}

/// Records every callback in one log shared by the control part's thread
/// and the group's thread, in the order they happen.
#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<Event>>>,
}

impl ControlHandler for Recorder {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Recorder {
    fn on_client_disconnected(&mut self, _: ConnId, _: &Name, _: Close) {
        self.log.lock().unwrap().push(Event::Disconnected);
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        // Slow, so a backlog is still waiting when the client goes away.
        std::thread::sleep(Duration::from_micros(20));
        self.log.lock().unwrap().push(Event::Msg);
        msg.pop();
    }
}

#[test]
fn no_message_is_delivered_after_the_disconnect_is_reported() {
    let dir = scratch("order");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    for round in 0..5 {
        let log = Arc::new(Mutex::new(Vec::new()));
        let rec = Recorder { log: log.clone() };
        let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            let ServerParts { control, shm, .. } = server.parts();
            let group = &mut shm[0];
            let (mut group_handler, mut control_handler) = (rec.clone(), rec.clone());
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    group.poll(now(), &mut group_handler);
                    std::thread::yield_now();
                }
            });
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    control.poll(now(), &mut control_handler);
                    std::thread::yield_now();
                }
            });
            let mut c = client(&dir, "cli", &cfg);
            c.connect(Transport::Shm, addr, 0).unwrap();
            let mut n = 0;
            while n < 2000 {
                let Ok(mut m) = c.connection().alloc(1, 8) else {
                    break;
                };
                m.payload_mut().fill(1);
                m.push();
                n += 1;
            }
            drop(c); // the session ends with a backlog in the ring
            wait_until(20, "the disconnect", || {
                log.lock().unwrap().contains(&Event::Disconnected)
            });
            // Give a wrong order every chance to show.
            std::thread::sleep(Duration::from_millis(50));
        });
        let log = log.lock().unwrap();
        let at = log.iter().position(|e| *e == Event::Disconnected).unwrap();
        let after = log[at..].iter().filter(|e| **e == Event::Msg).count();
        assert_eq!(
            after, 0,
            "round {round}: {after} messages delivered after the disconnect"
        );
    }
}
