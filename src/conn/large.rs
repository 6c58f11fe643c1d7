//! Messages larger than one frame (`Config::max_message_size`): sent as
//! fragments in one [`Batch`], put back together for the receiver
//! (`crate::wire::Assembler`, `docs/protocol.md` "Messages over 64 KiB").
//!
//! The receiver copies each fragment into its assembler and consumes
//! nothing until the application pops the whole message:
//! - over TCP the fragments before the last are stepped over in the
//!   receive buffer (`RecvBuf::step_over`; the local ack stays before the
//!   first), and the last stays first in line while the message is handed
//!   out;
//! - over shared memory they stay in the ring, read ahead with
//!   `ShmReader::peek`.
//!
//! Consuming the first fragment is what consumes the message (a pop, or
//! the commit point of `Batch::commit_consuming`). A crash before the
//! rest are consumed leaves them first in line, where the next process
//! finds a fragment whose piece does not start the message: it skips it
//! (`Step::Orphan`), so the message is handed out once.

use super::rx::{RxTransport, LARGE};
use super::{AllocError, Batch, CommitError, ConnRx, ConnTx, Received};
use crate::close::{Close, CloseReason};
use crate::ptcp_queue::AckCounter;
use crate::session::RecvBuf;
use crate::shm_queue::ShmReader;
use crate::wire::{
    pieces, write_fragment_header, Assembler, FragmentError, Step, FRAGMENT_HEADER, FRAGMENT_TYPE,
};

/// Fragments one `front` reads at most: a poll stays bounded however large
/// the message (the next poll goes on where this one stopped).
const FRAGMENTS_PER_FRONT: usize = 64;

/// The receive half's large message in progress.
#[derive(Debug)]
pub(crate) struct RxLarge {
    asm: Assembler,
    /// Shared memory: the index of the first fragment, and the end of each
    /// fragment taken (the next one starts there).
    start: u32,
    ends: Vec<u32>,
}

impl RxLarge {
    pub(crate) fn new(max: usize) -> Box<Self> {
        Box::new(RxLarge {
            asm: Assembler::new(max),
            start: 0,
            // Full-size fragments: grown only for smaller ones.
            ends: Vec::with_capacity(max / (u16::MAX as usize / 2) + 2),
        })
    }

    pub(super) fn reset(&mut self) {
        self.asm.reset();
        self.ends.clear();
    }

    /// Fragments of the message taken so far.
    pub(crate) fn frames(&self) -> u32 {
        self.asm.frames()
    }

    /// Shared memory: the index one past the last fragment taken.
    pub(crate) fn end(&self) -> Option<u32> {
        self.ends.last().copied()
    }

    /// The whole message, `(msg_type, payload)`.
    pub(crate) fn message(&self) -> (u16, &[u8]) {
        self.asm.message()
    }
}

fn fault_of(e: FragmentError) -> Close {
    Close::new(match e {
        FragmentError::TooLarge { .. } => CloseReason::LargeMessage,
        FragmentError::Bad => CloseReason::BadFragment,
    })
}

impl ConnRx {
    /// Forgets a large message in progress (and the statistics of the
    /// messages held, which the transports forget too): a new session, or
    /// new queues, deliver it again from its first fragment.
    pub(crate) fn reset_large(&mut self) {
        self.held_payload = 0;
        if let Some(l) = &mut self.large {
            l.reset();
        }
        if let RxTransport::Tcp { buf, .. } = &mut self.t {
            buf.forget_stepped();
        }
    }

