//! The control part of a server: accepts, reads logins within
//! `new_connection_timeout`, asks the application which group serves a
//! login (`logins`), and keeps shared-memory sessions alive (their TCP
//! heartbeats: `shm_links`). One readiness set (epoll) watches the
//! listener, the pending logins and the SHM sessions' sockets: a poll
//! makes one system call to learn which have something, and reads only
//! those.

mod logins;
mod shm_links;
mod slots;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;

use self::logins::PendingLogin;
use self::shm_links::ShmLinks;
use self::slots::{GroupSlots, SlotState};
use super::mailbox::Inbox;
use super::{ControlHandler, GroupInbox, ToCtl, ToGroup};
use crate::close::{Close, CloseReason};
use crate::config::{Config, Ticks};
use crate::conn::Transport;
use crate::error::SetupError;
use crate::sys::{Poller, READABLE};
use crate::wire::{Name, UserData};

/// Group messages taken per poll: far more than a poll's worth of logins
/// and disconnects, and a bound all the same.
const GROUP_MSGS_PER_POLL: usize = 64;

/// Readiness set tokens: the listener, then one per pending login place,
/// then one per SHM session place.
const LISTENER_TOKEN: u64 = 0;
const PENDING_TOKENS: u64 = 1;

/// Events one poll hears of; the rest (level-triggered) at the next.
const EVENTS_PER_POLL: usize = 128;

/// The control part of a server (see [`Server`](super::Server)):
/// accepts connections, reads logins, asks its [`ControlHandler`] which
/// group serves each, and keeps the TCP side of shared-memory sessions
/// alive (heartbeats, timeouts).
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
    shm_links: ShmLinks,
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
        let sizes: Vec<usize> = shm.iter().map(GroupSlots::len).collect();
        Ok(Control {
            name,
            ticks: cfg.ticks(),
            poller,
            pending: (0..cfg.max_new_connections).map(|_| None).collect(),
            shm_links: ShmLinks::new(&sizes, &cfg),
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
        self.shm_links.stop(Close::new(CloseReason::RequestClose));
    }

    fn groups(&mut self, transport: Transport) -> &mut Vec<GroupSlots<U, R>> {
        match transport {
            Transport::Tcp => &mut self.tcp,
            Transport::Shm => &mut self.shm,
        }
    }

    /// Token of the first SHM session place.
    fn shm_tokens(&self) -> u64 {
        PENDING_TOKENS + self.pending.len() as u64
    }

    /// Takes the groups' news, then asks the readiness set what is
    /// readable (one system call): accepts connections (at most 64), reads
    /// the logins that sent something and hands the complete ones to
    /// their group, and reads the SHM sessions' sockets that have bytes.
    /// Pending logins past their time are dropped, and SHM sessions whose
    /// heartbeat or timeout is due are seen to (a timer wheel: one compare
    /// when none is). Every step is bounded.
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
        let shm_tokens = self.shm_tokens();
        if let Ok(tokens) = self.poller.wait(0) {
            for t in tokens {
                if t == LISTENER_TOKEN {
                    self.listener_ready = true;
                } else if t < shm_tokens {
                    if let Some(Some(p)) = self.pending.get_mut((t - PENDING_TOKENS) as usize) {
                        p.readable = true;
                    }
                } else {
                    self.shm_links.readable((t - shm_tokens) as usize);
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
        // A failed shm session is closed here and its group told; the group
        // stops delivering and reports it back (ToCtl::Disconnected).
        let (shm, worked) = (&self.shm, &mut self.worked);
        self.shm_links.poll(now, |id| {
            *worked = true;
            let _ = shm[id.group]
                .to_group
                .send(ToGroup::Closed { slot: id.slot });
        });
        std::mem::take(&mut self.worked)
    }

    fn on_group_msg(&mut self, m: ToCtl) {
        match m {
            ToCtl::LoginDone { id, ok, shm } => {
                let state = if ok { SlotState::Live } else { SlotState::Idle };
                self.groups(id.transport)[id.group].set(id.slot, state);
                if let Some((stream, state)) = shm {
                    let token = self.shm_tokens();
                    let started = self.shm_links.start(
                        &self.poller,
                        token,
                        id,
                        stream,
                        state.clone(),
                        &self.cfg,
                    );
                    if started.is_err() {
                        // Out of memory for the readiness set: the session
                        // cannot be kept alive; its group reports it.
                        state.close(Close::new(CloseReason::RequestClose));
                        let _ = self.shm[id.group]
                            .to_group
                            .send(ToGroup::Closed { slot: id.slot });
                    }
                }
            }
            ToCtl::Disconnected { id } => {
                self.groups(id.transport)[id.group].set(id.slot, SlotState::Idle);
                if id.transport == Transport::Shm {
                    self.shm_links.end(id);
                }
            }
        }
    }
}

impl<U: UserData, R: UserData> std::fmt::Debug for Control<U, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr())
            .field("shm_session_places", &self.shm_links.places())
            .finish_non_exhaustive()
    }
}
