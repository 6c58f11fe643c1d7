//! The index protocol of the single-producer single-consumer
//! variable-length queue (`docs/protocol.md` §5), generic over its memory.
//!
//! This file depends on nothing of the crate but `super::sync` (std atomics
//! in the library, loom's in `tests/loom_shm.rs`, which includes this file),
//! so loom checks the very code the library runs.
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

use super::sync::{AtomicU32, AtomicU64, Ordering};

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

/// The message allocated and not yet pushed: our own copy of where it is,
/// never read back from the ring.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Index of its header block (slot 0 after a rewind).
    start: u32,
    blks: u32,
    size: u16,
    msg_type: u16,
    /// The slot of the wrap marker to publish with it, after a rewind.
    marker: Option<u32>,
    /// Byte offset of the payload in the blocks.
    off: usize,
    len: usize,
}

/// A batch held back from fast-path readers (`Writer::push_more`): the
/// first place of the batch a reader stops at, and the stamped header word
/// that goes there when the batch is let go.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// Index of that place (its slot is `at & mask`).
    at: u32,
    /// The header word with its stamp.
    word: u64,
}

/// The producing end.
#[derive(Debug)]
pub(super) struct Writer<M> {
    mem: M,
    mask: u32,
    blk_cnt: u32,
    /// Local copy of write_idx; we are its only writer.
    write_idx: u32,
    read_cache: u32,
    /// The message allocated and not yet pushed.
    pending: Option<Pending>,
    /// Messages published since the queue was (re)set, mod 2^31.
    pushed: u32,
    /// Wrap markers published alone (see `publish_marker`).
    lone_markers: u64,
    /// Whether this writer may announce the fast path.
    fast: bool,
    /// Whether the announcement in memory is ours: every publication then
    /// clears the block after it and keeps one block free.
    stamping: bool,
    /// The announcement word we stored.
    announced: u64,
    /// While stamping: every index from the next publication's end up to
    /// this one (exclusive) holds a header we cleared after its last write.
    cleared_to: u32,
    /// The batch `push_more` holds back from fast-path readers, if any.
    held: Option<Held>,
    /// The blocks of the last publication not yet handed over
    /// (`hand_over`): its first slot and how many (0: none). A message
    /// never crosses the end of the ring, so `slot + count <= blk_cnt`.
    handover: (u32, u32),
    /// Blocks of a publication to hand over: [`HANDOVER_MAX`], or 0 when
    /// turned off.
    handover_max: u32,
    /// Something was published since the last `settle`: a held batch or
    /// blocks to hand over may be waiting (a held batch implies it).
    unsettled: bool,
}

impl<M: QueueMemory> Writer<M> {
    /// A writer over `mem`, taking up the indices stored there.
    pub(super) fn new(mem: M) -> Self {
        let blk_cnt = blk_cnt(&mem);
        let mut w = Writer {
            mem,
            mask: blk_cnt - 1,
            blk_cnt,
            write_idx: 0,
            read_cache: 0,
            pending: None,
            pushed: 0,
            lone_markers: 0,
            fast: true,
            stamping: false,
            announced: 0,
            cleared_to: 0,
            held: None,
            handover: (0, 0),
            handover_max: HANDOVER_MAX,
            unsettled: false,
        };
        w.reload();
        w
    }

    /// Allows (the default) or forbids the fast path. Forbidden, the
    /// writer never announces, so readers stay on v1.
    pub(super) fn set_fast(&mut self, fast: bool) {
        self.release();
        self.fast = fast;
        self.stamping = false;
    }

    /// Turns [`hand_over`](Self::hand_over) on (the default) or off.
    pub(super) fn set_hand_over(&mut self, on: bool) {
        self.handover_max = if on { HANDOVER_MAX } else { 0 };
        self.handover = (0, 0);
    }

    #[cfg(any(test, fuzzing))]
    /// Whether this writer's announcement stands (readers may wait on
    /// stamps).
    pub(super) fn stamping(&self) -> bool {
        self.stamping
    }

