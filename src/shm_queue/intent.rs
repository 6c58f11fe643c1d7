//! The intent record: a batch, or a consume-and-reply, over shared memory
//! as one step that a crash cannot cut in half.
//!
//! A batch moves the ring's `write_idx` and the writer's commit record; a
//! consume-and-reply also moves `read_idx` (and the reader's record) of
//! the other ring, another object. No single store changes them all, so
//! the writer first records where they are going, in five words of its
//! own ring's trailer that the C++ queue leaves unused and no reader reads
//! (`docs/protocol.md`, "Batches and the intent record"):
//!
//! | offset | word |
//! |---|---|
//! | `Q + 96` | commit word: `0x69 << 56`, bit 55 set for a consume, bits 32-54 the batch's messages, the low 32 bits a check of the words below (0: none) |
//! | `Q + 104` | this ring's `write_idx` before the batch (low half) and after it (high half) |
//! | `Q + 112` | the other ring's `read_idx` before the consume (low half) and after it (high half) |
//! | `Q + 120` | the stamped header of the batch's first stop (its first message, or the wrap marker before it) |
//! | `Q + 24` | for a consume: the messages it consumes, less one (read only with bit 55) |
//!
//! Commit: the batch's messages are written after `write_idx` (nothing of
//! them readable); the other words are stored, then the commit word: that
//! store is the commit point. Then the batch is published (record, stamp,
//! `write_idx`), the requests consumed (record, `read_idx`: one
//! publication for all of them), and the commit word cleared. A consume
//! of several with nothing to publish is recorded too (`n` 0, `Q + 104`
//! 0): a commit record's delta cannot count them.
//!
//! Recovery ([`recover`], when a process opens the pair's two rings): a
//! commit word whose check matches is rolled forward if each ring is at
//! the record's start or end (its commit record agreeing): the first
//! stop's header (if `write_idx` is still at the start), both rings'
//! records and indices are stored (each an absolute value: storing one
//! twice is harmless), then the word is cleared. The counts follow from
//! the rings' own commit records and the batch's size. A crash before the
//! commit point leaves the word 0 (it is cleared after every commit):
//! nothing of the batch is published and the request is not consumed. A
//! record whose rings have moved on (another writer, a reset) is stale:
//! it is cleared, never applied.
//!
//! The words are peer-writable memory: each is read once and checked; a
//! record whose check fails is refused (the pair is reported corrupt).

use std::sync::atomic::{compiler_fence, Ordering};

use super::ring::{QueueMemory, BLOCK};
use super::{RegionMemory, ShmReader, ShmWriter};
use crate::sys::Region;

/// Offset of the commit word after the blocks.
pub(super) const OFF_INTENT: usize = 96;
/// Offset of the target of this ring (`write_idx`, count).
pub(super) const OFF_INTENT_OUT: usize = 104;
/// Offset of the target of the other ring (`read_idx`, count).
pub(super) const OFF_INTENT_IN: usize = 112;
/// Offset of the stamped header of the batch's first stop.
pub(super) const OFF_INTENT_FIRST: usize = 120;
/// Offset of a consume's message count, less one.
pub(super) const OFF_INTENT_CONSUMED: usize = 24;

/// High 8 bits of a commit word: "i".
const MAGIC: u64 = 0x69;
/// Bit 55 of a commit word: the record consumes from the other ring.
const CONSUME: u64 = 1 << 55;
/// The most messages a batch over shared memory holds (bits 32-54 of the
/// commit word).
pub(crate) const MAX_BATCH: u32 = (1 << 23) - 1;

/// Clears the commit word in the memory `m` of a ring: after a commit,
/// a recovery, or a reset of the ring.
pub(super) fn clear<R: Region>(m: &RegionMemory<R>) {
    // Relaxed: as in `batch_commit`.
    m.word64(OFF_INTENT).store(0, Ordering::Relaxed);
}

/// Two indices, as one word.
fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | u64::from(hi) << 32
}

fn unpack(w: u64) -> (u32, u32) {
    (w as u32, (w >> 32) as u32)
}

