//! Batches on the ring in one process (Miri runs these): a batch is read
//! whole or not at all, from two threads, on the fast path and on v1, and
//! read ahead whole (`ShmReader::peek`, as a large message's fragments); a
//! batch dropped before its commit leaves nothing a reader could take for
//! a message; the intent record's words are checked before use.

use super::pair;
use crate::shm_queue::{heap_queue, recover};

/// Payload of message `idx` of batch `id` of `size` messages: the three
/// numbers, then bytes derived from them.
fn fill(p: &mut [u8], id: u32, idx: u32, size: u32) {
    for (k, b) in p.iter_mut().enumerate() {
        *b = (id as usize * 7 + idx as usize + k) as u8;
    }
    if p.len() >= 12 {
        p[..4].copy_from_slice(&id.to_le_bytes());
        p[4..8].copy_from_slice(&idx.to_le_bytes());
        p[8..12].copy_from_slice(&size.to_le_bytes());
    }
}

fn len_of(id: u32, idx: u32) -> usize {
    12 + (id as usize * 53 + idx as usize * 29) % 180
}

fn size_of(id: u32) -> u32 {
    1 + (id * 5 + id / 3) % 6
}

/// Writes `batches` batches on another thread (waiting for room).
fn write_batches(
    mut w: crate::shm_queue::ShmWriter<crate::sys::HeapRegion>,
    batches: u32,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for id in 0..batches {
            loop {
                w.batch_begin();
                let size = size_of(id);
                let fits = (0..size).all(|idx| match w.batch_alloc(1, len_of(id, idx)) {
                    Some(p) => {
                        fill(p, id, idx, size);
                        true
                    }
                    None => false,
                });
                if fits {
                    assert_eq!(w.batch_commit(None), Some(size));
                    break;
                }
                std::thread::yield_now();
            }
        }
    })
}

/// SYNC POINT batch-stamped, with the writer on another thread: once a
/// reader has the first message of a batch, the others are there at once
/// (no `front` in between finds nothing), every byte as written. With
/// `ahead`, the reader reads them ahead from the first (`peek`) before it
/// consumes any, as a large message's receiver does.
fn two_threads(fast: bool, ahead: bool) {
    let batches: u32 = if cfg!(miri) { 40 } else { 20_000 };
    // 64 blocks: the largest batch (6 messages of up to 4 blocks) fits
    // with the wrap marker's waste and the fast path's free block.
    let (mut w, mut r) = pair(4096);
    w.set_fast_path(fast);
    r.set_fast_path(fast);
    let t = write_batches(w, batches);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let want = |id: u32, idx: u32| {
        let mut want = vec![0; len_of(id, idx)];
        fill(&mut want, id, idx, size_of(id));
        want
    };
    for id in (0..batches).filter(|_| ahead) {
        while r.front().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "writer stuck at batch {id}"
            );
            std::thread::yield_now();
        }
        assert!(r.current().unwrap().1 == &want(id, 0)[..], "batch {id}");
        let mut ends = vec![r.current_end().unwrap()];
        for idx in 1..size_of(id) {
            let (_, end, p) = r
                .peek(*ends.last().unwrap())
                .unwrap()
                .unwrap_or_else(|| panic!("batch {id} read ahead without its message {idx}"));
            assert!(p == &want(id, idx)[..], "batch {id} message {idx}");
            ends.push(end);
        }
        for end in ends {
            r.consume_to(end);
        }
    }
    for id in (0..batches).filter(|_| !ahead) {
        for idx in 0..size_of(id) {
            loop {
                if let Some((_, p)) = r.front().unwrap() {
                    let mut want = vec![0; len_of(id, idx)];
                    fill(&mut want, id, idx, size_of(id));
                    assert!(p == &want[..], "batch {id} message {idx}");
                    r.pop();
                    break;
                }
                assert!(idx == 0, "batch {id} seen without its message {idx}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "writer stuck at batch {id}"
                );
                std::thread::yield_now();
            }
        }
    }
    t.join().unwrap();
    assert!(r.front().unwrap().is_none());
}

