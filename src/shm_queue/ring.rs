//! The index protocol of the single-producer single-consumer
//! variable-length queue (`PROTOCOL.md` §5), generic over its memory.
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

use super::sync::{AtomicU32, AtomicU64, Ordering};

/// Bytes in a block.
pub const BLOCK: usize = 64;
const HDR: usize = 8;

/// The memory of one queue.
///
/// # Safety
/// Implementors guarantee that `blocks()` points to `capacity()` bytes valid
/// for reads and writes for as long as `self` lives, aligned to 8, that
/// `capacity()` is a power of two and a multiple of [`BLOCK`] no larger than
/// `2^31 * 64`, and that the three atomics live as long as `self`.
pub unsafe trait QueueMemory {
    /// `Q`: bytes of blocks.
    fn capacity(&self) -> usize;
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
pub enum Corrupt {
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

fn read_u16<M: QueueMemory>(m: &M, off: usize) -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: callers pass `off` at a block start, so off + 2 <= capacity;
    // QueueMemory guarantees the bytes are readable.
    unsafe { std::ptr::copy_nonoverlapping(m.blocks().add(off), b.as_mut_ptr(), 2) };
    u16::from_le_bytes(b)
}

/// The producing end.
#[derive(Debug)]
pub struct Writer<M> {
    mem: M,
    mask: u32,
    blk_cnt: u32,
    /// Local copy of write_idx; we are its only writer.
    write_idx: u32,
    read_cache: u32,
    /// `(start, blocks)` of the message allocated and not yet pushed.
    pending: Option<(u32, u32)>,
    /// Messages published since the queue was (re)set, mod 2^31.
    pushed: u32,
}

impl<M: QueueMemory> Writer<M> {
    /// A writer over `mem`, taking up the indices stored there.
    pub fn new(mem: M) -> Self {
        let blk_cnt = blk_cnt(&mem);
        let mut w = Writer {
            mem,
            mask: blk_cnt - 1,
            blk_cnt,
            write_idx: 0,
            read_cache: 0,
            pending: None,
            pushed: 0,
        };
        w.reload();
        w
    }

    /// Takes up the indices stored in memory again (after the peer or a
    /// reset changed them while this side was not writing).
    pub fn reload(&mut self) {
        // Acquire: this runs at login, after a peer may have reset the
        // queue; the login exchange orders it, Acquire costs nothing here.
        self.write_idx = self.mem.write_idx().load(Ordering::Acquire);
        self.read_cache = self.mem.read_idx().load(Ordering::Acquire);
        self.pending = None;
        // Relaxed: only this side writes the record.
        self.pushed = Record::count_at(
            self.mem.write_record().load(Ordering::Relaxed),
            self.write_idx,
        );
    }

    /// Messages published since the queue was (re)set, mod 2^31; exact
    /// after a crash at any point.
    pub fn pushed(&self) -> u32 {
        self.pushed
    }

