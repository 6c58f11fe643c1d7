//! The shared-memory single-producer single-consumer variable-length
//! message queue, byte for byte the layout of `docs/protocol.md` §5, so a C++
//! peer can be at the other end.
//!
//! One writer and one reader per queue, by construction:
//! - in one process, [`heap_queue`] hands out the two ends of a queue in
//!   heap memory once, as a pair;
//! - across processes, [`ShmWriter::open_file`] and [`ShmReader::open_file`]
//!   map `/dev/shm/<sender>_<receiver>.shm` and take that end's lock, so a
//!   second writer (or reader) is refused with "in use", in this process or
//!   another, while a crash releases it.
//!
//! There is no other way to make an end: the constructor over an arbitrary
//! region is private to this module, so no code of the crate can build a
//! second writer over a region that already has one (and code outside the
//! crate cannot name a queue at all).
//!
//! Memory ordering: the writer publishes a message with a Release store of
//! `write_idx` that the reader loads with Acquire (SYNC POINT
//! msg-published); the reader frees blocks with a Release store of
//! `read_idx` that the writer loads with Acquire (SYNC POINT
//! block-released). This is correct on weakly ordered CPUs, where the C++
//! original's compiler-only barriers are not.
//!
//! Trust: both ends treat the region as input. Every header and index is
//! read once (atomically) and validated; from then on only our own copy is
//! used. A header of impossible size or impossible indices (a corrupt or
//! hostile peer) is reported as [`Corrupt`], never read or written out of
//! bounds.

mod intent;
mod ring;
mod wake_words;

/// The atomics `ring` uses (loom's in the loom test), and its crash
/// points (`crate::failpoint`; none in the loom test).
pub(crate) mod sync {
    pub(crate) use crate::failpoint::hit as crash_point;
    pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
}

use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

pub(crate) use self::intent::{recover, MAX_BATCH};
#[cfg(any(test, fuzzing))]
use self::intent::{
    OFF_INTENT, OFF_INTENT_CONSUMED, OFF_INTENT_FIRST, OFF_INTENT_IN, OFF_INTENT_OUT,
};
use self::ring::QueueMemory;
pub(crate) use self::ring::{Corrupt, BLOCK};
use self::wake_words::OFF_WAKE_FLAG;
#[cfg(any(test, fuzzing))]
use self::wake_words::{OFF_WAKE_ACK, OFF_WAKE_ANNOUNCE};
use crate::doorbell::{self, Ringer};
use crate::error::FileError;
#[cfg(any(test, fuzzing))]
use crate::sys::HeapRegion;
use crate::sys::{Lock, MapOptions, Mapping, Region};

/// Offset of `write_idx` after the blocks.
const OFF_WRITE: usize = 0;
/// Offset of the writer's cached `read_idx` after the blocks.
const OFF_CACHE: usize = 4;
/// Offset of the writer's fast-path announcement (bytes the C++ queue
/// leaves unused, in `write_idx`'s cache line).
const OFF_ANNOUNCE: usize = 8;
/// Offset of `read_idx` after the blocks (its own cache line pair).
const OFF_READ: usize = 128;
/// Offset of the writer's commit record (bytes the C++ queue leaves unused).
const OFF_WRITE_RECORD: usize = 64;
/// Offset of the reader's commit record (bytes the C++ queue leaves unused).
const OFF_READ_RECORD: usize = 192;
/// Offset of the writer's doorbell acknowledgement (`crate::doorbell`;
/// bytes the C++ queue leaves unused, in the writer's record line).
const OFF_BELL_ACK: usize = 80;
/// Offset of the reader's doorbell announcement (bytes the C++ queue
/// leaves unused, in the reader's record line).
const OFF_BELL_ANNOUNCE: usize = 200;
/// Offset of the pair tag (`pair_files::pair_tag`), claimed by the first
/// end to open the object (bytes the C++ queue leaves unused; read only
/// when an end opens the object).
const OFF_PAIR: usize = 72;
/// Bytes after the blocks.
pub(crate) const TRAILER: usize = 256;
#[cfg(any(test, fuzzing))]
/// The trailer words and their sizes (4 or 8 bytes), as offsets after the
/// blocks: what a peer can write besides the blocks.
pub(crate) const TRAILER_WORDS: [(usize, usize); 17] = [
    (OFF_WRITE, 4),
    (OFF_CACHE, 4),
    (OFF_ANNOUNCE, 8),
    (OFF_WAKE_FLAG, 8),
    (OFF_WRITE_RECORD, 8),
    (OFF_PAIR, 8),
    (OFF_BELL_ACK, 8),
    (OFF_WAKE_ACK, 8),
    (OFF_INTENT, 8),
    (OFF_INTENT_OUT, 8),
    (OFF_INTENT_IN, 8),
    (OFF_INTENT_FIRST, 8),
    (OFF_INTENT_CONSUMED, 8),
    (OFF_READ, 4),
    (OFF_READ_RECORD, 8),
    (OFF_BELL_ANNOUNCE, 8),
    (OFF_WAKE_ANNOUNCE, 8),
];

