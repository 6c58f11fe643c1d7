//! The TCP session core, sans I/O (as quinn-proto): bytes and `now` come
//! in, bytes to transmit and the next deadline go out. Nothing here
//! touches a socket or reads a clock, so every rule is tested with a fake
//! clock and no sockets (see the tests below); `conn::link` drives it
//! over a real socket.
//!
//! - [`RecvBuf`]: framing across partial reads, the peer's ack taken from
//!   every header, the re-login guard, back-pressure, messages held
//!   (kept, unconsumed, while the application reads on);
//! - [`Session`]: heartbeats after send silence, timeouts after receive
//!   silence, the ack this side last told the peer, and partial sends
//!   resumed without corrupting the stream.
#![forbid(unsafe_code)]

use crate::close::{Close, CloseReason};
use crate::ptcp_queue::{AckError, PtcpQueue};
use crate::sys::Region;
use crate::wire::{MsgHeader, HEADER_SIZE, MSG_TYPE_HEARTBEAT};

/// A frame the peer must not send again after login: its type, its size
/// and its 16-byte name field (the peer's own name) at `name_off`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReloginGuard {
    pub msg_type: u16,
    pub size: u16,
    pub name_off: usize,
    pub name: [u8; 16],
}

/// The receive buffer: bytes `[rpos, parsed)` are whole messages not yet
/// consumed, `[parsed, wpos)` a message still arriving.
#[derive(Debug)]
pub(crate) struct RecvBuf {
    /// Bytes of messages the application consumed, ever (wire footprint,
    /// padding included): how much of the peer's queue our pops free.
    consumed: u64,
    buf: Vec<u8>,
    max: usize,
    rpos: usize,
    wpos: usize,
    parsed: usize,
    /// Bytes of messages stepped over, not consumed yet (`step_over`).
    stepped: u64,
    /// Messages held (`hold`): where the first starts (kept in the
    /// buffer from there, for `unhold`), and how many and how many bytes.
    keep: Option<usize>,
    held: u32,
    held_bytes: u64,
}

impl RecvBuf {
    pub(crate) fn new(init: usize, max: usize) -> Self {
        RecvBuf {
            consumed: 0,
            buf: vec![0; init],
            max,
            rpos: 0,
            wpos: 0,
            parsed: 0,
            stepped: 0,
            keep: None,
            held: 0,
            held_bytes: 0,
        }
    }

    /// Forgets every byte received, and what was held: a new session
    /// sends again what was not consumed.
    pub(crate) fn clear(&mut self) {
        self.rpos = 0;
        self.wpos = 0;
        self.parsed = 0;
        self.keep = None;
        self.held = 0;
        self.held_bytes = 0;
    }

    /// The next application message `(msg_type, payload len)`, heartbeats
    /// skipped; it is at the read position until `pop`.
    pub(crate) fn front(&mut self) -> Option<(u16, u16)> {
        while self.rpos < self.parsed {
            let h = MsgHeader::read(&self.buf[self.rpos..]).ok()?;
            if h.msg_type == MSG_TYPE_HEARTBEAT {
                self.rpos += h.padded_size();
                continue;
            }
            // A header's size is at least HEADER_SIZE (MsgHeader::read).
            return Some((h.msg_type, h.size - HEADER_SIZE as u16));
        }
        None
    }

    /// The payload, `len` bytes, of the message `front` returned.
    pub(crate) fn front_payload(&self, len: usize) -> &[u8] {
        let off = self.rpos + HEADER_SIZE;
        &self.buf[off..off + len]
    }

    /// Consumes the message at the read position (after `front`).
    pub(crate) fn pop(&mut self) {
        if self.rpos < self.parsed {
            if let Ok(h) = MsgHeader::read(&self.buf[self.rpos..]) {
                self.rpos += h.padded_size();
                self.consumed += h.padded_size() as u64;
            }
        }
    }

    /// Steps over the message at the read position (after `front`)
    /// without counting it consumed: a fragment copied out while the rest
    /// of its large message arrives (`conn::large`).
    pub(crate) fn step_over(&mut self) {
        self.stepped += self.pass();
    }

