//! Fuzz entry points that drive real peers over loopback sockets and real
//! queue files in a scratch directory, with a fake clock the input
//! advances: the server's login control path ([`server_login`]), the
//! client's login and what follows it ([`client_login`]), and a logged-in
//! TCP session on both sides, with timers, partial sends and reconnects
//! ([`session_conn`]). Each checks what the peers deliver or answer
//! against a model of the protocol, not only that nothing panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Input;
use crate::config::Config;
use crate::conn::{Connection, TxTransport};
use crate::server::{ConnId, LoginRequest};
use crate::wire::{Login, LoginResponse, LoginStatus, MsgHeader, Name, HEADER_SIZE, NAME_SIZE};
use crate::{
    Accept, Client, ClientHandler, ConnTx, ControlHandler, GroupHandler, Received, Server,
    Transport,
};

/// One second of the fake clock (nanoseconds, the default tick).
const SECOND_NS: i64 = 1_000_000_000;

/// A scratch directory (with `shm/` inside), removed on every exit path.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "tcpshm-fuzz-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::create_dir_all(d.join("shm"));
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn fuzz_config(dir: &Path) -> Config {
    Config {
        shm_dir: dir.join("shm"),
        shm_queue_size: 1 << 12,
        tcp_queue_size: 1 << 14,
        tcp_recv_buf_init_size: 256,
        tcp_recv_buf_max_size: (1 << 14) + 64,
        connect_timeout: Duration::from_millis(500),
        tcp_conns_per_group: 2,
        shm_conns_per_group: 2,
        max_new_connections: 3,
        heartbeat_interval: Duration::from_secs(1),
        connection_timeout: Duration::from_secs(3),
        // The fake clock stands still while a login is polled: run the
        // control part at every poll, not once per tick.
        socket_poll_interval: Duration::ZERO,
        ..Config::default()
    }
}

/// Client names the inputs pick from: valid ones, and ones the server
/// must refuse (empty, path-like, unterminated).
const NAMES: [&[u8]; 8] = [
    b"a",
    b"b",
    b"cc",
    b"",
    b"../x",
    b"bad/n",
    b"fifteen_chars_x",
    b"sixteen_chars_xx",
];

fn name_field(inp: &mut Input<'_>, dict: &[&[u8]]) -> [u8; NAME_SIZE] {
    let mut f = [0u8; NAME_SIZE];
    let pick = inp.byte() as usize;
    if pick < 224 {
        let n = dict[pick % dict.len()];
        f[..n.len()].copy_from_slice(n);
    } else {
        f.copy_from_slice(&inp.bytes(NAME_SIZE));
    }
    f
}

/// `x` in `[start, end]` by signed differences (`docs/protocol.md` §1 and §4
/// rule 6, the C++ server's `CheckAckInQueue`), written here independently
/// of the library's own check.
fn within(x: u32, start: u32, end: u32) -> bool {
    x.wrapping_sub(start) as i32 >= 0 && end.wrapping_sub(x) as i32 >= 0
}

/// Reads what the socket has now (non-blocking) into `got`, up to 1 MiB
/// in all.
fn drain(sock: &mut TcpStream, got: &mut Vec<u8>) {
    let mut b = [0u8; 4096];
    while got.len() <= 1 << 20 {
        match sock.read(&mut b) {
            Ok(n) if n > 0 => got.extend_from_slice(&b[..n]),
            _ => return,
        }
    }
}

// ------------------------------------------------------------ server_login

/// The server's application: accepts, refuses or names a group that does
/// not exist, as the input says; pushes a few messages at every logon, so
/// later logins of that name meet a queue file with a real sequence range.
struct LoginServer {
    decisions: Vec<u8>,
    n: usize,
    pushes: u8,
}

impl ControlHandler for LoginServer {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        let d = self.decisions[self.n % self.decisions.len()];
        self.n += 1;
        match d % 4 {
            0 | 1 => Accept::group(0),
            2 => Accept::group(1 + usize::from(d >> 4)), // no such group
            _ => Accept::reject("refused"),
        }
    }
}

