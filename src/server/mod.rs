//! [`Server`]: accepts logins and serves connections in groups
//! (`docs/protocol.md` §4, server rules).
//!
//! # Parts and threads
//!
//! A server is made of parts that share nothing but lock-free channels,
//! used only at login and disconnect:
//! - the [`Control`] part accepts connections, reads logins within
//!   `Config::new_connection_timeout` and asks its [`ControlHandler`]
//!   which group serves a login;
//! - each [`Group`] (TCP or SHM) owns its connections: it finishes their
//!   logins (opens files, checks sequence numbers, answers), delivers
//!   their messages, keeps their sockets alive (over shared memory, the
//!   heartbeats of the TCP side) and reports their ends, all to its
//!   [`GroupHandler`].
//!
//! [`Server::poll`] polls every part from one thread with one handler
//! that implements both traits. [`Server::parts`] hands the parts out to
//! be polled from threads of your own, each with a handler of its own:
//! a group's handler never sees a login decision, and the control part's
//! never sees a message.
//!
//! A connection's callbacks come in order on its group's thread:
//! `on_client_logon`, then its messages, then `on_client_disconnected`,
//! after which `on_client_msg` never runs for that session.
//!
//! Files: `<dir>/<server>_<client>.ptcp` per TCP client, and per SHM
//! client `<shm_dir>/<server>_<client>.shm` and `<shm_dir>/<client>_<server>.shm`.
#![forbid(unsafe_code)]

mod control;
mod group;
mod mailbox;
mod slot_set;

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use self::control::Control;
pub use self::group::Group;
use crate::close::Close;
use crate::config::Config;
use crate::conn::{ConnTx, Connection, Received, Transport};
use crate::error::{FileError, FileErrorKind, SetupError};
use crate::login::SeqMismatch;
use crate::stats::ConnStats;
use crate::sys::{Poller, READABLE};
use crate::wait::{min_timeout, Wait};
use crate::wire::{Name, UserData};

/// Which connection: transport, group and slot in the group. A slot serves
/// one name at a time; after that name's session ends, an idle slot may
/// serve another name (`on_client_logon` tells which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnId {
    /// The group's transport.
    pub transport: Transport,
    /// The group's index among the groups of its transport.
    pub group: usize,
    /// Slot in the group.
    pub slot: usize,
}

/// A login the control part has read and validated, for the application
/// to decide on ([`ControlHandler::on_new_connection`]) and then to see
/// again when the session starts ([`GroupHandler::on_client_logon`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoginRequest<U: UserData = u8> {
    /// The client's name (validated).
    pub client: Name,
    /// The address the client connected from.
    pub peer: SocketAddr,
    /// The transport the client asked for: the login goes to a group of
    /// this transport.
    pub transport: Transport,
    /// The application data of the login frame.
    pub user_data: U,
    /// The server name the client last logged in to, if any. A login
    /// whose last server is not this server's current name starts the
    /// pair afresh (sequence numbers 0, queues emptied), as after a daily
    /// rename.
    pub last_server: Option<Name>,
}

/// The application's answer to a login.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accept<R: UserData = u8> {
    /// Serve the login in group `group` of its transport (the index
    /// counts the groups of `LoginRequest::transport` only:
    /// `0..Config::tcp_groups` or `0..Config::shm_groups`), and answer
    /// with `user_data` in the login response.
    Serve {
        /// The group, among the groups of the login's transport.
        group: usize,
        /// The login response's application data.
        user_data: R,
    },
    /// Refuse the login with this text (status 2). The text travels in
    /// a 32-byte field: it is cut to 31 bytes, at a character boundary.
    /// Empty: "Login Reject".
    Reject(String),
}

impl<R: UserData> Accept<R> {
    /// Serve the login in group `group` of its transport, with the
    /// default response user data.
    pub fn group(group: usize) -> Self {
        Accept::Serve {
            group,
            user_data: R::default(),
        }
    }

    /// Refuse the login with `text` (cut to 31 bytes).
    pub fn reject(text: impl Into<String>) -> Self {
        Accept::Reject(text.into())
    }
}

/// What the control part tells its application: logins to decide on,
/// and the system errors of accepting. Called on the thread that polls
/// the [`Control`] part.
pub trait ControlHandler<U: UserData = u8, R: UserData = u8> {
    /// A login arrived: serve it in a group, or reject it.
    fn on_new_connection(&mut self, login: &LoginRequest<U>) -> Accept<R>;
    /// Accepting a connection failed (out of file descriptors, say); the
    /// server tries again at the next poll.
    fn on_system_error(&mut self, _what: &str, _error: &io::Error) {}
}

