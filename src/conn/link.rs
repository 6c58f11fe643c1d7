//! A live TCP session over a real socket: the sans-IO [`Session`] driven
//! with reads and writes from `sys::socket`, and the open/closed state a
//! connection shares with the thread that polls its socket.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ptcp_queue::PtcpQueue;
use crate::session::{CloseReason, Closed, RecvBuf, ReloginGuard, Session, Timers};
use crate::sys::{socket, Mapping};

/// The open/closed state of one session, shared with the thread that
/// polls its TCP side (for shared-memory connections, the server's control
/// thread or the client's TCP poller).
#[derive(Debug)]
pub(crate) struct LinkState(AtomicU64);

impl LinkState {
    pub fn new_open() -> Arc<LinkState> {
        Arc::new(LinkState(AtomicU64::new(0)))
    }

    pub fn new_closed(reason: CloseReason) -> Arc<LinkState> {
        Arc::new(LinkState(AtomicU64::new((reason.code() as u64) << 32)))
    }

    /// Closes with `reason`; the first close wins. Returns whether this
    /// call closed it.
    pub fn close(&self, (reason, errno): Closed) -> bool {
        let v = (reason.code() as u64) << 32 | errno as u32 as u64;
        // SYNC POINT link-closed: Release pairs with the Acquire in
        // `closed`; only the value itself is communicated, no other data.
        self.0
            .compare_exchange(0, v, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    pub fn closed(&self) -> Option<Closed> {
        // SYNC POINT link-closed: Acquire pairs with the Release in `close`.
        let v = self.0.load(Ordering::Acquire);
        if v == 0 {
            return None;
        }
        let reason = CloseReason::from_code((v >> 32) as u32).unwrap_or(CloseReason::RequestClose);
        Some((reason, v as u32 as i32))
    }
}

/// The socket of a live session with its session state.
#[derive(Debug)]
pub(crate) struct TcpLink {
    pub sock: TcpStream,
    pub session: Session,
}

impl TcpLink {
    pub fn new(sock: TcpStream, now: i64, cfg: &crate::Config) -> Self {
        TcpLink {
            sock,
            session: Session::new(now, Timers::of(cfg)),
        }
    }

    /// Sends what the session has to send: the rest of a heartbeat, then
    /// the queue's unsent bytes. Returns whether bytes remain unsent.
    pub fn flush(&mut self, mut queue: Option<&mut PtcpQueue<Mapping>>) -> Result<bool, Closed> {
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

    /// One read into `buf`, parsed; `None` when the buffer is full of
    /// unconsumed messages (nothing was read).
    pub fn read(
        &mut self,
        buf: &mut RecvBuf,
        queue: Option<&mut PtcpQueue<Mapping>>,
        guard: Option<&ReloginGuard>,
    ) -> Result<Option<usize>, Closed> {
        let Some(space) = buf.space() else {
            return Ok(None);
        };
        let n = socket::read_some(&mut self.sock, space)?;
        if n > 0 {
            buf.received(n, queue, guard)?;
        }
        Ok(Some(n))
    }

    /// The socket of a shared-memory session: reads (and drops) at most one
    /// bounded read of the peer's heartbeats, checks the timeout, sends
    /// heartbeats.
    pub fn poll_heartbeats(&mut self, now: i64) -> Result<(), Closed> {
        let got = socket::discard(&mut self.sock)?;
        self.session.handle_recv(now, Some(got))?;
        self.session.poll_heartbeat(now, 0, 0, true);
        self.flush(None).map(|_| ())
    }
}
