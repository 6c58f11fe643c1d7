//! Loom model check of the shm queue's index protocol: the very file the
//! library uses (`src/shm_queue/ring/`), compiled here with loom's
//! atomics. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_shm`.
//!
//! Loom sees every access that matters: the indices, records and block
//! headers are loom atomics, and each block has a loom `UnsafeCell` that
//! the ring's `track_read`/`track_write` hooks touch when an end starts and
//! stops using a payload. A payload write not ordered after the reader's
//! last read of those blocks (SYNC POINT block-released weakened), or a
//! payload read not ordered after its write (SYNC POINT msg-published
//! weakened), is a causality violation loom reports. On the fast path,
//! a weakened SYNC POINT msg-stamped is such a violation too, and a
//! weakened SYNC POINT announced lets the reader see the announcement but
//! not the cleared header: it then reads the zeroed header in slot 0 as a
//! stamped wrap marker and reports corruption, which fails the test.
//!
//! The doorbell's protocol (`src/doorbell/bits.rs`, the very file) runs
//! here over the same ring: a message published before a ring, or before
//! the writer's acknowledgement of the bell, is never stranded (the reader
//! took the bit, or saw the acknowledgement, without seeing the message,
//! and would never look again); and an acknowledgement is never lost to
//! the reader's clearing of the last session's. Weakening any of those
//! SYNC POINTs (doorbell-rung, doorbell-acked, doorbell-announced) fails
//! a model.
//!
//! The wake protocol (`src/wake/bits.rs`, the very file) runs here too: a
//! reader that raised its flag and then found no message sleeps only if
//! the writer, after publishing, saw the flag (SYNC POINT wake-flag: drop
//! either fence and both can miss the other's store); and a reader that
//! sees the writer's acknowledgement sees the messages published before
//! it (SYNC POINT wake-acked).
#![cfg(loom)]

mod sync {
    pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
    /// The library's crash points (kill -9 tests) do nothing here.
    pub fn crash_point() {}
}

#[allow(dead_code, missing_docs, unused_imports)]
#[path = "../src/shm_queue/ring/mod.rs"]
mod ring;

#[allow(dead_code, missing_docs)]
#[path = "../src/doorbell/bits.rs"]
mod bits;

#[allow(dead_code, missing_docs)]
#[path = "../src/wake/bits.rs"]
mod wake;

use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::Arc;
use ring::{QueueMemory, Reader, Writer, BLOCK};

const BLOCKS: usize = 4;

struct Mem {
    write: AtomicU32,
    cache: AtomicU32,
    read: AtomicU32,
    wrec: AtomicU64,
    rrec: AtomicU64,
    ann: AtomicU64,
    headers: Box<[AtomicU64]>,
    /// One per block: what loom tracks of the payload accesses.
    cells: Box<[loom::cell::UnsafeCell<()>]>,
    /// The payload bytes themselves (loom does not see these; `cells` do).
    blocks: Box<[std::cell::UnsafeCell<u64>]>,
}

fn blocks_of(off: usize, len: usize) -> std::ops::Range<usize> {
    off / BLOCK..(off + len.max(1)).div_ceil(BLOCK).min(BLOCKS)
}

// SAFETY (test): the blocks live as long as the Arc; capacity is 4 blocks,
// and header(b) is block b's header word.
unsafe impl QueueMemory for Arc<Mem> {
    fn capacity(&self) -> usize {
        BLOCKS * BLOCK
    }
    fn header(&self, b: u32) -> &AtomicU64 {
        &self.headers[b as usize]
    }
    fn track_read(&self, off: usize, len: usize) {
        for b in blocks_of(off, len) {
            self.cells[b].with(|_| ());
        }
    }
    fn track_write(&self, off: usize, len: usize) {
        for b in blocks_of(off, len) {
            self.cells[b].with_mut(|_| ());
        }
    }
    fn write_idx(&self) -> &AtomicU32 {
        &self.write
    }
    fn read_idx_cache(&self) -> &AtomicU32 {
        &self.cache
    }
    fn read_idx(&self) -> &AtomicU32 {
        &self.read
    }
    fn blocks(&self) -> *mut u8 {
        self.blocks[0].get().cast()
    }
    fn write_record(&self) -> &AtomicU64 {
        &self.wrec
    }
    fn read_record(&self) -> &AtomicU64 {
        &self.rrec
    }
    fn announce(&self) -> &AtomicU64 {
        &self.ann
    }
}

