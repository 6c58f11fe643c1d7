//! [`Client`]: connects and logs in to a server, keeps the session alive
//! and recovers after disconnects and crashes (`docs/protocol.md` §4,
//! client rules).
//!
//! Files in the client's directory:
//! - `<client>.lastserver`: the server name last logged in to, 16 bytes
//!   NUL-padded (the C++ client's format), written at the first
//!   successful login;
//! - `<client>_<server>.ptcp`: the TCP send queue of the pair;
//! - in shm mode, `<shm_dir>/<client>_<server>.shm` and
//!   `<shm_dir>/<server>_<client>.shm`.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::close::Close;
use crate::config::Config;
use crate::conn::{
    deliver, ConnTx, Connection, LinkState, Received, TcpLink, Transport, TxTransport,
};
use crate::error::{ConnectError, FileError, SetupError};
use crate::login::{self, Rejection, SeqMismatch};
use crate::pair_files;
use crate::stats::ConnStats;
use crate::sys::{Mapping, Poller, READABLE, WRITABLE};
use crate::wait::{min_timeout, Wait};
use crate::wire::{
    opt_name_to_wire, DecodeError, Login, LoginResponse, LoginStatus, Name, UserData, NAME_SIZE,
};

/// What a client tells its application: the server's messages, and the
/// end of a session. Called on the thread that polls the client.
pub trait ClientHandler {
    /// A message from the server. Pop it to consume it; a message not
    /// popped is delivered again at the next poll.
    fn on_server_msg(&mut self, msg: Received<'_>, tx: &mut ConnTx);
    /// The session ended. Reported once, by the poll that found it. Call
    /// [`Client::connect`] again (retrying while
    /// [`ConnectError::is_transient`](crate::ConnectError::is_transient)):
    /// the login resends what the server had not consumed, and what was
    /// pushed meanwhile goes out after it.
    fn on_disconnected(&mut self, _close: Close) {}
}

/// A client of one server at a time. `U` is the login user data type,
/// `R` the login-response user data type (both `u8` by default, as the
/// C++ library's). Name the type where you make one
/// (`let client: Client = ...`): Rust does not fall back to the defaults
/// by itself.
///
/// ```no_run
/// use tcpshm::{Client, ClientHandler, Config, ConnTx, Received, Transport};
///
/// struct Print;
/// impl ClientHandler for Print {
///     fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
///         println!("{:?}", msg.payload());
///         msg.pop();
///     }
/// }
///
/// let mut client: Client = Client::new("client1", "/var/lib/client1", Config::default())?;
/// client.connect(Transport::Shm, "127.0.0.1:12345", 0)?;
/// let mut hello = client.connection().alloc(1, 5)?;
/// hello.payload_mut().copy_from_slice(b"hello");
/// hello.push();
/// let t0 = std::time::Instant::now();
/// loop {
///     client.poll(t0.elapsed().as_nanos() as i64, &mut Print);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client<U: UserData = u8, R: UserData = u8> {
    name: Name,
    dir: PathBuf,
    cfg: Config,
    /// `<client>.lastserver`, once it exists.
    last_server: Option<Mapping>,
    conn: Connection,
    /// The TCP socket of an shm session (heartbeats only).
    shm_link: Option<TcpLink>,
    /// `Config::socket_poll_interval` in ticks, and when `poll` last read
    /// the heartbeat socket of an shm session (`None`: not yet).
    socket_every: i64,
    socket_at: Option<i64>,
    /// The session's socket, to sleep on (`Wait`): the client's
    /// descriptor, the same across reconnects.
    poller: Poller,
    /// Over shared memory: this session's reader announced that it may
    /// sleep, and its flag is up now (`crate::wake`).
    wake_announced: bool,
    asleep: bool,
    /// Over TCP: the socket is watched for writability too (bytes wait
    /// that it did not take).
    watch_out: bool,
    _ud: PhantomData<fn(U, R)>,
}

