//! Heartbeats and timeouts on a fake clock (the library never reads one):
//! a quiet but live peer stays connected for many timeouts; a peer that
//! stops polling is closed with "Timeout" after connection_timeout.

mod common;

use std::time::Duration;

use common::*;
use tcpshm::{CloseReason, Server, Transport};

/// The fake clock's tick is the default one, a nanosecond.
const HB: i64 = 100;
const TIMEOUT: i64 = 5000;

fn heartbeat(use_shm: bool) {
    let dir = scratch("hb");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        let ticks = |t: i64| Duration::from_nanos(t as u64);
        c.heartbeat_interval = ticks(HB);
        c.ack_delay = ticks(HB / 4);
        c.connection_timeout = ticks(TIMEOUT);
        c.new_connection_timeout = ticks(TIMEOUT);
        // The fake clock moves 10 ticks a step: poll the sockets at every
        // step, not every 200 µs of real time.
        c.socket_poll_interval = Duration::ZERO;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut t: i64 = 0;
    let mut echo = EchoServer::default();
    let mut h = CheckingClient::default();
    let mut client = client(&dir, "cli", &cfg);
    // Login: the client blocks in connect while the server must be polled,
    // so connect from a helper thread and poll the server here.
    let transport = if use_shm {
        Transport::Shm
    } else {
        Transport::Tcp
    };
    std::thread::scope(|s| {
        let c = s.spawn(|| client.connect(transport, addr, 0));
        while !c.is_finished() {
            server.poll(t, &mut echo);
            std::thread::yield_now();
        }
        c.join().unwrap().unwrap();
    });
    // Quiet but live: 10 timeouts of fake time, 10 ticks a step, with real
    // pauses so the heartbeats cross loopback.
    let end = 10 * TIMEOUT;
    while t < end {
        t += 10;
        for _ in 0..3 {
            server.poll(t, &mut echo);
            client.poll(t, &mut h);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    assert!(h.disconnects.is_empty(), "live peer disconnected");
    assert!(echo.disconnects.is_empty(), "live peer disconnected");
    assert!(!client.connection().is_closed());
    // The client stops polling: the server times it out after TIMEOUT.
    let silent_from = t;
    wait_until(30, "server timeout", || {
        t += 10;
        server.poll(t, &mut echo);
        std::thread::sleep(Duration::from_micros(50));
        !echo.disconnects.is_empty()
    });
    let (who, reason) = echo.disconnects[0].clone();
    assert_eq!((who.as_str(), reason), ("cli", CloseReason::Timeout));
    // The client's last heartbeat went out at most one interval before it
    // fell silent (its timers started at its first poll, in no phase with
    // this loop): the timeout counts from there.
    assert!(
        t - silent_from > TIMEOUT - HB,
        "closed after {} ticks",
        t - silent_from
    );
    assert!(
        t - silent_from <= TIMEOUT + 2 * HB,
        "closed late: {} ticks",
        t - silent_from
    );
    // The client sees the server's close when it polls again.
    wait_until(30, "client sees the close", || {
        client.poll(t, &mut h);
        !h.disconnects.is_empty()
    });
    assert!(client.connection().is_closed());
}

#[test]
fn tcp_heartbeat_and_timeout() {
    heartbeat(false);
}

#[test]
fn shm_heartbeat_and_timeout() {
    heartbeat(true);
}