fn mem(start: u32) -> Arc<Mem> {
    Arc::new(Mem {
        write: AtomicU32::new(start),
        cache: AtomicU32::new(start),
        read: AtomicU32::new(start),
        wrec: AtomicU64::new((start as u64) << 32),
        rrec: AtomicU64::new((start as u64) << 32),
        ann: AtomicU64::new(0),
        headers: (0..BLOCKS).map(|_| AtomicU64::new(0)).collect(),
        cells: (0..BLOCKS)
            .map(|_| loom::cell::UnsafeCell::new(()))
            .collect(),
        blocks: (0..BLOCKS * BLOCK / 8)
            .map(|_| std::cell::UnsafeCell::new(0))
            .collect(),
    })
}

/// Sizes that force a full ring and a wrap marker in a 4-block ring.
const LENS: [usize; 4] = [100, 20, 150, 60];

fn run(start: u32, fast: bool) {
    run_with(start, fast, false);
}

/// `batch`: the first three messages with `push_more`, the last with
/// `push`; the third does not fit beside the first two, so the writer lets
/// the held batch go when its `alloc` finds the ring full.
fn run_with(start: u32, fast: bool, batch: bool) {
    loom::model(move || {
        let m = mem(start);
        let mut w = Writer::new(m.clone());
        let mut r = Reader::new(m);
        w.set_fast(fast);
        r.set_fast(fast);
        let t = loom::thread::spawn(move || {
            for (i, &len) in LENS.iter().enumerate() {
                loop {
                    if let Some(p) = w.alloc(i as u16 + 1, len) {
                        p.fill(i as u8 + 1);
                        if batch && i + 1 < LENS.len() {
                            w.push_more();
                        } else {
                            w.push();
                        }
                        break;
                    }
                    loom::thread::yield_now();
                }
            }
        });
        // Misses of `front`: on the fast path the reader yields only every
        // third, so loom also runs it twice in a row (a `front` right after
        // the one that took the fast path, with the writer still going).
        let mut misses = 0;
        for (i, &len) in LENS.iter().enumerate() {
            loop {
                // Every other message through `ready` first, as a server's
                // group polls: both loads of write_idx are then checked.
                // The first goes straight to `front`, so the reader can
                // take the fast path before the first message, at the
                // index of the announcement.
                if i % 2 == 1 && !r.ready() {
                    loom::thread::yield_now();
                    continue;
                }
                match r.front().expect("an honest writer never looks corrupt") {
                    Some((t, p)) => {
                        assert_eq!(t, i as u16 + 1);
                        assert_eq!(p.len(), len);
                        assert!(p.iter().all(|&b| b == i as u8 + 1));
                        r.pop();
                        break;
                    }
                    None => {
                        misses += 1;
                        if !fast || misses % 3 == 0 {
                            loom::thread::yield_now();
                        }
                    }
                }
            }
        }
        t.join().unwrap();
        // Caught up, with the writer's announcement made: the fast path
        // is taken exactly when allowed.
        assert!(r.front().expect("not corrupt").is_none());
        assert_eq!(r.is_fast(), fast);
    });
}

/// The v1 protocol: the reader waits on write_idx.
#[test]
fn spsc_index_protocol() {
    run(0, false);
}

#[test]
fn spsc_index_protocol_across_u32_wrap() {
    run(u32::MAX - 2, false);
}

/// The fast path: the reader takes it as soon as it has caught up and
/// sees the announcement (possibly before the first message), then waits
/// on stamps. The headers start zeroed, so at index 0 a stale "stamp 0"
/// sits in slot 0 until the writer's announcement clears it.
#[test]
fn fast_path_protocol() {
    run(0, true);
}

#[test]
fn fast_path_protocol_across_u32_wrap() {
    run(u32::MAX - 2, true);
}

