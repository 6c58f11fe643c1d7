//! The ring's tests: its unit tests over heap memory here; property
//! tests against a model (`props`), hostile peers under Miri (`hostile`),
//! two threads streaming (`stress`), objects in /dev/shm (`files`), and
//! ends closed and opened again with messages in flight (`restarts`).

mod batch;
mod batch_kill;
mod files;
mod hostile;
mod props;
mod restarts;
mod stress;

use super::*;

fn pair(cap: usize) -> (ShmWriter<HeapRegion>, ShmReader<HeapRegion>) {
    heap_queue(cap).unwrap()
}

/// A pair that has passed one message and whose reader, caught up,
/// is on the fast path (indices at 1).
fn fast_pair(cap: usize) -> (ShmWriter<HeapRegion>, ShmReader<HeapRegion>) {
    let (mut w, mut r) = pair(cap);
    w.alloc(1, 8).unwrap();
    w.push();
    r.front().unwrap().unwrap();
    r.pop();
    assert!(r.front().unwrap().is_none() && r.is_fast());
    (w, r)
}

fn reg(m: &RegionMemory<HeapRegion>) -> Arc<HeapRegion> {
    m.shared_region()
}

fn word(r: &HeapRegion, off: usize) -> u32 {
    let cap = r.size() - TRAILER;
    // SAFETY: test-only peek at an index word inside the region.
    unsafe { (*AtomicU32::from_ptr(r.base().add(cap + off).cast())).load(sync::Ordering::SeqCst) }
}

fn poke(r: &HeapRegion, off: usize, bytes: &[u8]) {
    // SAFETY: test-only write inside the region, no concurrent user.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), r.base().add(off), bytes.len()) }
}

#[test]
fn layout_is_the_protocol_one() {
    let (mut w, mut r) = pair(1024); // 16 blocks
    w.alloc(5, 100).unwrap().fill(9); // 108 bytes: 2 blocks
    w.push();
    let reg = reg(w.memory());
    assert_eq!(word(&reg, OFF_WRITE), 2);
    assert_eq!(word(&reg, OFF_READ), 0);
    // SAFETY: test-only read of the first header.
    let hdr = unsafe { std::slice::from_raw_parts(reg.base(), 4) };
    assert_eq!(hdr, &[108, 0, 5, 0]);
    r.front().unwrap().unwrap();
    r.pop();
    assert_eq!(word(&reg, OFF_READ), 2);
    assert_eq!(reg.size(), 1024 + 256);
}

/// The wake protocol over one ring: the writer wakes a reader only after
/// it announced and the writer acknowledged, once per sleep, for a
/// publication of any kind (a push, a batch let go); a reader with a
/// message waiting does not sleep; a new session clears it all.
#[test]
fn a_sleeping_reader_is_woken_once_per_sleep() {
    let (mut w, mut r) = fast_pair(1024);
    // Not announced: the writer does not look.
    assert!(r.sleep());
    w.alloc(1, 8).unwrap();
    w.push();
    assert!(!w.take_wake_due(), "no announcement, no wake-up");
    r.awake();
    r.front().unwrap().unwrap();
    r.pop();
    // Announced and acknowledged.
    r.announce_wake();
    assert!(!r.wake_acked());
    assert!(w.join_wake());
    assert!(r.wake_acked());
    // Awake: no wake-up.
    w.alloc(1, 8).unwrap();
    w.push();
    assert!(!w.take_wake_due(), "the reader was awake");
    // A message waits: the reader does not sleep (and its flag is down).
    assert!(!r.sleep(), "a message waits");
    w.alloc(1, 8).unwrap();
    w.push();
    assert!(!w.take_wake_due(), "the flag went down again");
    for _ in 0..2 {
        r.front().unwrap().unwrap();
        r.pop();
    }
    // Asleep: the first publication wakes it, once.
    assert!(r.sleep());
    w.alloc(1, 8).unwrap();
    w.push();
    assert!(w.take_wake_due());
    assert!(!w.take_wake_due(), "taken");
    w.alloc(1, 8).unwrap();
    w.push();
    assert!(!w.take_wake_due(), "one wake-up per sleep");
    for _ in 0..2 {
        r.front().unwrap().unwrap();
        r.pop();
    }
    // A batch wakes it when it goes, not before.
    assert!(r.sleep());
    w.alloc(1, 8).unwrap();
    w.push_more();
    assert!(!w.take_wake_due());
    w.settle();
    assert!(w.take_wake_due(), "the batch went");
    // A new session: the words are cleared, the writer looks again only
    // when announced again.
    r.reset_wake();
    w.reload();
    assert!(!r.wake_acked());
    assert!(!w.join_wake());
}

