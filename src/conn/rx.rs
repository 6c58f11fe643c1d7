//! The receive half of a connection: [`ConnRx`] and the [`Received`]
//! message it lends out.

use super::large::RxLarge;
use crate::close::{Close, CloseReason};
use crate::ptcp_queue::AckCounter;
use crate::session::RecvBuf;
use crate::shm_queue::ShmReader;
use crate::wire::FRAGMENT_TYPE;

/// The length half of a [`Received`] word that stands for a large message
/// (no frame's payload is this long): the payload is the assembler's.
pub(super) const LARGE: u32 = 0xffff;

#[derive(Debug)]
pub(crate) enum RxTransport {
    None,
    /// The receive buffer and the local ack of the pair's queue file
    /// (its only writer: a pop advances it).
    Tcp {
        buf: RecvBuf,
        ack: AckCounter,
    },
    Shm(ShmReader),
}

/// The receive half of a connection. It may live on another thread than
/// the send half ([`ConnTx`](super::ConnTx)): the only state the two share
/// is the local ack word, which both reach atomically.
#[derive(Debug)]
pub struct ConnRx {
    pub(crate) t: RxTransport,
    /// Messages popped, to tell whether a callback consumed its message.
    pub(crate) pops: u64,
    /// A corrupt shm queue seen by `front`, reported by the next poll.
    pub(crate) fault: Option<Close>,
    /// Messages and payload bytes popped, ever (statistics).
    pub(crate) pops_total: u64,
    pub(crate) bytes: u64,
    /// The connection this half belongs to (`Connection::new`'s number,
    /// shared with its send half).
    pub(crate) conn: u64,
    /// The large message being put together (`Config::max_message_size`
    /// set), else `None`.
    pub(crate) large: Option<Box<RxLarge>>,
    /// Payload bytes of the messages held (statistics, counted once they
    /// are consumed).
    pub(crate) held_payload: u64,
}

/// A received message, borrowed from the receive buffer or the shared
/// memory queue (zero copy). Pop it to consume it; drop it to have it
/// delivered again; [`hold`](Self::hold) it to read the next one and
/// consume both later, in one step.
///
/// Two scalars (a reference and one word), so `Option<Received>` comes
/// back from `front` in registers. Where `front` is not inlined, a larger
/// one goes through the stack, and an x86 core that reads it back in wider
/// loads than it was stored with waits for every earlier store to reach the
/// cache, including the last pop's `read_idx` store, a cache miss while the
/// writer polls that line (a full ring): that cost the streaming benchmark
/// three quarters of its throughput. Where the message is stays in the
/// transport (the receive buffer's read position, or the shared-memory
/// reader's current message).
#[derive(Debug)]
#[must_use = "a message is consumed only by `pop` or a commit; dropped, it is delivered again"]
pub struct Received<'a> {
    pub(super) rx: &'a mut ConnRx,
    /// `msg_type << 16 | payload length` (a frame is at most 65535
    /// bytes, its header included), or `msg_type << 16 | LARGE`.
    pub(super) word: u32,
}