/// The fast path with a batch held back by `push_more` (SYNC POINT
/// msg-stamped at `Writer::release`): the reader waits on the held header,
/// then reads the batch.
#[test]
fn fast_path_batches() {
    run_with(0, true, true);
}

/// SYNC POINT batch-stamped: a batch of two messages, then another that
/// wraps around the end of the ring; the reader, on the fast path or on
/// v1, finds the second message of a batch at once after the first (the
/// batch was published as one step), every byte as written. It holds the
/// first batch's first message (`Reader::hold`) and consumes both in one
/// publication (`consume_all`, SYNC POINT block-released): the writer's
/// second batch reuses their blocks.
fn atomic_batches(fast: bool) {
    const BATCHES: [[usize; 2]; 2] = [[60, 20], [20, 100]];
    loom::model(move || {
        let m = mem(0);
        let mut w = Writer::new(m.clone());
        let mut r = Reader::new(m);
        w.set_fast(fast);
        r.set_fast(fast);
        let t = loom::thread::spawn(move || {
            for (b, lens) in BATCHES.iter().enumerate() {
                loop {
                    w.batch_begin();
                    let fits = lens.iter().enumerate().all(|(i, &len)| {
                        match w.batch_alloc((2 * b + i) as u16 + 1, len) {
                            Some(p) => {
                                p.fill((2 * b + i) as u8 + 1);
                                true
                            }
                            None => false,
                        }
                    });
                    if fits {
                        assert!(w.batch_target().is_some());
                        assert_eq!(w.batch_publish(), 2);
                        break;
                    }
                    loom::thread::yield_now();
                }
            }
        });
        let check = |k: usize, t: u16, p: &[u8], len: usize| {
            assert_eq!(t, k as u16 + 1);
            assert_eq!(p.len(), len);
            assert!(p.iter().all(|&x| x == k as u8 + 1));
        };
        for (b, lens) in BATCHES.iter().enumerate() {
            // The second message is there to read ahead (as a large
            // message's receiver does, `Reader::peek`) as soon as the first
            // is, before the first is consumed.
            let k = 2 * b;
            loop {
                match r.front().expect("an honest writer never looks corrupt") {
                    Some((t, p)) => {
                        check(k, t, p, lens[0]);
                        break;
                    }
                    None => loom::thread::yield_now(),
                }
            }
            let end = r.current_end().expect("current");
            match r.peek(end).expect("an honest writer never looks corrupt") {
                Some((t, _, p)) => check(k + 1, t, p, lens[1]),
                None => panic!("batch {b} read without its message 1"),
            }
            if b == 0 {
                assert!(r.hold());
            } else {
                r.pop();
            }
            match r.front().expect("an honest writer never looks corrupt") {
                Some((t, p)) => check(k + 1, t, p, lens[1]),
                None => panic!("batch {b} read without its message 1"),
            }
            if b == 0 {
                r.consume_all();
            } else {
                r.pop();
            }
        }
        t.join().unwrap();
    });
}

#[test]
fn atomic_batch_fast_path() {
    atomic_batches(true);
}

#[test]
fn atomic_batch_v1() {
    atomic_batches(false);
}

