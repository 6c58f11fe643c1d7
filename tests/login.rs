//! The server's login rules (PROTOCOL.md §4) with their exact status codes
//! and texts, from real clients and from a raw socket.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use tcpshm::wire::{Login, LoginResponse, LoginStatus, Name};
use tcpshm::{Client, Config, ConnectError, Server};

fn raw_login(addr: std::net::SocketAddr, frame: &[u8]) -> Option<LoginResponse> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(frame).unwrap();
    let mut b = vec![0u8; LoginResponse::<u8>::FRAME];
    match s.read_exact(&mut b) {
        Ok(()) => Some(LoginResponse::<u8>::decode(&b).unwrap().1),
        Err(_) => None, // closed without an answer
    }
}

fn rejected(r: Result<(), ConnectError>) -> String {
    match r {
        Err(ConnectError::Rejected(t)) => t,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn rejects_carry_the_protocol_texts() {
    let dir = scratch("login");
    let _c = Cleanup(dir.clone());
    let cfg = Config {
        tcp_conns_per_group: 1,
        ..config(&dir)
    };
    let mut server = Server::new("srv", dir.join("s"), cfg.clone(), EchoServer::default()).unwrap();
    server.start("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        serve(s, &mut server, false, &stop);
        let _stop = StopOnDrop(&stop);

        // Empty client name (only a raw peer can send one).
        let login = Login::<u8>::default();
        let r = raw_login(addr, &login.encode(0)).expect("an answer");
        assert_eq!(
            (r.status, r.error_text().as_str()),
            (LoginStatus::Rejected, "Invalid client name")
        );
        assert_eq!(Name::from_wire(&r.server_name).unwrap().as_str(), "srv");

        // A name that would escape the directory.
        let mut login = Login::<u8>::default();
        login.client_name[..5].copy_from_slice(b"../x\0");
        let r = raw_login(addr, &login.encode(0)).expect("an answer");
        assert_eq!(r.error_text(), "Invalid client name");

        // A wrong frame: dropped with the connection, no answer.
        let mut junk = Login::<u8>::default().encode(0);
        junk[2] = 9; // msg_type 9
        assert!(raw_login(addr, &junk).is_none());
        let mut junk = Login::<u8>::default().encode(0);
        junk[0] = 40; // size 40
        assert!(raw_login(addr, &junk).is_none());

        // Max clients (one slot), and already logged on (same name).
        let mut a =
            Client::new("a", dir.join("a"), cfg.clone(), CheckingClient::default()).unwrap();
        a.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let mut b =
            Client::new("b", dir.join("b"), cfg.clone(), CheckingClient::default()).unwrap();
        assert_eq!(
            rejected(b.connect(tcpshm::Transport::Tcp, addr, 0)),
            "Max client cnt exceeded"
        );
        assert_eq!(
            b.handler().rejects,
            vec!["Max client cnt exceeded".to_string()]
        );
        let mut a2 =
            Client::new("a", dir.join("a2"), cfg.clone(), CheckingClient::default()).unwrap();
        assert_eq!(
            rejected(a2.connect(tcpshm::Transport::Tcp, addr, 0)),
            "Already loggned on"
        );
        // The logged-on client is not disturbed.
        assert!(send(a.connection(), 0, 16));
        wait_until(30, "echo", || {
            a.poll_tcp(now());
            a.handler().received == 1
        });
    });
}

#[test]
fn application_reject_with_its_text_or_the_default() {
    let dir = scratch("reject");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    for (text, want) in [("Go away", "Go away"), ("", "Login Reject")] {
        let handler = EchoServer {
            reject: Some(text.to_string()),
            ..Default::default()
        };
        with_echo_server(&dir, "srv", &cfg, handler, |addr| {
            let mut c =
                Client::new("c", dir.join("c"), cfg.clone(), CheckingClient::default()).unwrap();
            assert_eq!(rejected(c.connect(tcpshm::Transport::Tcp, addr, 0)), want);
            assert!(c.connection().is_closed());
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
    let mut c = Client::new("c", dir.join("c"), config(&dir), CheckingClient::default()).unwrap();
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
    assert!(Client::<_>::new(
        "a/b",
        dir.join("x"),
        config(&dir),
        CheckingClient::default()
    )
    .is_err());
    let bad = Config {
        shm_queue_size: 3000,
        ..config(&dir)
    };
    let e = Server::<_>::new("srv", dir.join("y"), bad, EchoServer::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("shm_queue_size 3000"), "{e}");
}

#[test]
fn ipv6_and_bound_port() {
    let dir = scratch("v6");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server = Server::new("srv", dir.join("s"), cfg.clone(), EchoServer::default()).unwrap();
    if server.start("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let addr = server.local_addr().unwrap();
    assert!(addr.is_ipv6() && addr.port() != 0);
    // A second server on the same port: a clear error value.
    let mut other =
        Server::new("srv2", dir.join("s2"), cfg.clone(), EchoServer::default()).unwrap();
    let e = other.start(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        serve(s, &mut server, false, &stop);
        let _stop = StopOnDrop(&stop);
        let mut c =
            Client::new("c", dir.join("c"), cfg.clone(), CheckingClient::default()).unwrap();
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        assert!(send(c.connection(), 0, 8));
        wait_until(30, "echo", || {
            c.poll_tcp(now());
            c.handler().received == 1
        });
    });
}
