//! A hostile peer of the shared-memory ring: it rewrites block headers and
//! trailer words (indices, records) while we alloc, fill, push, front, read
//! and pop. Nothing may panic, no payload may be handed out with another
//! length than asked or outside the ring (Miri and AddressSanitizer check
//! the bounds; natively a slice out of range would panic).
//!
//! - `lock_step`: the scribbles fall between any two operations, chosen at
//!   random, including between `alloc` and filling the payload (where the
//!   old ring re-read the size the peer had just rewritten). Runs under
//!   Miri for a bounded number of steps.
//! - `concurrent_scribbler_thread`: writer, reader and scribbler on three
//!   threads for a few seconds (not under Miri: a peer process rewriting
//!   memory we read is outside Rust's model, which is why the ring reads
//!   every word it trusts atomically and once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::fuzzing::{hostile_heap_queue, Scribbler};
use crate::shm_queue::TRAILER;
use crate::sys::HeapRegion;

const CAP: usize = 1024; // 16 blocks

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value a scribbler would write: often near the real indices (small
    /// numbers, so the checks beyond the first are reached), sometimes
    /// anything.
    fn value(&mut self) -> u64 {
        match self.next() % 4 {
            0 => self.next(),
            1 => self.next() % 40,
            2 => (self.next() % 300) | (self.next() % 5) << 16,
            _ => 0,
        }
    }
}

fn scribble(s: &Scribbler, rng: &mut Rng) {
    if rng.next() % 2 == 0 {
        s.trailer(rng.next() as usize, rng.value());
    } else {
        // SAFETY: called between operations of this one thread: no payload
        // slice of either end is alive.
        unsafe { s.header(rng.next() as u32, rng.value()) };
    }
}

#[test]
fn lock_step() {
    let steps = if cfg!(miri) { 3_000 } else { 2_000_000 };
    let deadline = Instant::now() + Duration::from_secs(if cfg!(miri) { 600 } else { 3 });
    let (mut w, mut r, s) = hostile_heap_queue(HeapRegion::new(CAP + TRAILER));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut filled, mut pushed, mut popped, mut corrupt) = (0u64, 0u64, 0u64, 0u64);
    for step in 0..steps {
        if step % 1024 == 0 && Instant::now() > deadline {
            break;
        }
        // A scribbled index can make the ring look full (or corrupt) for
        // good: start afresh now and then, so allocations keep happening
        // and the scribbles keep landing between alloc and fill.
        if step % 100 == 0 {
            w.reset();
            r.reload();
        }
        match rng.next() % 8 {
            0 | 1 => {
                let len = (rng.next() % 300) as usize;
                if let Some(p) = w.alloc(1 + (step % 9) as u16, len) {
                    assert_eq!(p.len(), len);
                }
            }
            2 => {
                if let Some(p) = w.pending_payload() {
                    p.fill(step as u8);
                    filled += 1;
                }
            }
            3 => {
                w.push();
                pushed += 1;
            }
            4 | 5 => match r.front() {
                Ok(Some((_t, p))) => {
                    assert!(p.len() < CAP);
                    let _ = p.iter().fold(0u8, |a, b| a ^ b);
                }
                Ok(None) => {}
                Err(_) => corrupt += 1,
            },
            6 => {
                r.pop();
                popped += 1;
            }
            7 if rng.next() % 4 == 0 => {
                // The doorbell's words, scribbled like the others: read as
                // a session start reads them (a bell that cannot be opened
                // rings nothing; Miri opens no file).
                let _ = r.doorbell_acknowledged(rng.value());
                if !cfg!(miri) {
                    let missing = std::env::temp_dir().join("tcpshm-hostile-no-bell");
                    assert!(!w.join_doorbell(|_| missing));
                }
            }
            _ => scribble(&s, &mut rng),
        }
    }
    assert!(pushed > 0 && popped > 0);
    assert!(filled > 50, "only {filled} fills of a pending allocation");
    assert!(
        corrupt > 0,
        "the scribbles never reached the reader's checks"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a foreign writer of memory we read is outside Rust's model"
)]
fn concurrent_scribbler_thread() {
    let (mut w, mut r, s) = hostile_heap_queue(HeapRegion::new(CAP + TRAILER));
    let stop = AtomicBool::new(false);
    let run_for = Duration::from_secs(3);
    std::thread::scope(|t| {
        let stop = &stop;
        t.spawn(move || {
            let mut rng = Rng(7);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    s.trailer(rng.next() as usize, rng.value());
                }
                std::thread::yield_now();
            }
        });
        let writer = t.spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let len = (n % 200) as usize;
                if let Some(p) = w.alloc(1, len) {
                    assert_eq!(p.len(), len);
                    p.fill(n as u8);
                    w.push();
                    n += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            n
        });
        let reader = t.spawn(move || {
            let (mut n, mut corrupt) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match r.front() {
                    Ok(Some((_t, p))) => {
                        assert!(p.len() < CAP);
                        let _ = p.iter().fold(0u8, |a, b| a ^ b);
                        r.pop();
                        n += 1;
                    }
                    Ok(None) => std::thread::yield_now(),
                    Err(_) => {
                        corrupt += 1;
                        // A real connection closes here; the test carries on
                        // from what memory says now.
                        r.reload();
                        std::thread::yield_now();
                    }
                }
            }
            (n, corrupt)
        });
        std::thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
        let pushed = writer.join().expect("the writer never panics");
        let (popped, corrupt) = reader.join().expect("the reader never panics");
        assert!(pushed > 0, "the writer made progress");
        assert!(popped + corrupt > 0, "the reader made progress");
    });
}