#[test]
fn wrap_marker_and_full() {
    let (mut w, mut r) = pair(256); // 4 blocks
    w.set_fast_path(false); // v1: every block usable
    for i in 0..3u8 {
        w.alloc(1, 56).unwrap().fill(i); // 1 block each
        w.push();
    }
    assert!(w.alloc(1, 100).is_none(), "2 blocks, only 1 free");
    r.front().unwrap();
    r.pop();
    r.front().unwrap();
    r.pop();
    // slot 3 free at the end, slots 0,1 free at the front: 2 blocks rewind.
    w.alloc(2, 100).unwrap().fill(7);
    w.push();
    let (t, p) = r.front().unwrap().unwrap();
    assert_eq!((t, p[0]), (1, 2));
    r.pop();
    let (t, p) = r.front().unwrap().unwrap();
    assert_eq!((t, p.len(), p[99]), (2, 100, 7));
    r.pop();
    assert!(r.front().unwrap().is_none());
    assert!(w.alloc(1, 256).is_none(), "larger than the ring");
}

#[test]
fn corrupt_headers_and_indices_are_reported() {
    let (mut w, mut r) = pair(256);
    w.alloc(1, 8).unwrap();
    w.push();
    let reg = reg(r.memory());
    for bad in [[3u8, 0], [0xff, 0xff], [129, 0]] {
        poke(&reg, 0, &bad);
        assert!(matches!(r.front(), Err(Corrupt::Size { .. })), "{bad:?}");
    }
    poke(&reg, 0, &[0, 0]); // a wrap marker at slot 0
    assert!(r.front().is_err());
    poke(&reg, 256, &100u32.to_le_bytes()); // write_idx far ahead
    let mut fresh = ShmReader::new(reg.clone()).unwrap();
    assert!(matches!(fresh.front(), Err(Corrupt::Index { .. })));
}

#[test]
fn reset_empties_both_ends() {
    let (mut w, mut r) = pair(256);
    w.alloc(1, 8).unwrap();
    w.push();
    w.reset();
    r.reload();
    assert!(r.front().unwrap().is_none());
    w.alloc(1, 8).unwrap()[0] = 42;
    w.push();
    assert_eq!(r.front().unwrap().unwrap().1[0], 42);
}

/// Two threads, variable sizes, every byte checked, some messages in
/// batches (`push_more`). Under Miri this is the data-race check of the
/// SYNC POINTs (Miri flags any payload read that is not ordered after
/// its write by an acquire/release pair). On the fast path (after the
/// first message) and on v1.
#[test]
fn two_threads_every_byte() {
    two_threads(true);
}

#[test]
fn two_threads_every_byte_v1() {
    two_threads(false);
}

