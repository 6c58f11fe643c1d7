//! Batches: messages written after `write_idx` and published together.
//!
//! Until the batch is published nothing of it can be read:
//! - a v1 reader (a C++ peer) reads up to `write_idx`, which has not moved;
//! - a fast-path reader waits on the stamp of the batch's first stop (its
//!   first message, or the wrap marker before it), whose header the batch
//!   leaves as it was (cleared) until it is published.
//!
//! The other headers are stamped as the messages are allocated (Relaxed);
//! publishing stores the first stop's stamped header with Release, then
//! `write_idx`: a fast-path reader that loads that header with Acquire sees
//! every store of the batch before it (SYNC POINT batch-stamped). The
//! first stop's header is stored once, at publication: a reader waiting on
//! its line loses it once per batch, as for a single message.
//!
//! A batch dropped before it is published leaves headers and payload
//! bytes after `write_idx`; the next batch or `alloc` has the blocks after
//! `write_idx` cleared again before a reader can stop there
//! (`forget_batch`).
//!
//! Crash-exact counts and what a dead writer's batch becomes are the
//! caller's (`shm_queue::intent`): this module publishes, and rolls a
//! committed publication forward.

use super::*;

/// A batch being written: our own record of it, never read back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Batch {
    /// `write_idx` when it began: its first stop.
    start: u32,
    /// One past its last block.
    end: u32,
    /// Messages in it.
    n: u32,
    /// The stamped header word of its first stop, once written.
    first: Option<u64>,
    /// The last message: its first slot, blocks, payload offset and
    /// length.
    last: Option<(u32, u32, usize, usize)>,
}

impl<M: QueueMemory> Writer<M> {
    /// Starts a batch (dropping one not published, and the pending
    /// `alloc`). A batch `push_more` holds goes first.
    pub(crate) fn batch_begin(&mut self) {
        self.release();
        self.pending = None;
        self.forget_batch();
        if self.fast && !self.stamping {
            self.announce();
        }
        let slot = self.write_idx & self.mask;
        if self.wrap_next && slot != 0 {
            // The last batch could not fit from here: it starts at slot 0
            // (once the reader has freed the tail; till then it is full).
            self.publish_marker(slot, self.blk_cnt - slot);
        }
        self.wrap_next = (self.write_idx & self.mask) != 0 && self.wrap_next;
        self.batch = Some(Batch {
            start: self.write_idx,
            end: self.write_idx,
            n: 0,
            first: None,
            last: None,
        });
    }

    /// Drops a batch not published, if any: its headers and payloads after
    /// `write_idx` may look like stamps where a reader stops next, so the
    /// blocks after `write_idx` count as not cleared from here on.
    #[inline]
    pub(crate) fn forget_batch(&mut self) {
        if let Some(b) = self.batch.take() {
            self.dirty_after(b);
        }
    }

    #[cold]
    fn dirty_after(&mut self, b: Batch) {
        if b.n > 0 && (self.cleared_to.wrapping_sub(b.start) as i32) > 1 {
            self.cleared_to = b.start.wrapping_add(1);
        }
    }

    /// Stores the header `word` at index `at` of the batch `b`: the first
    /// stop's is kept for `batch_publish` (see the module), the others are
    /// stored stamped.
    fn batch_stop(&mut self, b: &mut Batch, at: u32, word: u64) {
        if at == b.start {
            b.first = Some(word);
        } else {
            // Relaxed: nothing reads past the first stop before the
            // Release store of its stamped word in `batch_publish` (SYNC
            // POINT batch-stamped); a v1 reader reads these only once
            // write_idx, stored after that with Release, passes them.
            self.mem
                .header(at & self.mask)
                .store(word, Ordering::Relaxed);
        }
    }

    /// The stamped header word of the batch's first stop: what a process
    /// rolling the batch forward after a crash stores there.
    pub(crate) fn batch_first(&self) -> Option<u64> {
        self.batch?.first
    }