impl GroupHandler for LoginServer {
    fn on_client_logon(&mut self, _: ConnId, _: &LoginRequest, conn: &mut Connection) {
        for k in 0..self.pushes {
            if let Ok(mut m) = conn.alloc(1 + u16::from(k), usize::from(k) * 5) {
                m.payload_mut().fill(k);
                m.push();
            }
        }
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

/// One raw client connection of [`server_login`]: what it sent and got.
struct RawPeer {
    sock: TcpStream,
    sent: Vec<u8>,
    got: Vec<u8>,
}

/// Checks what the server answered on one connection against the login it
/// was sent: a well-formed response first; "OK" only for a valid name and,
/// for an existing pair, sequence ranges that fit; "mismatch" only when
/// they do not; then well-formed frames.
fn check_answer(p: &RawPeer) {
    let n = LoginResponse::<u8>::FRAME;
    if p.got.len() < n {
        return;
    }
    let (hdr, rsp) =
        LoginResponse::<u8>::decode(&p.got[..n]).expect("the server's response decodes");
    assert_eq!(
        Name::from_wire(&rsp.server_name).map(|s| s.to_string()),
        Ok("srv".to_string())
    );
    if rsp.status == LoginStatus::Rejected {
        return;
    }
    let (lh, login) = Login::<u8>::decode(p.sent.get(..Login::<u8>::FRAME).unwrap_or(&[]))
        .expect("an answer other than a rejection follows a well-formed login");
    assert!(
        Name::from_wire(&login.client_name).is_ok(),
        "accepted an invalid name"
    );
    let existing = Name::from_wire_opt(&login.last_server_name)
        .ok()
        .flatten()
        .is_some_and(|s| s.as_str() == "srv");
    let fits = within(lh.ack_seq, rsp.server_seq_start, rsp.server_seq_end)
        && within(hdr.ack_seq, login.client_seq_start, login.client_seq_end);
    match rsp.status {
        LoginStatus::Ok if existing => assert!(fits, "OK with ranges that do not fit"),
        LoginStatus::Ok => assert_eq!(
            (hdr.ack_seq, rsp.server_seq_start),
            (0, 0),
            "a new pair starts at 0"
        ),
        LoginStatus::SeqMismatch => {
            assert!(
                existing && !fits,
                "mismatch reported for ranges that fit: {hdr:?} {rsp:?} {lh:?} {login:?}"
            )
        }
        LoginStatus::Rejected => {}
    }
    // What follows: whole frames, each at least a header.
    let mut at = n;
    while p.got.len() >= at + HEADER_SIZE {
        let h = MsgHeader::decode(&p.got[at..]).expect("8 bytes decode");
        assert!(h.size as usize >= HEADER_SIZE, "a frame below header size");
        at += h.padded_size();
    }
}

/// The server's login control path, for real: a `Server` on loopback in a
/// scratch directory, and up to six raw connections through which the
/// input sends well-formed logins built from its bytes (names from a
/// dictionary that includes invalid ones, sequence ranges, last server
/// names, TCP or SHM), raw bytes, closes, and clock jumps past the login
/// timeouts. Every answer is checked against the login it answers: a
/// well-formed response; "OK" only for a valid name and, on an existing
/// pair, ranges that fit; "mismatch" only when they do not.
pub fn server_login(data: &[u8]) {
    let mut inp = Input::new(data);
    let dir = Scratch::new("srv");
    let mut handler = LoginServer {
        decisions: inp.bytes(4),
        n: 0,
        pushes: inp.byte() % 6,
    };
    let Ok(mut server) = Server::new("srv", dir.0.join("s"), fuzz_config(&dir.0)) else {
        return;
    };
    if server.listen("127.0.0.1:0").is_err() {
        return;
    }
    let addr = server.local_addr().expect("listening");
    let mut now = SECOND_NS;
    let mut peers: Vec<RawPeer> = Vec::new();
    for _ in 0..32 {
        if inp.done() {
            break;
        }
        let op = inp.byte();
        let i = inp.byte() as usize % peers.len().max(1);
        match op % 6 {
            0 if peers.len() < 6 => {
                if let Ok(sock) = TcpStream::connect(addr) {
                    let _ = sock.set_nonblocking(true);
                    peers.push(RawPeer {
                        sock,
                        sent: Vec::new(),
                        got: Vec::new(),
                    });
                }
            }
            1 if !peers.is_empty() => {
                let login = Login::<u8> {
                    client_seq_start: inp.seq(),
                    client_seq_end: inp.seq(),
                    user_data: inp.byte(),
                    use_shm: inp.byte() % 4 == 0,
                    client_name: name_field(&mut inp, &NAMES),
                    last_server_name: name_field(&mut inp, &[b"srv", b"", b"old"]),
                };
                let frame = login.encode(inp.seq());
                let cut = inp.byte() as usize % (frame.len() + 1);
                let p = &mut peers[i];
                for part in [&frame[..cut], &frame[cut..]] {
                    let _ = p.sock.write_all(part);
                    p.sent.extend_from_slice(part);
                    server.poll(now, &mut handler);
                }
            }
            2 if !peers.is_empty() => {
                let n = inp.byte() as usize % 64;
                let raw = inp.bytes(n);
                let _ = peers[i].sock.write_all(&raw);
                peers[i].sent.extend_from_slice(&raw);
            }
            3 if !peers.is_empty() => {
                peers.swap_remove(i);
            }
            4 => now += i64::from(inp.byte()) * SECOND_NS / 20,
            _ => {}
        }
        server.poll(now, &mut handler);
        for p in &mut peers {
            drain(&mut p.sock, &mut p.got);
            check_answer(p);
        }
    }
    for p in &mut peers {
        server.poll(now, &mut handler);
        drain(&mut p.sock, &mut p.got);
        check_answer(p);
    }
    // Names become file names only when valid: nothing but this server's
    // pair files and the shm dir in the scratch directory.
    for e in std::fs::read_dir(dir.0.join("s"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let f = e.file_name().to_string_lossy().into_owned();
        let client = f.strip_prefix("srv_").and_then(|r| r.strip_suffix(".ptcp"));
        assert!(
            client.is_some_and(|c| Name::new(c).is_ok()),
            "unexpected file {f}"
        );
    }
}

// ------------------------------------------------------------ client_login

/// Records every message it is given (type and payload) and pops it.
#[derive(Default)]
struct Recorder {
    got: Vec<(u16, Vec<u8>)>,
}

impl ClientHandler for Recorder {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        self.got.push((msg.msg_type(), msg.payload().to_vec()));
        msg.pop();
    }
}

/// What the fake server of [`client_login`] sends: its response, then
/// frames; and the application messages an honest client delivers from
/// them (the frames up to the first one it must refuse). After raw bytes
/// the frames are not known (the bytes may happen to frame), so `exact`
/// says whether nothing more than `expected` may be delivered.
struct Script {
    response: Vec<u8>,
    frames: Vec<u8>,
    expected: Vec<(u16, Vec<u8>)>,
    exact: bool,
}

fn script(inp: &mut Input<'_>) -> Script {
    let kind = inp.byte() % 4;
    let response = if kind == 3 {
        let n = inp.byte() as usize % 96;
        inp.bytes(n)
    } else {
        let mut rsp = LoginResponse::<u8> {
            server_seq_start: inp.seq(),
            server_seq_end: inp.seq(),
            user_data: inp.byte(),
            status: [
                LoginStatus::Ok,
                LoginStatus::SeqMismatch,
                LoginStatus::Rejected,
            ][kind as usize],
            server_name: name_field(inp, &[b"srv", b"old", b"", b"bad/n"]),
            ..Default::default()
        };
        rsp.error_msg[..6].copy_from_slice(b"no way");
        rsp.encode(inp.seq())
    };
    let (mut frames, mut expected) = (Vec::new(), Vec::new());
    let (mut honest, mut exact) = (true, true);
    for _ in 0..inp.byte() % 10 {
        let sel = inp.byte();
        if sel >= 240 {
            let n = inp.byte() as usize % 24;
            frames.extend(inp.bytes(n));
            if n > 0 && honest {
                honest = false;
                exact = false;
            }
            continue;
        }
        let msg_type = match sel % 5 {
            0 => 0,
            1 => 2,
            2 => 1,
            3 => 7,
            _ => u16::from_le_bytes([inp.byte(), inp.byte()]),
        };
        let len = inp.byte() as usize % 48;
        // The client sent nothing: an ack newer than 0 (by signed
        // difference) is beyond what was sent; an older one is ignored.
        let ack = if inp.byte() % 8 == 0 { inp.seq() } else { 0 };
        let payload = inp.bytes(len);
        let h = MsgHeader {
            size: (HEADER_SIZE + len) as u16,
            msg_type,
            ack_seq: ack,
        };
        let start = frames.len();
        frames.extend_from_slice(&h.encode());
        frames.extend_from_slice(&payload);
        frames.resize(start + h.padded_size(), 0);
        honest &= ack as i32 <= 0;
        if honest && msg_type != 0 {
            expected.push((msg_type, payload));
        }
    }
    Script {
        response,
        frames,
        expected,
        exact,
    }
}

/// The fake server: accepts one connection, reads the login, answers with
/// the script, and keeps the socket open until `done` (every wait has a
/// deadline).
fn fake_server(l: &TcpListener, s: &Script, written: &AtomicBool, done: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let _ = l.set_nonblocking(true);
    let mut sock = loop {
        match l.accept() {
            Ok((sock, _)) => break sock,
            Err(_) if Instant::now() < deadline && !done.load(Ordering::Relaxed) => {
                std::thread::yield_now()
            }
            Err(_) => return,
        }
    };
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let mut login = vec![0u8; Login::<u8>::FRAME];
    if sock.read_exact(&mut login).is_err() {
        return;
    }
    let _ = sock.write_all(&s.response);
    if s.response.len() < LoginResponse::<u8>::FRAME {
        // A short answer: end it, so the client's read fails now rather
        // than at its connect timeout.
        let _ = sock.shutdown(std::net::Shutdown::Write);
    }
    let _ = sock.write_all(&s.frames);
    written.store(true, Ordering::Release);
    while !done.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// The client's login and the frames that follow it, for real: a `Client`
/// (with or without a persisted last server, so its pair files are opened
/// before the login) against a fake server on loopback whose response and
/// frames come from the input: any status, sequence ranges, server names
/// (valid or not), raw bytes, heartbeats, login-response look-alikes and
/// acks beyond what the client sent. A login may fail, always as a value;
/// once logged in, what the client delivers must be a prefix of the
/// application messages an honest peer sent, in order, byte for byte.
pub fn client_login(data: &[u8]) {
    let mut inp = Input::new(data);
    let dir = Scratch::new("cli");
    let persisted = inp.byte() % 2 == 1;
    let s = script(&mut inp);
    let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
        return;
    };
    let Ok(addr) = l.local_addr() else { return };
    let mut recorder = Recorder::default();
    let Ok(mut client) = Client::<u8, u8>::new("cl", dir.0.join("c"), fuzz_config(&dir.0)) else {
        return;
    };
    if persisted {
        let mut f = [0u8; NAME_SIZE];
        f[..3].copy_from_slice(b"srv");
        let _ = std::fs::write(dir.0.join("c").join("cl.lastserver"), f);
    }
    let (written, done) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|scope| {
        scope.spawn(|| fake_server(&l, &s, &written, &done));
        if client.connect(Transport::Tcp, addr, 0).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !written.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            let mut now = SECOND_NS;
            for _ in 0..12 {
                client.poll(now, &mut recorder);
                now += i64::from(inp.byte()) * SECOND_NS / 40;
            }
        }
        done.store(true, Ordering::Release);
    });
    let got = &recorder.got;
    let known = got.len().min(s.expected.len());
    assert!(
        got[..known] == s.expected[..known] && (!s.exact || got.len() <= s.expected.len()),
        "delivered {got:?}, the honest prefix is {:?} (exact: {})",
        s.expected,
        s.exact
    );
}

