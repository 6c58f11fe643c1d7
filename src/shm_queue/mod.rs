//! The shared-memory single-producer single-consumer variable-length
//! message queue, byte for byte the layout of `PROTOCOL.md` §5, so a C++
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
//! ```
//! use tcpshm::shm_queue::heap_queue;
//!
//! let (mut w, mut r) = heap_queue(1 << 12).unwrap();
//! w.alloc(7, 5).unwrap().copy_from_slice(b"hello");
//! w.push();
//! let (t, payload) = r.front().unwrap().unwrap();
//! assert_eq!((t, payload), (7, &b"hello"[..]));
//! r.pop();
//! assert!(r.front().unwrap().is_none());
//! ```
//!
//! There is no other way to make an end: the constructor over an arbitrary
//! region is private, so safe code cannot build a second writer over a
//! region that already has one.
//!
//! ```compile_fail,E0624
//! use tcpshm::shm_queue::ShmWriter;
//! use tcpshm::sys::HeapRegion;
//! let w = ShmWriter::new(HeapRegion::new(1024 + 256)); // error: private
//! ```
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

mod ring;

/// The atomics `ring` uses (loom's in the loom test).
pub(crate) mod sync {
    pub use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
}

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use self::ring::QueueMemory;
pub use self::ring::{Corrupt, BLOCK};
use crate::error::FileError;
use crate::sys::{HeapRegion, MapOptions, Mapping, Region};

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
/// Bytes after the blocks.
pub const TRAILER: usize = 256;
/// The trailer words and their sizes (4 or 8 bytes), as offsets after the
/// blocks: what a peer can write besides the blocks.
pub(crate) const TRAILER_WORDS: [(usize, usize); 6] = [
    (OFF_WRITE, 4),
    (OFF_CACHE, 4),
    (OFF_ANNOUNCE, 8),
    (OFF_WRITE_RECORD, 8),
    (OFF_READ, 4),
    (OFF_READ_RECORD, 8),
];

/// Lock roles (bytes past the end of the object) of the two ends.
const ROLE_WRITER: u64 = 0;
const ROLE_READER: u64 = 1;

/// Region bytes for a queue of `capacity` bytes of blocks.
pub const fn region_size(capacity: usize) -> usize {
    capacity + TRAILER
}

/// Path of the shared-memory object `sender` writes and `receiver` reads,
/// in `shm_dir` (normally `/dev/shm`, where `shm_open` puts `/<name>`).
pub fn shm_path(shm_dir: &Path, sender: &str, receiver: &str) -> PathBuf {
    shm_dir.join(format!("{sender}_{receiver}.shm"))
}

/// Why a region cannot hold a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
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
pub fn check_capacity(capacity: usize) -> Result<(), RegionError> {
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
        // SAFETY: off is OFF_ANNOUNCE, OFF_WRITE_RECORD or OFF_READ_RECORD, so the word
        // lies in the trailer (capacity + off + 8 <= size), 8-aligned
        // because the base is 64-aligned; otherwise as in `word`.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(self.capacity + off).cast()) }
    }

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
pub struct ShmWriter<R: Region = Mapping>(ring::Writer<RegionMemory<R>>);

/// The consuming end of a queue in region `R`: the only one.
#[derive(Debug)]
pub struct ShmReader<R: Region = Mapping>(ring::Reader<RegionMemory<R>>);

/// The two ends of a new, empty queue of `capacity` bytes of blocks in
/// heap memory, handed out once: for two threads of one process.
///
/// # Errors
/// [`RegionError::Capacity`] for a capacity the queue cannot use.
pub fn heap_queue(
    capacity: usize,
) -> Result<(ShmWriter<HeapRegion>, ShmReader<HeapRegion>), RegionError> {
    check_capacity(capacity)?;
    heap_queue_in(HeapRegion::new(region_size(capacity)))
}

/// The two ends of the queue held in `region` (any content: indices and
/// headers are validated as a peer's would be), handed out once.
///
/// # Errors
/// A [`RegionError`] for a region of the wrong size.
pub fn heap_queue_in(
    region: HeapRegion,
) -> Result<(ShmWriter<HeapRegion>, ShmReader<HeapRegion>), RegionError> {
    let region = Arc::new(region);
    Ok((ShmWriter::new(region.clone())?, ShmReader::new(region)?))
}