#[cfg(any(test, fuzzing))]
/// The wake protocol's words of the trailer: the reader's flag, the
/// writer's acknowledgement, the reader's announcement.
pub(crate) const WAKE_WORDS: [usize; 3] = [OFF_WAKE_FLAG, OFF_WAKE_ACK, OFF_WAKE_ANNOUNCE];

#[cfg(any(test, fuzzing))]
/// The doorbell's words of the trailer (offsets after the blocks): the
/// writer's acknowledgement and the reader's announcement.
pub(crate) const DOORBELL_WORDS: [usize; 2] = [OFF_BELL_ACK, OFF_BELL_ANNOUNCE];

/// Lock roles (bytes past the end of the object) of the two ends.
const ROLE_WRITER: u64 = 0;
const ROLE_READER: u64 = 1;

/// Region bytes for a queue of `capacity` bytes of blocks.
pub(crate) const fn region_size(capacity: usize) -> usize {
    capacity + TRAILER
}

/// Why a region cannot hold a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionError {
    /// The capacity (region size minus 256) is not a power of two of at
    /// least 64 bytes and at most 2^31 blocks.
    Capacity(usize),
    /// The region does not start at a 64-byte boundary.
    Misaligned,
}

impl std::fmt::Display for RegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            RegionError::Capacity(c) => write!(
                f,
                "shm queue capacity {c} is not a power of two between 64 bytes and 128 GiB"
            ),
            RegionError::Misaligned => f.write_str("shm queue region is not 64-byte aligned"),
        }
    }
}

impl std::error::Error for RegionError {}

/// Checks a queue capacity (bytes of blocks).
///
/// # Errors
/// [`RegionError::Capacity`] unless a power of two from 64 to 2^37.
pub(crate) fn check_capacity(capacity: usize) -> Result<(), RegionError> {
    if capacity.is_power_of_two() && capacity >= BLOCK && capacity / BLOCK <= 1 << 31 {
        Ok(())
    } else {
        Err(RegionError::Capacity(capacity))
    }
}

