//! Atomic batches and consume-and-reply with real sockets and shared
//! memory: batches of random sizes arrive whole and in order, a server
//! answers each request atomically, a batch that cannot be committed
//! publishes nothing, a request of another connection is refused, and a
//! protocol-v1 peer (the C++ stand-in) receives batches as ordinary
//! messages. (The crash cases: the kill -9 tests of `src/ptcp_queue` and
//! `src/shm_queue`, and the CLI torture.)

mod common;

use std::time::Duration;

use common::*;
use tcpshm::{
    Accept, AllocError, ClientHandler, CommitError, ConnId, ConnTx, ControlHandler, GroupHandler,
    LoginRequest, Received, Server, Transport,
};

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Shm];

/// Commits messages `seq..seq + n` as one batch; false (nothing
/// published) if it does not fit now.
fn send_batch(conn: &mut tcpshm::Connection, seq: u64, n: u64) -> bool {
    let mut b = conn.batch();
    for s in seq..seq + n {
        let len = small_len(s);
        match b.alloc((s % 1000) as u16 + 1, len) {
            Ok(p) => p.copy_from_slice(&payload(s, len)),
            Err(AllocError::Full) => break,
            Err(e) => panic!("alloc {s}: {e}"),
        }
    }
    match b.commit() {
        Ok(k) => {
            assert_eq!(k as u64, n);
            true
        }
        Err(CommitError::Alloc(AllocError::Full)) => false,
        Err(e) => panic!("commit at {seq}: {e}"),
    }
}

/// Batches of 1 to 16 messages of random sizes, echoed by a server that
/// answers each with a consume-and-reply: every echo once, in order.
#[test]
fn batches_echo_whole_through_consume_and_reply() {
    for t in TRANSPORTS {
        let dir = scratch("batch-echo");
        let _c = Cleanup(dir.clone());
        let cfg = config(&dir);
        let echo = EchoServer {
            atomic: true,
            ..Default::default()
        };
        let total = 3_000u64;
        let echo = with_echo_server(&dir, "srv", &cfg, echo, |addr| {
            let mut c = client(&dir, "cli", &cfg);
            c.connect(t, addr, 0).unwrap();
            let mut got = CheckingClient {
                len_of: Some(small_len),
                ..Default::default()
            };
            let (mut seq, mut rng) = (0u64, 0x2545_f491u32);
            wait_until(120, "every echo", || {
                if seq < total && seq < got.received + 200 {
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    let n = (u64::from(rng % 16) + 1).min(total - seq);
                    if send_batch(c.connection(), seq, n) {
                        seq += n;
                    }
                }
                c.poll(now(), &mut got);
                got.received == total
            });
            assert!(got.disconnects.is_empty(), "{t:?}: {:?}", got.disconnects);
            assert_eq!(c.connection().messages_pushed() as u64, total);
        });
        assert_eq!(echo.echoed, total, "{t:?}");
        assert!(
            echo.grouped > 0,
            "{t:?}: no commit answered several requests"
        );
        assert!(echo
            .disconnects
            .iter()
            .all(|(_, r)| !matches!(r, tcpshm::CloseReason::ShmCorrupt)));
    }
}

/// A batch that does not fit fails whole: its commit publishes nothing,
/// the messages committed before arrive, and a batch larger than the
/// queue says so.
#[test]
fn a_batch_that_does_not_fit_publishes_nothing() {
    for t in TRANSPORTS {
        let dir = scratch("batch-full");
        let _c = Cleanup(dir.clone());
        let cfg = config_with(&dir, |c| {
            c.tcp_queue_size = 1 << 13;
            c.shm_queue_size = 1 << 13;
        });
        let echo = EchoServer {
            paused: true,
            ..Default::default()
        };
        let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        let mut echo = echo;
        let mut c = client(&dir, "cli", &cfg);
        connect_served(&mut server, &mut c, &mut echo, t);
        // Larger than the queue: never committable.
        let mut b = c.connection().batch();
        let mut err = None;
        for _ in 0..200 {
            if let Err(e) = b.alloc(1, 100) {
                err = Some(e);
                break;
            }
        }
        assert!(
            matches!(err, Some(AllocError::BatchTooLarge { .. })),
            "{t:?}: {err:?}"
        );
        assert!(b.alloc(1, 8).is_err(), "a failed batch stays failed");
        assert!(matches!(
            b.commit(),
            Err(CommitError::Alloc(AllocError::BatchTooLarge { .. }))
        ));
        assert_eq!(
            c.connection().messages_pushed(),
            0,
            "{t:?}: nothing published"
        );
        // Fill the queue (the server does not consume) with batches of 8,
        // until one does not fit: it publishes nothing.
        let mut seq = 0u64;
        while send_batch(c.connection(), seq, 8) {
            seq += 8;
            assert!(seq < 10_000);
        }
        assert!(seq > 0);
        assert_eq!(c.connection().messages_pushed() as u64, seq, "{t:?}");
        // Unpaused, the server echoes exactly the committed batches.
        echo.paused = false;
        let mut got = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        wait_until(60, "the committed messages", || {
            server.poll(now(), &mut echo);
            c.poll(now(), &mut got);
            got.received == seq
        });
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            server.poll(now(), &mut echo);
            c.poll(now(), &mut got);
        }
        assert_eq!((got.received, echo.echoed), (seq, seq), "{t:?}");
    }
}

