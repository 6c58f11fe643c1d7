//! Test harness shared by the connection tests: an echo server handler, a
//! checking client handler, scratch dirs, a monotonic `now`, and bounded
//! waits.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tcpshm::{
    Accept, ClientHandler, Close, CloseReason, Config, ConnId, ConnTx, Connection, ControlHandler,
    GroupHandler, LoginRequest, Name, Received, SeqMismatch,
};

pub fn now() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as i64
}

/// A fresh directory under the system temp dir, unique per test.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "tcpshm-it-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A test config: a private shm dir (removed by `Cleanup`) and a bigger
/// TCP queue so large messages fit.
pub fn config(dir: &std::path::Path) -> Config {
    let shm_dir = dir.join("shm");
    std::fs::create_dir_all(&shm_dir).unwrap();
    let mut c = Config::default();
    c.tcp_queue_size = 1 << 16;
    c.tcp_recv_buf_init_size = 2048;
    c.tcp_recv_buf_max_size = (1 << 16) + 64;
    c.shm_queue_size = 1 << 16;
    c.shm_dir = shm_dir;
    c
}

/// `config(dir)` changed by `f`.
pub fn config_with(dir: &std::path::Path, f: impl FnOnce(&mut Config)) -> Config {
    let mut c = config(dir);
    f(&mut c);
    c
}

/// Polls `f` until it returns true, yielding; panics after `secs`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[derive(Default)]
pub struct EchoServer {
    pub logons: Vec<String>,
    pub disconnects: Vec<(String, CloseReason)>,
    pub mismatches: Vec<SeqMismatch>,
    pub file_errors: Vec<String>,
    pub echoed: u64,
    /// Reject logins with this text.
    pub reject: Option<String>,
    /// Stop echoing (a stalled application).
    pub paused: bool,
    /// Echo with `push_more` (sent with the end of the poll).
    pub batch: bool,
    /// Echo with a consume-and-reply (`Batch::commit_consuming`): up to 8
    /// requests at once, the others held (`Received::hold`) while more
    /// are waiting.
    pub atomic: bool,
    /// The requests held per client (type, payload), echoed at its commit.
    pub held: std::collections::HashMap<String, Vec<(u16, Vec<u8>)>>,
    /// Requests echoed by a commit that consumed more than one.
    pub grouped: u64,
    /// Next sequence number expected per client: every message arrives
    /// exactly once, in order.
    pub next_seq: std::collections::HashMap<String, u64>,
}

impl ControlHandler for EchoServer {
    fn on_new_connection(&mut self, _login: &LoginRequest) -> Accept {
        match &self.reject {
            Some(t) => Accept::reject(t.clone()),
            None => Accept::Serve {
                group: 0,
                user_data: 42,
            },
        }
    }
}

