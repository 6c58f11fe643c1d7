//! [`Connection`]: one API over TCP or shared memory, as a receive half
//! and a send half. (The borrow rules that keep its zero-copy API sound
//! are shown with compile_fail tests in `docs/soundness.md`.)
#![forbid(unsafe_code)]

mod batch;
mod large;
#[cfg(test)]
mod large_kill;
mod link;
mod rx;
mod tx;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

pub use self::batch::{Batch, CommitError};
pub(crate) use self::link::{LinkState, TcpLink};
pub(crate) use self::rx::RxTransport;
pub use self::rx::{ConnRx, Received};
pub(crate) use self::tx::TxTransport;
pub use self::tx::{Alloc, AllocError, ConnTx};
use crate::close::{Close, CloseReason};
use crate::ptcp_queue::{AckCounter, PtcpQueue};
use crate::session::{RecvBuf, ReloginGuard};
use crate::shm_queue::{ShmReader, ShmWriter};
use crate::stats::ConnStats;
use crate::wire::Name;

/// How a connection carries messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// TCP, with the persistent send queue.
    Tcp,
    /// Shared memory between two processes of one host; the TCP connection
    /// stays up for heartbeats.
    Shm,
}

impl Transport {
    /// Whether this is [`Transport::Shm`] (the login frame's `use_shm`).
    pub fn is_shm(self) -> bool {
        self == Transport::Shm
    }

    /// The transport a login frame's `use_shm` flag asks for.
    pub fn from_use_shm(use_shm: bool) -> Transport {
        if use_shm {
            Transport::Shm
        } else {
            Transport::Tcp
        }
    }
}

/// A connection to one peer, over TCP or shared memory. It stays valid
/// while its [`Client`](crate::Client) or [`Server`](crate::Server) lives,
/// across disconnects and logins: messages pushed while disconnected go
/// out after the next login over the same transport. (A pair's TCP and
/// SHM queues are separate, each with its own counters: what was pushed
/// over TCP waits for the next TCP login.)
///
/// A connection has a receive half ([`ConnRx`]) and a send half
/// ([`ConnTx`]); [`split`](Self::split) hands out both, so a message is
/// read in place and answered without copying, with the borrow checker
/// satisfied:
///
/// ```no_run
/// # fn echo(conn: &mut tcpshm::Connection) {
/// let (rx, tx) = conn.split();
/// while let Some(req) = rx.front() {
///     // Peer slow to consume: keep req, it comes back at the next poll.
///     let Ok(mut rsp) = tx.alloc(req.msg_type(), req.payload().len()) else { break };
///     rsp.payload_mut().copy_from_slice(req.payload());
///     rsp.push(); // a crash here, before the pop, redelivers req:
///     req.pop(); // examples/exactly_once.rs answers it once
/// }
/// # }
/// ```
///
/// A received message dropped without [`Received::pop`] is delivered
/// again; an allocation dropped without [`Alloc::push`] publishes nothing.
/// Both stay sound under `mem::forget` (neither has a `Drop`). The two
/// halves may be used from two threads (both are `Send`): the only state
/// they share is the pair's local ack, which the receive half advances
/// and the send half stamps into every message, both atomically.
#[derive(Debug)]
pub struct Connection {
    pub(crate) rx: ConnRx,
    pub(crate) tx: ConnTx,
    /// Refuse the peer's login frame after login.
    pub(crate) guard: Option<ReloginGuard>,
    /// Sessions started and messages resent after their logins
    /// (statistics).
    sessions: u64,
    resent: u64,
}

const _: () = {
    const fn send<T: Send>() {}
    send::<ConnRx>();
    send::<ConnTx>();
};

impl Connection {
    pub(crate) fn new(local: Name) -> Self {
        // A number per connection, shared by its two halves: a commit
        // that consumes a message checks that it is this connection's.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        // Relaxed: a unique number, nothing is published with it.
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Connection {
            rx: ConnRx::none(id),
            tx: ConnTx::new(local, id),
            guard: None,
            sessions: 0,
            resent: 0,
        }
    }

    /// The two halves, usable at the same time (and from two threads).
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

