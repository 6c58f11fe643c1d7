//! The consuming end of the ring: v1 reads through `write_idx`, the fast
//! path's reads of stamped headers, the fallback to v1, and releasing
//! blocks. Messages the application holds (`Received::hold`; not the
//! writer's batch held by `push_more`) are read past without being
//! released: the reader reads at its own position after them, and
//! `read_idx` in memory stays at the first's start until they are
//! consumed or given back.

use super::*;

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

/// A message [`Reader::peek`] read ahead: its type, the index one past
/// it, and its payload.
pub(crate) type Peeked<'a> = (u16, u32, &'a [u8]);

/// The consuming end.
#[derive(Debug)]
pub(crate) struct Reader<M> {
    mem: M,
    mask: u32,
    blk_cnt: u32,
    /// Where `front` reads: the local copy of read_idx (we are its only
    /// writer), or past the messages held.
    read_idx: u32,
    /// The ends of the messages held (`hold`), in order: read, not
    /// consumed. read_idx in memory is still at the first's start.
    held: Vec<u32>,
    /// Where the first message held starts (the index released).
    hold_from: u32,
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
    pub(crate) fn new(mem: M) -> Self {
        let blk_cnt = blk_cnt(&mem);
        let mut r = Reader {
            mem,
            mask: blk_cnt - 1,
            blk_cnt,
            read_idx: 0,
            // Room for the groups most applications hold, made here.
            held: Vec::with_capacity(64),
            hold_from: 0,
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
    pub(crate) fn set_fast(&mut self, fast: bool) {
        self.fast_allowed = fast;
        self.fast = false;
        // The cache went stale while on the fast path: reload it next.
        self.write_cache = self.read_idx;
    }

    /// Whether this reader waits on stamps (the fast path) now.
    pub(crate) fn is_fast(&self) -> bool {
        self.fast
    }

    /// Takes up the indices stored in memory again, and starts a session:
    /// back to v1, and the writer's announcement is cleared, so only an
    /// announcement made after this (by the writer of this session) can
    /// put this reader on the fast path.
    pub(crate) fn reload(&mut self) {
        // Acquire: as in Writer::reload.
        self.read_idx = self.mem.read_idx().load(Ordering::Acquire);
        self.write_cache = self.read_idx;
        self.cur = None;
        self.held.clear();
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
    pub(crate) fn popped(&self) -> u32 {
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
        crash_point();
        // SYNC POINT block-released: Release so our reads of the blocks
        // before `idx` happen before the writer may reuse them; pairs with
        // the Acquire load of read_idx in Writer::reload_read.
        self.mem.read_idx().store(idx, Ordering::Release);
        crash_point();
    }

    /// Where consuming the messages held and the one the last `front`
    /// returned takes the ring: `read_idx` before and after, and the
    /// messages; `None` if there are neither.
    pub(crate) fn consume_target(&self) -> Option<(u32, u32, u32)> {
        let held = self.held.len() as u32;
        let start = if held == 0 {
            self.read_idx
        } else {
            self.hold_from
        };
        match (self.cur, self.held.last()) {
            (Some(c), _) => Some((start, c.end, held + 1)),
            (None, Some(&end)) => Some((start, end, held)),
            (None, None) => None,
        }
    }

    /// Consumes what [`consume_target`](Self::consume_target) names, in
    /// one publication (the caller's intent record makes its count exact
    /// after a crash: the commit record's delta says one message).
    pub(crate) fn consume_all(&mut self) {
        let Some((_, end, n)) = self.consume_target() else {
            return;
        };
        if let Some(c) = self.cur.take() {
            self.mem.track_read(c.off, c.len);
        }
        self.held.clear();
        self.read_idx = end;
        self.popped = self.popped.wrapping_add(n) & 0x7fff_ffff;
        Record::store(self.mem.read_record(), end, self.popped, 1);
        crash_point();
        // SYNC POINT block-released, as in `release`.
        self.mem.read_idx().store(end, Ordering::Release);
        crash_point();
    }

    /// Holds the message the last `front` returned: `front` reads on past
    /// it, and it stays unconsumed (its blocks not released to the
    /// writer) until it is consumed with those after it or given back
    /// ([`unhold`](Self::unhold)).
    /// Allocates only to hold more messages than ever before. Returns
    /// false, holding nothing, if the messages held would span more than
    /// the ring (a writer that rewrote what it published).
    pub(crate) fn hold(&mut self) -> bool {
        let Some(c) = self.cur else {
            return true;
        };
        let from = if self.held.is_empty() {
            self.read_idx
        } else {
            self.hold_from
        };
        if c.end.wrapping_sub(from) > self.blk_cnt {
            return false;
        }
        self.cur = None;
        self.hold_from = from;
        self.held.push(c.end);
        self.read_idx = c.end;
        true
    }

    /// Forgets the message the last `front` returned (not consumed: the
    /// next `front` returns it again), so a consume takes only the held.
    pub(crate) fn forget_current(&mut self) {
        self.cur = None;
    }

    /// Messages held.
    #[inline(always)]
    pub(crate) fn held(&self) -> u32 {
        self.held.len() as u32
    }

    /// Gives the messages held back: `front` returns the first again.
    pub(crate) fn unhold(&mut self) {
        if !self.held.is_empty() {
            self.read_idx = self.hold_from;
            self.held.clear();
            if self.fast {
                // They may be from before the writer announced the fast
                // path (no stamps): v1 reads them, and `try_fast` comes
                // back once caught up.
                self.fast = false;
                self.write_cache = self.read_idx;
            }
        }
        self.cur = None;
    }

    /// Consumes the messages held, one publication each (a crash between
    /// two leaves an exact count), leaving `front` where it reads.
    #[cold]
    #[inline(never)]
    fn release_held(&mut self) {
        let at = self.read_idx;
        let held = std::mem::take(&mut self.held);
        for &end in &held {
            self.release(end, 1);
        }
        // The vector's room is kept for the next holds.
        self.held = held;
        self.held.clear();
        self.read_idx = at;
    }

    /// A wrap marker alone at `at` (nothing after it yet): released now,
    /// since the writer may wait for the tail to place a large message;
    /// with messages held, stepped over (it is released with them).
    fn marker_alone(&mut self, at: u32) {
        if self.held.is_empty() {
            self.release(at, 0);
        } else {
            self.read_idx = at;
        }
    }

    /// After a crash: a consumption committed up to `idx` with the count
    /// `count` (the caller's record of it, validated by the caller) is
    /// published: the commit record, then `read_idx`. Then takes the
    /// indices up again ([`reload`](Self::reload)).
    pub(crate) fn roll_forward(&mut self, idx: u32, count: u32) {
        Record::store(self.mem.read_record(), idx, count, 1);
        crash_point();
        // SYNC POINT block-released, as in `release` (this side read the
        // blocks before it crashed).
        self.mem.read_idx().store(idx, Ordering::Release);
        crash_point();
        self.reload();
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
    pub(crate) fn front(&mut self) -> Result<Option<(u16, &[u8])>, Corrupt> {
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
                self.marker_alone(at);
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
                // The marker alone (the writer cleared slot 0).
                self.marker_alone(at);
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
        let cur = self.check(at, slot, size, msg_type)?;
        self.cur = Some(cur);
        self.mem.track_read(cur.off, cur.len);
        Ok(self.current())
    }

    /// Our own copy of a message whose header, read at index `at` (slot
    /// `slot`), holds `size` and `msg_type`, if it fits the ring there.
    #[inline]
    fn check(&self, at: u32, slot: u32, size: u16, msg_type: u16) -> Result<Current, Corrupt> {
        let blks = (size as usize).div_ceil(BLOCK) as u32;
        if (size as usize) < HDR || slot + blks > self.blk_cnt {
            return Err(Corrupt::Size { at, size });
        }
        Ok(Current {
            end: at.wrapping_add(blks),
            msg_type,
            off: slot as usize * BLOCK + HDR,
            len: size as usize - HDR,
        })
    }

    /// The payload of a message [`check`](Self::check)ed and published.
    #[inline]
    fn payload(&self, c: Current) -> &[u8] {
        // SAFETY: `c` is our own copy of a message `check` found to lie
        // inside the ring (slot + blocks <= block count), and the callers
        // found it published (before write_idx, SYNC POINT msg-published,
        // or stamped, SYNC POINT msg-stamped) at or after the read_idx we
        // published (held messages keep it at or before their start); the
        // writer does not reuse its blocks until a release (pop,
        // `release_held`, `consume_all`, `consume_to`) passes them (SYNC
        // POINT block-released).
        unsafe { std::slice::from_raw_parts(self.mem.blocks().add(c.off), c.len) }
    }

    /// The message the last [`front`](Self::front) returned, if it has not
    /// been popped since.
    #[inline]
    pub(crate) fn current(&self) -> Option<(u16, &[u8])> {
        let c = self.cur?;
        Some((c.msg_type, self.payload(c)))
    }

    /// The message at index `at`, at or after the current message's end,
    /// as `(msg_type, end, payload)`, without making it current or
    /// consuming anything; `None` if nothing is published there yet. For
    /// reading on through the fragments of one large message, which its
    /// writer publishes as one batch (`crate::wire::Assembler`). A wrap
    /// marker at `at` is read through, never consumed.
    ///
    /// # Errors
    /// [`Corrupt`], as [`front`](Self::front).
    pub(crate) fn peek(&mut self, at: u32) -> Result<Option<Peeked<'_>>, Corrupt> {
        let mut slot = at & self.mask;
        let (at, slot, size, msg_type) = if self.fast {
            // SYNC POINT msg-stamped, as in front_fast: a batch's headers
            // are stored before its first stop's stamp.
            let head = self.mem.header(slot).load(Ordering::Acquire);
            if stamp_of(head) != at {
                return Ok(None);
            }
            let (size, msg_type) = fields(head);
            if size != 0 {
                (at, slot, size, msg_type)
            } else if slot == 0 {
                return Err(Corrupt::Size { at, size });
            } else {
                let at = at.wrapping_add(self.blk_cnt - slot);
                // SYNC POINT msg-stamped, as above.
                let head0 = self.mem.header(0).load(Ordering::Acquire);
                if stamp_of(head0) != at {
                    return Ok(None);
                }
                let (size, msg_type) = fields(head0);
                (at, 0, size, msg_type)
            }
        } else {
            let mut at = at;
            let mut avail = self.available(at)?;
            if avail == 0 {
                return Ok(None);
            }
            let (mut size, mut msg_type) = read_header(&self.mem, slot);
            if size == 0 {
                let skip = self.blk_cnt - slot;
                if slot == 0 || skip > avail {
                    return Err(Corrupt::Size { at, size });
                }
                at = at.wrapping_add(skip);
                avail = self.available(at)?;
                if avail == 0 {
                    return Ok(None);
                }
                slot = 0;
                (size, msg_type) = read_header(&self.mem, 0);
            }
            if (size as usize).div_ceil(BLOCK) as u32 > avail {
                return Err(Corrupt::Size { at, size });
            }
            (at, slot, size, msg_type)
        };
        let c = self.check(at, slot, size, msg_type)?;
        self.mem.track_read(c.off, c.len);
        Ok(Some((c.msg_type, c.end, self.payload(c))))
    }

    /// The index `front` reads at: of the next message to consume, or
    /// past the messages held.
    pub(crate) fn read_idx(&self) -> u32 {
        self.read_idx
    }

    /// Consumes one message, which ends at `end`: a message
    /// [`peek`](Self::peek) returned, once every one before it is
    /// consumed.
    pub(crate) fn consume_to(&mut self, end: u32) {
        self.cur = None;
        if !self.held.is_empty() {
            self.release_held();
        }
        self.release(end, 1);
    }

    /// Consumes the message the last [`front`](Self::front) returned, and
    /// first the messages held; without one it does nothing. Returns how
    /// many were held.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> u32 {
        let Some(c) = self.cur.take() else {
            return 0;
        };
        let held = self.held.len() as u32;
        if held != 0 {
            self.release_held();
        }
        self.mem.track_read(c.off, c.len);
        self.release(c.end, 1);
        held
    }

    /// Steps past the message the last `front` returned, an orphan
    /// fragment: consumed now, or held with the messages held before it
    /// (false: it could not be, see [`hold`](Self::hold)).
    pub(crate) fn skip(&mut self) -> bool {
        if self.held.is_empty() {
            self.pop();
            true
        } else {
            self.hold()
        }
    }

    /// The index one past the message the last `front` returned.
    pub(crate) fn current_end(&self) -> Option<u32> {
        Some(self.cur?.end)
    }

    /// Whether something may be waiting: on the fast path one load of the
    /// header at our index; on v1 our cached `write_idx` first, else one
    /// load. What an empty poll costs.
    #[inline(always)]
    pub(crate) fn ready(&mut self) -> bool {
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
    pub(crate) fn memory(&self) -> &M {
        &self.mem
    }
}
