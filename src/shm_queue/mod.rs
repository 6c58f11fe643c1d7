//! The shared-memory single-producer single-consumer variable-length
//! message queue, byte for byte the layout of `PROTOCOL.md` §5, so a C++
//! peer can be at the other end.
//!
//! The queue works over any [`Region`]: a [`HeapRegion`] in tests (shared
//! by two threads through an `Arc`), a [`Mapping`] of a POSIX shared-memory
//! object (`/dev/shm/<sender>_<receiver>.shm`) in real use, with the writer
//! in one process and the reader in another.
//!
//! ```
//! use std::sync::Arc;
//! use tcpshm::shm_queue::{HeapRegion, ShmReader, ShmWriter};
//!
//! let region = Arc::new(HeapRegion::new(1 << 12).unwrap());
//! let mut w = ShmWriter::new(region.clone()).unwrap();
//! let mut r = ShmReader::new(region).unwrap();
//! w.alloc(7, 5).unwrap().copy_from_slice(b"hello");
//! w.push();
//! let (t, payload) = r.front().unwrap().unwrap();
//! assert_eq!((t, payload), (7, &b"hello"[..]));
//! r.pop();
//! assert!(r.front().unwrap().is_none());
//! ```
//!
//! Memory ordering: the writer publishes a message with a Release store of
//! `write_idx` that the reader loads with Acquire (SYNC POINT
//! msg-published); the reader frees blocks with a Release store of
//! `read_idx` that the writer loads with Acquire (SYNC POINT
//! block-released). This is correct on weakly ordered CPUs, where the C++
//! original's compiler-only barriers are not.
//!
//! Trust: the reader treats the region as input. A header of impossible
//! size or impossible indices (a corrupt or hostile peer) is reported as
//! [`Corrupt`], never read out of bounds.

mod ring;

/// The atomics `ring` uses (loom's in the loom test).
pub(crate) mod sync {
    pub use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
}

use std::alloc::Layout;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

pub use self::ring::{Corrupt, QueueMemory, BLOCK};
use crate::error::FileError;
use crate::sys::{MapOptions, Mapping};

/// Offset of `write_idx` after the blocks.
const OFF_WRITE: usize = 0;
/// Offset of the writer's cached `read_idx` after the blocks.
const OFF_CACHE: usize = 4;
/// Offset of `read_idx` after the blocks (its own cache line pair).
const OFF_READ: usize = 128;
/// Offset of the writer's commit record (bytes the C++ queue leaves unused).
const OFF_WRITE_RECORD: usize = 64;
/// Offset of the reader's commit record (bytes the C++ queue leaves unused).
const OFF_READ_RECORD: usize = 192;
/// Bytes after the blocks.
pub const TRAILER: usize = 256;

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

/// Memory a queue can live in.
///
/// # Safety
/// `base()` must point to `size()` bytes valid for reads and writes for as
/// long as the value lives, and may be shared with other threads and
/// processes (all shared words are accessed atomically by the queue).
pub unsafe trait Region {
    /// Start of the region.
    fn base(&self) -> *mut u8;
    /// Size in bytes.
    fn size(&self) -> usize;
}

// SAFETY: a Mapping owns a live shared mapping of `len()` bytes.
unsafe impl Region for Mapping {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn size(&self) -> usize {
        self.len()
    }
}

// SAFETY: forwards to a Region that lives as long as the Arc.
unsafe impl<R: Region> Region for Arc<R> {
    fn base(&self) -> *mut u8 {
        (**self).base()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
}

/// A zeroed, 64-byte aligned heap region, for tests and in-process use.
#[derive(Debug)]
pub struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory; concurrent access goes through the
// queue's atomics (see Region).
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// A region for a queue of `capacity` bytes of blocks.
    ///
    /// # Errors
    /// [`RegionError::Capacity`] for a capacity the queue cannot use.
    pub fn new(capacity: usize) -> Result<HeapRegion, RegionError> {
        check_capacity(capacity)?;
        let layout = Layout::from_size_align(region_size(capacity), BLOCK)
            .map_err(|_| RegionError::Capacity(capacity))?;
        // SAFETY: layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Ok(HeapRegion { ptr, layout })
    }