    /// Moves the read position past the message there (after `front`),
    /// not counted consumed; returns its bytes (0: none there).
    fn pass(&mut self) -> u64 {
        let consumed = self.consumed;
        self.pop();
        std::mem::replace(&mut self.consumed, consumed) - consumed
    }

    /// Holds the message at the read position (after `front`): `front`
    /// moves on past it, and it stays in the buffer, not consumed, until
    /// [`consume_held`](Self::consume_held) or [`unhold`](Self::unhold).
    pub(crate) fn hold(&mut self) {
        let at = self.rpos;
        let bytes = self.pass();
        if bytes != 0 {
            self.keep.get_or_insert(at);
            self.held += 1;
            self.held_bytes += bytes;
        }
    }

    /// Whether a whole message (not a heartbeat) is waiting after the one
    /// at the read position.
    pub(crate) fn next_ready(&self) -> bool {
        let Ok(h) = MsgHeader::read(&self.buf[self.rpos..self.parsed]) else {
            return false;
        };
        let mut at = self.rpos + h.padded_size();
        // Parsed bytes only: bounded by the buffer, as `front`'s loop.
        while at < self.parsed {
            match MsgHeader::read(&self.buf[at..self.parsed]) {
                Ok(h) if h.msg_type == MSG_TYPE_HEARTBEAT => at += h.padded_size(),
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Messages held.
    #[inline(always)]
    pub(crate) fn held(&self) -> u32 {
        self.held
    }

    /// Counts the held messages consumed (the caller moved the ack past
    /// them): their bytes may go.
    #[cold]
    pub(crate) fn consume_held(&mut self) {
        self.consumed += std::mem::take(&mut self.held_bytes);
        self.held = 0;
        self.keep = None;
    }

    /// Gives the held messages back: `front` returns the first again. What
    /// was stepped over since is read again too (its large message is put
    /// together again).
    pub(crate) fn unhold(&mut self) {
        if let Some(at) = self.keep.take() {
            self.rpos = at;
            self.stepped = 0;
        }
        self.held = 0;
        self.held_bytes = 0;
    }

    /// Whether messages were stepped over and are not consumed yet: a
    /// large message is being put together, and whatever comes next
    /// belongs to it.
    #[inline(always)]
    pub(crate) fn stepping(&self) -> bool {
        self.stepped != 0
    }

    /// Forgets what was stepped over: a new session sends it again.
    pub(crate) fn forget_stepped(&mut self) {
        self.stepped = 0;
    }

    /// Counts what was stepped over as consumed (its message was).
    pub(crate) fn consume_stepped(&mut self) {
        self.consumed += std::mem::take(&mut self.stepped);
    }

    /// Bytes of messages consumed since this buffer was made.
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether whole messages are waiting.
    pub(crate) fn has_messages(&self) -> bool {
        self.rpos < self.parsed
    }

    /// The free space to read into, after making room (moving unconsumed
    /// bytes to the front, growing up to the maximum for a large message).
    /// `None`: the buffer is full of messages the application has not
    /// consumed (back-pressure: read nothing, which is not silence).
    pub(crate) fn space(&mut self) -> Option<&mut [u8]> {
        // Held messages stay, for `unhold`.
        let from = self.keep.unwrap_or(self.rpos);
        if from == self.wpos {
            (self.rpos, self.wpos, self.parsed) = (0, 0, 0);
            self.keep = self.keep.map(|_| 0);
        } else if from > 0 && (from * 2 > self.wpos || self.wpos == self.buf.len()) {
            self.buf.copy_within(from..self.wpos, 0);
            self.wpos -= from;
            self.parsed -= from;
            self.rpos -= from;
            self.keep = self.keep.map(|_| 0);
        }
        if self.wpos == self.buf.len() {
            // Grow for the message still arriving (its size was checked
            // against the maximum when its header was parsed; a header not
            // yet complete needs 8 bytes) if the maximum allows it with the
            // unconsumed messages before it. Below the maximum, grow anyway,
            // so the acks behind unconsumed messages can be read
            // (Config::validate makes the maximum larger than the peer's
            // queue, which bounds what the application can leave
            // unconsumed).
            if self.buf.len() >= self.max {
                return None;
            }
            let kept = self.keep.unwrap_or(self.rpos);
            let need = (self.parsed - kept) + self.pending_size().unwrap_or(HEADER_SIZE);
            let grow = (self.buf.len() * 2).max(need + HEADER_SIZE).min(self.max);
            self.buf.resize(grow, 0);
        }
        Some(&mut self.buf[self.wpos..])
    }

    /// `n` bytes were read into [`space`](Self::space): parses every
    /// complete header, takes the peer's acks into `queue`.
    ///
    /// # Errors
    /// The close a protocol violation calls for.
    pub(crate) fn received<R: Region>(
        &mut self,
        n: usize,
        queue: Option<&mut PtcpQueue<R>>,
        guard: Option<&ReloginGuard>,
    ) -> Result<(), Close> {
        self.wpos = (self.wpos + n).min(self.buf.len());
        self.parse(queue, guard)
    }

    /// Padded size of the message at `parsed` if its header is complete.
    fn pending_size(&self) -> Option<usize> {
        MsgHeader::read(&self.buf[self.parsed..self.wpos])
            .ok()
            .map(|h| h.padded_size())
    }

    fn parse<R: Region>(
        &mut self,
        mut queue: Option<&mut PtcpQueue<R>>,
        guard: Option<&ReloginGuard>,
    ) -> Result<(), Close> {
        while self.wpos - self.parsed >= HEADER_SIZE {
            let h = MsgHeader::read(&self.buf[self.parsed..self.wpos])
                .map_err(|_| Close::new(CloseReason::SizeTooSmall))?;
            if (h.size as usize) < HEADER_SIZE {
                return Err(Close::new(CloseReason::SizeTooSmall));
            }
            let sz = h.padded_size();
            if sz > self.max {
                return Err(Close::new(CloseReason::MsgTooLarge));
            }
            if let Some(q) = queue.as_deref_mut() {
                match q.ack(h.ack_seq) {
                    Ok(()) => {}
                    Err(AckError::Corrupt) => return Err(Close::new(CloseReason::QueueCorrupt)),
                    Err(_) => return Err(Close::new(CloseReason::AckBeyondSent)),
                }
            }
            if self.wpos - self.parsed < sz {
                break;
            }
            if let Some(g) = guard {
                if h.msg_type == g.msg_type
                    && h.size == g.size
                    && self.buf[self.parsed + g.name_off..self.parsed + g.name_off + 16] == g.name
                {
                    return Err(Close::new(CloseReason::LoginAfterLogin));
                }
            }
            if h.msg_type == MSG_TYPE_HEARTBEAT && self.rpos == self.parsed {
                self.rpos += sz;
            }
            self.parsed += sz;
        }
        Ok(())
    }
}

/// The timer settings a session runs by, in `now` ticks (converted once
/// from `Config`'s durations).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timers {
    /// A heartbeat after this much send silence.
    pub heartbeat_interval: i64,
    /// Closed after more than this much receive silence.
    pub connection_timeout: i64,
    /// A consumed message is acknowledged within this, by the next data
    /// frame or else a heartbeat of its own.
    pub ack_delay: i64,
    /// ... or at once when this many bytes of the peer's queue wait for
    /// our ack.
    pub ack_backlog: u64,
}

/// The timers and send state of a live TCP session.
#[derive(Debug)]
pub(crate) struct Session {
    timers: Timers,
    /// Whether the timers run: they start at the session's first poll
    /// (the first `handle_recv`), so a session made outside a poll needs
    /// no `now`.
    started: bool,
    last_send: i64,
    last_recv: i64,
    /// The latest `now` seen, to stamp sends made outside a poll.
    now: i64,
    /// Heartbeats queued this session (statistics).
    heartbeats: u64,
    hb: [u8; HEADER_SIZE],
    /// Bytes at the end of `hb` still to send (a partially sent heartbeat).
    hb_left: usize,
    /// The newest local ack put in a header we sent (or stamped in a
    /// message we pushed).
    ack_sent: u32,
    /// Since when a newer local ack waits to be told (delayed ack).
    ack_waiting_since: Option<i64>,
    /// `RecvBuf::consumed` as of the newest ack the peer was told.
    consumed_acked: u64,
    /// The local ack and `RecvBuf::consumed` at the last poll: a message
    /// stamped with that ack tells the peer of those bytes.
    seen: (u32, u64),
}

/// Which bytes [`Session::transmit`] handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Heartbeat,
    Queue,
}

impl Session {
    pub(crate) fn new(timers: Timers) -> Self {
        Session {
            timers,
            started: false,
            last_send: 0,
            last_recv: 0,
            now: 0,
            heartbeats: 0,
            hb: [0; HEADER_SIZE],
            hb_left: 0,
            ack_sent: 0,
            ack_waiting_since: None,
            consumed_acked: 0,
            seen: (0, 0),
        }
    }