impl<U: UserData, R: UserData> Client<U, R> {
    /// A client named `name` keeping its files in `dir` (created if
    /// missing).
    ///
    /// # Errors
    /// A [`SetupError`] for a bad name or configuration, or a directory
    /// that cannot be created.
    pub fn new(name: &str, dir: impl AsRef<Path>, cfg: Config) -> Result<Self, SetupError> {
        let (name, dir) = cfg.setup(name, dir.as_ref())?;
        let poller = Poller::new(4).map_err(|source| SetupError::Io {
            op: "create the client's epoll set",
            source,
        })?;
        Ok(Client {
            name,
            dir,
            socket_every: cfg.ticks().socket_poll_interval,
            cfg,
            last_server: None,
            conn: Connection::new(name),
            shm_link: None,
            socket_at: None,
            poller,
            wake_announced: false,
            asleep: false,
            watch_out: false,
            _ud: PhantomData,
        })
    }

    /// The connection: valid as long as the client, across reconnects.
    /// Messages pushed while disconnected go out after the next login.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This client's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The server name this client last logged in to (persisted in
    /// `<dir>/<name>.lastserver`), if any.
    ///
    /// # Errors
    /// The file exists but cannot be opened or holds no valid name.
    pub fn last_server(&mut self) -> Result<Option<Name>, FileError> {
        if self.last_server.is_none() {
            let p = pair_files::last_server_path(&self.dir, &self.name);
            if !p.exists() {
                return Ok(None);
            }
            self.last_server = Some(Mapping::open(&p, NAME_SIZE, self.cfg.map_options())?);
        }
        let m = self.last_server.as_ref().expect("mapped above");
        let mut field = [0u8; NAME_SIZE];
        m.read(0, &mut field);
        Name::from_wire_opt(&field)
            .map_err(|e| FileError::corrupt(m.path(), format!("server name: {e}")))
    }

    /// Records `server` as the last server logged in to, creating the file
    /// at the first successful login.
    fn set_last_server(&mut self, server: &Name) -> Result<(), FileError> {
        if self.last_server.is_none() {
            let p = pair_files::last_server_path(&self.dir, &self.name);
            self.last_server = Some(Mapping::open(&p, NAME_SIZE, self.cfg.map_options())?);
        }
        let m = self.last_server.as_ref().expect("mapped above");
        m.write(0, &server.to_wire());
        Ok(())
    }

    fn open_pair(&mut self, server: &Name, transport: Transport) -> Result<(), FileError> {
        login::open_pair(
            &mut self.conn,
            &self.dir,
            &self.name,
            server,
            transport,
            &self.cfg,
        )
    }

