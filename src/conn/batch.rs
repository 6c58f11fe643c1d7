//! [`Batch`]: messages published as one step, and the consume-and-reply
//! that also consumes the request they answer.

use std::fmt;

use super::rx::RxTransport;
use super::tx::TxTransport;
use super::{AllocError, ConnRx, ConnTx, Received};
use crate::wire::{padded, HEADER_SIZE};

/// Why a batch was not committed. Nothing of it was published, and the
/// requests it was to consume stay unconsumed (they are delivered again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitError {
    /// An [`alloc`](Batch::alloc) of the batch failed: a batch is
    /// published whole or not at all. A consuming commit gives the
    /// messages held back ([`ConnRx::unhold`](crate::ConnRx::unhold)).
    Alloc(AllocError),
    /// The request was received on another connection than the one the
    /// batch is for (its messages held stay held).
    OtherConnection,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitError::Alloc(e) => write!(f, "batch not committed: {e}"),
            CommitError::OtherConnection => {
                f.write_str("the request was received on another connection")
            }
        }
    }
}

impl std::error::Error for CommitError {}

/// Messages published together: after a crash at any instruction, the
/// send queue holds all of them or none. Made by [`ConnTx::batch`].
///
/// Fill it with [`alloc`](Self::alloc), then
/// - [`commit`](Self::commit) publishes every message of it, as one step;
/// - [`commit_consuming`](Self::commit_consuming) publishes them and
///   consumes the received message they answer, as one step: exactly-once
///   request/reply, across crashes of either side. Messages held before
///   it ([`Received::hold`]) are consumed in the same step, so one batch
///   answers several requests;
/// - [`commit_consuming_held`](Self::commit_consuming_held) publishes them
///   and consumes the messages held.
///
/// Dropped (or forgotten) without a commit, it publishes nothing. The
/// peer, a C++ peer included, receives ordinary messages, in order.
///
/// ```no_run
/// # fn answer(conn: &mut tcpshm::Connection) {
/// let (rx, tx) = conn.split();
/// while let Some(req) = rx.front() {
///     let mut batch = tx.batch();
///     // An order and its two legs, say: all three or none.
///     for leg in 0..3u8 {
///         match batch.alloc(req.msg_type(), req.payload().len()) {
///             Ok(p) => {
///                 p.copy_from_slice(req.payload());
///                 p[0] = leg;
///             }
///             Err(_) => break, // the queue is full: commit fails whole
///         }
///     }
///     // The replies are queued and the request consumed, or neither:
///     // a restarted process gets exactly the requests it has not answered.
///     if batch.commit_consuming(req).is_err() {
///         break; // not committed: the request comes back at the next poll
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a batch publishes nothing until it is committed"]
pub struct Batch<'a> {
    pub(super) tx: &'a mut ConnTx,
    /// Payload bytes allocated (statistics).
    bytes: u64,
    /// Bytes the batch takes in the send queue, headers and padding
    /// included.
    size: usize,
    /// The first failed `alloc`: the batch then commits nothing.
    pub(super) failed: Option<AllocError>,
}

impl ConnTx {
    /// Starts a [`Batch`]: messages published together, all or none.
    /// Works while disconnected too, as [`alloc`](Self::alloc) does.
    #[inline]
    pub fn batch(&mut self) -> Batch<'_> {
        match &mut self.t {
            TxTransport::Tcp { queue, .. } => queue.batch_begin(),
            TxTransport::Shm(w) => w.batch_begin(),
            TxTransport::None => {}
        }
        Batch {
            tx: self,
            bytes: 0,
            size: 0,
            failed: None,
        }
    }
}

