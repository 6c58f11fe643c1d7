//! A group of connections (TCP or SHM), polled by one thread: finishes the
//! logins the control part hands over (opens files, checks sequence
//! numbers, answers) and delivers messages. How a poll finds the
//! connections with work is the transport's: `tcp` (a readiness set and
//! a timer wheel once the group is large) and `shm`.

mod shm;
mod shm_links;
mod tcp;

/// The readiness set's token of the mailbox's waker (slots are below it).
const WAKER: u64 = u64::MAX;

/// A connection that delivered application messages within this long
/// (heartbeats do not count) is hot: a large group looks at it at every
/// poll, as a small group looks at all of its connections.
const HOT_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::mailbox::{Inbox, Outbox};
use super::slot_set::SlotSet;
use super::{ConnId, GroupHandler, LoginHandoff, ToCtl, ToGroup};
use crate::close::Close;
use crate::config::Config;
use crate::conn::{Connection, LinkState, RxTransport, TcpLink, Transport};
use crate::error::{FileError, SetupError};
use crate::login::{self, Rejection, SeqMismatch};
use crate::stats::ConnStats;
use crate::sys::READABLE;
use crate::wait::Wait;
use crate::wire::{error_msg_field, LoginResponse, LoginStatus, Name, UserData};

/// A group of connections of one transport, polled by one thread with
/// its [`GroupHandler`] (see [`Server`](super::Server)).
pub struct Group<U: UserData = u8, R: UserData = u8> {
    transport: Transport,
    idx: usize,
    server: Name,
    dir: PathBuf,
    cfg: Arc<Config>,
    conns: Vec<Connection>,
    /// Slots with a session this group serves.
    live: SlotSet,
    inbox: Inbox<ToGroup<U, R>>,
    to_ctl: Outbox<ToCtl>,
    /// How a TCP group finds its connections with work (`None` for SHM).
    tcp: Option<tcp::Readiness>,
    /// How an SHM group does (`None` for TCP).
    shm: Option<shm::Readiness>,
    /// This poll did work for the application (what `poll` returns).
    worked: bool,
    /// An SHM group's rings have their flags up (`Wait`): the next poll
    /// lowers them.
    asleep: bool,
}