/// The commit word for the words `out`, `inn` and `first`, a batch of `n`
/// messages, consuming `more + 1` messages (`Some(more)`) or none.
pub(super) fn commit_word(out: u64, inn: u64, first: u64, n: u32, consume: Option<u32>) -> u64 {
    // A multiply-xorshift mix of the three words (each rotated apart), `n`
    // and `more` (above `n`'s bits; 0 adds nothing, so the record of a
    // consume of one reads as before the count existed), folded to 32
    // bits: cheap, as it is on the path of every commit. It tells a record
    // this code wrote whole from a stray or corrupt one, not from a
    // forgery (a hostile peer can rewrite the indices themselves anyway).
    let more = u64::from(consume.unwrap_or(0)) << 32;
    let mut h = out ^ inn.rotate_left(21) ^ first.rotate_left(42) ^ u64::from(n) ^ more;
    h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    let check = (h ^ (h >> 32)) & 0xffff_ffff;
    let flag = if consume.is_some() { CONSUME } else { 0 };
    MAGIC << 56 | flag | u64::from(n & MAX_BATCH) << 32 | check
}

impl<R: Region> ShmWriter<R> {
    /// Starts a batch (`ring::Writer::batch_begin`).
    #[inline]
    pub(crate) fn batch_begin(&mut self) {
        self.w.batch_begin()
    }

    /// Adds a message to the batch; `None` when it does not fit.
    #[inline]
    pub(crate) fn batch_alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.w.batch_alloc(msg_type, payload_len)
    }

    /// The payload of the batch's last message.
    #[inline]
    pub(crate) fn batch_payload(&mut self) -> Option<&mut [u8]> {
        self.w.batch_payload()
    }

    /// Messages in the batch.
    pub(crate) fn batch_len(&self) -> u32 {
        self.w.batch_len()
    }

    /// Publishes the batch, and with `consume` (the reader of the pair's
    /// other ring) consumes the messages it holds and the one its last
    /// `front` returned, as one step (see the module). Returns the
    /// messages published; `None` if `consume` has neither (nothing
    /// changes).
    #[inline]
    pub(crate) fn batch_commit(&mut self, consume: Option<&mut ShmReader<R>>) -> Option<u32> {
        let inn = match &consume {
            Some(r) => Some(r.0.consume_target()?),
            None => None,
        };
        let target = self.w.batch_target();
        match (target, consume) {
            (None, None) => Some(0),
            // Nothing to publish and one message to consume: the reader's
            // one publication is one step, its count exact, already.
            (None, Some(r)) if inn.is_some_and(|(_, _, k)| k == 1) => {
                r.consume_all();
                Some(0)
            }
            (_, consume) => self.commit_recorded(target, consume, inn),
        }
    }

    /// `batch_commit` through the intent record: the batch's `target`
    /// (`None`: nothing to publish, a consume of several), and the
    /// consume `inn` of `consume`.
    #[inline]
    fn commit_recorded(
        &mut self,
        target: Option<(u32, u32, u32)>,
        consume: Option<&mut ShmReader<R>>,
        inn: Option<(u32, u32, u32)>,
    ) -> Option<u32> {
        let (start, end, n) = target.unwrap_or((0, 0, 0));
        if n > 0 {
            self.w.batch_seal();
        }
        let first = self.w.batch_first().unwrap_or(0);
        let m = self.w.memory();
        let out = if n > 0 { pack(start, end) } else { 0 };
        let inn_word = inn.map_or(0, |(s, e, _)| pack(s, e));
        let more = inn.map(|(_, _, k)| k - 1);
        // Relaxed, here and below: no other thread reads these words; a
        // process that opens the rings after a crash reads them, and
        // a kill -9 leaves every store executed, in program order (the
        // compiler fences keep the compiler from reordering them).
        m.word64(OFF_INTENT_OUT).store(out, Ordering::Relaxed);
        crate::failpoint::hit();
        m.word64(OFF_INTENT_IN).store(inn_word, Ordering::Relaxed);
        crate::failpoint::hit();
        m.word64(OFF_INTENT_FIRST).store(first, Ordering::Relaxed);
        crate::failpoint::hit();
        // Stored unless it holds the count already (our own record of
        // what we stored: only this writer stores it).
        if let Some(more) = more.filter(|&c| self.consumed_word != Some(c)) {
            m.word64(OFF_INTENT_CONSUMED)
                .store(u64::from(more), Ordering::Relaxed);
            crate::failpoint::hit();
            self.consumed_word = Some(more);
        }
        compiler_fence(Ordering::SeqCst);
        let word = commit_word(out, inn_word, first, n, more);
        m.word64(OFF_INTENT).store(word, Ordering::Relaxed);
        crate::failpoint::hit();
        compiler_fence(Ordering::SeqCst);
        let n = self.w.batch_publish();
        if let Some(r) = consume {
            r.consume_all();
        }
        compiler_fence(Ordering::SeqCst);
        clear(self.w.memory());
        crate::failpoint::hit();
        if n > 0 {
            self.ring();
        }
        Some(n)
    }
}

