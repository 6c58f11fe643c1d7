//! Consuming a large message, killed with kill -9 after every store
//! (`crate::failpoint`), by a pop and by a consume-and-reply, over shared
//! memory and over TCP: after a reopen the receiver is handed the whole
//! message again (nothing of it consumed, no reply queued) or the message
//! after it (its first fragment consumed, the reply queued, the fragments
//! a crash left first in line skipped). Never a part of it, never twice.
//! The same with two messages held before it (`Received::hold`), which a
//! consume-and-reply consumes with it, all or none, and a pop one by one
//! before it. And fragments a receiver must refuse: another message inside
//! a large one, a message the ring could never hold.

use std::path::{Path, PathBuf};

use super::{Connection, RxTransport};
use crate::failpoint::{run_child, Ended};
use crate::ptcp_queue::PtcpQueue;
use crate::shm_queue::{recover, ShmReader, ShmWriter};
use crate::sys::MapOptions;
use crate::wire::{
    padded, pieces, write_fragment_header, MsgHeader, Name, FRAGMENT_HEADER, FRAGMENT_TYPE,
    HEADER_SIZE,
};

const DIR_ENV: &str = "TCPSHM_LARGE_KILL_DIR";
const MODE_ENV: &str = "TCPSHM_LARGE_KILL_MODE";
/// 256 blocks of shared memory; the TCP queue.
const CAP: usize = 1 << 14;
/// The large message: 2,000 bytes in fragments of at most 500 bytes of
/// payload (5 of them), then a small one.
const LEN: usize = 2000;
const FRAME: usize = 500;
const FRAGMENTS: u32 = 5;
const LARGE_TYPE: u16 = 9;
const NEXT_TYPE: u16 = 7;
/// The messages before the large one in the "held" modes.
const HELD_TYPE: u16 = 5;
const HELD: u32 = 2;

/// Messages before the large one: `HELD` in the modes that hold them.
fn lead(mode: &str) -> u32 {
    if mode.contains("held") {
        HELD
    } else {
        0
    }
}

fn message() -> Vec<u8> {
    (0..LEN).map(|i| (i * 7 + 3) as u8).collect()
}

/// The fragments' payloads.
fn fragments() -> Vec<Vec<u8>> {
    let m = message();
    pieces(LEN, FRAME)
        .map(|(off, len)| {
            let mut f = vec![0; FRAGMENT_HEADER + len];
            write_fragment_header(&mut f, LEN as u32, off as u32, LARGE_TYPE);
            f[FRAGMENT_HEADER..].copy_from_slice(&m[off..off + len]);
            f
        })
        .collect()
}

fn config() -> crate::Config {
    crate::Config {
        shm_queue_size: CAP,
        tcp_queue_size: CAP,
        max_message_size: 1 << 16,
        ..Default::default()
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-large-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Our ring (we write it) and the peer's (we read it); our TCP queue.
fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("a_b.shm"),
        dir.join("b_a.shm"),
        dir.join("a_b.ptcp"),
    )
}

/// The peer's frames over TCP, each padded: `lead` small messages, the
/// fragments, then the small message.
fn tcp_frames(lead: u32) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = (0..lead as u8)
        .map(|i| frame(HELD_TYPE, &[0x11 + i; 8]))
        .collect();
    frames.extend(fragments().into_iter().map(|f| frame(FRAGMENT_TYPE, &f)));
    frames.push(frame(NEXT_TYPE, &[0xaa; 8]));
    frames
}

fn frame(msg_type: u16, payload: &[u8]) -> Vec<u8> {
    let size = HEADER_SIZE + payload.len();
    let mut f = vec![0; padded(size)];
    MsgHeader {
        size: size as u16,
        msg_type,
        ack_seq: 0,
    }
    .encode_into(&mut f);
    f[HEADER_SIZE..size].copy_from_slice(payload);
    f
}

/// Fresh files: the peer's ring holds `lead` small messages, the large
/// message (one batch) and the small one; ours and our TCP queue are
/// empty.
fn prepare(dir: &Path, lead: u32) {
    let (out, inn, tcp) = paths(dir);
    for p in [&out, &inn, &tcp] {
        let _ = std::fs::remove_file(p);
    }
    let mut peer = ShmWriter::open_file(&inn, CAP, MapOptions::default(), 2).unwrap();
    for i in 0..lead as u8 {
        peer.alloc(HELD_TYPE, 8).unwrap().fill(0x11 + i);
        peer.push();
    }
    peer.batch_begin();
    for f in fragments() {
        peer.batch_alloc(FRAGMENT_TYPE, f.len())
            .unwrap()
            .copy_from_slice(&f);
    }
    assert_eq!(peer.batch_commit(None), Some(FRAGMENTS));
    peer.alloc(NEXT_TYPE, 8).unwrap().fill(0xaa);
    peer.push();
}