#[test]
fn a_batch_is_read_whole_fast_path() {
    two_threads(true, false);
}

#[test]
fn a_batch_is_read_whole_v1() {
    two_threads(false, false);
}

#[test]
fn a_batch_is_read_ahead_whole_fast_path() {
    two_threads(true, true);
}

#[test]
fn a_batch_is_read_ahead_whole_v1() {
    two_threads(false, true);
}

/// SYNC POINT block-released for messages held (`ShmReader::hold`), with
/// the writer on another thread: the reader holds the messages of two
/// batches as they come (the writer meanwhile fills what room is left),
/// gives them back and reads them again, every byte as written, then
/// consumes them in one publication (`consume_all`), or with `pop` by a
/// pop of the last; the writer reuses their blocks only after that.
fn held_two_threads(fast: bool, pop: bool) {
    let batches: u32 = if cfg!(miri) { 40 } else { 10_000 };
    // 128 blocks: two of the largest batches, with a wrap marker's waste.
    let (mut w, mut r) = pair(8192);
    w.set_fast_path(fast);
    r.set_fast_path(fast);
    let t = write_batches(w, batches);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut want = Vec::new();
    let take = |r: &mut crate::shm_queue::ShmReader<crate::sys::HeapRegion>, want: &[u8]| loop {
        if let Some((_, p)) = r.front().unwrap() {
            assert!(p == want, "a held message changed");
            assert!(r.hold());
            return;
        }
        assert!(std::time::Instant::now() < deadline, "writer stuck");
        std::thread::yield_now();
    };
    for id in (0..batches).step_by(2) {
        want.clear();
        for id in id..(id + 2).min(batches) {
            for idx in 0..size_of(id) {
                let mut m = vec![0; len_of(id, idx)];
                fill(&mut m, id, idx, size_of(id));
                want.push(m);
            }
        }
        for m in &want {
            take(&mut r, m);
        }
        let before = r.popped();
        r.unhold();
        assert_eq!(r.held(), 0);
        for m in &want {
            take(&mut r, m);
        }
        assert_eq!(r.held() as usize, want.len());
        if !pop {
            r.consume_all();
        } else {
            r.unhold();
            for m in &want[..want.len() - 1] {
                take(&mut r, m);
            }
            assert!(r.front().unwrap().is_some(), "the last is there");
            r.pop();
        }
        assert_eq!(r.popped(), before + want.len() as u32);
        assert_eq!(r.held(), 0);
    }
    t.join().unwrap();
    assert!(r.front().unwrap().is_none());
}

#[test]
fn held_messages_stay_until_consumed_fast_path() {
    held_two_threads(true, false);
}

#[test]
fn held_messages_stay_until_consumed_v1() {
    held_two_threads(false, false);
}

#[test]
fn held_messages_stay_until_popped() {
    held_two_threads(true, true);
}

/// A wrap marker published alone (its message could not fit at slot 0
/// yet, blocks there held) is stepped over while messages are held, not
/// released with them; consumed alone, the held give the reader back its
/// place before the marker, and the message after it is read whole.
#[test]
fn a_wrap_marker_alone_after_held_messages() {
    for fast in [false, true] {
        // 16 blocks.
        let (mut w, mut r) = pair(1024);
        w.set_fast_path(fast);
        r.set_fast_path(fast);
        for i in 0..14u8 {
            w.alloc(1, 8).unwrap().fill(i);
            w.push();
        }
        for _ in 0..2 {
            r.front().unwrap().unwrap();
            r.pop();
        }
        for _ in 2..14 {
            r.front().unwrap().unwrap();
            assert!(r.hold());
        }
        // Three blocks: a marker at 14, the message not yet at slot 0.
        assert!(w.alloc(2, 150).is_none());
        assert!(
            r.front().unwrap().is_none(),
            "fast {fast}: the marker alone"
        );
        assert_eq!((r.held(), r.popped()), (12, 2));
        r.consume_all();
        assert_eq!((r.held(), r.popped()), (0, 14));
        w.alloc(2, 150).expect("room at slot 0 now").fill(0xee);
        w.push();
        let (t, p) = r.front().unwrap().expect("the message after the marker");
        assert_eq!((t, p), (2, &[0xee; 150][..]), "fast {fast}");
        r.pop();
        assert_eq!(r.popped(), 15);
    }
}

