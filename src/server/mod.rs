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
//! A disconnect is reported by the group that served the connection,
//! after its last delivery: `on_client_msg` never runs for a connection
//! after its `on_client_disconnected`.
//!
//! Files: `<dir>/<server>_<client>.ptcp` per TCP client, and in shm mode
//! `<shm_dir>/<server>_<client>.shm` and `<shm_dir>/<client>_<server>.shm`.
#![forbid(unsafe_code)]

mod ctl;
mod group;
mod mailbox;

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

pub use self::ctl::ServerCtl;
pub use self::group::Group;
use crate::config::Config;
use crate::conn::{ConnTx, Connection, LinkState, Received, Transport};
use crate::error::{FileError, SetupError};
use crate::login::SeqMismatch;
use crate::session::{CloseReason, Closed};
use crate::wire::{Login, LoginResponse, Name, UserData};

/// Error text for an empty or unusable client name.
pub const ERR_INVALID_NAME: &str = "Invalid client name";
/// Default error text when the application rejects a login.
pub const ERR_LOGIN_REJECT: &str = "Login Reject";
/// Error text when every slot of the group serves a live connection (a
/// slot is capacity for a live connection, not bound to a name forever).
pub const ERR_MAX_CLIENTS: &str = "Max client cnt exceeded";
/// Error text when the name is already logged on (sic, as existing
/// clients match it).
pub const ERR_ALREADY_LOGGED_ON: &str = "Already loggned on";
/// Error text when the server cannot open the client's files.
pub const ERR_SYSTEM: &str = "System error";
/// Error text when the application names a group that does not exist.
pub const ERR_INVALID_GROUP: &str = "Invalid group";

/// Which connection: transport, group and slot in the group. A slot serves
/// one name at a time; after that name's session ends, an idle slot may
/// serve another name (`on_client_logon` tells which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The group's transport.
    pub transport: Transport,
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
    /// A client's session ended. Reported after the connection's group
    /// delivered its last message, on the control part's thread.
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

/// A login the control part accepted, handed to the group that serves it.
struct LoginHandoff<U: UserData, R: UserData> {
    slot: usize,
    name: Name,
    stream: TcpStream,
    peer: SocketAddr,
    ack: u32,
    login: Login<U>,
    user_data: R,
}

/// What the control part tells a group.
enum ToGroup<U: UserData, R: UserData> {
    /// Finish this login.
    Login(LoginHandoff<U, R>),
    /// The control part closed the session of this slot (its TCP side
    /// failed or timed out, or the application closed it): stop serving
    /// it and report it. A group polls only its mailbox's count, not every
    /// connection's state.
    Closed { slot: usize },
}

/// A group's mailbox, as the control part holds it: the group's
/// transport, the mailbox, the slots it has.
type GroupInbox<U, R> = (Transport, mailbox::Outbox<ToGroup<U, R>>, usize);

/// What a group tells the control part.
enum ToCtl {
    /// A login finished; for shm, the socket comes back for heartbeats.
    LoginDone {
        id: ConnId,
        ok: bool,
        shm: Option<(TcpStream, Arc<LinkState>)>,
    },
    /// A session ended; the group delivers nothing more for it.
    Disconnected { id: ConnId, closed: Closed },
}

/// A server. `U` is the login user data type, `R` the login-response user
/// data type (both `u8` by default).
pub struct Server<H, U: UserData = u8, R: UserData = u8> {
    name: Name,
    dir: std::path::PathBuf,
    shm_dir: std::path::PathBuf,
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
        let (name, dir) = cfg.setup(name, dir.as_ref())?;
        let cfg = Arc::new(cfg);
        let (to_ctl, from_groups) = mailbox::mailbox();
        let mut inboxes = Vec::new();
        let mut groups = |transport: Transport, n: usize, per: usize| {
            (0..n)
                .map(|idx| {
                    let (tx, rx) = mailbox::mailbox();
                    inboxes.push((transport, tx, per));
                    Group::new(
                        transport,
                        idx,
                        name,
                        dir.clone(),
                        cfg.clone(),
                        per,
                        rx,
                        to_ctl.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let tcp = groups(Transport::Tcp, cfg.tcp_groups, cfg.tcp_conns_per_group);
        let shm = groups(Transport::Shm, cfg.shm_groups, cfg.shm_conns_per_group);
        let shm_dir = cfg.shm_dir.clone();
        let ctl = ServerCtl::new(name, cfg, inboxes, from_groups);
        Ok(Server {
            name,
            dir,
            shm_dir,
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
    #[inline]
    pub fn poll_tcp(&mut self, now: i64, group: usize) {
        self.tcp[group].poll_tcp(now, &mut self.handler);
    }

    /// Serves SHM group `group`: see [`Group::poll_shm`].
    ///
    /// # Panics
    /// If `group` is not below `Config::shm_groups`.
    #[inline]
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
        let groups = match id.transport {
            Transport::Shm => &mut self.shm,
            Transport::Tcp => &mut self.tcp,
        };
        groups.get_mut(id.group)?.connection(id.slot)
    }

    /// The handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Statistics of every connection slot bound to a client name: its
    /// id, the client's name, and [`crate::ConnStats`]. Allocates (not for
    /// the hot path); with the groups on other threads, take them from
    /// each [`Group::stats`] instead.
    pub fn stats(&self) -> Vec<(ConnId, String, crate::ConnStats)> {
        self.tcp
            .iter()
            .chain(self.shm.iter())
            .flat_map(|g| g.stats())
            .collect()
    }

    /// This server's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Moves the files of the pair with client `client` (this server's
    /// `.ptcp` file for it and the two shm objects) into a timestamped
    /// backup directory in the server's directory, and returns it: the
    /// client's next login starts the pair afresh. For a sequence number
    /// mismatch (see README, "Runbook"). The client must not be connected;
    /// its idle slot lets its files go first.
    ///
    /// # Errors
    /// [`crate::FileErrorKind::InUse`] if the client is connected or
    /// another process holds a file; see [`crate::pair_files::reset_pair`].
    pub fn reset_pair(&mut self, client: &str) -> Result<std::path::PathBuf, FileError> {
        let name = Name::new(client).map_err(|e| {
            FileError::io(
                self.dir.join(format!("{}_{client}.ptcp", self.name)),
                "reset",
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            )
        })?;
        let ptcp = self.dir.join(format!("{}_{client}.ptcp", self.name));
        for g in self.tcp.iter_mut().chain(self.shm.iter_mut()) {
            g.release_pair(&name).map_err(|()| FileError {
                path: ptcp.clone(),
                kind: crate::FileErrorKind::InUse,
            })?;
        }
        crate::pair_files::reset_pair(&self.dir, &self.shm_dir, self.name.as_str(), client)
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