/// Our connection over `transport` ("shm" or "tcp"), its files reopened
/// (recovered) as a restarted process does; over TCP the peer has resent
/// what our ack does not cover. Returns it and the frames consumed before.
fn open(dir: &Path, transport: &str, lead: u32) -> (Connection, u32) {
    let (out, inn, tcp) = paths(dir);
    let mut c = Connection::new(Name::new("a").unwrap());
    let cfg = config();
    if transport == "shm" {
        let mut w = ShmWriter::open_file(&out, CAP, MapOptions::default(), 1).unwrap();
        let mut r = ShmReader::open_file(&inn, CAP, MapOptions::default(), 2).unwrap();
        recover(&mut w, &mut r).unwrap();
        w.reload();
        r.reload();
        c.set_shm_queues(w, r, &cfg);
    } else {
        let q = PtcpQueue::open_file(&tcp, CAP, MapOptions::default()).unwrap();
        c.set_tcp_queue(q, &cfg);
        let acked = c.messages_popped() as usize;
        receive(&mut c, tcp_frames(lead).into_iter().skip(acked));
    }
    let before = c.messages_popped();
    (c, before)
}

/// Over TCP: `frames` arrive in the receive buffer.
fn receive(c: &mut Connection, frames: impl Iterator<Item = Vec<u8>>) {
    let RxTransport::Tcp { buf, .. } = &mut c.rx.t else {
        unreachable!()
    };
    let bytes: Vec<u8> = frames.flatten().collect();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let space = buf.space().unwrap();
        let n = space.len().min(rest.len());
        space[..n].copy_from_slice(&rest[..n]);
        buf.received::<crate::sys::Mapping>(n, None, None).unwrap();
        rest = &rest[n..];
    }
}

/// The child: opens, takes the large message, and with mode "pop" pops
/// it, with "consume" answers it with a consume-and-reply; "heldpop" and
/// "heldconsume" hold the two messages before it first.
#[test]
#[ignore = "the child process of consuming_a_large_message_is_exact_at_every_point"]
fn large_child() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("spawned by the parent"));
    let mode = std::env::var(MODE_ENV).unwrap();
    let (transport, how) = mode.split_once('-').unwrap();
    crate::failpoint::arm();
    let (mut c, _) = open(&dir, transport, lead(how));
    let (rx, tx) = c.split();
    for i in 0..lead(how) as u8 {
        let m = rx.front().expect("a message before");
        assert_eq!((m.msg_type(), m.payload()), (HELD_TYPE, &[0x11 + i; 8][..]));
        m.hold().unwrap();
    }
    let msg = rx.front().expect("the large message");
    assert_eq!(msg.popped_before(), lead(how));
    assert_eq!(
        (msg.msg_type(), msg.payload()),
        (LARGE_TYPE, &message()[..])
    );
    if how.ends_with("pop") {
        msg.pop();
    } else {
        let mut b = tx.batch();
        b.alloc(2, 40).unwrap().fill(0xb0);
        assert_eq!(b.commit_consuming(msg), Ok(1));
    }
    // Every frame counted: the count is what the peer learns as our ack.
    assert_eq!(c.messages_popped(), lead(how) + FRAGMENTS);
    assert_eq!(c.rx.held(), 0);
}

/// After a reopen: whether the large message was consumed (else it comes
/// whole, or a message before it), whether a reply is queued, and the
/// frames consumed before.
fn outcome(dir: &Path, transport: &str, lead: u32) -> (bool, bool, u32) {
    let (mut c, before) = open(dir, transport, lead);
    let replies = c.messages_pushed();
    assert!(replies <= 1);
    let msg = c.front().expect("a message");
    let consumed = match msg.msg_type() {
        HELD_TYPE => {
            // The first not consumed (a pop consumes them one by one).
            assert!(before < lead, "a message before the large one, again");
            assert_eq!(msg.payload(), &[0x11 + before as u8; 8]);
            false
        }
        LARGE_TYPE if before != lead => panic!("{before} consumed before the large one"),
        LARGE_TYPE => {
            assert_eq!(msg.payload(), &message()[..], "the large message, whole");
            false
        }
        NEXT_TYPE => {
            assert_eq!(msg.payload(), &[0xaa; 8]);
            true
        }
        t => panic!("a message of type {t}"),
    };
    // The count is exact: the message handed out is the one after it
    // (orphans skipped by `front` counted).
    let at = match msg.msg_type() {
        HELD_TYPE => u32::from(msg.payload()[0] - 0x11),
        LARGE_TYPE => lead,
        _ => lead + FRAGMENTS,
    };
    assert_eq!(
        msg.popped_before(),
        at,
        "consumed {before} before the reopen"
    );
    drop(msg);
    assert!(c.rx.fault.is_none(), "{:?}", c.rx.fault);
    (consumed, replies == 1, before)
}