    /// Connects to `addr` and logs in, to exchange messages over
    /// `transport`, with `user_data` in the login frame. Returns the
    /// server's user data from its login response.
    ///
    /// Blocks for at most `Config::connect_timeout`: the only call of the
    /// library that blocks. Unacknowledged messages from earlier sessions
    /// go out again once logged in. The session's timers start at the
    /// first poll.
    ///
    /// # Errors
    /// A [`ConnectError`]; `Ok` means the session is open.
    pub fn connect(
        &mut self,
        transport: Transport,
        addr: impl ToSocketAddrs,
        user_data: U,
    ) -> Result<R, ConnectError> {
        if !self.conn.is_closed() {
            return Err(ConnectError::AlreadyConnected);
        }
        self.shm_link = None;
        self.socket_at = None;
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let last = self.last_server()?;
        let (mut ack, mut start, mut end) = (0, 0, 0);
        if let Some(server) = last {
            self.open_pair(&server, transport)?;
            (ack, start, end) = self.conn.login_seqs().map_err(|why| {
                FileError::corrupt(pair_files::ptcp_path(&self.dir, &self.name, &server), why)
            })?;
        }
        let io = |op| move |source| ConnectError::Io { op, source };
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(io("resolve"))?.collect();
        let mut stream = None;
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address");
        for a in addrs {
            if Instant::now() >= deadline {
                last_err = io::ErrorKind::TimedOut.into();
                break;
            }
            match TcpStream::connect_timeout(&a, left()) {
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
            user_data,
            use_shm: transport.is_shm(),
            client_name: self.name.to_wire(),
            last_server_name: opt_name_to_wire(last.as_ref()),
        };
        s.set_write_timeout(Some(left()))
            .map_err(io("set timeout"))?;
        s.write_all(&login.encode(ack)).map_err(io("send login"))?;
        let mut frame = vec![0u8; LoginResponse::<R>::FRAME];
        s.set_read_timeout(Some(left()))
            .map_err(io("set timeout"))?;
        s.read_exact(&mut frame)
            .map_err(io("read login response"))?;
        let (hdr, rsp) = LoginResponse::<R>::decode(&frame)
            .map_err(|e: DecodeError| ConnectError::BadResponse(e.to_string()))?;
        let server = Name::from_wire(&rsp.server_name)
            .map_err(|e| ConnectError::BadResponse(format!("server name: {e}")))?;
        match rsp.status {
            LoginStatus::Ok => {}
            LoginStatus::SeqMismatch => {
                return Err(ConnectError::SeqMismatch(SeqMismatch {
                    local_ack: ack,
                    local_seq_start: start,
                    local_seq_end: end,
                    remote_ack: hdr.ack_seq,
                    remote_seq_start: rsp.server_seq_start,
                    remote_seq_end: rsp.server_seq_end,
                }));
            }
            LoginStatus::Rejected => {
                return Err(ConnectError::Rejected(Rejection::from_text(
                    rsp.error_text(),
                )))
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
            self.set_last_server(&server)?;
            // Both sides have now reset the pair for the new name: the old
            // name's shm objects hold nothing anyone will read. Remove
            // those no process holds (an old server still running under
            // that name keeps them).
            if let Some(old) = last {
                pair_files::remove_shm_pair(&self.cfg.shm_dir, &self.name, &old);
            }
        }
        s.set_nonblocking(true).map_err(io("set non-blocking"))?;
        s.set_read_timeout(None).map_err(io("set timeout"))?;
        s.set_write_timeout(None).map_err(io("set timeout"))?;
        self.conn.guard = Some(login::guard_against_response::<R>(&server));
        // The socket leaves the set when it closes.
        self.poller
            .add(&s, 0, READABLE)
            .map_err(io("watch the socket"))?;
        self.wake_announced = false;
        self.asleep = false;
        self.watch_out = false;
        let state = LinkState::new_open();
        let link = TcpLink::new(s, self.cfg.timers());
        let opened = match transport {
            Transport::Shm => {
                self.shm_link = Some(link);
                // The last session's wake words go (the server's writer
                // looks for an announcement only at its socket polls; one
                // that read the old one acknowledges again when this
                // session's comes).
                if let Some(r) = self.conn.rx.shm_reader() {
                    r.reset_wake();
                }
                let opened = self.conn.open_session(None, 0, state);
                if let TxTransport::Shm(w) = &mut self.conn.tx.t {
                    // Ring the server group's bell, if it announced one
                    // (and this side does not refuse to, as a C++ client).
                    if self.cfg.shm_doorbell_slots != usize::MAX {
                        let shm_dir = &self.cfg.shm_dir;
                        w.join_doorbell(|group| pair_files::bell_path(shm_dir, &server, group));
                    }
                }
                opened
            }
            Transport::Tcp => self.conn.open_session(Some(link), hdr.ack_seq, state),
        };
        if let Err(c) = opened {
            self.shm_link = None;
            return Err(ConnectError::Session(c));
        }
        Ok(rsp.user_data)
    }

    /// Polls the session once and reports a disconnect once.
    /// - Over TCP: reads, acks, heartbeats, the timeout, and delivers the
    ///   server's messages.
    /// - Over shared memory: delivers at most `Config::shm_msgs_per_poll`
    ///   messages, and reads the TCP socket (heartbeats, the timeout) once
    ///   `Config::socket_poll_interval` has passed since it last did: a
    ///   poll in between makes no system call.
    ///
    /// Returns whether it did work for the application (delivered a
    /// message, reported a disconnect): what an [`Idle`](crate::Idle)
    /// strategy takes, so a loop spins while work comes and rests when
    /// none does.
    #[inline]
    pub fn poll<H: ClientHandler>(&mut self, now: i64, handler: &mut H) -> bool {
        if self.asleep {
            self.awake();
        }
        let socket_due = self
            .socket_at
            .is_none_or(|t| now.wrapping_sub(t) >= self.socket_every);
        let mut worked = false;
        if !self.conn.tx.is_shm() || socket_due {
            self.socket_at = Some(now);
            worked = self.split().0.poll(now, handler);
            // Whether the server's reader may sleep, now and then (not as
            // a C++ client, which never wakes it).
            if self.cfg.shm_doorbell_slots != usize::MAX {
                self.conn.tx.join_wake();
            }
        }
        if self.conn.tx.is_shm() {
            worked |= ClientShm {
                conn: Some(&mut self.conn),
                budget: self.cfg.shm_msgs_per_poll,
            }
            .poll(now, handler);
            self.send_wake(now);
        }
        worked
    }

    /// Over shared memory: a publication found the server's reader
    /// asleep, so a heartbeat goes on the session's socket to wake it.
    #[inline(always)]
    fn send_wake(&mut self, now: i64) {
        if self.conn.tx.take_wake_due() {
            if let Some(l) = &mut self.shm_link {
                l.wake(now);
            }
        }
    }

    /// Watches the TCP socket for writability too while `unsent` (one
    /// `epoll_ctl` when that changes).
    fn watch_writable(&mut self, unsent: bool) {
        if self.watch_out == unsent {
            return;
        }
        if let Some((fd, _)) = self.conn.tcp_socket() {
            let interest = if unsent {
                READABLE | WRITABLE
            } else {
                READABLE
            };
            if self.poller.modify(fd, 0, interest).is_ok() {
                self.watch_out = unsent;
            }
        }
    }

    /// Lowers the reader's flag (`crate::wake`) after a sleep.
    #[cold]
    fn awake(&mut self) {
        self.asleep = false;
        if let Some(r) = self.conn.rx.shm_reader() {
            r.awake();
        }
    }

    /// The TCP and shm sides as two values that can be polled from two
    /// threads (with `std::thread::scope`), each with a handler of its
    /// own.
    ///
    /// Over shared memory the server's reader, if it sleeps, is not woken
    /// by this client's messages from then on (the shm side cannot write
    /// the socket): it looks at the ring every `Config::shm_sweep_interval`
    /// instead, until [`Client::poll`] runs again.
    pub fn parts(&mut self) -> (ClientTcp<'_>, ClientShm<'_>) {
        if self.asleep {
            self.awake();
        }
        if self.conn.tx.leave_wake() {
            // A server asleep on the old promise looks again, and then
            // sleeps in slices.
            if let Some(l) = &mut self.shm_link {
                l.wake(l.session.now());
            }
        }
        self.split()
    }

    fn split(&mut self) -> (ClientTcp<'_>, ClientShm<'_>) {
        let is_shm = self.conn.tx.is_shm();
        let state = self.conn.tx.state.clone();
        let (conn_tcp, conn_shm) = if is_shm {
            (None, Some(&mut self.conn))
        } else {
            (Some(&mut self.conn), None)
        };
        (
            ClientTcp {
                conn: conn_tcp,
                shm_link: &mut self.shm_link,
                state,
            },
            ClientShm {
                conn: conn_shm,
                budget: self.cfg.shm_msgs_per_poll,
            },
        )
    }

    /// The next `now` at which a poll has timer work (a heartbeat to send,
    /// a timeout to check), while a session is up: an application with
    /// nothing else to do may sleep until then. `None`: no session, or its
    /// timers start at the next poll.
    pub fn next_deadline(&self) -> Option<i64> {
        let session = match (&self.shm_link, &self.conn.tx.t) {
            (Some(l), _) => &l.session,
            (None, TxTransport::Tcp { link: Some(l), .. }) => &l.session,
            _ => return None,
        };
        session.next_deadline()
    }

    /// This client's connection statistics, with the heartbeats and the
    /// last time heard of the TCP side of an shm session.
    pub fn stats(&self) -> ConnStats {
        let mut s = self.conn.stats();
        if let Some(l) = &self.shm_link {
            s.heartbeats_sent = l.session.heartbeats();
            s.last_heard = Some(l.session.last_heard());
        }
        s
    }

    /// Stops the client and moves the files of its pair with the server it
    /// last logged in to (its `.ptcp` file, the two shm objects and the
    /// `.lastserver` file) into a timestamped backup directory in its
    /// directory, returned: the next login reports no last server, so both
    /// sides start the pair afresh. The way out of a sequence number
    /// mismatch (`docs/operations.md`); nothing is destroyed
    /// (`tcpshm inspect` reads the backup).
    ///
    /// # Errors
    /// No server logged in to yet (`NotFound`), a file a live process
    /// holds ([`FileErrorKind::InUse`](crate::FileErrorKind::InUse)), or a failed move.
    pub fn reset_pair(&mut self) -> Result<PathBuf, FileError> {
        let last = pair_files::last_server_path(&self.dir, &self.name);
        let server = self.last_server()?.ok_or_else(|| {
            let e = io::Error::new(io::ErrorKind::NotFound, "no server logged in to yet");
            FileError::io(&last, "reset", e)
        })?;
        self.stop();
        let backup = pair_files::reset_pair(&self.dir, &self.cfg.shm_dir, &self.name, &server)?;
        // Forget the server name too (into the backup): the next login then
        // reports none, and the server starts its side of the pair afresh
        // as well (`docs/protocol.md` §4, rule 5).
        let to = backup.join(last.file_name().expect("a file name"));
        crate::sys::files::take_for_removal(&last, None)?.move_to(&to)?;
        Ok(backup)
    }

    /// Closes the connection and its files, reporting nothing to a
    /// handler; [`connect`](Self::connect) opens them again.
    pub fn stop(&mut self) {
        self.conn.end_session();
        self.shm_link = None;
        self.conn.release();
        self.last_server = None;
    }
}

impl<U: UserData, R: UserData> Wait for Client<U, R> {
    /// See [`Wait::wait_timeout`]. Zero while the session is down (the
    /// application reconnects), or messages wait; else until the session's
    /// next timer. Over shared memory the client tells the server's writer
    /// that it sleeps (the writer then wakes it with a heartbeat); a
    /// writer that cannot (a C++ server) has it sleep in slices of
    /// `Config::shm_sweep_interval`.
    fn wait_timeout(&mut self, now: i64) -> Option<Duration> {
        if self.asleep {
            self.awake();
        }
        let zero = Some(Duration::ZERO);
        if self.conn.is_closed() || self.conn.rx.may_have_messages() {
            return zero;
        }
        // The socket is read after any sleep: what woke it is there.
        self.socket_at = None;
        if !self.conn.tx.is_shm() {
            // Bytes the socket did not take: sleep until it takes more.
            let unsent = self.conn.tcp_socket().is_some_and(|(_, u)| u);
            self.watch_writable(unsent);
            if self.conn.tcp_wants_poll(unsent) {
                return zero;
            }
            let d = self.conn.tcp_deadline()?;
            return Some(self.cfg.until(now, d));
        }
        // A batch pushed with `push_more` goes now (a sleeping server is
        // woken for it).
        self.conn.tx.settle();
        self.send_wake(now);
        let deadline = match &self.shm_link {
            Some(l) => l.session.next_deadline(),
            None => return zero,
        };
        let Some(deadline) = deadline else {
            return zero; // the timers start at the next poll
        };
        let until = Some(self.cfg.until(now, deadline));
        let slice = Some(self.cfg.shm_sweep_interval);
        let Some(r) = self.conn.rx.shm_reader() else {
            return zero;
        };
        if !self.wake_announced {
            self.wake_announced = true;
            r.announce_wake();
            // A heartbeat now, so the server's writer looks (and
            // acknowledges) at once rather than at its next timer.
            if let Some(l) = &mut self.shm_link {
                l.wake(now);
            }
        }
        let acked = r.wake_acked();
        if !r.sleep() {
            return zero; // a message came meanwhile
        }
        self.asleep = true;
        if acked {
            until
        } else {
            min_timeout(until, slice)
        }
    }

    /// See [`Wait::wait`].
    fn wait(&mut self, now: i64, timeout: Duration) -> io::Result<()> {
        crate::wait::wait_then(self, now, timeout, |c| {
            if c.asleep {
                c.awake();
            }
        })
    }
}

impl<U: UserData, R: UserData> std::os::fd::AsRawFd for Client<U, R> {
    /// An epoll set with the session's socket (the same descriptor across
    /// reconnects): readable when the server sent something, over TCP,
    /// or woke this client, over shared memory. See [`Wait`].
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.poller.as_raw_fd()
    }
}

impl<U: UserData, R: UserData> std::os::fd::AsFd for Client<U, R> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

impl<U: UserData, R: UserData> Drop for Client<U, R> {
    fn drop(&mut self) {
        self.conn.close();
    }
}

/// The TCP side of a client ([`Client::parts`]): the whole session over
/// TCP, the heartbeats of a shared-memory session.
#[derive(Debug)]
pub struct ClientTcp<'a> {
    conn: Option<&'a mut Connection>,
    shm_link: &'a mut Option<TcpLink>,
    state: Arc<LinkState>,
}