/// The count a ring reaches with a record moving its index from `start`
/// to `end` by `n` messages, given the index `idx` it holds now and its
/// commit record `rec`; `None` if the ring is at neither end of the move
/// (the record is stale), or its commit record disagrees.
fn count_at_end(start: u32, end: u32, n: u32, idx: u32, rec: u64) -> Option<u32> {
    let (rec_idx, rec_count) = ((rec >> 32) as u32, (rec as u32) >> 1);
    let count = if rec_idx == end {
        // The record of the move itself was stored.
        rec_count
    } else if rec_idx == start && idx == start {
        // The ring's last publication ended at the start.
        rec_count.wrapping_add(n)
    } else {
        return None;
    };
    (idx == start || idx == end).then_some(count & 0x7fff_ffff)
}

/// When a process opens the two rings of a pair (`w` writes one, `r`
/// reads the other): rolls a committed intent forward (see the module).
/// Returns whether there was one to apply; a stale one is cleared.
///
/// # Errors
/// An intent record whose check fails (no honest writer leaves one);
/// nothing is changed.
pub(crate) fn recover<R: Region>(
    w: &mut ShmWriter<R>,
    r: &mut ShmReader<R>,
) -> Result<bool, String> {
    let m: &RegionMemory<R> = w.w.memory();
    // Relaxed: as in `batch_commit`; each word is read once.
    let word = m.word64(OFF_INTENT).load(Ordering::Relaxed);
    if word == 0 {
        return Ok(false);
    }
    let out = m.word64(OFF_INTENT_OUT).load(Ordering::Relaxed);
    let inn = m.word64(OFF_INTENT_IN).load(Ordering::Relaxed);
    let first = m.word64(OFF_INTENT_FIRST).load(Ordering::Relaxed);
    let (consume, n) = (word & CONSUME != 0, (word >> 32) as u32 & MAX_BATCH);
    // A consume's count, less one (checked below against the move
    // itself). A record of one request that checks with 0 is one too: a
    // build before the count wrote it, leaving the word as it was.
    let more = if consume {
        let raw = m.word64(OFF_INTENT_CONSUMED).load(Ordering::Relaxed);
        [u32::try_from(raw).ok(), Some(0)]
            .into_iter()
            .flatten()
            .find(|&c| word == commit_word(out, inn, first, n, Some(c)))
    } else {
        (word == commit_word(out, inn, first, n, None)).then_some(0)
    };
    let Some(more) = more else {
        return Err(format!("intent record {word:#018x} does not check"));
    };
    let more = consume.then_some(more);
    let blocks = (m.capacity() / BLOCK) as u32;
    let ((w_start, w_end), (r_start, r_end)) = (unpack(out), unpack(inn));
    // Acquire: as in the ends' `reload`; each read once.
    let (write, read) = (
        m.write_idx().load(Ordering::Acquire),
        m.read_idx().load(Ordering::Acquire),
    );
    let w_rec = m.write_record().load(Ordering::Relaxed);
    let rm = r.0.memory();
    let (r_read, r_write) = (
        rm.read_idx().load(Ordering::Acquire),
        rm.write_idx().load(Ordering::Acquire),
    );
    let r_rec = rm.read_record().load(Ordering::Relaxed);
    let fits = |start: u32, end: u32| {
        let len = end.wrapping_sub(start);
        len > 0 && len <= blocks
    };
    // This ring: at the batch's start or end, the reader no further than
    // its end. The other: at the request's start or end, the request
    // within what its writer published.
    let w_count = if n == 0 {
        // A consume of several with nothing to publish: this ring stays.
        (consume && out == 0).then_some(0)
    } else {
        count_at_end(w_start, w_end, n, write, w_rec)
            .filter(|_| fits(w_start, w_end) && w_end.wrapping_sub(read) <= blocks)
    };
    let r_count = match more {
        // Each message consumed takes a block at least.
        Some(more) if more < r_end.wrapping_sub(r_start) => {
            count_at_end(r_start, r_end, more + 1, r_read, r_rec)
                .filter(|_| fits(r_start, r_end) && r_write.wrapping_sub(r_end) <= blocks)
        }
        Some(_) => None,
        None => Some(0),
    };
    if let (Some(w_count), Some(r_count)) = (w_count, r_count) {
        if n > 0 {
            w.w.roll_forward(w_start, w_end, w_count, first);
        }
        if consume {
            r.0.roll_forward(r_end, r_count);
        }
    }
    compiler_fence(Ordering::SeqCst);
    clear(w.w.memory());
    crate::failpoint::hit();
    Ok(w_count.is_some() && r_count.is_some())
}