impl<U: UserData, R: UserData> Group<U, R> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        transport: Transport,
        idx: usize,
        server: Name,
        dir: PathBuf,
        cfg: Arc<Config>,
        per: usize,
        inbox: Inbox<ToGroup<U, R>>,
        to_ctl: Outbox<ToCtl>,
    ) -> Result<Self, SetupError> {
        let (tcp, shm) = match transport {
            Transport::Tcp => (Some(tcp::Readiness::new(per, &cfg)?), None),
            Transport::Shm => (None, Some(shm::Readiness::new(per, idx, &server, &cfg)?)),
        };
        let group = Group {
            transport,
            idx,
            server,
            dir,
            cfg,
            conns: (0..per).map(|_| Connection::new(server)).collect(),
            live: SlotSet::new(per),
            inbox,
            to_ctl,
            tcp,
            shm,
            worked: false,
            asleep: false,
        };
        // Mail wakes the group from a sleep.
        group
            .poller()
            .add(&group.inbox.waker_fd(), WAKER, READABLE)
            .map_err(|source| SetupError::Io {
                op: "watch a group's mailbox",
                source,
            })?;
        Ok(group)
    }

    /// The group's readiness set: its transport's.
    fn poller(&self) -> &crate::sys::Poller {
        match (&self.tcp, &self.shm) {
            (Some(t), _) => &t.poller,
            (_, Some(s)) => &s.poller,
            _ => unreachable!("a group has one transport"),
        }
    }

    /// Statistics of the slots bound to a client name (allocates: not
    /// for the hot path).
    pub fn stats(&self) -> Vec<(ConnId, Name, ConnStats)> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| Some((self.id(slot), *c.remote_name()?, c.stats())))
            .collect()
    }

    /// This group's transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// This group's index among the groups of its transport.
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Closes the files of the idle slot bound to `client`, if any (for
    /// [`super::Server::reset_pair`]). `Err` if that slot has a session.
    pub(super) fn release_pair(&mut self, client: &Name) -> Result<(), ()> {
        for (slot, c) in self.conns.iter_mut().enumerate() {
            if c.remote_name() == Some(client) {
                if self.live.contains(slot) {
                    return Err(());
                }
                c.release();
            }
        }
        Ok(())
    }

    /// This group's id for slot `slot`.
    fn id(&self, slot: usize) -> ConnId {
        ConnId {
            transport: self.transport,
            group: self.idx,
            slot,
        }
    }

    /// Connections of this group with a session up now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// A connection of this group, to push to outside callbacks. What is
    /// pushed goes out at once, or with the group's next poll.
    pub fn connection(&mut self, slot: usize) -> Option<&mut Connection> {
        let conn = self.conns.get_mut(slot)?;
        // Its next poll visits it: to send what a push left, to let a
        // batch go, or to report a close.
        if let Some(t) = &mut self.tcp {
            t.touch(slot);
        }
        if let Some(s) = &mut self.shm {
            s.touch(slot);
        }
        Some(conn)
    }

    /// Serves the group once: finishes the logins the control part handed
    /// over, then delivers the connections' messages to `handler`.
    /// - TCP: reads, sends, heartbeats, checks the timeout and delivers
    ///   what its receive buffer holds (at most
    ///   `Config::tcp_recv_buf_max_size` bytes), for each connection with
    ///   work: in a group of more than a few live connections, those whose
    ///   socket is readable (one `epoll_wait` for the group), whose timers
    ///   are due, or that have bytes to send or messages to deliver.
    /// - SHM: delivers at most `Config::shm_msgs_per_poll` messages per
    ///   connection from shared memory, and once per
    ///   `Config::socket_poll_interval` sees to the TCP side of these
    ///   sessions (heartbeats, timeouts, one `epoll_wait` for the group).
    ///
    /// An empty poll of an SHM group makes no system call: it costs a few
    /// nanoseconds per connection in a small group, and with a doorbell a
    /// load per 64 connections plus the rings looked at in every poll. An
    /// empty poll of a TCP group makes one system call, however many
    /// connections it has.
    ///
    /// Returns whether it did work for the application (a login finished,
    /// a message delivered, a disconnect reported): what an
    /// [`Idle`](crate::Idle) strategy takes.
    #[inline]
    pub fn poll<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) -> bool {
        if self.asleep {
            self.wake_up();
        }
        self.take_mail(handler);
        if !self.live.is_empty() {
            match self.transport {
                Transport::Shm => self.serve_shm(now, handler),
                Transport::Tcp => self.serve_tcp(now, handler),
            }
        }
        // A store only after work: an empty poll reads the flag.
        if self.worked {
            self.worked = false;
            return true;
        }
        false
    }

    /// Stops serving slot `slot`, whose session ended with `close`, and
    /// reports it to the handler and the control part.
    fn end(&mut self, slot: usize, close: Close, handler: &mut impl GroupHandler<U>) {
        self.worked = true;
        self.live.remove(slot);
        if let Some(t) = &mut self.tcp {
            t.forget(slot);
        }
        if let Some(s) = &mut self.shm {
            s.forget(slot);
        }
        let id = self.id(slot);
        if let Some(name) = self.conns[slot].remote_name() {
            handler.on_client_disconnected(id, name, close);
        }
        let _ = self.to_ctl.send(ToCtl::Disconnected { id });
    }

    pub(super) fn stop(&mut self) {
        if let Some(s) = &mut self.shm {
            s.stop_links();
        }
        for c in &mut self.conns {
            c.end_session();
        }
        for slot in 0..self.conns.len() {
            if let Some(t) = &mut self.tcp {
                t.forget(slot);
            }
            if let Some(s) = &mut self.shm {
                s.forget(slot);
            }
        }
        self.live.clear();
    }

    /// Takes what the control part sent (logins to finish): one load when
    /// there is nothing (every poll comes here).
    #[inline(always)]
    fn take_mail<H: GroupHandler<U>>(&mut self, handler: &mut H) {
        if !self.inbox.is_empty() {
            self.take_mail_slow(handler);
        }
    }

    #[cold]
    #[inline(never)]
    fn take_mail_slow<H: GroupHandler<U>>(&mut self, handler: &mut H) {
        self.worked = true;
        // Bounded: a login and a close per slot at most; the rest waits
        // for the next poll.
        for _ in 0..2 * self.conns.len() {
            match self.inbox.take() {
                None => break,
                Some(ToGroup::Login(h)) => {
                    let (id, slot) = (self.id(h.slot), h.slot);
                    let ok = self.finish_login(*h, handler);
                    let _ = self.to_ctl.send(ToCtl::LoginDone { id, ok });
                    // A session that could not start (the resend failed, or
                    // the client acked beyond what we hold), or that the
                    // handler closed at logon: reported now, after its
                    // logon, and after the control part heard of the login.
                    if ok && self.live.contains(slot) {
                        if let Some(closed) = self.conns[slot].close_reason() {
                            self.end(slot, closed, handler);
                        }
                    }
                }
            }
        }
    }

    /// Rules 5 to 7 of the login: open the pair's files, start afresh for
    /// a new pair, check the sequence numbers, answer. Returns whether a
    /// session started.
    fn finish_login<H: GroupHandler<U>>(&mut self, h: LoginHandoff<U, R>, handler: &mut H) -> bool {
        let LoginHandoff {
            slot,
            mut stream,
            seqs: (ack, client_start, client_end),
            login,
            user_data,
        } = h;
        let name = login.client;
        let mut rsp = LoginResponse::<R> {
            server_name: self.server.to_wire(),
            user_data,
            status: LoginStatus::Rejected,
            ..Default::default()
        };
        let conn = &mut self.conns[slot];
        let opened = login::open_pair(
            conn,
            &self.dir,
            &self.server,
            &name,
            self.transport,
            &self.cfg,
        );
        if let Err(e) = opened {
            handler.on_file_error(&name, &e);
            rsp.error_msg = error_msg_field(Rejection::System.text());
            let _ = stream.write(&rsp.encode(0));
            return false;
        }
        let mut m = SeqMismatch {
            local_ack: 0,
            local_seq_start: 0,
            local_seq_end: 0,
            remote_ack: ack,
            remote_seq_start: client_start,
            remote_seq_end: client_end,
        };
        if login::is_new_pair(login.last_server, self.server) {
            conn.reset_queues();
            (m.remote_ack, m.remote_seq_start, m.remote_seq_end) = (0, 0, 0);
        } else {
            match conn.login_seqs() {
                Ok(v) => (m.local_ack, m.local_seq_start, m.local_seq_end) = v,
                Err(why) => {
                    let path = crate::pair_files::ptcp_path(&self.dir, &self.server, &name);
                    handler.on_file_error(&name, &FileError::corrupt(path, why));
                    rsp.error_msg = error_msg_field(Rejection::System.text());
                    let _ = stream.write(&rsp.encode(0));
                    return false;
                }
            }
        }
        rsp.server_seq_start = m.local_seq_start;
        rsp.server_seq_end = m.local_seq_end;
        if !m.fits() {
            handler.on_seq_mismatch(&name, &m);
            rsp.status = LoginStatus::SeqMismatch;
            let _ = stream.write(&rsp.encode(m.local_ack));
            return false;
        }
        // An SHM client rings the group's bell, if it has one, from the
        // start of its session (announced before the response, which
        // starts it).
        let bell = self
            .shm
            .as_ref()
            .map_or(0, |r| r.announcement(self.idx, slot));
        if let RxTransport::Shm(r) = &conn.rx.t {
            r.announce_doorbell(bell);
            // The last session's wake words go before this one's writer
            // starts (the response starts it).
            r.reset_wake();
        }
        // The group's readiness set hears of this socket from now on.
        let watched = match (&mut self.tcp, &mut self.shm) {
            (Some(t), _) => t.watch(&stream, slot),
            (_, Some(s)) => s.watch(&stream, slot),
            _ => Ok(()),
        };
        if watched.is_err() {
            rsp.error_msg = error_msg_field(Rejection::System.text());
            let _ = stream.write(&rsp.encode(0));
            return false;
        }
        rsp.status = LoginStatus::Ok;
        let frame = rsp.encode(m.local_ack);
        // A fresh socket's buffer takes a 72-byte frame whole.
        if !matches!(stream.write(&frame), Ok(n) if n == frame.len()) {
            return false;
        }
        conn.guard = Some(login::guard_against_login::<U>(&name));
        let state = LinkState::new_open();
        match &mut self.shm {
            Some(s) => {
                let _ = conn.open_session(None, 0, state.clone());
                s.start_link(slot, stream, state, &self.cfg);
            }
            None => {
                // A failed start closes the state; reported once the login
                // is done (`take_mail_slow`).
                let link = TcpLink::new(stream, self.cfg.timers());
                let _ = conn.open_session(Some(link), m.remote_ack, state);
            }
        }
        self.live.insert(slot);
        if let Some(t) = &mut self.tcp {
            t.touch(slot); // its first poll starts its timers
        }
        if let Some(r) = &mut self.shm {
            r.started(slot, bell);
        }
        let id = self.id(slot);
        handler.on_client_logon(id, &login, &mut self.conns[slot]);
        true
    }

    /// Lowers what a sleep raised (an SHM group's flags), once.
    pub(super) fn wake_up(&mut self) {
        if std::mem::take(&mut self.asleep) {
            self.shm_awake();
        }
    }
}

