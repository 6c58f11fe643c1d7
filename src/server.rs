//! [`Server`]: accepts logins and serves connections in groups
//! (`PROTOCOL.md` §4 server rules).
//!
//! # Threads
//!
//! A server is made of parts that share nothing but lock-free channels,
//! used only at login and disconnect:
//! - the control part ([`Server::poll_ctl`]): accepts, reads logins within
//!   `new_connection_timeout`, asks the application which group serves a
//!   login, keeps shared-memory sessions alive (their TCP heartbeats) and
//!   reports disconnects;
//! - one part per TCP group ([`Server::poll_tcp`]) and per SHM group
//!   ([`Server::poll_shm`]): each owns its connections, finishes their
//!   logins (opens files, checks sequence numbers, answers) and delivers
//!   their messages.
//!
//! Poll them all from one thread, or hand the parts from
//! [`Server::split`] to one thread each (with `std::thread::scope`).
//! Callbacks run on the thread that polls the part where the event
//! happens: `on_new_connection` and `on_client_disconnected` on the control
//! thread; `on_client_logon`, `on_seq_mismatch`, `on_file_error` and
//! `on_client_msg` on the group's thread.
//!
//! Files: `<dir>/<server>_<client>.ptcp` per TCP client, and in shm mode
//! `<shm_dir>/<server>_<client>.shm` and `<shm_dir>/<client>_<server>.shm`.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::client::{setup, SeqMismatch, SetupError};
use crate::config::Config;
use crate::conn::{deliver, ConnTx, Connection, LinkState, Received};
use crate::error::FileError;
use crate::session::{CloseReason, Closed, ReloginGuard, TcpLink, TcpQueue};
use crate::shm_queue::{shm_path, ShmReader, ShmWriter};
use crate::wire::{
    error_msg_field, seq_within, Login, LoginResponse, LoginStatus, MsgHeader, Name, UserData,
    MSG_TYPE_LOGIN,
};

/// Error text for an empty or unusable client name.
pub const ERR_INVALID_NAME: &str = "Invalid client name";
/// Default error text when the application rejects a login.
pub const ERR_LOGIN_REJECT: &str = "Login Reject";
/// Error text when the group has no free slot.
pub const ERR_MAX_CLIENTS: &str = "Max client cnt exceeded";
/// Error text when the name is already logged on (sic, as existing
/// clients match it).
pub const ERR_ALREADY_LOGGED_ON: &str = "Already loggned on";
/// Error text when the server cannot open the client's files.
pub const ERR_SYSTEM: &str = "System error";
/// Error text when the application names a group that does not exist.
pub const ERR_INVALID_GROUP: &str = "Invalid group";

/// Which connection: transport, group and slot in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Shared-memory group (else TCP).
    pub shm: bool,
    /// Group index.
    pub group: usize,
    /// Slot in the group.
    pub slot: usize,
}

/// The application's answer to a login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Serve it in this group (of the kind the client asked for).
    Group(usize),
    /// Refuse it with this text (empty: "Login Reject").
    Reject(String),
}