impl<R: Region> ShmWriter<R> {
    /// The writer of the queue in `region`, taking up its stored indices.
    /// Private: a second writer over one region is what it must prevent.
    fn new(region: Arc<R>) -> Result<Self, RegionError> {
        Ok(ShmWriter(ring::Writer::new(RegionMemory::new(region)?)))
    }

    /// Reserves a message and returns its payload to fill; `None` when the
    /// reader has not freed enough room, or the message can never fit. A
    /// second `alloc` before `push` replaces the first.
    #[inline(always)]
    pub fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.0.alloc(msg_type, payload_len)
    }

    /// The payload of the message allocated and not yet pushed (its
    /// position and length are the writer's own, never read back from the
    /// ring).
    #[inline]
    pub fn pending_payload(&mut self) -> Option<&mut [u8]> {
        self.0.pending_payload()
    }

    /// Publishes the last allocated message, and lets go the batch
    /// [`push_more`](Self::push_more) holds, if any.
    #[inline(always)]
    pub fn push(&mut self) {
        self.0.push()
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
    pub fn push_more(&mut self) {
        self.0.push_more()
    }

    /// Lets go the batch [`push_more`](Self::push_more) holds, if any.
    #[inline(always)]
    pub fn release(&mut self) {
        self.0.release()
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
    pub fn settle(&mut self) {
        self.0.settle()
    }

    /// Whether [`push_more`](Self::push_more) holds a batch back from a
    /// fast-path reader.
    #[inline]
    pub fn holding(&self) -> bool {
        self.0.holding()
    }

    /// Takes up the indices stored in the region again.
    pub fn reload(&mut self) {
        self.0.reload()
    }

    /// Messages published since the queue was (re)set, mod 2^31; exact
    /// after a crash at any instruction.
    pub fn pushed(&self) -> u32 {
        self.0.pushed()
    }

    /// Empties the queue (only while the reader is not reading: its next
    /// `reload` sees the empty queue).
    pub fn reset(&mut self) {
        ring::reset(self.0.memory());
        self.0.reload();
    }

    /// Wrap markers published alone since this writer was made: a message
    /// that had to start at slot 0 did not fit yet, so the tail was handed
    /// back first (a path the C++ writer lacks).
    pub fn lone_markers(&self) -> u64 {
        self.0.lone_markers()
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.0.memory().capacity
    }

    /// Share of the ring in use (0 to 1): published and not yet released
    /// by the reader.
    pub fn fill(&self) -> f64 {
        f64::from(self.0.in_use()) / f64::from(self.0.blocks())
    }

    /// Messages published and not yet read, as this writer last saw the
    /// reader's progress (from the reader's commit record).
    pub fn unread(&self) -> u32 {
        let rec = self
            .memory()
            .read_record()
            .load(std::sync::atomic::Ordering::Relaxed);
        // The reader's count, by its commit record (the high half is the
        // index it published, the low half its count and delta).
        let popped = ((rec as u32) >> 1) & 0x7fff_ffff;
        self.0.pushed().wrapping_sub(popped) & 0x7fff_ffff
    }

    /// Allows (the default) or forbids the stamped fast path: forbidden,
    /// this writer never announces it, so its reader stays on the v1 ring
    /// protocol (for debugging and comparisons; `Config::shm_fast_path`).
    /// Messages are published for a v1 reader (a C++ peer) either way.
    pub fn set_fast_path(&mut self, allow: bool) {
        self.0.set_fast(allow)
    }

    /// Turns the hand-over of [`settle`](Self::settle) on (the default) or
    /// off (`Config::shm_hand_over`).
    pub fn set_hand_over(&mut self, on: bool) {
        self.0.set_hand_over(on)
    }

    /// Whether this writer's fast-path announcement stands: every message
    /// it publishes can be read by waiting on its stamp.
    pub fn stamping(&self) -> bool {
        self.0.stamping()
    }

    pub(crate) fn memory(&self) -> &RegionMemory<R> {
        self.0.memory()
    }
}

impl<R: Region> Drop for ShmWriter<R> {
    /// Lets a held batch go: only a writer killed while it held one leaves
    /// it to the next session (see [`push_more`](Self::push_more)).
    fn drop(&mut self) {
        self.0.release();
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
    pub fn front(&mut self) -> Result<Option<(u16, &[u8])>, Corrupt> {
        self.0.front()
    }

    /// The message the last `front` returned, until it is popped.
    #[inline]
    pub fn current(&self) -> Option<(u16, &[u8])> {
        self.0.current()
    }

    /// Consumes the message the last `front` returned.
    #[inline(always)]
    pub fn pop(&mut self) {
        self.0.pop()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether something may be waiting: a cached index compare, else one
    /// load of `write_idx`. [`front`](Self::front) tells what it is.
    #[inline(always)]
    pub fn ready(&mut self) -> bool {
        self.0.ready()
    }

    /// Takes up the indices stored in the region again and starts a
    /// session: back on v1, with the writer's fast-path announcement
    /// cleared, so only the writer of this session can announce again.
    pub fn reload(&mut self) {
        self.0.reload()
    }

    /// Messages consumed since the queue was (re)set, mod 2^31; exact
    /// after a crash at any instruction.
    pub fn popped(&self) -> u32 {
        self.0.popped()
    }

    /// Allows (the default) or forbids the stamped fast path; forbidden,
    /// this reader waits on `write_idx` as a C++ reader does.
    pub fn set_fast_path(&mut self, allow: bool) {
        self.0.set_fast(allow)
    }

    /// Whether this reader is on the fast path now: its writer announced
    /// in this session that it stamps, and the reader has caught up with
    /// the point of that announcement.
    pub fn is_fast(&self) -> bool {
        self.0.is_fast()
    }

    /// Empties the queue (only while the writer is not writing).
    pub fn reset(&mut self) {
        ring::reset(self.0.memory());
        self.0.reload();
    }

    #[cfg(test)]
    pub(crate) fn memory(&self) -> &RegionMemory<R> {
        self.0.memory()
    }
}

/// Maps the shared-memory object at `path` for a queue of `capacity`
/// bytes, creating it (mode `opts.mode`, full size reserved) if needed,
/// and takes the lock of `role`.
fn map_shm(
    path: &Path,
    capacity: usize,
    opts: MapOptions,
    role: u64,
) -> Result<Arc<Mapping>, FileError> {
    check_capacity(capacity).map_err(|e| FileError::corrupt(path, e.to_string()))?;
    // The writer and the reader (often another process) both map the
    // object: no whole-file lock, one lock per end.
    let mut tries = 0;
    loop {
        let m = Mapping::open(
            path,
            region_size(capacity),
            MapOptions {
                lock: false,
                ..opts
            },
        )?;
        m.lock_role(role)?;
        // `tcpshm clean` takes both role locks, then unlinks: an object
        // locked here that is no longer at `path` is opened again.
        if m.is_linked() || tries == 3 {
            return Ok(Arc::new(m));
        }
        tries += 1;
    }
}

impl ShmWriter<Mapping> {
    /// Maps the object at `path` and writes to it: the only writer, in
    /// this process or another (a second one gets "in use").
    ///
    /// # Errors
    /// A [`FileError`] naming the object: no /dev/shm, no space, wrong size,
    /// a capacity that is not a power of two, or another writer.
    pub fn open_file(path: &Path, capacity: usize, opts: MapOptions) -> Result<Self, FileError> {
        let m = map_shm(path, capacity, opts, ROLE_WRITER)?;
        ShmWriter::new(m).map_err(|e| FileError::corrupt(path, e.to_string()))
    }
}

impl ShmReader<Mapping> {
    /// Maps the object at `path` and reads from it: the only reader, as
    /// [`ShmWriter::open_file`].
    ///
    /// # Errors
    /// As [`ShmWriter::open_file`].
    pub fn open_file(path: &Path, capacity: usize, opts: MapOptions) -> Result<Self, FileError> {
        let m = map_shm(path, capacity, opts, ROLE_READER)?;
        ShmReader::new(m).map_err(|e| FileError::corrupt(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
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
        unsafe {
            (*AtomicU32::from_ptr(r.base().add(cap + off).cast())).load(sync::Ordering::SeqCst)
        }
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
        w.0.abandon_batch();
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
        w.0.abandon_batch(); // kill -9
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
}
