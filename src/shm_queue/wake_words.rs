//! The wake words of a ring's trailer (`crate::wake`, `docs/protocol.md`,
//! "Sleeping readers"), as each end of the queue uses them: the writer
//! looks for its reader's sleep after every publication once it has
//! acknowledged the reader's announcement; the reader announces, raises
//! its flag and looks at the ring once more before it sleeps.

use super::{Region, ShmReader, ShmWriter};

/// Offset of the reader's "asleep" flag (`crate::wake`; bytes the C++
/// queue leaves unused, in `write_idx`'s line: the writer that looks at it
/// after publishing has the line already).
pub(super) const OFF_WAKE_FLAG: usize = 16;
/// Offset of the writer's wake acknowledgement (in the writer's record
/// line).
pub(super) const OFF_WAKE_ACK: usize = 88;
/// Offset of the reader's wake announcement (in the reader's record line).
pub(super) const OFF_WAKE_ANNOUNCE: usize = 208;

impl<R: Region> ShmWriter<R> {
    /// Now and then (the socket's owner, at its socket polls): if the
    /// reader announced that it may sleep, this writer looks for its flag
    /// after every publication from now on, and acknowledges. Returns
    /// whether it does.
    pub(crate) fn join_wake(&mut self) -> bool {
        let m = self.w.memory();
        if crate::wake::announcement(m.word64(OFF_WAKE_ANNOUNCE)) {
            self.wakes = true;
            // Acknowledged again if the reader cleared it (a new session
            // of the reader).
            if !crate::wake::acknowledged(m.word64(OFF_WAKE_ACK)) {
                crate::wake::acknowledge(m.word64(OFF_WAKE_ACK));
            }
        }
        self.wakes
    }

    /// Stops waking the reader (no owner of the socket will send the
    /// wake-ups): the acknowledgement goes, so the reader sleeps in
    /// slices; a later `join_wake` takes it up again.
    /// Returns whether it did wake it until now: its owner then wakes it
    /// once more, so that a reader asleep on the acknowledgement looks
    /// again.
    pub(crate) fn leave_wake(&mut self) -> bool {
        if !self.wakes {
            return false;
        }
        self.wakes = false;
        self.wake_due = false;
        // Relaxed: a reader asleep on the old acknowledgement is woken once
        // more by the caller, and reads this one then.
        self.w
            .memory()
            .word64(OFF_WAKE_ACK)
            .store(0, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Whether a publication found the reader asleep since the last call:
    /// its owner sends a heartbeat on the session's socket.
    #[inline(always)]
    pub(crate) fn take_wake_due(&mut self) -> bool {
        // A load, and a store only when set (every poll asks).
        if self.wake_due {
            self.wake_due = false;
            return true;
        }
        false
    }
}

impl<R: Region> ShmReader<R> {
    /// At the start of a session: clears the wake words of the last one
    /// (flag, announcement, acknowledgement). A server clears them before
    /// its login response, so the client's writer of this session never
    /// sees the last one's; a client after the response, so the server's
    /// writer may have read the last announcement and acknowledged it
    /// before the clear: it acknowledges again when this session's comes
    /// (`ShmWriter::join_wake`), and until then this reader sleeps in
    /// slices.
    pub(crate) fn reset_wake(&self) {
        let m = self.0.memory();
        for off in [OFF_WAKE_FLAG, OFF_WAKE_ANNOUNCE, OFF_WAKE_ACK] {
            // Relaxed: nothing is published with these; a writer compares
            // them with constants only.
            m.word64(off).store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Announces that this reader may sleep (`crate::wake`).
    pub(crate) fn announce_wake(&self) {
        crate::wake::announce(self.0.memory().word64(OFF_WAKE_ANNOUNCE));
    }

    /// Whether the writer acknowledged: it wakes this reader from now on.
    pub(crate) fn wake_acked(&self) -> bool {
        crate::wake::acknowledged(self.0.memory().word64(OFF_WAKE_ACK))
    }

    /// Going to sleep: raises the flag and looks at the ring once more.
    /// Returns whether the reader may sleep (nothing it can read now); if
    /// not, the flag is down again. (A batch its writer still holds is
    /// nothing to read: the writer wakes it when it lets the batch go.)
    pub(crate) fn sleep(&mut self) -> bool {
        crate::wake::sleep(self.0.memory().word64(OFF_WAKE_FLAG));
        if self.0.ready() {
            self.awake();
            return false;
        }
        true
    }

    /// Raises the flag, for a reader that sleeps on many rings: then one
    /// `wake::before_look` for all, then [`ready`](Self::ready) for each.
    pub(crate) fn raise_flag(&self) {
        crate::wake::raise(self.0.memory().word64(OFF_WAKE_FLAG));
    }

    /// Awake: lowers the flag.
    pub(crate) fn awake(&self) {
        crate::wake::awake(self.0.memory().word64(OFF_WAKE_FLAG));
    }
}