/// What a group tells its application about the connections it serves.
/// Called on the thread that polls the [`Group`], in order per
/// connection: logon, messages, disconnect.
pub trait GroupHandler<U: UserData = u8> {
    /// A message from a client. Pop it to consume it; a message not popped
    /// is delivered again at the next poll (leave it when the reply does
    /// not fit yet: `alloc` fails with `Full`).
    fn on_client_msg(&mut self, id: ConnId, msg: Received<'_>, tx: &mut ConnTx);
    /// A client logged on; `conn` may be pushed to right away. (An
    /// application that answers exactly once by counting, as
    /// `examples/exactly_once.rs`, sends nothing but replies: a push here
    /// would count as one.)
    fn on_client_logon(&mut self, _id: ConnId, _login: &LoginRequest<U>, _conn: &mut Connection) {}
    /// A client's session ended. Its messages are all delivered; its
    /// files stay for its next login.
    fn on_client_disconnected(&mut self, _id: ConnId, _client: &Name, _close: Close) {}
    /// A login failed: the two sides' sequence numbers do not fit (see
    /// the operations guide, "Sequence number mismatch").
    fn on_seq_mismatch(&mut self, _client: &Name, _m: &SeqMismatch) {}
    /// A login failed: the client's queue files cannot be opened or are
    /// corrupt (the client is answered "System error").
    fn on_file_error(&mut self, _client: &Name, _error: &FileError) {}
}

/// A login the control part accepted, handed to the group that serves it.
struct LoginHandoff<U: UserData, R: UserData> {
    slot: usize,
    stream: TcpStream,
    /// The client's ack and sequence range.
    seqs: (u32, u32, u32),
    login: LoginRequest<U>,
    user_data: R,
}

/// What the control part tells a group.
enum ToGroup<U: UserData, R: UserData> {
    /// Finish this login.
    Login(Box<LoginHandoff<U, R>>),
}

/// A group's mailbox, as the control part holds it: the group's
/// transport, the mailbox, the slots it has.
type GroupInbox<U, R> = (Transport, mailbox::Outbox<ToGroup<U, R>>, usize);

/// What a group tells the control part.
enum ToCtl {
    /// A login finished (`ok`: a session started).
    LoginDone { id: ConnId, ok: bool },
    /// A session ended; the group delivers nothing more for it.
    Disconnected { id: ConnId },
}

/// A server. `U` is the login user data type, `R` the login-response
/// user data type (both `u8` by default, as the C++ library's). Name the
/// type where you make one (`let server: Server = ...`): Rust does not
/// fall back to the defaults by itself.
///
/// ```no_run
/// use tcpshm::{Accept, Config, ConnId, ConnTx, ControlHandler, GroupHandler, LoginRequest, Received, Server};
///
/// struct Echo;
/// impl ControlHandler for Echo {
///     fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
///         Accept::group(0)
///     }
/// }
/// impl GroupHandler for Echo {
///     fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
///         let Ok(mut reply) = tx.alloc(msg.msg_type(), msg.payload().len()) else { return };
///         reply.payload_mut().copy_from_slice(msg.payload());
///         reply.push();
///         msg.pop();
///     }
/// }
///
/// let mut server = Server::new("server", "/var/lib/echo", Config::default())?;
/// server.listen("0.0.0.0:12345")?;
/// let t0 = std::time::Instant::now();
/// loop {
///     server.poll(t0.elapsed().as_nanos() as i64, &mut Echo);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<U: UserData = u8, R: UserData = u8> {
    name: Name,
    dir: PathBuf,
    shm_dir: PathBuf,
    control: Control<U, R>,
    /// `Config::socket_poll_interval` in ticks, and when [`Server::poll`]
    /// last ran the control part (`None`: not yet).
    control_every: i64,
    control_at: Option<i64>,
    tcp: Vec<Group<U, R>>,
    shm: Vec<Group<U, R>>,
    /// The parts' descriptors in one set (`Wait`): token 0 the control
    /// part, then the TCP groups, then the SHM groups.
    poller: Poller,
    _ud: PhantomData<fn(U, R)>,
}

/// The parts of a server, to poll from threads of your own
/// ([`Server::parts`]).
#[non_exhaustive]
pub struct ServerParts<'a, U: UserData = u8, R: UserData = u8> {
    /// The control part.
    pub control: &'a mut Control<U, R>,
    /// The TCP groups (`Config::tcp_groups` of them).
    pub tcp: &'a mut [Group<U, R>],
    /// The SHM groups (`Config::shm_groups` of them).
    pub shm: &'a mut [Group<U, R>],
}

