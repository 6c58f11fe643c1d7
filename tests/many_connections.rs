//! Hundreds of connections in one group: each echoes a few messages, the
//! clients taking turns in a random order, and every echo is checked (the
//! server checks every request too: once each, in order). Over TCP the
//! group polls through its readiness set and timer wheel; over shared
//! memory through its doorbell (the slow sweep pushed out of reach, so a
//! missing ring fails the test). Every wait has a deadline.

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use tcpshm::{Server, Transport};

/// Xorshift: the test's order is random but repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `n` clients in one group, echoing; the first `silent` of them ring no
/// bell (as C++ clients: the group must look at their rings at every
/// poll).
fn echo_many(transport: Transport, n: usize, silent: usize) {
    let dir = scratch("many");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = n + 4;
        c.shm_conns_per_group = n + 4;
        c.shm_queue_size = 4096;
        // The bell alone finds the messages: the sweep, which would find
        // them too (a millisecond late), is out of the picture.
        c.shm_sweep_interval = std::time::Duration::from_secs(3600);
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    let mut total = 0u64;
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        // (client, its checker, messages sent)
        let mut clients: Vec<_> = (0..n)
            .map(|i| {
                let mut cfg = cfg.clone();
                if i < silent {
                    cfg.shm_doorbell_slots = usize::MAX;
                }
                let mut c = client(&dir, &format!("c{i}"), &cfg);
                c.connect(transport, addr, 0)
                    .unwrap_or_else(|e| panic!("login {i}: {e}"));
                (c, CheckingClient::default(), 0u64)
            })
            .collect();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..4 {
            // Every client in a random order sends one to three messages.
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.below(i + 1));
            }
            for &i in &order {
                let (c, _, sent) = &mut clients[i];
                for _ in 0..1 + rng.below(3) {
                    assert!(send(c.connection(), *sent, small_len(*sent)), "queue full");
                    *sent += 1;
                }
            }
            wait_until(60, &format!("round {round}'s echoes"), || {
                let mut done = true;
                for (c, check, sent) in clients.iter_mut() {
                    c.poll(now(), check);
                    assert!(check.disconnects.is_empty(), "{:?}", check.disconnects);
                    done &= check.received == *sent;
                }
                done
            });
        }
        total = clients.iter().map(|c| c.2).sum();
    });
    assert_eq!(echo.echoed, total);
    assert_eq!(echo.logons.len(), n);
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn five_hundred_tcp_connections_in_one_group() {
    echo_many(Transport::Tcp, 500, 0);
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn five_hundred_shm_connections_in_one_group() {
    echo_many(Transport::Shm, 500, 0);
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn clients_that_ring_no_bell_mixed_into_a_doorbell_group() {
    echo_many(Transport::Shm, 120, 40);
}

/// Records each logon's id, and each disconnect.
#[derive(Default)]
struct Ids {
    echo: EchoServer,
    ids: Vec<(String, tcpshm::ConnId)>,
}

impl tcpshm::ControlHandler for Ids {
    fn on_new_connection(&mut self, l: &tcpshm::LoginRequest) -> tcpshm::Accept {
        self.echo.on_new_connection(l)
    }
}

impl tcpshm::GroupHandler for Ids {
    fn on_client_msg(
        &mut self,
        id: tcpshm::ConnId,
        m: tcpshm::Received<'_>,
        tx: &mut tcpshm::ConnTx,
    ) {
        self.echo.on_client_msg(id, m, tx)
    }
    fn on_client_logon(
        &mut self,
        id: tcpshm::ConnId,
        l: &tcpshm::LoginRequest,
        c: &mut tcpshm::Connection,
    ) {
        self.ids.push((l.client.to_string(), id));
        self.echo.on_client_logon(id, l, c)
    }
    fn on_client_disconnected(&mut self, id: tcpshm::ConnId, n: &tcpshm::Name, c: tcpshm::Close) {
        self.echo.on_client_disconnected(id, n, c)
    }
}

/// The application closes one connection of a large group from outside
/// its handlers (between polls): the group's next poll reports it, and the
/// client sees the disconnect; the others stay up.
fn close_from_outside(transport: Transport) {
    let dir = scratch("close-outside");
    let _c = Cleanup(dir.clone());
    let n = 8;
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = n;
        c.shm_conns_per_group = n;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut h = Ids::default();
    let stop = AtomicBool::new(false);
    let mut clients: Vec<_> = Vec::new();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut h, &stop);
        let _stop = StopOnDrop(&stop);
        for i in 0..n {
            let mut c = client(&dir, &format!("c{i}"), &cfg);
            c.connect(transport, addr, 0).unwrap();
            clients.push((c, CheckingClient::default()));
        }
    });
    let (victim, id) = h.ids[3].clone();
    server.connection(id).unwrap().close();
    // The group's next poll reports it, whatever its size.
    server.poll(now(), &mut h);
    assert_eq!(h.echo.disconnects.len(), 1, "reported by the next poll");
    wait_until(20, "the client to see the close", || {
        server.poll(now(), &mut h);
        for (c, check) in clients.iter_mut() {
            c.poll(now(), check);
        }
        !clients[3].1.disconnects.is_empty()
    });
    assert_eq!(h.echo.disconnects[0].0, victim);
    assert_eq!(h.echo.disconnects.len(), 1, "the others stay up");
    assert!(clients
        .iter()
        .enumerate()
        .all(|(i, c)| i == 3 || c.1.disconnects.is_empty()));
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn a_tcp_connection_closed_between_polls_is_reported() {
    close_from_outside(Transport::Tcp);
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn an_shm_connection_closed_between_polls_is_reported() {
    close_from_outside(Transport::Shm);
}

/// The polling thread pauses past the connection timeout while 300
/// clients each have a message waiting: the first poll after the pause
/// hears of at most 128 readable sockets and has far more deadlines due,
/// yet no connection is closed for a silence it did not check with a
/// read.
#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn a_pause_past_the_timeout_closes_no_connection_with_bytes_waiting() {
    let dir = scratch("pause");
    let _c = Cleanup(dir.clone());
    let n = 300;
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = n + 4;
        c.heartbeat_interval = std::time::Duration::from_secs(1);
        c.connection_timeout = std::time::Duration::from_secs(3);
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut echo = EchoServer::default();
    let stop = AtomicBool::new(false);
    let mut clients = Vec::new();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        for i in 0..n {
            let mut c = client(&dir, &format!("c{i}"), &cfg);
            c.connect(Transport::Tcp, addr, 0).unwrap();
            clients.push(c);
        }
    });
    // Every session's timers run (the serving thread polled them all).
    let t = now();
    for _ in 0..10 {
        server.poll(t, &mut echo);
    }
    for c in &mut clients {
        assert!(send(c.connection(), 0, 16));
    }
    std::thread::sleep(std::time::Duration::from_millis(100)); // on the wire
    let later = t + 4_000_000_000; // past the 3 s timeout
    for _ in 0..20 {
        server.poll(later, &mut echo);
    }
    assert!(
        echo.disconnects.is_empty(),
        "{:?}",
        &echo.disconnects[..3.min(echo.disconnects.len())]
    );
    assert_eq!(echo.echoed, n as u64);
}

