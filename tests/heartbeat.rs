//! Heartbeats and timeouts on a fake clock (the library never reads one):
//! a quiet but live peer stays connected for many timeouts; a peer that
//! stops polling is closed with "Timeout" after connection_timeout.

mod common;

use common::*;
use tcpshm::{Client, CloseReason, Config, Server};

const HB: i64 = 100;
const TIMEOUT: i64 = 5000;

fn heartbeat(use_shm: bool) {
    let dir = scratch("hb");
    let _c = Cleanup(dir.clone());
    let cfg = Config {
        heartbeat_interval: HB,
        ack_delay: HB / 4,
        connection_timeout: TIMEOUT,
        new_connection_timeout: TIMEOUT,
        ..config(&dir)
    };
    let mut server = Server::new("srv", dir.join("s"), cfg.clone(), EchoServer::default()).unwrap();
    server.start("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut t: i64 = 0;
    let handler = CheckingClient {
        login_now: Some(0),
        ..Default::default()
    };
    let mut client = Client::new("cli", dir.join("c"), cfg, handler).unwrap();
    // Login: the client blocks in connect while the server must be polled,
    // so connect from a helper thread and poll the server here.
    std::thread::scope(|s| {
        let h = s.spawn(|| client.connect(tcpshm::Transport::from_use_shm(use_shm), addr, 0));
        while !h.is_finished() {
            server.poll_ctl(t);
            server.poll_tcp(t, 0);
            server.poll_shm(0);
            std::thread::yield_now();
        }
        h.join().unwrap().unwrap();
    });
    let poll_server = |server: &mut Server<EchoServer>, t| {
        server.poll_ctl(t);
        server.poll_tcp(t, 0);
        server.poll_shm(0);
    };
    // Quiet but live: 10 timeouts of fake time, 10 ticks a step, with real
    // pauses so the heartbeats cross loopback.
    let end = 10 * TIMEOUT;
    while t < end {
        t += 10;
        for _ in 0..3 {
            poll_server(&mut server, t);
            client.poll_tcp(t);
            client.poll_shm();
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    assert!(
        client.handler().disconnects.is_empty(),
        "live peer disconnected"
    );
    assert!(
        server.handler().disconnects.is_empty(),
        "live peer disconnected"
    );
    assert!(!client.connection().is_closed());
    // The client stops polling: the server times it out after TIMEOUT.
    let silent_from = t;
    wait_until(30, "server timeout", || {
        t += 10;
        poll_server(&mut server, t);
        std::thread::sleep(std::time::Duration::from_micros(50));
        !server.handler().disconnects.is_empty()
    });
    let (who, reason) = server.handler().disconnects[0].clone();
    assert_eq!((who.as_str(), reason), ("cli", CloseReason::Timeout));
    assert!(
        t - silent_from > TIMEOUT,
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
        client.poll_tcp(t);
        !client.handler().disconnects.is_empty()
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
