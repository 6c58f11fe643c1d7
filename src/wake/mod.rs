//! Waking a reader asleep across processes: how a shared-memory reader
//! that sleeps in its epoll set learns that its writer published.
//!
//! A sleeping reader waits on the session's TCP socket, which the peer's
//! heartbeats already use. Its writer, after publishing, sees the
//! reader's flag in the ring's trailer (`bits`) and sends a protocol-v1
//! heartbeat frame on that socket: the socket turns readable and the
//! reader wakes. A heartbeat is valid for any peer, so nothing new goes
//! on the wire, and the three words the protocol uses are trailer bytes a
//! C++ peer leaves alone (`docs/protocol.md`, "Sleeping readers"). A C++
//! writer never acknowledges, so its reader sleeps in short slices
//! (`Config::shm_sweep_interval`).
//!
//! The flag is peer-written: a hostile reader can keep it up, and gets a
//! heartbeat per publication on its own connection; a hostile writer can
//! skip the wake, and its reader wakes at its next deadline.

mod bits;

/// The atomics `bits` uses (loom's in the loom test).
pub(crate) mod sync {
    pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
}

pub(crate) use self::bits::{
    acknowledge, acknowledged, announce, announcement, awake, before_look, must_wake, raise, sleep,
};
