//! tcpshm's side of the harnesses: the echo server they measure, its
//! configuration, and a client timed as an application polls.

use std::io::Write;
use std::time::Instant;

use tcpshm::{
    Accept, Client, ClientHandler, Config, ConnId, ConnTx, ControlHandler, GroupHandler,
    LoginRequest, Received, Server, Transport,
};
use tcpshm_cli::util::now;

use crate::peer::{Peer, PeerArgs};
use crate::rounds::{round, rtt_size, Round};

/// Messages of this type are consumed without an echo (throughput).
pub(crate) const SINK_TYPE: u16 = 100;
/// Messages of this type are echoed by a consume-and-reply
/// (`Batch::commit_consuming`), as `tcpshm echo-server --exactly-once`.
pub(crate) const EXACTLY_ONCE_TYPE: u16 = 101;

/// The peer's server: echoes, except SINK_TYPE messages, consumed silently.
#[derive(Clone)]
pub(crate) struct BenchEcho;

impl ControlHandler for BenchEcho {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for BenchEcho {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        if msg.msg_type() == SINK_TYPE {
            // Read every byte, as an application would.
            std::hint::black_box(msg.payload().iter().fold(0u8, |a, b| a ^ b));
            msg.pop();
            return;
        }
        if msg.msg_type() == EXACTLY_ONCE_TYPE {
            let mut rsp = tx.batch();
            if let Ok(p) = rsp.alloc(msg.msg_type(), msg.payload().len()) {
                p.copy_from_slice(msg.payload());
                let _ = rsp.commit_consuming(msg);
            }
            return;
        }
        let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        // As `tcpshm echo-server` answers: the reply is published first,
        // then the request consumed (nothing crashes here, so the order
        // only decides what is on the round trip's critical path).
        rsp.push();
        msg.pop();
    }
}

/// The bench's configuration; `fast` is `Config::shm_fast_path`.
pub(crate) fn bench_config(shm_dir: &std::path::Path, fast: bool) -> Config {
    let mut c = Config::default();
    // Room for `tcpshm-bench isolation`'s abusers beside the measured
    // client (a stalled one keeps its slot until the connection timeout).
    c.tcp_conns_per_group = 16;
    c.shm_conns_per_group = 16;
    c.tcp_queue_size = 1 << 20;
    c.tcp_recv_buf_init_size = 1 << 16;
    c.tcp_recv_buf_max_size = (1 << 20) + 4096;
    c.shm_dir = shm_dir.to_path_buf();
    c.shm_fast_path = fast;
    c
}

/// Polls `server` with `h` until `until()`, as an application's one
/// thread would: `Server::poll` at every pass, the clock and `until` every
/// 128 passes (an empty shm poll is a few ns: `now` is then at most a
/// microsecond old) or every pass while a TCP connection is live (its poll
/// makes a system call anyway, and its timers want a fresh `now`). A
/// poll that found nothing goes to `idle`; after a rest (a yield or a
/// sleep) the clock is read again.
pub(crate) fn serve(
    server: &mut Server,
    h: &mut BenchEcho,
    until: impl Fn() -> bool,
    mut idle: tcpshm::Idle,
) {
    let (mut t, mut i, mut tcp_live) = (now(), 0u32, false);
    let mut rested = false;
    loop {
        if tcp_live || i % 128 == 0 || rested {
            if until() {
                return;
            }
            tcp_live = server.parts().tcp.iter().any(|g| g.live() > 0);
            t = now();
        }
        i = i.wrapping_add(1);
        let worked = server.poll(t, h);
        rested = idle.idle_on(server, t, worked).unwrap_or(true);
    }
}

/// Server names of the two bench servers: the default configuration, and
/// one with the shared-memory fast path off (the v1 ring both ways).
pub(crate) const SERVER: &str = "bsrv";
pub(crate) const SERVER_V1: &str = "bsrvv1";

