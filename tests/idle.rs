//! Polls that say whether they worked, and loops that rest on it:
//! - a server's and a client's poll return true exactly when they
//!   delivered (or finished a login, reported a close), over TCP and SHM;
//! - a backing-off (or blocking) server and client, both asleep between
//!   messages sent every few milliseconds, lose nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tcpshm::{Idle, Server, Transport};

fn poll_reports_work(t: Transport) {
    let dir = scratch("idle-work");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let mut echo = EchoServer::default();
    let mut c = client(&dir, "c", &cfg);
    connect_served(&mut server, &mut c, &mut echo, t);
    let mut got = CheckingClient::default();
    // The login's news settles: then polls with nothing to do say so.
    let mut quiet = 0;
    wait_until(10, "quiet polls", || {
        let worked = server.poll(now(), &mut echo) | c.poll(now(), &mut got);
        quiet = if worked { 0 } else { quiet + 1 };
        quiet >= 1000
    });
    for seq in 0..200 {
        assert!(send(c.connection(), seq, small_len(seq)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.received == seq {
            assert!(Instant::now() < deadline, "echo {seq} in time");
            let echoed = echo.echoed;
            let worked = server.poll(now(), &mut echo);
            assert_eq!(worked, echo.echoed != echoed, "server poll {seq}");
            let received = got.received;
            let worked = c.poll(now(), &mut got);
            assert_eq!(worked, got.received != received, "client poll {seq}");
        }
    }
    assert_eq!((echo.echoed, got.received), (200, 200));
    assert!(echo.disconnects.is_empty() && got.disconnects.is_empty());
}

#[test]
fn a_tcp_poll_says_whether_it_worked() {
    poll_reports_work(Transport::Tcp);
}

#[test]
fn an_shm_poll_says_whether_it_worked() {
    poll_reports_work(Transport::Shm);
}

/// A server and a client that rest by `strategy` (parked up to 2 ms, or
/// blocked in `Wait`) exchange messages sent 3 ms apart, so both are
/// asleep when each arrives: every echo comes back, in order, once.
fn resting_peers(t: Transport, strategy: Idle) {
    let dir = scratch("idle-backoff");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let mut echo = EchoServer::default();
    let mut c = client(&dir, "c", &cfg);
    connect_served(&mut server, &mut c, &mut echo, t);
    let backoff = strategy;
    let stop = AtomicBool::new(false);
    let mut got = CheckingClient::default();
    std::thread::scope(|s| {
        let (server, echo, stop) = (&mut server, &mut echo, &stop);
        let mut idle = backoff.clone();
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let worked = server.poll(now(), echo);
                idle.idle_on(server, now(), worked).unwrap();
            }
        });
        let _stop = StopOnDrop(stop);
        let mut idle = backoff.clone();
        for seq in 0..50 {
            assert!(send(c.connection(), seq, small_len(seq)));
            wait_until(10, "the echo", || {
                let worked = c.poll(now(), &mut got);
                idle.idle_on(&mut c, now(), worked).unwrap();
                got.received == seq + 1
            });
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    assert_eq!((echo.echoed, got.received), (50, 50));
    assert!(echo.disconnects.is_empty() && got.disconnects.is_empty());
}

fn backoff() -> Idle {
    Idle::backoff_with(100, 10, Duration::from_micros(50), Duration::from_millis(2))
}

/// Blocking with waits of at most 50 ms: a lost wake-up would show as
/// echoes 50 ms late, past the 3 ms pace (the test then takes seconds,
/// not a fraction of one, but fails only at its 10 s deadline: see
/// `tests/sleep.rs` for the strict check).
fn block() -> Idle {
    Idle::block_with(100, Duration::from_millis(50))
}

#[test]
fn backing_off_peers_lose_nothing_over_tcp() {
    resting_peers(Transport::Tcp, backoff());
}

#[test]
fn backing_off_peers_lose_nothing_over_shm() {
    resting_peers(Transport::Shm, backoff());
}

#[test]
fn blocking_peers_lose_nothing_over_tcp() {
    resting_peers(Transport::Tcp, block());
}

#[test]
fn blocking_peers_lose_nothing_over_shm() {
    resting_peers(Transport::Shm, block());
}
