//! The intent record: a batch, or a consume-and-reply, over shared memory
//! as one step that a crash cannot cut in half.
//!
//! A batch moves the ring's `write_idx` and the writer's commit record; a
//! consume-and-reply also moves `read_idx` (and the reader's record) of
//! the other ring, another object. No single store changes them all, so
//! the writer first records where they are going, in three words of its
//! own ring's trailer that the C++ queue leaves unused and no reader reads
//! (`docs/protocol.md`, "The intent record"):
//!
//! | offset | word |
//! |---|---|
//! | `Q + 96` | commit word: `0x696e << 48`, bit 32 set for a consume, the low 32 bits a check of the three words below (0: none) |
//! | `Q + 104` | this ring's `write_idx` after the batch (low half), its message count after it (high half) |
//! | `Q + 112` | the other ring's `read_idx` after the consume (low half), its message count after it (high half) |
//! | `Q + 120` | the stamped header of the batch's first stop (its first message, or the wrap marker before it) |
//!
//! Commit: the batch's messages are written after `write_idx` (nothing of
//! them readable); the three words are stored, then the commit word: that
//! store is the commit point. Then the batch is published (record,
//! stamp, `write_idx`), the request consumed (record, `read_idx`), and the
//! commit word cleared.
//!
//! Recovery ([`recover`], when a process opens the pair's two rings): a
//! commit word whose check matches is rolled forward: the first stop's
//! header (if `write_idx` has not moved), both rings' records and indices
//! are stored again (each is an absolute value: storing one twice is
//! harmless), then the word is cleared. A crash before the commit
//! point leaves the word 0 (it is cleared after every commit): nothing of
//! the batch is published and the request is not consumed.
//!
//! The words are peer-writable memory: each is read once, checked against
//! the rings' indices (read once too), and a record that no honest writer
//! leaves is refused, never applied.

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

/// High 16 bits of a commit word: "in".
const MAGIC: u64 = 0x696e;
/// Bit 32 of a commit word: the record consumes from the other ring.
const CONSUME: u64 = 1 << 32;

/// An index and a message count, as one word.
fn pack(idx: u32, count: u32) -> u64 {
    u64::from(idx) | u64::from(count) << 32
}

fn unpack(w: u64) -> (u32, u32) {
    (w as u32, (w >> 32) as u32)
}

/// The commit word for the target words `out` and `inn` and the first
/// stop's header `first`.
pub(super) fn commit_word(out: u64, inn: u64, first: u64, consume: bool) -> u64 {
    // A multiply-xorshift mix of the three words (each rotated apart),
    // folded to 32 bits: a record half written, or written by someone
    // else, checks with odds of 2^-32. Cheap: it is on the path of every
    // commit.
    let mut h = out ^ inn.rotate_left(21) ^ first.rotate_left(42);
    h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    let check = (h ^ (h >> 32)) & 0xffff_ffff;
    MAGIC << 48 | if consume { CONSUME } else { 0 } | check
}

impl<R: Region> ShmWriter<R> {
    /// Starts a batch (`ring::Writer::batch_begin`).
    pub(crate) fn batch_begin(&mut self) {
        self.w.batch_begin()
    }

    /// Adds a message to the batch; `None` when it does not fit.
    pub(crate) fn batch_alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.w.batch_alloc(msg_type, payload_len)
    }

    /// The payload of the batch's last message.
    pub(crate) fn batch_payload(&mut self) -> Option<&mut [u8]> {
        self.w.batch_payload()
    }

    /// Messages in the batch.
    pub(crate) fn batch_len(&self) -> u32 {
        self.w.batch_len()
    }

    /// Publishes the batch, and with `consume` (the reader of the pair's
    /// other ring) consumes the message its last `front` returned, as one
    /// step (see the module). Returns the messages published; `None` if
    /// `consume` has no current message (nothing changes).
    pub(crate) fn batch_commit(&mut self, consume: Option<&mut ShmReader<R>>) -> Option<u32> {
        let inn = match &consume {
            Some(r) => Some(r.0.pop_target()?),
            None => None,
        };
        let Some(out) = self.w.batch_target() else {
            // Nothing to publish: a pop alone is one step already.
            if let Some(r) = consume {
                r.pop();
            }
            return Some(0);
        };
        let first = self.w.batch_first().unwrap_or(0);
        let m = self.w.memory();
        let (out, inn_word) = (pack(out.0, out.1), inn.map_or(0, |(i, c)| pack(i, c)));
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
        compiler_fence(Ordering::SeqCst);
        let word = commit_word(out, inn_word, first, inn.is_some());
        m.word64(OFF_INTENT).store(word, Ordering::Relaxed);
        crate::failpoint::hit();
        compiler_fence(Ordering::SeqCst);
        let n = self.w.batch_publish();
        if let Some(r) = consume {
            r.pop();
        }
        compiler_fence(Ordering::SeqCst);
        self.w
            .memory()
            .word64(OFF_INTENT)
            .store(0, Ordering::Relaxed);
        crate::failpoint::hit();
        self.ring();
        Some(n)
    }
}

/// Checks the target `(idx, count)` against a ring whose published index
/// is `from` and whose other index is `other`: `idx` at most a ring ahead
/// of both (`from` and `other` bound the distance the record may move).
fn check(m_blocks: u32, idx: u32, from: u32, other: u32) -> bool {
    idx.wrapping_sub(from) <= m_blocks && idx.wrapping_sub(other) <= m_blocks
}

/// When a process opens the two rings of a pair (`w` writes one, `r`
/// reads the other): rolls a committed intent forward (see the module).
/// Returns whether there was one.
///
/// # Errors
/// An intent record no honest writer leaves (its check, or its targets
/// against the rings' indices); nothing is changed.
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
    let consume = word & CONSUME != 0;
    if word != commit_word(out, inn, first, consume) {
        return Err(format!("intent record {word:#018x} does not check"));
    }
    let blocks = (m.capacity() / BLOCK) as u32;
    // Acquire: as in the ends' `reload`.
    let (write, read) = (
        m.write_idx().load(Ordering::Acquire),
        m.read_idx().load(Ordering::Acquire),
    );
    let (w_end, w_count) = unpack(out);
    // The batch ends at most a ring after the index it started from, and
    // after what the reader consumed.
    if !check(blocks, w_end, write, read) {
        return Err(format!(
            "intent record: write index {w_end} impossible (write {write}, read {read})"
        ));
    }
    let rm = r.0.memory();
    let (r_read, r_write) = (
        rm.read_idx().load(Ordering::Acquire),
        rm.write_idx().load(Ordering::Acquire),
    );
    let (r_end, r_count) = unpack(inn);
    let r_blocks = (rm.capacity() / BLOCK) as u32;
    // The request ends after our read index and at or before the peer's
    // write index.
    if consume && (r_end.wrapping_sub(r_read) > r_blocks || r_write.wrapping_sub(r_end) > r_blocks)
    {
        return Err(format!(
            "intent record: read index {r_end} impossible (read {r_read}, write {r_write})"
        ));
    }
    w.w.roll_forward(w_end, w_count & 0x7fff_ffff, first);
    if consume {
        r.0.roll_forward(r_end, r_count & 0x7fff_ffff);
    }
    compiler_fence(Ordering::SeqCst);
    w.w.memory().word64(OFF_INTENT).store(0, Ordering::Relaxed);
    crate::failpoint::hit();
    Ok(true)
}