    /// Takes up the indices stored in memory again (after the peer or a
    /// reset changed them while this side was not writing).
    pub(super) fn reload(&mut self) {
        self.release();
        // Acquire: this runs at login, after a peer may have reset the
        // queue; the login exchange orders it, Acquire costs nothing here.
        let mut write = self.mem.write_idx().load(Ordering::Acquire);
        let read = self.mem.read_idx().load(Ordering::Acquire);
        // Relaxed: only this side writes the record.
        let rec = self.mem.write_record().load(Ordering::Relaxed);
        let ahead = read.wrapping_sub(write);
        if ahead != 0 && ahead <= self.blk_cnt && Record::unpack(rec).idx == read {
            // A writer died between stamping a publication and storing
            // write_idx, and a fast-path reader consumed it: the message
            // was complete (the stamp is stored last), so it counts as
            // published. Roll write_idx forward to where the record says.
            write = read;
            self.mem.write_idx().store(write, Ordering::Release);
        }
        self.write_idx = write;
        self.read_cache = read;
        self.pending = None;
        self.stamping = false;
        self.cleared_to = write;
        self.handover = (0, 0);
        self.pushed = Record::count_at(rec, self.write_idx);
    }

    /// Messages published since the queue was (re)set, mod 2^31; exact
    /// after a crash at any point.
    pub(super) fn pushed(&self) -> u32 {
        self.pushed
    }

    /// Blocks published and not yet released by the reader now (one load
    /// of `read_idx`: for statistics, not for the hot path).
    pub(super) fn in_use(&self) -> u32 {
        // Relaxed: a number for display, nothing is read because of it.
        let read = self.mem.read_idx().load(Ordering::Relaxed);
        self.write_idx.wrapping_sub(read).min(self.blk_cnt)
    }

    /// Blocks in the ring.
    pub(super) fn blocks(&self) -> u32 {
        self.blk_cnt
    }

    #[cfg(any(test, fuzzing))]
    /// Wrap markers this writer published alone, because a message that
    /// had to start at slot 0 did not fit yet.
    pub(super) fn lone_markers(&self) -> u64 {
        self.lone_markers
    }

    /// Loads `read_idx` into the cache.
    fn reload_read(&mut self) {
        // SYNC POINT block-released: Acquire pairs with the Release store
        // of read_idx in Reader::release, so the reader's reads of the
        // blocks it freed happen before we overwrite them.
        self.read_cache = self.mem.read_idx().load(Ordering::Acquire);
        // Relaxed: only this writer reads the cache; it is kept in the
        // region for layout compatibility with the C++ queue.
        self.mem
            .read_idx_cache()
            .store(self.read_cache, Ordering::Relaxed);
        if let Some(h) = self.held {
            if (self.read_cache.wrapping_sub(h.at) as i32) > 0 {
                // A v1 reader, which does not wait on stamps, consumed the
                // held message: its block is free and may be written again
                // from now on, so the held word must never be stored there.
                self.held = None;
            }
        }
    }

    /// Whether blocks up to index `end` (exclusive) are free, keeping the
    /// block at `end` free too while stamping; reloads `read_idx` if the
    /// cached one says no.
    #[inline]
    fn fits(&mut self, end: u32) -> bool {
        let limit = self.blk_cnt - self.stamping as u32;
        if end.wrapping_sub(self.read_cache) <= limit {
            return true;
        }
        self.reload_read();
        end.wrapping_sub(self.read_cache) <= limit
    }

    /// The stamp for a header at `slot`, index `idx`: the index itself; a
    /// writer with the fast path forbidden leaves the field as it was, as
    /// the C++ writer does (so it is a faithful stand-in for one in tests).
    fn stamp(&self, slot: u32, idx: u32) -> u32 {
        if self.fast {
            idx
        } else {
            // Relaxed: our own free block.
            stamp_of(self.mem.header(slot).load(Ordering::Relaxed))
        }
    }

    /// Clears the header of the block at `idx`, the next place we write,
    /// which is free: a reader waiting there must not find its stamp until
    /// we publish. Ordered before the Release store that lets a reader get
    /// to `idx` (SYNC POINT msg-stamped or announced).
    #[inline]
    fn clear(&self, idx: u32) {
        // Relaxed: see above.
        self.mem
            .header(idx & self.mask)
            .store(cleared_word(idx), Ordering::Relaxed);
    }

    /// Before a publication ending at `end` lets a reader get there: the
    /// header at `end` must be cleared. Usually `clear_ahead` did it after
    /// an earlier publication; else now (the block is free: `alloc` kept
    /// one block after the message free).
    #[inline]
    fn ensure_cleared(&mut self, end: u32) {
        if (self.cleared_to.wrapping_sub(end) as i32) <= 0 {
            self.clear(end);
            self.cleared_to = end.wrapping_add(1);
        }
    }

