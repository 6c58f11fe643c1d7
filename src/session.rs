//! The TCP session mechanics: framing across partial reads, acks taken
//! from every header, heartbeats after send silence, timeouts after
//! receive silence, and partial sends resumed without corrupting the
//! stream. Time comes in as `now`; nothing here reads a clock.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::ptcp_queue::{AckError, PtcpQueue};
use crate::sys::SharedMapping;
use crate::wire::{MsgHeader, HEADER_SIZE, MSG_TYPE_HEARTBEAT};

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection.
    RemoteClose,
    /// Reading from the socket failed (errno given).
    ReadError,
    /// Writing to the socket failed (errno given).
    SendError,
    /// Nothing was received for `connection_timeout`.
    Timeout,
    /// The application closed the connection.
    RequestClose,
    /// The peer sent a message larger than the receive buffer's maximum.
    MsgTooLarge,
    /// The peer sent a header whose size is below 8.
    SizeTooSmall,
    /// The peer acknowledged a message that was not sent.
    AckBeyondSent,
    /// The peer sent its login (or login response) again after login.
    LoginAfterLogin,
    /// The peer's shared-memory queue holds what an honest writer never writes.
    ShmCorrupt,
    /// Our own send queue file was altered under us.
    QueueCorrupt,
}

impl CloseReason {
    /// The reason's text: the C++ library's texts for the reasons it has.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::RemoteClose => "Remote close",
            CloseReason::ReadError => "Read error",
            CloseReason::SendError => "Send error",
            CloseReason::Timeout => "Timeout",
            CloseReason::RequestClose => "Request close",
            CloseReason::MsgTooLarge => "Msg size larger than recv buf max size",
            CloseReason::SizeTooSmall => "Protocol violation: header size below 8",
            CloseReason::AckBeyondSent => "Protocol violation: ack beyond what was sent",
            CloseReason::LoginAfterLogin => "Protocol violation: login frame after login",
            CloseReason::ShmCorrupt => "Protocol violation: corrupt shm queue",
            CloseReason::QueueCorrupt => "Send queue file corrupt",
        }
    }

    pub(crate) fn code(self) -> u32 {
        self as u32 + 1
    }

    pub(crate) fn from_code(c: u32) -> Option<CloseReason> {
        use CloseReason::*;
        [
            RemoteClose,
            ReadError,
            SendError,
            Timeout,
            RequestClose,
            MsgTooLarge,
            SizeTooSmall,
            AckBeyondSent,
            LoginAfterLogin,
            ShmCorrupt,
            QueueCorrupt,
        ]
        .get((c as usize).checked_sub(1)?)
        .copied()
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A close: the reason and the OS errno (0 if none).
pub(crate) type Closed = (CloseReason, i32);

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

pub(crate) type TcpQueue<M = SharedMapping> = PtcpQueue<M>;

/// A frame the peer must not send again after login: its type, its size
/// and its 16-byte name field (the peer's own name) at `name_off`.
#[derive(Clone, Copy, Debug)]
pub struct ReloginGuard {
    pub msg_type: u16,
    pub size: u16,
    pub name_off: usize,
    pub name: [u8; 16],
}

/// The receive buffer: bytes `[rpos, parsed)` are whole messages not yet
/// consumed, `[parsed, wpos)` a message still arriving.
#[derive(Debug)]
pub struct RecvBuf {
    buf: Vec<u8>,
    max: usize,
    rpos: usize,
    wpos: usize,
    parsed: usize,
}

impl RecvBuf {
    pub fn new(init: usize, max: usize) -> Self {
        RecvBuf {
            buf: vec![0; init],
            max,
            rpos: 0,
            wpos: 0,
            parsed: 0,
        }
    }

    pub fn clear(&mut self) {
        self.rpos = 0;
        self.wpos = 0;
        self.parsed = 0;
    }

    /// The next application message `(msg_type, offset, len)`, heartbeats
    /// skipped.
    pub fn front(&mut self) -> Option<(u16, usize, usize)> {
        while self.rpos < self.parsed {
            let h = MsgHeader::read(&self.buf[self.rpos..]).ok()?;
            if h.msg_type == MSG_TYPE_HEARTBEAT {
                self.rpos += h.padded_size();
                continue;
            }
            return Some((
                h.msg_type,
                self.rpos + HEADER_SIZE,
                h.size as usize - HEADER_SIZE,
            ));
        }
        None
    }

    pub fn payload(&self, off: usize, len: usize) -> &[u8] {
        &self.buf[off..off + len]
    }

    /// Consumes the message at the read position (after `front`).
    pub fn pop(&mut self) {
        if self.rpos < self.parsed {
            if let Ok(h) = MsgHeader::read(&self.buf[self.rpos..]) {
                self.rpos += h.padded_size();
            }
        }
    }

    /// Whether whole messages are waiting.
    pub fn has_messages(&self) -> bool {
        self.rpos < self.parsed
    }

    /// Reads once from `sock`: makes room first (moving unconsumed bytes to
    /// the front, growing up to the maximum for a large message), then
    /// parses every complete header. Returns the bytes read (0 = nothing
    /// available), or `None` if the buffer is full of unconsumed messages
    /// and nothing was read.
    pub fn read_from<S: Read, M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        sock: &mut S,
        queue: Option<&mut PtcpQueue<M>>,
        guard: Option<&ReloginGuard>,
    ) -> Result<Option<usize>, Closed> {
        if self.rpos == self.wpos {
            self.clear();
        } else if self.rpos > 0 && (self.rpos * 2 > self.wpos || self.wpos == self.buf.len()) {
            self.buf.copy_within(self.rpos..self.wpos, 0);
            self.wpos -= self.rpos;
            self.parsed -= self.rpos;
            self.rpos = 0;
        }
        if self.wpos == self.buf.len() {
            // Grow for the message still arriving (its size was checked
            // against the maximum when its header was parsed; a header not
            // yet complete needs 8 bytes) if the maximum allows it with the
            // unconsumed messages before it. Otherwise the buffer is full
            // of messages the application has not consumed: back-pressure,
            // read nothing (which is not silence).
            // Below the maximum, grow anyway, so the acks behind unconsumed
            // messages can be read (Config::validate makes the maximum
            // larger than the peer's queue, which bounds what the
            // application can leave unconsumed).
            if self.buf.len() >= self.max {
                return Ok(None);
            }
            let need = (self.parsed - self.rpos) + self.pending_size().unwrap_or(HEADER_SIZE);
            let grow = (self.buf.len() * 2).max(need + HEADER_SIZE).min(self.max);
            self.buf.resize(grow, 0);
        }
        let n = match sock.read(&mut self.buf[self.wpos..]) {
            Ok(0) => return Err((CloseReason::RemoteClose, 0)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Some(0)),
            Err(e) => return Err((CloseReason::ReadError, errno(&e))),
        };
        self.wpos += n;
        self.parse(queue, guard)?;
        Ok(Some(n))
    }

    /// Padded size of the message at `parsed` if its header is complete.
    fn pending_size(&self) -> Option<usize> {
        MsgHeader::read(&self.buf[self.parsed..self.wpos])
            .ok()
            .map(|h| h.padded_size())
    }

    fn parse<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        mut queue: Option<&mut PtcpQueue<M>>,
        guard: Option<&ReloginGuard>,
    ) -> Result<(), Closed> {
        while self.wpos - self.parsed >= HEADER_SIZE {
            let h = MsgHeader::read(&self.buf[self.parsed..self.wpos])
                .map_err(|_| (CloseReason::SizeTooSmall, 0))?;
            if (h.size as usize) < HEADER_SIZE {
                return Err((CloseReason::SizeTooSmall, 0));
            }
            let sz = h.padded_size();
            if sz > self.max {
                return Err((CloseReason::MsgTooLarge, 0));
            }
            if let Some(q) = queue.as_deref_mut() {
                match q.ack(h.ack_seq) {
                    Ok(()) => {}
                    Err(AckError::Corrupt) => return Err((CloseReason::QueueCorrupt, 0)),
                    Err(_) => return Err((CloseReason::AckBeyondSent, 0)),
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
                    return Err((CloseReason::LoginAfterLogin, 0));
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

/// The socket of a live session with its timers.
#[derive(Debug)]
pub(crate) struct TcpLink {
    pub sock: TcpStream,
    last_send: i64,
    last_recv: i64,
    /// The latest `now` seen, used to stamp sends made outside a poll.
    now: i64,
    hb: [u8; HEADER_SIZE],
    /// Bytes at the end of `hb` still to send (a partially sent heartbeat).
    hb_left: usize,
    /// The newest local ack put in a header we sent (or stamped in a
    /// message we pushed).
    pub ack_sent: u32,
}

impl TcpLink {
    pub fn new(sock: TcpStream, now: i64) -> Self {
        TcpLink {
            sock,
            last_send: now,
            last_recv: now,
            now,
            hb: [0; HEADER_SIZE],
            hb_left: 0,
            ack_sent: 0,
        }
    }

    /// Sends as much of `bytes` as the socket takes.
    fn send_some(&mut self, bytes: &[u8]) -> Result<usize, Closed> {
        let mut sent = 0;
        while sent < bytes.len() {
            match self.sock.write(&bytes[sent..]) {
                Ok(0) => return Err((CloseReason::SendError, 0)),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((CloseReason::SendError, errno(&e))),
            }
        }
        if sent > 0 {
            self.last_send = self.now;
        }
        Ok(sent)
    }

    /// Sends the rest of a partial heartbeat, then the queue's unsent bytes.
    /// Returns whether anything remains unsent.
    pub fn flush(&mut self, queue: Option<&mut TcpQueue>) -> Result<bool, Closed> {
        if self.hb_left > 0 {
            let hb = self.hb;
            let n = self.send_some(&hb[HEADER_SIZE - self.hb_left..])?;
            self.hb_left -= n;
            if self.hb_left > 0 {
                return Ok(true);
            }
        }
        if let Some(q) = queue {
            let pending = q.sendable().len();
            if pending > 0 {
                let n = self.send_some(q.sendable())?;
                q.mark_sent(n);
                return Ok(n < pending);
            }
        }
        Ok(false)
    }

    /// Sends pending data, or a heartbeat carrying `local_ack` if nothing
    /// was sent for `interval`.
    pub fn heartbeat(
        &mut self,
        now: i64,
        interval: i64,
        local_ack: u32,
        queue: Option<&mut TcpQueue>,
    ) -> Result<(), Closed> {
        self.now = now;
        // Prompt ack: the application consumed messages and has nothing to
        // send; tell the peer now rather than after `interval`, so a peer
        // whose send queue waits for this ack is not held up.
        let prompt =
            local_ack != self.ack_sent && queue.as_ref().is_some_and(|q| q.sendable().is_empty());
        if !prompt && now.wrapping_sub(self.last_send) < interval {
            return Ok(());
        }
        let pending = self.flush(queue)?;
        if pending || (!prompt && now.wrapping_sub(self.last_send) < interval) {
            return Ok(());
        }
        if self.hb_left > 0 {
            return Ok(());
        }
        self.ack_sent = local_ack;
        self.hb = MsgHeader {
            size: HEADER_SIZE as u16,
            msg_type: MSG_TYPE_HEARTBEAT,
            ack_seq: local_ack,
        }
        .encode();
        self.hb_left = HEADER_SIZE;
        self.flush(None)?;
        // A heartbeat the socket would not take still counts as an attempt:
        // the rest goes out with the next flush.
        self.last_send = now;
        Ok(())
    }

    /// Records that bytes arrived, or closes with "Timeout" after
    /// `timeout` of silence. `None`: nothing was read because the receive
    /// buffer is full of unconsumed messages; that is not silence.
    pub fn check_recv(&mut self, now: i64, got: Option<usize>, timeout: i64) -> Result<(), Closed> {
        self.now = now;
        match got {
            Some(0) if now.wrapping_sub(self.last_recv) > timeout => Err((CloseReason::Timeout, 0)),
            Some(0) => Ok(()),
            _ => {
                self.last_recv = now;
                Ok(())
            }
        }
    }

    /// Reads and discards what the peer sent (heartbeats of an SHM
    /// session); returns the bytes read.
    pub fn read_discard(&mut self) -> Result<usize, Closed> {
        let mut b = [0u8; 256];
        let mut total = 0;
        loop {
            match self.sock.read(&mut b) {
                Ok(0) => return Err((CloseReason::RemoteClose, 0)),
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        return Ok(total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((CloseReason::ReadError, errno(&e))),
            }
        }
    }
}
