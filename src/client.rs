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

use crate::config::Config;
use crate::conn::{
    deliver, ConnTx, Connection, LinkState, Received, TcpLink, Transport, TxTransport,
};
use crate::error::{FileError, SetupError};
use crate::login::{self, SeqMismatch};
use crate::session::{CloseReason, Closed};
use crate::sys::Mapping;
use crate::wire::{
    opt_name_to_wire, DecodeError, Login, LoginResponse, LoginStatus, Name, UserData, NAME_SIZE,
};

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
    /// The login succeeded but the session could not start: the server
    /// acknowledged messages this side never sent, or sending failed.
    Session {
        /// Why the session closed at once.
        reason: CloseReason,
        /// The OS errno, 0 if none.
        errno: i32,
    },
}

impl ConnectError {
    /// The OS errno, 0 if none.
    pub fn errno(&self) -> i32 {
        match self {
            ConnectError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
            ConnectError::File(f) => f.errno(),
            ConnectError::Session { errno, .. } => *errno,
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
            ConnectError::Session { reason, errno } => {
                write!(f, "session closed at login: {reason} (errno {errno})")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

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
        let (name, dir) = cfg.setup(name, dir.as_ref())?;
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
        m.read(0, &mut field);
        Name::from_wire_opt(&field).map_err(|e| {
            ConnectError::File(FileError::corrupt(m.path(), format!("server name: {e}")))
        })
    }

    fn open_pair(&mut self, server: &Name, transport: Transport) -> Result<(), ConnectError> {
        login::open_pair(
            &mut self.conn,
            &self.dir,
            &self.name,
            server,
            transport,
            &self.cfg,
        )?;
        Ok(())
    }

    /// Connects to `addr` and logs in, to exchange messages over
    /// `transport`.
    /// Blocks for at most `Config::connect_timeout`; the only call of the
    /// library that blocks. Unacknowledged messages from earlier sessions
    /// are sent again once logged in.
    ///
    /// # Errors
    /// A [`ConnectError`], also reported to the handler: system errors to
    /// `on_system_error`, a rejection to `on_login_reject`, a sequence
    /// mismatch to `on_seq_mismatch`. `Ok` means the session is open.
    pub fn connect(
        &mut self,
        transport: Transport,
        addr: impl ToSocketAddrs,
        login_user_data: U,
    ) -> Result<(), ConnectError> {
        let r = self.try_connect(transport, addr, login_user_data);
        r.map_err(|e| self.fail(e))
    }

    fn try_connect(
        &mut self,
        transport: Transport,
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
            self.open_pair(&server, transport)?;
            (ack, start, end) = self.conn.login_seqs().map_err(|why| {
                ConnectError::File(FileError::corrupt(
                    login::ptcp_path(&self.dir, &self.name, &server),
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
            use_shm: transport.is_shm(),
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
        self.open_pair(&server, transport)?;
        if login::is_new_pair(last, server) {
            // A new pair. The server emptied both shared-memory queues
            // before it answered (and may already have pushed into its own
            // since): over shm there is nothing for us to reset, only to
            // take up. Our TCP queue file is ours alone to empty. Then
            // remember the name (a crash in between resets again at the
            // next login).
            if transport == Transport::Tcp {
                self.conn.reset_queues();
            }
            let m = self
                .last_server
                .as_ref()
                .expect("mapped in last_server_name");
            m.write(0, &server.to_wire());
            // Both sides have now reset the pair for the new name: the old
            // name's shm objects hold nothing anyone will read. Remove
            // those no process holds (an old server still running under
            // that name keeps them).
            if let Some(old) = last {
                crate::pair_files::remove_shm_pair(
                    &self.cfg.shm_dir,
                    self.name.as_str(),
                    old.as_str(),
                );
            }
        }
        s.set_nonblocking(true).map_err(io("set non-blocking"))?;
        s.set_read_timeout(None).map_err(io("set timeout"))?;
        s.set_write_timeout(None).map_err(io("set timeout"))?;
        let now = self.handler.on_login_success(&rsp);
        self.conn.guard = Some(login::guard_against_response::<R>(&server));
        let state = LinkState::new_open();
        let link = TcpLink::new(s, now, &self.cfg);
        let opened = match transport {
            Transport::Shm => {
                self.shm_link = Some(link);
                self.conn.open_session(None, 0, state)
            }
            Transport::Tcp => self.conn.open_session(Some(link), hdr.ack_seq, state),
        };
        if let Err((reason, errno)) = opened {
            self.shm_link = None;
            return Err(ConnectError::Session { reason, errno });
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

    /// Delivers server messages from shared memory (shm mode only), at
    /// most `Config::shm_msgs_per_poll` of them.
    pub fn poll_shm(&mut self) {
        if !self.conn.tx.is_shm() {
            return;
        }
        let mut shm = ShmPoller {
            conn: Some(&mut self.conn),
            budget: self.cfg.shm_msgs_per_poll,
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
                conn: conn_tcp,
                shm_link: &mut self.shm_link,
                state,
                _r: PhantomData,
            },
            ShmPoller {
                conn: conn_shm,
                budget: self.cfg.shm_msgs_per_poll,
            },
        )
    }

    /// The next `now` at which [`poll_tcp`](Self::poll_tcp) has timer work
    /// (a heartbeat to send, a timeout to check), while a session is up:
    /// an application with nothing else to do may sleep until then.
    pub fn next_deadline(&self) -> Option<i64> {
        let session = match (&self.shm_link, &self.conn.tx.t) {
            (Some(l), _) => &l.session,
            (None, TxTransport::Tcp { link: Some(l), .. }) => &l.session,
            _ => return None,
        };
        Some(session.next_deadline())
    }

    /// This client's connection statistics (see [`crate::stats`]), with
    /// the heartbeats and the last time heard of the TCP side of an shm
    /// session.
    pub fn stats(&self) -> crate::ConnStats {
        let mut s = self.conn.stats();
        if let Some(l) = &self.shm_link {
            s.heartbeats_sent = l.session.heartbeats();
            s.last_heard = Some(l.session.last_heard());
        }
        s
    }

    /// The server name this client last logged in to (persisted in
    /// `<dir>/<name>.lastserver`), if any.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn last_server(&mut self) -> Result<Option<String>, ConnectError> {
        Ok(self.last_server_name()?.map(|n| n.as_str().to_string()))
    }

    /// Stops the client and moves the files of its pair with the server it
    /// last logged in to (its `.ptcp` file, the two shm objects and the
    /// `.lastserver` file) into a timestamped backup directory in its
    /// directory, returned: the next login reports no last server, so both
    /// sides start the pair afresh. For a sequence number mismatch (see
    /// README, "Runbook"); nothing is destroyed (`tcpshm inspect` reads
    /// the backup).
    ///
    /// # Errors
    /// [`ConnectError::File`]: no server logged in to yet, a file a live
    /// process holds, or a failed move.
    pub fn reset_pair(&mut self) -> Result<PathBuf, ConnectError> {
        let server = self.last_server_name()?.ok_or_else(|| {
            ConnectError::File(FileError::io(
                self.dir.join(format!("{}.lastserver", self.name)),
                "reset",
                std::io::Error::new(std::io::ErrorKind::NotFound, "no server logged in to yet"),
            ))
        })?;
        self.stop();
        let backup = crate::pair_files::reset_pair(
            &self.dir,
            &self.cfg.shm_dir,
            self.name.as_str(),
            server.as_str(),
        )?;
        // Forget the server name too (into the backup): the next login then
        // reports none, and the server starts its side of the pair afresh
        // as well (PROTOCOL.md §4, rule 5).
        let last = self.dir.join(format!("{}.lastserver", self.name));
        crate::sys::files::take_for_removal(&last, None)?
            .move_to(&backup.join(format!("{}.lastserver", self.name)))?;
        Ok(backup)
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
    conn: Option<&'a mut Connection>,
    shm_link: &'a mut Option<TcpLink>,
    state: Arc<LinkState>,
    _r: PhantomData<fn(R)>,
}

impl<H: ClientHandler<R>, R: UserData> TcpPoller<'_, H, R> {
    /// See [`Client::poll_tcp`].
    pub fn poll(&mut self, now: i64) {
        if let Some(conn) = self.conn.as_deref_mut() {
            if let Some((reason, errno)) = conn.poll_tcp_io(now) {
                self.handler.on_disconnected(reason, errno);
            }
            // TCP: what the receive buffer holds, a bound of its own.
            deliver(conn, u32::MAX, |msg, tx| {
                self.handler.on_server_msg(msg, tx)
            });
            return;
        }
        let Some(l) = self.shm_link.as_mut() else {
            return;
        };
        let res: Result<(), Closed> = match self.state.closed() {
            Some(c) => Err(c),
            None => l.poll_heartbeats(now),
        };
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
    budget: u32,
}

impl ShmPoller<'_> {
    /// Delivers waiting server messages to `handler`, at most
    /// `Config::shm_msgs_per_poll` of them.
    pub fn poll<R: UserData>(&mut self, handler: &mut impl ClientHandler<R>) {
        let Some(conn) = self.conn.as_deref_mut() else {
            return;
        };
        if conn.is_closed() {
            return;
        }
        deliver(conn, self.budget, |msg, tx| handler.on_server_msg(msg, tx));
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