    /// What to send now: the rest of a heartbeat first (a frame is never
    /// interleaved with another), then the queue's unsent bytes. Empty when
    /// there is nothing to send.
    pub(crate) fn transmit<'a, R: Region>(
        &'a self,
        queue: Option<&'a PtcpQueue<R>>,
    ) -> (&'a [u8], Source) {
        if self.hb_left > 0 {
            return (&self.hb[HEADER_SIZE - self.hb_left..], Source::Heartbeat);
        }
        (queue.map_or(&[][..], |q| q.sendable()), Source::Queue)
    }

    /// `n` bytes of what [`transmit`](Self::transmit) returned from `src`
    /// went out.
    pub(crate) fn handle_sent<R: Region>(
        &mut self,
        n: usize,
        src: Source,
        queue: Option<&mut PtcpQueue<R>>,
    ) {
        if n == 0 {
            return;
        }
        self.last_send = self.now;
        match src {
            Source::Heartbeat => self.hb_left -= n.min(self.hb_left),
            Source::Queue => {
                if let Some(q) = queue {
                    q.mark_sent(n);
                }
            }
        }
    }

    /// A message carrying `ack` was pushed: the peer learns it from there.
    pub(crate) fn handle_ack_stamped(&mut self, ack: u32) {
        self.ack_sent = ack;
        if ack == self.seen.0 {
            // All the last poll saw is told; what was consumed since waits
            // from the next poll on (at most one poll late).
            self.consumed_acked = self.seen.1;
            self.ack_waiting_since = None;
        }
    }