/// What a server tells its application. Callbacks run on the thread
/// polling the part where the event happens (see the module docs).
pub trait ServerHandler<U: UserData = u8, R: UserData = u8> {
    /// A socket-level failure (accept).
    fn on_system_error(&mut self, _what: &str, _error: &io::Error) {}
    /// A login arrived: accept it into a group, or reject it. The
    /// response's `user_data` may be filled here.
    fn on_new_connection(
        &mut self,
        peer: SocketAddr,
        login: &Login<U>,
        response: &mut LoginResponse<R>,
    ) -> Accept;
    /// A client logged on; `conn` may be used (pushed to) right away.
    fn on_client_logon(&mut self, _peer: SocketAddr, _id: ConnId, _conn: &mut Connection) {}
    /// A client's session ended.
    fn on_client_disconnected(
        &mut self,
        _client: &Name,
        _id: ConnId,
        _reason: CloseReason,
        _errno: i32,
    ) {
    }
    /// A message from a client. Pop it to consume it; an unpopped message
    /// is delivered again on the next poll.
    fn on_client_msg(&mut self, id: ConnId, msg: Received<'_>, tx: &mut ConnTx);
    /// The two sides' sequence numbers do not fit; the login failed.
    fn on_seq_mismatch(&mut self, _client: &Name, _m: &SeqMismatch) {}
    /// A client's queue files cannot be opened or are corrupt; the login
    /// failed with "System error".
    fn on_file_error(&mut self, _client: &Name, _error: &FileError) {}
}

struct LoginHandoff<U: UserData, R: UserData> {
    slot: usize,
    name: Name,
    stream: TcpStream,
    peer: SocketAddr,
    ack: u32,
    login: Login<U>,
    user_data: R,
}

enum ToCtl {
    /// A login finished; for shm, the socket comes back for heartbeats.
    LoginDone {
        id: ConnId,
        ok: bool,
        shm: Option<(TcpStream, Arc<LinkState>)>,
    },
    /// A TCP session ended.
    Disconnected { id: ConnId, closed: Closed },
}

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

/// The control part of a server.
pub struct ServerCtl<U: UserData = u8, R: UserData = u8> {
    name: Name,
    cfg: Arc<Config>,
    listener: Option<TcpListener>,
    pending: Vec<Option<PendingLogin>>,
    tcp_slots: Vec<Vec<CtlSlot>>,
    shm_slots: Vec<Vec<CtlSlot>>,
    to_tcp: Vec<Sender<LoginHandoff<U, R>>>,
    to_shm: Vec<Sender<LoginHandoff<U, R>>>,
    from_groups: Receiver<ToCtl>,
    shm_sessions: Vec<ShmSession>,
}

/// A group of connections (TCP or SHM), polled by one thread.
pub struct Group<U: UserData = u8, R: UserData = u8> {
    shm: bool,
    idx: usize,
    server: Name,
    dir: PathBuf,
    cfg: Arc<Config>,
    conns: Vec<Connection>,
    live: Vec<usize>,
    inbox: Receiver<LoginHandoff<U, R>>,
    to_ctl: Sender<ToCtl>,
}

/// A server. `U` is the login user data type, `R` the login-response user
/// data type (both `u8` by default).
pub struct Server<H, U: UserData = u8, R: UserData = u8> {
    handler: H,
    ctl: ServerCtl<U, R>,
    tcp: Vec<Group<U, R>>,
    shm: Vec<Group<U, R>>,
    _ud: PhantomData<fn(U, R)>,
}

impl<H: ServerHandler<U, R>, U: UserData, R: UserData> Server<H, U, R> {
    /// A server named `name` keeping its files in `dir` (created if
    /// missing). Changing the name (e.g. daily) starts fresh connections
    /// and discards the old name's messages at each client's next login.
    ///
    /// # Errors
    /// A [`SetupError`] for a bad name, configuration or directory.
    pub fn new(
        name: &str,
        dir: impl AsRef<Path>,
        cfg: Config,
        handler: H,
    ) -> Result<Self, SetupError> {
        let (name, dir) = setup(name, dir.as_ref(), &cfg)?;
        let cfg = Arc::new(cfg);
        let (to_ctl, from_groups) = channel();
        let make = |shm: bool, n: usize, per: usize| {
            let mut senders = Vec::new();
            let mut groups = Vec::new();
            let mut slots = Vec::new();
            for idx in 0..n {
                let (tx, rx) = channel();
                senders.push(tx);
                slots.push(
                    (0..per)
                        .map(|_| CtlSlot {
                            name: None,
                            state: SlotState::Idle,
                        })
                        .collect(),
                );
                groups.push(Group {
                    shm,
                    idx,
                    server: name,
                    dir: dir.clone(),
                    cfg: cfg.clone(),
                    conns: (0..per).map(|_| Connection::new(name)).collect(),
                    live: Vec::with_capacity(per),
                    inbox: rx,
                    to_ctl: to_ctl.clone(),
                });
            }
            (senders, groups, slots)
        };
        let (to_tcp, tcp, tcp_slots) = make(false, cfg.tcp_groups, cfg.tcp_conns_per_group);
        let (to_shm, shm, shm_slots) = make(true, cfg.shm_groups, cfg.shm_conns_per_group);
        let ctl = ServerCtl {
            name,
            pending: (0..cfg.max_new_connections).map(|_| None).collect(),
            cfg,
            listener: None,
            tcp_slots,
            shm_slots,
            to_tcp,
            to_shm,
            from_groups,
            shm_sessions: Vec::new(),
        };
        Ok(Server {
            handler,
            ctl,
            tcp,
            shm,
            _ud: PhantomData,
        })
    }

