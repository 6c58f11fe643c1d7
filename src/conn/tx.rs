//! The send half of a connection: [`ConnTx`] and the [`Alloc`] it lends
//! out.

use std::fmt;
use std::sync::Arc;

use super::link::{LinkState, TcpLink};
use crate::close::{Close, CloseReason};
use crate::ptcp_queue::PtcpQueue;
use crate::shm_queue::ShmWriter;
use crate::wire::Name;

/// Why [`ConnTx::alloc`] gave no buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// The payload is larger than the configured maximum; it is never
    /// truncated.
    TooLarge {
        /// The payload length asked for.
        len: usize,
        /// The largest payload this connection carries.
        max: usize,
    },
    /// The send queue is full: the peer has not consumed enough yet. Try
    /// again after polling.
    Full,
    /// msg_type 0 is the heartbeat, and `0xfff0..=0xffff` are tcpshm's
    /// (fragments of large messages); application types are
    /// 1..=0xffef.
    ReservedType,
    /// The connection has no queue yet (a client before its first login).
    NotOpen,
    /// A [`Batch`](super::Batch) larger than the send queue: it can never
    /// be committed.
    BatchTooLarge {
        /// Bytes the batch takes in the queue so far, headers and padding
        /// included.
        bytes: usize,
        /// The most a batch can take in this connection's queue.
        capacity: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::TooLarge { len, max } => write!(
                f,
                "payload of {len} bytes exceeds the maximum of {max} (one frame for alloc; \
                 Config::max_message_size for send and Batch::append)"
            ),
            AllocError::Full => f.write_str("send queue full"),
            AllocError::ReservedType => {
                f.write_str("msg_type 0 and 0xfff0..=0xffff are reserved (heartbeat, fragments)")
            }
            AllocError::NotOpen => f.write_str("connection has no queue yet"),
            AllocError::BatchTooLarge { bytes, capacity } => write!(
                f,
                "batch (or large message) of {bytes} bytes exceeds the send queue's {capacity}"
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// Whether applications may not send `msg_type`: 0 (heartbeat) and
/// `0xfff0..=0xffff` (tcpshm's: fragments).
#[inline(always)]
pub(crate) fn reserved(msg_type: u16) -> bool {
    msg_type.wrapping_sub(1) >= crate::wire::RESERVED_TYPES - 1
}

/// `ConnTx::alloc` over TCP (out of line: see there).
#[inline(never)]
fn tcp_alloc(queue: &mut PtcpQueue, msg_type: u16, len: usize) -> bool {
    queue.alloc(msg_type, len).is_some()
}

#[derive(Debug)]
pub(crate) enum TxTransport {
    None,
    Tcp {
        queue: PtcpQueue,
        link: Option<TcpLink>,
    },
    Shm(ShmWriter),
}

/// The send half of a connection. It may live on another thread than the
/// receive half ([`ConnRx`](super::ConnRx)).
#[derive(Debug)]
pub struct ConnTx {
    pub(crate) local: Name,
    pub(crate) remote: Option<Name>,
    pub(crate) t: TxTransport,
    pub(crate) max_payload: usize,
    /// `Config::max_message_size` (0 until a queue is open).
    pub(crate) max_message: usize,
    pub(crate) state: Arc<LinkState>,
    /// Messages and payload bytes pushed (statistics).
    pub(crate) sent: (u64, u64),
    /// Payload bytes of the message allocated and not yet pushed.
    pending_len: usize,
    /// The connection this half belongs to (see `ConnRx::conn`).
    pub(crate) conn: u64,
}

/// A message being written in the send queue. [`push`](Alloc::push)
/// publishes it; dropping it publishes nothing.
///
/// The reservation (where the payload is and how long) is the queue's own
/// copy, made when it was allocated: nothing the peer or another process
/// writes can change which bytes `payload_mut` hands out.
#[derive(Debug)]
#[must_use = "an allocation publishes nothing until it is pushed"]
pub struct Alloc<'a> {
    tx: &'a mut ConnTx,
}

impl Alloc<'_> {
    /// The payload to fill, of the length asked for.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let p = match &mut self.tx.t {
            TxTransport::Tcp { queue, .. } => queue.pending_payload(),
            TxTransport::Shm(w) => w.pending_payload(),
            TxTransport::None => None,
        };
        p.unwrap_or(&mut [])
    }

    /// Publishes the message and, over TCP, sends it now if connected.
    /// Once this returns the message is persisted: it survives a crash and
    /// goes out after the next login if the connection is down.
    ///
    /// Over shared memory the reader can read it at once. The next poll
    /// (or `flush`) of this connection also hands the last message's cache
    /// lines to the cache both cores share (`CLDEMOTE`, on x86 CPUs that
    /// have it), so a reader waiting for it fetches them from there
    /// instead of from this core's cache, which is slower (README's bench
    /// section): poll after pushing, as an event loop does.
    #[inline]
    pub fn push(self) {
        self.tx.push(true);
    }

    /// Publishes the message, persisted as with `push`, and lets it go out
    /// with the next `push` or `flush` of this connection, or the next
    /// poll of its transport (`poll_tcp`; over shared memory `poll_shm`,
    /// which also lets go what a handler pushed this way when it returns):
    /// several messages then go as one batch.
    /// - Over TCP they are sent in one write.
    /// - Over shared memory each is in the queue at once (a C++ peer, or
    ///   a peer on the v1 ring, may read it right away); a tcpshm peer on
    ///   the fast path sees the batch at once, so it reads a run of blocks
    ///   the writer no longer touches instead of following the writer line
    ///   by line. A batch also goes when it spans 2 KiB, or when `alloc`
    ///   finds the queue full.
    #[inline]
    pub fn push_more(self) {
        self.tx.push(false);
    }
}