    /// After a publication ending at `end`: clears the headers of the next
    /// few free blocks, so the next publications find their end already
    /// cleared and the stores (cache misses on blocks last used a lap ago)
    /// are not in front of their stamps. Refills only once fewer than
    /// [`CLEAR_REFILL`] are left, then up to [`CLEAR_AHEAD`] past `end`
    /// in one run: most publications only compare.
    #[inline(always)]
    fn clear_ahead(&mut self, end: u32) {
        if (self.cleared_to.wrapping_sub(end) as i32) < CLEAR_REFILL as i32 {
            self.refill_cleared(end);
        }
    }

    /// The refill of [`clear_ahead`](Self::clear_ahead), out of line: one
    /// publication in several gets here.
    ///
    /// It also checks that our announcement still stands: the reader
    /// clears it when its session starts, and the next `alloc` announces
    /// again once `stamping` is off. Here, not in every `alloc`: the word
    /// shares its cache line with `write_idx`, which a C++ reader spins on,
    /// so loading it often missed (perf put 62% of the C++-client echo
    /// handler's samples on that load). A reader whose announcement is
    /// late reads on v1 meanwhile, as it does until it finds one.
    #[inline(never)]
    fn refill_cleared(&mut self, end: u32) {
        // Relaxed: the word is ours; the reader only clears it when a
        // session starts (and only an announcement stored after that, with
        // Release, puts it on the fast path).
        if self.mem.announce().load(Ordering::Relaxed) != self.announced {
            self.stamping = false;
            return;
        }
        let ahead = self.cleared_to.wrapping_sub(end) as i32;
        let from = if ahead > 0 { self.cleared_to } else { end };
        // Free blocks only: before read_idx + capacity.
        let free = self
            .read_cache
            .wrapping_add(self.blk_cnt)
            .wrapping_sub(from) as i32;
        let want = end.wrapping_add(CLEAR_AHEAD).wrapping_sub(from) as i32;
        let n = want.min(free).max(0) as u32;
        for k in 0..n {
            self.clear(from.wrapping_add(k));
        }
        self.cleared_to = from.wrapping_add(n);
    }

    /// Announces the fast path from `write_idx` on, if the block there is
    /// free: clears its header, then stores the announcement. From then on
    /// every publication clears the block after it before storing its
    /// stamp, and `alloc` keeps that block free. So every index a reader
    /// can stop at from `from` on holds either a cleared header or the
    /// stamped header of the message that starts there: never a header of
    /// an earlier lap, nor payload bytes.
    fn announce(&mut self) {
        self.release();
        self.stamping = false;
        self.reload_read();
        if self.write_idx.wrapping_sub(self.read_cache) >= self.blk_cnt {
            return; // full: try again at the next alloc
        }
        self.clear(self.write_idx);
        self.cleared_to = self.write_idx.wrapping_add(1);
        let word = (MAGIC as u64) << 32 | self.write_idx as u64;
        // SYNC POINT announced: Release so the cleared header is visible
        // to a reader that loads the announcement with Acquire (in
        // Reader::try_fast).
        self.mem.announce().store(word, Ordering::Release);
        self.announced = word;
        self.stamping = true;
    }