// ------------------------------------------------------------ session_conn

/// One side of [`session_conn`]: checks that message `k` from the peer
/// arrives `k`-th, exactly once, with its payload, across reconnects; pops
/// it unless holding (then it comes again).
#[derive(Default)]
struct Side {
    next: u64,
    hold: bool,
}

/// The payload of message `k` of `len` bytes (at least 8: `k` first).
fn payload_of(k: u64, len: usize) -> Vec<u8> {
    let mut v = k.to_le_bytes().to_vec();
    v.extend((8..len).map(|j| (k as usize * 31 + j) as u8));
    v
}

impl Side {
    fn take(&mut self, msg: Received<'_>) {
        let p = msg.payload();
        assert!(p.len() >= 8, "a message shorter than its number");
        let k = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        assert_eq!(k, self.next, "lost, duplicated or out of order");
        assert_eq!(p, &payload_of(k, p.len())[..], "payload of message {k}");
        assert_eq!(msg.msg_type(), (k % 500) as u16 + 1);
        if !self.hold {
            msg.pop();
            self.next += 1;
        }
    }
}

impl ControlHandler for Side {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Side {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        self.take(msg)
    }
}

impl ClientHandler for Side {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        self.take(msg)
    }
}

/// Pushes message `k` of `len` bytes; whether it went in.
fn push_msg(conn: &mut Connection, k: u64, len: usize, more: bool) -> bool {
    match conn.alloc((k % 500) as u16 + 1, len) {
        Ok(mut m) => {
            m.payload_mut().copy_from_slice(&payload_of(k, len));
            if more {
                m.push_more()
            } else {
                m.push()
            }
            true
        }
        Err(_) => false,
    }
}