// Two words, returned in registers (see `Received`).
const _: () = assert!(std::mem::size_of::<Option<Received<'static>>>() == 16);

impl<'a> Received<'a> {
    /// A message of one frame, first in line in `rx`.
    #[inline(always)]
    fn frame(rx: &'a mut ConnRx, msg_type: u16, len: u16) -> Self {
        Received {
            rx,
            word: u32::from(msg_type) << 16 | u32::from(len),
        }
    }

    /// The message type (1..=65535).
    #[inline]
    pub fn msg_type(&self) -> u16 {
        (self.word >> 16) as u16
    }

    /// Payload bytes.
    #[inline]
    fn len(&self) -> usize {
        self.word as u16 as usize
    }

    /// The payload: in place in the receive buffer or the shared memory,
    /// or, for a message larger than one frame (`Config::max_message_size`),
    /// the copy its fragments were put together in.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        if self.is_large() {
            return self.rx.large_payload();
        }
        match &self.rx.t {
            RxTransport::Tcp { buf, .. } => buf.front_payload(self.len()),
            RxTransport::Shm(r) => r.current().map_or(&[][..], |(_, p)| p),
            RxTransport::None => &[],
        }
    }

    /// Messages received on this pair before this one: those popped (see
    /// [`ConnRx::messages_popped`]) and those held.
    #[inline]
    pub fn popped_before(&self) -> u32 {
        self.rx.messages_popped().wrapping_add(self.rx.held()) & 0x7fff_ffff
    }

    /// Consumes the message, and first the messages held before it (see
    /// [`hold`](Self::hold)). Over TCP the new local ack is persisted in
    /// the queue file at once, so after a crash the peer does not deliver
    /// it again; over shared memory the read index is the persistence.
    #[inline]
    pub fn pop(self) {
        if self.is_large() {
            return self.rx.pop_large(false);
        }
        self.rx.bytes += self.len() as u64;
        self.rx.pop_current();
    }

    /// The frames this message took: 1, or the fragments of a large
    /// message. [`ConnRx::messages_popped`] counts frames.
    #[inline]
    pub fn frames(&self) -> u32 {
        if self.is_large() {
            self.rx.large.as_ref().map_or(1, |l| l.frames())
        } else {
            1
        }
    }

    /// Holds the message: it stays unconsumed, and the next
    /// [`ConnRx::front`] returns the message after it. Messages held are
    /// consumed together, as one step, by the next
    /// [`Batch::commit_consuming`](crate::Batch::commit_consuming) or
    /// [`commit_consuming_held`](crate::Batch::commit_consuming_held) on
    /// this connection; the next [`pop`](Self::pop) consumes them before
    /// its own message (over shared memory one by one: a crash between
    /// two leaves the rest unconsumed, counted exactly). They are given
    /// back by [`ConnRx::unhold`] and by a commit that fails. A new session
    /// gives them back too: the peer sends them again. Copy out what you
    /// need of the payload first.
    ///
    /// Held messages take room: over TCP in the receive buffer
    /// (`Config::tcp_recv_buf_max_size`), over shared memory in the
    /// peer's ring. When it is full, `front` returns `None` until they
    /// are consumed.
    ///
    /// # Errors
    /// A large message (more than one frame, [`frames`](Self::frames)) is
    /// not held: its fragments are not kept. It is given back, still
    /// first in line: consume it (with those held) by a commit or a pop.
    /// (So is a message of a shared-memory peer that rewrote what it
    /// published, so that the held would span more than its ring; the
    /// next poll then ends the session as corrupt.)
    ///
    /// ```no_run
    /// # fn answer(conn: &mut tcpshm::Connection) {
    /// let (rx, tx) = conn.split();
    /// let mut batch = tx.batch();
    /// // Up to 16 requests answered, and consumed, as one step.
    /// while batch.len() < 16 {
    ///     let Some(req) = rx.front() else { break };
    ///     if batch.append(req.msg_type(), req.payload()).is_err() {
    ///         break; // the batch commits nothing: the requests come again
    ///     }
    ///     if let Err(large) = req.hold() {
    ///         // Its reply is in the batch: it is the last request.
    ///         let _ = batch.commit_consuming(large);
    ///         return;
    ///     }
    /// }
    /// let _ = batch.commit_consuming_held(rx);
    /// # }
    /// ```
    pub fn hold(self) -> Result<(), Received<'a>> {
        if self.is_large() {
            return Err(self);
        }
        let len = self.len() as u64;
        let held = match &mut self.rx.t {
            RxTransport::Tcp { buf, .. } => {
                buf.hold();
                true
            }
            RxTransport::Shm(r) => r.hold(),
            RxTransport::None => return Ok(()),
        };
        if !held {
            // Only a writer that rewrote what it published: the poll ends
            // the session.
            self.rx.fault = Some(Close::new(CloseReason::ShmCorrupt));
            return Err(self);
        }
        self.rx.held_payload += len;
        // A delivery loop goes on to the next message.
        self.rx.pops += 1;
        Ok(())
    }

    /// Whether another frame has arrived whole after this one (a heartbeat
    /// is not one; the first fragment of a large message is): what a
    /// handler that answers several requests in one commit asks before it
    /// [`hold`](Self::hold)s this one (with no more waiting, it commits
    /// now, consuming this one too). One check of what was received: no
    /// system call.
    pub fn next_ready(&mut self) -> bool {
        let large = self.is_large();
        match &mut self.rx.t {
            RxTransport::Tcp { buf, .. } => buf.next_ready(),
            RxTransport::Shm(r) => {
                let at = if large {
                    self.rx.large.as_ref().and_then(|l| l.end())
                } else {
                    r.current_end()
                };
                at.is_some_and(|at| r.ready_at(at))
            }
            RxTransport::None => false,
        }
    }

    /// Whether this is a large message, put together from fragments.
    #[inline]
    pub(super) fn is_large(&self) -> bool {
        self.word & 0xffff == LARGE
    }

    /// The receive half the message is in, its payload length, and
    /// whether it is large: for a commit that consumes it
    /// (`Batch::commit_consuming`).
    pub(crate) fn into_rx(self) -> (&'a mut ConnRx, usize, bool) {
        let (len, large) = (self.len(), self.is_large());
        (self.rx, len, large)
    }
}

impl ConnRx {
    pub(crate) fn none(conn: u64) -> Self {
        ConnRx {
            t: RxTransport::None,
            pops: 0,
            fault: None,
            pops_total: 0,
            bytes: 0,
            conn,
            large: None,
            held_payload: 0,
        }
    }

