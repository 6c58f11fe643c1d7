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