    /// A region whose first bytes are `init` (cut to the region's size):
    /// arbitrary memory for tests and fuzzing.
    ///
    /// # Errors
    /// [`RegionError::Capacity`] for a capacity the queue cannot use.
    pub fn with_contents(capacity: usize, init: &[u8]) -> Result<HeapRegion, RegionError> {
        let r = HeapRegion::new(capacity)?;
        let n = init.len().min(r.layout.size());
        // SAFETY: n <= the allocation's size; the region is not shared yet.
        unsafe { std::ptr::copy_nonoverlapping(init.as_ptr(), r.ptr.as_ptr(), n) };
        Ok(r)
    }
}

// SAFETY: ptr is a live allocation of layout.size() bytes owned by self.
unsafe impl Region for HeapRegion {
    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn size(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A [`Region`] seen as the memory of one queue, its layout checked.
#[derive(Debug)]
pub struct RegionMemory<R> {
    region: R,
    capacity: usize,
}

impl<R: Region> RegionMemory<R> {
    /// Checks `region`'s size and alignment.
    ///
    /// # Errors
    /// A [`RegionError`].
    pub fn new(region: R) -> Result<Self, RegionError> {
        let capacity = region.size().saturating_sub(TRAILER);
        check_capacity(capacity)?;
        if region.base() as usize % BLOCK != 0 {
            return Err(RegionError::Misaligned);
        }
        Ok(RegionMemory { region, capacity })
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off is OFF_WRITE, OFF_CACHE or OFF_READ, so the word lies
        // in the trailer (capacity + off + 4 <= size), 4-aligned because the
        // base is 64-aligned and capacity a multiple of 64; the region lives
        // as long as self and its shared words are only accessed atomically.
        unsafe { AtomicU32::from_ptr(self.region.base().add(self.capacity + off).cast()) }
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is OFF_WRITE_RECORD or OFF_READ_RECORD, so the word
        // lies in the trailer (capacity + off + 8 <= size), 8-aligned
        // because the base is 64-aligned; otherwise as in `word`.
        unsafe { AtomicU64::from_ptr(self.region.base().add(self.capacity + off).cast()) }
    }

    /// The region.
    pub fn region(&self) -> &R {
        &self.region
    }
}

// SAFETY: `new` checked that capacity is a power of two multiple of 64 of
// at most 2^31 blocks with the trailer inside the region, and the base
// 64-aligned; the region lives as long as self.
unsafe impl<R: Region> QueueMemory for RegionMemory<R> {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn write_idx(&self) -> &AtomicU32 {
        self.word(OFF_WRITE)
    }
    fn read_idx_cache(&self) -> &AtomicU32 {
        self.word(OFF_CACHE)
    }
    fn read_idx(&self) -> &AtomicU32 {
        self.word(OFF_READ)
    }
    fn blocks(&self) -> *mut u8 {
        self.region.base()
    }
    fn write_record(&self) -> &AtomicU64 {
        self.word64(OFF_WRITE_RECORD)
    }
    fn read_record(&self) -> &AtomicU64 {
        self.word64(OFF_READ_RECORD)
    }
}

/// The producing end of a queue in region `R`.
#[derive(Debug)]
pub struct ShmWriter<R>(ring::Writer<RegionMemory<R>>);

/// The consuming end of a queue in region `R`.
#[derive(Debug)]
pub struct ShmReader<R>(ring::Reader<RegionMemory<R>>);

impl<R: Region> ShmWriter<R> {
    /// The writer of the queue in `region`, taking up its stored indices.
    ///
    /// # Errors
    /// A [`RegionError`] for a region of the wrong size or alignment.
    pub fn new(region: R) -> Result<Self, RegionError> {
        Ok(ShmWriter(ring::Writer::new(RegionMemory::new(region)?)))
    }

    /// Reserves a message and returns its payload to fill; `None` when the
    /// reader has not freed enough room, or the message can never fit.
    #[inline]
    pub fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.0.alloc(msg_type, payload_len)
    }

    /// The payload of the message allocated and not yet pushed.
    #[inline]
    pub fn pending_payload(&mut self) -> Option<&mut [u8]> {
        self.0.pending_payload()
    }

    /// Publishes the last allocated message.
    #[inline]
    pub fn push(&mut self) {
        self.0.push()
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

    /// Empties the queue (only while the reader is not reading).
    pub fn reset(&mut self) {
        ring::reset(self.0.memory());
        self.0.reload();
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.0.memory().capacity
    }

    /// The region.
    pub fn region(&self) -> &R {
        self.0.memory().region()
    }
}

impl<R: Region> ShmReader<R> {
    /// The reader of the queue in `region`, taking up its stored indices.
    ///
    /// # Errors
    /// A [`RegionError`] for a region of the wrong size or alignment.
    pub fn new(region: R) -> Result<Self, RegionError> {
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
    #[inline]
    pub fn pop(&mut self) {
        self.0.pop()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes up the indices stored in the region again.
    pub fn reload(&mut self) {
        self.0.reload()
    }

    /// Messages consumed since the queue was (re)set, mod 2^31; exact
    /// after a crash at any instruction.
    pub fn popped(&self) -> u32 {
        self.0.popped()
    }

    /// Empties the queue (only while the writer is not writing).
    pub fn reset(&mut self) {
        ring::reset(self.0.memory());
        self.0.reload();
    }

    /// The region.
    pub fn region(&self) -> &R {
        self.0.memory().region()
    }
}

/// Maps the shared-memory object at `path` for a queue of `capacity`
/// bytes, creating it (mode `opts.mode`, full size reserved) if needed.
///
/// # Errors
/// A [`FileError`] naming the object: no /dev/shm, no space, wrong size,
/// or a capacity that is not a power of two.
pub fn map_shm(path: &Path, capacity: usize, opts: MapOptions) -> Result<Mapping, FileError> {
    check_capacity(capacity).map_err(|e| FileError::corrupt(path, e.to_string()))?;
    // The writer and the reader (often another process) both map the
    // object: no exclusive lock.
    Mapping::open(
        path,
        region_size(capacity),
        MapOptions {
            lock: false,
            ..opts
        },
    )
}

impl ShmWriter<Mapping> {
    /// Maps the object at `path` (see [`map_shm`]) and writes to it.
    ///
    /// # Errors
    /// As [`map_shm`].
    pub fn open_file(path: &Path, capacity: usize, opts: MapOptions) -> Result<Self, FileError> {
        let m = map_shm(path, capacity, opts)?;
        ShmWriter::new(m).map_err(|e| FileError::corrupt(path, e.to_string()))
    }
}

impl ShmReader<Mapping> {
    /// Maps the object at `path` (see [`map_shm`]) and reads from it.
    ///
    /// # Errors
    /// As [`map_shm`].
    pub fn open_file(path: &Path, capacity: usize, opts: MapOptions) -> Result<Self, FileError> {
        let m = map_shm(path, capacity, opts)?;
        ShmReader::new(m).map_err(|e| FileError::corrupt(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cap: usize) -> (ShmWriter<Arc<HeapRegion>>, ShmReader<Arc<HeapRegion>>) {
        let r = Arc::new(HeapRegion::new(cap).unwrap());
        (
            ShmWriter::new(r.clone()).unwrap(),
            ShmReader::new(r).unwrap(),
        )
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
        let reg = w.region().clone();
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
        let reg = r.region().clone();
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

    /// Two threads, variable sizes, every byte checked. Under Miri this is
    /// the data-race check of the SYNC POINTs (Miri flags any payload read
    /// that is not ordered after its write by an acquire/release pair).
    #[test]
    fn two_threads_every_byte() {
        let n: u32 = if cfg!(miri) { 300 } else { 200_000 };
        let (mut w, mut r) = pair(1024);
        let t = std::thread::spawn(move || {
            for i in 0..n {
                let len = (i as usize * 37) % 200;
                loop {
                    if let Some(p) = w.alloc(i as u16, len) {
                        for (j, b) in p.iter_mut().enumerate() {
                            *b = (i as usize + j) as u8;
                        }
                        w.push();
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
        let reg = w.region().clone();
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
        assert!(HeapRegion::new(1000).is_err());
        assert!(HeapRegion::new(32).is_err());
        assert!(HeapRegion::new(64).is_ok());
    }
}