    /// Reserves a message of type `msg_type` with `payload_len` bytes of
    /// payload and returns the payload to fill. `None` if the reader has
    /// not freed enough blocks, or if the message can never fit (larger
    /// than the capacity or than a u16 size).
    pub fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        let size = HDR + payload_len;
        if size > u16::MAX as usize {
            return None;
        }
        let blks = size.div_ceil(BLOCK) as u32;
        if blks > self.blk_cnt {
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
        let end = start.wrapping_add(blks);
        if end.wrapping_sub(self.read_cache) > self.blk_cnt {
            // SYNC POINT block-released: Acquire pairs with the Release
            // store of read_idx in Reader::pop, so the reader's reads of the
            // blocks it freed happen before we overwrite them.
            self.read_cache = self.mem.read_idx().load(Ordering::Acquire);
            // Relaxed: only this writer reads the cache; it is kept in the
            // region for layout compatibility with the C++ queue.
            self.mem
                .read_idx_cache()
                .store(self.read_cache, Ordering::Relaxed);
            if end.wrapping_sub(self.read_cache) > self.blk_cnt {
                if rewind {
                    self.publish_marker(slot, to_end);
                }
                return None;
            }
        }
        let base = self.mem.blocks();
        if rewind {
            let off = slot as usize * BLOCK;
            // SAFETY: slot < blk_cnt so off + 2 <= capacity; the block lies
            // between read_idx and the new end, which the reader does not
            // read until we publish (SYNC POINT msg-published).
            unsafe { std::ptr::write_bytes(base.add(off), 0, 2) };
        }
        let off = (start & self.mask) as usize * BLOCK;
        let mut hdr = [0u8; HDR];
        hdr[0..2].copy_from_slice(&(size as u16).to_le_bytes());
        hdr[2..4].copy_from_slice(&msg_type.to_le_bytes());
        self.pending = Some((start, blks));
        // SAFETY: the message starts at slot 0 after a rewind, else at a
        // slot with `blks` blocks before the end (checked above), so
        // off + size <= capacity; the blocks are free (checked against
        // read_idx) and unpublished, so nobody else touches them until push.
        unsafe {
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), base.add(off), HDR);
            Some(std::slice::from_raw_parts_mut(
                base.add(off + HDR),
                payload_len,
            ))
        }
    }

    /// The payload of the message allocated and not yet pushed.
    pub fn pending_payload(&mut self) -> Option<&mut [u8]> {
        let (start, _) = self.pending?;
        let off = (start & self.mask) as usize * BLOCK;
        let size = read_u16(&self.mem, off) as usize;
        // SAFETY: the header at `off` was written by our alloc with the
        // size it checked to fit before the end of the ring; the blocks are
        // still unpublished and ours.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.mem.blocks().add(off + HDR), size - HDR)
        })
    }

    /// A message that must start at slot 0 does not fit yet: publish the
    /// wrap marker alone (if the blocks up to the end are free), so the
    /// reader skips the tail and the next attempt starts at slot 0.
    /// Without this, a message of more than half the ring could be refused
    /// forever, even on an empty queue. The C++ reader accepts a marker
    /// with nothing after it.
    fn publish_marker(&mut self, slot: u32, to_end: u32) {
        let end = self.write_idx.wrapping_add(to_end);
        if end.wrapping_sub(self.read_cache) > self.blk_cnt {
            return;
        }
        // SAFETY: slot < blk_cnt so the 2 bytes are inside the ring; the
        // block is free (checked against read_idx just above) and
        // unpublished.
        unsafe { std::ptr::write_bytes(self.mem.blocks().add(slot as usize * BLOCK), 0, 2) };
        self.pending = None;
        self.write_idx = end;
        Record::store(self.mem.write_record(), end, self.pushed, 0);
        // SYNC POINT msg-published (the marker is a message to skip).
        self.mem.write_idx().store(end, Ordering::Release);
    }

    /// Publishes the message of the last [`alloc`](Self::alloc); without
    /// one it does nothing.
    pub fn push(&mut self) {
        if let Some((start, blks)) = self.pending.take() {
            self.write_idx = start.wrapping_add(blks);
            self.pushed = self.pushed.wrapping_add(1) & 0x7fff_ffff;
            Record::store(self.mem.write_record(), self.write_idx, self.pushed, 1);
            // SYNC POINT msg-published: Release so the header and payload
            // written since alloc are visible before the index that
            // publishes them; pairs with the Acquire load of write_idx in
            // Reader::front.
            self.mem
                .write_idx()
                .store(self.write_idx, Ordering::Release);
        }
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}

/// The consuming end.
#[derive(Debug)]
pub struct Reader<M> {
    mem: M,
    mask: u32,
    blk_cnt: u32,
    /// Local copy of read_idx; we are its only writer. May run ahead of the
    /// stored one by a skipped wrap marker until the next pop.
    read_idx: u32,
    write_cache: u32,
    /// Blocks of the message returned by the last front.
    cur: u32,
    /// Type and payload length of that message.
    cur_msg: (u16, usize),
    /// Messages consumed since the queue was (re)set, mod 2^31.
    popped: u32,
}

impl<M: QueueMemory> Reader<M> {
    /// A reader over `mem`, taking up the indices stored there.
    pub fn new(mem: M) -> Self {
        let blk_cnt = blk_cnt(&mem);
        let mut r = Reader {
            mem,
            mask: blk_cnt - 1,
            blk_cnt,
            read_idx: 0,
            write_cache: 0,
            cur: 0,
            cur_msg: (0, 0),
            popped: 0,
        };
        r.reload();
        r
    }

    /// Takes up the indices stored in memory again.
    pub fn reload(&mut self) {
        // Acquire: as in Writer::reload.
        self.read_idx = self.mem.read_idx().load(Ordering::Acquire);
        self.write_cache = self.read_idx;
        self.cur = 0;
        // Relaxed: only this side writes the record.
        self.popped = Record::count_at(
            self.mem.read_record().load(Ordering::Relaxed),
            self.read_idx,
        );
    }

    /// Messages consumed since the queue was (re)set, mod 2^31; exact
    /// after a crash at any point.
    pub fn popped(&self) -> u32 {
        self.popped
    }

