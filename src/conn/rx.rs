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
}

/// A received message, borrowed from the receive buffer or the shared
/// memory queue (zero copy). Pop it to consume it; drop it to have it
/// delivered again.
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
#[must_use = "a message is consumed only by `pop`; dropped, it is delivered again"]
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

    /// Messages popped from this pair before this one (see
    /// [`ConnRx::messages_popped`]).
    #[inline]
    pub fn popped_before(&self) -> u32 {
        self.rx.messages_popped()
    }

    /// Consumes the message. Over TCP the new local ack is persisted in the
    /// queue file at once, so after a crash the peer does not deliver it
    /// again; over shared memory the read index is the persistence.
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
        match &mut self.t {
            RxTransport::Tcp { buf, ack } => {
                buf.pop();
                ack.advance();
            }
            RxTransport::Shm(r) => r.pop(),
            RxTransport::None => return,
        }
        self.pops += 1;
        self.pops_total += 1;
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
