//! [`Connection`]: one API over TCP or shared memory.
//!
//! A connection has a receive half ([`ConnRx`]) and a send half
//! ([`ConnTx`]); [`Connection::split`] hands out both, so a message can be
//! read in place and answered without copying and with the borrow checker
//! satisfied:
//!
//! ```no_run
//! # fn echo(conn: &mut tcpshm::Connection) {
//! let (rx, tx) = conn.split();
//! while let Some(req) = rx.front() {
//!     // Peer slow to consume: keep req unpopped, it comes back next poll.
//!     let Ok(mut rsp) = tx.alloc(req.msg_type(), req.payload().len()) else { break };
//!     rsp.payload_mut().copy_from_slice(req.payload());
//!     req.pop(); // pop first, then push: a crash between them
//!     rsp.push(); // cannot produce a duplicate reply
//! }
//! # }
//! ```
//!
//! A received message dropped without [`Received::pop`] is delivered
//! again; an allocation dropped without [`Alloc::push`] publishes nothing.
//! Both stay sound under `mem::forget` (neither has a `Drop`).
//!
//! The receive half cannot be used while a message borrows it:
//!
//! ```compile_fail
//! # fn f(conn: &mut tcpshm::Connection) {
//! let (rx, _tx) = conn.split();
//! let a = rx.front().unwrap();
//! let b = rx.front().unwrap(); // error: rx is still borrowed by `a`
//! a.pop();
//! # }
//! ```
//!
//! and an allocation borrows the send half until it is pushed or dropped:
//!
//! ```compile_fail
//! # fn f(conn: &mut tcpshm::Connection) {
//! let (_rx, tx) = conn.split();
//! let a = tx.alloc(1, 8).unwrap();
//! tx.close(); // error: tx is still borrowed by `a`
//! a.push();
//! # }
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::session::{CloseReason, Closed, RecvBuf, ReloginGuard, TcpLink, TcpQueue};
use crate::shm_queue::{ShmReader, ShmWriter};
use crate::sys::{AckWord, Mapping, SharedMapping};
use crate::wire::{Name, MSG_TYPE_HEARTBEAT};

/// Why [`ConnTx::alloc`] gave no buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// msg_type 0 is the heartbeat; application types are 1..=65535.
    ReservedType,
    /// The connection has no queue yet (a client before its first login).
    NotOpen,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds the maximum of {max}")
            }
            AllocError::Full => f.write_str("send queue full"),
            AllocError::ReservedType => f.write_str("msg_type 0 is reserved for heartbeats"),
            AllocError::NotOpen => f.write_str("connection has no queue yet"),
        }
    }
}

impl std::error::Error for AllocError {}

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
        // Release pairs with the Acquire in `closed` on the other thread;
        // only the value itself is communicated, no other data.
        self.0
            .compare_exchange(0, v, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    pub fn closed(&self) -> Option<Closed> {
        // Acquire: pairs with the Release in `close`.
        let v = self.0.load(Ordering::Acquire);
        if v == 0 {
            return None;
        }
        let reason = CloseReason::from_code((v >> 32) as u32).unwrap_or(CloseReason::RequestClose);
        Some((reason, v as u32 as i32))
    }
}

#[derive(Debug)]
pub(crate) enum RxTransport {
    None,
    Tcp { buf: RecvBuf, ack: AckWord },
    Shm(ShmReader<Mapping>),
}

#[derive(Debug)]
pub(crate) enum TxTransport {
    None,
    Tcp {
        queue: TcpQueue,
        link: Option<TcpLink>,
    },
    Shm(ShmWriter<Mapping>),
}

/// The receive half of a connection.
#[derive(Debug)]
pub struct ConnRx {
    pub(crate) t: RxTransport,
    /// Messages popped, to tell whether a callback consumed its message.
    pub(crate) pops: u64,
    /// A corrupt shm queue seen by `front`, reported by the next poll.
    pub(crate) fault: Option<Closed>,
}

/// A received message, borrowed from the receive buffer or the shared
/// memory queue (zero copy). Pop it to consume it; drop it to have it
/// delivered again.
#[derive(Debug)]
pub struct Received<'a> {
    rx: &'a mut ConnRx,
    msg_type: u16,
    off: usize,
    len: usize,
}

