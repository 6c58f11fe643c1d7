//! The channel between the control part and the groups, with a counter
//! so that an empty poll costs one load, not a channel receive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// The sending end (cloned for every group that reports to the control
/// part).
pub(super) struct Outbox<T> {
    tx: Sender<T>,
    count: Arc<AtomicUsize>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
            count: self.count.clone(),
        }
    }
}

/// The receiving end.
pub(super) struct Inbox<T> {
    rx: Receiver<T>,
    count: Arc<AtomicUsize>,
}

pub(super) fn mailbox<T>() -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = channel();
    let count = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            count: count.clone(),
        },
        Inbox { rx, count },
    )
}

impl<T> Outbox<T> {
    /// Sends `v`; `Err(v)` if the receiving part is gone.
    pub(super) fn send(&self, v: T) -> Result<(), T> {
        self.tx.send(v).map_err(|e| e.0)?;
        // Relaxed: the count is only a hint that a message may be waiting;
        // the channel carries the message and its synchronization.
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl<T> Inbox<T> {
    /// Whether nothing is waiting: one load (a hint, as in `take`).
    #[inline(always)]
    pub(super) fn is_empty(&self) -> bool {
        // Relaxed: see `take`.
        self.count.load(Ordering::Relaxed) == 0
    }

    /// A waiting message, if any: one load when there is none.
    #[inline]
    pub(super) fn take(&self) -> Option<T> {
        // Relaxed: a hint (see Outbox::send). A stale 0 leaves the message
        // for a later poll; a count whose message is not visible yet makes
        // try_recv come back empty, and the count stays for the next poll.
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let v = self.rx.try_recv().ok()?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(v)
    }
}