    /// The session starts with the peer knowing our ack `ack` (from the
    /// login frame) and `consumed` bytes consumed so far.
    pub(crate) fn handle_login_ack(&mut self, ack: u32, consumed: u64) {
        self.ack_sent = ack;
        self.consumed_acked = consumed;
        self.seen = (ack, consumed);
        self.ack_waiting_since = None;
    }

    /// Queues a heartbeat carrying `local_ack` when one is due and nothing
    /// else is waiting to go out (`idle`):
    /// - nothing was sent for the heartbeat interval; or
    /// - the application consumed messages the peer has not been told of
    ///   (delayed ack): no data frame carried the ack within `ack_delay`,
    ///   or `consumed` (bytes ever consumed) ran `ack_backlog` bytes ahead
    ///   of the last ack sent, so the peer's send queue never waits long
    ///   for room. In request/reply the next reply carries the ack: one
    ///   send per reply.
    ///
    /// A heartbeat the socket does not take at once still counts as sent:
    /// its rest goes out first next time.
    pub(crate) fn poll_heartbeat(&mut self, now: i64, local_ack: u32, consumed: u64, idle: bool) {
        self.now = now;
        self.seen = (local_ack, consumed);
        let ack_due = if local_ack == self.ack_sent {
            // The peer knows all we consumed (a data frame carried it).
            self.ack_waiting_since = None;
            self.consumed_acked = consumed;
            false
        } else {
            let since = *self.ack_waiting_since.get_or_insert(now);
            now.wrapping_sub(since) >= self.timers.ack_delay
                || consumed.wrapping_sub(self.consumed_acked) >= self.timers.ack_backlog
        };
        if self.hb_left > 0 || !idle {
            return;
        }
        let due = now.wrapping_sub(self.last_send) >= self.timers.heartbeat_interval;
        if !due && !ack_due {
            return;
        }
        self.ack_sent = local_ack;
        self.ack_waiting_since = None;
        self.consumed_acked = consumed;
        self.hb = MsgHeader {
            size: HEADER_SIZE as u16,
            msg_type: MSG_TYPE_HEARTBEAT,
            ack_seq: local_ack,
        }
        .encode();
        self.hb_left = HEADER_SIZE;
        self.last_send = now;
        self.heartbeats += 1;
    }

