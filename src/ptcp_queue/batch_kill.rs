//! A batch and a consume-and-reply in the TCP send queue, killed with
//! kill -9 after every store of their commit (`crate::failpoint`), and
//! their recovery killed after every store of its own: the file then
//! holds all of the batch or none, and the local ack moved with it.

use std::path::{Path, PathBuf};

use super::PtcpQueue;
use crate::failpoint::{run_child, Ended};
use crate::sys::MapOptions;
use crate::wire::MsgHeader;

/// 32 blocks: the batch does not fit after the write index, so its
/// allocation compacts the queue (carrying the batch's first message).
const CAP: usize = 256;
const FILE_ENV: &str = "TCPSHM_BATCH_KILL_FILE";
const MODE_ENV: &str = "TCPSHM_BATCH_KILL_MODE";
/// The local ack before the commit.
const ACK: u32 = 5;
/// Messages pushed before, and acknowledged by the peer before, the batch.
const BEFORE: u32 = 6;
const ACKED: u32 = 4;
const BATCH: u32 = 3;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-batch-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(path: &Path) -> (PtcpQueue, super::AckCounter) {
    PtcpQueue::open_file(path, CAP, MapOptions::default()).unwrap()
}

/// The file before the commit: `BEFORE` messages, the first `ACKED`
/// acknowledged by the peer, the local ack `ACK`.
fn prepare(path: &Path) {
    let _ = std::fs::remove_file(path);
    let (mut q, mut ack) = open(path);
    ack.set(ACK);
    for i in 0..BEFORE {
        q.alloc(1, 16).unwrap().fill(i as u8);
        q.push();
    }
    q.mark_sent(q.sendable().len());
    q.ack(ACKED).unwrap();
}

/// The child: opens the file (recovering it), then with mode "consume",
/// "consume3" or "plain" commits a batch of `BATCH` messages, consuming
/// one message with "consume", three with "consume3"; with "recover" it
/// only opens. Crash points count from the
/// start (open included), so the recovery's points are covered too.
#[test]
#[ignore = "the child process of batch_commit_is_all_or_nothing_at_every_point"]
fn batch_child() {
    let path = PathBuf::from(std::env::var(FILE_ENV).expect("spawned by the parent"));
    let mode = std::env::var(MODE_ENV).unwrap();
    crate::failpoint::arm();
    let (mut q, mut ack) = open(&path);
    if mode == "recover" {
        return;
    }
    q.batch_begin();
    for i in 0..BATCH {
        q.batch_alloc(2, 40).unwrap().fill(0xb0 + i as u8);
    }
    let consume = mode
        .strip_prefix("consume")
        .map(|k| (&mut ack, consumed(k)));
    assert_eq!(q.batch_commit(consume).unwrap().messages, BATCH);
}

/// The messages a mode "consume<k>" consumes.
fn consumed(k: &str) -> u32 {
    k.parse().unwrap_or(1)
}

/// What the file holds: the local ack, and whether the batch is in it
/// (checking every message's bytes).
fn outcome(path: &Path) -> (u32, bool) {
    let (mut q, ack) = open(path);
    let (start, end) = q.seq_range();
    assert_eq!(start, ACKED);
    q.login_ack(start).unwrap();
    let s = q.sendable();
    let mut off = 0;
    for seq in start..end {
        let h = MsgHeader::decode(&s[off..]).unwrap();
        let body = &s[off + 8..off + h.size as usize];
        if seq < BEFORE {
            assert_eq!((h.msg_type, body), (1, &[seq as u8; 16][..]), "seq {seq}");
        } else {
            let i = (seq - BEFORE) as u8;
            assert_eq!((h.msg_type, body), (2, &[0xb0 + i; 40][..]), "seq {seq}");
        }
        off += h.padded_size();
    }
    assert_eq!(off, s.len());
    let whole = match end - start {
        n if n == BEFORE - ACKED => false,
        n if n == BEFORE - ACKED + BATCH => true,
        n => panic!("a partial batch: {n} messages held"),
    };
    (ack.get(), whole)
}

/// Kills the commit after every store, then the recovery of each state
/// left after every store of its own.
#[test]
#[cfg_attr(miri, ignore = "processes and files")]
fn batch_commit_is_all_or_nothing_at_every_point() {
    let dir = scratch("tcp");
    let path = dir.join("a_b.ptcp");
    let saved = dir.join("saved");
    let env = |p: &Path| [(FILE_ENV, p.to_path_buf())];
    for mode in ["plain", "consume", "consume3"] {
        let (mut points, mut intents) = (0, 0);
        for point in 1.. {
            prepare(&path);
            let run = |p: u32, m: &str| {
                let e = env(&path);
                let vars: Vec<(&str, &Path)> = vec![(e[0].0, &e[0].1), (MODE_ENV, Path::new(m))];
                run_child("ptcp_queue::batch_kill::batch_child", p, &vars)
            };
            let ended = run(point, mode);
            std::fs::copy(&path, &saved).unwrap();
            // What a plain reopen makes of it.
            let (ack, whole) = outcome(&path);
            match mode {
                "plain" => assert_eq!(ack, ACK, "point {point}"),
                _ => assert_eq!(
                    ack,
                    ACK + if whole {
                        consumed(&mode["consume".len()..])
                    } else {
                        0
                    },
                    "point {point}: ack {ack}, batch {whole}"
                ),
            }
            if ended == Ended::Finished {
                assert!(whole, "a finished commit published its batch");
                break;
            }
            points += 1;
            // The recovery of that state, killed after each of its stores,
            // then reopened: the same outcome.
            for r in 1.. {
                std::fs::copy(&saved, &path).unwrap();
                let ended = run(r, "recover");
                assert_eq!(
                    outcome(&path),
                    (ack, whole),
                    "point {point}, recovery point {r}"
                );
                if ended == Ended::Finished {
                    intents += u32::from(r > 1);
                    break;
                }
            }
        }
        assert!(points >= 5, "{mode}: only {points} crash points");
        if mode != "plain" {
            assert!(intents > 0, "no crash left an intent to roll forward");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A consume-and-reply's last reply carries the ack of the request it
/// answers: the peer learns it from the reply, with no frame of its own.
#[test]
fn the_last_reply_carries_the_new_ack() {
    let (mut q, mut ack) = PtcpQueue::heap(1024);
    ack.set(ACK);
    q.batch_begin();
    for _ in 0..2 {
        q.batch_alloc(2, 10).unwrap();
    }
    let c = q.batch_commit(Some((&mut ack, 1))).unwrap();
    assert_eq!(
        (c.messages, c.stamped, ack.get()),
        (2, Some(ACK + 1), ACK + 1)
    );
    let s = q.sendable();
    let first = MsgHeader::decode(s).unwrap();
    let last = MsgHeader::decode(&s[first.padded_size()..]).unwrap();
    assert_eq!((first.ack_seq, last.ack_seq), (ACK, ACK + 1));
    // A plain batch stamps the ack as it stands.
    q.batch_begin();
    q.batch_alloc(2, 10).unwrap();
    assert_eq!(q.batch_commit(None).unwrap().stamped, Some(ACK + 1));
}
