//! [`Client`]: connects and logs in to a server, keeps the session alive
//! and recovers after disconnects and crashes (`PROTOCOL.md` §4 client
//! rules).
//!
//! Files in the client's directory:
//! - `<client>.lastserver`: the server name last logged in to, 16 bytes
//!   NUL-padded (the C++ client's format);
//! - `<client>_<server>.ptcp`: the TCP send queue of the pair;
//! - in shm mode, `<shm_dir>/<client>_<server>.shm` and
//!   `<shm_dir>/<server>_<client>.shm`.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::conn::{deliver, ConnTx, Connection, LinkState, Received};
use crate::error::FileError;
use crate::session::{CloseReason, Closed, ReloginGuard, TcpLink, TcpQueue};
use crate::shm_queue::{shm_path, ShmReader, ShmWriter};
use crate::sys::Mapping;
use crate::wire::{
    opt_name_to_wire, DecodeError, Login, LoginResponse, LoginStatus, Name, NameError, UserData,
    MSG_TYPE_LOGIN_RESPONSE, NAME_SIZE,
};

/// The six numbers of a sequence mismatch: each side's ack and the range
/// of messages it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqMismatch {
    /// Messages this side consumed from the peer.
    pub local_ack: u32,
    /// Oldest message this side holds unacknowledged.
    pub local_seq_start: u32,
    /// One past this side's newest message.
    pub local_seq_end: u32,
    /// Messages the peer consumed from this side.
    pub remote_ack: u32,
    /// Oldest message the peer holds unacknowledged.
    pub remote_seq_start: u32,
    /// One past the peer's newest message.
    pub remote_seq_end: u32,
}

/// Why [`Client::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The client is already connected.
    AlreadyConnected,
    /// A socket operation failed ("connect", "send login", "read login
    /// response", ...); a timeout shows as `TimedOut`/`WouldBlock`.
    Io {
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A queue or name file could not be used.
    File(FileError),
    /// The server's response was not a valid login response.
    BadResponse(String),
    /// The server rejected the login (status 2) with this text.
    Rejected(String),
    /// The two sides' sequence numbers do not fit (status 1).
    SeqMismatch(SeqMismatch),
}

