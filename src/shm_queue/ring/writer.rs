//! The producing end of the ring: allocation, publication (v1 and
//! stamped), batches held by `push_more`, the fast path's announcement and
//! cleared headers, and the hand-over of the last publication's lines.

use super::*;

mod batch;

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
pub(crate) struct Writer<M> {
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
    /// The batch being written after write_idx, if any (`batch`).
    batch: Option<batch::Batch>,
    /// A batch could not fit from write_idx because of a wrap: the next
    /// one starts at slot 0 (`batch`).
    wrap_next: bool,
}

impl<M: QueueMemory> Writer<M> {
    /// A writer over `mem`, taking up the indices stored there.
    pub(crate) fn new(mem: M) -> Self {
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
            batch: None,
            wrap_next: false,
        };
        w.reload();
        w
    }

    /// Allows (the default) or forbids the fast path. Forbidden, the
    /// writer never announces, so readers stay on v1.
    pub(crate) fn set_fast(&mut self, fast: bool) {
        self.release();
        self.fast = fast;
        self.stamping = false;
    }

    /// Turns [`hand_over`](Self::hand_over) on (the default) or off.
    pub(crate) fn set_hand_over(&mut self, on: bool) {
        self.handover_max = if on { HANDOVER_MAX } else { 0 };
        self.handover = (0, 0);
    }

    #[cfg(test)]
    /// Whether this writer's announcement stands (readers may wait on
    /// stamps).
    pub(crate) fn stamping(&self) -> bool {
        self.stamping
    }

    /// Takes up the indices stored in memory again (after the peer or a
    /// reset changed them while this side was not writing).
    pub(crate) fn reload(&mut self) {
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
        self.batch = None;
        self.stamping = false;
        self.cleared_to = write;
        self.handover = (0, 0);
        self.pushed = Record::count_at(rec, self.write_idx);
    }

    /// Messages published since the queue was (re)set, mod 2^31; exact
    /// after a crash at any point.
    pub(crate) fn pushed(&self) -> u32 {
        self.pushed
    }

    /// Blocks published and not yet released by the reader now (one load
    /// of `read_idx`: for statistics, not for the hot path).
    pub(crate) fn in_use(&self) -> u32 {
        // Relaxed: a number for display, nothing is read because of it.
        let read = self.mem.read_idx().load(Ordering::Relaxed);
        self.write_idx.wrapping_sub(read).min(self.blk_cnt)
    }

    /// Blocks in the ring.
    pub(crate) fn blocks(&self) -> u32 {
        self.blk_cnt
    }

    #[cfg(test)]
    /// Wrap markers this writer published alone, because a message that
    /// had to start at slot 0 did not fit yet.
    pub(crate) fn lone_markers(&self) -> u64 {
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
    pub(crate) fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.pending = None;
        self.forget_batch();
        // Fields only: whether the announcement still stands is checked
        // by `refill_cleared`, out of line (see there).
        if self.fast && !self.stamping {
            self.announce();
        }
        let (size, blks) = self.blocks_for(payload_len)?;
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

    /// The size and blocks of a message with `payload_len` bytes of
    /// payload; `None` if it can never fit (larger than a u16 size, or
    /// than the ring, less one block on the fast path).
    #[inline(always)]
    fn blocks_for(&self, payload_len: usize) -> Option<(usize, u32)> {
        let size = HDR + payload_len;
        if size > u16::MAX as usize {
            return None;
        }
        let blks = size.div_ceil(BLOCK) as u32;
        (blks <= self.blk_cnt - self.stamping as u32).then_some((size, blks))
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
    pub(crate) fn pending_payload(&mut self) -> Option<&mut [u8]> {
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
    pub(crate) fn push(&mut self) {
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
    pub(crate) fn push_more(&mut self) {
        self.publish(true);
    }

    /// Lets a batch held by [`push_more`](Self::push_more) go: stores the
    /// stamped header word at its start. Without one it does nothing.
    #[inline(always)]
    pub(crate) fn release(&mut self) {
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
    pub(crate) fn hand_over(&mut self) {
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
    pub(crate) fn settle(&mut self) {
        debug_assert!(self.unsettled || self.held.is_none());
        if self.unsettled {
            self.unsettled = false;
            self.release();
            self.hand_over();
        }
    }

    #[cfg(test)]
    /// Whether [`push_more`](Self::push_more) holds a batch back.
    pub(crate) fn holding(&self) -> bool {
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
    pub(crate) fn memory(&self) -> &M {
        &self.mem
    }
}