impl<U: UserData, R: UserData> Server<U, R> {
    /// A server named `name` keeping its files in `dir` (created if
    /// missing). Changing the name (e.g. daily) starts fresh connections
    /// and discards the old name's messages at each client's next login.
    ///
    /// # Errors
    /// A [`SetupError`] for a bad name, configuration or directory.
    pub fn new(name: &str, dir: impl AsRef<Path>, cfg: Config) -> Result<Self, SetupError> {
        let (name, dir) = cfg.setup(name, dir.as_ref())?;
        let cfg = Arc::new(cfg);
        let mailbox_err = |source| SetupError::Io {
            op: "create a mailbox's eventfd",
            source,
        };
        let (to_ctl, from_groups) = mailbox::mailbox().map_err(mailbox_err)?;
        let mut inboxes = Vec::new();
        let mut groups = |transport: Transport, n: usize, per: usize| {
            (0..n)
                .map(|idx| {
                    let (tx, rx) = mailbox::mailbox().map_err(mailbox_err)?;
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
                .collect::<Result<Vec<_>, _>>()
        };
        let tcp = groups(Transport::Tcp, cfg.tcp_groups, cfg.tcp_conns_per_group)?;
        let shm = groups(Transport::Shm, cfg.shm_groups, cfg.shm_conns_per_group)?;
        let shm_dir = cfg.shm_dir.clone();
        let control_every = cfg.ticks().socket_poll_interval;
        let control = Control::new(name, cfg, inboxes, from_groups)?;
        let poller = Poller::new(1 + tcp.len() + shm.len()).map_err(|source| SetupError::Io {
            op: "create the server's epoll set",
            source,
        })?;
        let parts = std::iter::once(control.as_raw_fd())
            .chain(tcp.iter().chain(shm.iter()).map(Group::as_raw_fd));
        for (token, fd) in parts.enumerate() {
            poller
                .add(&fd, token as u64, READABLE)
                .map_err(|source| SetupError::Io {
                    op: "watch a part's epoll set",
                    source,
                })?;
        }
        Ok(Server {
            name,
            dir,
            shm_dir,
            control,
            control_every,
            control_at: None,
            tcp,
            shm,
            poller,
            _ud: PhantomData,
        })
    }

    /// Listens on `addr` (IPv4 or IPv6; port 0 picks a free port, see
    /// [`local_addr`](Self::local_addr)).
    ///
    /// # Errors
    /// The bind or listen error (e.g. `AddrInUse`).
    pub fn listen(&mut self, addr: impl ToSocketAddrs) -> io::Result<()> {
        self.control.listen(addr)
    }

    /// The address listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.control.local_addr()
    }

    /// Polls the server from one thread, with one handler for all: each
    /// TCP group, then each SHM group, and the control part once
    /// `Config::socket_poll_interval` has passed since it last ran (its
    /// work is system calls: accepts, logins). Every step is bounded (see
    /// [`Control::poll`] and [`Group::poll`]); a poll of SHM groups with
    /// nothing to deliver makes no system call but once per
    /// `Config::socket_poll_interval` (their sessions' sockets).
    ///
    /// Returns whether a part did work (see [`Group::poll`] and
    /// [`Control::poll`]): what an [`Idle`](crate::Idle) strategy takes.
    #[inline]
    pub fn poll<H: ControlHandler<U, R> + GroupHandler<U>>(
        &mut self,
        now: i64,
        handler: &mut H,
    ) -> bool {
        let mut worked = false;
        if self
            .control_at
            .is_none_or(|t| now.wrapping_sub(t) >= self.control_every)
        {
            worked = self.control.poll(now, handler);
            self.control_at = Some(now);
        }
        for g in self.tcp.iter_mut() {
            worked |= g.poll(now, handler);
        }
        for g in self.shm.iter_mut() {
            worked |= g.poll(now, handler);
        }
        worked
    }

    /// The parts, to poll from separate threads (with
    /// `std::thread::scope`), each with a handler of its own.
    ///
    /// ```no_run
    /// # use tcpshm::*;
    /// # struct Gate; impl ControlHandler for Gate { fn on_new_connection(&mut self, _: &LoginRequest) -> Accept { Accept::group(0) } }
    /// # struct Echo; impl GroupHandler for Echo { fn on_client_msg(&mut self, _: ConnId, m: Received<'_>, _: &mut ConnTx) { m.pop() } }
    /// # fn now() -> i64 { 0 }
    /// # let mut server: Server = Server::new("s", "/tmp/s", Config::default()).unwrap();
    /// let ServerParts { control, tcp, shm, .. } = server.parts();
    /// std::thread::scope(|s| {
    ///     for group in tcp.iter_mut().chain(shm.iter_mut()) {
    ///         s.spawn(move || loop { group.poll(now(), &mut Echo); });
    ///     }
    ///     loop { control.poll(now(), &mut Gate); }
    /// });
    /// ```
    pub fn parts(&mut self) -> ServerParts<'_, U, R> {
        ServerParts {
            control: &mut self.control,
            tcp: &mut self.tcp,
            shm: &mut self.shm,
        }
    }

