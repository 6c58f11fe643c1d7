//! The server's login rules (PROTOCOL.md §4) with their exact status codes
//! and texts, from real clients and from a raw socket.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use tcpshm::{Client, ConnectError, Rejection, Server};
use tcpshm_v1::{Login, Response, STATUS_REJECTED};

fn raw_login(addr: std::net::SocketAddr, frame: &[u8]) -> Option<Response> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(frame).unwrap();
    let mut b = vec![0u8; Response::frame_len(Login::U8)];
    match s.read_exact(&mut b) {
        Ok(()) => Some(Response::decode(&b, Login::U8).unwrap()),
        Err(_) => None, // closed without an answer
    }
}

fn rejected(r: Result<u8, ConnectError>) -> Rejection {
    match r {
        Err(e @ ConnectError::Rejected(_)) => {
            let ConnectError::Rejected(why) = &e else {
                unreachable!()
            };
            assert_eq!(e.is_transient(), why.is_transient());
            why.clone()
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn rejects_carry_the_protocol_texts() {
    let dir = scratch("login");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| c.tcp_conns_per_group = 1);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);

        // Empty client name (only a raw peer can send one).
        let r = raw_login(addr, &Login::new("").encode()).expect("an answer");
        assert_eq!(
            (r.status, r.error_text().as_str()),
            (STATUS_REJECTED, "Invalid client name")
        );
        assert_eq!(r.server_name(), "srv");

        // A name that would escape the directory.
        let r = raw_login(addr, &Login::new("../x").encode()).expect("an answer");
        assert_eq!(r.error_text(), "Invalid client name");

        // A wrong frame: dropped with the connection, no answer.
        let mut junk = Login::new("").encode();
        junk[2] = 9; // msg_type 9
        assert!(raw_login(addr, &junk).is_none());
        let mut junk = Login::new("").encode();
        junk[0] = 40; // size 40
        assert!(raw_login(addr, &junk).is_none());

        // Max clients (one slot), and already logged on (same name).
        let mut a = client(&dir, "a", &cfg);
        let mut ah = CheckingClient::default();
        a.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let mut b = client(&dir, "b", &cfg);
        assert_eq!(
            rejected(b.connect(tcpshm::Transport::Tcp, addr, 0)),
            Rejection::ServerFull
        );
        let mut a2: Client = Client::new("a", dir.join("a2"), cfg.clone()).unwrap();
        assert_eq!(
            rejected(a2.connect(tcpshm::Transport::Tcp, addr, 0)),
            Rejection::AlreadyLoggedOn
        );
        // The logged-on client is not disturbed.
        assert!(send(a.connection(), 0, 16));
        wait_until(30, "echo", || {
            a.poll(now(), &mut ah);
            ah.received == 1
        });
    });
}

#[test]
fn application_reject_with_its_text_or_the_default() {
    let dir = scratch("reject");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    // A text longer than the response's 31 bytes is cut at a character
    // boundary: 20 two-byte characters become 15.
    let long = "é".repeat(20);
    let cut = "é".repeat(15);
    for (text, want) in [("Go away", "Go away"), ("", "Login Reject"), (&long, &cut)] {
        let handler = EchoServer {
            reject: Some(text.to_string()),
            ..Default::default()
        };
        with_echo_server(&dir, "srv", &cfg, handler, |addr| {
            let mut c = client(&dir, "c", &cfg);
            let why = rejected(c.connect(tcpshm::Transport::Tcp, addr, 0));
            assert_eq!((why.text(), why.is_transient()), (want, false));
            assert!(c.connection().is_closed());
            // A rejected client has logged in to nothing: it records no
            // last server, and no pair file.
            assert!(!dir.join("c/c.lastserver").exists());
            assert!(!dir.join("c/c_srv.ptcp").exists());
        });
    }
}

#[test]
fn connect_errors_are_values() {
    let dir = scratch("connerr");
    let _c = Cleanup(dir.clone());
    // Nothing listens on this port (bound, then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = client(&dir, "c", &config(&dir));
    match c.connect(tcpshm::Transport::Tcp, port, 0) {
        Err(ConnectError::Io {
            op: "connect",
            source,
        }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected connection refused, got {other:?}"),
    }
    // Bad names and configs are refused at construction.
    assert!(Client::<u8, u8>::new("a/b", dir.join("x"), config(&dir)).is_err());
    let bad = config_with(&dir, |c| c.shm_queue_size = 3000);
    match Server::<u8, u8>::new("srv", dir.join("y"), bad) {
        Err(tcpshm::SetupError::Config(e)) => {
            assert_eq!(e.setting, "shm_queue_size");
            assert!(e.to_string().contains("shm_queue_size: 3000"), "{e}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn ipv6_and_bound_port() {
    let dir = scratch("v6");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    if server.listen("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let addr = server.local_addr().unwrap();
    assert!(addr.is_ipv6() && addr.port() != 0);
    // A second server on the same port: a clear error value.
    let mut other: Server = Server::new("srv2", dir.join("s2"), cfg.clone()).unwrap();
    let e = other.listen(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        let mut c = client(&dir, "c", &cfg);
        let mut h = CheckingClient::default();
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        assert!(send(c.connection(), 0, 8));
        wait_until(30, "echo", || {
            c.poll(now(), &mut h);
            h.received == 1
        });
    });
}