impl Batch<'_> {
    /// Adds a message of `msg_type` with a payload of `len` bytes and
    /// returns the payload to fill (until the next `alloc`).
    ///
    /// # Errors
    /// As [`ConnTx::alloc`], and [`AllocError::Full`] when the batch as a
    /// whole does not fit the send queue now (or, for a batch larger than
    /// the queue, [`AllocError::BatchTooLarge`]). After an error the batch
    /// commits nothing: drop it, poll, and try again.
    #[inline]
    pub fn alloc(&mut self, msg_type: u16, len: usize) -> Result<&mut [u8], AllocError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if super::tx::reserved(msg_type) {
            return Err(self.fail(AllocError::ReservedType));
        }
        self.alloc_frame(msg_type, len)?;
        Ok(self.payload().unwrap_or(&mut []))
    }

    /// Adds a frame of any type (fragments too); see [`alloc`](Self::alloc).
    #[inline]
    pub(super) fn alloc_frame(&mut self, msg_type: u16, len: usize) -> Result<(), AllocError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.try_alloc(msg_type, len).map_err(|e| self.fail(e))
    }

    /// Records the batch's first failure (it then commits nothing).
    pub(super) fn fail(&mut self, e: AllocError) -> AllocError {
        *self.failed.get_or_insert(e)
    }

    /// The payload of the batch's last message.
    #[inline]
    pub(super) fn payload(&mut self) -> Option<&mut [u8]> {
        match &mut self.tx.t {
            TxTransport::Tcp { queue, .. } => queue.batch_payload(),
            TxTransport::Shm(w) => w.batch_payload(),
            TxTransport::None => None,
        }
    }

    #[inline]
    fn try_alloc(&mut self, msg_type: u16, len: usize) -> Result<(), AllocError> {
        if len > self.tx.max_payload {
            return Err(match self.tx.t {
                TxTransport::None => AllocError::NotOpen,
                _ => AllocError::TooLarge {
                    len,
                    max: self.tx.max_payload,
                },
            });
        }
        let (ok, size, capacity) = match &mut self.tx.t {
            TxTransport::Tcp { queue, .. } => (
                queue.batch_alloc(msg_type, len).is_some(),
                padded(HEADER_SIZE + len),
                queue.capacity(),
            ),
            TxTransport::Shm(w) if w.batch_len() >= crate::shm_queue::MAX_BATCH => {
                return Err(AllocError::BatchTooLarge {
                    bytes: self.size,
                    capacity: self.size,
                })
            }
            TxTransport::Shm(w) => (
                w.batch_alloc(msg_type, len).is_some(),
                (HEADER_SIZE + len).next_multiple_of(crate::shm_queue::BLOCK),
                // One block stays free after the last message.
                w.capacity() - crate::shm_queue::BLOCK,
            ),
            TxTransport::None => return Err(AllocError::NotOpen),
        };
        self.size += size;
        if self.size > capacity {
            return Err(AllocError::BatchTooLarge {
                bytes: self.size,
                capacity,
            });
        }
        if !ok {
            return Err(AllocError::Full);
        }
        self.bytes += len as u64;
        Ok(())
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        (match &self.tx.t {
            TxTransport::Tcp { queue, .. } => queue.batch_len(),
            TxTransport::Shm(w) => w.batch_len(),
            TxTransport::None => 0,
        }) as usize
    }

    /// Whether the batch has no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes every message of the batch as one step, and over TCP
    /// sends them now if connected. Once this returns they are persisted,
    /// as after [`Alloc::push`](super::Alloc::push). Returns the messages
    /// published.
    ///
    /// # Errors
    /// [`CommitError::Alloc`] if an `alloc` of the batch failed: nothing
    /// is published.
    #[inline]
    pub fn commit(self) -> Result<usize, CommitError> {
        if let Some(e) = self.failed {
            return Err(CommitError::Alloc(e));
        }
        let tx = self.tx;
        let n = match &mut tx.t {
            TxTransport::Tcp { queue, .. } => {
                let c = queue.batch_commit(None).unwrap_or_default();
                tx.sent_tcp(c.stamped, true);
                c.messages
            }
            TxTransport::Shm(w) => w.batch_commit(None).unwrap_or(0),
            TxTransport::None => 0,
        };
        tx.sent.0 += u64::from(n);
        tx.sent.1 += self.bytes;
        Ok(n as usize)
    }

    /// Publishes every message of the batch and consumes `req`, the
    /// request they answer, and the messages held before it
    /// ([`Received::hold`]), as one step: after a crash at any
    /// instruction, either the requests are all still unconsumed (they
    /// are delivered again) and none of the batch is queued, or they are
    /// consumed and all of the batch is queued. An empty batch just
    /// consumes them.
    ///
    /// Over TCP the local ack and the send queue are in one file; over
    /// shared memory the two rings are two objects, and an intent record
    /// in this side's ring (`docs/protocol.md`) lets the next open of the
    /// pair finish a commit a crash cut short.
    ///
    /// # Errors
    /// [`CommitError::Alloc`] if an `alloc` of the batch failed (the
    /// messages held are given back), or [`CommitError::OtherConnection`]
    /// if `req` was received on another connection. Nothing is published
    /// and nothing consumed.
    #[inline]
    pub fn commit_consuming(self, req: Received<'_>) -> Result<usize, CommitError> {
        let (rx, len, large) = req.into_rx();
        self.commit_consuming_in(rx, Some((len, large)))
    }

    /// Publishes every message of the batch and consumes the messages
    /// held in `rx` ([`Received::hold`]), as one step, as
    /// [`commit_consuming`](Self::commit_consuming) does: for requests
    /// answered once no more are waiting. With none held, a
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    /// As `commit_consuming`; `rx` of another connection is
    /// [`CommitError::OtherConnection`].
    pub fn commit_consuming_held(self, rx: &mut ConnRx) -> Result<usize, CommitError> {
        if self.failed.is_none() && rx.conn == self.tx.conn && rx.held() == 0 {
            return self.commit();
        }
        self.commit_consuming_in(rx, None)
    }

    /// Commits, consuming the messages held in `rx` and `current` (its
    /// payload length, and whether it is large), if any.
    #[inline]
    fn commit_consuming_in(
        self,
        rx: &mut ConnRx,
        current: Option<(usize, bool)>,
    ) -> Result<usize, CommitError> {
        let tx = self.tx;
        if rx.conn != tx.conn {
            return Err(CommitError::OtherConnection);
        }
        if let Some(e) = self.failed {
            rx.unhold();
            return Err(CommitError::Alloc(e));
        }
        let held = rx.held();
        let n = match (&mut tx.t, &mut rx.t) {
            (TxTransport::Tcp { queue, .. }, RxTransport::Tcp { buf, ack }) => {
                let k = held + u32::from(current.is_some());
                let c = queue
                    .batch_commit(Some((ack, k)))
                    .ok_or(CommitError::OtherConnection)?;
                if current.is_some() {
                    buf.pop();
                }
                if held != 0 {
                    buf.consume_held();
                }
                tx.sent_tcp(c.stamped, true);
                c.messages
            }
            (TxTransport::Shm(w), RxTransport::Shm(r)) => {
                if current.is_none() {
                    // The held alone: not a message `front` returned since
                    // (dropped, or a large one still coming).
                    r.forget_current();
                }
                // `req` is the reader's current message, or messages are
                // held: there is something to consume.
                let n = w.batch_commit(Some(r));
                debug_assert!(n.is_some(), "a received message is current");
                n.ok_or(CommitError::OtherConnection)?
            }
            _ => return Err(CommitError::OtherConnection),
        };
        if held != 0 {
            rx.count_held(held);
        }
        match current {
            // The commit consumed its first fragment, which consumes it.
            Some((_, true)) => rx.pop_large(true),
            Some((len, false)) => rx.count_pop(len),
            None => {}
        }
        tx.sent.0 += u64::from(n);
        tx.sent.1 += self.bytes;
        Ok(n as usize)
    }
}