    /// A connection, to push to outside callbacks.
    pub fn connection(&mut self, id: ConnId) -> Option<&mut Connection> {
        let groups = match id.transport {
            Transport::Shm => &mut self.shm,
            Transport::Tcp => &mut self.tcp,
        };
        groups.get_mut(id.group)?.connection(id.slot)
    }

    /// Statistics of every connection slot bound to a client name: its
    /// id, the client's name and its [`ConnStats`]. Allocates (not for
    /// the hot path); with the groups on other threads, take them from
    /// each [`Group::stats`] instead.
    pub fn stats(&self) -> Vec<(ConnId, Name, ConnStats)> {
        self.tcp
            .iter()
            .chain(self.shm.iter())
            .flat_map(|g| g.stats())
            .collect()
    }

    /// This server's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Moves the files of the pair with client `client` (this server's
    /// `.ptcp` file for it and the two shm objects) into a timestamped
    /// backup directory in the server's directory, and returns it: the
    /// client's next login starts the pair afresh. The way out of a
    /// sequence number mismatch (`docs/operations.md`). The client must
    /// not be connected; its idle slot lets its files go first.
    ///
    /// # Errors
    /// [`FileErrorKind::InUse`] if the client is connected or another
    /// process holds a file; see [`admin::reset_pair`](crate::admin::reset_pair).
    pub fn reset_pair(&mut self, client: &Name) -> Result<PathBuf, FileError> {
        for g in self.tcp.iter_mut().chain(self.shm.iter_mut()) {
            g.release_pair(client).map_err(|()| {
                let p = crate::pair_files::ptcp_path(&self.dir, &self.name, client);
                FileError::new(p, FileErrorKind::InUse)
            })?;
        }
        crate::pair_files::reset_pair(&self.dir, &self.shm_dir, &self.name, client)
    }
}

impl<U: UserData, R: UserData> Server<U, R> {
    /// Stops listening and closes every connection; the queue files stay,
    /// so a new server over the same directory resumes them. Reports
    /// nothing to a handler.
    pub fn stop(&mut self) {
        self.control.stop();
        for g in self.tcp.iter_mut().chain(self.shm.iter_mut()) {
            g.stop();
        }
    }
}

impl<U: UserData, R: UserData> Wait for Server<U, R> {
    /// See [`Wait::wait_timeout`]: the shortest of its parts' (the control
    /// part's, each group's).
    fn wait_timeout(&mut self, now: i64) -> Option<Duration> {
        // The control part runs at the poll after a sleep, whatever its
        // interval says (a login may be what woke the server).
        self.control_at = None;
        let mut t = self.control.wait_timeout(now);
        for g in self.tcp.iter_mut() {
            t = min_timeout(t, g.wait_timeout(now));
        }
        // The SHM groups last: each tells its writers that it sleeps, and
        // takes that back if another part has work after all.
        if t != Some(Duration::ZERO) {
            for g in self.shm.iter_mut() {
                t = min_timeout(t, g.wait_timeout(now));
                if t == Some(Duration::ZERO) {
                    break;
                }
            }
        }
        if t == Some(Duration::ZERO) {
            self.shm.iter_mut().for_each(Group::wake_up);
        }
        t
    }

    /// See [`Wait::wait`].
    fn wait(&mut self, now: i64, timeout: Duration) -> io::Result<()> {
        crate::wait::wait_then(self, now, timeout, |s| {
            s.shm.iter_mut().for_each(Group::wake_up)
        })
    }
}

impl<U: UserData, R: UserData> AsRawFd for Server<U, R> {
    /// An epoll set of its parts' sets: readable when one of them is. See
    /// [`Wait`].
    fn as_raw_fd(&self) -> RawFd {
        self.poller.as_raw_fd()
    }
}

impl<U: UserData, R: UserData> AsFd for Server<U, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

impl<U: UserData, R: UserData> Drop for Server<U, R> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<U: UserData, R: UserData> std::fmt::Debug for Server<U, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}
