//! `tcpshm-bench scale`: what idle connections cost the active one.
//!
//! A server (a `peer` process on the second CPU) has one TCP and one SHM
//! group, each with room for the largest N of the run and ten more. The
//! active client (this process, on the first CPU) times echo round trips
//! in rounds that alternate:
//! - lone: it is the only client;
//! - loaded: N idle clients are logged in to the same group. They live in
//!   one `peer` process, not pinned, that sleeps and sends a heartbeat to
//!   each every second: raw protocol-v1 peers over TCP (a socket each),
//!   tcpshm clients with 64 KiB rings over shared memory.
//!
//! Between rounds the idle process is killed (its connections close) and
//! a new one logs in again. Each loaded round is compared with the lone
//! rounds on either side (this VM drifts: only such ratios mean
//! anything). While the idle clients are up and the active one waits, the
//! server counts its polls and its system calls (`perf_event_open` on the
//! `raw_syscalls:sys_enter` tracepoint, when tracefs is mounted and the
//! kernel lets us) and what it holds per connection (descriptors,
//! mappings, RSS). The JSON schema is in `docs/benchmarks.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tcpshm::{Client, Config, Server, Transport};
use tcpshm_cli::util::{fmt_ns, now};

use crate::ours::{self, BenchEcho, Echoes, Ours};
use crate::peer::{self, Peer, PeerArgs};
use crate::rounds::{self, Round};
use crate::shared_page::SharedPage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Idle client counts, comma-separated (0 is the lone round, always
    /// measured).
    #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
    pub idle: Vec<usize>,
    /// Transports: tcp, shm, or both.
    #[arg(long, default_value = "both")]
    pub transport: String,
    /// Loaded rounds per idle count (each between two lone rounds).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Round trips of the active client per round.
    #[arg(long, default_value_t = 10_000)]
    pub per_round: u32,
    /// Where to write the JSON results.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// The active client: `ours` (a tcpshm client), or `v1`, a peer as a
    /// C++ one is to the server: over TCP a raw protocol-v1 peer (the
    /// project's stand-in, busy-polling), over shared memory a tcpshm
    /// client that rings no doorbell.
    #[arg(long, default_value = "ours")]
    pub active: String,
    /// Slots per group (default: the largest idle count and 10 more). An
    /// SHM group of `Config::shm_doorbell_slots` (32) slots or more has a
    /// doorbell: this compares the two at a few connections.
    #[arg(long)]
    pub slots: Option<usize>,
}

/// The server's name, and the rings' size (both sides must agree).
const SERVER: &str = "scalesrv";
const SHM_QUEUE: usize = 1 << 16;

/// Words of the server's shared page: polls, system calls (`u64::MAX`:
/// not counted), and a request flag the harness raises to have the server
/// report what it holds.
const W_POLLS: usize = 0;
const W_SYSCALLS: usize = 8;

/// The configuration of every process of the run: `slots` connections
/// per group.
fn config(shm_dir: &Path, slots: usize) -> Config {
    let mut c = ours::bench_config(shm_dir, true);
    c.tcp_conns_per_group = slots;
    c.shm_conns_per_group = slots;
    c.shm_queue_size = SHM_QUEUE;
    // The default TCP queue and receive buffer (the active client's
    // messages are small), so what the server holds per connection is
    // what a default server holds.
    let d = Config::default();
    c.tcp_queue_size = d.tcp_queue_size;
    c.tcp_recv_buf_init_size = d.tcp_recv_buf_init_size;
    c.tcp_recv_buf_max_size = d.tcp_recv_buf_max_size;
    c
}

/// Counts the calling thread's system calls, if the kernel lets us: a
/// `perf_event_open` counter on the `raw_syscalls:sys_enter` tracepoint.
struct SyscallCounter(Option<std::fs::File>);

impl SyscallCounter {
    fn new() -> SyscallCounter {
        SyscallCounter(Self::open().ok())
    }