    /// Reserves a message of type `msg_type` with `payload_len` bytes of
    /// payload and returns the payload to fill. `None` if the reader has
    /// not freed enough blocks, or if the message can never fit (larger
    /// than the capacity, less one block on the fast path, or than a u16
    /// size).
    #[inline(always)]
    pub(super) fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.pending = None;
        // Fields only: whether the announcement still stands is checked
        // by `refill_cleared`, out of line (see there).
        if self.fast && !self.stamping {
            self.announce();
        }
        let size = HDR + payload_len;
        if size > u16::MAX as usize {
            return None;
        }
        let blks = size.div_ceil(BLOCK) as u32;
        if blks > self.blk_cnt - self.stamping as u32 {
            return None;
        }
        let slot = self.write_idx & self.mask;
        let to_end = self.blk_cnt - slot;
        let rewind = blks > to_end;
        let start = if rewind {
            self.write_idx.wrapping_add(to_end)
        } else {
            self.write_idx
        };
        if !self.fits(start.wrapping_add(blks)) {
            if rewind {
                self.publish_marker(slot, to_end);
            }
            // A held batch keeps the reader from freeing room: let it go.
            self.release();
            return None;
        }
        let first = start & self.mask;
        // The message starts at slot 0 after a rewind, else at a slot with
        // `blks` blocks before the end (checked above): it ends inside the
        // ring, and the blocks are free (checked against read_idx). Its
        // header (and the marker) are stored by push.
        let p = Pending {
            start,
            blks,
            size: size as u16,
            msg_type,
            marker: rewind.then_some(slot),
            off: first as usize * BLOCK + HDR,
            len: payload_len,
        };
        self.pending = Some(p);
        self.mem.track_write(p.off, p.len);
        Some(self.payload(p))
    }

    #[inline]
    fn payload(&mut self, p: Pending) -> &mut [u8] {
        // SAFETY: `p` is our own record of an allocation whose payload
        // `[off, off + len)` lies inside the blocks (alloc checked that the
        // message ends before the end of the ring). The blocks are free and
        // unpublished, so the reader does not touch them until push (SYNC
        // POINTs block-released, msg-published and msg-stamped), and
        // `&mut self` makes the slice the only one this writer gives out.
        unsafe { std::slice::from_raw_parts_mut(self.mem.blocks().add(p.off), p.len) }
    }

    /// The payload of the message allocated and not yet pushed.
    #[inline]
    pub(super) fn pending_payload(&mut self) -> Option<&mut [u8]> {
        let p = self.pending?;
        Some(self.payload(p))
    }

    /// A message that must start at slot 0 does not fit yet: publish the
    /// wrap marker alone (if the blocks up to the end are free), so the
    /// reader skips the tail and the next attempt starts at slot 0.
    /// Without this, a message of more than half the ring could be refused
    /// forever, even on an empty queue. The C++ reader accepts a marker
    /// with nothing after it.
    fn publish_marker(&mut self, slot: u32, to_end: u32) {
        let end = self.write_idx.wrapping_add(to_end);
        if !self.fits(end) {
            return;
        }
        // Before write_idx moves (see `publish`): a held batch goes first.
        self.release();
        if self.stamping {
            self.ensure_cleared(end);
        }
        self.pending = None;
        self.lone_markers += 1;
        Record::store(self.mem.write_record(), end, self.pushed, 0);
        // SYNC POINT msg-stamped (the marker is a message to skip).
        self.mem.header(slot).store(
            header_word(0, 0, self.stamp(slot, self.write_idx)),
            Ordering::Release,
        );
        self.write_idx = end;
        // SYNC POINT msg-published.
        self.mem.write_idx().store(end, Ordering::Release);
        if self.stamping {
            self.clear_ahead(end);
        }
    }

    /// Publishes the message of the last [`alloc`](Self::alloc), and any
    /// batch [`push_more`](Self::push_more) holds; without one it does
    /// nothing.
    ///
    /// Order: clear the block after the message (fast path), store the
    /// commit record, the header with its stamp (then the wrap marker),
    /// and `write_idx`. A writer killed anywhere in between exposes either
    /// nothing or the whole message.
    #[inline(always)]
    pub(super) fn push(&mut self) {
        self.publish(false);
    }

    /// Publishes the message of the last [`alloc`](Self::alloc) as
    /// [`push`](Self::push) does (commit record, header, `write_idx`: a v1
    /// reader sees it, and it survives this process), except that on the
    /// fast path the stamp a reader waits on at the start of a batch is
    /// held back: the header goes there with the stamp XORed with
    /// [`HELD`], and the stamped word follows with the next `push`,
    /// [`release`](Self::release), an `alloc` that finds no room, or once
    /// the batch spans [`HOLD_MAX`] blocks. Later messages of the batch are
    /// stamped as usual. So a fast-path reader that has caught up waits on
    /// one line while the writer fills the others, then reads the batch as
    /// a run, instead of taking each block's line from the writer while the
    /// writer is still writing the next.
    #[inline(always)]
    pub(super) fn push_more(&mut self) {
        self.publish(true);
    }

    /// Lets a batch held by [`push_more`](Self::push_more) go: stores the
    /// stamped header word at its start. Without one it does nothing.
    #[inline(always)]
    pub(super) fn release(&mut self) {
        // Not `take`: an idle poll calls this, and must not store.
        if let Some(h) = self.held {
            self.held = None;
            // SYNC POINT msg-stamped (a held batch): Release so every
            // message of the batch, stored before, is visible to a reader
            // that loads this header with Acquire (Reader::front_fast);
            // the messages after it were stamped with Release as well.
            self.mem
                .header(h.at & self.mask)
                .store(h.word, Ordering::Release);
        }
    }

    /// Hands the blocks of the last publication (up to [`HANDOVER_MAX`])
    /// to the reader's side of the cache, once; see
    /// [`ShmWriter::settle`](crate::shm_queue::ShmWriter::settle).
    #[inline(always)]
    pub(super) fn hand_over(&mut self) {
        let (first, blks) = self.handover;
        if blks != 0 {
            self.handover.1 = 0;
            for b in first..first + blks {
                self.mem.demote(b);
            }
        }
    }

    /// For a caller with nothing more to write for now (a poll): lets a
    /// held batch go ([`release`](Self::release)) and hands the last
    /// publication over ([`hand_over`](Self::hand_over)); one compare
    /// when nothing was published since the last call.
    #[inline(always)]
    pub(super) fn settle(&mut self) {
        debug_assert!(self.unsettled || self.held.is_none());
        if self.unsettled {
            self.unsettled = false;
            self.release();
            self.hand_over();
        }
    }

    #[cfg(any(test, fuzzing))]
    /// Whether [`push_more`](Self::push_more) holds a batch back.
    pub(super) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Forgets the held batch without letting it go, as a writer killed
    /// with kill -9 does (tests: then dropping the writer leaks nothing).
    #[cfg(test)]
    pub(crate) fn abandon_batch(&mut self) {
        self.held = None;
    }

    /// Stores the header word `word` at index `at`, where a reader may
    /// stop next: stamped, or (`hold`, no batch held yet) held back.
    #[inline(always)]
    fn store_stop(&mut self, at: u32, word: u64, hold: bool) {
        let slot = at & self.mask;
        if hold && self.stamping && self.held.is_none() {
            self.held = Some(Held { at, word });
            // Relaxed: a reader acts on this word only through the
            // write_idx store below (Release, SYNC POINT msg-published; v1
            // reads the size and type), or after `release` stores the
            // stamped word with Release.
            let held = word ^ (u64::from(HELD) << 32);
            self.mem.header(slot).store(held, Ordering::Relaxed);
        } else {
            // SYNC POINT msg-stamped: Release so the payload written since
            // alloc (and the cleared block after it) is visible before the
            // stamp; pairs with the Acquire load of the header in
            // Reader::front_fast and Reader::ready.
            self.mem.header(slot).store(word, Ordering::Release);
        }
    }

    #[inline(always)]
    fn publish(&mut self, hold: bool) {
        if !hold {
            // A push lets a held batch go (before its own message: the
            // batch was published already).
            self.release();
        }
        if let Some(p) = self.pending.take() {
            self.mem.track_write(p.off, p.len);
            let end = p.start.wrapping_add(p.blks);
            if self.stamping {
                self.ensure_cleared(end);
            }
            self.pushed = self.pushed.wrapping_add(1) & 0x7fff_ffff;
            Record::store(self.mem.write_record(), end, self.pushed, 1);
            let first = p.start & self.mask;
            let word = header_word(p.size, p.msg_type, self.stamp(first, p.start));
            match p.marker {
                None => self.store_stop(p.start, word, hold),
                Some(slot) => {
                    // SYNC POINT msg-stamped, as in store_stop.
                    self.mem.header(first).store(word, Ordering::Release);
                    // After the header at slot 0, so a reader that follows
                    // the marker finds that header stamped: the marker is
                    // where a reader stops.
                    let marker = header_word(0, 0, self.stamp(slot, self.write_idx));
                    self.store_stop(self.write_idx, marker, hold);
                }
            }
            if let Some(h) = self.held {
                // A batch that reaches HOLD_MAX blocks goes before
                // write_idx. So while write_idx is less than HOLD_MAX past
                // a held header, its writer is alive or died holding it;
                // further, a reader knows the writer that held it is gone
                // (`Reader::fallback_check`).
                if end.wrapping_sub(h.at) >= HOLD_MAX {
                    self.release();
                }
            }
            self.write_idx = end;
            self.handover = (first, p.blks.min(self.handover_max));
            self.unsettled = true;
            // SYNC POINT msg-published: Release so the header and payload
            // are visible before the index that publishes them; pairs with
            // the Acquire load of write_idx in Reader::available and
            // Reader::ready.
            self.mem.write_idx().store(end, Ordering::Release);
            if self.stamping {
                // After the stamp: for the next publications.
                self.clear_ahead(end);
            }
        }
    }

    /// The memory.
    pub(super) fn memory(&self) -> &M {
        &self.mem
    }
}