    /// See [`ConnTx::batch`].
    #[inline]
    pub fn batch(&mut self) -> Batch<'_> {
        self.tx.batch()
    }

    /// See [`ConnTx::send`].
    ///
    /// # Errors
    /// See [`ConnTx::send`].
    pub fn send(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), CommitError> {
        self.tx.send(msg_type, payload)
    }

    /// See [`ConnTx::frames_of`].
    pub fn frames_of(&self, len: usize) -> u32 {
        self.tx.frames_of(len)
    }

    /// See [`ConnTx::max_message`].
    pub fn max_message(&self) -> usize {
        self.tx.max_message()
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
    pub fn close_reason(&self) -> Option<Close> {
        self.tx.close_reason()
    }

    /// See [`ConnTx::messages_pushed`].
    #[inline]
    pub fn messages_pushed(&self) -> u32 {
        self.tx.messages_pushed()
    }

    /// See [`ConnRx::messages_popped`].
    #[inline]
    pub fn messages_popped(&self) -> u32 {
        self.rx.messages_popped()
    }

    /// See [`ConnTx::local_name`].
    pub fn local_name(&self) -> &Name {
        self.tx.local_name()
    }

    /// Whether messages from the peer arrive over the shared-memory fast
    /// path now: the peer's writer announced in this session that it
    /// stamps (a tcpshm peer with `Config::shm_fast_path`), and this side
    /// allows it. `false` over TCP and with a C++ peer.
    pub fn shm_fast_path(&self) -> bool {
        self.rx.shm_fast()
    }

    /// This connection's statistics: cheap, and nothing in it is counted
    /// with more than a plain add.
    pub fn stats(&self) -> ConnStats {
        let mut s = ConnStats {
            connected: !self.is_closed(),
            msgs_sent: self.tx.sent.0,
            bytes_sent: self.tx.sent.1,
            msgs_received: self.rx.pops_total,
            bytes_received: self.rx.bytes,
            resent: self.resent,
            sessions: self.sessions,
            last_close: self.close_reason().filter(|_| self.sessions > 0),
            ..Default::default()
        };
        match &self.tx.t {
            TxTransport::Tcp { queue, link } => {
                s.transport = Some(Transport::Tcp);
                s.acked = Some(queue.seq_range().0);
                s.pending = queue.len();
                s.queue_fill = queue.fill();
                if let Some(l) = link {
                    s.heartbeats_sent = l.session.heartbeats();
                    s.last_heard = Some(l.session.last_heard());
                }
            }
            TxTransport::Shm(w) => {
                s.transport = Some(Transport::Shm);
                s.queue_fill = w.fill();
                s.pending = w.unread();
            }
            TxTransport::None => {}
        }
        s
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
    pub(crate) fn set_tcp_queue(
        &mut self,
        (queue, ack): (PtcpQueue, AckCounter),
        cfg: &crate::Config,
    ) {
        self.rx.t = RxTransport::Tcp {
            buf: RecvBuf::new(cfg.tcp_recv_buf_init_size, cfg.tcp_recv_buf_max_size),
            ack,
        };
        self.tx.t = TxTransport::Tcp { queue, link: None };
        self.tx.max_payload = cfg.max_tcp_payload();
        self.set_max_message(cfg);
    }

    /// Large messages as `cfg` allows them: the largest sent, and the
    /// receive half's assembler (allocated here, once per queue).
    fn set_max_message(&mut self, cfg: &crate::Config) {
        let max = cfg.max_message_size;
        self.tx.max_message = max;
        self.rx.large = (max > self.tx.max_payload).then(|| large::RxLarge::new(max));
    }

    /// Installs the two shm queues without a session.
    pub(crate) fn set_shm_queues(&mut self, w: ShmWriter, r: ShmReader, cfg: &crate::Config) {
        self.rx.t = RxTransport::Shm(r);
        self.tx.t = TxTransport::Shm(w);
        self.tx.max_payload = cfg.max_shm_payload();
        self.set_max_message(cfg);
    }

    pub(crate) fn has_queue(&self, transport: Transport) -> bool {
        match self.tx.t {
            TxTransport::Tcp { .. } => transport == Transport::Tcp,
            TxTransport::Shm(_) => transport == Transport::Shm,
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
        self.tx.max_message = 0;
        self.rx.large = None;
    }

    /// The local ack and sequence range reported at login: 0s for shm.
    pub(crate) fn login_seqs(&self) -> Result<(u32, u32, u32), String> {
        match &self.tx.t {
            TxTransport::Tcp { queue, .. } => {
                let (s, e) = queue.check()?;
                Ok((queue.local_ack(), s, e))
            }
            _ => Ok((0, 0, 0)),
        }
    }

    /// Empties the queues: a new pair (the server name changed).
    pub(crate) fn reset_queues(&mut self) {
        self.rx.reset_large();
        match (&mut self.tx.t, &mut self.rx.t) {
            (TxTransport::Tcp { queue, .. }, RxTransport::Tcp { buf, ack }) => {
                queue.reset(ack);
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
    ///
    /// # Errors
    /// The close the session starts with: an ack beyond what this side
    /// holds, or a failed send; the state is then closed with it.
    pub(crate) fn open_session(
        &mut self,
        link: Option<TcpLink>,
        remote_ack: u32,
        state: Arc<LinkState>,
    ) -> Result<(), Close> {
        self.tx.state = state;
        self.rx.fault = None;
        self.rx.pops = 0;
        self.rx.reset_large();
        self.sessions += 1;
        let res = match (&mut self.tx.t, &mut self.rx.t) {
            (TxTransport::Tcp { queue, link: l }, RxTransport::Tcp { buf, ack }) => {
                buf.clear();
                let consumed = buf.consumed();
                *l = link;
                let acked = queue.login_ack(remote_ack);
                // What the peer has not acknowledged goes out again.
                self.resent += u64::from(queue.len()) * u64::from(acked.is_ok());
                match acked {
                    Err(_) => Err(Close::new(CloseReason::AckBeyondSent)),
                    Ok(()) => match l {
                        Some(l) => {
                            // The peer learnt our ack from the login frame.
                            l.session.handle_login_ack(ack.get(), consumed);
                            l.flush(Some(queue)).map(|_| ())
                        }
                        None => Ok(()),
                    },
                }
            }
            (TxTransport::Shm(w), RxTransport::Shm(r)) => {
                w.reload();
                r.reload();
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(c) = res {
            self.tx.state.close(c);
            if let TxTransport::Tcp { link, .. } = &mut self.tx.t {
                *link = None;
            }
        }
        res
    }

    /// Polls the TCP side of a TCP connection: reads (acks, framing),
    /// sends pending data or a heartbeat, checks the timeout. Every step is
    /// bounded: one read, at most two rounds of writes. `read`: whether to
    /// read (a caller that knows from its readiness set that nothing
    /// arrived skips the system call; the timers see silence). Returns the
    /// close to report, once, when the session ends.
    pub(crate) fn poll_tcp_io(&mut self, now: i64, read: bool) -> Option<Close> {
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
            // A timeout is never concluded without a read.
            let got = if read || l.session.would_time_out(now) {
                l.read(buf, Some(queue), self.guard.as_ref())?
            } else {
                Some(0)
            };
            l.session.handle_recv(now, got)?;
            let pending = l.flush(Some(queue))?;
            l.session
                .poll_heartbeat(now, ack.get(), buf.consumed(), !pending);
            l.flush(Some(queue)).map(|_| ())
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
}

impl Connection {
    /// Whether the TCP side has work for the next poll even if nothing
    /// arrives: messages delivered and not consumed, bytes not yet sent, a
    /// consumed message whose ack is not yet told, a session closed by
    /// this side, or timers not yet started. What a group visits every
    /// poll; every other connection waits for its socket or its deadline.
    /// `writable_watched`: the caller waits for the socket to take bytes
    /// (then unsent bytes are no reason to visit).
    pub(crate) fn tcp_wants_poll(&self, writable_watched: bool) -> bool {
        let (TxTransport::Tcp { queue, link }, RxTransport::Tcp { buf, ack }) =
            (&self.tx.t, &self.rx.t)
        else {
            return false;
        };
        let Some(l) = link else {
            return false;
        };
        buf.has_messages()
            || self.tx.state.closed().is_some()
            || l.session.ack_pending(ack.get())
            || l.session.next_deadline().is_none()
            || (!l.session.transmit(Some(queue)).0.is_empty() && !writable_watched)
    }

    /// The socket of the TCP session, while there is one, and whether
    /// bytes wait to be sent on it (the socket took no more): a group then
    /// waits for the socket to be writable instead of trying at every poll.
    pub(crate) fn tcp_socket(&self) -> Option<(RawFd, bool)> {
        match &self.tx.t {
            TxTransport::Tcp {
                queue,
                link: Some(l),
            } => Some((
                l.sock.as_raw_fd(),
                !l.session.transmit(Some(queue)).0.is_empty(),
            )),
            _ => None,
        }
    }

    /// When the TCP side's timers next have work (a heartbeat, a timeout);
    /// `None` with no session, or before its first poll.
    pub(crate) fn tcp_deadline(&self) -> Option<i64> {
        match &self.tx.t {
            TxTransport::Tcp { link: Some(l), .. } => l.session.next_deadline(),
            _ => None,
        }
    }
}

/// Hands waiting messages to `f`, at most `budget` of them, until one is
/// left unpopped. Over shared memory the budget keeps a peer that keeps
/// the queue full from holding the poll; over TCP the receive buffer
/// bounds the loop (nothing is read inside it). Each round starts with
/// the cheap check (`may_have_messages`), so an empty poll, and the end
/// of a delivery, cost a load or two rather than a `front`. Returns
/// whether a message was handed over.
#[inline]
pub(crate) fn deliver(
    conn: &mut Connection,
    budget: u32,
    f: impl FnMut(Received<'_>, &mut ConnTx),
) -> bool {
    if conn.rx.may_have_messages() {
        deliver_ready(conn, budget, f)
    } else {
        // What was pushed with `push_more` since the last poll goes now,
        // and the last message's lines to the reader's side of the cache.
        conn.tx.settle();
        false
    }
}

/// [`deliver`] for a caller that has just seen `may_have_messages()`
/// return true (a group's poll does, to skip idle connections): the first
/// round does not check again. Returns whether a message was handed over.
#[inline(always)]
pub(crate) fn deliver_ready(
    conn: &mut Connection,
    budget: u32,
    mut f: impl FnMut(Received<'_>, &mut ConnTx),
) -> bool {
    let (rx, tx) = conn.split();
    let mut handed = false;
    for _ in 0..budget {
        let pops = rx.pops;
        let Some(msg) = rx.front() else { break };
        handed = true;
        f(msg, tx);
        if rx.pops == pops || !rx.may_have_messages() {
            break;
        }
    }
    // What the handler pushed with `push_more` goes now, and the lines
    // of its last message to the reader's side of the cache.
    tx.settle();
    // A fault `front` found (a corrupt ring, a fragment refused) ends
    // the session.
    if let Some(f) = rx.fault.take() {
        tx.state.close(f);
    }
    handed
}