impl Received<'_> {
    /// The message type (1..=65535).
    #[inline]
    pub fn msg_type(&self) -> u16 {
        self.msg_type
    }

    /// The payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        match &self.rx.t {
            RxTransport::Tcp { buf, .. } => buf.payload(self.off, self.len),
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
        self.rx.pop_current();
    }
}

impl ConnRx {
    fn none() -> Self {
        ConnRx {
            t: RxTransport::None,
            pops: 0,
            fault: None,
        }
    }

    /// The next application message, heartbeats hidden, or `None`.
    #[inline]
    pub fn front(&mut self) -> Option<Received<'_>> {
        let (msg_type, off, len) = match &mut self.t {
            RxTransport::Tcp { buf, .. } => buf.front()?,
            RxTransport::Shm(r) => match r.front() {
                Ok(Some((t, p))) => (t, 0, p.len()),
                Ok(None) => return None,
                Err(_) => {
                    self.fault = Some((CloseReason::ShmCorrupt, 0));
                    return None;
                }
            },
            RxTransport::None => return None,
        };
        Some(Received {
            rx: self,
            msg_type,
            off,
            len,
        })
    }

    fn pop_current(&mut self) {
        match &mut self.t {
            RxTransport::Tcp { buf, ack } => {
                buf.pop();
                ack.set(ack.get().wrapping_add(1));
            }
            RxTransport::Shm(r) => r.pop(),
            RxTransport::None => return,
        }
        self.pops += 1;
    }

    /// Application messages popped from this pair since it was (re)set,
    /// mod 2^31. Persisted with each pop, so exact after a crash at any
    /// instruction: an application can keep its own state consistent with
    /// it (see the echo server of the `tcpshm` command).
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
}

/// The send half of a connection.
#[derive(Debug)]
pub struct ConnTx {
    pub(crate) local: Name,
    pub(crate) remote: Option<Name>,
    pub(crate) t: TxTransport,
    pub(crate) max_payload: usize,
    pub(crate) state: Arc<LinkState>,
}

/// A message being written in the send queue. [`push`](Alloc::push)
/// publishes it; dropping it publishes nothing.
#[derive(Debug)]
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
    #[inline]
    pub fn push(self) {
        self.tx.push(true);
    }

    /// Publishes the message; over TCP it is sent with the next `push` or
    /// poll (batching several messages into one write). Same as `push`
    /// over shared memory.
    #[inline]
    pub fn push_more(self) {
        self.tx.push(false);
    }
}

impl ConnTx {
    fn new(local: Name) -> Self {
        ConnTx {
            local,
            remote: None,
            t: TxTransport::None,
            max_payload: 0,
            state: LinkState::new_closed(CloseReason::RequestClose),
        }
    }