/// The message the last `front` returned: our own validated copy.
#[derive(Clone, Copy, Debug)]
struct Current {
    /// Index one past the message (what pop publishes).
    end: u32,
    msg_type: u16,
    /// Byte offset of the payload in the blocks.
    off: usize,
    len: usize,
}

/// The consuming end.
#[derive(Debug)]
pub(super) struct Reader<M> {
    mem: M,
    mask: u32,
    blk_cnt: u32,
    /// Local copy of read_idx; we are its only writer.
    read_idx: u32,
    write_cache: u32,
    /// The message returned by the last front, until popped.
    cur: Option<Current>,
    /// Messages consumed since the queue was (re)set, mod 2^31.
    popped: u32,
    /// Whether this reader may take the fast path.
    fast_allowed: bool,
    /// On the fast path: waiting on stamps, not on write_idx.
    fast: bool,
    /// The writer's stamps went missing this session: v1 until reload.
    fast_failed: bool,
    /// Empty fast polls since the last fallback check.
    idle: u32,
}

impl<M: QueueMemory> Reader<M> {
    /// A reader over `mem`, taking up the indices stored there.
    pub(super) fn new(mem: M) -> Self {
        let blk_cnt = blk_cnt(&mem);
        let mut r = Reader {
            mem,
            mask: blk_cnt - 1,
            blk_cnt,
            read_idx: 0,
            write_cache: 0,
            cur: None,
            popped: 0,
            fast_allowed: true,
            fast: false,
            fast_failed: false,
            idle: 0,
        };
        r.reload();
        r
    }