/// A [`Region`] seen as the memory of one queue, its layout checked. Both
/// ends of an in-process queue hold one over the same region.
#[derive(Debug)]
pub(crate) struct RegionMemory<R> {
    /// Held to keep the memory alive; read only by the tests.
    #[cfg_attr(not(any(test, fuzzing)), allow(dead_code))]
    region: Arc<R>,
    base: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the pointer is into the region the Arc keeps alive (R is Send and
// Sync); through it the queue ends reach shared words only atomically, and
// the blocks as the ring's SYNC POINTs allow.
unsafe impl<R: Region> Send for RegionMemory<R> {}
// SAFETY: as above.
unsafe impl<R: Region> Sync for RegionMemory<R> {}

impl<R: Region> RegionMemory<R> {
    /// Checks `region`'s size and alignment.
    fn new(region: Arc<R>) -> Result<Self, RegionError> {
        let capacity = region.size().saturating_sub(TRAILER);
        check_capacity(capacity)?;
        let base = NonNull::new(region.base()).ok_or(RegionError::Misaligned)?;
        if base.as_ptr() as usize % BLOCK != 0 {
            return Err(RegionError::Misaligned);
        }
        Ok(RegionMemory {
            region,
            base,
            capacity,
        })
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off is OFF_WRITE, OFF_CACHE or OFF_READ, so the word lies
        // in the trailer (capacity + off + 4 <= size), 4-aligned because the
        // base is 64-aligned and capacity a multiple of 64; the region lives
        // as long as self and its shared words are only accessed atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(self.capacity + off).cast()) }
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is OFF_ANNOUNCE, OFF_WRITE_RECORD, OFF_READ_RECORD,
        // OFF_BELL_ACK, OFF_BELL_ANNOUNCE, OFF_PAIR or one of the OFF_WAKE_*
        // or OFF_INTENT*,
        // so the word lies in the trailer (capacity + off + 8 <= size),
        // 8-aligned because the base is 64-aligned; otherwise as in `word`.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(self.capacity + off).cast()) }
    }

    #[cfg(any(test, fuzzing))]
    /// The region, shared, for the crate's hostile-peer tests.
    pub(crate) fn shared_region(&self) -> Arc<R> {
        self.region.clone()
    }
}

// SAFETY: `new` checked that capacity is a power of two multiple of 64 of
// at most 2^31 blocks with the trailer inside the region, and the base
// 64-aligned; the region lives as long as self.
unsafe impl<R: Region> QueueMemory for RegionMemory<R> {
    #[inline]
    fn capacity(&self) -> usize {
        self.capacity
    }
    #[inline]
    fn header(&self, b: u32) -> &AtomicU64 {
        debug_assert!((b as usize) < self.capacity / BLOCK);
        // SAFETY: the ring passes b below the block count (a masked index),
        // so the 8-byte word at b * 64 is inside the blocks and 8-aligned
        // (64-aligned base); header words are only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(b as usize * BLOCK).cast()) }
    }
    #[inline]
    fn write_idx(&self) -> &AtomicU32 {
        self.word(OFF_WRITE)
    }
    #[inline]
    fn read_idx_cache(&self) -> &AtomicU32 {
        self.word(OFF_CACHE)
    }
    #[inline]
    fn read_idx(&self) -> &AtomicU32 {
        self.word(OFF_READ)
    }
    #[inline]
    fn blocks(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    #[inline]
    fn write_record(&self) -> &AtomicU64 {
        self.word64(OFF_WRITE_RECORD)
    }
    #[inline]
    fn read_record(&self) -> &AtomicU64 {
        self.word64(OFF_READ_RECORD)
    }
    #[inline]
    fn announce(&self) -> &AtomicU64 {
        self.word64(OFF_ANNOUNCE)
    }
    #[inline(always)]
    fn prefetch(&self, b: u32) {
        // Not under Miri: a hint has no semantics to check.
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: SSE, the prefetch's target feature, is part of the x86_64
        // baseline. A prefetch is a hint: it never faults, reads nothing
        // into the program and cannot race; the address is inside the
        // blocks anyway (b is a masked index).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.base.as_ptr().add(b as usize * BLOCK).cast());
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = b;
    }
    #[inline(always)]
    fn demote(&self, b: u32) {
        // Not under Miri: a hint has no semantics to check.
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: CLDEMOTE (Intel SDM) is a hint: it changes no memory and
        // no value any load returns. Its address is a block inside the live
        // mapping (the ring passes a slot below the block count), valid in
        // any case. A CPU without CLDEMOTE executes its encoding (0F 1C /0,
        // in the reserved-NOP space) as a NOP.
        unsafe {
            std::arch::asm!(
                "cldemote [{0}]",
                in(reg) self.base.as_ptr().add(b as usize * BLOCK),
                options(nostack, preserves_flags)
            );
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = b;
    }
}

/// The producing end of a queue in region `R`: the only one.
#[derive(Debug)]
pub(crate) struct ShmWriter<R: Region = Mapping> {
    w: ring::Writer<RegionMemory<R>>,
    /// The reader's doorbell, if it announced one this session.
    bell: Option<Ringer>,
    /// Messages published with `push_more` and not rung yet.
    unrung: bool,
    /// The reader announced that it may sleep, and this writer looks at
    /// its flag after every publication (`crate::wake`).
    wakes: bool,
    /// The reader was found asleep: its owner sends the wake-up.
    wake_due: bool,
    /// What this writer last stored in its intent record's count word
    /// (`intent`), so a run of one-request commits stores it once; `None`
    /// when not known (the ring was opened, reloaded or reset).
    consumed_word: Option<u32>,
}

/// The consuming end of a queue in region `R`: the only one.
#[derive(Debug)]
pub(crate) struct ShmReader<R: Region = Mapping>(ring::Reader<RegionMemory<R>>);

#[cfg(test)]
/// The two ends of a new, empty queue of `capacity` bytes of blocks in
/// heap memory, handed out once: for two threads of one process.
///
/// # Errors
/// [`RegionError::Capacity`] for a capacity the queue cannot use.
pub(crate) fn heap_queue(
    capacity: usize,
) -> Result<(ShmWriter<HeapRegion>, ShmReader<HeapRegion>), RegionError> {
    check_capacity(capacity)?;
    heap_queue_in(HeapRegion::new(region_size(capacity)))
}

#[cfg(any(test, fuzzing))]
/// The two ends of the queue held in `region` (any content: indices and
/// headers are validated as a peer's would be), handed out once.
///
/// # Errors
/// A [`RegionError`] for a region of the wrong size.
pub(crate) fn heap_queue_in(
    region: HeapRegion,
) -> Result<(ShmWriter<HeapRegion>, ShmReader<HeapRegion>), RegionError> {
    let region = Arc::new(region);
    Ok((ShmWriter::new(region.clone())?, ShmReader::new(region)?))
}

impl<R: Region> ShmWriter<R> {
    /// The writer of the queue in `region`, taking up its stored indices.
    /// Private: a second writer over one region is what it must prevent.
    fn new(region: Arc<R>) -> Result<Self, RegionError> {
        Ok(ShmWriter {
            w: ring::Writer::new(RegionMemory::new(region)?),
            bell: None,
            unrung: false,
            wakes: false,
            wake_due: false,
            consumed_word: None,
        })
    }

    /// Reserves a message and returns its payload to fill; `None` when the
    /// reader has not freed enough room, or the message can never fit. A
    /// second `alloc` before `push` replaces the first.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.w.alloc(msg_type, payload_len)
    }

    /// The payload of the message allocated and not yet pushed (its
    /// position and length are the writer's own, never read back from the
    /// ring).
    #[inline]
    pub(crate) fn pending_payload(&mut self) -> Option<&mut [u8]> {
        self.w.pending_payload()
    }

    /// Publishes the last allocated message, and lets go the batch
    /// [`push_more`](Self::push_more) holds, if any.
    #[inline(always)]
    pub(crate) fn push(&mut self) {
        self.w.push();
        self.ring();
    }

    /// Rings the reader's doorbell, if it announced one, and looks for
    /// its sleep, if it may sleep: after every publication a reader may
    /// see.
    #[inline(always)]
    fn ring(&mut self) {
        if let Some(b) = &self.bell {
            b.ring();
        }
        self.unrung = false;
        if self.wakes && crate::wake::must_wake(self.w.memory().word64(OFF_WAKE_FLAG)) {
            self.wake_due = true;
        }
    }

    /// Publishes the last allocated message, persisted and visible to a v1
    /// reader (a C++ peer) as with [`push`](Self::push); a reader on the
    /// fast path sees a batch of these at once, with the next `push`,
    /// [`release`](Self::release), an `alloc` that finds the queue full, or
    /// once the batch spans 32 blocks (2 KiB), or when this writer is
    /// dropped. A writer killed while it holds a batch leaves it to the
    /// next session: the reader's `reload` reads it on v1 (or, without a
    /// new session, the reader goes to v1 once a next writer has published
    /// 32 blocks after it).
    #[inline]
    pub(crate) fn push_more(&mut self) {
        self.w.push_more();
        // Rung when the batch goes (a v1 reader may read it sooner, and
        // then needs no bell).
        self.unrung = true;
    }

    #[cfg(any(test, fuzzing))]
    /// Lets go the batch [`push_more`](Self::push_more) holds, if any.
    #[inline(always)]
    pub(crate) fn release(&mut self) {
        self.w.release();
        if self.unrung {
            self.ring();
        }
    }

    /// For a caller with nothing more to write for now (the connection
    /// calls it at every poll and flush): lets the held batch go, as
    /// [`release`](Self::release), and hands the blocks of the last
    /// publication (its first 16) to the other side, once. One compare
    /// when nothing was published since the last call.
    ///
    /// Handing over asks the CPU to move the blocks' lines from this
    /// core's cache towards the cache both cores share (`CLDEMOTE` on
    /// x86_64; a no-op elsewhere and on CPUs without it). A reader waiting
    /// for them then fetches them from there, not from this core's cache:
    /// on the Xeon measured, a 200-byte round trip went from 1.7x to 1.4x
    /// the cache-line floor. A hint: no byte and no ordering changes. Not
    /// in `push`: a writer that demoted every message while streaming ran
    /// at a half to a third of its rate.
    #[inline(always)]
    pub(crate) fn settle(&mut self) {
        self.w.settle();
        if self.unrung {
            self.ring();
        }
    }

    #[cfg(test)]
    /// Whether [`push_more`](Self::push_more) holds a batch back from a
    /// fast-path reader.
    #[inline]
    pub(crate) fn holding(&self) -> bool {
        self.w.holding()
    }

    /// Takes up the indices stored in the region again (a session
    /// starts: the reader announces its sleep again, if it sleeps).
    pub(crate) fn reload(&mut self) {
        self.wakes = false;
        self.wake_due = false;
        self.consumed_word = None;
        self.w.reload()
    }

    /// Messages published since the queue was (re)set, mod 2^31; exact
    /// after a crash at any instruction.
    pub(crate) fn pushed(&self) -> u32 {
        self.w.pushed()
    }

    /// Empties the queue (only while the reader is not reading: its next
    /// `reload` sees the empty queue).
    pub(crate) fn reset(&mut self) {
        ring::reset(self.w.memory());
        intent::clear(self.w.memory());
        self.consumed_word = None;
        self.w.reload();
    }

    #[cfg(test)]
    /// Wrap markers published alone since this writer was made: a message
    /// that had to start at slot 0 did not fit yet, so the tail was handed
    /// back first (a path the C++ writer lacks).
    pub(crate) fn lone_markers(&self) -> u64 {
        self.w.lone_markers()
    }

    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.w.memory().capacity
    }

    /// Share of the ring in use (0 to 1): published and not yet released
    /// by the reader.
    pub(crate) fn fill(&self) -> f64 {
        f64::from(self.w.in_use()) / f64::from(self.w.blocks())
    }

    /// Messages published and not yet read, as this writer last saw the
    /// reader's progress (from the reader's commit record).
    pub(crate) fn unread(&self) -> u32 {
        let rec = self
            .memory()
            .read_record()
            .load(std::sync::atomic::Ordering::Relaxed);
        // The reader's count, by its commit record (the high half is the
        // index it published, the low half its count and delta).
        let popped = ((rec as u32) >> 1) & 0x7fff_ffff;
        self.w.pushed().wrapping_sub(popped) & 0x7fff_ffff
    }

    /// Allows (the default) or forbids the stamped fast path: forbidden,
    /// this writer never announces it, so its reader stays on the v1 ring
    /// protocol (for debugging and comparisons; `Config::shm_fast_path`).
    /// Messages are published for a v1 reader (a C++ peer) either way.
    pub(crate) fn set_fast_path(&mut self, allow: bool) {
        self.w.set_fast(allow)
    }

    /// Turns the hand-over of [`settle`](Self::settle) on (the default) or
    /// off (`Config::shm_hand_over`).
    pub(crate) fn set_hand_over(&mut self, on: bool) {
        self.w.set_hand_over(on)
    }

    #[cfg(test)]
    /// Whether this writer's fast-path announcement stands: every message
    /// it publishes can be read by waiting on its stamp.
    pub(crate) fn stamping(&self) -> bool {
        self.w.stamping()
    }

    pub(crate) fn memory(&self) -> &RegionMemory<R> {
        self.w.memory()
    }

    /// At the start of a session: rings the doorbell the reader announced
    /// in this ring's trailer, if it did and the bell is one for its slot
    /// (`bell_of(group)` is the bell's path), and tells the reader so;
    /// else rings nothing, and the reader polls this ring at every poll.
    /// Returns whether it rings.
    pub(crate) fn join_doorbell(
        &mut self,
        bell_of: impl FnOnce(usize) -> std::path::PathBuf,
    ) -> bool {
        self.bell = None;
        let m = self.w.memory();
        let word = doorbell::announcement(m.word64(OFF_BELL_ANNOUNCE));
        let Some((group, slot)) = doorbell::parse_announcement(word) else {
            return false;
        };
        let Ok(ringer) = Ringer::open(&bell_of(group), slot) else {
            return false;
        };
        self.bell = Some(ringer);
        doorbell::acknowledge(m.word64(OFF_BELL_ACK), word);
        true
    }
}

impl<R: Region> Drop for ShmWriter<R> {
    /// Lets a held batch go (and rings for it): only a writer killed while
    /// it held one leaves it to the next session (see
    /// [`push_more`](Self::push_more)).
    fn drop(&mut self) {
        self.w.release();
        if self.unrung {
            self.ring();
        }
    }
}

impl<R: Region> ShmReader<R> {
    /// The reader of the queue in `region`, taking up its stored indices.
    /// Private, as [`ShmWriter::new`].
    fn new(region: Arc<R>) -> Result<Self, RegionError> {
        Ok(ShmReader(ring::Reader::new(RegionMemory::new(region)?)))
    }

    /// The next message as `(msg_type, payload)`, not consumed.
    ///
    /// # Errors
    /// [`Corrupt`] for memory an honest writer never produces.
    #[inline]
    pub(crate) fn front(&mut self) -> Result<Option<(u16, &[u8])>, Corrupt> {
        self.0.front()
    }

    /// The message the last `front` returned, until it is popped.
    #[inline]
    pub(crate) fn current(&self) -> Option<(u16, &[u8])> {
        self.0.current()
    }

    /// Consumes the message the last `front` returned, and the messages
    /// held before it; returns how many were held.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> u32 {
        self.0.pop()
    }

    /// A message after the current one, not consumed
    /// (`ring::Reader::peek`): `(msg_type, end, payload)`.
    ///
    /// # Errors
    /// [`Corrupt`] for memory an honest writer never produces.
    pub(crate) fn peek(&mut self, at: u32) -> Result<Option<ring::Peeked<'_>>, Corrupt> {
        self.0.peek(at)
    }