/// Starts the bench's server (the fast path, or with `v1` the v1 ring) as
/// a peer process with its queue files in `dir`; returns it and the
/// address it listens on. `idle`: its loop's `--idle` (`busy` by default).
pub(crate) fn spawn_server(
    dir: &std::path::Path,
    shm_dir: &std::path::Path,
    v1: bool,
    idle: Option<&str>,
) -> Result<(Peer, String), String> {
    let mut args = vec![
        "server".to_string(),
        dir.display().to_string(),
        "--shm-dir".into(),
        shm_dir.display().to_string(),
        "--idle".into(),
        idle.unwrap_or("busy").into(),
    ];
    if v1 {
        args.push("--v1".into());
    }
    let mut server = Peer::spawn(&args)?;
    let addr = server.line();
    Ok((server, addr))
}

pub(crate) fn peer_server(p: &PeerArgs) -> Result<(), String> {
    let name = if p.v1 { SERVER_V1 } else { SERVER };
    serve_peer(name, bench_config(&p.shm_dir, !p.v1), p)
}

/// The peer process of a bench server named `name`: listens, prints its
/// address, and serves until it is stopped.
pub(crate) fn serve_peer(name: &str, cfg: Config, p: &PeerArgs) -> Result<(), String> {
    let mut server: Server = Server::new(name, &p.target, cfg).map_err(|e| e.to_string())?;
    server.listen("127.0.0.1:0").map_err(|e| e.to_string())?;
    println!("{}", server.local_addr().expect("listening"));
    let _ = std::io::stdout().flush();
    tcpshm_cli::util::catch_stop_signals();
    serve(
        &mut server,
        &mut BenchEcho,
        tcpshm_cli::util::stopping,
        p.idle.strategy(),
    );
    Ok(())
}

#[derive(Default)]
pub(crate) struct Echoes(pub(crate) u32);

impl ClientHandler for Echoes {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
        self.0 += 1;
    }
}

/// Client names: over TCP, over shm, over shm with the fast path off.
pub(crate) const CLIENT_TCP: &str = "btcp";
pub(crate) const CLIENT_SHM: &str = "bshm";
pub(crate) const CLIENT_SHM_V1: &str = "bshmv1";

/// One connected client of the peer's server, over `shm` or TCP; `v1`
/// turns the shared-memory fast path off (the peer must be the v1 server).
pub(crate) fn our_client(
    dir: &std::path::Path,
    addr: &str,
    shm: bool,
    v1: bool,
    shm_dir: &std::path::Path,
) -> Result<Ours, String> {
    let name = match (shm, v1) {
        (false, _) => CLIENT_TCP,
        (true, false) => CLIENT_SHM,
        (true, true) => CLIENT_SHM_V1,
    };
    let mut client: Client =
        Client::new(name, dir.join(name), bench_config(shm_dir, !v1)).map_err(|e| e.to_string())?;
    let transport = if shm { Transport::Shm } else { Transport::Tcp };
    client
        .connect(transport, addr, 0)
        .map_err(|e| e.to_string())?;
    Ok(Ours {
        client,
        echoes: Echoes(0),
        shm,
        t: now(),
        loops: 0,
    })
}

impl Ours {
    /// `client`, connected (over shared memory if `shm`), with its count
    /// of echoes.
    pub(crate) fn new(client: Client, shm: bool) -> Ours {
        Ours {
            client,
            echoes: Echoes(0),
            shm,
            t: now(),
            loops: 0,
        }
    }
}

/// A connected client of the bench with what it counts.
pub(crate) struct Ours {
    pub(crate) client: Client,
    pub(crate) echoes: Echoes,
    shm: bool,
    /// The `now` of the polls, and the loops since it was read.
    t: i64,
    loops: u32,
}

impl Ours {
    /// One loop of the client: `Client::poll`, with the clock read every
    /// 64 loops only over shm (it costs some 30 ns here; the poll reads
    /// the heartbeat socket every 200 µs of it), as a latency-minded
    /// application would; every loop over TCP.
    pub(crate) fn poll(&mut self) {
        self.loops = self.loops.wrapping_add(1);
        if !self.shm || self.loops % 64 == 0 {
            self.t = now();
        }
        self.client.poll(self.t, &mut self.echoes);
    }
}

pub(crate) fn our_round(c: &mut Ours, n: u32, seq: &mut u32) -> Result<Round, String> {
    typed_round(c, n, seq, 1)
}

