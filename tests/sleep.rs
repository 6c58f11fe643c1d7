//! Parts that sleep (`Wait`) and wake for work:
//! - a sleeping server and a sleeping client exchange messages over TCP
//!   and SHM, and sleep for real between them (a server that spun would
//!   poll millions of times);
//! - a wake-up is never lost: a client publishes at random moments around
//!   the server's announcement of its sleep, thousands of times, with
//!   heartbeats 30 s apart (a lost wake-up would wait for one), every
//!   echo within its deadline;
//! - a C++-style peer (a raw protocol-v1 client over TCP; over shared
//!   memory a client that wakes no one, as a C++ one) gets its echoes
//!   from a sleeping server;
//! - the descriptors turn readable when there is work.

mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tcpshm::{Config, Server, Transport, Wait};

/// Polls `server` on a scoped thread, sleeping in `Server::wait` (at most
/// `nap` at a time) whenever a poll finds nothing; counts its polls.
fn sleeping_server<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    server: &'s mut Server,
    echo: &'s mut EchoServer,
    stop: &'s AtomicBool,
    polls: &'s AtomicU64,
    nap: Duration,
) -> std::thread::ScopedJoinHandle<'s, ()> {
    s.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            polls.fetch_add(1, Ordering::Relaxed);
            if !server.poll(now(), echo) {
                server.wait(now(), nap).unwrap();
            }
        }
    })
}

/// Sends message `seq` and waits for its echo, the client sleeping in
/// `Client::wait` between polls; panics past `deadline`.
fn echo_sleeping(c: &mut TestClient, got: &mut CheckingClient, seq: u64, deadline: Duration) {
    assert!(send(c.connection(), seq, small_len(seq)));
    let until = Instant::now() + deadline;
    while got.received <= seq {
        assert!(
            Instant::now() < until,
            "echo {seq} not back within {deadline:?}: a wake-up lost?"
        );
        if !c.poll(now(), got) {
            c.wait(now(), Duration::from_secs(60)).unwrap();
        }
    }
}

fn quiet_config(dir: &std::path::Path) -> Config {
    config_with(dir, |c| {
        // A lost wake-up would wait for a heartbeat: far beyond the
        // deadlines below.
        c.heartbeat_interval = Duration::from_secs(30);
        c.connection_timeout = Duration::from_secs(90);
    })
}