    /// Adds a message to the batch and returns its payload to fill. `None`
    /// without a batch, or when the message does not fit after the batch
    /// (the batch is unchanged).
    pub(crate) fn batch_alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        let mut b = self.batch?;
        let (size, blks) = self.blocks_for(payload_len)?;
        let mut slot = b.end & self.mask;
        if blks > self.blk_cnt - slot && b.n == 0 {
            // A batch that starts with a wrap marker: publish the marker
            // alone, as `alloc` does (it adds no message), and start the
            // batch at slot 0; not yet if the reader has not freed the
            // tail.
            self.publish_marker(slot, self.blk_cnt - slot);
            if self.write_idx == b.start {
                return None;
            }
            (b.start, b.end, slot) = (self.write_idx, self.write_idx, 0);
            self.batch = Some(b);
        }
        let to_end = self.blk_cnt - slot;
        let rewind = blks > to_end;
        let start = if rewind {
            b.end.wrapping_add(to_end)
        } else {
            b.end
        };
        let end = start.wrapping_add(blks);
        if end.wrapping_sub(b.start) > self.blk_cnt - self.stamping as u32 {
            // The wrap's waste makes it too long from here, whatever the
            // reader frees: the next batch starts at slot 0.
            self.wrap_next = true;
            return None;
        }
        if !self.fits(end) {
            return None;
        }
        if rewind {
            let at = b.end;
            let marker = header_word(0, 0, self.stamp(slot, at));
            self.batch_stop(&mut b, at, marker);
        }
        let first = start & self.mask;
        let word = header_word(size as u16, msg_type, self.stamp(first, start));
        self.batch_stop(&mut b, start, word);
        let off = first as usize * BLOCK + HDR;
        b.end = start.wrapping_add(blks);
        b.n += 1;
        b.last = Some((first, blks, off, payload_len));
        self.batch = Some(b);
        self.mem.track_write(off, payload_len);
        self.batch_payload()
    }

    /// The payload of the batch's last message.
    pub(crate) fn batch_payload(&mut self) -> Option<&mut [u8]> {
        let (_, _, off, len) = self.batch?.last?;
        // SAFETY: `(off, len)` is our own record of the last allocation of
        // the batch, inside the blocks (batch_alloc checked that it ends
        // before the end of the ring); the blocks are free and unpublished
        // (after write_idx, checked against read_idx), so the reader does
        // not touch them until batch_publish, and `&mut self` makes the
        // slice the only one this writer gives out.
        Some(unsafe { std::slice::from_raw_parts_mut(self.mem.blocks().add(off), len) })
    }

    /// Messages in the batch.
    pub(crate) fn batch_len(&self) -> u32 {
        self.batch.map_or(0, |b| b.n)
    }

    /// Where publishing the batch takes the ring: `write_idx` before and
    /// after it, and its messages; `None` for no batch or an empty one.
    pub(crate) fn batch_target(&self) -> Option<(u32, u32, u32)> {
        let b = self.batch.filter(|b| b.n > 0)?;
        Some((b.start, b.end, b.n))
    }

    /// Before the batch is committed: the block after it is cleared (on
    /// the fast path), so that nothing a crash leaves between the commit
    /// and the publication depends on it.
    pub(crate) fn batch_seal(&mut self) {
        if let Some(b) = self.batch {
            if self.stamping {
                self.ensure_cleared(b.end);
            }
        }
    }

    /// Publishes the batch: the commit record, the first stop's stamp,
    /// `write_idx`. Returns the messages published.
    pub(crate) fn batch_publish(&mut self) -> u32 {
        let Some(b) = self.batch.take().filter(|b| b.n > 0) else {
            return 0;
        };
        for &(_, _, off, len) in b.last.iter() {
            self.mem.track_write(off, len);
        }
        if self.stamping {
            self.ensure_cleared(b.end);
        }
        self.pushed = self.pushed.wrapping_add(b.n) & 0x7fff_ffff;
        Record::store(self.mem.write_record(), b.end, self.pushed, 1);
        crash_point();
        if let Some(word) = b.first {
            // SYNC POINT batch-stamped: Release so every header and payload
            // of the batch, stored before, is visible to a reader that
            // loads this header with Acquire (Reader::front_fast), and
            // from it reads on through the batch.
            self.mem
                .header(b.start & self.mask)
                .store(word, Ordering::Release);
        }
        crash_point();
        self.write_idx = b.end;
        if let Some((first, blks, _, _)) = b.last {
            self.handover = (first, blks.min(self.handover_max));
        }
        self.unsettled = true;
        // SYNC POINT msg-published, as in `publish`.
        self.mem.write_idx().store(b.end, Ordering::Release);
        crash_point();
        if self.stamping {
            self.clear_ahead(b.end);
        }
        b.n
    }

    /// After a crash: a batch committed to publishing `start..end` with the
    /// count `count` and the first stop's header `first` (the caller's
    /// record of it, validated by the caller) is published, as far as a v1
    /// reader sees: the first stop's header if `write_idx` is still at
    /// `start`, the commit record, `write_idx`.
    /// The other stamps do not matter: a reader starts each session on v1.
    /// Then takes the indices up again.
    pub(crate) fn roll_forward(&mut self, start: u32, end: u32, count: u32, first: u64) {
        // Relaxed, as every load at a reload (this side alone writes it).
        if self.mem.write_idx().load(Ordering::Relaxed) == start {
            // Not published: the first stop's header may never have been
            // stored (a v1 reader needs its size and type).
            self.mem
                .header(start & self.mask)
                .store(first, Ordering::Release);
            crash_point();
        }
        Record::store(self.mem.write_record(), end, count, 1);
        crash_point();
        // Release: as in `publish` (a reader of this session may be on v1).
        self.mem.write_idx().store(end, Ordering::Release);
        crash_point();
        self.reload();
    }
}