    /// The index `front` reads at (past the messages held).
    pub(crate) fn read_idx(&self) -> u32 {
        self.0.read_idx()
    }

    /// The index one past the current message.
    pub(crate) fn current_end(&self) -> Option<u32> {
        self.0.current_end()
    }

    /// Whether a message is published at `at` (after the current one).
    pub(crate) fn ready_at(&mut self, at: u32) -> bool {
        matches!(self.0.peek(at), Ok(Some(_)))
    }

    /// Holds the current message (`ring::Reader::hold`); false if the
    /// held would span more than the ring.
    pub(crate) fn hold(&mut self) -> bool {
        self.0.hold()
    }

    /// Forgets the current message (`ring::Reader::forget_current`).
    pub(crate) fn forget_current(&mut self) {
        self.0.forget_current()
    }

    /// Messages held.
    #[inline(always)]
    pub(crate) fn held(&self) -> u32 {
        self.0.held()
    }

    /// Gives the messages held back (`ring::Reader::unhold`).
    pub(crate) fn unhold(&mut self) {
        self.0.unhold()
    }

    /// Steps past an orphan fragment (`ring::Reader::skip`).
    pub(crate) fn skip(&mut self) -> bool {
        self.0.skip()
    }

    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.0.memory().capacity
    }

    /// Consumes the messages held and the current one in one publication
    /// (`ring::Reader::consume_all`).
    pub(crate) fn consume_all(&mut self) {
        self.0.consume_all()
    }

    /// Consumes one message that ends at `end` (`ring::Reader::consume_to`).
    pub(crate) fn consume_to(&mut self, end: u32) {
        self.0.consume_to(end)
    }

    /// Whether something may be waiting: a cached index compare, else one
    /// load of `write_idx`. [`front`](Self::front) tells what it is.
    #[inline(always)]
    pub(crate) fn ready(&mut self) -> bool {
        self.0.ready()
    }

    /// Takes up the indices stored in the region again and starts a
    /// session: back on v1, with the writer's fast-path announcement
    /// cleared, so only the writer of this session can announce again.
    pub(crate) fn reload(&mut self) {
        self.0.reload()
    }

    /// Messages consumed since the queue was (re)set, mod 2^31; exact
    /// after a crash at any instruction.
    pub(crate) fn popped(&self) -> u32 {
        self.0.popped()
    }

    /// Allows (the default) or forbids the stamped fast path; forbidden,
    /// this reader waits on `write_idx` as a C++ reader does.
    pub(crate) fn set_fast_path(&mut self, allow: bool) {
        self.0.set_fast(allow)
    }

    /// Whether this reader is on the fast path now: its writer announced
    /// in this session that it stamps, and the reader has caught up with
    /// the point of that announcement.
    pub(crate) fn is_fast(&self) -> bool {
        self.0.is_fast()
    }

    /// Empties the queue (only while the writer is not writing), with the
    /// writer's intent record (`intent`): a new pair starts with none.
    pub(crate) fn reset(&mut self) {
        ring::reset(self.0.memory());
        intent::clear(self.0.memory());
        self.0.reload();
    }

    #[cfg(test)]
    pub(crate) fn memory(&self) -> &RegionMemory<R> {
        self.0.memory()
    }

    /// At the start of a session, before the login response: announces
    /// the writer's bell (`word`, from `doorbell::announcement_of`; 0
    /// for none), with the writer's earlier acknowledgement cleared.
    pub(crate) fn announce_doorbell(&self, word: u64) {
        let m = self.0.memory();
        doorbell::announce(m.word64(OFF_BELL_ACK), m.word64(OFF_BELL_ANNOUNCE), word);
    }

    /// Whether this session's writer acknowledged the bell announced as
    /// `word`: it rings from now on (poll the ring once more, for what it
    /// published before).
    pub(crate) fn doorbell_acknowledged(&self, word: u64) -> bool {
        doorbell::acknowledged(self.0.memory().word64(OFF_BELL_ACK), word)
    }
}

