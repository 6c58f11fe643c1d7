//! Echo over TCP and over SHM in one process: server and client polled
//! from test threads, thousands of messages of every size from 8 bytes to
//! the maximum, every byte checked.

mod common;

use common::*;
use tcpshm::{Server, Transport};

fn echo_every_size(use_shm: bool) {
    let dir = scratch(if use_shm { "echo-shm" } else { "echo-tcp" });
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let max = if use_shm {
        cfg.max_shm_payload()
    } else {
        cfg.max_tcp_payload()
    };
    let mut server: Server = Server::new("srv", dir.join("server"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let mut echo = EchoServer::default();
    let addr = server.local_addr().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Sizes 8..=max, every one of them for small sizes, then strided, then
    // the maximum itself.
    let mut sizes: Vec<usize> = (8..600).collect();
    sizes.extend((600..max).step_by(97));
    sizes.push(max);
    let n = sizes.len() as u64;
    let sizes_ref = &sizes;
    std::thread::scope(|s| {
        let stop = &stop;
        let echo = &mut echo;
        s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.poll(now(), echo);
                std::thread::yield_now();
            }
        });
        let _stop = StopOnDrop(stop);
        let mut client = client(&dir, "cli", &cfg);
        let mut h = CheckingClient::default();
        let transport = if use_shm {
            Transport::Shm
        } else {
            Transport::Tcp
        };
        // The server's login response carries its user data.
        assert_eq!(client.connect(transport, addr, 7).unwrap(), 42);
        let mut sent = 0u64;
        wait_until(120, "all echoes", || {
            while sent < n && send(client.connection(), sent, sizes_ref[sent as usize]) {
                sent += 1;
            }
            client.poll(now(), &mut h);
            h.received == n
        });
        assert!(h.disconnects.is_empty());
    });
}

#[test]
fn echo_tcp_every_size() {
    echo_every_size(false);
}

#[test]
fn echo_shm_every_size() {
    echo_every_size(true);
}

/// Both sides batch with `push_more`: the client pushes bursts and never
/// flushes, the server echoes with `push_more` from its handler. Polls let
/// every batch go (over shm: the end of each poll; over TCP: its write),
/// so every echo comes back, once, in order, with its payload.
fn echo_in_batches(use_shm: bool) {
    let dir = scratch(if use_shm { "batch-shm" } else { "batch-tcp" });
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let handler = EchoServer {
        batch: true,
        ..EchoServer::default()
    };
    let n = 20_000u64;
    let server = with_echo_server(&dir, "srv", &cfg, handler, |addr| {
        let mut client = client(&dir, "cli", &cfg);
        let mut h = CheckingClient::default();
        let transport = if use_shm {
            Transport::Shm
        } else {
            Transport::Tcp
        };
        client.connect(transport, addr, 0).unwrap();
        let mut sent = 0u64;
        wait_until(120, "all echoes", || {
            // A burst of 1 to 40 messages, then polls only.
            for _ in 0..1 + sent % 40 {
                let len = small_len(sent);
                if sent == n {
                    break;
                }
                match client.connection().alloc((sent % 1000) as u16 + 1, len) {
                    Ok(mut a) => {
                        a.payload_mut().copy_from_slice(&payload(sent, len));
                        a.push_more();
                        sent += 1;
                    }
                    Err(tcpshm::AllocError::Full) => break,
                    Err(e) => panic!("alloc: {e}"),
                }
            }
            client.poll(now(), &mut h);
            h.received == n
        });
        assert!(h.disconnects.is_empty());
        if use_shm {
            assert!(client.connection().shm_fast_path(), "on the fast path");
        }
    });
    assert_eq!(server.echoed, n);
}

#[test]
fn echo_tcp_in_batches() {
    echo_in_batches(false);
}

#[test]
fn echo_shm_in_batches() {
    echo_in_batches(true);
}