    /// Queues a heartbeat at `now` whatever the timers say, unless one is
    /// on its way: the wake-up of a shared-memory reader asleep on this
    /// socket (`crate::wake`). It carries the ack last told.
    pub(crate) fn heartbeat_now(&mut self, now: i64) {
        if self.hb_left > 0 {
            return; // its rest goes first, and wakes the peer as well
        }
        self.hb = MsgHeader {
            size: HEADER_SIZE as u16,
            msg_type: MSG_TYPE_HEARTBEAT,
            ack_seq: self.ack_sent,
        }
        .encode();
        self.hb_left = HEADER_SIZE;
        self.now = now;
        self.last_send = now;
        self.heartbeats += 1;
    }

    /// Whether the local ack `local_ack` is newer than what the peer was
    /// told, or a delayed ack waits: the next polls must see to it.
    pub(crate) fn ack_pending(&self, local_ack: u32) -> bool {
        local_ack != self.ack_sent || self.ack_waiting_since.is_some()
    }

    /// The `now` of the last poll.
    pub(crate) fn now(&self) -> i64 {
        self.now
    }

    /// Heartbeats (standalone acks included) queued this session.
    pub(crate) fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// The `now` at which bytes last came from the peer.
    pub(crate) fn last_heard(&self) -> i64 {
        self.last_recv
    }

    /// Records a read at `now`: `got` bytes (`Some(0)`: none available;
    /// `None`: nothing read because the receive buffer is full of
    /// unconsumed messages, which is not silence).
    ///
    /// # Errors
    /// "Timeout" after more than `connection_timeout` of silence.
    pub(crate) fn handle_recv(&mut self, now: i64, got: Option<usize>) -> Result<(), Close> {
        self.now = now;
        if !self.started {
            // The first poll: the timers start now.
            self.started = true;
            self.last_send = now;
            self.last_recv = now;
        }
        match got {
            Some(0) if now.wrapping_sub(self.last_recv) > self.timers.connection_timeout => {
                Err(Close::new(CloseReason::Timeout))
            }
            Some(0) => Ok(()),
            _ => {
                self.last_recv = now;
                Ok(())
            }
        }
    }

    /// Whether a poll at `now` that read nothing would close for
    /// "Timeout": a caller that skipped the read (its readiness set said
    /// nothing arrived) reads before it concludes, so bytes the set has not
    /// reported yet (more than a poll's events, a pause of the polling
    /// thread) are never mistaken for silence.
    pub(crate) fn would_time_out(&self, now: i64) -> bool {
        self.started && now.wrapping_sub(self.last_recv) > self.timers.connection_timeout
    }