    /// Allows (the default) or forbids the fast path.
    pub(super) fn set_fast(&mut self, fast: bool) {
        self.fast_allowed = fast;
        self.fast = false;
        // The cache went stale while on the fast path: reload it next.
        self.write_cache = self.read_idx;
    }

    /// Whether this reader waits on stamps (the fast path) now.
    pub(super) fn is_fast(&self) -> bool {
        self.fast
    }

    /// Takes up the indices stored in memory again, and starts a session:
    /// back to v1, and the writer's announcement is cleared, so only an
    /// announcement made after this (by the writer of this session) can
    /// put this reader on the fast path.
    pub(super) fn reload(&mut self) {
        // Acquire: as in Writer::reload.
        self.read_idx = self.mem.read_idx().load(Ordering::Acquire);
        self.write_cache = self.read_idx;
        self.cur = None;
        // Relaxed: only this side writes the record.
        self.popped = Record::count_at(
            self.mem.read_record().load(Ordering::Relaxed),
            self.read_idx,
        );
        self.fast = false;
        self.fast_failed = false;
        self.idle = 0;
        if self.fast_allowed {
            // Relaxed: this only makes the word stale; the writer stores a
            // new announcement with Release when it sees it cleared.
            self.mem.announce().store(0, Ordering::Relaxed);
        }
    }

    /// Messages consumed since the queue was (re)set, mod 2^31; exact
    /// after a crash at any point.
    pub(super) fn popped(&self) -> u32 {
        self.popped
    }

    /// Blocks published and not consumed, from `from`: loads write_idx
    /// when the cached one shows nothing.
    fn available(&mut self, from: u32) -> Result<u32, Corrupt> {
        if from == self.write_cache {
            // As in `ready`: the block at `from` is what we read next.
            self.mem.prefetch(from & self.mask);
            // SYNC POINT msg-published: Acquire pairs with the Release store
            // in Writer::push, so the message bytes are visible.
            self.write_cache = self.mem.write_idx().load(Ordering::Acquire);
        }
        let avail = self.write_cache.wrapping_sub(from);
        if avail > self.blk_cnt {
            return Err(Corrupt::Index {
                read: from,
                write: self.write_cache,
            });
        }
        Ok(avail)
    }

    /// Publishes `idx` as consumed, with the message count `popped` and
    /// whether this publication consumed a message.
    #[inline(always)]
    fn release(&mut self, idx: u32, delta: u32) {
        self.read_idx = idx;
        self.popped = self.popped.wrapping_add(delta) & 0x7fff_ffff;
        Record::store(self.mem.read_record(), idx, self.popped, delta);
        // SYNC POINT block-released: Release so our reads of the blocks
        // before `idx` happen before the writer may reuse them; pairs with
        // the Acquire load of read_idx in Writer::reload_read.
        self.mem.read_idx().store(idx, Ordering::Release);
    }