impl ConnTx {
    pub(crate) fn new(local: Name, conn: u64) -> Self {
        ConnTx {
            conn,
            local,
            remote: None,
            t: TxTransport::None,
            max_payload: 0,
            max_message: 0,
            state: LinkState::new_closed(CloseReason::RequestClose),
            sent: (0, 0),
            pending_len: 0,
        }
    }

    /// Reserves a message of `msg_type` with a payload of `len` bytes.
    /// Works while disconnected too: the message goes out after the next
    /// login.
    ///
    /// # Errors
    /// [`AllocError`]: too large for the configuration, queue full,
    /// type 0, or no queue yet.
    #[inline(always)]
    pub fn alloc(&mut self, msg_type: u16, len: usize) -> Result<Alloc<'_>, AllocError> {
        if reserved(msg_type) {
            return Err(AllocError::ReservedType);
        }
        if len > self.max_payload {
            return Err(self.too_large(len));
        }
        // The shared-memory path inline, the TCP one a call: what a
        // latency-minded caller gets in its own loop is the ring's code.
        let ok = match &mut self.t {
            TxTransport::Shm(w) => w.alloc(msg_type, len).is_some(),
            TxTransport::Tcp { queue, .. } => tcp_alloc(queue, msg_type, len),
            TxTransport::None => return Err(AllocError::NotOpen),
        };
        if ok {
            self.pending_len = len;
            Ok(Alloc { tx: self })
        } else {
            Err(AllocError::Full)
        }
    }

    #[cold]
    fn too_large(&self, len: usize) -> AllocError {
        match self.t {
            TxTransport::None => AllocError::NotOpen,
            _ => AllocError::TooLarge {
                len,
                max: self.max_payload,
            },
        }
    }

    #[inline(always)]
    fn push(&mut self, send_now: bool) {
        self.sent.0 += 1;
        self.sent.1 += self.pending_len as u64;
        self.pending_len = 0;
        match &mut self.t {
            TxTransport::Shm(w) if send_now => w.push(),
            TxTransport::Shm(w) => w.push_more(),
            _ => self.push_tcp(send_now),
        }
    }

    /// `push` over TCP (out of line: see `alloc`).
    #[inline(never)]
    fn push_tcp(&mut self, send_now: bool) {
        if let TxTransport::Tcp { queue, .. } = &mut self.t {
            if let Some(stamped) = queue.push() {
                self.sent_tcp(Some(stamped), send_now);
            }
        }
    }

    /// Over TCP, after messages stamped with the ack `stamped` (the first
    /// of them) were published: the session learns that the peer will
    /// know the ack; with `send_now`, they are sent if connected.
    pub(crate) fn sent_tcp(&mut self, stamped: Option<u32>, send_now: bool) {
        let TxTransport::Tcp {
            queue,
            link: Some(l),
        } = &mut self.t
        else {
            return;
        };
        if let Some(a) = stamped {
            l.session.handle_ack_stamped(a);
        }
        if send_now && self.state.closed().is_none() {
            if let Err(c) = l.flush(Some(queue)) {
                self.state.close(c);
            }
        }
    }

    /// Over shared memory, when this side has nothing more to write for
    /// now (every poll, and `flush`): lets go a batch `push_more` holds
    /// (see there), and hands the last message's blocks to the reader's
    /// side of the cache (`ShmWriter::settle`).
    #[inline(always)]
    pub(crate) fn settle(&mut self) {
        if let TxTransport::Shm(w) = &mut self.t {
            w.settle();
        }
    }

    /// Over shared memory: whether a publication found the reader asleep
    /// since the last call (the socket's owner then sends the wake-up).
    #[inline(always)]
    pub(crate) fn take_wake_due(&mut self) -> bool {
        match &mut self.t {
            TxTransport::Shm(w) => w.take_wake_due(),
            _ => false,
        }
    }

    /// Over shared memory, now and then: whether the reader may sleep, and
    /// this writer looks for its sleep after each publication
    /// (`ShmWriter::join_wake`).
    pub(crate) fn join_wake(&mut self) {
        if let TxTransport::Shm(w) = &mut self.t {
            w.join_wake();
        }
    }

    /// Over shared memory: this writer stops waking its reader, and says
    /// so (the reader sleeps in slices from then on).
    /// Returns whether it woke it until now (see `ShmWriter::leave_wake`).
    pub(crate) fn leave_wake(&mut self) -> bool {
        match &mut self.t {
            TxTransport::Shm(w) => w.leave_wake(),
            _ => false,
        }
    }

    /// Sends what `push_more` left unsent (over shared memory: lets the
    /// batch go); polls do this too.
    pub fn flush(&mut self) {
        self.settle();
        if let TxTransport::Tcp {
            queue,
            link: Some(l),
        } = &mut self.t
        {
            if self.state.closed().is_none() {
                if let Err(c) = l.flush(Some(queue)) {
                    self.state.close(c);
                }
            }
        }
    }

    /// Closes the connection with reason "Request close". The disconnect
    /// is reported by the next poll of the connection's TCP side.
    pub fn close(&mut self) {
        if self.state.close(Close::new(CloseReason::RequestClose)) {
            if let TxTransport::Tcp { link: Some(l), .. } = &self.t {
                let _ = l.sock.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Whether the connection is closed (or was never logged in).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state.closed().is_some()
    }

    /// Why the session closed, if it is closed.
    pub fn close_reason(&self) -> Option<Close> {
        self.state.closed()
    }

    /// This side's name.
    pub fn local_name(&self) -> &Name {
        &self.local
    }

    /// The peer's name, once known.
    pub fn remote_name(&self) -> Option<&Name> {
        self.remote.as_ref()
    }

    /// Whether this connection uses shared memory.
    pub fn is_shm(&self) -> bool {
        matches!(self.t, TxTransport::Shm(_))
    }

    /// Messages pushed and not yet acknowledged by the peer (TCP), with
    /// their sequence range.
    pub fn seq_range(&self) -> Option<(u32, u32)> {
        match &self.t {
            TxTransport::Tcp { queue, .. } => Some(queue.seq_range()),
            _ => None,
        }
    }

    /// Application messages pushed to this pair since it was (re)set,
    /// mod 2^31. Persisted with each push, so exact after a crash at any
    /// instruction. Counted per transport: a pair's TCP and SHM queues
    /// are separate (before a login, 0).
    #[inline]
    pub fn messages_pushed(&self) -> u32 {
        match &self.t {
            TxTransport::Tcp { queue, .. } => queue.seq_range().1 & 0x7fff_ffff,
            TxTransport::Shm(w) => w.pushed(),
            TxTransport::None => 0,
        }
    }

    /// Largest payload [`alloc`](Self::alloc) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}
