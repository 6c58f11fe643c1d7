//! The index protocol of the single-producer single-consumer
//! variable-length queue (`docs/protocol.md` §5), generic over its memory.
//!
//! These files depend on nothing of the crate but `super::sync` (std
//! atomics in the library, loom's in `tests/loom_shm.rs`, which includes
//! them), so loom checks the very code the library runs. The writer's side
//! is `writer.rs`, the reader's `reader.rs`; what both rely on is here.
//!
//! Layout (capacity `Q`, a power of two, in 64-byte blocks): the blocks, then
//! `write_idx` at `Q`, the writer's cached `read_idx` at `Q + 4`, `read_idx`
//! at `Q + 128`. Indices count blocks, grow forever and wrap as u32. A
//! message starts at a block with its 8-byte header (`size` u16 LE,
//! `msg_type` u16 LE, `ack_seq` u32 unused) and takes `ceil(size / 64)`
//! blocks; a header of size 0 means "skip to slot 0".
//!
//! # The stamped fast path (between two tcpshm peers)
//!
//! The writer always stamps a message with its starting index in the
//! header's `ack_seq` field, storing the whole header word last, with
//! Release. Once it has *announced* that it stamps (the word at `Q + 8`,
//! which the C++ queue never touches), a reader that knows the announcement
//! is from this session waits on "stamp == my read index" in the block it
//! reads next: one cache line per message instead of two (`write_idx`,
//! then the block). `write_idx` is still advanced as in v1, so a v1 reader
//! (a C++ peer) sees the same protocol. The rules that keep a block of an
//! earlier lap, or bytes of a payload, from ever looking like a stamped
//! header are in `Writer::announce` and `Writer::push`; README's
//! "Shared-memory fast path" section states them byte by byte.
//!
//! # Trust
//!
//! The other side may be another process, or a hostile one: every index
//! and header read from memory is read once, validated, and then only our
//! own copy is used. A block header is one aligned 8-byte word, read and
//! written atomically, so a peer that rewrites it while we look is a value
//! we validate, never a torn read. The payload bytes are the application's
//! and are never interpreted here.

mod reader;
mod writer;

use super::sync::{crash_point, AtomicU32, AtomicU64, Ordering};

pub(crate) use self::reader::{Peeked, Reader};
pub(crate) use self::writer::Writer;

/// Bytes in a block.
pub(crate) const BLOCK: usize = 64;
const HDR: usize = 8;

/// The memory of one queue.
///
/// # Safety
/// Implementors guarantee that `blocks()` points to `capacity()` bytes valid
/// for reads and writes for as long as `self` lives, aligned to 8, that
/// `capacity()` is a power of two and a multiple of [`BLOCK`] no larger than
/// `2^31 * 64`, that the atomics live as long as `self`, and that
/// `header(b)` is the 8-byte word at the start of block `b` (whose payload
/// bytes follow it in `blocks()`).
pub(super) unsafe trait QueueMemory {
    /// `Q`: bytes of blocks.
    fn capacity(&self) -> usize;
    /// The header word of block `b` (`b` below the block count).
    fn header(&self, b: u32) -> &AtomicU64;
    /// Called before this side reads payload bytes `[off, off + len)` of
    /// the blocks, and again before it gives them back: the loom test
    /// records the accesses, so a weakened ordering shows as a race.
    #[inline(always)]
    fn track_read(&self, _off: usize, _len: usize) {}
    /// As [`track_read`](Self::track_read), for writes.
    #[inline(always)]
    fn track_write(&self, _off: usize, _len: usize) {}
    /// Index one past the last published block.
    fn write_idx(&self) -> &AtomicU32;
    /// The writer's cached copy of `read_idx` (the writer's only).
    fn read_idx_cache(&self) -> &AtomicU32;
    /// Index of the first block not yet consumed.
    fn read_idx(&self) -> &AtomicU32;
    /// Start of the blocks.
    fn blocks(&self) -> *mut u8;
    /// The writer's commit record: the index it is about to publish, its
    /// message count and whether that publication adds a message, stored
    /// before the index (so counts are exact after a crash); bytes the C++
    /// queue leaves unused.
    fn write_record(&self) -> &AtomicU64;
    /// The reader's commit record; unused by the C++ queue.
    fn read_record(&self) -> &AtomicU64;
    /// The writer's fast-path announcement (`MAGIC << 32 | from`); bytes
    /// the C++ queue leaves unused, in `write_idx`'s cache line.
    fn announce(&self) -> &AtomicU64;
    /// A hint that block `b` will be read soon: no access, no effect on
    /// what any load returns.
    #[inline(always)]
    fn prefetch(&self, _b: u32) {}
    /// A hint that block `b` (below the block count), just written, is for
    /// the other side to read: move its line towards the cache both cores
    /// share. No access, no effect on what any load returns.
    #[inline(always)]
    fn demote(&self, _b: u32) {}
}

/// A side's commit record: the index it is about to publish, its message
/// count after that, and whether that publication adds a message (a wrap
/// marker alone does not). Stored before the index itself, so after a
/// crash the count is exact: if the stored index equals the record's, the
/// publication happened; otherwise the count is one `delta` less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    idx: u32,
    count: u32,
    delta: u32,
}