    fn open() -> Result<std::fs::File, String> {
        use std::os::fd::FromRawFd;
        let id = [
            "/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
            "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .ok_or("tracefs is not mounted")?;
        let id: u64 = id.trim().parse().map_err(|e| format!("{e}"))?;
        // struct perf_event_attr (PERF_ATTR_SIZE_VER5, 112 bytes): type,
        // size, config; every flag 0 (enabled, counting, this thread only).
        let mut attr = [0u64; 14];
        attr[0] = 2 | (112 << 32); // PERF_TYPE_TRACEPOINT, size
        attr[1] = id;
        // SAFETY: a plain syscall; `attr` is a valid perf_event_attr of the
        // size it declares and lives through the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0,    // this thread
                -1,   // any CPU
                -1,   // no group
                8u64, // PERF_FLAG_FD_CLOEXEC
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        // SAFETY: a descriptor just returned to us, owned from here.
        Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
    }

    /// System calls so far (the read itself included), or `u64::MAX`.
    fn read(&self) -> u64 {
        use std::io::Read;
        let Some(mut f) = self.0.as_ref() else {
            return u64::MAX;
        };
        let mut b = [0u8; 8];
        match f.read(&mut b) {
            Ok(8) => u64::from_le_bytes(b),
            _ => u64::MAX,
        }
    }
}

/// The server peer: one TCP and one SHM group of `--count` slots each,
/// polled from this thread; every 4096 polls (or 10 ms) it publishes its
/// poll and system call counts in `DIR/server.page`.
pub fn peer_server(p: &PeerArgs) -> Result<(), String> {
    let dir = PathBuf::from(&p.target);
    let page = SharedPage::open(&dir.join("server.page"))?;
    let cfg = config(&p.shm_dir, p.count as usize);
    let mut server: Server =
        Server::new(SERVER, dir.join("files"), cfg).map_err(|e| e.to_string())?;
    server.listen("127.0.0.1:0").map_err(|e| e.to_string())?;
    println!("{}", server.local_addr().expect("listening"));
    let _ = std::io::stdout().flush();
    tcpshm_cli::util::catch_stop_signals();
    let counter = SyscallCounter::new();
    let (mut polls, mut t) = (0u64, now());
    let mut h = BenchEcho;
    let mut published = t;
    loop {
        // The clock every 16 polls (a fresh `now` for the TCP timers, and
        // little cost on the SHM path); the counts every 4096 polls, or
        // every 10 ms when polls are slow.
        if polls % 16 == 0 {
            t = now();
            if polls % 4096 == 0 || t - published > 10_000_000 {
                if tcpshm_cli::util::stopping() {
                    return Ok(());
                }
                page.word(W_POLLS).store(polls, Ordering::Relaxed);
                page.word(W_SYSCALLS)
                    .store(counter.read(), Ordering::Relaxed);
                published = t;
            }
        }
        server.poll(t, &mut h);
        polls += 1;
    }
}

/// The idle clients' names.
fn idle_name(k: usize) -> String {
    format!("idle{k}")
}

/// The idle peer: logs in `--count` clients over TCP (raw protocol-v1
/// peers) or, with `--shm`, shared memory (tcpshm clients), prints
/// "ready MS" (the milliseconds the logins took), then sends each a
/// heartbeat every second and reads what the server sends, until killed.
pub fn peer_idle(p: &PeerArgs) -> Result<(), String> {
    let n = p.count as usize;
    let t0 = Instant::now();
    if p.shm {
        let dir = p.dir.clone().ok_or("idle clients over shm: no --dir")?;
        let cfg = config(&p.shm_dir, 1);
        let mut clients = Vec::with_capacity(n);
        for k in 0..n {
            let name = idle_name(k);
            let mut c: Client = Client::new(&name, dir.join(&name), cfg.clone())
                .map_err(|e| format!("{name}: {e}"))?;
            connect(&mut c, Transport::Shm, &p.target).map_err(|e| format!("{name}: {e}"))?;
            clients.push(c);
        }
        println!("ready {}", t0.elapsed().as_millis());
        let _ = std::io::stdout().flush();
        let mut echoes = Echoes(0);
        loop {
            for c in &mut clients {
                // The TCP side only: heartbeats and timeouts.
                c.parts().0.poll(now(), &mut echoes);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let addr: std::net::SocketAddr = p.target.parse().map_err(|e| format!("{e}"))?;
    let mut socks = Vec::with_capacity(n);
    for k in 0..n {
        let l = tcpshm_v1::Login::new(&idle_name(k));
        let (peer, r) = tcpshm_v1::Peer::login(addr, &l, Duration::from_secs(10))
            .map_err(|e| format!("login {k}: {e}"))?;
        if r.status != tcpshm_v1::STATUS_OK {
            return Err(format!("login {k} refused: {}", r.error_text()));
        }
        peer.stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        socks.push(peer.stream);
    }
    println!("ready {}", t0.elapsed().as_millis());
    let _ = std::io::stdout().flush();
    let hb = tcpshm_v1::heartbeat(0);
    let mut sink = [0u8; 4096];
    loop {
        for s in &mut socks {
            use std::io::Read;
            let _ = s.write(&hb);
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Logs `c` in, retrying while the server still closes the name's last
/// session (a killed idle process's).
fn connect(c: &mut Client, t: Transport, addr: &str) -> Result<(), tcpshm::ConnectError> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        match c.connect(t, addr, 0) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the server holds: descriptors, mappings, resident KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Holds {
    fds: usize,
    maps: usize,
    rss_kib: u64,
}

fn holds(pid: u32) -> Holds {
    let count = |p: String| std::fs::read_dir(p).map_or(0, |d| d.count());
    let maps =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |m| m.lines().count());
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    Holds {
        fds: count(format!("/proc/{pid}/fd")),
        maps,
        rss_kib,
    }
}

/// The server's polls and system calls over `d` while nothing is sent.
fn idle_polls(page: &SharedPage, d: Duration) -> (u64, Option<u64>) {
    let read = || {
        (
            page.word(W_POLLS).load(Ordering::Relaxed),
            page.word(W_SYSCALLS).load(Ordering::Relaxed),
        )
    };
    let (p0, s0) = read();
    std::thread::sleep(d);
    let (p1, s1) = read();
    let calls = (s0 != u64::MAX && s1 != u64::MAX).then(|| s1.saturating_sub(s0));
    (p1.saturating_sub(p0), calls)
}

/// One idle count's results over one transport.
struct Row {
    transport: &'static str,
    idle: usize,
    lone: Vec<Round>,
    loaded: Vec<Round>,
    login_ms: Vec<u64>,
    /// Per round: system calls per poll, lone and loaded (when counted).
    calls_lone: Vec<f64>,
    calls_loaded: Vec<f64>,
    /// Per connection: what the server holds more when loaded.
    per_conn: (f64, f64, f64),
}

/// Percentiles of rounds merged: p50, p99, p99.9, mean (ns).
fn merged(rounds: &[Round]) -> (u64, u64, u64, f64) {
    rounds::merged_rtt(rounds)
}

pub fn run(a: Args) -> Result<(), String> {
    if !a.shm_dir.is_dir() {
        return Err(format!(
            "shared-memory directory {} does not exist (use --shm-dir)",
            a.shm_dir.display()
        ));
    }
    let transports: Vec<&'static str> = match a.transport.as_str() {
        "tcp" => vec!["tcp"],
        "shm" => vec!["shm"],
        "both" => vec!["tcp", "shm"],
        t => return Err(format!("--transport {t}: tcp, shm or both")),
    };
    let idle: Vec<usize> = a.idle.iter().copied().filter(|&n| n > 0).collect();
    let slots = a
        .slots
        .unwrap_or(idle.iter().copied().max().unwrap_or(0) + 10)
        .max(idle.iter().copied().max().unwrap_or(0) + 1);
    let pinned = peer::pin(0);
    let dir = std::env::temp_dir().join(format!("tcpshm-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _clean = Clean {
        dir: dir.clone(),
        shm_dir: a.shm_dir.clone(),
        idle: slots,
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    for t in &transports {
        for &n in &idle {
            rows.push(measure(&a, &dir, t, n, slots)?);
        }
    }
    report(&a, &rows, pinned, slots, started.elapsed())
}

/// The run's files and shm objects, removed on every exit path.
struct Clean {
    dir: PathBuf,
    shm_dir: PathBuf,
    idle: usize,
}

impl Drop for Clean {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut names: Vec<String> = (0..self.idle).map(idle_name).collect();
        names.push(ACTIVE.into());
        for n in names {
            for f in [format!("{n}_{SERVER}.shm"), format!("{SERVER}_{n}.shm")] {
                let _ = std::fs::remove_file(self.shm_dir.join(f));
            }
        }
        let _ = std::fs::remove_file(self.shm_dir.join(format!("{SERVER}.0.bell")));
    }
}

/// The active client's name.
const ACTIVE: &str = "active";

fn measure(a: &Args, dir: &Path, t: &'static str, n: usize, slots: usize) -> Result<Row, String> {
    let sdir = dir.join(format!("server-{t}-{n}"));
    std::fs::create_dir_all(&sdir).map_err(|e| e.to_string())?;
    let args = vec![
        "scale-server".into(),
        sdir.display().to_string(),
        "--count".into(),
        slots.to_string(),
        "--shm-dir".into(),
        a.shm_dir.display().to_string(),
    ];
    let mut server = Peer::spawn(&args)?;
    let addr = server.line();
    if addr.is_empty() {
        return Err("the scale server did not start".into());
    }
    let page = SharedPage::open(&sdir.join("server.page"))?;
    let shm = t == "shm";
    let mut active = Active::start(a, dir, t, n, &addr)?;
    let mut seq = 0;
    let mut row = Row {
        transport: t,
        idle: n,
        lone: Vec::new(),
        loaded: Vec::new(),
        login_ms: Vec::new(),
        calls_lone: Vec::new(),
        calls_loaded: Vec::new(),
        per_conn: (0.0, 0.0, 0.0),
    };
    let calls = |page: &SharedPage| {
        let (polls, calls) = idle_polls(page, Duration::from_millis(300));
        calls.map(|c| c as f64 / polls.max(1) as f64)
    };
    let deadline = Instant::now() + Duration::from_secs(1800);
    row.lone.push(active.round(a.per_round, &mut seq)?);
    for _ in 0..a.rounds.max(1) {
        if Instant::now() > deadline {
            return Err("scale: still running after 30 minutes, stopped".into());
        }
        if let Some(x) = calls(&page) {
            row.calls_lone.push(x);
        }
        let before = holds(server.pid());
        let mut idle_args = vec![
            "idle-clients".into(),
            addr.clone(),
            "--count".into(),
            n.to_string(),
            "--shm-dir".into(),
            a.shm_dir.display().to_string(),
            "--dir".into(),
            dir.join(format!("idle-{t}-{n}")).display().to_string(),
        ];
        if shm {
            idle_args.push("--shm".into());
        }
        let mut idlers = Peer::spawn(&idle_args)?;
        let ready = idlers.line();
        let ms = ready
            .strip_prefix("ready ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the idle clients did not log in: {ready:?}"))?;
        row.login_ms.push(ms);
        // Let the server finish the logins and settle.
        std::thread::sleep(Duration::from_millis(200));
        row.loaded.push(active.round(a.per_round, &mut seq)?);
        if let Some(x) = calls(&page) {
            row.calls_loaded.push(x);
        }
        if row.loaded.len() == 1 {
            // The first time these names log in: what the server opens
            // for them (their slots keep their files across rounds).
            let after = holds(server.pid());
            let per = |a: f64, b: f64| (b - a) / n as f64;
            row.per_conn = (
                per(before.fds as f64, after.fds as f64),
                per(before.maps as f64, after.maps as f64),
                per(before.rss_kib as f64, after.rss_kib as f64),
            );
        }
        drop(idlers); // killed: its connections close
                      // The server sees them go (EOF) at its next polls.
        std::thread::sleep(Duration::from_millis(300));
        row.lone.push(active.round(a.per_round, &mut seq)?);
    }
    drop(server);
    Ok(row)
}

/// The active client of a run.
enum Active {
    Ours(Box<Ours>),
    V1(tcpshm_v1::Peer),
}

impl Active {
    fn start(a: &Args, dir: &Path, t: &str, n: usize, addr: &str) -> Result<Active, String> {
        let shm = t == "shm";
        if a.active == "v1" && !shm {
            let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            let l = tcpshm_v1::Login::new(ACTIVE);
            let (p, r) = tcpshm_v1::Peer::login(addr, &l, Duration::from_secs(10))
                .map_err(|e| format!("active v1 peer: {e}"))?;
            if r.status != tcpshm_v1::STATUS_OK {
                return Err(format!("active v1 peer refused: {}", r.error_text()));
            }
            p.stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            return Ok(Active::V1(p));
        }
        let mut cfg = config(&a.shm_dir, 1);
        match a.active.as_str() {
            "ours" => {}
            // Over shared memory, as a C++ client: it rings no bell.
            "v1" => cfg.shm_doorbell_slots = usize::MAX,
            x => return Err(format!("--active {x}: ours or v1")),
        }
        let mut c: Client = Client::new(ACTIVE, dir.join(format!("active-{t}-{n}")), cfg)
            .map_err(|e| e.to_string())?;
        let transport = if shm { Transport::Shm } else { Transport::Tcp };
        connect(&mut c, transport, addr).map_err(|e| format!("active client: {e}"))?;
        Ok(Active::Ours(Box::new(Ours::new(c, shm))))
    }

    fn round(&mut self, n: u32, seq: &mut u32) -> Result<Round, String> {
        let p = match self {
            Active::Ours(o) => return ours::our_round(o, n, seq),
            Active::V1(p) => p,
        };
        // A heartbeat first: the session may have been quiet while the
        // idle clients logged in.
        p.heartbeat().map_err(|e| format!("active v1 peer: {e}"))?;
        let payload = [7u8; 256];
        rounds::round(n, |_| {
            let size = rounds::rtt_size(*seq);
            *seq = seq.wrapping_add(1);
            let t0 = Instant::now();
            p.send(1, &payload[..size])
                .map_err(|e| format!("active v1 peer: {e}"))?;
            loop {
                match p.recv() {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("active v1 peer: {e}")),
                }
            }
            Ok((t0.elapsed().as_nanos() as u64, size))
        })
    }
}

fn report(
    a: &Args,
    rows: &[Row],
    pinned: bool,
    slots: usize,
    took: Duration,
) -> Result<(), String> {
    println!(
        "tcpshm-bench scale: {} loaded rounds per count, {} round trips each, between lone rounds; \
         groups of {slots} slots; active client ({}) on CPU 0{}, server on CPU 1; took {:.0} s",
        a.rounds,
        a.per_round,
        if a.active == "v1" { "a v1 peer, as a C++ one" } else { "tcpshm" },
        if pinned { "" } else { " (not pinned)" },
        took.as_secs_f64()
    );
    println!(
        "  {:<4} {:>6}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}  {:>12} {:>12}  {:>13}  {:>8}",
        "",
        "idle",
        "lone p50",
        "p99",
        "mean",
        "load p50",
        "p99",
        "mean",
        "p50 ratio",
        "p99 ratio",
        "calls/poll",
        "login"
    );
    let mut json = Vec::new();
    for r in rows {
        let (l50, l99, l999, lmean) = merged(&r.lone);
        let (d50, d99, d999, dmean) = merged(&r.loaded);
        // Each loaded round against the lone rounds on either side.
        let ratio = |q: f64| {
            let v: Vec<f64> = r
                .loaded
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let around = (r.lone[i].quantile(q) + r.lone[i + 1].quantile(q)) / 2.0;
                    x.quantile(q) / around.max(1.0)
                })
                .collect();
            rounds::spread(&v)
        };
        let (r50, r99) = (ratio(0.5), ratio(0.99));
        let calls = |v: &[f64]| {
            if v.is_empty() {
                "n/a".to_string()
            } else {
                format!("{:.3}", rounds::spread(v).median)
            }
        };
        let login = rounds::spread(&r.login_ms.iter().map(|&m| m as f64).collect::<Vec<_>>());
        println!(
            "  {:<4} {:>6}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}  {:>5.2}x {:>5.2}x {:>6.2}x {:>5.2}x  {:>6}/{:<6}  {:>6.0}ms",
            r.transport,
            r.idle,
            fmt_ns(l50 as f64),
            fmt_ns(l99 as f64),
            fmt_ns(lmean),
            fmt_ns(d50 as f64),
            fmt_ns(d99 as f64),
            fmt_ns(dmean),
            r50.median,
            r50.max,
            r99.median,
            r99.max,
            calls(&r.calls_lone),
            calls(&r.calls_loaded),
            login.median
        );
        json.push(format!(
            "{{\"transport\":\"{}\",\"idle\":{},\"lone\":{{\"p50_ns\":{l50},\"p99_ns\":{l99},\"p999_ns\":{l999},\"mean_ns\":{lmean:.1}}},\
             \"loaded\":{{\"p50_ns\":{d50},\"p99_ns\":{d99},\"p999_ns\":{d999},\"mean_ns\":{dmean:.1}}},\
             \"p50_ratio\":{},\"p99_ratio\":{},\"syscalls_per_idle_poll\":{{\"lone\":{},\"loaded\":{}}},\
             \"login_ms\":{},\"server_per_connection\":{{\"fds\":{:.2},\"mappings\":{:.2},\"rss_kib\":{:.1}}}}}",
            r.transport,
            r.idle,
            r50.json(),
            r99.json(),
            if r.calls_lone.is_empty() { "null".into() } else { rounds::spread(&r.calls_lone).json() },
            if r.calls_loaded.is_empty() { "null".into() } else { rounds::spread(&r.calls_loaded).json() },
            login.json(),
            r.per_conn.0,
            r.per_conn.1,
            r.per_conn.2
        ));
    }
    println!("  (ratios: median and max over the loaded rounds; calls/poll: server system calls per poll while idle, lone/loaded)");
    for r in rows {
        println!(
            "  server holds per {} connection: {:.2} descriptors, {:.2} mappings, {:.1} KiB resident",
            r.transport, r.per_conn.0, r.per_conn.1, r.per_conn.2
        );
    }
    if let Some(p) = &a.json {
        let body = format!(
            "{{ \"schema\": 1, \"active\": \"{}\", \"rounds\": {}, \"per_round\": {}, \"pinned\": {pinned}, \"slots\": {slots}, \"rows\": [{}] }}\n",
            a.active,
            a.rounds,
            a.per_round,
            json.join(", ")
        );
        std::fs::write(p, body).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