/// As [`our_round`], with requests of `msg_type` (the peer's server echoes
/// [`EXACTLY_ONCE_TYPE`] by a consume-and-reply).
pub(crate) fn typed_round(
    c: &mut Ours,
    n: u32,
    seq: &mut u32,
    msg_type: u16,
) -> Result<Round, String> {
    round(n, |_| {
        let i = *seq;
        *seq = seq.wrapping_add(1);
        let size = rtt_size(i);
        let before = c.echoes.0;
        let t0 = Instant::now();
        let mut m = c
            .client
            .connection()
            .alloc(msg_type, size)
            .map_err(|e| format!("alloc: {e}"))?;
        m.payload_mut()[..4].copy_from_slice(&i.to_le_bytes());
        m.push();
        while c.echoes.0 == before {
            c.poll();
            if c.client.connection().is_closed() {
                return Err("connection closed during the benchmark".into());
            }
        }
        Ok((t0.elapsed().as_nanos() as u64, size))
    })
}

/// Streams `n` messages of `size` bytes (consumed silently by the peer),
/// then one echoed marker; returns messages per second.
pub(crate) fn our_tput(c: &mut Ours, size: usize, n: u32) -> Result<f64, String> {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n {
        match c.client.connection().alloc(SINK_TYPE, size) {
            Ok(mut m) => {
                m.payload_mut().copy_from_slice(&src);
                m.push_more(); // TCP: batched into the next write
                sent += 1;
            }
            Err(tcpshm::AllocError::Full) => {
                c.client.connection().flush();
                c.poll();
            }
            Err(e) => return Err(format!("alloc: {e}")),
        }
        if c.client.connection().is_closed() {
            return Err("connection closed during the benchmark".into());
        }
    }
    marker(c)?;
    Ok(f64::from(n) / t0.elapsed().as_secs_f64())
}

/// Streams `n` messages of `size` bytes in groups of `per`, then one
/// echoed marker; returns messages per second. `atomic`: each group is a
/// [`Batch`](tcpshm::Batch) committed as one step (one that does not fit
/// yet is dropped and made again after a poll); else each message goes
/// with `push_more` and the group with a `flush`.
pub(crate) fn group_tput(
    c: &mut Ours,
    size: usize,
    n: u32,
    per: u32,
    atomic: bool,
) -> Result<f64, String> {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n {
        let conn = c.client.connection();
        if atomic {
            let mut b = conn.batch();
            for _ in 0..per {
                match b.alloc(SINK_TYPE, size) {
                    Ok(p) => p.copy_from_slice(&src),
                    Err(tcpshm::AllocError::Full) => break,
                    Err(e) => return Err(format!("batch alloc: {e}")),
                }
            }
            match b.commit() {
                Ok(k) => sent += k as u32,
                Err(_) => c.poll(),
            }
        } else {
            let mut k = 0;
            while k < per {
                match conn.alloc(SINK_TYPE, size) {
                    Ok(mut m) => {
                        m.payload_mut().copy_from_slice(&src);
                        m.push_more();
                        k += 1;
                    }
                    Err(tcpshm::AllocError::Full) => break,
                    Err(e) => return Err(format!("alloc: {e}")),
                }
            }
            conn.flush();
            sent += k;
            if k < per {
                c.poll();
            }
        }
        if c.client.connection().is_closed() {
            return Err("connection closed during the benchmark".into());
        }
    }
    marker(c)?;
    Ok(f64::from(n) / t0.elapsed().as_secs_f64())
}

/// The end of a streaming run: one echoed message, sent after the stream
/// and waited for.
pub(crate) fn marker(c: &mut Ours) -> Result<(), String> {
    let before = c.echoes.0;
    while c.client.connection().alloc(1, 8).map(|m| m.push()).is_err() {
        c.client.connection().flush();
        c.poll();
    }
    while c.echoes.0 == before {
        c.client.connection().flush();
        c.poll();
        if c.client.connection().is_closed() {
            return Err("connection closed during the benchmark".into());
        }
    }
    Ok(())
}