/// A client that does not read while the server pushes it more than the
/// sockets hold (24 MiB): the group's send is left unfinished, watched
/// for the socket to take bytes again, and once the client reads (and
/// acks), everything arrives, in order, once.
#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn a_burst_larger_than_the_sockets_arrives_once_the_client_reads() {
    let dir = scratch("burst");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = 4;
        c.tcp_queue_size = 32 << 20;
        c.tcp_recv_buf_max_size = (32 << 20) + 64;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut h = Ids::default();
    let stop = AtomicBool::new(false);
    let mut clients = Vec::new();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut h, &stop);
        let _stop = StopOnDrop(&stop);
        for i in 0..3 {
            let mut c = client(&dir, &format!("c{i}"), &cfg);
            c.connect(Transport::Tcp, addr, 0).unwrap();
            clients.push((c, CheckingClient::default()));
        }
    });
    let id = h.ids.iter().find(|(n, _)| n == "c0").unwrap().1;
    // 24 MiB to c0, which does not read: the sockets fill.
    let n = 24 * 4096;
    let conn = server.connection(id).unwrap();
    for k in 0..n {
        assert!(send(conn, k, 248), "queue full at {k}");
    }
    let t = now();
    for i in 0..100 {
        server.poll(t + i, &mut h);
    }
    let (c0, check) = &mut clients[0];
    wait_until(60, "every message of the burst", || {
        server.poll(now(), &mut h);
        c0.poll(now(), check);
        check.received == n
    });
    assert!(h.echo.disconnects.is_empty());
}