impl Record {
    fn pack(self) -> u64 {
        (self.idx as u64) << 32 | ((self.count & 0x7fff_ffff) << 1 | self.delta) as u64
    }

    fn unpack(v: u64) -> Record {
        Record {
            idx: (v >> 32) as u32,
            count: (v as u32) >> 1,
            delta: v as u32 & 1,
        }
    }

    /// The committed count given the index actually stored.
    fn count_at(v: u64, stored_idx: u32) -> u32 {
        let r = Record::unpack(v);
        if r.idx == stored_idx {
            r.count
        } else {
            r.count.wrapping_sub(r.delta) & 0x7fff_ffff
        }
    }

    /// Stores the record for publishing `idx` with count `count`.
    #[inline(always)]
    fn store(at: &AtomicU64, idx: u32, count: u32, delta: u32) {
        // Relaxed: ordered before the index store by that store's Release
        // (same thread); a reader of the count (after a crash, or this
        // side) reads it together with the index.
        at.store(
            Record {
                idx,
                count: count & 0x7fff_ffff,
                delta,
            }
            .pack(),
            Ordering::Relaxed,
        );
    }
}

/// What a reader found that an honest writer never writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corrupt {
    /// `write_idx` is more than the capacity ahead of `read_idx`.
    Index {
        /// Local read index.
        read: u32,
        /// Published write index.
        write: u32,
    },
    /// A header whose size is impossible at this position.
    Size {
        /// Block index of the header.
        at: u32,
        /// Its size field.
        size: u16,
    },
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Corrupt::Index { read, write } => {
                write!(
                    f,
                    "shm queue indices impossible: read {read}, write {write}"
                )
            }
            Corrupt::Size { at, size } => {
                write!(
                    f,
                    "shm queue header at block {at} has impossible size {size}"
                )
            }
        }
    }
}

fn blk_cnt<M: QueueMemory>(m: &M) -> u32 {
    (m.capacity() / BLOCK) as u32
}

/// A block header: `size` u16, `msg_type` u16, `ack_seq` u32 (the stamp),
/// little-endian in one word.
fn header_word(size: u16, msg_type: u16, stamp: u32) -> u64 {
    size as u64 | (msg_type as u64) << 16 | (stamp as u64) << 32
}

/// The stamp field of a header word.
fn stamp_of(v: u64) -> u32 {
    (v >> 32) as u32
}

/// What the writer stores in the header of the block at index `idx`, the
/// next place it will write, before a reader can get there: a stamp that
/// can never match a reader waiting at that block (`!idx` is in another
/// slot: `!idx & mask == mask - (idx & mask)`, never `idx & mask` for an odd
/// mask).
fn cleared_word(idx: u32) -> u64 {
    header_word(0, 0, !idx)
}

/// High half of the announcement word: "this writer stamps".
const MAGIC: u32 = 0x7473_6631; // "1fst"

/// Empty fast polls between two checks that the writer still stamps.
const FALLBACK_POLLS: u32 = 1 << 12;

/// Blocks past a publication whose headers the writer clears after it.
const CLEAR_AHEAD: u32 = 16;

/// Cleared blocks left past a publication below which the writer clears
/// again, up to [`CLEAR_AHEAD`]: after every publication at least this
/// many are cleared, so a message of up to this many blocks finds its end
/// cleared and stores nothing before its stamp.
const CLEAR_REFILL: u32 = 8;

/// Empty v1 `ready` polls between two looks at the announcement.
const FAST_CHECK_POLLS: u32 = 64;

/// What a held stamp (see `Writer::push_more`) is XORed with: never the
/// index itself, nor the cleared form `!idx`.
const HELD: u32 = 1 << 31;

/// Blocks a held batch spans before `push_more` lets it go anyway: a
/// fast-path reader then reads a run of blocks that the writer no longer
/// touches, without waiting for a flush.
const HOLD_MAX: u32 = 32;

/// Blocks of a publication that [`Writer::hand_over`] demotes at most
/// (1 KiB: a reader loads the lines of a larger message in parallel anyway).
const HANDOVER_MAX: u32 = 16;

/// `(size, msg_type)` of a header word.
fn fields(v: u64) -> (u16, u16) {
    (v as u16, (v >> 16) as u16)
}

/// `(size, msg_type)` of block `b`'s header, read once.
fn read_header<M: QueueMemory>(m: &M, b: u32) -> (u16, u16) {
    // Relaxed: the header was published by the write_idx store we loaded
    // with Acquire (SYNC POINT msg-published); a peer rewriting it now
    // gives a value we validate, not a race.
    fields(m.header(b).load(Ordering::Relaxed))
}

/// Empties the queue in `mem`: all three indices to 0. Only valid while
/// neither end is in use (at login, before either side polls); each end
/// then calls `reload`.
pub(super) fn reset<M: QueueMemory>(mem: &M) {
    // Release: the zeroed indices are published by the login exchange that
    // follows; Release keeps them ordered before it.
    mem.write_idx().store(0, Ordering::Release);
    mem.read_idx_cache().store(0, Ordering::Release);
    mem.read_idx().store(0, Ordering::Release);
    mem.write_record().store(0, Ordering::Release);
    mem.read_record().store(0, Ordering::Release);
    mem.announce().store(0, Ordering::Release);
}