impl<U: UserData, R: UserData> Wait for Group<U, R> {
    /// See [`Wait::wait_timeout`]. Zero when mail waits (a login to
    /// finish) or a poll left work; else until the next heartbeat or
    /// timeout of its sessions. An SHM group tells its clients' writers
    /// that it sleeps (they wake it with a heartbeat on the session's
    /// socket); a writer that cannot (a C++ client) has it sleep in
    /// slices of `Config::shm_sweep_interval`.
    fn wait_timeout(&mut self, now: i64) -> Option<Duration> {
        self.wake_up();
        if !self.inbox.may_sleep() {
            return Some(Duration::ZERO);
        }
        match self.transport {
            Transport::Tcp => self.tcp_wait_timeout(now),
            Transport::Shm => self.shm_wait_timeout(now),
        }
    }

    /// See [`Wait::wait`].
    fn wait(&mut self, now: i64, timeout: Duration) -> io::Result<()> {
        crate::wait::wait_then(self, now, timeout, Group::wake_up)
    }
}

impl<U: UserData, R: UserData> AsRawFd for Group<U, R> {
    /// An epoll set with the group's sockets and its mailbox: readable
    /// when a socket has bytes (over shared memory: a client woke the
    /// group, or its heartbeat came) or a login waits. See [`Wait`].
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl<U: UserData, R: UserData> AsFd for Group<U, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller().as_fd()
    }
}
