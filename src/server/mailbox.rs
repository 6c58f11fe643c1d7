//! The channel between the control part and the groups, with a counter
//! so that an empty poll costs one load, not a channel receive, and a
//! waker (an eventfd in the receiving part's readiness set) so that a
//! part asleep wakes for its mail.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::sys::Waker;

/// The sending end (cloned for every group that reports to the control
/// part).
pub(super) struct Outbox<T> {
    tx: Sender<T>,
    count: Arc<AtomicUsize>,
    waker: Arc<Waker>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
            count: self.count.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// The receiving end.
pub(super) struct Inbox<T> {
    rx: Receiver<T>,
    count: Arc<AtomicUsize>,
    waker: Arc<Waker>,
}

/// A mailbox.
///
/// # Errors
/// `eventfd`'s, for its waker.
pub(super) fn mailbox<T>() -> io::Result<(Outbox<T>, Inbox<T>)> {
    let (tx, rx) = channel();
    let count = Arc::new(AtomicUsize::new(0));
    let waker = Arc::new(Waker::new()?);
    Ok((
        Outbox {
            tx,
            count: count.clone(),
            waker: waker.clone(),
        },
        Inbox { rx, count, waker },
    ))
}

impl<T> Outbox<T> {
    /// Sends `v`, and wakes the receiving part; `Err(v)` if it is gone.
    pub(super) fn send(&self, v: T) -> Result<(), T> {
        self.tx.send(v).map_err(|e| e.0)?;
        // Relaxed: the count is only a hint that a message may be waiting;
        // the channel carries the message and its synchronization.
        self.count.fetch_add(1, Ordering::Relaxed);
        // SYNC POINT mail-wake: the count before the wake-up; pairs with
        // the fence in `Inbox::may_sleep`.
        fence(Ordering::SeqCst);
        self.waker.wake();
        Ok(())
    }
}

impl<T> Inbox<T> {
    /// For a part about to sleep: makes the waker not readable, then
    /// whether no mail waits (else do not sleep). Mail sent after this
    /// makes the waker readable again, so the sleep ends at once.
    pub(super) fn may_sleep(&self) -> bool {
        self.waker.reset();
        // SYNC POINT mail-wake: the reset before the look at the count
        // (a send either counts before it, or wakes after the reset).
        fence(Ordering::SeqCst);
        self.is_empty()
    }

    /// The waker's descriptor, for the part's readiness set.
    pub(super) fn waker_fd(&self) -> RawFd {
        self.waker.as_raw_fd()
    }

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
        if self.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The last one: the waker goes quiet, so that the part's
            // readiness set stops reporting it at every poll. Mail sent
            // meanwhile is counted, and `may_sleep` looks at the count
            // after its own reset: nothing is slept through.
            self.waker.reset();
        }
        Some(v)
    }
}