    /// Caught up on v1: takes the fast path if the writer of this session
    /// announced it from an index at or before ours.
    fn try_fast(&mut self) {
        if !self.fast_allowed || self.fast_failed {
            return;
        }
        // SYNC POINT announced: Acquire pairs with the Release store in
        // Writer::announce, so the header it cleared at `from` is visible.
        let a = self.mem.announce().load(Ordering::Acquire);
        let from = a as u32;
        // Every index from `from` to write_idx (where we are) is one the
        // writer cleared before letting us reach it.
        if stamp_of(a) == MAGIC && self.read_idx.wrapping_sub(from) < 1 << 31 {
            self.fast = true;
            self.idle = 0;
        }
    }

    /// On the fast path with nothing stamped at our index: every
    /// [`FALLBACK_POLLS`] empty polls, checks that write_idx has not moved
    /// past us without a stamp (a writer that stopped stamping); if it has,
    /// goes back to v1 for this session. Returns whether it did.
    #[cold]
    fn fallback_check(&mut self) -> bool {
        self.idle = 0;
        // SYNC POINT msg-published: Acquire, so a stamp stored before this
        // write_idx is visible to the header load below.
        let write = self.mem.write_idx().load(Ordering::Acquire);
        let ahead = write.wrapping_sub(self.read_idx);
        if ahead == 0 || ahead > self.blk_cnt {
            // Nothing new, or write_idx behind us (a writer that died
            // between its stamp and write_idx: it rolls forward at reload).
            return false;
        }
        // Relaxed: a stamp is stored before write_idx, which we loaded
        // with Acquire; we only compare it (v1 reads what follows).
        let h = self
            .mem
            .header(self.read_idx & self.mask)
            .load(Ordering::Relaxed);
        if stamp_of(h) == self.read_idx {
            return false;
        }
        if stamp_of(h) == self.read_idx ^ HELD && ahead < HOLD_MAX {
            // A batch its writer holds (`Writer::push_more`). A live writer
            // lets it go before write_idx gets HOLD_MAX past it; one that
            // died holding it is replaced at the next session (`reload`),
            // or, without one, found here once the next writer has
            // published HOLD_MAX blocks.
            return false;
        }
        self.fast = false;
        self.fast_failed = true;
        self.write_cache = write;
        true
    }

    /// The next message as `(msg_type, payload)`, without consuming it.
    ///
    /// Every header and index is read once and validated; the message
    /// returned is described by our own copy from then on.
    ///
    /// # Errors
    /// [`Corrupt`] if the memory holds what an honest writer never writes;
    /// nothing out of bounds is read, and the reader stays where it was.
    #[inline]
    pub(super) fn front(&mut self) -> Result<Option<(u16, &[u8])>, Corrupt> {
        self.cur = None;
        if self.fast {
            return self.front_fast();
        }
        let mut at = self.read_idx;
        let mut avail = self.available(at)?;
        if avail == 0 {
            self.try_fast();
            return Ok(None);
        }
        let mut slot = at & self.mask;
        let (mut size, mut msg_type) = read_header(&self.mem, slot);
        if size == 0 {
            // A wrap marker: the message continues at slot 0.
            let skip = self.blk_cnt - slot;
            if slot == 0 || skip > avail {
                return Err(Corrupt::Size { at, size });
            }
            at = at.wrapping_add(skip);
            avail = self.available(at)?;
            if avail == 0 {
                // The marker alone: consume it now, the writer may be
                // waiting for the tail to place a large message.
                self.release(at, 0);
                return Ok(None);
            }
            slot = 0;
            (size, msg_type) = read_header(&self.mem, 0);
        }
        let blks = (size as usize).div_ceil(BLOCK) as u32;
        if blks > avail {
            return Err(Corrupt::Size { at, size });
        }
        self.accept(at, slot, size, msg_type)
    }