    /// Listens on `addr` (IPv4 or IPv6; port 0 picks a free port, see
    /// [`local_addr`](Self::local_addr)).
    ///
    /// # Errors
    /// The bind or listen error (e.g. `AddrInUse`), also reported to
    /// `on_system_error`.
    pub fn start(&mut self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let r = self.ctl.start(addr);
        if let Err(e) = &r {
            self.handler.on_system_error("listen", e);
        }
        r
    }

    /// The address listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.ctl.local_addr()
    }

    /// The control part's work: see [`ServerCtl::poll`].
    pub fn poll_ctl(&mut self, now: i64) {
        self.ctl.poll(now, &mut self.handler);
    }

    /// Serves TCP group `group`: see [`Group::poll_tcp`].
    ///
    /// # Panics
    /// If `group` is not below `Config::tcp_groups`.
    pub fn poll_tcp(&mut self, now: i64, group: usize) {
        self.tcp[group].poll_tcp(now, &mut self.handler);
    }

    /// Serves SHM group `group`: see [`Group::poll_shm`].
    ///
    /// # Panics
    /// If `group` is not below `Config::shm_groups`.
    pub fn poll_shm(&mut self, group: usize) {
        self.shm[group].poll_shm(&mut self.handler);
    }

    /// The parts, to poll from separate threads: the control part with
    /// this server's handler, and the TCP and SHM groups, each polled with
    /// a handler of its thread's own.
    pub fn split(&mut self) -> ServerParts<'_, H, U, R> {
        (
            CtlPart {
                ctl: &mut self.ctl,
                handler: &mut self.handler,
            },
            &mut self.tcp,
            &mut self.shm,
        )
    }

    /// A connection, to push to outside callbacks.
    pub fn connection(&mut self, id: ConnId) -> Option<&mut Connection> {
        let groups = if id.shm { &mut self.shm } else { &mut self.tcp };
        groups.get_mut(id.group)?.conns.get_mut(id.slot)
    }

    /// The handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }
}

impl<H, U: UserData, R: UserData> Server<H, U, R> {
    /// Stops listening and closes every connection; queue files stay, so a
    /// new server over the same dir resumes them.
    pub fn stop(&mut self) {
        self.ctl.stop();
        for g in self.tcp.iter_mut().chain(self.shm.iter_mut()) {
            g.stop();
        }
    }
}

impl<H, U: UserData, R: UserData> Drop for Server<H, U, R> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The parts of a server: the control part, the TCP groups, the SHM groups.
pub type ServerParts<'a, H, U, R> = (
    CtlPart<'a, H, U, R>,
    &'a mut [Group<U, R>],
    &'a mut [Group<U, R>],
);

/// The control part with its handler, from [`Server::split`].
pub struct CtlPart<'a, H, U: UserData = u8, R: UserData = u8> {
    ctl: &'a mut ServerCtl<U, R>,
    handler: &'a mut H,
}

impl<H: ServerHandler<U, R>, U: UserData, R: UserData> CtlPart<'_, H, U, R> {
    /// See [`ServerCtl::poll`].
    pub fn poll(&mut self, now: i64) {
        self.ctl.poll(now, self.handler);
    }
}