    /// `front` found a fragment first in line: goes on putting its message
    /// together. Returns it once whole (or the message after fragments
    /// skipped as orphans); `None` while fragments are still to come, or
    /// after a fault (`self.fault`, reported by the poll).
    #[cold]
    #[inline(never)]
    pub(super) fn front_large(&mut self) -> Option<Received<'_>> {
        let Some(large) = self.large.as_deref_mut() else {
            self.fault = Some(Close::new(CloseReason::LargeMessage));
            return None;
        };
        let found = match &mut self.t {
            RxTransport::Tcp { buf, ack } => tcp_take(large, buf, ack),
            RxTransport::Shm(r) => shm_take(large, r),
            RxTransport::None => Ok(Found::Nothing),
        };
        match found {
            Ok(Found::Whole) => Some(Received {
                word: u32::from(large.message().0) << 16 | LARGE,
                rx: self,
            }),
            Ok(Found::Plain) => self.front_plain(),
            Ok(Found::Nothing) => None,
            Err(c) => {
                self.fault = Some(c);
                None
            }
        }
    }

    /// The payload of the whole large message `front` returned.
    #[cold]
    #[inline(never)]
    pub(super) fn large_payload(&self) -> &[u8] {
        self.large.as_ref().map_or(&[][..], |l| l.message().1)
    }

    /// Consumes the whole large message `front` returned, and first the
    /// messages held; with `first_done`, a commit has consumed those and
    /// its first fragment already (and, over TCP, taken its last from the
    /// receive buffer).
    #[cold]
    #[inline(never)]
    pub(super) fn pop_large(&mut self, first_done: bool) {
        let Some(large) = self.large.as_deref_mut() else {
            return;
        };
        let held = match &mut self.t {
            RxTransport::Tcp { buf, ack } => {
                if !first_done {
                    buf.pop();
                }
                let held = buf.held();
                if held != 0 {
                    buf.consume_held();
                }
                buf.consume_stepped();
                // One store of the ack consumes the held and every
                // fragment left.
                let left = large.asm.frames() - u32::from(first_done) + held;
                ack.set(ack.get().wrapping_add(left));
                held
            }
            RxTransport::Shm(r) => {
                // The held go first (`consume_to`). Then the first release
                // of a fragment consumes the message; the rest follow
                // (orphans to the next process if it dies before them).
                let held = r.held();
                for &end in &large.ends[usize::from(first_done)..] {
                    r.consume_to(end);
                }
                held
            }
            RxTransport::None => 0,
        };
        let len = large.asm.message().1.len();
        large.reset();
        if held != 0 {
            self.count_held(held);
        }
        self.count_pop(len);
    }
}

/// What reading on through fragments found.
enum Found {
    /// The large message is whole.
    Whole,
    /// Not yet (or fragments skipped, and nothing after them yet).
    Nothing,
    /// Orphan fragments skipped, then a message of another type.
    Plain,
}

/// Over TCP: takes the fragments first in line in the receive buffer.
fn tcp_take(large: &mut RxLarge, buf: &mut RecvBuf, ack: &mut AckCounter) -> Result<Found, Close> {
    for _ in 0..FRAGMENTS_PER_FRONT {
        if large.asm.complete() {
            return Ok(Found::Whole);
        }
        let Some((msg_type, len)) = buf.front() else {
            return Ok(Found::Nothing);
        };
        if msg_type != FRAGMENT_TYPE {
            // After orphans, its turn; inside a message, out of sequence.
            if large.asm.busy() {
                return Err(Close::new(CloseReason::BadFragment));
            }
            return Ok(Found::Plain);
        }
        match large
            .asm
            .take(buf.front_payload(usize::from(len)))
            .map_err(fault_of)?
        {
            Step::Orphan if buf.held() > 0 => buf.hold(),
            Step::Orphan => {
                buf.pop();
                ack.advance();
            }
            // The last stays first in line until the pop.
            Step::Complete => {}
            Step::More => buf.step_over(),
        }
    }
    Ok(if large.asm.complete() {
        Found::Whole
    } else {
        Found::Nothing
    })
}

/// Whether a message of `total` bytes takes more than `capacity` bytes of
/// ring in fragments of the largest frame.
fn never_fits(total: usize, capacity: usize) -> bool {
    let per = crate::wire::MAX_PAYLOAD - FRAGMENT_HEADER;
    total + total.div_ceil(per) * (FRAGMENT_HEADER + crate::wire::HEADER_SIZE) > capacity
}

/// Over shared memory: takes the fragments from the one first in line
/// (the reader's current message) on, reading ahead without consuming.
fn shm_take(large: &mut RxLarge, r: &mut ShmReader) -> Result<Found, Close> {
    if large.asm.busy() && large.start != r.read_idx() {
        // Our message was consumed under us (only a writer that rewrites
        // what it published does that): start again from what is there.
        large.reset();
    }
    let corrupt = |_| Close::new(CloseReason::ShmCorrupt);
    for _ in 0..FRAGMENTS_PER_FRONT {
        if large.asm.busy() {
            break;
        }
        let Some((msg_type, p)) = r.current() else {
            return Ok(Found::Nothing);
        };
        if msg_type != FRAGMENT_TYPE {
            return Ok(Found::Plain);
        }
        if large.asm.take(p).map_err(fault_of)? == Step::Orphan {
            if !r.skip() {
                return Err(Close::new(CloseReason::ShmCorrupt));
            }
            if r.front().map_err(corrupt)?.is_none() {
                return Ok(Found::Nothing);
            }
            continue;
        }
        // The assembler's own copy of the length, not the ring's bytes.
        if never_fits(large.asm.total(), r.capacity()) {
            // Its fragments could never all be in the ring at once: a
            // writer that publishes them one by one would wait for room
            // forever.
            large.reset();
            return Err(Close::new(CloseReason::LargeMessage));
        }
        let end = r.current_end().ok_or(Close::new(CloseReason::ShmCorrupt))?;
        large.start = r.read_idx();
        large.ends.clear();
        large.ends.push(end);
    }
    for _ in 0..FRAGMENTS_PER_FRONT {
        if large.asm.complete() {
            return Ok(Found::Whole);
        }
        let Some(&at) = large.ends.last() else {
            return Ok(Found::Nothing);
        };
        let Some((msg_type, end, p)) = r.peek(at).map_err(corrupt)? else {
            return Ok(Found::Nothing);
        };
        if msg_type != FRAGMENT_TYPE || large.asm.take(p).map_err(fault_of)? == Step::Orphan {
            return Err(Close::new(CloseReason::BadFragment));
        }
        large.ends.push(end);
    }
    Ok(if large.asm.complete() {
        Found::Whole
    } else {
        Found::Nothing
    })
}

