//! The control part of a server: accepts, reads logins within
//! `new_connection_timeout`, asks the application which group serves a
//! login, and keeps shared-memory sessions alive (their TCP heartbeats).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;

use super::mailbox::{Inbox, Outbox};
use super::{
    Accept, ConnId, ControlHandler, GroupInbox, LoginHandoff, LoginRequest, ToCtl, ToGroup,
};
use crate::close::{Close, CloseReason};
use crate::config::{Config, Ticks};
use crate::conn::{LinkState, TcpLink, Transport};
use crate::login::Rejection;
use crate::wire::{
    error_msg_field, Login, LoginResponse, LoginStatus, MsgHeader, Name, UserData, MSG_TYPE_LOGIN,
};

/// Group messages taken per poll: far more than a poll's worth of logins
/// and disconnects, and a bound all the same.
const GROUP_MSGS_PER_POLL: usize = 64;

/// Connections accepted per poll: enough to drain a flood quickly, and a
/// bound all the same.
const ACCEPTS_PER_POLL: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Idle,
    Pending,
    Live,
}

struct CtlSlot {
    name: Option<Name>,
    state: SlotState,
}

/// The slot that serves `name`: the one bound to it (even if busy: the
/// caller refuses a second login), else a slot never used, else an idle
/// slot of another name. Slots are capacity for live connections, not for
/// every name ever seen: a name that left keeps its queue files on disk,
/// and when it returns any idle slot takes them up again. `None` only
/// when every slot is serving (or finishing the login of) another name.
fn choose_slot(slots: &[CtlSlot], name: Name) -> Option<usize> {
    slots
        .iter()
        .position(|s| s.name == Some(name))
        .or_else(|| slots.iter().position(|s| s.name.is_none()))
        .or_else(|| slots.iter().position(|s| s.state == SlotState::Idle))
}

struct PendingLogin {
    stream: TcpStream,
    peer: SocketAddr,
    since: i64,
    buf: Vec<u8>,
    got: usize,
}

struct ShmSession {
    id: ConnId,
    link: TcpLink,
    state: Arc<LinkState>,
}

/// The slots of one group, as the control part sees them, and the way to
/// hand it a login.
struct GroupSlots<U: UserData, R: UserData> {
    transport: Transport,
    slots: Vec<CtlSlot>,
    to_group: Outbox<ToGroup<U, R>>,
}

/// The control part of a server (see [`Server`](super::Server)):
/// accepts connections, reads logins, asks its [`ControlHandler`] which
/// group serves each, and keeps the TCP side of shared-memory sessions
/// alive (heartbeats, timeouts).
pub struct Control<U: UserData = u8, R: UserData = u8> {
    name: Name,
    cfg: Arc<Config>,
    ticks: Ticks,
    listener: Option<TcpListener>,
    pending: Vec<Option<PendingLogin>>,
    tcp: Vec<GroupSlots<U, R>>,
    shm: Vec<GroupSlots<U, R>>,
    from_groups: Inbox<ToCtl>,
    shm_sessions: Vec<ShmSession>,
}

impl<U: UserData, R: UserData> Control<U, R> {
    pub(super) fn new(
        name: Name,
        cfg: Arc<Config>,
        inboxes: Vec<GroupInbox<U, R>>,
        from_groups: Inbox<ToCtl>,
    ) -> Self {
        let (mut tcp, mut shm) = (Vec::new(), Vec::new());
        for (transport, to_group, per) in inboxes {
            let g = GroupSlots {
                transport,
                slots: (0..per)
                    .map(|_| CtlSlot {
                        name: None,
                        state: SlotState::Idle,
                    })
                    .collect(),
                to_group,
            };
            match transport {
                Transport::Tcp => tcp.push(g),
                Transport::Shm => shm.push(g),
            }
        }
        Control {
            name,
            ticks: cfg.ticks(),
            pending: (0..cfg.max_new_connections).map(|_| None).collect(),
            cfg,
            listener: None,
            tcp,
            shm,
            from_groups,
            shm_sessions: Vec::new(),
        }
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
        self.listener = Some(l);
        Ok(())
    }

    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    pub(super) fn stop(&mut self) {
        self.listener = None;
        self.pending.iter_mut().for_each(|p| *p = None);
        for s in self.shm_sessions.drain(..) {
            s.state.close(Close::new(CloseReason::RequestClose));
        }
    }