/// The pair tag recorded in the shared-memory object at `path` (0: none
/// yet), read without mapping or locking it; `None` if it cannot be read
/// or is no queue.
pub(crate) fn tag_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let cap = (f.metadata().ok()?.len() as usize).checked_sub(TRAILER)?;
    check_capacity(cap).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (cap + OFF_PAIR) as u64).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Maps the shared-memory object at `path` for a queue of `capacity`
/// bytes, creating it (mode `opts.mode`, full size reserved) if needed,
/// takes the lock of `role`, and claims the object for the pair `tag`.
fn map_shm(
    path: &Path,
    capacity: usize,
    opts: MapOptions,
    role: u64,
    tag: u64,
) -> Result<Arc<Mapping>, FileError> {
    check_capacity(capacity).map_err(|e| FileError::corrupt(path, e.to_string()))?;
    // The writer and the reader (often another process) both map the
    // object: no whole-file lock, one lock per end. (`tcpshm clean` takes
    // both role locks, then unlinks: `Mapping::open` opens an object locked
    // there that is no longer at `path` again.)
    let opts = MapOptions {
        lock: Lock::Role(role),
        ..opts
    };
    let m = Mapping::open(path, region_size(capacity), opts)?;
    crate::pair_files::claim_for(path, m.word64(capacity + OFF_PAIR), tag)?;
    Ok(Arc::new(m))
}

