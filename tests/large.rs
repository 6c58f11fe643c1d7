//! Messages larger than one frame (`Config::max_message_size`) with real
//! sockets and shared memory: they arrive whole, in order, once, echoed
//! by consume-and-reply; a receiver that takes smaller ones closes the
//! session with a clear reason and loses nothing; the sender's limits are
//! clear errors; and a protocol-v1 peer (the C++ stand-in) receives the
//! fragments as ordinary messages in the documented layout. (The crash
//! cases: `src/conn/large_kill.rs`, and the CLI torture with `--size`.)

mod common;

use common::*;
use tcpshm::{
    Accept, AllocError, CloseReason, CommitError, ConnId, ConnTx, ControlHandler, GroupHandler,
    LoginRequest, Received, Server, Transport,
};

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Shm];
const MIB: usize = 1 << 20;

/// Sizes around the frame limit, and far above it.
fn large_len(seq: u64) -> usize {
    const SIZES: [usize; 8] = [8, 65_515, 65_516, 65_527, 65_528, 200_000, MIB, 3_000];
    SIZES[seq as usize % SIZES.len()]
}

fn large_config(dir: &std::path::Path) -> tcpshm::Config {
    config_with(dir, |c| {
        c.max_message_size = MIB;
        c.tcp_queue_size = 4 * MIB;
        c.tcp_recv_buf_max_size = 4 * MIB + 64;
        c.shm_queue_size = 4 * MIB;
    })
}

/// Sends message `seq` (any size) with `ConnTx::send`; false when the
/// queue cannot take it now.
fn send_any(conn: &mut tcpshm::Connection, seq: u64) -> bool {
    let len = large_len(seq);
    match conn.send((seq % 1000) as u16 + 1, &payload(seq, len)) {
        Ok(()) => true,
        Err(CommitError::Alloc(AllocError::Full)) => false,
        Err(e) => panic!("send {seq} of {len}: {e}"),
    }
}

/// Messages of up to 1 MiB, echoed by a server that answers each with a
/// consume-and-reply: every echo whole, in order, once.
#[test]
fn large_messages_echo_whole_through_consume_and_reply() {
    for t in TRANSPORTS {
        let dir = scratch("large-echo");
        let _c = Cleanup(dir.clone());
        let cfg = large_config(&dir);
        let echo = EchoServer {
            atomic: true,
            ..Default::default()
        };
        let total = 64u64;
        let echo = with_echo_server(&dir, "srv", &cfg, echo, |addr| {
            let mut c = client(&dir, "cli", &cfg);
            c.connect(t, addr, 0).unwrap();
            let mut got = CheckingClient {
                len_of: Some(large_len),
                ..Default::default()
            };
            let mut seq = 0u64;
            wait_until(120, "every echo", || {
                if seq < total && seq < got.received + 4 && send_any(c.connection(), seq) {
                    seq += 1;
                }
                c.poll(now(), &mut got);
                std::thread::yield_now();
                got.received == total
            });
            assert!(got.disconnects.is_empty(), "{t:?}: {:?}", got.disconnects);
            assert_eq!(c.connection().stats().msgs_received, total);
        });
        assert_eq!(echo.echoed, total, "{t:?}");
        assert!(
            echo.disconnects
                .iter()
                .all(|(_, r)| *r == CloseReason::RemoteClose),
            "{t:?}: {:?}",
            echo.disconnects
        );
    }
}