impl<U: UserData, R: UserData> ServerCtl<U, R> {
    fn start(&mut self, addr: impl ToSocketAddrs) -> io::Result<()> {
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

    fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    fn stop(&mut self) {
        self.listener = None;
        self.pending.iter_mut().for_each(|p| *p = None);
        for s in self.shm_sessions.drain(..) {
            s.state.close((CloseReason::RequestClose, 0));
        }
    }

    fn slots(&mut self, id: ConnId) -> &mut CtlSlot {
        let g = if id.shm {
            &mut self.shm_slots
        } else {
            &mut self.tcp_slots
        };
        &mut g[id.group][id.slot]
    }

    /// Accepts (one connection per call), reads pending logins, hands
    /// accepted ones to their group, keeps shm sessions alive and reports
    /// disconnects.
    pub fn poll<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        while let Ok(m) = self.from_groups.try_recv() {
            self.on_group_msg(m, now, handler);
        }
        self.accept(now, handler);
        for i in 0..self.pending.len() {
            self.poll_pending(i, now, handler);
        }
        let cfg = self.cfg.clone();
        let mut i = 0;
        while i < self.shm_sessions.len() {
            let s = &mut self.shm_sessions[i];
            let res: Result<(), Closed> = (|| {
                if let Some(c) = s.state.closed() {
                    return Err(c);
                }
                let got = s.link.read_discard()?;
                s.link.check_recv(now, Some(got), cfg.connection_timeout)?;
                s.link.heartbeat(now, cfg.heartbeat_interval, 0, None)
            })();
            if let Err(c) = res {
                s.state.close(c);
                let closed = s.state.closed().unwrap_or(c);
                let id = s.id;
                self.shm_sessions.swap_remove(i);
                self.report_disconnect(id, closed, handler);
            } else {
                i += 1;
            }
        }
    }

    fn report_disconnect<H: ServerHandler<U, R>>(
        &mut self,
        id: ConnId,
        (reason, errno): Closed,
        handler: &mut H,
    ) {
        let slot = self.slots(id);
        slot.state = SlotState::Idle;
        if let Some(name) = slot.name {
            handler.on_client_disconnected(&name, id, reason, errno);
        }
    }

    fn on_group_msg<H: ServerHandler<U, R>>(&mut self, m: ToCtl, now: i64, handler: &mut H) {
        match m {
            ToCtl::LoginDone { id, ok, shm } => {
                self.slots(id).state = if ok { SlotState::Live } else { SlotState::Idle };
                if let Some((stream, state)) = shm {
                    self.shm_sessions.push(ShmSession {
                        id,
                        link: TcpLink::new(stream, now),
                        state,
                    });
                }
            }
            ToCtl::Disconnected { id, closed } => self.report_disconnect(id, closed, handler),
        }
    }