/// Makes the kernel buffers of a connection's live socket small, so a
/// peer that does not read makes sends partial within a few kilobytes.
fn shrink(conn: &Connection) {
    if let TxTransport::Tcp { link: Some(l), .. } = &conn.tx.t {
        let _ = crate::sys::socket::shrink_buffers(&l.sock, 2048);
    }
}

const SLOT: ConnId = ConnId {
    transport: Transport::Tcp,
    group: 0,
    slot: 0,
};

/// Logs the client in while another thread polls the server; once the
/// session is up, shrinks both ends' socket buffers. Returns whether the
/// client logged in.
fn connect(
    client: &mut Client,
    server: &mut Server,
    side: &mut Side,
    addr: SocketAddr,
    now: i64,
) -> bool {
    let stop = AtomicBool::new(false);
    let ok = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                server.poll(now, side);
                std::thread::yield_now();
            }
        });
        let ok = client.connect(Transport::Tcp, addr, 0);
        stop.store(true, Ordering::Relaxed);
        ok
    });
    // The server's side of the session is in place: its polling thread,
    // which answered the login, has been joined.
    if ok.is_ok() {
        shrink(client.connection());
        if let Some(c) = server.connection(SLOT) {
            shrink(c);
        }
    }
    ok.is_ok()
}