    /// The next application message, heartbeats hidden, or `None`.
    #[inline]
    pub fn front(&mut self) -> Option<Received<'_>> {
        let (msg_type, len) = match &mut self.t {
            RxTransport::Tcp { buf, .. } => match buf.front()? {
                // Inside a large message (its first fragments stepped
                // over): whatever comes is its next fragment, or wrong.
                _ if buf.stepping() => return self.front_large(),
                f => f,
            },
            RxTransport::Shm(r) => match r.front() {
                // A header's size is a u16 and counts the header too.
                Ok(Some((t, p))) => (t, p.len() as u16),
                Ok(None) => return None,
                Err(_) => {
                    self.fault = Some(Close::new(CloseReason::ShmCorrupt));
                    return None;
                }
            },
            RxTransport::None => return None,
        };
        if msg_type == FRAGMENT_TYPE {
            return self.front_large();
        }
        Some(Received::frame(self, msg_type, len))
    }

    /// The message first in line, as `front` finds it, when it is known
    /// not to be a fragment (after orphan fragments were skipped).
    pub(super) fn front_plain(&mut self) -> Option<Received<'_>> {
        let (msg_type, len) = match &mut self.t {
            RxTransport::Tcp { buf, .. } => buf.front()?,
            RxTransport::Shm(r) => r.current().map(|(t, p)| (t, p.len() as u16))?,
            RxTransport::None => return None,
        };
        Some(Received::frame(self, msg_type, len))
    }

    /// Counts a message consumed by a commit (the transport did the rest).
    pub(crate) fn count_pop(&mut self, len: usize) {
        self.bytes += len as u64;
        self.pops += 1;
        self.pops_total += 1;
    }

    #[inline(always)]
    fn pop_current(&mut self) {
        let held = match &mut self.t {
            RxTransport::Tcp { buf, ack } => {
                buf.pop();
                let held = buf.held();
                if held == 0 {
                    ack.advance();
                } else {
                    // One store of the ack consumes the held too.
                    buf.consume_held();
                    ack.set(ack.get().wrapping_add(held + 1));
                }
                held
            }
            // The reader releases the held first.
            RxTransport::Shm(r) => r.pop(),
            RxTransport::None => return,
        };
        if held != 0 {
            self.count_held(held);
        }
        self.pops += 1;
        self.pops_total += 1;
    }

    /// Counts `held` messages held and now consumed (statistics).
    #[cold]
    pub(super) fn count_held(&mut self, held: u32) {
        self.pops_total += u64::from(held);
        self.bytes += std::mem::take(&mut self.held_payload);
    }

    /// Messages held ([`Received::hold`]) and not consumed yet.
    #[inline]
    pub fn held(&self) -> u32 {
        match &self.t {
            RxTransport::Tcp { buf, .. } => buf.held(),
            RxTransport::Shm(r) => r.held(),
            RxTransport::None => 0,
        }
    }

    /// Gives the messages held back, unconsumed: the next
    /// [`front`](Self::front) returns the first of them again. A
    /// [`Batch::commit_consuming`](crate::Batch::commit_consuming) (or
    /// `commit_consuming_held`) that fails on its batch does this itself
    /// (one refused as `OtherConnection` leaves them held); call it after
    /// dropping a batch you meant to commit with them.
    pub fn unhold(&mut self) {
        if self.held() == 0 {
            return;
        }
        match &mut self.t {
            RxTransport::Tcp { buf, .. } => buf.unhold(),
            RxTransport::Shm(r) => r.unhold(),
            RxTransport::None => {}
        }
        self.held_payload = 0;
        // A large message after them is read again from its start.
        if let Some(l) = &mut self.large {
            l.reset();
        }
    }

    /// Application messages popped from this pair since it was (re)set,
    /// mod 2^31. Persisted with each pop, so exact after a crash at any
    /// instruction: an application can keep its own state consistent with
    /// it (`examples/exactly_once.rs`). Counted per transport, as
    /// [`ConnTx::messages_pushed`](crate::ConnTx::messages_pushed).
    #[inline]
    pub fn messages_popped(&self) -> u32 {
        match &self.t {
            RxTransport::Tcp { ack, .. } => ack.get() & 0x7fff_ffff,
            RxTransport::Shm(r) => r.popped(),
            RxTransport::None => 0,
        }
    }

    /// The local ack: application messages consumed from the peer (TCP).
    pub fn local_ack(&self) -> u32 {
        match &self.t {
            RxTransport::Tcp { ack, .. } => ack.get(),
            _ => 0,
        }
    }

    /// Whether this side reads over the shared-memory fast path now.
    pub(crate) fn shm_fast(&self) -> bool {
        matches!(&self.t, RxTransport::Shm(r) if r.is_fast())
    }

    /// The shared-memory reader, over shared memory.
    pub(crate) fn shm_reader(&mut self) -> Option<&mut crate::shm_queue::ShmReader> {
        match &mut self.t {
            RxTransport::Shm(r) => Some(r),
            _ => None,
        }
    }

    /// Whether whole messages are waiting (TCP), or may be (shm: on the
    /// fast path one load of the next header, on v1 the cached index or
    /// one load of `write_idx`). What an empty poll costs, and what ends a
    /// delivery loop without another `front`.
    #[inline(always)]
    pub(crate) fn may_have_messages(&mut self) -> bool {
        match &mut self.t {
            RxTransport::Tcp { buf, .. } => buf.has_messages(),
            RxTransport::Shm(r) => r.ready(),
            RxTransport::None => false,
        }
    }
}
