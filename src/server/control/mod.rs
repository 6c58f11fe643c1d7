//! The control part of a server: accepts, reads logins within
//! `new_connection_timeout` and asks the application which group serves
//! a login (`logins`). One readiness set (epoll) watches the listener,
//! the pending logins and the groups' mailbox: a poll makes one system
//! call to learn which have something, and reads only those.

mod logins;
mod slots;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use self::logins::PendingLogin;
use self::slots::{GroupSlots, SlotState};
use super::mailbox::Inbox;
use super::{ControlHandler, GroupInbox, ToCtl};
use crate::config::{Config, Ticks};
use crate::conn::Transport;
use crate::error::SetupError;
use crate::sys::{Poller, READABLE};
use crate::wait::Wait;
use crate::wire::{Name, UserData};

/// Group messages taken per poll: far more than a poll's worth of logins
/// and disconnects, and a bound all the same.
const GROUP_MSGS_PER_POLL: usize = 64;

/// Readiness set tokens: the listener, then one per pending login place;
/// the groups' mailbox's waker last.
const LISTENER_TOKEN: u64 = 0;
const PENDING_TOKENS: u64 = 1;
const WAKER_TOKEN: u64 = u64::MAX;

/// Events one poll hears of; the rest (level-triggered) at the next.
const EVENTS_PER_POLL: usize = 128;

/// The control part of a server (see [`Server`](super::Server)):
/// accepts connections, reads logins and asks its [`ControlHandler`]
/// which group serves each.
pub struct Control<U: UserData = u8, R: UserData = u8> {
    name: Name,
    cfg: Arc<Config>,
    ticks: Ticks,
    poller: Poller,
    listener: Option<TcpListener>,
    listener_ready: bool,
    pending: Vec<Option<PendingLogin>>,
    tcp: Vec<GroupSlots<U, R>>,
    shm: Vec<GroupSlots<U, R>>,
    from_groups: Inbox<ToCtl>,
    /// This poll did work (what `poll` returns).
    worked: bool,
}

impl<U: UserData, R: UserData> Control<U, R> {
    pub(super) fn new(
        name: Name,
        cfg: Arc<Config>,
        inboxes: Vec<GroupInbox<U, R>>,
        from_groups: Inbox<ToCtl>,
    ) -> Result<Self, SetupError> {
        let (mut tcp, mut shm) = (Vec::new(), Vec::new());
        for (transport, to_group, per) in inboxes {
            let g = GroupSlots::new(transport, to_group, per);
            match transport {
                Transport::Tcp => tcp.push(g),
                Transport::Shm => shm.push(g),
            }
        }
        let poller = Poller::new(EVENTS_PER_POLL).map_err(|source| SetupError::Io {
            op: "create the control part's epoll set",
            source,
        })?;
        // The groups' news wakes the control part from a sleep.
        poller
            .add(&from_groups.waker_fd(), WAKER_TOKEN, READABLE)
            .map_err(|source| SetupError::Io {
                op: "watch the control part's mailbox",
                source,
            })?;
        Ok(Control {
            name,
            ticks: cfg.ticks(),
            poller,
            pending: (0..cfg.max_new_connections).map(|_| None).collect(),
            cfg,
            listener: None,
            listener_ready: false,
            tcp,
            shm,
            from_groups,
            worked: false,
        })
    }

    pub(super) fn listen(&mut self, addr: impl ToSocketAddrs) -> io::Result<()> {
        if self.listener.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "already started",
            ));
        }
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        self.poller.add(&l, LISTENER_TOKEN, READABLE)?;
        self.listener = Some(l);
        self.listener_ready = true;
        Ok(())
    }

    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    pub(super) fn stop(&mut self) {
        self.listener = None;
        self.pending.iter_mut().for_each(|p| *p = None);
    }

    fn groups(&mut self, transport: Transport) -> &mut Vec<GroupSlots<U, R>> {
        match transport {
            Transport::Tcp => &mut self.tcp,
            Transport::Shm => &mut self.shm,
        }
    }

    /// Takes the groups' news, then asks the readiness set what is
    /// readable (one system call): accepts connections (at most 64), reads
    /// the logins that sent something and hands the complete ones to
    /// their group. Pending logins past their time are dropped. Every step
    /// is bounded.
    ///
    /// Returns whether it did work (a connection accepted, login bytes
    /// read, a group's news taken, a session closed): what an
    /// [`Idle`](crate::Idle) strategy takes.
    pub fn poll<H: ControlHandler<U, R>>(&mut self, now: i64, handler: &mut H) -> bool {
        for _ in 0..GROUP_MSGS_PER_POLL {
            let Some(m) = self.from_groups.take() else {
                break;
            };
            self.worked = true;
            self.on_group_msg(m);
        }
        if let Ok(tokens) = self.poller.wait(0) {
            for t in tokens {
                if t == LISTENER_TOKEN {
                    self.listener_ready = true;
                } else if t != WAKER_TOKEN {
                    let i = t.wrapping_sub(PENDING_TOKENS) as usize;
                    if let Some(Some(p)) = self.pending.get_mut(i) {
                        p.readable = true;
                    }
                }
            }
        }
        if std::mem::take(&mut self.listener_ready) {
            self.accept(now, handler);
        }
        // At most `max_new_connections` (5 by default): their timeouts are
        // checked at every poll, their sockets read when readable.
        for i in 0..self.pending.len() {
            self.poll_pending(i, now, handler);
        }
        std::mem::take(&mut self.worked)
    }

    fn on_group_msg(&mut self, m: ToCtl) {
        match m {
            ToCtl::LoginDone { id, ok } => {
                let state = if ok { SlotState::Live } else { SlotState::Idle };
                self.groups(id.transport)[id.group].set(id.slot, state);
            }
            ToCtl::Disconnected { id } => {
                self.groups(id.transport)[id.group].set(id.slot, SlotState::Idle);
            }
        }
    }
}

impl<U: UserData, R: UserData> Wait for Control<U, R> {
    /// See [`Wait::wait_timeout`]. Zero when the groups sent news, or the
    /// listener has connections left to accept; else until the first
    /// pending login's time is up (the listener, the pending logins'
    /// sockets and the groups' mailbox wake it).
    fn wait_timeout(&mut self, now: i64) -> Option<Duration> {
        if !self.from_groups.may_sleep() || self.listener_ready {
            return Some(Duration::ZERO);
        }
        let t = &self.ticks;
        let mut next: Option<i64> = None;
        for p in self.pending.iter().flatten() {
            if p.readable {
                return Some(Duration::ZERO);
            }
            let d = p.deadline(t);
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        next.map(|d| self.cfg.until(now, d))
    }
}

impl<U: UserData, R: UserData> AsRawFd for Control<U, R> {
    /// An epoll set with the listener, the pending logins and the groups'
    /// mailbox. See [`Wait`].
    fn as_raw_fd(&self) -> RawFd {
        self.poller.as_raw_fd()
    }
}

impl<U: UserData, R: UserData> AsFd for Control<U, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

impl<U: UserData, R: UserData> std::fmt::Debug for Control<U, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}
