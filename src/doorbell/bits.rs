//! The doorbell's protocol, on atomic words alone (compiled with loom's
//! atomics by `tests/loom_shm.rs`, so the model checks these very lines).
//!
//! - The reader of a ring (the server) announces, in the ring's trailer,
//!   where the writer's bell is ([`announce`]); the writer reads it
//!   ([`announcement`]) and, once it will ring after every publication,
//!   acknowledges it ([`acknowledge`]). Until the reader sees the
//!   acknowledgement ([`acknowledged`]) it polls the ring at every poll;
//!   after, once more, then only when the bell rings (or the slow sweep
//!   comes by).
//! - The writer rings ([`ring`]: sets its bit) after each publication; the
//!   reader takes a word's bits ([`take`]: swaps it to zero) and polls
//!   the rings they name.
//!
//! A bit stays set until a `take` returns it, and the `take` that returns
//! it sees every message published before the `ring` that set it, so a
//! message published before a ring is never left behind by the bell.

use super::sync::{AtomicU64, Ordering};

/// Sets `bit` in `word`, after a publication. An RMW, always: a "load,
/// and set if clear" would race with the reader's `take` (store buffering:
/// the writer's publication and the reader's swap each unseen by the
/// other) unless both sides paid a SeqCst fence.
#[inline(always)]
pub(crate) fn ring(word: &AtomicU64, bit: u64) {
    // SYNC POINT doorbell-rung: Release, so the messages published before
    // it are visible to the `take` that reads this bit (or a later RMW's
    // value: every ring is an RMW, so each heads a release sequence the
    // reader's swap reads from).
    word.fetch_or(bit, Ordering::Release);
}

/// The bits rung in `word` since the last take, cleared: one load when
/// there are none.
#[inline(always)]
pub(crate) fn take(word: &AtomicU64) -> u64 {
    // Relaxed: a stale zero only leaves the bits for the next poll; a set
    // bit stays set until a swap takes it.
    if word.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    // SYNC POINT doorbell-rung: Acquire pairs with the Release of `ring`:
    // the rings polled next see what was published before their bits.
    word.swap(0, Ordering::Acquire)
}

/// The reader, at the start of a session: clears the writer's
/// acknowledgement, then announces `word` (0: no bell; poll me).
pub(crate) fn announce(ack: &AtomicU64, announced: &AtomicU64, word: u64) {
    // Relaxed: the writer of this session has not started (the login
    // response, sent after this, starts it).
    ack.store(0, Ordering::Relaxed);
    // SYNC POINT doorbell-announced: Release pairs with the Acquire in
    // `announcement` (a writer that reads it also sees the cleared ack).
    announced.store(word, Ordering::Release);
}

/// The writer: what the reader announced (0: nothing).
pub(crate) fn announcement(announced: &AtomicU64) -> u64 {
    // SYNC POINT doorbell-announced: Acquire pairs with `announce`.
    announced.load(Ordering::Acquire)
}

/// The writer: from now on it rings after every publication.
pub(crate) fn acknowledge(ack: &AtomicU64, word: u64) {
    // SYNC POINT doorbell-acked: Release, so the reader that sees it also
    // sees every message published before it (which no ring announced).
    ack.store(word, Ordering::Release);
}

/// The reader: whether the writer acknowledged `word`. When it returns
/// true the reader polls the ring once more, for what was published
/// before the acknowledgement.
pub(crate) fn acknowledged(ack: &AtomicU64, word: u64) -> bool {
    // SYNC POINT doorbell-acked: Acquire pairs with `acknowledge`.
    ack.load(Ordering::Acquire) == word
}