/// A client handler that keeps every message (pops none).
struct Keep;

impl ClientHandler for Keep {
    fn on_server_msg(&mut self, _msg: Received<'_>, _tx: &mut ConnTx) {}
}

/// A request received on one connection cannot be consumed by a batch of
/// another: refused, nothing published, the request still there.
#[test]
fn commit_consuming_refuses_another_connections_request() {
    for t in TRANSPORTS {
        let dir = scratch("batch-other");
        let _c = Cleanup(dir.clone());
        let cfg = config(&dir);
        let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        let mut echo = EchoServer::default();
        let (mut a, mut b) = (client(&dir, "a", &cfg), client(&dir, "b", &cfg));
        connect_served(&mut server, &mut a, &mut echo, t);
        connect_served(&mut server, &mut b, &mut echo, t);
        assert!(send(a.connection(), 0, 16));
        wait_until(10, "the echo", || {
            server.poll(now(), &mut echo);
            a.poll(now(), &mut Keep);
            a.connection().front().is_some()
        });
        let req = a.connection().front().unwrap();
        let mut batch = b.connection().batch();
        batch.alloc(1, 8).unwrap().fill(1);
        assert_eq!(
            batch.commit_consuming(req),
            Err(CommitError::OtherConnection),
            "{t:?}"
        );
        assert_eq!(b.connection().messages_pushed(), 0);
        assert_eq!(a.connection().messages_popped(), 0);
        // Its own connection's batch consumes it.
        let (rx, tx) = a.connection().split();
        let req = rx.front().expect("still there");
        assert_eq!(tx.batch().commit_consuming(req), Ok(0));
        assert_eq!(a.connection().messages_popped(), 1);
        assert!(a.connection().front().is_none());
    }
}

/// Answers each request with three messages, one consume-and-reply: the
/// request's payload with its first byte 0, 1, 2.
struct Triple;

impl ControlHandler for Triple {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Triple {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        let mut b = tx.batch();
        for k in 0..3u8 {
            let Ok(p) = b.alloc(msg.msg_type(), msg.payload().len()) else {
                return;
            };
            p.copy_from_slice(msg.payload());
            p[0] = k;
        }
        let _ = b.commit_consuming(msg);
    }
}

/// A protocol-v1 peer over TCP (byte for byte a C++ client), and over
/// shared memory a client on the v1 ring as a C++ one, receive a server's
/// batches as ordinary messages, in order.
#[test]
fn a_v1_peer_receives_batches_as_ordinary_messages() {
    let dir = scratch("batch-v1");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    with_server(&dir, "srv", &cfg, Triple, |addr| {
        let mut peer = v1_peer(addr, "v1tcp");
        for seq in 0..50u64 {
            let p = payload(seq, 24);
            peer.send(3, &p).unwrap();
            for k in 0..3u8 {
                let (hd, back) = peer.recv().unwrap();
                let mut want = p.clone();
                want[0] = k;
                assert_eq!((hd.msg_type, &back[..]), (3, &want[..]), "request {seq}");
            }
        }
        let cpp = config_with(&dir, |c| {
            c.shm_doorbell_slots = usize::MAX;
            c.shm_fast_path = false;
        });
        let mut c = client(&dir, "cppshm", &cpp);
        c.connect(Transport::Shm, addr, 0).unwrap();
        struct Three(u64, u8);
        impl ClientHandler for Three {
            fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
                let mut want = payload(self.0, 24);
                want[0] = self.1;
                assert_eq!(msg.payload(), &want[..], "reply {} of {}", self.1, self.0);
                msg.pop();
                self.1 += 1;
                if self.1 == 3 {
                    (self.0, self.1) = (self.0 + 1, 0);
                }
            }
        }
        let mut got = Three(0, 0);
        for seq in 0..50u64 {
            let mut m = c.connection().alloc(3, 24).unwrap();
            m.payload_mut().copy_from_slice(&payload(seq, 24));
            m.push();
            wait_until(10, "three replies", || {
                c.poll(now(), &mut got);
                got.0 > seq
            });
        }
    });
}