impl Batch<'_> {
    /// Adds a message of `msg_type` holding a copy of `payload`, of any
    /// length up to `Config::max_message_size`: one message if it fits
    /// one frame ([`ConnTx::max_payload`]), else the fragments of a large
    /// message, which the receiver gets whole
    /// ([`Received::payload`]). Either way the batch's commit publishes
    /// it with the rest, or none of it.
    ///
    /// # Errors
    /// As [`alloc`](Self::alloc): [`AllocError::TooLarge`] above
    /// `Config::max_message_size`, [`AllocError::BatchTooLarge`] when
    /// the send queue can never hold it, [`AllocError::Full`] when it
    /// cannot now. The batch then commits nothing.
    pub fn append(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), AllocError> {
        let max = self.tx.max_payload;
        if payload.len() <= max || self.tx.max_message == 0 {
            return self
                .alloc(msg_type, payload.len())
                .map(|p| p.copy_from_slice(payload));
        }
        if let Some(e) = self.failed {
            return Err(e);
        }
        if super::tx::reserved(msg_type) {
            return Err(self.fail(AllocError::ReservedType));
        }
        if payload.len() > self.tx.max_message {
            return Err(self.fail(AllocError::TooLarge {
                len: payload.len(),
                max: self.tx.max_message,
            }));
        }
        for (off, len) in pieces(payload.len(), max) {
            self.alloc_frame(FRAGMENT_TYPE, FRAGMENT_HEADER + len)?;
            let Some(p) = self.payload() else {
                return Err(self.fail(AllocError::NotOpen));
            };
            write_fragment_header(p, payload.len() as u32, off as u32, msg_type);
            p[FRAGMENT_HEADER..].copy_from_slice(&payload[off..off + len]);
        }
        Ok(())
    }
}

impl ConnTx {
    /// Publishes a copy of `payload` as one message of `msg_type`, of any
    /// length up to `Config::max_message_size` (see [`Batch::append`]):
    /// one frame if it fits, else fragments committed as one batch.
    /// For a message of one frame, a copying [`alloc`](Self::alloc) and
    /// [`push`](super::Alloc::push).
    ///
    /// # Errors
    /// As [`Batch::append`]; nothing is published.
    pub fn send(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), CommitError> {
        if payload.len() <= self.max_payload {
            let mut m = self
                .alloc(msg_type, payload.len())
                .map_err(CommitError::Alloc)?;
            m.payload_mut().copy_from_slice(payload);
            m.push();
            return Ok(());
        }
        let mut batch = self.batch();
        batch
            .append(msg_type, payload)
            .map_err(CommitError::Alloc)?;
        batch.commit().map(|_| ())
    }

    /// The frames a message of `len` bytes takes in the queue: 1 if it
    /// fits one ([`max_payload`](Self::max_payload)), else its fragments.
    /// [`messages_pushed`](Self::messages_pushed) and
    /// [`ConnRx::messages_popped`] count frames (the protocol's sequence
    /// numbers do).
    pub fn frames_of(&self, len: usize) -> u32 {
        if len <= self.max_payload {
            1
        } else {
            pieces(len, self.max_payload).count() as u32
        }
    }

    /// The largest message [`send`](Self::send) and
    /// [`Batch::append`] take: `Config::max_message_size`, or one frame
    /// ([`max_payload`](Self::max_payload)) if that is larger.
    pub fn max_message(&self) -> usize {
        self.max_message.max(self.max_payload)
    }
}