/// A server that takes no large message closes each session that brings
/// one, with `CloseReason::LargeMessage`; the message waits in the
/// client's queue and arrives once the server takes large messages.
#[test]
fn a_receiver_without_large_messages_refuses_them_and_loses_nothing() {
    for t in TRANSPORTS {
        let dir = scratch("large-off");
        let _c = Cleanup(dir.clone());
        let on = large_config(&dir);
        let mut off = on.clone();
        off.max_message_size = 0;
        let mut c = client(&dir, "cli", &on);
        let mut got = CheckingClient::default();
        let echo = with_echo_server(&dir, "srv", &off, EchoServer::default(), |addr| {
            c.connect(t, addr, 0).unwrap();
            let big = payload(0, 300_000);
            c.connection().send(1, &big).unwrap();
            wait_until(30, "the server's refusal", || {
                c.poll(now(), &mut got);
                std::thread::yield_now();
                c.connection().is_closed()
            });
        });
        assert_eq!(echo.echoed, 0);
        assert!(
            echo.disconnects
                .iter()
                .any(|(_, r)| *r == CloseReason::LargeMessage),
            "{t:?}: {:?}",
            echo.disconnects
        );
        assert_eq!(
            CloseReason::LargeMessage.to_string(),
            "Message larger than Config::max_message_size"
        );
        // The same server's files, now taking large messages.
        let echo = EchoServer {
            atomic: true,
            ..Default::default()
        };
        let echo = with_echo_server(&dir, "srv", &on, echo, |addr| {
            wait_until(30, "a new session", || c.connect(t, addr, 0).is_ok());
            let mut got = Keep(Vec::new());
            wait_until(30, "the message, once", || {
                c.poll(now(), &mut got);
                std::thread::yield_now();
                !got.0.is_empty()
            });
            assert_eq!(got.0, vec![(1, payload(0, 300_000))], "{t:?}");
        });
        assert_eq!(echo.echoed, 1, "{t:?}");
    }
}

/// A client handler that keeps a copy of every message and pops it.
struct Keep(Vec<(u16, Vec<u8>)>);

impl tcpshm::ClientHandler for Keep {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        self.0.push((msg.msg_type(), msg.payload().to_vec()));
        msg.pop();
    }
}

/// The sender's limits: a message above `max_message_size`, one the queue
/// can never hold, a reserved type, a batch that does not fit, and large
/// messages not enabled; and `Config::validate` refuses a maximum that
/// fits neither queue.
#[test]
fn the_senders_limits_are_clear_errors() {
    let dir = scratch("large-config");
    let _c = Cleanup(dir.clone());
    let bad = config_with(&dir, |c| {
        c.max_message_size = 4 * MIB;
        c.tcp_queue_size = MIB;
        c.tcp_recv_buf_max_size = MIB + 64;
        c.shm_queue_size = MIB;
    });
    let e = bad.validate().unwrap_err();
    assert!(e.to_string().contains("fits neither tcp_queue_size"), "{e}");
    for t in TRANSPORTS {
        let dir = scratch("large-limits");
        let _c = Cleanup(dir.clone());
        // 3 MiB fits the 4 MiB ring, not the 1 MiB TCP queue.
        let cfg = config_with(&dir, |c| {
            c.max_message_size = 3 * MIB;
            c.tcp_queue_size = MIB;
            c.tcp_recv_buf_max_size = MIB + 64;
            c.shm_queue_size = 4 * MIB;
        });
        let queue = if t == Transport::Tcp { MIB } else { 4 * MIB };
        let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        let mut echo = EchoServer {
            paused: true,
            ..Default::default()
        };
        let mut c = client(&dir, "cli", &cfg);
        connect_served(&mut server, &mut c, &mut echo, t);
        let conn = c.connection();
        assert_eq!(conn.max_message(), 3 * MIB);
        let too_large = conn.send(1, &vec![0; 3 * MIB + 1]);
        assert_eq!(
            too_large,
            Err(CommitError::Alloc(AllocError::TooLarge {
                len: 3 * MIB + 1,
                max: 3 * MIB
            }))
        );
        if t == Transport::Tcp {
            let Err(CommitError::Alloc(e @ AllocError::BatchTooLarge { .. })) =
                conn.send(1, &vec![0; 2 * MIB])
            else {
                panic!("{t:?}: a message larger than the queue");
            };
            assert!(e.to_string().contains("large message) of "), "{e}");
        }
        for reserved in [0u16, 0xfff0, 0xffff] {
            assert_eq!(
                conn.send(reserved, &[1; 100_000]),
                Err(CommitError::Alloc(AllocError::ReservedType))
            );
            assert_eq!(
                conn.alloc(reserved, 8).err(),
                Some(AllocError::ReservedType)
            );
        }
        assert_eq!(conn.messages_pushed(), 0, "{t:?}: nothing published");
        // A batch with a large message and a small one is committed
        // whole; the same again does not fit beside it and commits nothing.
        let mut b = conn.batch();
        b.append(7, &vec![1; queue / 2]).unwrap();
        b.alloc(8, 8).unwrap().fill(1);
        assert!(b.commit().is_ok(), "{t:?}");
        let frames = conn.messages_pushed();
        assert_eq!(frames, conn.frames_of(queue / 2) + 1, "{t:?}");
        let mut b = conn.batch();
        assert_eq!(b.append(7, &vec![2; queue / 2]), Err(AllocError::Full));
        assert_eq!(b.commit(), Err(CommitError::Alloc(AllocError::Full)));
        assert_eq!(conn.messages_pushed(), frames, "{t:?}");
        // Without max_message_size, a payload above one frame is too large.
        let mut small = cfg.clone();
        small.max_message_size = 0;
        let mut d = client(&dir, "plain", &small);
        connect_served(&mut server, &mut d, &mut echo, t);
        let max = d.connection().split().1.max_payload();
        assert_eq!(d.connection().split().1.max_message(), max);
        let e = d.connection().send(1, &vec![0; max + 1]).unwrap_err();
        assert_eq!(
            e,
            CommitError::Alloc(AllocError::TooLarge { len: max + 1, max })
        );
        assert!(e.to_string().contains("Config::max_message_size"), "{e}");
    }
}