/// A logged-in TCP session, driven for real on both sides: a `Server` and
/// a `Client` on loopback with small socket buffers, the input choosing
/// each step: pushes (one at a time, or bursts with `push_more` that fill
/// the socket so sends go out in pieces), polls of either side, holding
/// messages unpopped, flushes, and jumps of the fake clock past the
/// heartbeat interval and the connection timeout, after which the client
/// logs in again. Every message is checked on arrival: the `k`-th one from
/// the peer, exactly once, byte for byte, across partial sends, timeouts
/// and resends after a new login.
pub fn session_conn(data: &[u8]) {
    let mut inp = Input::new(data);
    let dir = Scratch::new("ses");
    let cfg = fuzz_config(&dir.0);
    let Ok(mut server) = Server::new("srv", dir.0.join("s"), cfg.clone()) else {
        return;
    };
    if server.listen("127.0.0.1:0").is_err() {
        return;
    }
    let addr = server.local_addr().expect("listening");
    let Ok(mut client) = Client::new("cl", dir.0.join("c"), cfg) else {
        return;
    };
    let (mut server_side, mut client_side) = (Side::default(), Side::default());
    let mut now = SECOND_NS;
    let (mut to_server, mut to_client) = (0u64, 0u64);
    // Until the client's first login succeeds, the pair is new to it: that
    // login starts the pair afresh on both sides, and what the server
    // pushed to the slot meanwhile (a login the server answered after the
    // client gave up on it) is gone by the protocol's rule.
    let mut paired = connect(&mut client, &mut server, &mut server_side, addr, now);
    for _ in 0..96 {
        if inp.done() {
            break;
        }
        let op = inp.byte();
        let len = 8 + inp.byte() as usize * 4;
        match op % 10 {
            0 => {
                to_server += u64::from(push_msg(client.connection(), to_server, len, op & 16 != 0))
            }
            1 => {
                if let Some(c) = server.connection(SLOT) {
                    to_client += u64::from(push_msg(c, to_client, len, op & 16 != 0));
                }
            }
            2 => {
                // A burst: more than the small socket buffers take at once.
                for _ in 0..op % 24 {
                    if !push_msg(client.connection(), to_server, 1000, true) {
                        break;
                    }
                    to_server += 1;
                }
                client.connection().flush();
            }
            3 => {
                if let Some(c) = server.connection(SLOT) {
                    for _ in 0..op % 24 {
                        if !push_msg(c, to_client, 1000, true) {
                            break;
                        }
                        to_client += 1;
                    }
                    c.flush();
                }
            }
            4 | 5 => {
                client.poll(now, &mut client_side);
            }
            6 => {
                server.poll(now, &mut server_side);
            }
            7 => now += i64::from(inp.byte()) * SECOND_NS / 50,
            8 => {
                let h = op & 16 != 0;
                if op & 32 != 0 {
                    client_side.hold = h;
                } else {
                    server_side.hold = h;
                }
            }
            _ => {
                if client.connection().is_closed()
                    && connect(&mut client, &mut server, &mut server_side, addr, now)
                    && !std::mem::replace(&mut paired, true)
                {
                    to_client = 0;
                }
            }
        }
    }
}
