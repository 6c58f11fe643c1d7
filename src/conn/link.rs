//! A live TCP session over a real socket: the sans-IO [`Session`] driven
//! with reads and writes from `sys::socket`, and the open/closed state a
//! connection shares with the thread that polls its socket.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::close::{Close, CloseReason};
use crate::ptcp_queue::PtcpQueue;
use crate::session::{RecvBuf, ReloginGuard, Session, Timers};
use crate::sys::{socket, Mapping};

/// The open/closed state of one session, shared with the thread that
/// polls its TCP side (for shared-memory connections, the server's control
/// thread or the client's TCP poller).
#[derive(Debug)]
pub(crate) struct LinkState(AtomicU64);

impl LinkState {
    pub(crate) fn new_open() -> Arc<LinkState> {
        Arc::new(LinkState(AtomicU64::new(0)))
    }

    pub(crate) fn new_closed(reason: CloseReason) -> Arc<LinkState> {
        Arc::new(LinkState(AtomicU64::new(Close::new(reason).to_word())))
    }

    /// Closes with `c`; the first close wins. Returns whether this call
    /// closed it.
    pub(crate) fn close(&self, c: Close) -> bool {
        // SYNC POINT link-closed: Release pairs with the Acquire in
        // `closed`; only the value itself is communicated, no other data.
        self.0
            .compare_exchange(0, c.to_word(), Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    pub(crate) fn closed(&self) -> Option<Close> {
        // SYNC POINT link-closed: Acquire pairs with the Release in `close`.
        let v = self.0.load(Ordering::Acquire);
        (v != 0).then(|| Close::from_word(v))
    }
}

/// The socket of a live session with its session state.
#[derive(Debug)]
pub(crate) struct TcpLink {
    pub sock: TcpStream,
    pub session: Session,
}

impl TcpLink {
    /// A link whose timers start at its first poll.
    pub(crate) fn new(sock: TcpStream, timers: Timers) -> Self {
        TcpLink {
            sock,
            session: Session::new(timers),
        }
    }

    /// Sends what the session has to send: the rest of a heartbeat, then
    /// the queue's unsent bytes. Returns whether bytes remain unsent.
    pub(crate) fn flush(
        &mut self,
        mut queue: Option<&mut PtcpQueue<Mapping>>,
    ) -> Result<bool, Close> {
        // At most two rounds: a heartbeat's rest, then the queue.
        for _ in 0..2 {
            let (bytes, src) = self.session.transmit(queue.as_deref());
            if bytes.is_empty() {
                return Ok(false);
            }
            let len = bytes.len();
            let n = socket::write_some(&mut self.sock, bytes)?;
            self.session.handle_sent(n, src, queue.as_deref_mut());
            if n < len {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether bytes wait to be sent (a heartbeat the socket took in part;
    /// a queue's bytes are the caller's to look at).
    pub(crate) fn has_unsent(&self) -> bool {
        !self.session.transmit::<Mapping>(None).0.is_empty()
    }

    /// One read into `buf`, parsed; `None` when the buffer is full of
    /// unconsumed messages (nothing was read).
    pub(crate) fn read(
        &mut self,
        buf: &mut RecvBuf,
        queue: Option<&mut PtcpQueue<Mapping>>,
        guard: Option<&ReloginGuard>,
    ) -> Result<Option<usize>, Close> {
        let Some(space) = buf.space() else {
            return Ok(None);
        };
        let n = socket::read_some(&mut self.sock, space)?;
        if n > 0 {
            buf.received(n, queue, guard)?;
        }
        Ok(Some(n))
    }

    /// Sends a heartbeat now: wakes the peer's reader, asleep on this
    /// socket. A failure is left for the next poll to find.
    pub(crate) fn wake(&mut self, now: i64) {
        self.session.heartbeat_now(now);
        let _ = self.flush(None);
    }

    /// The socket of a shared-memory session: reads (and drops) at most one
    /// bounded read of the peer's heartbeats (if `read`: a caller that
    /// knows nothing arrived skips the system call), checks the timeout,
    /// sends heartbeats.
    pub(crate) fn poll_heartbeats(&mut self, now: i64, read: bool) -> Result<(), Close> {
        // A timeout is never concluded without a read.
        let got = if read || self.session.would_time_out(now) {
            socket::discard(&mut self.sock)?
        } else {
            0
        };
        self.session.handle_recv(now, Some(got))?;
        self.session.poll_heartbeat(now, 0, 0, true);
        self.flush(None).map(|_| ())
    }
}
