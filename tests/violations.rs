//! Protocol violations by a peer close that connection with a reason naming
//! the violation, and nothing else: a raw socket logs in properly, then
//! misbehaves, while a well-behaved client keeps exchanging messages.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use tcpshm::{AllocError, CloseReason, Server};
use tcpshm_v1::{Header, Login, Peer, STATUS_OK};

/// Logs in as `name` over TCP from a raw socket.
fn raw_logged_in(addr: std::net::SocketAddr, name: &str) -> TcpStream {
    let (p, r) = Peer::login(addr, &Login::new(name), Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, STATUS_OK, "{}", r.error_text());
    p.stream
}

fn header(size: u16, msg_type: u16, ack: u32) -> [u8; 8] {
    Header {
        size,
        msg_type,
        ack,
    }
    .bytes()
}

#[test]
fn violations_close_only_the_offending_connection() {
    let dir = scratch("viol");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = 8;
        c.tcp_queue_size = 8192;
        c.tcp_recv_buf_max_size = 16384;
    });
    assert!((u16::MAX as usize) > cfg.tcp_recv_buf_max_size);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut h = CheckingClient {
        len_of: Some(small_len),
        ..Default::default()
    };
    let mut echo = EchoServer::default();
    let mut good = client(&dir, "good", &cfg);
    let cases: Vec<(&str, Vec<u8>, CloseReason)> = vec![
        ("tiny", header(3, 7, 0).to_vec(), CloseReason::SizeTooSmall),
        ("zero", header(0, 0, 0).to_vec(), CloseReason::SizeTooSmall),
        (
            "ackfar",
            header(8, 0, 5).to_vec(),
            CloseReason::AckBeyondSent,
        ),
        (
            "huge",
            header(u16::MAX, 9, 0).to_vec(),
            CloseReason::MsgTooLarge,
        ),
        (
            "relogin",
            Login::new("relogin").encode(),
            CloseReason::LoginAfterLogin,
        ),
    ];
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        good.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let mut sent = 0u64;
        for (k, (name, bytes, _)) in cases.iter().enumerate() {
            let mut raw = raw_logged_in(addr, name);
            raw.write_all(bytes).unwrap();
            raw.set_nonblocking(true).unwrap();
            // The good client keeps exchanging messages while the server
            // closes the raw connection (read sees EOF or a reset).
            let target = (k as u64 + 1) * 200;
            let mut closed = false;
            let mut b = [0u8; 64];
            wait_until(30, "the close and the good client's echoes", || {
                match raw.read(&mut b) {
                    Ok(0) => closed = true,
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed = true,
                    _ => {} // heartbeats, or nothing yet
                }
                while sent < target && send(good.connection(), sent, small_len(sent)) {
                    sent += 1;
                }
                good.poll(now(), &mut h);
                closed && h.received == target
            });
        }
        assert!(h.disconnects.is_empty());
    });
    let d = &echo.disconnects;
    for (name, _, reason) in &cases {
        assert!(
            d.contains(&(name.to_string(), *reason)),
            "{name}: expected {reason:?} in {d:?}"
        );
    }
    assert!(!d.iter().any(|(n, _)| n == "good"));
    assert_eq!(echo.next_seq["good"], 200 * cases.len() as u64);
}

#[test]
fn too_large_is_refused_at_alloc_never_truncated() {
    let dir = scratch("toolarge");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        let mut c = client(&dir, "c", &cfg);
        // Before any login there is no queue.
        assert_eq!(c.connection().alloc(1, 8).err(), Some(AllocError::NotOpen));
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let max = cfg.max_tcp_payload();
        assert!(c.connection().alloc(1, max).is_ok());
        assert_eq!(
            c.connection().alloc(1, max + 1).err(),
            Some(AllocError::TooLarge { len: max + 1, max })
        );
        assert_eq!(
            c.connection().alloc(0, 8).err(),
            Some(AllocError::ReservedType)
        );
    });
}
