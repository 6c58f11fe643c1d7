//! The server's parts on their own threads (control, one TCP group, one
//! SHM group) and an SHM client's two pollers on two threads, with no
//! locks: messages still arrive exactly once, in order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use tcpshm::{Server, ServerParts};

#[test]
fn server_parts_and_client_pollers_on_separate_threads() {
    let dir = scratch("threads");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let mut ctl_echo = EchoServer::default();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let n = 3000u64;
    let mut tcp_echo = EchoServer::default();
    let mut shm_echo = EchoServer::default();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let ServerParts {
            control, tcp, shm, ..
        } = server.parts();
        let stop = &stop;
        let (tg, sg) = (&mut tcp[0], &mut shm[0]);
        let (te, se, ce) = (&mut tcp_echo, &mut shm_echo, &mut ctl_echo);
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                control.poll(now(), ce);
                std::thread::yield_now();
            }
        });
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tg.poll(now(), te);
                std::thread::yield_now();
            }
        });
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sg.poll(now(), se);
                std::thread::yield_now();
            }
        });
        // A TCP client on this thread.
        let mut h = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        let mut tcp_client = client(&dir, "t", &cfg);
        tcp_client.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let mut sent = 0;
        wait_until(60, "tcp echoes", || {
            while sent < n && send(tcp_client.connection(), sent, small_len(sent)) {
                sent += 1;
            }
            tcp_client.poll(now(), &mut h);
            h.received == n
        });
        // An SHM client whose TCP side and SHM side poll on two threads.
        let mut tcp_side = CheckingClient::default();
        let mut shm_client = client(&dir, "m", &cfg);
        shm_client.connect(tcpshm::Transport::Shm, addr, 0).unwrap();
        let mut msgs = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        let done = AtomicBool::new(false);
        std::thread::scope(|s2| {
            let (mut tcp, mut shm) = shm_client.parts();
            let done = &done;
            let tcp_side = &mut tcp_side;
            s2.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    tcp.poll(now(), tcp_side);
                    std::thread::yield_now();
                }
            });
            let mut sent = 0;
            wait_until(60, "shm echoes", || {
                let conn = shm.connection().unwrap();
                while sent < n && send(conn, sent, small_len(sent)) {
                    sent += 1;
                }
                shm.poll(now(), &mut msgs);
                msgs.received == n
            });
            done.store(true, Ordering::Relaxed);
        });
        assert!(tcp_side.disconnects.is_empty());
        assert_eq!(tcp_side.received, 0, "the TCP side delivers no shm message");
    });
    assert_eq!(tcp_echo.next_seq["t"], n);
    assert_eq!(shm_echo.next_seq["m"], n);
    assert!(tcp_echo.logons == ["t"] && shm_echo.logons == ["m"]);
}