impl ClientTcp<'_> {
    /// Reads, acks, heartbeats and the timeout; over TCP, delivers the
    /// server's messages too. Reports a disconnect once. Returns whether
    /// it did work for the application (see [`Client::poll`]).
    pub fn poll<H: ClientHandler>(&mut self, now: i64, handler: &mut H) -> bool {
        if let Some(conn) = self.conn.as_deref_mut() {
            let closed = conn.poll_tcp_io(now, true);
            if let Some(close) = closed {
                handler.on_disconnected(close);
            }
            // TCP: what the receive buffer holds, a bound of its own.
            let handed = deliver(conn, u32::MAX, |msg, tx| handler.on_server_msg(msg, tx));
            return handed || closed.is_some();
        }
        let Some(l) = self.shm_link.as_mut() else {
            return false;
        };
        let res: Result<(), Close> = match self.state.closed() {
            Some(c) => Err(c),
            None => l.poll_heartbeats(now, true),
        };
        let Err(c) = res else { return false };
        self.state.close(c);
        *self.shm_link = None;
        handler.on_disconnected(self.state.closed().unwrap_or(c));
        true
    }
}

/// The shared-memory side of a client ([`Client::parts`]).
#[derive(Debug)]
pub struct ClientShm<'a> {
    conn: Option<&'a mut Connection>,
    budget: u32,
}

impl ClientShm<'_> {
    /// Delivers waiting server messages to `handler`, at most
    /// `Config::shm_msgs_per_poll` of them. The TCP side reports the end
    /// of the session. Returns whether it delivered a message.
    #[inline]
    pub fn poll<H: ClientHandler>(&mut self, _now: i64, handler: &mut H) -> bool {
        let Some(conn) = self.conn.as_deref_mut() else {
            return false;
        };
        if conn.is_closed() {
            return false;
        }
        deliver(conn, self.budget, |msg, tx| handler.on_server_msg(msg, tx))
    }

    /// The connection, to push from this side's thread (shm mode).
    pub fn connection(&mut self) -> Option<&mut Connection> {
        self.conn.as_deref_mut()
    }
}
