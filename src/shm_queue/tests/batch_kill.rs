//! A batch and a consume-and-reply over shared memory, killed with
//! kill -9 after every store of their commit (`crate::failpoint`), and
//! their recovery (`shm_queue::recover`) killed after every store of its
//! own: the rings then hold all of the batch or none, and the request is
//! consumed exactly when the batch is there.

use std::path::{Path, PathBuf};

use crate::failpoint::{run_child, Ended};
use crate::shm_queue::{recover, ShmReader, ShmWriter};
use crate::sys::MapOptions;

/// 64 blocks.
const CAP: usize = 1 << 12;
const DIR_ENV: &str = "TCPSHM_SHM_BATCH_KILL_DIR";
const MODE_ENV: &str = "TCPSHM_SHM_BATCH_KILL_MODE";
/// Messages of 3 blocks published and consumed before the batch: it starts
/// at block 57 and its third message needs a wrap marker first.
const BEFORE: u32 = 19;
const BATCH: u32 = 3;
const LEN: usize = 150;
/// Requests waiting in the other ring.
const REQUESTS: u8 = 4;

fn opts() -> MapOptions {
    MapOptions::default()
}

/// Our ring (we write it) and the peer's (we read it).
fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("a_b.shm"), dir.join("b_a.shm"))
}

/// Our two ends, with a crash's commit finished, as a restarted process
/// opens them.
fn open(dir: &Path) -> (ShmWriter, ShmReader) {
    let (out, inn) = paths(dir);
    let mut w = ShmWriter::open_file(&out, CAP, opts(), 1).unwrap();
    let mut r = ShmReader::open_file(&inn, CAP, opts(), 2).unwrap();
    recover(&mut w, &mut r).unwrap();
    w.reload();
    r.reload();
    (w, r)
}

/// The rings before the commit; returns the reader of our ring, caught
/// up (on the fast path: the writer announced it).
fn prepare(dir: &Path) -> ShmReader {
    let (out, inn) = paths(dir);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&inn);
    let mut peer = ShmWriter::open_file(&inn, CAP, opts(), 2).unwrap();
    for i in 0..REQUESTS {
        peer.alloc(7, 20).unwrap().fill(i);
        peer.push();
    }
    let mut w = ShmWriter::open_file(&out, CAP, opts(), 1).unwrap();
    let mut reader = ShmReader::open_file(&out, CAP, opts(), 1).unwrap();
    for i in 0..BEFORE {
        w.alloc(1, LEN).unwrap().fill(i as u8);
        w.push();
        assert!(reader.front().unwrap().is_some());
        reader.pop();
    }
    // Caught up: it takes the fast path the writer announced.
    assert!(reader.front().unwrap().is_none());
    reader
}

/// The child: opens the rings (recovering them), reads the first request,
/// then with mode "consume" or "plain" commits a batch of `BATCH`
/// messages, consuming the request with "consume"; "consume3" holds two
/// requests and consumes them and the third, "held2" holds two and
/// consumes them alone, "empty3" holds two and consumes them and the
/// third with a batch of nothing; with "recover" it only opens. Crash points count
/// from the start (the recovery's included).
#[test]
#[ignore = "the child process of shm_batch_commit_is_all_or_nothing_at_every_point"]
fn shm_batch_child() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("spawned by the parent"));
    let mode = std::env::var(MODE_ENV).unwrap();
    crate::failpoint::arm();
    let (mut w, mut r) = open(&dir);
    if mode == "recover" {
        return;
    }
    let holds = consumed(&mode).saturating_sub(u32::from(mode != "held2"));
    for i in 0..holds {
        assert_eq!(r.front().unwrap().unwrap().1[0], i as u8);
        assert!(r.hold());
    }
    assert_eq!(r.held(), holds);
    if mode != "held2" {
        assert!(r.front().unwrap().is_some());
    }
    w.batch_begin();
    let n = if mode == "empty3" { 0 } else { BATCH };
    for i in 0..n {
        w.batch_alloc(2, LEN).unwrap().fill(0xb0 + i as u8);
    }
    let consume = (mode != "plain").then_some(&mut r);
    assert_eq!(w.batch_commit(consume), Some(n));
}

/// The requests a mode consumes.
fn consumed(mode: &str) -> u32 {
    match mode {
        "consume" => 1,
        "consume3" | "empty3" => 3,
        "held2" => 2,
        _ => 0,
    }
}