impl GroupHandler for EchoServer {
    fn on_client_logon(&mut self, _id: ConnId, login: &LoginRequest, conn: &mut Connection) {
        assert_eq!(conn.remote_name(), Some(&login.client));
        self.logons.push(login.client.to_string());
    }
    fn on_client_disconnected(&mut self, _id: ConnId, client: &Name, close: Close) {
        // A new session delivers the held again.
        self.held.remove(client.as_str());
        self.disconnects.push((client.to_string(), close.reason));
    }
    fn on_client_msg(&mut self, _id: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        if self.paused {
            return;
        }
        let who = tx.remote_name().unwrap().to_string();
        if self.atomic {
            let mut msg = msg;
            let held = self.held.entry(who.clone()).or_default();
            if held.len() < 7 && msg.next_ready() {
                let copy = (msg.msg_type(), msg.payload().to_vec());
                match msg.hold() {
                    Ok(()) => return held.push(copy),
                    Err(large) => msg = large,
                }
            }
            let mut b = tx.batch();
            let mut group = std::mem::take(held);
            group.push((msg.msg_type(), msg.payload().to_vec()));
            for (t, p) in &group {
                let _ = b.append(*t, p);
            }
            // Not committed (full): every request of the group is given
            // back, and comes again at the next poll.
            if b.commit_consuming(msg).is_ok() {
                let next = self.next_seq.entry(who).or_default();
                for (_, p) in &group {
                    let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
                    assert_eq!(
                        seq, *next,
                        "server got a message out of order, twice or not at all"
                    );
                    *next += 1;
                }
                self.echoed += group.len() as u64;
                if group.len() > 1 {
                    self.grouped += group.len() as u64;
                }
            }
            return;
        }
        let mut rsp = match tx.alloc(msg.msg_type(), msg.payload().len()) {
            Ok(r) => r,
            Err(_) => return, // full: redelivered on the next poll
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        let p = msg.payload();
        if p.len() >= 8 {
            let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
            let next = self.next_seq.entry(who).or_default();
            assert_eq!(
                seq, *next,
                "server got a message out of order, twice or not at all"
            );
            *next += 1;
        }
        msg.pop();
        if self.batch {
            rsp.push_more();
        } else {
            rsp.push();
        }
        self.echoed += 1;
    }
    fn on_seq_mismatch(&mut self, _client: &Name, m: &SeqMismatch) {
        self.mismatches.push(*m);
    }
    fn on_file_error(&mut self, _client: &Name, e: &tcpshm::FileError) {
        self.file_errors.push(e.to_string());
    }
}

/// The payload of message `seq`: `len` bytes derived from `seq`.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|j| (seq as usize * 131 + j) as u8));
    v.truncate(len.max(8));
    v
}

/// A client handler that checks every echo: message `seq` comes back with
/// the payload it was sent with, in order, exactly once.
#[derive(Default)]
pub struct CheckingClient {
    pub received: u64,
    pub disconnects: Vec<CloseReason>,
    /// Length of message `seq` (the sender's choice).
    pub len_of: Option<fn(u64) -> usize>,
}

impl ClientHandler for CheckingClient {
    fn on_server_msg(&mut self, msg: Received<'_>, _tx: &mut ConnTx) {
        let p = msg.payload();
        assert!(p.len() >= 8, "echo shorter than its sequence number");
        let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
        assert_eq!(seq, self.received, "echo out of order, duplicated or lost");
        let len = self.len_of.map_or(p.len(), |f| f(seq));
        assert_eq!(p, &payload(seq, len)[..], "payload of echo {seq}");
        assert_eq!(msg.msg_type(), (seq % 1000) as u16 + 1);
        msg.pop();
        self.received += 1;
    }
    fn on_disconnected(&mut self, close: Close) {
        self.disconnects.push(close.reason);
    }
}

/// Pushes message `seq` of `len` bytes; false if the queue is full.
pub fn send(conn: &mut Connection, seq: u64, len: usize) -> bool {
    match conn.alloc((seq % 1000) as u16 + 1, len) {
        Ok(mut a) => {
            a.payload_mut().copy_from_slice(&payload(seq, len));
            a.push();
            true
        }
        Err(tcpshm::AllocError::Full) => false,
        Err(e) => panic!("alloc {seq} of {len}: {e}"),
    }
}