    /// Reserves a message of `msg_type` with a payload of `len` bytes.
    /// Works while disconnected too: the message goes out after the next
    /// login.
    ///
    /// # Errors
    /// [`AllocError`]: too large for the configuration, queue full,
    /// type 0, or no queue yet.
    #[inline]
    pub fn alloc(&mut self, msg_type: u16, len: usize) -> Result<Alloc<'_>, AllocError> {
        if msg_type == MSG_TYPE_HEARTBEAT {
            return Err(AllocError::ReservedType);
        }
        if len > self.max_payload {
            return match self.t {
                TxTransport::None => Err(AllocError::NotOpen),
                _ => Err(AllocError::TooLarge {
                    len,
                    max: self.max_payload,
                }),
            };
        }
        let ok = match &mut self.t {
            TxTransport::Tcp { queue, .. } => queue.alloc(msg_type, len).is_some(),
            TxTransport::Shm(w) => w.alloc(msg_type, len).is_some(),
            TxTransport::None => return Err(AllocError::NotOpen),
        };
        if ok {
            Ok(Alloc { tx: self })
        } else {
            Err(AllocError::Full)
        }
    }

    fn push(&mut self, send_now: bool) {
        match &mut self.t {
            TxTransport::Tcp { queue, link } => {
                queue.push();
                if let Some(l) = link.as_mut() {
                    l.ack_sent = queue.local_ack();
                }
                if send_now && self.state.closed().is_none() {
                    if let Some(l) = link {
                        if let Err(c) = l.flush(Some(queue)) {
                            self.state.close(c);
                        }
                    }
                }
            }
            TxTransport::Shm(w) => w.push(),
            TxTransport::None => {}
        }
    }

    /// Sends what `push_more` left unsent (TCP); polls do this too.
    pub fn flush(&mut self) {
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
        if self.state.close((CloseReason::RequestClose, 0)) {
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

    /// Why the connection closed, with the OS errno (0 if none).
    pub fn close_reason(&self) -> Option<(CloseReason, i32)> {
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
    /// instruction.
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

/// A connection to one peer, over TCP or shared memory. It stays valid
/// while its [`Client`](crate::Client) or [`Server`](crate::Server) lives,
/// across disconnects and logins.
#[derive(Debug)]
pub struct Connection {
    pub(crate) rx: ConnRx,
    pub(crate) tx: ConnTx,
    /// Refuse the peer's login frame after login.
    pub(crate) guard: Option<ReloginGuard>,
}

impl Connection {
    pub(crate) fn new(local: Name) -> Self {
        Connection {
            rx: ConnRx::none(),
            tx: ConnTx::new(local),
            guard: None,
        }
    }

    /// The two halves, usable at the same time.
    #[inline]
    pub fn split(&mut self) -> (&mut ConnRx, &mut ConnTx) {
        (&mut self.rx, &mut self.tx)
    }

    /// See [`ConnTx::alloc`].
    ///
    /// # Errors
    /// See [`ConnTx::alloc`].
    #[inline]
    pub fn alloc(&mut self, msg_type: u16, len: usize) -> Result<Alloc<'_>, AllocError> {
        self.tx.alloc(msg_type, len)
    }

    /// See [`ConnRx::front`].
    #[inline]
    pub fn front(&mut self) -> Option<Received<'_>> {
        self.rx.front()
    }

    /// See [`ConnTx::close`].
    pub fn close(&mut self) {
        self.tx.close()
    }

    /// See [`ConnTx::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// See [`ConnTx::close_reason`].
    pub fn close_reason(&self) -> Option<(CloseReason, i32)> {
        self.tx.close_reason()
    }

    /// See [`ConnTx::local_name`].
    pub fn local_name(&self) -> &Name {
        self.tx.local_name()
    }

    /// See [`ConnTx::remote_name`].
    pub fn remote_name(&self) -> Option<&Name> {
        self.tx.remote_name()
    }

    /// See [`ConnTx::flush`].
    pub fn flush(&mut self) {
        self.tx.flush()
    }

    /// Installs a TCP queue (files opened) without a session.
    pub(crate) fn set_tcp_queue(&mut self, queue: TcpQueue, cfg: &crate::Config) {
        let ack = queue
            .region()
            .word(TcpQueue::<SharedMapping>::LOCAL_ACK_OFFSET);
        self.rx.t = RxTransport::Tcp {
            buf: RecvBuf::new(cfg.tcp_recv_buf_init_size, cfg.tcp_recv_buf_max_size),
            ack,
        };
        self.tx.t = TxTransport::Tcp { queue, link: None };
        self.tx.max_payload = cfg.max_tcp_payload();
    }

    /// Installs the two shm queues without a session.
    pub(crate) fn set_shm_queues(
        &mut self,
        w: ShmWriter<Mapping>,
        r: ShmReader<Mapping>,
        cfg: &crate::Config,
    ) {
        self.rx.t = RxTransport::Shm(r);
        self.tx.t = TxTransport::Shm(w);
        self.tx.max_payload = cfg.max_shm_payload();
    }

    pub(crate) fn has_queue(&self, shm: bool) -> bool {
        match self.tx.t {
            TxTransport::Tcp { .. } => !shm,
            TxTransport::Shm(_) => shm,
            TxTransport::None => false,
        }
    }

    /// Closes the session ("Request close") and its socket; queues stay.
    pub(crate) fn end_session(&mut self) {
        self.close();
        if let TxTransport::Tcp { link, .. } = &mut self.tx.t {
            *link = None;
        }
    }

    /// Drops queues and files.
    pub(crate) fn release(&mut self) {
        self.rx.t = RxTransport::None;
        self.tx.t = TxTransport::None;
        self.tx.max_payload = 0;
    }

    /// The local ack and sequence range reported at login: 0s for shm.
    pub(crate) fn login_seqs(&self) -> Result<(u32, u32, u32), String> {
        match &self.tx.t {
            TxTransport::Tcp { queue, .. } => {
                let (s, e) = queue.check()?;
                Ok((self.rx.local_ack(), s, e))
            }
            _ => Ok((0, 0, 0)),
        }
    }

    /// Empties the queues: a new pair (the server name changed).
    pub(crate) fn reset_queues(&mut self) {
        match (&mut self.tx.t, &mut self.rx.t) {
            (TxTransport::Tcp { queue, .. }, RxTransport::Tcp { buf, ack }) => {
                queue.reset();
                ack.set(0);
                buf.clear();
            }
            (TxTransport::Shm(w), RxTransport::Shm(r)) => {
                w.reset();
                r.reset();
            }
            _ => {}
        }
    }

    /// Starts a session after a successful login: over TCP, takes the
    /// peer's ack, rewinds to resend everything unacknowledged and sends
    /// it; over shm, takes up the queue indices. `link` is the socket for
    /// TCP connections (for shm the TCP side is polled elsewhere).
    pub(crate) fn open_session(
        &mut self,
        link: Option<TcpLink>,
        remote_ack: u32,
        state: Arc<LinkState>,
    ) -> Result<(), Closed> {
        self.tx.state = state;
        self.rx.fault = None;
        match (&mut self.tx.t, &mut self.rx.t) {
            (TxTransport::Tcp { queue, link: l }, RxTransport::Tcp { buf, .. }) => {
                buf.clear();
                queue
                    .login_ack(remote_ack)
                    .map_err(|_| (CloseReason::AckBeyondSent, 0))?;
                *l = link;
                if let Some(l) = l {
                    l.flush(Some(queue))?;
                }
            }
            (TxTransport::Shm(w), RxTransport::Shm(r)) => {
                w.reload();
                r.reload();
            }
            _ => {}
        }
        Ok(())
    }

    /// Polls the TCP side of a TCP connection: reads (acks, framing),
    /// sends pending data or a heartbeat, checks the timeout. Returns the
    /// close to report, once, when the session ends.
    pub(crate) fn poll_tcp_io(&mut self, now: i64, cfg: &crate::Config) -> Option<Closed> {
        let TxTransport::Tcp { queue, link } = &mut self.tx.t else {
            return None;
        };
        let l = link.as_mut()?;
        let res = (|| {
            if let Some(c) = self.tx.state.closed() {
                return Err(c);
            }
            let RxTransport::Tcp { buf, ack } = &mut self.rx.t else {
                return Ok(());
            };
            let got = buf.read_from(&mut l.sock, Some(queue), self.guard.as_ref())?;
            l.check_recv(now, got, cfg.connection_timeout)?;
            if !queue.sendable().is_empty() {
                l.flush(Some(queue))?;
            }
            l.heartbeat(now, cfg.heartbeat_interval, ack.get(), Some(queue))
        })();
        match res {
            Ok(()) => None,
            Err(c) => {
                self.tx.state.close(c);
                *link = None; // closes the socket
                self.tx.state.closed()
            }
        }
    }

    /// Whether the receive half has whole messages waiting (TCP) or may
    /// have (shm).
    pub(crate) fn may_have_messages(&self) -> bool {
        match &self.rx.t {
            RxTransport::Tcp { buf, .. } => buf.has_messages(),
            RxTransport::Shm(_) => true,
            RxTransport::None => false,
        }
    }
}

/// Hands every waiting message to `f` until one is left unpopped.
pub(crate) fn deliver(conn: &mut Connection, mut f: impl FnMut(Received<'_>, &mut ConnTx)) {
    if !conn.may_have_messages() {
        return;
    }
    let (rx, tx) = conn.split();
    loop {
        let pops = rx.pops;
        let Some(msg) = rx.front() else { break };
        f(msg, tx);
        if rx.pops == pops {
            break;
        }
    }
}