    /// [`front`](Self::front) on the fast path: the header at our index,
    /// loaded once with Acquire, is ours to read if its stamp is our index.
    #[inline]
    fn front_fast(&mut self) -> Result<Option<(u16, &[u8])>, Corrupt> {
        let mut at = self.read_idx;
        let mut slot = at & self.mask;
        // SYNC POINT msg-stamped: Acquire pairs with the Release store of
        // the header in Writer::push, so the payload is visible.
        let h = self.mem.header(slot).load(Ordering::Acquire);
        if stamp_of(h) != at {
            self.idle += 1;
            if self.idle >= FALLBACK_POLLS && self.fallback_check() {
                return self.front();
            }
            return Ok(None);
        }
        let (mut size, mut msg_type) = fields(h);
        if size == 0 {
            // A wrap marker: the message continues at slot 0.
            if slot == 0 {
                return Err(Corrupt::Size { at, size });
            }
            at = at.wrapping_add(self.blk_cnt - slot);
            // SYNC POINT msg-stamped, as above (push stores this header
            // before the marker).
            let h0 = self.mem.header(0).load(Ordering::Acquire);
            if stamp_of(h0) != at {
                // The marker alone (the writer cleared slot 0): consume it.
                self.release(at, 0);
                return Ok(None);
            }
            slot = 0;
            (size, msg_type) = fields(h0);
        }
        self.accept(at, slot, size, msg_type)
    }

    /// Validates a message header read at index `at` (slot `slot`) and
    /// makes it the current message.
    #[inline]
    fn accept(
        &mut self,
        at: u32,
        slot: u32,
        size: u16,
        msg_type: u16,
    ) -> Result<Option<(u16, &[u8])>, Corrupt> {
        let blks = (size as usize).div_ceil(BLOCK) as u32;
        if (size as usize) < HDR || slot + blks > self.blk_cnt {
            return Err(Corrupt::Size { at, size });
        }
        let cur = Current {
            end: at.wrapping_add(blks),
            msg_type,
            off: slot as usize * BLOCK + HDR,
            len: size as usize - HDR,
        };
        self.cur = Some(cur);
        self.mem.track_read(cur.off, cur.len);
        Ok(self.current())
    }

    /// The message the last [`front`](Self::front) returned, if it has not
    /// been popped since.
    #[inline]
    pub(super) fn current(&self) -> Option<(u16, &[u8])> {
        let c = self.cur?;
        // SAFETY: `c` is our own copy of a message `front` checked to lie
        // inside the ring (slot + blocks <= block count) and to be published
        // (before write_idx, SYNC POINT msg-published, or stamped, SYNC
        // POINT msg-stamped); the writer does not reuse its blocks until
        // pop releases them (SYNC POINT block-released).
        let payload = unsafe { std::slice::from_raw_parts(self.mem.blocks().add(c.off), c.len) };
        Some((c.msg_type, payload))
    }

    /// Consumes the message the last [`front`](Self::front) returned;
    /// without one it does nothing.
    #[inline(always)]
    pub(super) fn pop(&mut self) {
        if let Some(c) = self.cur.take() {
            self.mem.track_read(c.off, c.len);
            self.release(c.end, 1);
        }
    }

    /// Whether something may be waiting: on the fast path one load of the
    /// header at our index; on v1 our cached `write_idx` first, else one
    /// load. What an empty poll costs.
    #[inline(always)]
    pub(super) fn ready(&mut self) -> bool {
        if self.fast {
            // Relaxed: only compared; front_fast loads the header again with
            // Acquire before anything is read (SYNC POINT msg-stamped).
            let h = self
                .mem
                .header(self.read_idx & self.mask)
                .load(Ordering::Relaxed);
            if stamp_of(h) == self.read_idx {
                return true;
            }
            self.idle += 1;
            return self.idle >= FALLBACK_POLLS && self.fallback_check();
        }
        if self.read_idx != self.write_cache {
            return true;
        }
        // While we wait on write_idx, ask for the block we read next too:
        // when the writer publishes, the two misses (index, then block)
        // overlap instead of following each other. A hint, not a read: the
        // header is loaded only after write_idx says it is published.
        self.mem.prefetch(self.read_idx & self.mask);
        // SYNC POINT msg-published: Acquire pairs with the Release store in
        // Writer::push (what `front` reads next is then visible).
        self.write_cache = self.mem.write_idx().load(Ordering::Acquire);
        if self.read_idx != self.write_cache {
            return true;
        }
        // Caught up: now and then, see whether the fast path is announced
        // (a caller that gates `front` on `ready` never calls it empty).
        self.idle += 1;
        if self.idle >= FAST_CHECK_POLLS {
            self.idle = 0;
            self.try_fast();
        }
        false
    }

    /// The memory.
    pub(super) fn memory(&self) -> &M {
        &self.mem
    }
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
