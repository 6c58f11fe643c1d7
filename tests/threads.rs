//! The server's parts on their own threads (control, one TCP group, one
//! SHM group) and an SHM client's two pollers on two threads, with no
//! locks: messages still arrive exactly once, in order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use tcpshm::{Client, Server};

#[test]
fn server_parts_and_client_pollers_on_separate_threads() {
    let dir = scratch("threads");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server = Server::new("srv", dir.join("s"), cfg.clone(), EchoServer::default()).unwrap();
    server.start("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let n = 3000u64;
    let mut tcp_echo = EchoServer::default();
    let mut shm_echo = EchoServer::default();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (mut ctl, tcp_groups, shm_groups) = server.split();
        let stop = &stop;
        let (tg, sg) = (&mut tcp_groups[0], &mut shm_groups[0]);
        let (te, se) = (&mut tcp_echo, &mut shm_echo);
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                ctl.poll(now());
                std::thread::yield_now();
            }
        });
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tg.poll_tcp(now(), te);
                std::thread::yield_now();
            }
        });
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sg.poll_shm(se);
                std::thread::yield_now();
            }
        });
        // A TCP client on this thread.
        let handler = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        let mut tcp_client = Client::new("t", dir.join("t"), cfg.clone(), handler).unwrap();
        tcp_client.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let mut sent = 0;
        wait_until(60, "tcp echoes", || {
            while sent < n && send(tcp_client.connection(), sent, small_len(sent)) {
                sent += 1;
            }
            tcp_client.poll_tcp(now());
            tcp_client.handler().received == n
        });
        // An SHM client whose TCP side and SHM side poll on two threads.
        let handler = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        let mut shm_client = Client::new("m", dir.join("m"), cfg.clone(), handler).unwrap();
        shm_client.connect(tcpshm::Transport::Shm, addr, 0).unwrap();
        let mut msgs = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        let done = AtomicBool::new(false);
        std::thread::scope(|s2| {
            let (mut tcp, mut shm) = shm_client.split();
            let done = &done;
            s2.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    tcp.poll(now());
                    std::thread::yield_now();
                }
            });
            let mut sent = 0;
            wait_until(60, "shm echoes", || {
                let conn = shm.connection().unwrap();
                while sent < n && send(conn, sent, small_len(sent)) {
                    sent += 1;
                }
                shm.poll(&mut msgs);
                msgs.received == n
            });
            done.store(true, Ordering::Relaxed);
        });
        assert!(shm_client.handler().disconnects.is_empty());
    });
    assert_eq!(tcp_echo.next_seq["t"], n);
    assert_eq!(shm_echo.next_seq["m"], n);
    assert_eq!(
        server.handler().logons.len(),
        0,
        "group callbacks went to the group handlers"
    );
    assert!(tcp_echo.logons == ["t"] && shm_echo.logons == ["m"]);
}