/// Messages held from before the writer announced the fast path (no
/// stamps), given back after the reader took the fast path: read again at
/// once, on v1.
#[test]
fn held_messages_from_before_the_fast_path_come_back_at_once() {
    let (mut w, mut r) = pair(4096);
    w.set_fast_path(false);
    for i in 0..2u8 {
        w.alloc(1, 8).unwrap().fill(i);
        w.push();
    }
    for _ in 0..2 {
        r.front().unwrap().unwrap();
        assert!(r.hold());
    }
    w.set_fast_path(true);
    w.alloc(1, 8).unwrap().fill(2);
    w.push();
    assert!(r.front().unwrap().is_some());
    assert!(r.hold());
    // Caught up, it takes the fast path the writer announced at 2.
    assert!(r.front().unwrap().is_none());
    assert!(r.is_fast());
    w.alloc(1, 8).unwrap().fill(3);
    w.push();
    assert!(r.front().unwrap().is_some());
    assert!(r.hold());
    r.unhold();
    for i in 0..4u8 {
        let (_, p) = r.front().unwrap().expect("given back, at once");
        assert_eq!(p, &[i; 8]);
        assert!(r.hold());
    }
    r.consume_all();
    assert_eq!(r.popped(), 4);
}

/// A batch dropped before its commit: its payloads, made of words that
/// look like stamped headers for the indices a reader stops at next, must
/// not be taken for messages; the next publication is read alone.
#[test]
fn a_dropped_batch_leaves_nothing_to_read() {
    let (mut w, mut r) = pair(1024);
    for round in 0..40u32 {
        assert!(r.front().unwrap().is_none());
        w.batch_begin();
        let at = round * 20;
        for _ in 0..3 {
            if let Some(p) = w.batch_alloc(9, 300) {
                for (k, c) in p.chunks_mut(8).enumerate() {
                    let stamp = at.wrapping_add(k as u32 % 16);
                    let v = 64u64 | 7 << 16 | u64::from(stamp) << 32;
                    c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
                }
            }
        }
        // Dropped: a single message instead, and a batch of one.
        w.alloc(3, 4).unwrap().copy_from_slice(&round.to_le_bytes());
        w.push();
        w.batch_begin();
        w.batch_alloc(4, 4)
            .unwrap()
            .copy_from_slice(&round.to_le_bytes());
        assert_eq!(w.batch_commit(None), Some(1));
        for t in [3, 4] {
            let (got, p) = r.front().unwrap().expect("the message");
            assert_eq!((got, p), (t, &round.to_le_bytes()[..]));
            r.pop();
        }
        assert!(r.front().unwrap().is_none(), "round {round}: a phantom");
    }
}

/// A consume-and-reply: the request is consumed and the replies are
/// there, with the counts of both rings; an empty batch just consumes.
#[test]
fn commit_consuming_moves_both_rings() {
    let (mut peer, mut r) = pair(1024);
    let (mut w, mut out) = heap_queue(1024).unwrap();
    for i in 0..3u8 {
        peer.alloc(1, 8).unwrap().fill(i);
        peer.push();
    }
    assert_eq!(r.front().unwrap().unwrap().1, &[0; 8]);
    w.batch_begin();
    for k in 0..2u8 {
        w.batch_alloc(2, 5).unwrap().fill(k);
    }
    assert_eq!(w.batch_commit(Some(&mut r)), Some(2));
    assert_eq!((w.pushed(), r.popped()), (2, 1));
    assert_eq!(r.front().unwrap().unwrap().1, &[1; 8]);
    w.batch_begin();
    assert_eq!(w.batch_commit(Some(&mut r)), Some(0));
    assert_eq!((w.pushed(), r.popped()), (2, 2));
    // No current message: nothing happens.
    w.batch_begin();
    w.batch_alloc(2, 5).unwrap();
    assert_eq!(w.batch_commit(Some(&mut r)), None);
    assert_eq!((w.pushed(), r.popped()), (2, 2));
    for k in 0..2u8 {
        assert_eq!(out.front().unwrap().unwrap(), (2, &[k; 5][..]));
        out.pop();
    }
    assert!(out.front().unwrap().is_none());
    // Nothing to recover after a commit that ran to its end.
    assert_eq!(recover(&mut w, &mut r), Ok(false));
}

