//! Holding received messages (`Received::hold`) with real sockets and
//! shared memory: `front` reads on past the held, which stay unconsumed
//! until a pop or a commit consumes them with what follows, a failed
//! commit or `unhold` gives them back, and a new session delivers them
//! again. (The crash cases: the kill -9 tests of `src/ptcp_queue` and
//! `src/shm_queue`, and the CLI torture, whose exactly-once echo server
//! answers groups of held requests.)

mod common;

use common::*;
use tcpshm::{AllocError, ClientHandler, CommitError, ConnTx, Received, Server, Transport};

/// A client handler that consumes nothing: the echoes wait for the test.
struct Keep;

impl ClientHandler for Keep {
    fn on_server_msg(&mut self, _: Received<'_>, _: &mut ConnTx) {}
}

const N: u64 = 40;

/// The sequence number at the front of `c`'s connection, if any.
fn front_seq(c: &mut TestClient) -> Option<u64> {
    let m = c.connection().front()?;
    let p = m.payload();
    let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
    assert_eq!(p, &payload(seq, small_len(seq))[..], "payload of {seq}");
    Some(seq)
}

/// Holds every message waiting; returns their sequence numbers.
fn hold_all(c: &mut TestClient) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(seq) = front_seq(c) {
        c.connection().front().unwrap().hold().unwrap();
        seqs.push(seq);
    }
    seqs
}

/// Holds the next `n`, which must be `from..from + n`.
fn hold_n(c: &mut TestClient, from: u64, n: u64) {
    for seq in from..from + n {
        assert_eq!(front_seq(c), Some(seq));
        c.connection().front().unwrap().hold().unwrap();
    }
}

fn held(c: &mut TestClient) -> u32 {
    c.connection().split().0.held()
}

#[test]
fn held_messages_are_consumed_together_or_given_back() {
    for t in [Transport::Tcp, Transport::Shm] {
        let dir = scratch("hold");
        let _c = Cleanup(dir.clone());
        // A small receive buffer, so the held bytes make it grow and move.
        let cfg = config_with(&dir, |c| c.tcp_recv_buf_init_size = 256);
        let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        let mut echo = EchoServer::default();
        let mut c = client(&dir, "cli", &cfg);
        connect_served(&mut server, &mut c, &mut echo, t);
        for seq in 0..N {
            assert!(send(c.connection(), seq, small_len(seq)));
        }
        // Every echo arrives while the first ones are held: reading on
        // past them does not consume them.
        wait_until(20, "every echo", || {
            server.poll(now(), &mut echo);
            c.poll(now(), &mut Keep);
            let got = hold_all(&mut c).len();
            let all = got as u64 == N && held(&mut c) == N as u32;
            c.connection().split().0.unhold();
            all
        });
        assert_eq!(c.connection().messages_popped(), 0, "{t:?}");

        // Given back, they come again, in order, whole.
        assert_eq!(hold_all(&mut c), (0..N).collect::<Vec<_>>(), "{t:?}");
        c.connection().split().0.unhold();
        assert_eq!(held(&mut c), 0);

        // A pop consumes the held before its own message.
        hold_n(&mut c, 0, 3);
        let m = c.connection().front().unwrap();
        assert_eq!(m.popped_before(), 3, "{t:?}: the held are before it");
        m.pop();
        assert_eq!((c.connection().messages_popped(), held(&mut c)), (4, 0));
        assert_eq!(front_seq(&mut c), Some(4), "{t:?}");

        // A commit consumes the held alone, not a message read (and
        // dropped) since.
        hold_n(&mut c, 4, 2);
        assert_eq!(front_seq(&mut c), Some(6));
        let (rx, tx) = c.connection().split();
        let mut b = tx.batch();
        // (Message N: the server echoes it after the others.)
        b.append(1, &payload(N, small_len(N))).unwrap();
        assert_eq!(b.commit_consuming_held(rx), Ok(1), "{t:?}");
        assert_eq!((c.connection().messages_popped(), held(&mut c)), (6, 0));
        assert_eq!(front_seq(&mut c), Some(6), "{t:?}: the dropped one again");

        // A commit that fails gives them back.
        hold_n(&mut c, 6, 2);
        let (rx, tx) = c.connection().split();
        let too_large = tx.max_message() + 1;
        let mut b = tx.batch();
        assert!(matches!(
            b.alloc(1, too_large),
            Err(AllocError::TooLarge { .. })
        ));
        let req = rx.front().unwrap();
        assert!(matches!(
            b.commit_consuming(req),
            Err(CommitError::Alloc(AllocError::TooLarge { .. }))
        ));
        assert_eq!((c.connection().messages_popped(), held(&mut c)), (6, 0));
        assert_eq!(front_seq(&mut c), Some(6), "{t:?}: given back");

        // A commit with a request consumes the held and it.
        hold_n(&mut c, 6, 3);
        let (rx, tx) = c.connection().split();
        let req = rx.front().unwrap();
        assert_eq!(tx.batch().commit_consuming(req), Ok(0));
        assert_eq!((c.connection().messages_popped(), held(&mut c)), (10, 0));

        // Held across a new session: the server sends them again.
        hold_n(&mut c, 10, 5);
        c.stop();
        wait_until(20, "the server to see the close", || {
            server.poll(now(), &mut echo);
            !echo.disconnects.is_empty()
        });
        connect_served(&mut server, &mut c, &mut echo, t);
        assert_eq!(held(&mut c), 0, "{t:?}: a new session holds nothing");
        wait_until(20, "the rest again", || {
            server.poll(now(), &mut echo);
            c.poll(now(), &mut Keep);
            let n = hold_all(&mut c).len();
            c.connection().split().0.unhold();
            n as u64 == N + 1 - 10
        });
        assert_eq!(hold_all(&mut c), (10..=N).collect::<Vec<_>>(), "{t:?}");
        // All consumed at once by a pop-free commit.
        let (rx, tx) = c.connection().split();
        assert_eq!(tx.batch().commit_consuming_held(rx), Ok(0));
        assert_eq!(c.connection().messages_popped(), N as u32 + 1, "{t:?}");
        assert!(c.connection().front().is_none());
    }
}