/// Answers each request with one large message: 100,000 bytes of the
/// request's first byte.
struct Large;

impl ControlHandler for Large {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Large {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        let fill = msg.payload()[0];
        let mut b = tx.batch();
        if b.append(9, &vec![fill; 100_000]).is_ok() {
            let _ = b.commit_consuming(msg);
        }
    }
}

/// A protocol-v1 peer over TCP (byte for byte a C++ client) receives a
/// large message as ordinary messages of type 0xfff0 whose payloads follow
/// the documented layout, and a tcpshm client on the v1 ring (as a C++
/// one) receives it whole.
#[test]
fn a_v1_peer_receives_fragments_as_ordinary_messages() {
    let dir = scratch("large-v1");
    let _c = Cleanup(dir.clone());
    let cfg = large_config(&dir);
    with_server(&dir, "srv", &cfg, Large, |addr| {
        let mut peer = v1_peer(addr, "v1tcp");
        peer.send(3, &[5; 8]).unwrap();
        let mut whole = Vec::new();
        while whole.len() < 100_000 {
            let (hd, p) = peer.recv().unwrap();
            assert_eq!(hd.msg_type, 0xfff0);
            let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
            assert_eq!(u32_at(0), 100_000, "the message's length");
            assert_eq!(u32_at(4) as usize, whole.len(), "the piece's offset");
            assert_eq!(&p[8..12], &[9, 0, 0, 0], "the message's type, then 0");
            whole.extend_from_slice(&p[12..]);
        }
        assert_eq!(whole, vec![5; 100_000]);
        let mut cpp = cfg.clone();
        cpp.shm_doorbell_slots = usize::MAX;
        cpp.shm_fast_path = false;
        let mut c = client(&dir, "cppshm", &cpp);
        c.connect(Transport::Shm, addr, 0).unwrap();
        let mut got = Keep(Vec::new());
        for k in 0..3u8 {
            let mut m = c.connection().alloc(3, 8).unwrap();
            m.payload_mut().fill(k);
            m.push();
            wait_until(10, "the large reply", || {
                c.poll(now(), &mut got);
                got.0.len() > usize::from(k)
            });
            assert_eq!(got.0[usize::from(k)], (9, vec![k; 100_000]));
        }
    });
}