/// Hostile intent records: a word that does not check, or targets beyond
/// the rings' indices, are refused and change nothing.
#[test]
fn hostile_intent_records_are_refused() {
    use crate::shm_queue::intent::{
        commit_word, OFF_INTENT, OFF_INTENT_FIRST, OFF_INTENT_IN, OFF_INTENT_OUT,
    };
    use crate::shm_queue::ring::QueueMemory;
    use std::sync::atomic::Ordering::Relaxed;
    let (mut w, _out) = heap_queue(1024).unwrap();
    let (_peer, mut r) = heap_queue(1024).unwrap();
    for (word, o, i) in [
        (0x696e_0000_1234_5678u64, 0, 0),
        (u64::MAX, 5, 5),
        (1, 0, 0),
    ] {
        let m = w.memory();
        m.word64(OFF_INTENT_OUT).store(o, Relaxed);
        m.word64(OFF_INTENT_IN).store(i, Relaxed);
        m.word64(OFF_INTENT).store(word, Relaxed);
        assert!(recover(&mut w, &mut r).is_err(), "{word:#x}");
    }
    // Records that check but whose rings are elsewhere (a write index far
    // beyond the ring; then one in range but not where the ring is): stale,
    // cleared and never applied.
    for (start, end) in [(1_000u32, 1_004u32), (2, 6)] {
        let out = u64::from(start) | u64::from(end) << 32;
        let m = w.memory();
        m.word64(OFF_INTENT_OUT).store(out, Relaxed);
        m.word64(OFF_INTENT_IN).store(0, Relaxed);
        m.word64(OFF_INTENT_FIRST).store(0, Relaxed);
        m.word64(OFF_INTENT)
            .store(commit_word(out, 0, 0, 4, None), Relaxed);
        assert_eq!(recover(&mut w, &mut r), Ok(false), "{start}..{end}");
        assert_eq!(w.memory().word64(OFF_INTENT).load(Relaxed), 0, "cleared");
        w.reload();
        assert_eq!(w.pushed(), 0);
        assert_eq!(w.memory().write_idx().load(Relaxed), 0);
    }
}

/// A batch whose message must wrap around the ring's end: at its start,
/// the wrap marker goes alone and the batch starts at slot 0; after a
/// first message, a batch too long from where it starts is refused once,
/// and the next one starts at slot 0. Both get through.
#[test]
fn batches_that_wrap_get_through() {
    for fast in [true, false] {
        // 64 blocks; a 40-block message fits only from slot 0 on.
        let (mut w, mut r) = pair(4096);
        w.set_fast_path(fast);
        r.set_fast_path(fast);
        let big = 40 * 64 - 8;
        for lens in [&[big][..], &[10, big][..], &[big, 10][..], &[10, big][..]] {
            // Move write_idx to slot 40 or so.
            for _ in 0..(lens.len() as u32 * 7 + 33) {
                w.alloc(1, 56).unwrap();
                w.push();
                assert!(r.front().unwrap().is_some());
                r.pop();
            }
            let mut tries = 0;
            loop {
                tries += 1;
                assert!(tries < 10, "{lens:?}: never fits");
                w.batch_begin();
                let ok = lens
                    .iter()
                    .all(|&l| w.batch_alloc(2, l).map(|p| p.fill(7)).is_some());
                if ok {
                    assert_eq!(w.batch_commit(None), Some(lens.len() as u32));
                    break;
                }
                // Full: the reader frees what it can.
                while r.front().unwrap().is_some() {
                    r.pop();
                }
            }
            for &l in lens {
                let (t, p) = r.front().unwrap().expect("the batch");
                assert_eq!((t, p.len()), (2, l));
                r.pop();
            }
            assert!(r.front().unwrap().is_none());
        }
    }
}