    /// The next moment a poll has timer work: a heartbeat, a delayed ack
    /// or a timeout; `None` before the first poll (which starts the
    /// timers: poll now).
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        if !self.started {
            return None;
        }
        let t = &self.timers;
        let mut next = self.last_send.wrapping_add(t.heartbeat_interval);
        let mut earlier = |d: i64| {
            if d.wrapping_sub(next) < 0 {
                next = d;
            }
        };
        earlier(
            self.last_recv
                .wrapping_add(t.connection_timeout)
                .wrapping_add(1),
        );
        if let Some(since) = self.ack_waiting_since {
            earlier(since.wrapping_add(t.ack_delay));
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    //! The session rules on a fake clock, with no sockets and no sleeps:
    //! bytes in, bytes out, `now` given.

    use super::*;
    use crate::sys::HeapRegion;

    type Q = PtcpQueue<HeapRegion>;

    const HB: i64 = 100;
    const TIMEOUT: i64 = 350;
    const ACK_DELAY: i64 = 10;
    const BACKLOG: u64 = 64;

    /// A session whose timers started at `now` (its first poll).
    fn session(now: i64) -> Session {
        let mut s = Session::new(Timers {
            heartbeat_interval: HB,
            connection_timeout: TIMEOUT,
            ack_delay: ACK_DELAY,
            ack_backlog: BACKLOG,
        });
        assert_eq!(s.next_deadline(), None, "not started before its first poll");
        s.handle_recv(now, Some(0)).unwrap();
        s
    }

    fn is_heartbeat(bytes: &[u8], ack: u32) -> bool {
        MsgHeader::decode(bytes).is_ok_and(|h| h.msg_type == MSG_TYPE_HEARTBEAT && h.ack_seq == ack)
    }

    /// What a socket that takes at most `room` bytes would send now.
    fn send(s: &mut Session, q: &mut Q, room: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..2 {
            let (bytes, src) = s.transmit(Some(&*q));
            let (len, n) = (bytes.len(), bytes.len().min(room - out.len()));
            out.extend_from_slice(&bytes[..n]);
            s.handle_sent(n, src, Some(&mut *q));
            if n < len {
                break;
            }
        }
        out
    }

    fn push(q: &mut Q, s: &mut Session, payload: &[u8]) {
        q.alloc(7, payload.len()).unwrap().copy_from_slice(payload);
        let stamped = q.push().unwrap();
        s.handle_ack_stamped(stamped);
    }

    #[test]
    fn heartbeat_after_send_silence_carries_the_ack() {
        let (mut q, mut ack) = Q::heap(256);
        let mut s = session(0);
        s.poll_heartbeat(HB - 1, ack.get(), 0, true);
        assert!(send(&mut s, &mut q, 64).is_empty(), "not due yet");
        s.poll_heartbeat(HB, ack.get(), 0, true);
        assert!(is_heartbeat(&send(&mut s, &mut q, 64), 0));
        // Data counts as a send: the next heartbeat is an interval later.
        ack.set(3);
        push(&mut q, &mut s, b"x");
        s.poll_heartbeat(HB + 50, ack.get(), 0, false);
        let data = send(&mut s, &mut q, 64);
        assert_eq!(MsgHeader::decode(&data).unwrap().ack_seq, 3);
        s.poll_heartbeat(2 * HB + 49, ack.get(), 0, true);
        assert!(send(&mut s, &mut q, 64).is_empty());
        assert_eq!(s.next_deadline(), Some(2 * HB + 50));
    }

    #[test]
    fn a_reply_within_the_ack_delay_carries_the_ack_alone() {
        let (mut q, mut ack) = Q::heap(256);
        let mut s = session(0);
        // Request/reply: a request consumed at 1, its reply pushed at 5.
        for round in 0..20u32 {
            let t = round as i64 * 6;
            ack.advance();
            s.poll_heartbeat(t + 1, ack.get(), 24 * (round as u64 + 1), true);
            assert!(
                send(&mut s, &mut q, 64).is_empty(),
                "no ack frame of its own"
            );
            push(&mut q, &mut s, b"reply");
            s.poll_heartbeat(t + 5, ack.get(), 24 * (round as u64 + 1), false);
            let wire = send(&mut s, &mut q, 64);
            let h = MsgHeader::decode(&wire).unwrap();
            assert_eq!((wire.len(), h.msg_type, h.ack_seq), (16, 7, ack.get()));
            let (_, end) = q.seq_range();
            q.ack(end).unwrap(); // the peer consumed the reply
        }
    }

    #[test]
    fn push_then_pop_replies_carry_the_acks_without_frames_of_their_own() {
        // The echo server's exactly-once order: the reply is pushed before
        // its request is popped, so each reply carries the previous ack.
        let (mut q, mut ack) = Q::heap(256);
        let mut s = session(0);
        let mut consumed = 0u64;
        for round in 0..100i64 {
            s.poll_heartbeat(round * 6, ack.get(), consumed, true);
            assert!(
                send(&mut s, &mut q, 64).is_empty(),
                "round {round}: an ack frame"
            );
            push(&mut q, &mut s, b"reply");
            ack.advance();
            consumed += 24;
            send(&mut s, &mut q, 64);
            let (_, end) = q.seq_range();
            q.ack(end).unwrap();
        }
    }

    #[test]
    fn a_consumed_message_is_acked_after_the_delay_when_idle() {
        let (mut q, mut ack) = Q::heap(256);
        let mut s = session(0);
        ack.advance();
        s.poll_heartbeat(1, ack.get(), 16, true);
        assert!(send(&mut s, &mut q, 64).is_empty(), "delayed");
        assert_eq!(s.next_deadline(), Some(1 + ACK_DELAY));
        s.poll_heartbeat(ACK_DELAY, ack.get(), 16, true);
        assert!(
            send(&mut s, &mut q, 64).is_empty(),
            "still within the delay"
        );
        s.poll_heartbeat(1 + ACK_DELAY, ack.get(), 16, true);
        assert!(is_heartbeat(&send(&mut s, &mut q, 64), 1));
        s.poll_heartbeat(2 + ACK_DELAY, ack.get(), 16, true);
        assert!(send(&mut s, &mut q, 64).is_empty(), "nothing new to ack");
    }

    #[test]
    fn a_backlog_of_consumed_bytes_is_acked_at_once() {
        let (mut q, mut ack) = Q::heap(256);
        let mut s = session(0);
        ack.set(2);
        s.poll_heartbeat(1, ack.get(), BACKLOG - 1, true);
        assert!(send(&mut s, &mut q, 64).is_empty());
        ack.set(3);
        s.poll_heartbeat(2, ack.get(), BACKLOG, true);
        assert!(
            is_heartbeat(&send(&mut s, &mut q, 64), 3),
            "half the peer's queue waits"
        );
        // The backlog counts from the last ack sent.
        ack.set(4);
        s.poll_heartbeat(3, ack.get(), BACKLOG + 8, true);
        assert!(send(&mut s, &mut q, 64).is_empty());
    }

    #[test]
    fn receive_silence_times_out_and_full_buffer_is_not_silence() {
        let mut s = session(0);
        assert!(!s.would_time_out(TIMEOUT) && s.would_time_out(TIMEOUT + 1));
        s.handle_recv(TIMEOUT, Some(0)).unwrap();
        s.handle_recv(TIMEOUT + 1, None).unwrap();
        s.handle_recv(2 * TIMEOUT + 1, Some(0)).unwrap();
        assert_eq!(
            s.handle_recv(2 * TIMEOUT + 2, Some(0)),
            Err(Close::new(CloseReason::Timeout))
        );
    }

    /// The frame of message `i`: type `i + 1`, `i % 50` bytes of `i`.
    fn frame(i: u8) -> Vec<u8> {
        let len = usize::from(i % 50);
        let mut f = MsgHeader {
            size: (HEADER_SIZE + len) as u16,
            msg_type: u16::from(i) + 1,
            ack_seq: 0,
        }
        .encode()
        .to_vec();
        f.extend(std::iter::repeat_n(i, len));
        f.resize(f.len().next_multiple_of(8), 0);
        f
    }

    /// Messages held stay in the buffer while it grows and moves what it
    /// keeps to the front, and `unhold` reads them again, whole; what is
    /// consumed goes.
    #[test]
    fn held_messages_survive_reads_and_come_back() {
        let mut rb = RecvBuf::new(64, 4096);
        let mut wire: Vec<u8> = (0..40).flat_map(frame).collect();
        // A heartbeat between two held messages is skipped, not kept as one.
        let at: usize = (0..12).map(|i| frame(i).len()).sum();
        let hb = MsgHeader {
            size: 8,
            msg_type: MSG_TYPE_HEARTBEAT,
            ack_seq: 0,
        };
        wire.splice(at..at, hb.encode());
        let mut next = 0u8;
        let mut fed = 0;
        let check = |rb: &mut RecvBuf, i: u8| {
            let (t, len) = rb.front().expect("a message");
            assert_eq!(t, u16::from(i) + 1);
            assert_eq!(
                rb.front_payload(len.into()),
                &vec![i; usize::from(i % 50)][..]
            );
        };
        // Pop 0..10, hold 10..40, reading 13 bytes at a time.
        while next < 40 {
            while rb.has_messages() && next < 40 {
                check(&mut rb, next);
                if next < 10 {
                    rb.pop();
                } else {
                    let ready = rb.next_ready();
                    rb.hold();
                    assert_eq!(ready, rb.front().is_some(), "next_ready at {next}");
                }
                next += 1;
            }
            let n = (wire.len() - fed).min(13);
            let space = rb.space().expect("room");
            let n = n.min(space.len());
            space[..n].copy_from_slice(&wire[fed..fed + n]);
            fed += n;
            rb.received::<HeapRegion>(n, None, None).unwrap();
        }
        assert_eq!(rb.held(), 30);
        assert!(rb.front().is_none());
        rb.unhold();
        for i in 10..40 {
            check(&mut rb, i);
            rb.hold();
        }
        rb.unhold();
        for i in 10..20 {
            check(&mut rb, i);
            rb.hold();
        }
        // Consumed: the bytes go at the next read's room-making.
        let consumed = rb.consumed();
        rb.consume_held();
        assert!(rb.consumed() > consumed);
        assert_eq!(rb.held(), 0);
        let _ = rb.space();
        rb.unhold(); // nothing held: nothing changes
        check(&mut rb, 20);
    }

    #[test]
    fn partial_sends_resume_without_interleaving_frames() {
        let (mut q, ack) = Q::heap(256);
        let mut s = session(0);
        s.poll_heartbeat(HB, ack.get(), 0, true);
        let mut wire = send(&mut s, &mut q, 3); // 3 of the heartbeat's 8
        push(&mut q, &mut s, &[9; 20]);
        // Byte by byte: the heartbeat's rest first, then the message.
        for _ in 0..64 {
            wire.extend(send(&mut s, &mut q, 1));
        }
        assert_eq!(wire.len(), 8 + 32);
        let mut rb = RecvBuf::new(64, 256);
        rb.space().unwrap()[..wire.len()].copy_from_slice(&wire);
        rb.received::<HeapRegion>(wire.len(), None, None).unwrap();
        let (t, len) = rb.front().unwrap();
        assert_eq!((t, rb.front_payload(len.into())), (7, &[9u8; 20][..]));
    }

    #[test]
    fn received_bytes_carry_acks_and_violations_close() {
        let (mut q, _ack) = Q::heap(256);
        let mut s = session(0);
        push(&mut q, &mut s, b"a");
        push(&mut q, &mut s, b"b");
        send(&mut s, &mut q, 1000);
        let mut rb = RecvBuf::new(64, 256);
        let feed = |rb: &mut RecvBuf, q: &mut Q, bytes: &[u8]| {
            rb.space().unwrap()[..bytes.len()].copy_from_slice(bytes);
            rb.received(bytes.len(), Some(q), None)
        };
        let ack1 = MsgHeader {
            size: 8,
            msg_type: 0,
            ack_seq: 1,
        };
        feed(&mut rb, &mut q, &ack1.encode()).unwrap();
        assert_eq!(q.seq_range(), (1, 2));
        let beyond = MsgHeader { ack_seq: 5, ..ack1 };
        assert_eq!(
            feed(&mut rb, &mut q, &beyond.encode()),
            Err(Close::new(CloseReason::AckBeyondSent))
        );
        // (The session closes there; a new one starts with a clear buffer.)
        rb.clear();
        let tiny = MsgHeader { size: 3, ..ack1 };
        assert_eq!(
            feed(&mut rb, &mut q, &tiny.encode()),
            Err(Close::new(CloseReason::SizeTooSmall))
        );
    }
}