/// What the rings hold after a reopen: requests consumed, and whether the
/// batch is there (every byte checked; `early` of its messages were read
/// before the reopen). The counts agree with both.
fn outcome_after(dir: &Path, early: u32) -> (u32, bool) {
    let (w, mut r) = open(dir);
    let popped = r.popped();
    let (want, _) = r.front().unwrap().expect("a request is left");
    assert_eq!(want, 7);
    let next = r.current().unwrap().1[0];
    assert_eq!(
        u32::from(next),
        popped,
        "the next request is the one after the consumed"
    );
    let mut reader = ShmReader::open_file(&paths(dir).0, CAP, opts(), 1).unwrap();
    let mut got = early;
    while let Some((t, p)) = reader.front().unwrap() {
        assert_eq!(
            (t, p),
            (2, &[0xb0 + got as u8; LEN][..]),
            "batch message {got}"
        );
        reader.pop();
        got += 1;
    }
    let whole = match got {
        0 if early == 0 => false,
        BATCH => true,
        n => panic!("a partial batch: {n} of {BATCH} messages"),
    };
    assert_eq!(w.pushed(), BEFORE + got, "pushed count");
    (popped, whole)
}

fn outcome(dir: &Path) -> (u32, bool) {
    outcome_after(dir, 0)
}

/// A reader on the fast path, alive while the writer dies, reads what the
/// dead writer's stamps show (the batch's first message once its first
/// stop is stamped, though `write_idx` was not stored yet); the reopen then
/// rolls the batch forward and the rest follows: every message once.
#[test]
#[cfg_attr(miri, ignore = "processes and files")]
fn a_fast_reader_mid_batch_when_the_writer_dies() {
    let dir = std::env::temp_dir().join(format!("tcpshm-shm-batch-mid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut mid = 0;
    for point in 1.. {
        let mut reader = prepare(&dir);
        assert!(reader.is_fast(), "the reader is on the fast path");
        let ended = run_child(
            "shm_queue::tests::batch_kill::shm_batch_child",
            point,
            &[(DIR_ENV, &dir), (MODE_ENV, Path::new("plain"))],
        );
        // Before anyone reopens the rings: what the live reader sees.
        let mut early = 0u32;
        if let Some((t, p)) = reader.front().unwrap() {
            assert_eq!((t, p), (2, &[0xb0; LEN][..]), "point {point}");
            reader.pop();
            early = 1;
        }
        drop(reader);
        let (popped, whole) = outcome_after(&dir, early);
        assert_eq!(popped, 0);
        assert!(
            whole || early == 0,
            "point {point}: a message of a lost batch read"
        );
        if ended == Ended::Finished {
            break;
        }
        mid += u32::from(early == 1 && whole);
    }
    assert!(mid > 0, "no crash left a batch half read");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "processes and files")]
fn shm_batch_commit_is_all_or_nothing_at_every_point() {
    let dir = std::env::temp_dir().join(format!("tcpshm-shm-batch-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let (out, inn) = paths(&dir);
    let save = |from: &Path, to: &Path| {
        for f in ["a_b.shm", "b_a.shm"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    let run = |p: u32, m: &str| {
        run_child(
            "shm_queue::tests::batch_kill::shm_batch_child",
            p,
            &[(DIR_ENV, &dir), (MODE_ENV, Path::new(m))],
        )
    };
    for mode in ["plain", "consume", "consume3", "held2", "empty3"] {
        let (mut points, mut intents) = (0, 0);
        for point in 1.. {
            prepare(&dir);
            let ended = run(point, mode);
            save(&dir, &saved);
            let (popped, whole) = outcome(&dir);
            match mode {
                "plain" => assert_eq!(popped, 0, "point {point}"),
                "empty3" => {
                    assert!(!whole);
                    assert!(popped == 0 || popped == 3, "point {point}: popped {popped}");
                    if ended == Ended::Finished {
                        assert_eq!(popped, 3, "a finished commit consumed them");
                    }
                }
                _ => assert_eq!(
                    popped,
                    if whole { consumed(mode) } else { 0 },
                    "point {point}: popped {popped}, batch {whole}"
                ),
            }
            if ended == Ended::Finished {
                assert!(
                    whole || mode == "empty3",
                    "a finished commit published its batch"
                );
                break;
            }
            points += 1;
            for r in 1.. {
                save(&saved, &dir);
                let ended = run(r, "recover");
                assert_eq!(
                    outcome(&dir),
                    (popped, whole),
                    "point {point}, recovery point {r}"
                );
                if ended == Ended::Finished {
                    intents += u32::from(r > 1);
                    break;
                }
            }
        }
        assert!(points >= 6, "{mode}: only {points} crash points");
        assert!(
            intents > 0,
            "{mode}: no crash left an intent to roll forward"
        );
    }
    let _ = (out, inn);
    std::fs::remove_dir_all(&dir).unwrap();
}