fn sleeping_peers(t: Transport) {
    let dir = scratch("sleep-peers");
    let _c = Cleanup(dir.clone());
    let cfg = quiet_config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let (stop, polls) = (AtomicBool::new(false), AtomicU64::new(0));
    let mut got = CheckingClient::default();
    let n = 40;
    std::thread::scope(|s| {
        let srv = sleeping_server(
            s,
            &mut server,
            &mut echo,
            &stop,
            &polls,
            Duration::from_secs(60),
        );
        let _stop = StopOnDrop(&stop);
        let mut c = client(&dir, "c", &cfg);
        c.connect(t, addr, 0).unwrap();
        for seq in 0..n {
            echo_sleeping(&mut c, &mut got, seq, Duration::from_secs(5));
            // Both asleep when the next one comes.
            let pause = Instant::now() + Duration::from_millis(5);
            while Instant::now() < pause {
                if !c.poll(now(), &mut got) {
                    c.wait(now(), pause - Instant::now()).unwrap();
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        // The server sleeps until its next timer: a message wakes it.
        assert!(send(c.connection(), n, 8));
        c.poll(now(), &mut got);
        srv.join().unwrap();
    });
    assert_eq!(got.received, n);
    assert!(echo.disconnects.is_empty() && got.disconnects.is_empty());
    let polls = polls.load(Ordering::Relaxed);
    eprintln!("{t:?}: {n} echoes, {polls} server polls");
    assert!(
        polls < 200 * n,
        "{polls} server polls for {n} messages: it did not sleep"
    );
}

#[test]
fn a_sleeping_server_and_client_exchange_messages_over_tcp() {
    sleeping_peers(Transport::Tcp);
}

#[test]
fn a_sleeping_server_and_client_exchange_messages_over_shm() {
    sleeping_peers(Transport::Shm);
}

/// The client publishes at random moments (a spin of 0 to 200 µs after
/// each echo) while the server goes to sleep and wakes, 2,000 times: no
/// echo waits for a heartbeat.
fn no_lost_wake_up(t: Transport) {
    let dir = scratch("sleep-race");
    let _c = Cleanup(dir.clone());
    let cfg = quiet_config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let (stop, polls) = (AtomicBool::new(false), AtomicU64::new(0));
    let mut got = CheckingClient::default();
    let n = 2000;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    std::thread::scope(|s| {
        let srv = sleeping_server(
            s,
            &mut server,
            &mut echo,
            &stop,
            &polls,
            Duration::from_secs(60),
        );
        let _stop = StopOnDrop(&stop);
        let mut c = client(&dir, "c", &cfg);
        c.connect(t, addr, 0).unwrap();
        for seq in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let spin = Instant::now() + Duration::from_micros(rng % 200);
            while Instant::now() < spin {
                c.poll(now(), &mut got);
            }
            echo_sleeping(&mut c, &mut got, seq, Duration::from_secs(5));
        }
        // The server stops before the client goes (a message wakes it).
        stop.store(true, Ordering::Relaxed);
        assert!(send(c.connection(), n, 8));
        c.poll(now(), &mut got);
        srv.join().unwrap();
    });
    assert_eq!(got.received, n);
    assert!(
        echo.disconnects.is_empty() && got.disconnects.is_empty(),
        "{:?} {:?}",
        echo.disconnects,
        got.disconnects
    );
}

#[test]
fn no_wake_up_is_lost_over_shm() {
    no_lost_wake_up(Transport::Shm);
}

#[test]
fn no_wake_up_is_lost_over_tcp() {
    no_lost_wake_up(Transport::Tcp);
}

/// A raw protocol-v1 client over TCP, and over shared memory a client
/// that wakes no server (as a C++ one), get every echo from a server that
/// sleeps whenever it can.
#[test]
fn cpp_style_peers_are_served_by_a_sleeping_server() {
    let dir = scratch("sleep-v1");
    let _c = Cleanup(dir.clone());
    let cfg = quiet_config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let (stop, polls) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        let srv = sleeping_server(
            s,
            &mut server,
            &mut echo,
            &stop,
            &polls,
            Duration::from_secs(60),
        );
        let _stop = StopOnDrop(&stop);
        // TCP: the v1 stand-in, byte for byte a C++ client.
        let login = tcpshm_v1::Login::new("v1tcp");
        let (mut peer, rsp) =
            tcpshm_v1::Peer::login(addr, &login, Duration::from_secs(10)).unwrap();
        assert_eq!(rsp.status, tcpshm_v1::STATUS_OK);
        for seq in 0..20u64 {
            let p = payload(seq, 24);
            peer.send((seq % 1000) as u16 + 1, &p).unwrap();
            let (h, back) = peer.recv().unwrap();
            assert_eq!(
                (h.msg_type, &back[..p.len()]),
                ((seq % 1000) as u16 + 1, &p[..])
            );
            std::thread::sleep(Duration::from_millis(3));
        }
        // Shared memory: a client that never wakes the server (nor rings),
        // on the v1 ring, as a C++ client: the server sleeps in slices.
        let cpp = config_with(&dir, |c| {
            c.shm_doorbell_slots = usize::MAX;
            c.shm_fast_path = false;
            c.heartbeat_interval = Duration::from_secs(30);
            c.connection_timeout = Duration::from_secs(90);
        });
        let mut c = client(&dir, "cppshm", &cpp);
        c.connect(Transport::Shm, addr, 0).unwrap();
        let mut got = CheckingClient::default();
        for seq in 0..20 {
            assert!(send(c.connection(), seq, small_len(seq)));
            let until = Instant::now() + Duration::from_secs(5);
            while got.received <= seq {
                assert!(Instant::now() < until, "echo {seq} late");
                c.poll(now(), &mut got);
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        assert!(got.disconnects.is_empty());
        // The server stops while the clients are up (it looks at the C++
        // client's ring every millisecond).
        stop.store(true, Ordering::Relaxed);
        srv.join().unwrap();
    });
    assert!(echo.disconnects.is_empty(), "{:?}", echo.disconnects);
}

/// What `Wait` promises an event loop of its own: the descriptor turns
/// readable when the part has work (here a message from the peer), and
/// `wait_timeout` says zero while a poll has work.
#[test]
fn descriptors_turn_readable_with_work() {
    for t in [Transport::Tcp, Transport::Shm] {
        let dir = scratch("sleep-fd");
        let _c = Cleanup(dir.clone());
        let cfg = quiet_config(&dir);
        let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        let mut echo = EchoServer::default();
        let mut c = client(&dir, "c", &cfg);
        connect_served(&mut server, &mut c, &mut echo, t);
        // Settle: the login's news taken, the timers started, and over
        // shared memory the group's announcement that it may sleep seen
        // by the client's writer (it acknowledges at its socket polls).
        let mut got = CheckingClient::default();
        let settle = Instant::now() + Duration::from_millis(50);
        while Instant::now() < settle {
            server.poll(now(), &mut echo);
            server.wait_timeout(now());
            c.poll(now(), &mut got);
        }
        server.poll(now(), &mut echo);
        let t_server = server.wait_timeout(now());
        assert!(t_server != Some(Duration::ZERO), "{t:?}: nothing to do");
        assert!(!readable(server.as_raw_fd(), 0), "{t:?}: idle server");
        assert!(send(c.connection(), 0, 16));
        c.poll(now(), &mut got); // sends the wake-up over SHM
        assert!(readable(server.as_raw_fd(), 5000), "{t:?}: message");
        let until = Instant::now() + Duration::from_secs(5);
        while echo.echoed == 0 {
            assert!(Instant::now() < until);
            server.poll(now(), &mut echo);
        }
        // The client's side: asleep, then woken by the echo.
        let until = Instant::now() + Duration::from_secs(5);
        while got.received == 0 {
            assert!(Instant::now() < until, "{t:?}: the echo");
            if !c.poll(now(), &mut got) {
                match c.wait_timeout(now()) {
                    Some(d) if d.is_zero() => {}
                    _ => {
                        readable(c.as_raw_fd(), 1000);
                    }
                }
            }
            server.poll(now(), &mut echo);
        }
        assert!(got.disconnects.is_empty());
    }
}

/// Whether `fd` turns readable within `ms`.
fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// Over shared memory, with the server asleep: a batch pushed with
/// `push_more` and then a `wait` straight away (no poll between: the
/// wait lets the batch go, and wakes the server for it); then the
/// client's sides polled apart (`Client::parts`), which wake no one: the
/// server, told so, looks at the ring in slices. Every echo within its
/// deadline, heartbeats 30 s apart.
#[test]
fn batches_and_parts_wake_a_sleeping_server() {
    let dir = scratch("sleep-batch");
    let _c = Cleanup(dir.clone());
    let cfg = quiet_config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let (stop, polls) = (AtomicBool::new(false), AtomicU64::new(0));
    let mut got = CheckingClient::default();
    std::thread::scope(|s| {
        let srv = sleeping_server(
            s,
            &mut server,
            &mut echo,
            &stop,
            &polls,
            Duration::from_secs(60),
        );
        let _stop = StopOnDrop(&stop);
        let mut c = client(&dir, "c", &cfg);
        c.connect(Transport::Shm, addr, 0).unwrap();
        // The wake-up is agreed on both sides first.
        for seq in 0..5 {
            echo_sleeping(&mut c, &mut got, seq, Duration::from_secs(5));
        }
        for seq in 5..25u64 {
            std::thread::sleep(Duration::from_millis(5)); // the server sleeps
            let mut m = c.connection().alloc((seq % 1000) as u16 + 1, 8).unwrap();
            m.payload_mut().copy_from_slice(&payload(seq, 8));
            m.push_more();
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                c.wait(now(), Duration::from_secs(6)).unwrap();
                c.poll(now(), &mut got);
                if got.received > seq {
                    break;
                }
                assert!(Instant::now() < until, "batch {seq}: the server slept on");
            }
        }
        // The sides apart: the SHM side pushes and reads, the TCP side
        // keeps the session; the server is woken by no one, and still
        // answers within its slices.
        let (mut tcp, mut shm) = c.parts();
        for seq in 25..45u64 {
            std::thread::sleep(Duration::from_millis(5));
            assert!(send(shm.connection().unwrap(), seq, 8));
            let until = Instant::now() + Duration::from_secs(5);
            while got.received <= seq {
                assert!(Instant::now() < until, "parts {seq}: the server slept on");
                tcp.poll(now(), &mut got);
                shm.poll(now(), &mut got);
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(send(shm.connection().unwrap(), 45, 8));
        srv.join().unwrap();
    });
    assert!(echo.disconnects.is_empty() && got.disconnects.is_empty());
}

/// A group large enough for its doorbell (six live clients), asleep
/// between messages: every client's echoes come back in time.
#[test]
fn a_sleeping_group_with_a_doorbell_is_woken() {
    let dir = scratch("sleep-bell");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.heartbeat_interval = Duration::from_secs(30);
        c.connection_timeout = Duration::from_secs(90);
        c.shm_conns_per_group = 8;
        c.shm_doorbell_slots = 0;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let (stop, polls) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        let srv = sleeping_server(
            s,
            &mut server,
            &mut echo,
            &stop,
            &polls,
            Duration::from_secs(60),
        );
        let _stop = StopOnDrop(&stop);
        let mut clients: Vec<_> = (0..6)
            .map(|k| {
                let mut c = client(&dir, &format!("c{k}"), &cfg);
                c.connect(Transport::Shm, addr, 0).unwrap();
                (c, CheckingClient::default())
            })
            .collect();
        for round in 0..10u64 {
            for (c, got) in clients.iter_mut() {
                std::thread::sleep(Duration::from_millis(2));
                echo_sleeping(c, got, round, Duration::from_secs(5));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (c, got) = &mut clients[0];
        assert!(send(c.connection(), 10, 8));
        c.poll(now(), got);
        srv.join().unwrap();
        for (_, got) in &clients {
            assert!(got.disconnects.is_empty());
        }
    });
    assert!(echo.disconnects.is_empty(), "{:?}", echo.disconnects);
}