fn two_threads(fast: bool) {
    let n: u32 = if cfg!(miri) { 300 } else { 200_000 };
    let (mut w, mut r) = pair(1024);
    w.set_fast_path(fast);
    r.set_fast_path(fast);
    let t = std::thread::spawn(move || {
        for i in 0..n {
            let len = (i as usize * 37) % 200;
            loop {
                if let Some(p) = w.alloc(i as u16, len) {
                    for (j, b) in p.iter_mut().enumerate() {
                        *b = (i as usize + j) as u8;
                    }
                    // Batches of 1 to 7 (push_more, then a push).
                    if i % 7 < i % 5 && i + 1 < n {
                        w.push_more();
                    } else {
                        w.push();
                    }
                    break;
                }
                std::thread::yield_now();
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for i in 0..n {
        loop {
            if let Some((t, p)) = r.front().unwrap() {
                assert_eq!(t, i as u16);
                assert_eq!(p.len(), (i as usize * 37) % 200);
                for (j, b) in p.iter().enumerate() {
                    assert_eq!(*b, (i as usize + j) as u8);
                }
                r.pop();
                break;
            }
            assert!(std::time::Instant::now() < deadline, "stalled at {i}");
            std::thread::yield_now();
        }
    }
    t.join().unwrap();
    assert_eq!(r.is_fast(), fast);
}

/// Payloads made of header words stamped for every index nearby: a
/// block of an earlier lap, or payload bytes, that a reader took for a
/// stamped header would show as a wrong message.
fn lying_payload(p: &mut [u8], around: u32) {
    for (k, c) in p.chunks_mut(8).enumerate() {
        let stamp = around.wrapping_add(k as u32 % 16).wrapping_sub(8);
        let v = 16u64 | 1 << 16 | (stamp as u64) << 32;
        c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
    }
}

/// Many laps of an 8-block ring with small and large messages (up to
/// the largest that fits), wrap markers alone and with a message, and
/// payloads that look like stamped headers: every message comes out
/// once, intact, on the fast path.
#[test]
fn fast_path_laps_with_large_and_small_messages() {
    let (mut w, mut r) = pair(512);
    let mut rng = 0x9e37_79b9_u32;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let (mut sent, mut got) = (0u32, 0u32);
    let mut lens = std::collections::VecDeque::new();
    let mut fast_seen = 0;
    let (ops, want) = if cfg!(miri) {
        (1500, 300)
    } else {
        (20_000, 5000)
    };
    for _ in 0..ops {
        if next() % 3 != 0 {
            // The largest message that fits beside the spare block.
            let len = match next() % 4 {
                0 => (next() % 448) as usize,
                1 => 7 * 64 - 8,
                _ => (next() % 56) as usize,
            };
            if let Some(p) = w.alloc(sent as u16, len) {
                lying_payload(p, sent.wrapping_mul(3));
                p[..len.min(4)].copy_from_slice(&sent.to_le_bytes()[..len.min(4)]);
                if next() % 4 == 0 {
                    w.push_more();
                } else {
                    w.push();
                }
                lens.push_back(len);
                sent += 1;
            }
        } else {
            match r.front().unwrap() {
                Some((t, p)) => {
                    assert_eq!(t, got as u16);
                    assert_eq!(p.len(), lens.pop_front().unwrap());
                    let n = p.len().min(4);
                    assert_eq!(p[..n], got.to_le_bytes()[..n]);
                    r.pop();
                    got += 1;
                    fast_seen += r.is_fast() as u32;
                }
                None if w.holding() => w.release(),
                None => assert!(lens.is_empty() || !r.is_fast(), "stamp missed"),
            }
        }
    }
    assert!(w.lone_markers() > 0, "no lone wrap marker was exercised");
    assert!(
        fast_seen > want,
        "the fast path was barely used: {fast_seen}"
    );
    assert!(got > want);
}

/// One caught-up fast reader and a writer that batches: the reader sees
/// nothing of a batch until it is let go, then all of it in order; a
/// v1 reader (a C++ peer) would see each message at once, as write_idx
/// shows.
#[test]
fn push_more_holds_a_batch_from_a_fast_reader() {
    let (mut w, mut r) = fast_pair(4096);
    let reg = reg(w.memory());
    for round in 0..3u16 {
        let base = word(&reg, OFF_WRITE);
        for k in 0..3 {
            w.alloc(10 * round + k, 20).unwrap().fill(k as u8);
            w.push_more();
            assert!(w.holding());
            assert!(!r.ready() && r.front().unwrap().is_none(), "held");
        }
        assert_eq!(word(&reg, OFF_WRITE), base + 3);
        match round {
            0 => w.release(),
            // A push lets the batch go with its own message.
            1 => {
                w.alloc(10 * round + 3, 0).unwrap();
                w.push();
            }
            // So does a writer that gives up the fast path.
            _ => w.set_fast_path(false),
        }
        assert!(!w.holding());
        for k in 0..3 {
            let (t, p) = r.front().unwrap().unwrap();
            assert_eq!((t, p), (10 * round + k, &[k as u8; 20][..]));
            r.pop();
        }
        if round == 1 {
            assert_eq!(r.front().unwrap().unwrap().0, 13);
            r.pop();
        }
        assert!(r.front().unwrap().is_none());
        assert!(round == 2 || r.is_fast());
    }
}

/// A batch goes by itself once it spans 32 blocks, and when the writer
/// finds the ring full (so a writer that only allocates never waits on
/// a reader its own batch holds back).
#[test]
fn a_held_batch_goes_when_long_or_when_the_ring_is_full() {
    let (mut w, mut r) = fast_pair(64 * 64);
    for k in 0..32 {
        w.alloc(2, 8).unwrap();
        w.push_more();
        assert_eq!(w.holding(), k < 31, "after {} blocks", k + 1);
    }
    for _ in 0..32 {
        r.front().unwrap().unwrap();
        r.pop();
    }
    // Full: 63 of 64 blocks (one stays free on the fast path).
    let mut n = 0;
    while let Some(p) = w.alloc(3, 100) {
        p.fill(3);
        w.push_more();
        n += 1;
    }
    assert!(!w.holding(), "a full ring lets the batch go");
    for _ in 0..n {
        assert_eq!(r.front().unwrap().unwrap(), (3, &[3u8; 100][..]));
        r.pop();
    }
    assert!(r.front().unwrap().is_none() && r.is_fast());
}

/// A fast reader waiting on a held batch while write_idx is ahead does
/// not take it for a writer that stopped stamping.
#[test]
fn a_held_batch_is_not_a_missing_stamp() {
    let (mut w, mut r) = fast_pair(1024);
    w.alloc(2, 8).unwrap();
    w.push_more();
    for _ in 0..3 * ring_fallback_polls() {
        assert!(r.front().unwrap().is_none());
        assert!(!r.ready());
    }
    assert!(r.is_fast());
    w.release();
    assert_eq!(r.front().unwrap().unwrap().0, 2);
    r.pop();
    assert!(r.is_fast());
}

/// A writer killed while it held a batch: the messages are in the ring
/// and under write_idx, so the next session's reader (which starts on
/// v1) delivers every one, once; the next writer goes on after them and
/// the reader gets back on the fast path.
#[test]
fn a_batch_held_by_a_killed_writer_is_delivered() {
    let (mut w, r) = fast_pair(1024);
    let reg = reg(w.memory());
    for k in 2..6u16 {
        w.alloc(k, 30).unwrap().fill(k as u8);
        w.push_more();
    }
    assert!(w.holding());
    // kill -9: no release (a drop would let the batch go); both ends
    // start a new session.
    w.w.abandon_batch();
    drop((w, r));
    let mut w2 = ShmWriter::new(reg.clone()).unwrap();
    let mut r2 = ShmReader::new(reg).unwrap();
    assert_eq!(w2.pushed(), 5);
    for k in 2..6u16 {
        assert_eq!(r2.front().unwrap().unwrap(), (k, &[k as u8; 30][..]));
        r2.pop();
    }
    assert!(r2.front().unwrap().is_none());
    for k in 6..70u16 {
        w2.alloc(k, 4).unwrap();
        w2.push();
        assert_eq!(r2.front().unwrap().unwrap().0, k);
        r2.pop();
        assert!(r2.front().unwrap().is_none());
    }
    assert!(r2.is_fast(), "back on the fast path");
}

/// A writer killed while it held a batch, and no new session: the
/// reader, still waiting at the held header, sees a next writer publish
/// 32 blocks past it, knows the holder is gone, and reads on v1.
#[test]
fn a_dead_holder_without_a_new_session_does_not_stall_the_reader() {
    let (mut w, mut r) = fast_pair(4096);
    let reg = reg(w.memory());
    for k in 2..4u16 {
        w.alloc(k, 8).unwrap();
        w.push_more();
    }
    w.w.abandon_batch(); // kill -9
    drop(w);
    let mut w2 = ShmWriter::new(reg).unwrap();
    let mut got = vec![];
    for k in 4..40u16 {
        w2.alloc(k, 8).unwrap();
        w2.push();
        for _ in 0..2 * ring_fallback_polls() {
            if let Some((t, _)) = r.front().unwrap() {
                got.push(t);
                r.pop();
            }
        }
    }
    assert_eq!(got, (2..40).collect::<Vec<_>>(), "all, once, in order");
    assert!(!r.is_fast());
}

/// Writer and reader of every kind on one ring: a fast writer with a
/// v1 reader (as for a C++ reader), and a writer that does not stamp
/// (as C++, leaving the stamp bytes of earlier laps in place) with a
/// fast-capable reader, which then stays on v1; most messages in
/// batches.
#[test]
fn mixed_pairs_deliver_everything() {
    for (wf, rf) in [(true, false), (false, true), (false, false), (true, true)] {
        let (mut w, mut r) = pair(512);
        w.set_fast_path(wf);
        r.set_fast_path(rf);
        let n = if cfg!(miri) { 60 } else { 5000u32 };
        for i in 0..n {
            let len = (i as usize * 29) % 300;
            let p = match w.alloc(1, len) {
                Some(p) => p,
                None => {
                    // A wrap marker went out alone: the reader takes it.
                    assert!(r.front().unwrap().is_none());
                    w.alloc(1, len).unwrap()
                }
            };
            lying_payload(p, i);
            // Batches too: a v1 reader reads a held message at once,
            // and the writer must not store the held word after the
            // reader freed its block.
            if i % 4 != 3 {
                w.push_more();
            } else {
                w.push();
            }
            let q = match r.front().unwrap() {
                Some((_, q)) => q.len(),
                None => {
                    assert!(wf && rf && w.holding(), "only a held batch waits");
                    w.release();
                    r.front().unwrap().unwrap().1.len()
                }
            };
            assert_eq!(q, len);
            r.pop();
            assert!(r.front().unwrap().is_none());
        }
        assert_eq!(r.is_fast(), wf && rf, "writer {wf}, reader {rf}");
        assert_eq!(w.stamping(), wf);
    }
}

/// A writer that stops stamping in the middle of a session (a C++
/// writer under the same names, or a buggy peer): the fast reader sees
/// write_idx move without a stamp and falls back to v1, losing nothing.
#[test]
fn fast_reader_falls_back_when_stamps_stop() {
    let (mut w, mut r) = pair(1024);
    for _ in 0..2 {
        w.alloc(1, 8).unwrap();
        w.push();
        r.front().unwrap().unwrap();
        r.pop();
        assert!(r.front().unwrap().is_none());
    }
    assert!(r.is_fast());
    // A v1 writer's message: header without stamp, then write_idx.
    let reg = reg(w.memory());
    let cap = reg.size() - TRAILER;
    let at = word(&reg, OFF_WRITE);
    assert_eq!(at, 2);
    poke(&reg, (at as usize % 16) * BLOCK, &[20, 0, 9, 0]);
    poke(&reg, cap + OFF_WRITE, &(at + 1).to_le_bytes());
    let mut polls = 0;
    let got = loop {
        polls += 1;
        assert!(polls <= 2 * ring_fallback_polls(), "never fell back");
        if let Some((t, p)) = r.front().unwrap() {
            break (t, p.len());
        }
    };
    assert_eq!(got, (9, 12));
    assert!(!r.is_fast());
}

/// The reader starts a session (clearing the announcement) while the
/// writer goes on without one: the writer notices at a refill of
/// cleared headers, at most 8 blocks later, and announces again; the
/// reader reads on v1 meanwhile and misses nothing.
#[test]
fn a_cleared_announcement_is_made_again() {
    let (mut w, mut r) = fast_pair(4096); // 64 blocks
    r.reload();
    assert!(!r.is_fast());
    let mut fast_from = None;
    for i in 0..40u16 {
        w.alloc(i + 1, 8).unwrap().fill(i as u8);
        w.push();
        let (t, p) = r.front().unwrap().unwrap();
        assert_eq!((t, p), (i + 1, &[i as u8; 8][..]));
        r.pop();
        assert!(r.front().unwrap().is_none());
        if r.is_fast() && fast_from.is_none() {
            fast_from = Some(i);
        }
    }
    assert!(w.stamping());
    let from = fast_from.expect("the writer never announced again");
    assert!(from <= 10, "announced again only after {from} messages");
}

fn ring_fallback_polls() -> u32 {
    1 << 12
}

/// A queue memory that records the blocks the writer demotes.
struct Demotes {
    mem: RegionMemory<HeapRegion>,
    demoted: std::sync::Mutex<Vec<u32>>,
}

// SAFETY: every method but `demote` is the checked RegionMemory's.
unsafe impl ring::QueueMemory for Demotes {
    fn capacity(&self) -> usize {
        self.mem.capacity()
    }
    fn header(&self, b: u32) -> &AtomicU64 {
        self.mem.header(b)
    }
    fn write_idx(&self) -> &AtomicU32 {
        self.mem.write_idx()
    }
    fn read_idx_cache(&self) -> &AtomicU32 {
        self.mem.read_idx_cache()
    }
    fn read_idx(&self) -> &AtomicU32 {
        self.mem.read_idx()
    }
    fn blocks(&self) -> *mut u8 {
        self.mem.blocks()
    }
    fn write_record(&self) -> &AtomicU64 {
        self.mem.write_record()
    }
    fn read_record(&self) -> &AtomicU64 {
        self.mem.read_record()
    }
    fn announce(&self) -> &AtomicU64 {
        self.mem.announce()
    }
    fn demote(&self, b: u32) {
        self.mem.demote(b); // the instruction too: it must not fault
        self.demoted.lock().unwrap().push(b);
    }
}

/// `hand_over` demotes the blocks of the last publication, once, up
/// to 16, wherever in the ring it lies; nothing after nothing new.
#[test]
fn hand_over_demotes_the_last_publication_once() {
    let region = Arc::new(HeapRegion::new(region_size(64 * 64)));
    let mem = |r: &Arc<HeapRegion>| Demotes {
        mem: RegionMemory::new(r.clone()).unwrap(),
        demoted: Default::default(),
    };
    let mut w = ring::Writer::new(mem(&region));
    let mut r = ring::Reader::new(RegionMemory::new(region.clone()).unwrap());
    let take = |w: &mut ring::Writer<Demotes>| {
        w.hand_over();
        std::mem::take(&mut *w.memory().demoted.lock().unwrap())
    };
    let mut pass = |w: &mut ring::Writer<Demotes>, len: usize| {
        w.alloc(1, len).unwrap();
        w.push();
        r.front().unwrap().unwrap();
        r.pop();
    };
    assert_eq!(take(&mut w), [0u32; 0], "nothing published");
    pass(&mut w, 8); // block 0
    assert_eq!(take(&mut w), [0]);
    assert_eq!(take(&mut w), [0u32; 0], "handed over once");
    pass(&mut w, 8); // block 1
    pass(&mut w, 150); // blocks 2-4
    assert_eq!(take(&mut w), [2, 3, 4], "the last publication only");
    pass(&mut w, 20 * 64); // blocks 5-25: the first 16
    assert_eq!(take(&mut w), (5..21).collect::<Vec<_>>());
    // Around the end: a message that does not fit before it starts at
    // slot 0 (after a wrap marker).
    pass(&mut w, 30 * 64); // blocks 26-56
    pass(&mut w, 10 * 64); // 11 blocks: 57-63 left, so slot 0
    assert_eq!(take(&mut w), (0..11).collect::<Vec<_>>());
    // A new session forgets what the last one published.
    pass(&mut w, 8);
    w.reload();
    assert_eq!(take(&mut w), [0u32; 0]);
    // Turned off (`Config::shm_hand_over`): nothing; on again: as before.
    w.set_hand_over(false);
    pass(&mut w, 150);
    assert_eq!(take(&mut w), [0u32; 0]);
    w.set_hand_over(true);
    pass(&mut w, 8);
    assert_eq!(take(&mut w).len(), 1);
    // `settle` (what a poll calls) hands over too, once.
    pass(&mut w, 8);
    w.settle();
    assert_eq!(w.memory().demoted.lock().unwrap().len(), 1);
    w.settle();
    assert_eq!(w.memory().demoted.lock().unwrap().len(), 1);
}

/// A writer killed after stamping a message and before storing
/// write_idx, the message consumed by a fast reader: the next writer
/// counts it as published and goes on after it.
#[test]
fn stamped_but_unindexed_message_is_rolled_forward() {
    let (mut w, mut r) = fast_pair(1024);
    w.alloc(2, 8).unwrap();
    w.push();
    // Undo the write_idx store of that push: the crash window.
    let reg = reg(w.memory());
    let cap = reg.size() - TRAILER;
    poke(&reg, cap + OFF_WRITE, &1u32.to_le_bytes());
    assert_eq!(r.front().unwrap().unwrap().0, 2);
    r.pop();
    let mut w2 = ShmWriter::new(reg.clone()).unwrap();
    assert_eq!(word(&reg, OFF_WRITE), 2);
    assert_eq!(w2.pushed(), 2);
    w2.alloc(3, 8).unwrap();
    w2.push();
    let mut r2 = ShmReader::new(reg).unwrap();
    assert_eq!(r2.front().unwrap().unwrap().0, 3);
}

#[test]
fn message_counts_are_exact_across_a_crash_between_record_and_index() {
    let (mut w, mut r) = pair(256);
    for _ in 0..3 {
        w.alloc(1, 8).unwrap();
        w.push();
    }
    r.front().unwrap();
    r.pop();
    assert_eq!((w.pushed(), r.popped()), (3, 1));
    let reg = reg(w.memory());
    // A crash after the record of a 4th push was stored but before its
    // write_idx: the record runs ahead, the count must not.
    let cap = reg.size() - TRAILER;
    let rec = ring_record(3 + 1, 4, 1);
    poke(&reg, cap + OFF_WRITE_RECORD, &rec.to_le_bytes());
    let w2 = ShmWriter::new(reg.clone()).unwrap();
    assert_eq!(w2.pushed(), 3);
    // Committed: index and record agree.
    poke(&reg, cap + OFF_WRITE, &4u32.to_le_bytes());
    let w3 = ShmWriter::new(reg.clone()).unwrap();
    assert_eq!(w3.pushed(), 4);
    let r2 = ShmReader::new(reg.clone()).unwrap();
    assert_eq!(r2.popped(), 1);
    let mut r3 = ShmReader::new(reg.clone()).unwrap();
    r3.reset();
    assert_eq!((ShmWriter::new(reg).unwrap().pushed(), r3.popped()), (0, 0));
}

fn ring_record(idx: u32, count: u32, delta: u32) -> u64 {
    (idx as u64) << 32 | ((count << 1) | delta) as u64
}

#[test]
fn capacity_checks() {
    assert!(heap_queue(1000).is_err());
    assert!(heap_queue(32).is_err());
    assert!(heap_queue(64).is_ok());
    assert_eq!(
        heap_queue_in(HeapRegion::new(1000)).unwrap_err(),
        RegionError::Capacity(744)
    );
}