    fn accept<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        let Some(listener) = &self.listener else {
            return;
        };
        let Some(free) = self.pending.iter().position(Option::is_none) else {
            return; // the rest wait in the kernel's backlog
        };
        match listener.accept() {
            Ok((stream, peer)) => {
                if stream.set_nonblocking(true).is_err()
                    || stream.set_nodelay(self.cfg.tcp_no_delay).is_err()
                {
                    return;
                }
                self.pending[free] = Some(PendingLogin {
                    stream,
                    peer,
                    since: now,
                    buf: vec![0; Login::<U>::FRAME],
                    got: 0,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Aborted handshakes and the like: not the server's fault.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => handler.on_system_error("accept", &e),
        }
    }

    fn poll_pending<H: ServerHandler<U, R>>(&mut self, i: usize, now: i64, handler: &mut H) {
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
        let timed_out = now.wrapping_sub(p.since) > self.cfg.new_connection_timeout;
        if drop_it || bad_header || (timed_out && p.got < p.buf.len()) {
            self.pending[i] = None;
            return;
        }
        if p.got == p.buf.len() {
            let p = self.pending[i].take().expect("checked above");
            self.handle_login(p, handler);
        }
    }

    fn handle_login<H: ServerHandler<U, R>>(&mut self, p: PendingLogin, handler: &mut H) {
        let Ok((hdr, login)) = Login::<U>::decode(&p.buf) else {
            return; // dropped with the connection
        };
        let mut rsp = LoginResponse::<R> {
            status: LoginStatus::Rejected,
            server_name: self.name.to_wire(),
            ..Default::default()
        };
        let reject = |mut stream: TcpStream, mut rsp: LoginResponse<R>, text: &str| {
            rsp.status = LoginStatus::Rejected;
            rsp.error_msg = error_msg_field(text);
            let _ = stream.write(&rsp.encode(0));
        };
        let name = match crate::wire::Name::from_wire(&login.client_name) {
            Ok(n) => n,
            Err(_) => return reject(p.stream, rsp, ERR_INVALID_NAME),
        };
        let accept = handler.on_new_connection(p.peer, &login, &mut rsp);
        let group = match accept {
            Accept::Group(g) => g,
            Accept::Reject(text) => {
                let text = if text.is_empty() {
                    ERR_LOGIN_REJECT
                } else {
                    &text
                };
                return reject(p.stream, rsp, text);
            }
        };
        let shm = login.use_shm;
        let groups = if shm {
            &mut self.shm_slots
        } else {
            &mut self.tcp_slots
        };
        let Some(slots) = groups.get_mut(group) else {
            return reject(p.stream, rsp, ERR_INVALID_GROUP);
        };
        let slot = match slots.iter().position(|s| s.name == Some(name)) {
            Some(i) => i,
            None => match slots.iter().position(|s| s.name.is_none()) {
                Some(i) => {
                    slots[i].name = Some(name);
                    i
                }
                None => return reject(p.stream, rsp, ERR_MAX_CLIENTS),
            },
        };
        if slots[slot].state != SlotState::Idle {
            return reject(p.stream, rsp, ERR_ALREADY_LOGGED_ON);
        }
        slots[slot].state = SlotState::Pending;
        let to = if shm {
            &self.to_shm[group]
        } else {
            &self.to_tcp[group]
        };
        let handoff = LoginHandoff {
            slot,
            name,
            stream: p.stream,
            peer: p.peer,
            ack: hdr.ack_seq,
            login,
            user_data: rsp.user_data,
        };
        if to.send(handoff).is_err() {
            slots[slot].state = SlotState::Idle;
        }
    }
}

impl<U: UserData, R: UserData> Group<U, R> {
    /// This group's id for slot `slot`.
    fn id(&self, slot: usize) -> ConnId {
        ConnId {
            shm: self.shm,
            group: self.idx,
            slot,
        }
    }

    /// A connection of this group, to push to outside callbacks.
    pub fn connection(&mut self, slot: usize) -> Option<&mut Connection> {
        self.conns.get_mut(slot)
    }

    /// Serves a TCP group: finishes logins handed over by the control
    /// part, then for each live connection reads, sends, heartbeats,
    /// checks timeouts and delivers messages to `handler`.
    pub fn poll_tcp<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        self.take_logins(now, handler);
        let cfg = self.cfg.clone();
        let mut i = 0;
        while i < self.live.len() {
            let slot = self.live[i];
            let id = self.id(slot);
            let conn = &mut self.conns[slot];
            if let Some(closed) = conn.poll_tcp_io(now, &cfg) {
                self.live.swap_remove(i);
                let _ = self.to_ctl.send(ToCtl::Disconnected { id, closed });
                continue;
            }
            deliver(conn, |msg, tx| handler.on_client_msg(id, msg, tx));
            i += 1;
        }
    }

    /// Serves an SHM group: finishes logins handed over by the control
    /// part and delivers messages from shared memory to `handler`. The TCP
    /// side (heartbeats, timeouts) is the control part's.
    pub fn poll_shm<H: ServerHandler<U, R>>(&mut self, handler: &mut H) {
        self.take_logins(0, handler);
        let mut i = 0;
        while i < self.live.len() {
            let slot = self.live[i];
            let id = self.id(slot);
            let conn = &mut self.conns[slot];
            if conn.is_closed() {
                self.live.swap_remove(i); // the control part reports it
                continue;
            }
            deliver(conn, |msg, tx| handler.on_client_msg(id, msg, tx));
            if let Some(f) = conn.rx.fault.take() {
                conn.tx.state.close(f);
            }
            i += 1;
        }
    }

    fn stop(&mut self) {
        for c in &mut self.conns {
            c.end_session();
        }
        self.live.clear();
    }

    fn take_logins<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        while let Ok(h) = self.inbox.try_recv() {
            let id = self.id(h.slot);
            let ok = self.finish_login(h, now, handler);
            let _ = self.to_ctl.send(match ok {
                Some(shm) => ToCtl::LoginDone { id, ok: true, shm },
                None => ToCtl::LoginDone {
                    id,
                    ok: false,
                    shm: None,
                },
            });
        }
    }