    fn groups(&mut self, transport: Transport) -> &mut Vec<GroupSlots<U, R>> {
        match transport {
            Transport::Tcp => &mut self.tcp,
            Transport::Shm => &mut self.shm,
        }
    }

    fn slot(&mut self, id: ConnId) -> &mut CtlSlot {
        &mut self.groups(id.transport)[id.group].slots[id.slot]
    }

    /// Accepts connections (at most 64), reads pending logins, hands the
    /// accepted ones to their group, and keeps shared-memory sessions
    /// alive. Every step is bounded.
    pub fn poll<H: ControlHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        for _ in 0..GROUP_MSGS_PER_POLL {
            let Some(m) = self.from_groups.take() else {
                break;
            };
            self.on_group_msg(m);
        }
        self.accept(now, handler);
        for i in 0..self.pending.len() {
            self.poll_pending(i, now, handler);
        }
        // A failed shm session is closed here and its group told; the group
        // stops delivering and reports it back (ToCtl::Disconnected).
        let mut i = 0;
        while i < self.shm_sessions.len() {
            let s = &mut self.shm_sessions[i];
            let res = match s.state.closed() {
                Some(c) => Err(c),
                None => s.link.poll_heartbeats(now),
            };
            match res {
                Ok(()) => i += 1,
                Err(c) => {
                    s.state.close(c);
                    let id = s.id;
                    self.shm_sessions.swap_remove(i);
                    let _ = self.shm[id.group]
                        .to_group
                        .send(ToGroup::Closed { slot: id.slot });
                }
            }
        }
    }

    fn on_group_msg(&mut self, m: ToCtl) {
        match m {
            ToCtl::LoginDone { id, ok, shm } => {
                self.slot(id).state = if ok { SlotState::Live } else { SlotState::Idle };
                if let Some((stream, state)) = shm {
                    self.shm_sessions.push(ShmSession {
                        id,
                        link: TcpLink::new(stream, self.cfg.timers()),
                        state,
                    });
                }
            }
            ToCtl::Disconnected { id } => self.slot(id).state = SlotState::Idle,
        }
    }

    /// Drains the accept backlog (at most `ACCEPTS_PER_POLL` a poll), each
    /// new connection taking a free pending place or evicting one.
    fn accept<H: ControlHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        for _ in 0..ACCEPTS_PER_POLL {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if stream.set_nonblocking(true).is_err()
                        || stream.set_nodelay(self.cfg.tcp_no_delay).is_err()
                    {
                        continue;
                    }
                    let mut at = self.place_for(peer);
                    if self.pending[at].is_some() {
                        // Before evicting a pending login, read it: clients
                        // that connect together (a restart's reconnects, from
                        // one host for shared memory) have sent their whole
                        // login already, and it goes to its group now.
                        self.poll_pending(at, now, handler);
                        at = self.place_for(peer);
                    }
                    // Replacing a pending login drops (closes) it.
                    self.pending[at] = Some(PendingLogin {
                        stream,
                        peer,
                        since: now,
                        buf: vec![0; Login::<U>::FRAME],
                        got: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Aborted handshakes and the like: not the server's fault.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // Out of descriptors, say: report, and try again next poll.
                    handler.on_system_error("accept", &e);
                    return;
                }
            }
        }
    }

    /// Where a new connection from `peer` goes: the oldest pending login
    /// of the same source if that source is at its cap, else a free place,
    /// else the oldest pending login that has sent nothing, else the oldest.
    fn place_for(&self, peer: SocketAddr) -> usize {
        let oldest = |keep: &dyn Fn(&PendingLogin) -> bool| {
            self.pending
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().filter(|p| keep(p)).map(|p| (p.since, i)))
                .min()
                .map(|(_, i)| i)
        };
        let same = |p: &PendingLogin| p.peer.ip() == peer.ip();
        let of_source = self.pending.iter().flatten().filter(|p| same(p)).count();
        if of_source >= self.cfg.max_pending_per_source {
            if let Some(i) = oldest(&same) {
                return i;
            }
        }
        self.pending
            .iter()
            .position(Option::is_none)
            .or_else(|| oldest(&|p: &PendingLogin| p.got == 0))
            .or_else(|| oldest(&|_: &PendingLogin| true))
            .unwrap_or(0)
    }

    fn poll_pending<H: ControlHandler<U, R>>(&mut self, i: usize, now: i64, handler: &mut H) {
        let Some(p) = &mut self.pending[i] else {
            return;
        };
        let drop_it = match p.stream.read(&mut p.buf[p.got..]) {
            Ok(0) => true,
            Ok(n) => {
                p.got += n;
                false
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                false
            }
            Err(_) => true,
        };
        // A header that is not a login header: drop at once.
        let bad_header = p.got >= 8
            && MsgHeader::read(&p.buf)
                .is_ok_and(|h| h.msg_type != MSG_TYPE_LOGIN || h.size as usize != Login::<U>::SIZE);
        let waited = now.wrapping_sub(p.since);
        let timed_out = waited > self.ticks.new_connection_timeout
            || (p.got == 0 && waited > self.ticks.silent_login_timeout);
        if drop_it || bad_header || (timed_out && p.got < p.buf.len()) {
            self.pending[i] = None;
            return;
        }
        if p.got == p.buf.len() {
            let p = self.pending[i].take().expect("checked above");
            self.handle_login(p, handler);
        }
    }

    /// Rules 1 to 4 of the login: the name, the application's answer, a
    /// slot; then the group finishes it.
    fn handle_login<H: ControlHandler<U, R>>(&mut self, p: PendingLogin, handler: &mut H) {
        let Ok((hdr, login)) = Login::<U>::decode(&p.buf) else {
            return; // dropped with the connection
        };
        let server_name = self.name.to_wire();
        let reject = |mut stream: TcpStream, why: Rejection| {
            let rsp = LoginResponse::<R> {
                status: LoginStatus::Rejected,
                server_name,
                error_msg: error_msg_field(why.text()),
                ..Default::default()
            };
            let _ = stream.write(&rsp.encode(0));
        };
        let Ok(client) = Name::from_wire(&login.client_name) else {
            return reject(p.stream, Rejection::InvalidName);
        };
        let req = LoginRequest {
            client,
            peer: p.peer,
            transport: Transport::from_use_shm(login.use_shm),
            user_data: login.user_data,
            last_server: Name::from_wire_opt(&login.last_server_name).ok().flatten(),
        };
        let (group, user_data) = match handler.on_new_connection(&req) {
            Accept::Serve { group, user_data } => (group, user_data),
            Accept::Reject(text) => return reject(p.stream, Rejection::Application(text)),
        };
        let Some(g) = self.groups(req.transport).get_mut(group) else {
            return reject(p.stream, Rejection::InvalidGroup);
        };
        debug_assert_eq!(g.transport, req.transport);
        let slots = &mut g.slots;
        let Some(slot) = choose_slot(slots, client) else {
            return reject(p.stream, Rejection::ServerFull);
        };
        if slots[slot].state != SlotState::Idle {
            return reject(p.stream, Rejection::AlreadyLoggedOn);
        }
        slots[slot].name = Some(client);
        slots[slot].state = SlotState::Pending;
        let handoff = LoginHandoff {
            slot,
            stream: p.stream,
            seqs: (hdr.ack_seq, login.client_seq_start, login.client_seq_end),
            login: req,
            user_data,
        };
        if g.to_group.send(ToGroup::Login(Box::new(handoff))).is_err() {
            slots[slot].state = SlotState::Idle;
        }
    }
}