/// Removes the test's shm objects and dir.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets a flag when dropped, so a panicking test thread stops its
/// background pollers instead of leaving the scope hanging.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `target` and cuts every
/// connection through it on demand. Polled by its own thread, which stops
/// when the proxy is dropped.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn new(target: std::net::SocketAddr) -> Proxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c2, s2) = (cut.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut pairs: Vec<(TcpStream, TcpStream)> = Vec::new();
            let mut seen_cut = 0;
            let mut buf = vec![0u8; 1 << 16];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((a, _)) = l.accept() {
                    if let Ok(b) = TcpStream::connect(target) {
                        a.set_nonblocking(true).unwrap();
                        b.set_nonblocking(true).unwrap();
                        a.set_nodelay(true).unwrap();
                        b.set_nodelay(true).unwrap();
                        pairs.push((a, b));
                    }
                }
                let c = c2.load(Ordering::Relaxed);
                if c != seen_cut {
                    seen_cut = c;
                    for (a, b) in pairs.drain(..) {
                        let _ = a.shutdown(std::net::Shutdown::Both);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    }
                }
                pairs.retain_mut(|(a, b)| {
                    for (from, to) in [(&*a, &*b), (&*b, &*a)] {
                        let mut from = from;
                        let mut to = to;
                        match from.read(&mut buf) {
                            Ok(0) => return false,
                            Ok(n) => {
                                // Forward all of it (blocking briefly if needed).
                                to.set_nonblocking(false).unwrap();
                                let ok = to.write_all(&buf[..n]).is_ok();
                                to.set_nonblocking(true).unwrap();
                                if !ok {
                                    return false;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return false,
                        }
                    }
                    true
                });
                std::thread::yield_now();
            }
        });
        Proxy {
            addr,
            cut,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes every connection through the proxy (mid-stream).
    pub fn cut(&self) {
        self.cut.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls a server (every part) with `handler` on a thread of `scope`
/// until `stop` is set.
pub fn serve<'s, H: ControlHandler + GroupHandler + Send>(
    scope: &'s std::thread::Scope<'s, '_>,
    server: &'s mut tcpshm::Server,
    handler: &'s mut H,
    stop: &'s std::sync::atomic::AtomicBool,
) {
    scope.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            server.poll(now(), handler);
            std::thread::yield_now();
        }
    });
}

/// Length of message `seq` in the recovery tests: small and varied.
pub fn small_len(seq: u64) -> usize {
    8 + (seq as usize * 37) % 200
}

/// Runs a server named `name` (files in `dir/s`, polled with `handler`
/// on a scoped thread) while `f` runs with its address; returns the
/// server's handler.
pub fn with_server<H: ControlHandler + GroupHandler + Send>(
    dir: &std::path::Path,
    name: &str,
    cfg: &Config,
    mut handler: H,
    f: impl FnOnce(std::net::SocketAddr),
) -> H {
    let mut server = tcpshm::Server::new(name, dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        serve(s, &mut server, &mut handler, &stop);
        let _stop = StopOnDrop(&stop);
        f(addr);
    });
    handler
}

/// [`with_server`] with an [`EchoServer`].
pub fn with_echo_server(
    dir: &std::path::Path,
    name: &str,
    cfg: &Config,
    handler: EchoServer,
    f: impl FnOnce(std::net::SocketAddr),
) -> EchoServer {
    with_server(dir, name, cfg, handler, f)
}

/// A protocol-v1 peer (byte for byte a C++ client) named `name`, logged in
/// over TCP to the server at `addr`.
pub fn v1_peer(addr: std::net::SocketAddr, name: &str) -> tcpshm_v1::Peer {
    let login = tcpshm_v1::Login::new(name);
    let (peer, rsp) =
        tcpshm_v1::Peer::login(addr, &login, std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(rsp.status, tcpshm_v1::STATUS_OK);
    peer
}

/// Connects `c` over `t` to `server`, which a scoped thread polls with
/// `echo` meanwhile (the login blocks until the server answers).
pub fn connect_served(
    server: &mut tcpshm::Server,
    c: &mut tcpshm::Client,
    echo: &mut EchoServer,
    t: tcpshm::Transport,
) {
    let addr = server.local_addr().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (server, echo, done) = (&mut *server, &mut *echo, &done);
        s.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                server.poll(now(), echo);
                std::thread::yield_now();
            }
        });
        let _stop = StopOnDrop(done);
        c.connect(t, addr, 0).unwrap();
    });
}

/// A client of the tests' default types.
pub type TestClient = tcpshm::Client;

/// A client named `name` in `dir/<name>`.
pub fn client(dir: &std::path::Path, name: &str, cfg: &Config) -> TestClient {
    tcpshm::Client::new(name, dir.join(name), cfg.clone()).unwrap()
}