    fn open_files(&mut self, slot: usize, name: &Name) -> Result<(), FileError> {
        let conn = &mut self.conns[slot];
        if conn.remote_name() == Some(name) && conn.has_queue(self.shm) {
            return Ok(());
        }
        conn.release();
        let opts = self.cfg.map_options(true);
        if self.shm {
            let sp = shm_path(&self.cfg.shm_dir, self.server.as_str(), name.as_str());
            let rp = shm_path(&self.cfg.shm_dir, name.as_str(), self.server.as_str());
            let w = ShmWriter::open_file(&sp, self.cfg.shm_queue_size, opts)?;
            let r = ShmReader::open_file(&rp, self.cfg.shm_queue_size, opts)?;
            conn.set_shm_queues(w, r, &self.cfg);
        } else {
            let p = self.dir.join(format!("{}_{}.ptcp", self.server, name));
            conn.set_tcp_queue(
                TcpQueue::open_file(&p, self.cfg.tcp_queue_size, opts)?,
                &self.cfg,
            );
        }
        conn.tx.remote = Some(*name);
        Ok(())
    }

    /// Rules 5 to 7 of the login. Returns `Some(shm socket)` on success.
    #[allow(clippy::type_complexity)]
    fn finish_login<H: ServerHandler<U, R>>(
        &mut self,
        h: LoginHandoff<U, R>,
        now: i64,
        handler: &mut H,
    ) -> Option<Option<(TcpStream, Arc<LinkState>)>> {
        let LoginHandoff {
            slot,
            name,
            mut stream,
            peer,
            ack,
            login,
            user_data,
        } = h;
        let mut rsp = LoginResponse::<R> {
            server_name: self.server.to_wire(),
            user_data,
            status: LoginStatus::Rejected,
            ..Default::default()
        };
        let path_hint = self.dir.join(format!("{}_{}.ptcp", self.server, name));
        if let Err(e) = self.open_files(slot, &name) {
            handler.on_file_error(&name, &e);
            rsp.error_msg = error_msg_field(ERR_SYSTEM);
            let _ = stream.write(&rsp.encode(0));
            return None;
        }
        let conn = &mut self.conns[slot];
        let (mut r_ack, mut r_start, mut r_end) =
            (ack, login.client_seq_start, login.client_seq_end);
        let (l_ack, l_start, l_end);
        if Name::from_wire_opt(&login.last_server_name).ok().flatten() != Some(self.server) {
            conn.reset_queues();
            (r_ack, r_start, r_end) = (0, 0, 0);
            (l_ack, l_start, l_end) = (0, 0, 0);
        } else {
            match conn.login_seqs() {
                Ok(v) => (l_ack, l_start, l_end) = v,
                Err(why) => {
                    handler.on_file_error(&name, &FileError::corrupt(path_hint, why));
                    rsp.error_msg = error_msg_field(ERR_SYSTEM);
                    let _ = stream.write(&rsp.encode(0));
                    return None;
                }
            }
        }
        rsp.server_seq_start = l_start;
        rsp.server_seq_end = l_end;
        if !seq_within(r_ack, l_start, l_end) || !seq_within(l_ack, r_start, r_end) {
            handler.on_seq_mismatch(
                &name,
                &SeqMismatch {
                    local_ack: l_ack,
                    local_seq_start: l_start,
                    local_seq_end: l_end,
                    remote_ack: r_ack,
                    remote_seq_start: r_start,
                    remote_seq_end: r_end,
                },
            );
            rsp.status = LoginStatus::SeqMismatch;
            let _ = stream.write(&rsp.encode(l_ack));
            return None;
        }
        rsp.status = LoginStatus::Ok;
        let frame = rsp.encode(l_ack);
        // A fresh socket's buffer takes a 72-byte frame whole.
        if !matches!(stream.write(&frame), Ok(n) if n == frame.len()) {
            return None;
        }
        conn.guard = Some(ReloginGuard {
            msg_type: MSG_TYPE_LOGIN,
            size: Login::<U>::SIZE as u16,
            name_off: Login::<U>::CLIENT_NAME_OFFSET,
            name: name.to_wire(),
        });
        let state = LinkState::new_open();
        let shm_back = if self.shm {
            let _ = conn.open_session(None, 0, state.clone());
            Some((stream, state))
        } else {
            if let Err(c) = conn.open_session(Some(TcpLink::new(stream, now)), r_ack, state.clone())
            {
                state.close(c);
            }
            None
        };
        self.live.push(slot);
        let id = self.id(slot);
        handler.on_client_logon(peer, id, &mut self.conns[slot]);
        Some(shm_back)
    }
}
