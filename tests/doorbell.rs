//! The doorbell of a large SHM group, in the states a crash or a hostile
//! peer leaves it in:
//! - a message published and never rung (its writer killed between the
//!   two: the ring's memory is then exactly as built here) is found by the
//!   slow sweep, within `Config::shm_sweep_interval`, and not before;
//! - a peer that scribbles over the bell (random bits set and cleared,
//!   the header overwritten) while honest clients echo loses no message.
//!
//! The server is polled from the test's thread with a clock the test
//! moves, so what each poll may see is exact.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use tcpshm::{Server, Transport};

/// Bytes from the start of the bell to the word of bits of `slot`
/// (`docs/protocol.md`, "A group's doorbell").
fn bit_word(slot: usize) -> u64 {
    64 * (1 + slot as u64 / 64)
}

/// A clock of `tps` ticks per second, from the test's start.
fn clock(tps: u64) -> i64 {
    (now() as i128 * i128::from(tps) / 1_000_000_000) as i64
}

/// A message published and never rung, with the server's clock in ticks
/// of `tps` per second: the sweep finds it within its interval (64 slots
/// in 20 ms), and not before, however coarse the ticks.
fn never_rung(tps: u64) {
    let dir = scratch("bell-sweep");
    let _c = Cleanup(dir.clone());
    let sweep = Duration::from_millis(20);
    let cfg = config_with(&dir, |c| {
        c.shm_conns_per_group = 64;
        c.shm_doorbell_slots = 0;
        c.shm_sweep_interval = sweep;
        c.ticks_per_second = tps;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    // Six clients: a group with a handful live looks at every ring anyway.
    let mut others: Vec<_> = (1..6)
        .map(|i| client(&dir, &format!("o{i}"), &cfg))
        .collect();
    let mut c = client(&dir, "c", &cfg);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (server, echo, stop) = (&mut server, &mut echo, &stop);
        s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.poll(clock(tps), echo);
                std::thread::yield_now();
            }
        });
        let _stop = StopOnDrop(stop);
        c.connect(Transport::Shm, addr, 0).unwrap();
        for o in &mut others {
            o.connect(Transport::Shm, addr, 0).unwrap();
        }
    });
    let mut check = CheckingClient::default();
    let ticks = |d: Duration| (d.as_nanos() * u128::from(tps) / 1_000_000_000) as i64;
    // Past the hot window, with the writer's acknowledgement seen (the
    // sweep looks for it): the ring is cold, looked at when rung or swept.
    let t = clock(tps) + ticks(Duration::from_millis(100));
    server.poll(t, &mut echo);
    server.poll(t, &mut echo);
    assert!(send(c.connection(), 0, 16));
    // The ring never came (the writer died before it): its bit cleared.
    let bell = std::fs::OpenOptions::new()
        .write(true)
        .open(cfg.shm_dir.join("srv.0.bell"))
        .unwrap();
    bell.write_at(&[0; 8], bit_word(0)).unwrap();
    server.poll(t, &mut echo);
    assert_eq!(echo.echoed, 0, "found before the sweep came by");
    // The sweep comes by every ring once per interval.
    let interval = ticks(sweep);
    let step = (interval / 64).max(1);
    let mut at = t;
    while echo.echoed == 0 {
        at += step;
        assert!(
            at <= t + interval + step,
            "not found within the sweep interval"
        );
        server.poll(at, &mut echo);
    }
    wait_until(10, "the echo", || {
        server.poll(clock(tps).max(at), &mut echo);
        c.poll(clock(tps), &mut check);
        check.received == 1
    });
    // Rung as usual, a message is found by the next poll.
    assert!(send(c.connection(), 1, 16));
    server.poll(clock(tps).max(at), &mut echo);
    assert_eq!(echo.echoed, 2, "a rung message waits for no sweep");
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn a_message_never_rung_is_found_by_the_sweep_within_its_interval() {
    never_rung(1_000_000_000);
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn the_sweep_keeps_its_interval_on_a_millisecond_clock() {
    // 20 ticks for 64 slots: a lap that stepped a tick per slot took 64.
    never_rung(1_000);
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn a_peer_scribbling_over_the_bell_loses_no_message() {
    let dir = scratch("bell-hostile");
    let _c = Cleanup(dir.clone());
    let n = 70; // two words of bits
    let cfg = config_with(&dir, |c| {
        c.shm_conns_per_group = n + 2;
        c.shm_doorbell_slots = 0;
        c.shm_sweep_interval = Duration::from_millis(2);
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let (stop, stop_scribbling) = (AtomicBool::new(false), AtomicBool::new(false));
    let bell_path = cfg.shm_dir.join("srv.0.bell");
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        let mut clients: Vec<_> = (0..n)
            .map(|i| {
                let mut c = client(&dir, &format!("c{i}"), &cfg);
                c.connect(Transport::Shm, addr, 0).unwrap();
                (c, CheckingClient::default(), 0u64)
            })
            .collect();
        // The scribbler: a thread writing junk over the whole bell, header
        // included, as fast as it can (with a pause now and then).
        let _stop_scribbling = StopOnDrop(&stop_scribbling);
        s.spawn(|| {
            let bell = std::fs::OpenOptions::new()
                .write(true)
                .open(&bell_path)
                .unwrap();
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            while !stop_scribbling.load(std::sync::atomic::Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half on the two words of bits (mostly clearing them, as
                // a peer stealing others' rings), half on the header.
                let off = match x % 4 {
                    0 => bit_word(0),
                    1 => bit_word(64),
                    _ => 8 * (x % 8),
                };
                let v = if x % 16 < 12 { 0 } else { x.rotate_left(17) };
                let _ = bell.write_at(&v.to_le_bytes(), off);
                if x % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        for round in 0..20 {
            for (c, _, sent) in clients.iter_mut() {
                assert!(send(c.connection(), *sent, small_len(*sent)));
                *sent += 1;
            }
            wait_until(30, &format!("round {round}"), || {
                let mut done = true;
                for (c, check, sent) in clients.iter_mut() {
                    c.poll(now(), check);
                    assert!(check.disconnects.is_empty(), "{:?}", check.disconnects);
                    done &= check.received == *sent;
                }
                done
            });
        }
    });
    assert_eq!(echo.echoed, 20 * n as u64);
}