impl ConnectError {
    /// The OS errno, 0 if none.
    pub fn errno(&self) -> i32 {
        match self {
            ConnectError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
            ConnectError::File(f) => f.errno(),
            _ => 0,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::AlreadyConnected => f.write_str("already connected"),
            ConnectError::Io { op, source } => write!(f, "{op}: {source}"),
            ConnectError::File(e) => write!(f, "{e}"),
            ConnectError::BadResponse(why) => write!(f, "invalid login response: {why}"),
            ConnectError::Rejected(text) => write!(f, "login rejected: {text}"),
            ConnectError::SeqMismatch(m) => write!(f, "sequence number mismatch: {m:?}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Why a client could not be made.
#[derive(Debug)]
pub enum SetupError {
    /// The name is not usable.
    Name(NameError),
    /// The configuration is invalid.
    Config(ConfigError),
    /// The directory could not be created.
    Dir(FileError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Name(e) => write!(f, "invalid name: {e}"),
            SetupError::Config(e) => write!(f, "{e}"),
            SetupError::Dir(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// What `Client::new` and `Server::new` check first: the name, the
/// configuration, and the directory (created if missing).
pub(crate) fn setup(name: &str, dir: &Path, cfg: &Config) -> Result<(Name, PathBuf), SetupError> {
    let name = Name::new(name).map_err(SetupError::Name)?;
    cfg.validate().map_err(SetupError::Config)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| SetupError::Dir(FileError::io(dir, "create directory", e)))?;
    Ok((name, dir.to_path_buf()))
}

/// What a client tells its application. Every method has a default that
/// does nothing, except [`on_server_msg`](Self::on_server_msg).
pub trait ClientHandler<R: UserData = u8> {
    /// `connect` failed for a system reason (socket, file).
    fn on_system_error(&mut self, _error: &ConnectError) {}
    /// The server rejected the login (status 2).
    fn on_login_reject(&mut self, _response: &LoginResponse<R>) {}
    /// Logged in. Returns `now` (in the caller's unit) to start the
    /// session's timers from.
    fn on_login_success(&mut self, _response: &LoginResponse<R>) -> i64;
    /// The sequence numbers of the two sides do not fit (status 1).
    fn on_seq_mismatch(&mut self, _m: &SeqMismatch) {}
    /// A message from the server. Pop it to consume it; an unpopped
    /// message is delivered again on the next poll.
    fn on_server_msg(&mut self, msg: Received<'_>, tx: &mut ConnTx);
    /// The session ended (reported once, by `poll_tcp`).
    fn on_disconnected(&mut self, _reason: CloseReason, _errno: i32) {}
}

/// A client of one server at a time. `U` is the login user data type,
/// `R` the login-response user data type (both `u8` by default).
#[derive(Debug)]
pub struct Client<H, U: UserData = u8, R: UserData = u8> {
    name: Name,
    dir: PathBuf,
    cfg: Config,
    handler: H,
    last_server: Option<Mapping>,
    conn: Connection,
    /// The TCP socket of an shm session (heartbeats only).
    shm_link: Option<TcpLink>,
    _ud: PhantomData<fn(U, R)>,
}

impl<H: ClientHandler<R>, U: UserData, R: UserData> Client<H, U, R> {
    /// A client named `name` keeping its files in `dir` (created if
    /// missing).
    ///
    /// # Errors
    /// A [`SetupError`] for a bad name or configuration, or a directory
    /// that cannot be created.
    pub fn new(
        name: &str,
        dir: impl AsRef<Path>,
        cfg: Config,
        handler: H,
    ) -> Result<Self, SetupError> {
        let (name, dir) = setup(name, dir.as_ref(), &cfg)?;
        Ok(Client {
            name,
            dir,
            cfg,
            handler,
            last_server: None,
            conn: Connection::new(name),
            shm_link: None,
            _ud: PhantomData,
        })
    }

    /// The handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The connection; valid as long as the client, across reconnects.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn fail(&mut self, e: ConnectError) -> ConnectError {
        match &e {
            ConnectError::Rejected(_) | ConnectError::SeqMismatch(_) => {}
            _ => self.handler.on_system_error(&e),
        }
        e
    }

    fn last_server_name(&mut self) -> Result<Option<Name>, ConnectError> {
        if self.last_server.is_none() {
            let p = self.dir.join(format!("{}.lastserver", self.name));
            let m = Mapping::open(&p, NAME_SIZE, self.cfg.map_options(true))?;
            self.last_server = Some(m);
        }
        let m = self.last_server.as_ref().expect("mapped above");
        let mut field = [0u8; NAME_SIZE];
        field.copy_from_slice(m.as_ref());
        Name::from_wire_opt(&field).map_err(|e| {
            ConnectError::File(FileError::corrupt(m.path(), format!("server name: {e}")))
        })
    }

    fn open_pair(&mut self, server: &Name, use_shm: bool) -> Result<(), ConnectError> {
        if self.conn.remote_name() == Some(server) && self.conn.has_queue(use_shm) {
            return Ok(());
        }
        self.conn.release();
        let opts = self.cfg.map_options(true);
        if use_shm {
            let sp = shm_path(&self.cfg.shm_dir, self.name.as_str(), server.as_str());
            let rp = shm_path(&self.cfg.shm_dir, server.as_str(), self.name.as_str());
            let w = ShmWriter::open_file(&sp, self.cfg.shm_queue_size, opts)?;
            let r = ShmReader::open_file(&rp, self.cfg.shm_queue_size, opts)?;
            self.conn.set_shm_queues(w, r, &self.cfg);
        } else {
            let p = self.dir.join(format!("{}_{}.ptcp", self.name, server));
            let q = TcpQueue::open_file(&p, self.cfg.tcp_queue_size, opts)?;
            self.conn.set_tcp_queue(q, &self.cfg);
        }
        self.conn.tx.remote = Some(*server);
        Ok(())
    }

    /// Connects to `addr` and logs in, over shared memory if `use_shm`.
    /// Blocks for at most `Config::connect_timeout`; the only call of the
    /// library that blocks. Unacknowledged messages from earlier sessions
    /// are sent again once logged in.
    ///
    /// # Errors
    /// A [`ConnectError`], also reported to the handler: system errors to
    /// `on_system_error`, a rejection to `on_login_reject`, a sequence
    /// mismatch to `on_seq_mismatch`.
    pub fn connect(
        &mut self,
        use_shm: bool,
        addr: impl ToSocketAddrs,
        login_user_data: U,
    ) -> Result<(), ConnectError> {
        let r = self.try_connect(use_shm, addr, login_user_data);
        r.map_err(|e| self.fail(e))
    }

    fn try_connect(
        &mut self,
        use_shm: bool,
        addr: impl ToSocketAddrs,
        login_user_data: U,
    ) -> Result<(), ConnectError> {
        if !self.conn.is_closed() {
            return Err(ConnectError::AlreadyConnected);
        }
        self.shm_link = None;
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let last = self.last_server_name()?;
        let (mut ack, mut start, mut end) = (0, 0, 0);
        if let Some(server) = last {
            self.open_pair(&server, use_shm)?;
            (ack, start, end) = self.conn.login_seqs().map_err(|why| {
                ConnectError::File(FileError::corrupt(
                    self.dir.join(format!("{}_{}.ptcp", self.name, server)),
                    why,
                ))
            })?;
        }
        let io = |op| move |source| ConnectError::Io { op, source };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(io("resolve"))?.collect();
        let mut stream = None;
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address");
        for a in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last_err = io::ErrorKind::TimedOut.into();
                break;
            }
            match TcpStream::connect_timeout(&a, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let mut s = stream.ok_or_else(|| io("connect")(last_err))?;
        s.set_nodelay(self.cfg.tcp_no_delay)
            .map_err(io("set TCP_NODELAY"))?;
        let login = Login::<U> {
            client_seq_start: start,
            client_seq_end: end,
            user_data: login_user_data,
            use_shm,
            client_name: self.name.to_wire(),
            last_server_name: opt_name_to_wire(last.as_ref()),
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1));
        s.set_write_timeout(Some(left)).map_err(io("set timeout"))?;
        s.write_all(&login.encode(ack)).map_err(io("send login"))?;
        let mut frame = vec![0u8; LoginResponse::<R>::FRAME];
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1));
        s.set_read_timeout(Some(left)).map_err(io("set timeout"))?;
        s.read_exact(&mut frame)
            .map_err(io("read login response"))?;
        let (hdr, rsp) = LoginResponse::<R>::decode(&frame)
            .map_err(|e: DecodeError| ConnectError::BadResponse(e.to_string()))?;
        let server = Name::from_wire(&rsp.server_name)
            .map_err(|e| ConnectError::BadResponse(format!("server name: {e}")))?;
        match rsp.status {
            LoginStatus::Ok => {}
            LoginStatus::SeqMismatch => {
                let m = SeqMismatch {
                    local_ack: ack,
                    local_seq_start: start,
                    local_seq_end: end,
                    remote_ack: hdr.ack_seq,
                    remote_seq_start: rsp.server_seq_start,
                    remote_seq_end: rsp.server_seq_end,
                };
                self.handler.on_seq_mismatch(&m);
                return Err(ConnectError::SeqMismatch(m));
            }
            LoginStatus::Rejected => {
                self.handler.on_login_reject(&rsp);
                return Err(ConnectError::Rejected(rsp.error_text()));
            }
        }
        if last != Some(server) {
            // A new pair: fresh queues, then remember the name (a crash in
            // between resets again at the next login).
            self.open_pair(&server, use_shm)?;
            self.conn.reset_queues();
            let m = self
                .last_server
                .as_mut()
                .expect("mapped in last_server_name");
            m.as_mut().copy_from_slice(&server.to_wire());
        } else {
            self.open_pair(&server, use_shm)?;
        }
        s.set_nonblocking(true).map_err(io("set non-blocking"))?;
        s.set_read_timeout(None).map_err(io("set timeout"))?;
        s.set_write_timeout(None).map_err(io("set timeout"))?;
        let now = self.handler.on_login_success(&rsp);
        self.conn.guard = Some(ReloginGuard {
            msg_type: MSG_TYPE_LOGIN_RESPONSE,
            size: LoginResponse::<R>::SIZE as u16,
            name_off: LoginResponse::<R>::SERVER_NAME_OFFSET,
            name: server.to_wire(),
        });
        let state = LinkState::new_open();
        let link = TcpLink::new(s, now);
        let opened = if use_shm {
            self.shm_link = Some(link);
            self.conn.open_session(None, 0, state.clone())
        } else {
            self.conn
                .open_session(Some(link), hdr.ack_seq, state.clone())
        };
        if let Err(c) = opened {
            state.close(c);
        }
        Ok(())
    }

    /// Polls the TCP side: reads, acks, heartbeats and timeouts; in TCP
    /// mode also delivers server messages. Reports a disconnect once.
    /// Call it even in shm mode (the TCP connection carries heartbeats).
    pub fn poll_tcp(&mut self, now: i64) {
        let (mut tcp, _) = self.split();
        tcp.poll(now);
    }

    /// Delivers server messages from shared memory (shm mode only).
    pub fn poll_shm(&mut self) {
        if !self.conn.tx.is_shm() {
            return;
        }
        let mut shm = ShmPoller {
            conn: Some(&mut self.conn),
        };
        shm.poll(&mut self.handler);
    }

    /// The TCP and shm pollers as two values that can run on two threads
    /// (e.g. with `std::thread::scope`). The shm poller takes its own
    /// handler for messages.
    pub fn split(&mut self) -> (TcpPoller<'_, H, R>, ShmPoller<'_>) {
        let is_shm = self.conn.tx.is_shm();
        let state = self.conn.tx.state.clone();
        let (conn_tcp, conn_shm) = if is_shm {
            (None, Some(&mut self.conn))
        } else {
            (Some(&mut self.conn), None)
        };
        (
            TcpPoller {
                handler: &mut self.handler,
                cfg: &self.cfg,
                conn: conn_tcp,
                shm_link: &mut self.shm_link,
                state,
                _r: PhantomData,
            },
            ShmPoller { conn: conn_shm },
        )
    }

    /// Closes the connection and its files; `connect` opens them again.
    pub fn stop(&mut self) {
        self.conn.close();
        let (mut tcp, _) = self.split();
        tcp.poll(0);
        self.shm_link = None;
        self.conn.release();
        self.last_server = None;
    }
}

impl<H, U: UserData, R: UserData> Drop for Client<H, U, R> {
    fn drop(&mut self) {
        self.conn.close();
    }
}

/// The TCP side of a client, from [`Client::split`].
#[derive(Debug)]
pub struct TcpPoller<'a, H, R: UserData = u8> {
    handler: &'a mut H,
    cfg: &'a Config,
    conn: Option<&'a mut Connection>,
    shm_link: &'a mut Option<TcpLink>,
    state: Arc<LinkState>,
    _r: PhantomData<fn(R)>,
}

impl<H: ClientHandler<R>, R: UserData> TcpPoller<'_, H, R> {
    /// See [`Client::poll_tcp`].
    pub fn poll(&mut self, now: i64) {
        if let Some(conn) = self.conn.as_deref_mut() {
            if let Some((reason, errno)) = conn.poll_tcp_io(now, self.cfg) {
                self.handler.on_disconnected(reason, errno);
            }
            deliver(conn, |msg, tx| self.handler.on_server_msg(msg, tx));
            return;
        }
        let Some(l) = self.shm_link.as_mut() else {
            return;
        };
        let res: Result<(), Closed> = (|| {
            if let Some(c) = self.state.closed() {
                return Err(c);
            }
            let got = l.read_discard()?;
            l.check_recv(now, Some(got), self.cfg.connection_timeout)?;
            l.heartbeat(now, self.cfg.heartbeat_interval, 0, None)
        })();
        if let Err(c) = res {
            self.state.close(c);
            *self.shm_link = None;
            let (reason, errno) = self.state.closed().unwrap_or(c);
            self.handler.on_disconnected(reason, errno);
        }
    }
}

/// The shared-memory side of a client, from [`Client::split`].
#[derive(Debug)]
pub struct ShmPoller<'a> {
    conn: Option<&'a mut Connection>,
}

impl ShmPoller<'_> {
    /// Delivers waiting server messages to `handler`.
    pub fn poll<R: UserData>(&mut self, handler: &mut impl ClientHandler<R>) {
        let Some(conn) = self.conn.as_deref_mut() else {
            return;
        };
        if conn.is_closed() {
            return;
        }
        deliver(conn, |msg, tx| handler.on_server_msg(msg, tx));
        if let Some(f) = conn.rx.fault.take() {
            conn.tx.state.close(f);
        }
    }

    /// The connection, to push from this poller's thread (shm mode).
    pub fn connection(&mut self) -> Option<&mut Connection> {
        self.conn.as_deref_mut()
    }

    /// Whether the session is closed (the TCP side reports why).
    pub fn is_closed(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.is_closed())
    }
}

impl From<FileError> for ConnectError {
    fn from(e: FileError) -> Self {
        ConnectError::File(e)
    }
}