    /// The next message as `(msg_type, payload)`, without consuming it.
    ///
    /// # Errors
    /// [`Corrupt`] if the memory holds what an honest writer never writes;
    /// nothing out of bounds is read, and the reader stays where it was.
    pub fn front(&mut self) -> Result<Option<(u16, &[u8])>, Corrupt> {
        self.cur = 0;
        if self.read_idx == self.write_cache {
            // SYNC POINT msg-published: Acquire pairs with the Release store
            // in Writer::push, so the message bytes are visible.
            self.write_cache = self.mem.write_idx().load(Ordering::Acquire);
            if self.read_idx == self.write_cache {
                return Ok(None);
            }
        }
        let mut avail = self.write_cache.wrapping_sub(self.read_idx);
        if avail > self.blk_cnt {
            return Err(Corrupt::Index {
                read: self.read_idx,
                write: self.write_cache,
            });
        }
        let mut slot = self.read_idx & self.mask;
        let mut size = read_u16(&self.mem, slot as usize * BLOCK);
        if size == 0 {
            let skip = self.blk_cnt - slot;
            if slot == 0 || skip > avail {
                return Err(Corrupt::Size {
                    at: self.read_idx,
                    size,
                });
            }
            self.read_idx = self.read_idx.wrapping_add(skip);
            Record::store(self.mem.read_record(), self.read_idx, self.popped, 0);
            // SYNC POINT block-released: the skipped tail is free at once
            // (the writer may be waiting for it to place a large message).
            self.mem.read_idx().store(self.read_idx, Ordering::Release);
            avail -= skip;
            if avail == 0 {
                // SYNC POINT msg-published, as above.
                self.write_cache = self.mem.write_idx().load(Ordering::Acquire);
                avail = self.write_cache.wrapping_sub(self.read_idx);
                if avail == 0 {
                    return Ok(None);
                }
                if avail > self.blk_cnt {
                    return Err(Corrupt::Index {
                        read: self.read_idx,
                        write: self.write_cache,
                    });
                }
            }
            slot = 0;
            size = read_u16(&self.mem, 0);
        }
        let blks = (size as usize).div_ceil(BLOCK) as u32;
        if (size as usize) < HDR || blks > avail || slot + blks > self.blk_cnt {
            return Err(Corrupt::Size {
                at: self.read_idx,
                size,
            });
        }
        self.cur = blks;
        let off = slot as usize * BLOCK;
        let msg_type = read_u16(&self.mem, off + 2);
        self.cur_msg = (msg_type, size as usize - HDR);
        // SAFETY: slot + blks <= blk_cnt, so off + size <= capacity; the
        // blocks are published (before write_idx, SYNC POINT msg-published)
        // and not reused by the writer until we release them in pop.
        let payload = unsafe {
            std::slice::from_raw_parts(self.mem.blocks().add(off + HDR), size as usize - HDR)
        };
        Ok(Some((msg_type, payload)))
    }

    /// The message the last [`front`](Self::front) returned, if it has not
    /// been popped since.
    pub fn current(&self) -> Option<(u16, &[u8])> {
        if self.cur == 0 {
            return None;
        }
        let off = (self.read_idx & self.mask) as usize * BLOCK;
        let (t, len) = self.cur_msg;
        // SAFETY: `front` checked this message against the ring bounds and
        // write_idx and recorded its type and length; it is not released
        // until pop.
        Some((t, unsafe {
            std::slice::from_raw_parts(self.mem.blocks().add(off + HDR), len)
        }))
    }

    /// Consumes the message the last [`front`](Self::front) returned;
    /// without one it does nothing.
    pub fn pop(&mut self) {
        if self.cur == 0 {
            return;
        }
        self.read_idx = self.read_idx.wrapping_add(self.cur);
        self.cur = 0;
        self.popped = self.popped.wrapping_add(1) & 0x7fff_ffff;
        Record::store(self.mem.read_record(), self.read_idx, self.popped, 1);
        // SYNC POINT block-released: Release so our reads of the message
        // happen before the writer may reuse its blocks; pairs with the
        // Acquire load of read_idx in Writer::alloc.
        self.mem.read_idx().store(self.read_idx, Ordering::Release);
    }

    /// Whether a message is published and not consumed (checks memory).
    pub fn is_empty(&self) -> bool {
        // Acquire: as SYNC POINT msg-published.
        self.mem.write_idx().load(Ordering::Acquire) == self.read_idx
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}

/// Empties the queue in `mem`: all three indices to 0. Only valid while
/// neither end is in use (at login, before either side polls); each end
/// then calls `reload`.
pub fn reset<M: QueueMemory>(mem: &M) {
    // Release: the zeroed indices are published by the login exchange that
    // follows; Release keeps them ordered before it.
    mem.write_idx().store(0, Ordering::Release);
    mem.read_idx_cache().store(0, Ordering::Release);
    mem.read_idx().store(0, Ordering::Release);
    mem.write_record().store(0, Ordering::Release);
    mem.read_record().store(0, Ordering::Release);
}
