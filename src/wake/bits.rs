//! The wake protocol, on atomic words alone (compiled with loom's atomics
//! by `tests/loom_shm.rs`, so the model checks these very lines).
//!
//! - A reader that may sleep announces it in its ring's trailer
//!   ([`announce`]); the writer, once it looks for sleep after every
//!   publication, acknowledges ([`acknowledge`]). Until the reader sees
//!   the acknowledgement ([`acknowledged`]) it sleeps in short slices: a
//!   C++ writer never acknowledges.
//! - Going to sleep, the reader raises its flag and looks at the ring
//!   once more ([`sleep`], or [`raise`] for each ring and one
//!   [`before_look`], then its own look); awake, it lowers the flag
//!   ([`awake`]).
//! - After each publication the writer asks [`must_wake`]: the flag was
//!   up, and is now down; its owner then sends a heartbeat on the
//!   session's socket, which the sleeping reader waits on.
//!
//! No wake-up is lost: the reader's flag store and its look at the ring,
//! and the writer's publication and its look at the flag, are each
//! separated by a SeqCst fence, so at least one side sees the other's
//! store (SYNC POINT wake-flag): either the reader sees the message and
//! does not sleep, or the writer sees the flag and wakes it.

use super::sync::{fence, AtomicU64, Ordering};

/// What [`announce`] and [`acknowledge`] store: "wake", version 1.
pub(crate) const ANNOUNCED: u64 = 0x7761_6b65_0000_0001;
/// The reader's flag while it sleeps.
const ASLEEP: u64 = 1;

/// The reader: it may sleep from now on, and asks its writer to wake it.
#[inline]
pub(crate) fn announce(announced: &AtomicU64) {
    // Relaxed: nothing is published with it; the writer's acknowledgement
    // carries the ordering that matters (SYNC POINT wake-acked).
    announced.store(ANNOUNCED, Ordering::Relaxed);
}

/// The writer: whether its reader announced that it may sleep.
#[inline]
pub(crate) fn announcement(announced: &AtomicU64) -> bool {
    // Relaxed: peer-written, compared only.
    announced.load(Ordering::Relaxed) == ANNOUNCED
}

/// The writer: from now on it looks for the reader's flag after every
/// publication.
#[inline]
pub(crate) fn acknowledge(ack: &AtomicU64) {
    // SYNC POINT wake-acked: Release, so a reader that sees it also sees
    // every message published before it (after which the writer did not
    // look at the flag).
    ack.store(ANNOUNCED, Ordering::Release);
}

/// The reader: whether its writer acknowledged (then it may sleep until a
/// deadline, not in slices).
#[inline]
pub(crate) fn acknowledged(ack: &AtomicU64) -> bool {
    // SYNC POINT wake-acked: Acquire pairs with `acknowledge`.
    ack.load(Ordering::Acquire) == ANNOUNCED
}

/// The reader, going to sleep: raises its flag. It must then run
/// [`before_look`] (once for any number of rings) and look at the ring
/// once more, and sleep only if that finds nothing.
#[inline]
pub(crate) fn raise(asleep: &AtomicU64) {
    // Relaxed: the fence in `before_look` orders it.
    asleep.store(ASLEEP, Ordering::Relaxed);
}

/// The reader, between raising its flags and its last look at the rings.
#[inline]
pub(crate) fn before_look() {
    // SYNC POINT wake-flag: the flags before the reader's look at the
    // rings; pairs with the fence in `must_wake`.
    fence(Ordering::SeqCst);
}

/// [`raise`] and [`before_look`], for one ring.
#[inline]
pub(crate) fn sleep(asleep: &AtomicU64) {
    raise(asleep);
    before_look();
}

/// The reader, awake (woken, timed out, or it found work): lowers its
/// flag.
#[inline]
pub(crate) fn awake(asleep: &AtomicU64) {
    // Relaxed: a writer that still sees the flag sends one heartbeat too
    // many, which is harmless.
    asleep.store(0, Ordering::Relaxed);
}

/// The writer, after a publication: whether its reader sleeps (its flag
/// is lowered: one wake-up per sleep). Peer-written: any value but 0
/// counts as up.
#[inline]
pub(crate) fn must_wake(asleep: &AtomicU64) -> bool {
    // SYNC POINT wake-flag: the publication before the look at the flag;
    // pairs with the fence in `before_look`.
    fence(Ordering::SeqCst);
    // Relaxed: the fences order these; the swap only lowers the flag.
    asleep.load(Ordering::Relaxed) != 0 && asleep.swap(0, Ordering::Relaxed) != 0
}