impl ShmWriter<Mapping> {
    /// Maps the object at `path` and writes to it: the only writer, in
    /// this process or another (a second one gets "in use"). The object
    /// is the queue of the pair `tag` (`pair_files::pair_tag`).
    ///
    /// # Errors
    /// A [`FileError`] naming the object: no /dev/shm, no space, wrong size,
    /// a capacity that is not a power of two, another writer, or another
    /// pair's object.
    pub(crate) fn open_file(
        path: &Path,
        capacity: usize,
        opts: MapOptions,
        tag: u64,
    ) -> Result<Self, FileError> {
        let m = map_shm(path, capacity, opts, ROLE_WRITER, tag)?;
        ShmWriter::new(m).map_err(|e| FileError::corrupt(path, e.to_string()))
    }
}

impl ShmReader<Mapping> {
    /// Maps the object at `path` and reads from it: the only reader, as
    /// [`ShmWriter::open_file`].
    ///
    /// # Errors
    /// As [`ShmWriter::open_file`].
    pub(crate) fn open_file(
        path: &Path,
        capacity: usize,
        opts: MapOptions,
        tag: u64,
    ) -> Result<Self, FileError> {
        let m = map_shm(path, capacity, opts, ROLE_READER, tag)?;
        ShmReader::new(m).map_err(|e| FileError::corrupt(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests;
