//! The shared-memory fast path across processes' lifetimes: the objects
//! are real files, and the writer and the reader are closed and opened
//! again (a restart) with messages in flight, switching between the fast
//! path and v1 at every restart, as when a tcpshm process and a C++ one
//! (the project's v1 writer, which leaves the stamp bytes alone as C++
//! does, stands in for it) take turns under the same names. Every message
//! arrives once, in order, intact; none is stale.

use std::path::Path;

use crate::shm_queue::{ShmReader, ShmWriter};
use crate::sys::MapOptions;

const CAP: usize = 1 << 12; // 64 blocks: many laps

fn opts() -> MapOptions {
    MapOptions {
        mode: 0o600,
        lock: crate::sys::Lock::None,
    }
}

fn len_of(i: u64) -> usize {
    match i % 7 {
        0 => 0,
        1 => 200,
        2 => 56,
        3 => 4000 - 8 - 64, // the largest message with a spare block
        _ => (i as usize * 13) % 300,
    }
}

/// A payload of words that look like stamped headers for indices near
/// `i`, with the sequence number first: a reader that took a stale block
/// for a new message would deliver one of these lies.
fn fill(p: &mut [u8], i: u64) {
    for (k, c) in p.chunks_mut(8).enumerate() {
        let stamp = (i as u32).wrapping_add(k as u32 % 8);
        let v = 64u64 | 7 << 16 | (stamp as u64) << 32;
        c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
    }
    let n = p.len().min(8);
    p[..n].copy_from_slice(&i.to_le_bytes()[..n]);
}

fn check(t: u16, p: &[u8], i: u64) {
    assert_eq!(t, (i % 60_000) as u16 + 1, "message {i}: wrong type");
    assert_eq!(p.len(), len_of(i), "message {i}: wrong length");
    let mut want = vec![0u8; p.len()];
    fill(&mut want, i);
    assert!(p == &want[..], "message {i}: wrong bytes");
}

struct Ends {
    w: ShmWriter,
    r: ShmReader,
}

fn open(path: &Path, writer_fast: bool, reader_fast: bool) -> Ends {
    let mut w = ShmWriter::open_file(path, CAP, opts(), 1).expect("writer");
    let mut r = ShmReader::open_file(path, CAP, opts(), 1).expect("reader");
    w.set_fast_path(writer_fast);
    r.set_fast_path(reader_fast);
    // A session starts: both take up the stored indices.
    w.reload();
    r.reload();
    Ends { w, r }
}

/// Pushes messages `*sent..` while they fit, up to `n` of them.
fn push_some(e: &mut Ends, sent: &mut u64, n: u64) {
    for _ in 0..n {
        let len = len_of(*sent);
        match e.w.alloc((*sent % 60_000) as u16 + 1, len) {
            Some(p) => {
                fill(p, *sent);
                e.w.push();
                *sent += 1;
            }
            None => return,
        }
    }
}

/// Reads up to `n` messages, checking each.
fn read_some(e: &mut Ends, got: &mut u64, n: u64) -> u64 {
    let mut fast = 0;
    for _ in 0..n {
        match e.r.front().expect("an honest writer never looks corrupt") {
            Some((t, p)) => {
                check(t, p, *got);
                e.r.pop();
                *got += 1;
                fast += e.r.is_fast() as u64;
            }
            None => break,
        }
    }
    fast
}

#[test]
#[cfg_attr(miri, ignore = "files")]
fn implementations_change_across_restarts_with_messages_in_flight() {
    let dir = std::env::temp_dir().join(format!("tcpshm-fastpath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a_b.shm");
    let _ = std::fs::remove_file(&path);
    let phases = [
        (true, true),
        (false, true), // a C++ writer takes over: the reader stays on v1
        (true, true),  // tcpshm again: fast once the C++ messages are read
        (true, false), // a C++ reader: the fast writer's bytes are v1
        (false, false),
        (true, true),
        (false, true),
        (true, true),
    ];
    let (mut sent, mut got) = (0u64, 0u64);
    for (round, &(wf, rf)) in phases.iter().cycle().take(40).enumerate() {
        let mut e = open(&path, wf, rf);
        let mut fast = 0;
        for step in 0..300u64 {
            push_some(&mut e, &mut sent, 1 + step % 5);
            fast += read_some(&mut e, &mut got, 1 + (step * 7) % 4);
        }
        push_some(&mut e, &mut sent, 3);
        // A writer killed mid-message: allocated and half filled, never
        // pushed. Nothing of it may be seen.
        if let Some(p) = e.w.alloc(9, 100) {
            p[..50].fill(0xee);
        }
        if wf && rf {
            assert!(fast > 0, "round {round}: the fast path was never taken");
        } else {
            assert_eq!(fast, 0, "round {round}: fast path without both ends");
        }
        assert!(sent > got, "round {round}: messages must be in flight");
        drop(e); // restart
    }
    // Drain what is left with a last tcpshm pair.
    let mut e = open(&path, true, true);
    read_some(&mut e, &mut got, u64::MAX);
    assert_eq!(got, sent, "every message once");
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two threads on the fast path over a mapped file, every byte checked,
/// with a writer restarted (dropped and opened again, alternating fast and
/// v1) while the reader keeps reading: the reader follows, falling back to
/// v1 when stamps stop, and loses nothing.
#[test]
#[cfg_attr(miri, ignore = "files")]
fn reader_follows_writer_restarts_on_two_threads() {
    let dir = std::env::temp_dir().join(format!("tcpshm-fastpath2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c_d.shm");
    let _ = std::fs::remove_file(&path);
    let n: u64 = 60_000;
    let mut r = ShmReader::open_file(&path, CAP, opts(), 1).expect("reader");
    let wpath = path.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for restart in 0.. {
            let mut w = ShmWriter::open_file(&wpath, CAP, opts(), 1).expect("writer");
            w.set_fast_path(restart % 2 == 0);
            let end = (i + 7_000).min(n);
            while i < end {
                assert!(std::time::Instant::now() < deadline, "writer stalled");
                match w.alloc((i % 60_000) as u16 + 1, len_of(i)) {
                    Some(p) => {
                        fill(p, i);
                        w.push();
                        i += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
            if i == n {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut got, mut was_fast) = (0u64, false);
    while got < n {
        assert!(
            std::time::Instant::now() < deadline,
            "reader stalled at {got}"
        );
        match r.front().expect("not corrupt") {
            Some((t, p)) => {
                check(t, p, got);
                r.pop();
                got += 1;
                was_fast |= r.is_fast();
            }
            None => std::thread::yield_now(),
        }
    }
    writer.join().unwrap();
    assert!(was_fast, "the first writer's fast path was never taken");
    assert!(
        !r.is_fast(),
        "a writer without stamps must put the reader on v1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