/// Messages the reader delivers from `r` now.
fn drain(r: &mut Reader<Arc<Mem>>) -> usize {
    let mut n = 0;
    while r.ready() {
        match r.front().expect("an honest writer never looks corrupt") {
            Some(_) => {
                r.pop();
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// SYNC POINT doorbell-rung: the writer publishes, then rings; the reader
/// looks at the ring only when it takes the bit. Once the reader has
/// taken every bit (the last take finds none), it has every message.
#[test]
fn doorbell_ring_strands_no_message() {
    loom::model(|| {
        let m = mem(0);
        let mut w = Writer::new(m.clone());
        let mut r = Reader::new(m);
        let bell = Arc::new(AtomicU64::new(0));
        let b = bell.clone();
        let t = loom::thread::spawn(move || {
            for i in 0..2u8 {
                w.alloc(1, 8).expect("room").fill(i);
                w.push();
                bits::ring(&b, 1 << 3);
            }
        });
        let mut got = 0;
        for _ in 0..2 {
            if bits::take(&bell) != 0 {
                got += drain(&mut r);
            }
            loom::thread::yield_now();
        }
        t.join().unwrap();
        if bits::take(&bell) == 0 {
            assert_eq!(got, 2, "a bit was taken without its message");
        }
    });
}

/// SYNC POINT doorbell-acked: a message published before the writer's
/// acknowledgement was never rung. The reader polls the ring until it
/// sees the acknowledgement, then once more, then only when rung: it
/// must have the message by then.
#[test]
fn doorbell_acknowledgement_strands_no_message() {
    loom::model(|| {
        let m = mem(0);
        let mut w = Writer::new(m.clone());
        let mut r = Reader::new(m);
        let ack = Arc::new(AtomicU64::new(0));
        let a = ack.clone();
        const WORD: u64 = 0xbe11 << 48 | 7;
        let t = loom::thread::spawn(move || {
            w.alloc(1, 8).expect("room").fill(1);
            w.push();
            bits::acknowledge(&a, WORD);
        });
        let (mut got, mut rings) = (0, false);
        for _ in 0..2 {
            if !rings {
                got += drain(&mut r);
                if bits::acknowledged(&ack, WORD) {
                    rings = true;
                    got += drain(&mut r);
                }
            }
            loom::thread::yield_now();
        }
        t.join().unwrap();
        if rings {
            assert_eq!(got, 1, "acknowledged, and the message before it missed");
        }
    });
}

/// SYNC POINT doorbell-announced: the reader clears the last session's
/// acknowledgement and announces; a writer that reads the announcement
/// and acknowledges it is heard (its store is not overwritten by the
/// clear).
#[test]
fn doorbell_announcement_loses_no_acknowledgement() {
    loom::model(|| {
        const WORD: u64 = 0xbe11 << 48 | 7;
        let ack = Arc::new(AtomicU64::new(WORD)); // the last session's
        let ann = Arc::new(AtomicU64::new(0));
        let (a, n) = (ack.clone(), ann.clone());
        let t = loom::thread::spawn(move || {
            if bits::announcement(&n) == WORD {
                bits::acknowledge(&a, WORD);
                true
            } else {
                false
            }
        });
        bits::announce(&ack, &ann, WORD);
        let acked = t.join().unwrap();
        assert_eq!(bits::acknowledged(&ack, WORD), acked);
    });
}

/// SYNC POINT wake-flag: the reader raises its flag, then looks at the
/// ring; the writer publishes, then looks at the flag. A reader that
/// found nothing sleeps, and must then have been seen by the writer.
#[test]
fn wake_is_never_lost() {
    loom::model(|| {
        let m = mem(0);
        let mut w = Writer::new(m.clone());
        let mut r = Reader::new(m);
        let flag = Arc::new(AtomicU64::new(0));
        let f = flag.clone();
        let t = loom::thread::spawn(move || {
            w.alloc(1, 8).expect("room").fill(1);
            w.push();
            wake::must_wake(&f)
        });
        wake::sleep(&flag);
        let sleeps = !r.ready();
        let woken = t.join().unwrap();
        if sleeps {
            assert!(
                woken,
                "wake-up lost: the reader sleeps and its writer did not see it"
            );
        }
    });
}

/// SYNC POINT wake-acked: the writer looks at the flag only after the
/// publications that follow its acknowledgement. A reader that sees the
/// acknowledgement (and then sleeps without slices) must see what was
/// published before it.
#[test]
fn wake_acknowledgement_strands_no_message() {
    loom::model(|| {
        let m = mem(0);
        let mut w = Writer::new(m.clone());
        let mut r = Reader::new(m);
        let ack = Arc::new(AtomicU64::new(0));
        let a = ack.clone();
        let t = loom::thread::spawn(move || {
            w.alloc(1, 8).expect("room").fill(1);
            w.push();
            wake::acknowledge(&a);
        });
        if wake::acknowledged(&ack) {
            assert!(
                r.ready(),
                "wake-up lost: acknowledged, and the message before it unseen"
            );
        }
        t.join().unwrap();
    });
}