#[test]
#[cfg_attr(miri, ignore = "processes and files")]
fn consuming_a_large_message_is_exact_at_every_point() {
    let dir = scratch("all");
    for mode in [
        "shm-pop",
        "shm-consume",
        "tcp-pop",
        "tcp-consume",
        "shm-heldpop",
        "shm-heldconsume",
        "tcp-heldpop",
        "tcp-heldconsume",
    ] {
        let (transport, how) = mode.split_once('-').unwrap();
        let lead = lead(how);
        let (mut points, mut orphans) = (0, 0);
        for point in 1.. {
            prepare(&dir, lead);
            let ended = run_child(
                "conn::large_kill::large_child",
                point,
                &[(DIR_ENV, &dir), (MODE_ENV, Path::new(mode))],
            );
            let (consumed, replied, before) = outcome(&dir, transport, lead);
            if how.ends_with("consume") {
                // All or none: the held and the large message with the reply.
                assert_eq!(consumed, replied, "{mode} point {point}");
                assert!(consumed || before == 0, "{mode} point {point}: {before}");
            }
            // Fragments a crash left first in line, skipped at the reopen.
            orphans += u32::from(before > lead && before < lead + FRAGMENTS);
            assert!(consumed || before <= lead, "{mode} point {point}: {before}");
            if ended == Ended::Finished {
                assert!(consumed, "{mode}: a finished child consumed it");
                break;
            }
            points += 1;
        }
        // A TCP pop is one store of the ack: nothing to cut.
        if !mode.starts_with("tcp-") || !mode.ends_with("pop") {
            assert!(points >= 4, "{mode}: only {points} crash points");
            assert!(orphans > 0, "{mode}: no crash left orphan fragments");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Over TCP, a message between two fragments (a peer that does not send
/// them as one batch) is out of sequence: the session closes, and nothing
/// is delivered or consumed (after the first fragment was stepped over,
/// the message would otherwise be handed out and its pop acknowledge the
/// fragment).
#[test]
#[cfg_attr(miri, ignore = "files")]
fn a_message_inside_a_large_one_is_refused() {
    let dir = scratch("inside");
    let mut c = Connection::new(Name::new("a").unwrap());
    let q = PtcpQueue::open_file(&paths(&dir).2, CAP, MapOptions::default()).unwrap();
    c.set_tcp_queue(q, &config());
    let mut frames = tcp_frames(0);
    let next = frames.pop().unwrap();
    frames.insert(1, next);
    // The first fragment alone (stepped over), then the rest.
    receive(&mut c, frames.drain(..1));
    assert!(c.front().is_none());
    assert!(c.rx.fault.is_none());
    receive(&mut c, frames.into_iter());
    assert!(c.front().is_none());
    assert_eq!(
        c.rx.fault.map(|f| f.reason),
        Some(crate::CloseReason::BadFragment)
    );
    assert_eq!(c.messages_popped(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Over shared memory, a first fragment of a message larger than the ring
/// closes the session (`LargeMessage`): its writer could never publish
/// the rest while this side holds the first.
#[test]
#[cfg_attr(miri, ignore = "files")]
fn a_message_larger_than_the_ring_is_refused() {
    let dir = scratch("ring");
    let (out, inn, _) = paths(&dir);
    let mut peer = ShmWriter::open_file(&inn, CAP, MapOptions::default(), 2).unwrap();
    let mut f = vec![0; FRAGMENT_HEADER + 100];
    write_fragment_header(&mut f, 60_000, 0, LARGE_TYPE);
    peer.alloc(FRAGMENT_TYPE, f.len())
        .unwrap()
        .copy_from_slice(&f);
    peer.push();
    let w = ShmWriter::open_file(&out, CAP, MapOptions::default(), 1).unwrap();
    let r = ShmReader::open_file(&inn, CAP, MapOptions::default(), 2).unwrap();
    let mut c = Connection::new(Name::new("a").unwrap());
    c.set_shm_queues(w, r, &config());
    assert!(c.front().is_none());
    assert_eq!(
        c.rx.fault.map(|f| f.reason),
        Some(crate::CloseReason::LargeMessage)
    );
    assert_eq!(c.messages_popped(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
