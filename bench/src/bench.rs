//! `tcpshm-bench bench`: latency and throughput between two processes on
//! this host, against baselines measured in the same run, so the results
//! are ratios that survive a noisy machine.
//!
//! The parent (pinned to the first CPU) and a `peer` child (pinned to
//! the second, where there is one) measure:
//! - the RTT of a bare cache-line ping-pong through a shared mapping (the
//!   hardware floor for shared memory);
//! - the RTT of a bare non-blocking TCP ping-pong over loopback, with the
//!   same frame sizes and the same busy polling (the floor for TCP);
//! - our RTT over SHM and over TCP: one message in flight, payloads drawn
//!   from {16, 36, 68, 200} bytes (the C++ library's published method);
//! - our streaming throughput for 16, 64, 256 and 1024-byte payloads, over
//!   SHM and over TCP with `push_more` batching.
//!
//! This VM's timing drifts (the same cache-line ping-pong has read 49 ns
//! at one moment and 989 ns at another), so only ratios measured side by
//! side mean anything. Each floor and the path measured against it run in
//! adjacent short rounds (`--rounds`, alternating which goes first), with
//! the processes that are not measured paused (SIGSTOP) so they take no
//! CPU; the report gives the median of the per-round ratios with their
//! spread, the average RTT (total time / round trips, the C++ library's
//! method) beside the percentiles, and a warning when the floor itself
//! moved more than 2x between rounds. The JSON schema is in
//! `docs/benchmarks.md`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tcpshm::{Server, ServerParts};
use tcpshm_cli::util::{fmt_ns, now};

use crate::ours::{
    bench_config, our_client, our_round, our_tput, serve, spawn_server, BenchEcho, CLIENT_SHM,
    CLIENT_SHM_V1, SERVER, SERVER_V1,
};
use crate::peer::{online_cpus, pin, Peer, PeerArgs};
use crate::rounds::{median, ratios, round, rtt_size, spread, Round, Rtt, Series, Spread};
use crate::shared_page::SharedPage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Round trips per RTT measurement, split over the rounds.
    #[arg(long, default_value_t = 200_000)]
    pub rtt_count: u32,
    /// Messages per throughput measurement.
    #[arg(long, default_value_t = 500_000)]
    pub tput_count: u32,
    /// Interleaved rounds per floor/path pair (floor, ours, ours, floor,
    /// ...); throughput is measured this many times over, up to 5.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// A smoke run: a few thousand messages, 4 rounds (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    /// Where to write the latency-percentile plot (SVG).
    #[arg(long, default_value = "bench.svg")]
    pub svg: PathBuf,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
}

/// Payload sizes of the throughput measurements.
const TPUT_SIZES: [usize; 4] = [16, 64, 256, 1024];

/// A latency-percentile plot: x is the percentile on a "nines" scale,
/// y the round-trip time on a log scale.
fn svg(series: &[(&str, &Rtt, &str)]) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 440.0, 70.0, 50.0, 30.0, 170.0);
    let x_of = |q: f64| {
        left + (-(1.0 - q).log10() - std::f64::consts::LOG10_2) / (5.0 - std::f64::consts::LOG10_2)
            * (w - left - right)
    };
    let ys: Vec<u64> = series
        .iter()
        .flat_map(|s| s.1.curve.iter().map(|p| p.1))
        .collect();
    let lo = (ys.iter().copied().min().unwrap_or(1).max(1) as f64)
        .log10()
        .floor();
    let hi = (ys.iter().copied().max().unwrap_or(10).max(10) as f64)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y_of = |ns: u64| top + (hi - (ns.max(1) as f64).log10()) / (hi - lo) * (h - top - bottom);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">tcpshm round-trip time by percentile (medians of runs)</text>\n"
    );
    for e in lo as i32..=hi as i32 {
        let y = y_of(10u64.pow(e as u32));
        out += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0,
            fmt_ns(10f64.powi(e))
        );
    }
    for (q, label) in [
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (0.99999, "99.999%"),
    ] {
        let x = x_of(q);
        out += &format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            h - bottom,
            h - bottom + 18.0
        );
    }
    for (i, (name, r, color)) in series.iter().enumerate() {
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|&(q, ns)| format!("{:.1},{:.1}", x_of(q), y_of(ns)))
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
            pts.join(" "),
            w - right + 10.0,
            top + 20.0 + 18.0 * i as f64
        );
    }
    out += "</svg>\n";
    out
}

// ---------------------------------------------------------------- baselines

/// The cache-line ping-pong: the parent stores k in line A, the peer
/// answers k in line B (two lines of a shared mapping, atomics in both
/// processes).
struct CacheLine {
    map: SharedPage,
    path: std::path::PathBuf,
    peer: Peer,
    k: u64,
}

impl CacheLine {
    fn start(a: &Args, total: u64) -> Result<CacheLine, String> {
        let path = a
            .shm_dir
            .join(format!("tcpshm-bench-cl-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let map = SharedPage::open(&path)?;
        let mut peer = Peer::spawn(&[
            "cacheline".into(),
            path.display().to_string(),
            "--count".into(),
            total.to_string(),
        ])?;
        let _ = peer.line(); // ready
        peer.pause();
        Ok(CacheLine {
            map,
            path,
            peer,
            k: 0,
        })
    }

    fn round(&mut self, n: u32) -> Result<Round, String> {
        self.peer.resume();
        let (a_word, b_word) = (self.map.word(0), self.map.word(64));
        let k = &mut self.k;
        let r = round(n, |_| {
            *k += 1;
            let t0 = Instant::now();
            // Release/Acquire: the ping-pong's own ordering, as a queue needs.
            a_word.store(*k, Ordering::Release);
            while b_word.load(Ordering::Acquire) != *k {
                std::hint::spin_loop();
            }
            Ok((t0.elapsed().as_nanos() as u64, 0))
        });
        self.peer.pause();
        r
    }
}

impl Drop for CacheLine {
    fn drop(&mut self) {
        self.peer.resume(); // so the kill in Peer's drop is taken
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn peer_cacheline(p: &PeerArgs) -> Result<(), String> {
    let map = SharedPage::open(std::path::Path::new(&p.target))?;
    let (a_word, b_word) = (map.word(0), map.word(64));
    println!("ready");
    let _ = std::io::stdout().flush();
    for k in 1..=p.count {
        while a_word.load(Ordering::Acquire) != k {
            std::hint::spin_loop();
        }
        b_word.store(k, Ordering::Release);
    }
    Ok(())
}

fn nonblocking_read_exact(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn nonblocking_write_all(s: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        match s.write(&buf[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bare non-blocking TCP ping-pong: frames of 8 + payload bytes (padded
/// to 8, as ours), the peer echoing them with busy polling.
struct RawTcp {
    sock: TcpStream,
    peer: Peer,
    i: u32,
}

impl RawTcp {
    fn start(total: u64) -> Result<RawTcp, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let peer = Peer::spawn(&[
            "rawtcp".into(),
            addr.to_string(),
            "--count".into(),
            total.to_string(),
        ])?;
        let (sock, _) = l.accept().map_err(|e| e.to_string())?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        peer.pause();
        Ok(RawTcp { sock, peer, i: 0 })
    }

    fn round(&mut self, n: u32) -> Result<Round, String> {
        self.peer.resume();
        let mut buf = vec![0u8; 256];
        let (sock, i) = (&mut self.sock, &mut self.i);
        let r = round(n, |_| {
            let len = (8 + rtt_size(*i) + 7) & !7;
            *i = i.wrapping_add(1);
            buf[..8].copy_from_slice(&(len as u64).to_le_bytes());
            let t0 = Instant::now();
            nonblocking_write_all(sock, &buf[..len]).map_err(|e| e.to_string())?;
            nonblocking_read_exact(sock, &mut buf[..len]).map_err(|e| e.to_string())?;
            Ok((t0.elapsed().as_nanos() as u64, 0))
        });
        self.peer.pause();
        r
    }
}

impl Drop for RawTcp {
    fn drop(&mut self) {
        self.peer.resume();
    }
}

pub(crate) fn peer_rawtcp(p: &PeerArgs) -> Result<(), String> {
    let mut s = TcpStream::connect(&p.target).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256];
    for _ in 0..p.count {
        nonblocking_read_exact(&mut s, &mut buf[..8]).map_err(|e| e.to_string())?;
        let len = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
        nonblocking_read_exact(&mut s, &mut buf[8..len]).map_err(|e| e.to_string())?;
        nonblocking_write_all(&mut s, &buf[..len]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ---------------------------------------------------------------- empty polls

/// Nanoseconds per call of `f` over `n` calls (after n/10 to warm up);
/// generic, so the call is inlined as an application's loop would have it.
fn time_calls<T>(n: u32, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..n / 10 {
        std::hint::black_box(f());
    }
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    t0.elapsed().as_nanos() as f64 / f64::from(n.max(1))
}

/// Nanoseconds per empty call of a group's poll and of the control part,
/// in this process: a server with one idle SHM client and one idle TCP
/// client, each part polled a million times in a row.
struct EmptyPolls {
    shm_ns: f64,
    tcp_ns: f64,
    ctl_ns: f64,
}

fn empty_polls(
    dir: &std::path::Path,
    shm_dir: &std::path::Path,
    n: u32,
) -> Result<EmptyPolls, String> {
    let mut server: Server =
        Server::new("bsrv", dir.join("ep-server"), bench_config(shm_dir, true))
            .map_err(|e| e.to_string())?;
    server.listen("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = server.local_addr().expect("listening").to_string();
    let connected = std::sync::atomic::AtomicBool::new(false);
    let clients = std::thread::scope(|s| {
        let th = s.spawn(|| {
            serve(
                &mut server,
                &mut BenchEcho,
                || connected.load(Ordering::Relaxed),
                tcpshm::Idle::busy(),
            )
        });
        let shm = our_client(&dir.join("ep"), &addr, true, false, shm_dir);
        let tcp = our_client(&dir.join("ep"), &addr, false, false, shm_dir);
        // Let the groups take the logins before the thread stops.
        std::thread::sleep(std::time::Duration::from_millis(50));
        connected.store(true, Ordering::Relaxed);
        let _ = th.join();
        shm.and_then(|a| tcp.map(|b| (a, b)))
    })?;
    let ServerParts {
        control, tcp, shm, ..
    } = server.parts();
    let mut h = BenchEcho;
    let t = now();
    let shm_ns = time_calls(n, || shm[0].poll(t, &mut h));
    // These two make a syscall each (a read, an accept): fewer calls.
    let tcp_ns = time_calls(n / 20, || tcp[0].poll(now(), &mut h));
    let ctl_ns = time_calls(n / 20, || control.poll(now(), &mut h));
    drop(clients);
    for (s, r) in [("bsrv", "bshm"), ("bshm", "bsrv")] {
        let _ = std::fs::remove_file(shm_dir.join(format!("{s}_{r}.shm")));
    }
    Ok(EmptyPolls {
        shm_ns,
        tcp_ns,
        ctl_ns,
    })
}

// ---------------------------------------------------------------- report

/// A floor and our path (over SHM also the v1 ring), measured in
/// interleaved rounds.
struct Pair {
    floor: Series,
    /// SHM with the fast path off on both sides; empty for TCP.
    v1: Series,
    ours: Series,
}

impl Pair {
    fn p50_ratio(&self) -> Spread {
        spread(&ratios(&self.ours.p50s(), &self.floor.p50s()))
    }
    fn avg_ratio(&self) -> Spread {
        spread(&ratios(&self.ours.avgs(), &self.floor.avgs()))
    }
    fn floor_drift(&self) -> f64 {
        let p = spread(&self.floor.p50s());
        p.max / p.min.max(1.0)
    }
    fn v1_p50_ratio(&self) -> Spread {
        spread(&ratios(&self.v1.p50s(), &self.floor.p50s()))
    }
    /// Per-round p50 of one payload class of `s` over the floor's p50.
    fn sized_ratio(&self, s: &Series, p50s: fn(&Series) -> Vec<f64>) -> Spread {
        spread(&ratios(&p50s(s), &self.floor.p50s()))
    }
    /// Per-round p50 of the fast path over that of the v1 ring.
    fn fast_over_v1(&self) -> Spread {
        spread(&ratios(&self.ours.p50s(), &self.v1.p50s()))
    }
}

/// `label median [p25-p75] (min-max)` with ratios as `1.23x`.
fn fmt_spread(label: &str, s: &Spread) -> String {
    format!(
        "{label} {:.2}x [{:.2}-{:.2}] ({:.2}-{:.2})",
        s.median, s.p25, s.p75, s.min, s.max
    )
    .trim_start()
    .to_string()
}

/// Runs `rounds` rounds of `floor`, `ours` and (if given) `v1`, rotating
/// which goes first so a drift in time hits all alike.
fn interleave(
    rounds: usize,
    mut floor: impl FnMut() -> Result<Round, String>,
    mut ours: impl FnMut() -> Result<Round, String>,
    mut v1: Option<&mut dyn FnMut() -> Result<Round, String>>,
) -> Result<Pair, String> {
    let mut p = Pair {
        floor: Series::new(),
        v1: Series::new(),
        ours: Series::new(),
    };
    let n = if v1.is_some() { 3 } else { 2 };
    for r in 0..rounds {
        for k in 0..n {
            match (r + k) % n {
                0 => p.floor.rounds.push(floor()?),
                1 => p.ours.rounds.push(ours()?),
                _ => {
                    if let Some(f) = v1.as_mut() {
                        p.v1.rounds.push(f()?);
                    }
                }
            }
        }
    }
    Ok(p)
}

pub fn run(mut a: Args) -> Result<(), String> {
    if a.quick {
        a.rtt_count = a.rtt_count.min(3000);
        a.tput_count = a.tput_count.min(5000);
        a.rounds = a.rounds.min(4);
    }
    a.rounds = a.rounds.max(1);
    if !a.shm_dir.is_dir() {
        return Err(format!(
            "shared-memory directory {} does not exist",
            a.shm_dir.display()
        ));
    }
    let cpus = online_cpus();
    let pinned = pin(0);
    let per_round = (a.rtt_count / a.rounds as u32).max(10);
    println!(
        "tcpshm bench: {} rounds of {per_round} round trips per pair, {} streamed messages per throughput run; {} CPUs{}",
        a.rounds,
        a.tput_count,
        cpus,
        if pinned { ", parent on CPU 0, peers on CPU 1" } else { ", not pinned" }
    );
    let dir = std::env::temp_dir().join(format!("tcpshm-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let res = measure(&a, per_round, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    for (s, r) in [(SERVER, CLIENT_SHM), (SERVER_V1, CLIENT_SHM_V1)] {
        let _ = std::fs::remove_file(a.shm_dir.join(format!("{s}_{r}.shm")));
        let _ = std::fs::remove_file(a.shm_dir.join(format!("{r}_{s}.shm")));
    }
    let (shm, tcp, tput, empty) = res?;
    report(&a, cpus, pinned, per_round, &shm, &tcp, &tput, &empty)
}

/// Per payload size: messages per second over SHM (fast path), SHM (v1
/// ring) and TCP.
type Tput = Vec<(usize, f64, f64, f64)>;

fn measure(
    a: &Args,
    per_round: u32,
    dir: &std::path::Path,
) -> Result<(Pair, Pair, Tput, EmptyPolls), String> {
    let total = u64::from(per_round) * a.rounds as u64;
    let (mut server, addr) = spawn_server(&dir.join("server"), &a.shm_dir, false, None)?;
    let (server_v1, addr_v1) = spawn_server(&dir.join("server-v1"), &a.shm_dir, true, None)?;
    // SHM (fast path, and v1 ring) against the cache-line floor. One
    // transport at a time: a live TCP connection would add a read syscall
    // to every loop of the peer.
    println!("  SHM (fast path and v1 ring) and the cache-line floor...");
    let mut seq = 0;
    let mut shm_c = our_client(dir, &addr, true, false, &a.shm_dir)?;
    let mut v1_c = our_client(dir, &addr_v1, true, true, &a.shm_dir)?;
    let mut cl = CacheLine::start(a, total)?;
    server.pause();
    server_v1.pause();
    let mut v1_seq = 0;
    let mut v1_round = || server_v1.running(|| our_round(&mut v1_c, per_round, &mut v1_seq));
    let shm = interleave(
        a.rounds,
        || cl.round(per_round),
        || server.running(|| our_round(&mut shm_c, per_round, &mut seq)),
        Some(&mut v1_round),
    )?;
    drop(cl);
    if !shm_c.client.connection().shm_fast_path() || v1_c.client.connection().shm_fast_path() {
        println!("  WARNING: the SHM client is not on the path it measures (fast path on: {}, v1 client: {})",
            shm_c.client.connection().shm_fast_path(), v1_c.client.connection().shm_fast_path());
    }
    // Streaming, one server running at a time: the other, busy-polling on
    // the same CPU, would take half of it from the reader measured.
    println!("  streaming...");
    let tput_runs = a.rounds.min(5);
    let mut shm_tput = vec![Vec::new(); TPUT_SIZES.len()];
    let mut v1_tput = vec![Vec::new(); TPUT_SIZES.len()];
    for _ in 0..tput_runs {
        for (i, &size) in TPUT_SIZES.iter().enumerate() {
            shm_tput[i].push(server.running(|| our_tput(&mut shm_c, size, a.tput_count))?);
            v1_tput[i].push(server_v1.running(|| our_tput(&mut v1_c, size, a.tput_count))?);
        }
    }
    server.resume();
    server_v1.resume();
    shm_c.client.stop();
    v1_c.client.stop();
    drop(server_v1);
    // TCP against a raw TCP ping-pong.
    println!("  TCP and the raw TCP floor...");
    let mut tcp_c = our_client(dir, &addr, false, false, &a.shm_dir)?;
    let mut raw = RawTcp::start(total)?;
    server.pause();
    let tcp = interleave(
        a.rounds,
        || raw.round(per_round),
        || server.running(|| our_round(&mut tcp_c, per_round, &mut seq)),
        None,
    )?;
    drop(raw);
    server.resume();
    let mut tcp_tput = vec![Vec::new(); TPUT_SIZES.len()];
    for _ in 0..tput_runs {
        for (i, &size) in TPUT_SIZES.iter().enumerate() {
            tcp_tput[i].push(our_tput(&mut tcp_c, size, a.tput_count)?);
        }
    }
    tcp_c.client.stop();
    server.stop();
    let tput = TPUT_SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            (
                size,
                median(&shm_tput[i]),
                median(&v1_tput[i]),
                median(&tcp_tput[i]),
            )
        })
        .collect();
    println!("  empty polls...");
    let empty = empty_polls(dir, &a.shm_dir, if a.quick { 100_000 } else { 2_000_000 })?;
    Ok((shm, tcp, tput, empty))
}

#[allow(clippy::too_many_arguments)]
fn report(
    a: &Args,
    cpus: usize,
    pinned: bool,
    per_round: u32,
    shm: &Pair,
    tcp: &Pair,
    tput: &Tput,
    empty: &EmptyPolls,
) -> Result<(), String> {
    let (cl, sh, rt, tc) = (
        shm.floor.merged(),
        shm.ours.merged(),
        tcp.floor.merged(),
        tcp.ours.merged(),
    );
    println!();
    println!(
        "  RTT, one message in flight, payload 16/36/68/200 B; {} interleaved rounds of {per_round}:",
        a.rounds
    );
    println!(
        "  {:<22} {:>10} {:>10} {:>10} {:>10} {:>10}  per-round ratio to the floor: median [p25-p75] (min-max)",
        "", "p50", "p99", "p99.9", "max", "avg RTT"
    );
    let row = |name: &str, r: &Rtt, avg: f64, ratio: String| {
        println!(
            "  {:<22} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            name,
            fmt_ns(r.p50 as f64),
            fmt_ns(r.p99 as f64),
            fmt_ns(r.p999 as f64),
            fmt_ns(r.max as f64),
            fmt_ns(avg),
            ratio
        )
    };
    let fmt_ratio = |p: &Pair| {
        let (m, a) = (p.p50_ratio(), p.avg_ratio());
        format!(
            "p50 {:.2}x [{:.2}-{:.2}] ({:.2}-{:.2}), avg {:.2}x [{:.2}-{:.2}]",
            m.median, m.p25, m.p75, m.min, m.max, a.median, a.p25, a.p75
        )
    };
    let avg = |s: &Series| spread(&s.avgs()).median;
    row("cache-line ping-pong", &cl, avg(&shm.floor), "floor".into());
    row("tcpshm SHM", &sh, avg(&shm.ours), fmt_ratio(shm));
    row(
        "tcpshm SHM, v1 ring",
        &shm.v1.merged(),
        avg(&shm.v1),
        fmt_spread("p50", &shm.v1_p50_ratio()),
    );
    row("raw TCP ping-pong", &rt, avg(&tcp.floor), "floor".into());
    row("tcpshm TCP", &tc, avg(&tcp.ours), fmt_ratio(tcp));
    for (name, p) in [("cache-line", shm), ("raw TCP", tcp)] {
        let d = p.floor_drift();
        if d > 2.0 {
            println!(
                "  WARNING: the {name} floor moved {d:.1}x between rounds: this machine drifts; trust the per-round ratios, not the absolute times"
            );
        }
    }
    println!("  SHM p50 by payload, per-round ratio to the floor: median [p25-p75] (min-max):");
    for (name, f, v) in [
        (
            "16/36 B (one block)",
            shm.sized_ratio(&shm.ours, Series::one_block_p50s),
            shm.sized_ratio(&shm.v1, Series::one_block_p50s),
        ),
        (
            "200 B (four blocks)",
            shm.sized_ratio(&shm.ours, Series::b200_p50s),
            shm.sized_ratio(&shm.v1, Series::b200_p50s),
        ),
    ] {
        println!(
            "  {name:<22} fast path {}; v1 ring {}",
            fmt_spread("", &f),
            fmt_spread("", &v)
        );
    }
    let fv = shm.fast_over_v1();
    println!(
        "  fast path / v1 ring, per-round p50: {}",
        fmt_spread("", &fv)
    );
    let shm_vs_tcp = tc.p50 as f64 / sh.p50.max(1) as f64;
    println!("  SHM p50 is {shm_vs_tcp:.1}x lower than TCP p50");
    println!();
    println!(
        "  Empty polls (one idle client each): poll_shm {:.1} ns, poll_tcp {:.0} ns, poll_ctl {:.0} ns",
        empty.shm_ns, empty.tcp_ns, empty.ctl_ns
    );
    println!();
    println!(
        "  Streaming throughput (medians of {} runs):",
        a.rounds.min(5)
    );
    println!(
        "  {:<10} {:>14} {:>11} {:>14} {:>14} {:>11} {:>10} {:>10}",
        "payload",
        "SHM msg/s",
        "SHM MB/s",
        "SHM v1 msg/s",
        "TCP msg/s",
        "TCP MB/s",
        "SHM/TCP",
        "SHM/v1"
    );
    let mut tput_json = Vec::new();
    for &(size, s, v, t) in tput {
        println!(
            "  {:<10} {:>14.0} {:>11.1} {:>14.0} {:>14.0} {:>11.1} {:>9.2}x {:>9.2}x",
            format!("{size} B"),
            s,
            s * size as f64 / 1e6,
            v,
            t,
            t * size as f64 / 1e6,
            s / t.max(1.0),
            s / v.max(1.0)
        );
        tput_json.push(format!(
            "{{\"payload\":{size},\"shm_msgs_per_s\":{s:.0},\"shm_v1_msgs_per_s\":{v:.0},\"tcp_msgs_per_s\":{t:.0}}}"
        ));
    }
    let pair_json = |p: &Pair| {
        let v1 = if p.v1.rounds.is_empty() {
            String::new()
        } else {
            format!(
                "\"v1\":{},\"v1_avg_ns\":{},\"v1_p50_ratio\":{},\"fast_over_v1_p50\":{},\"by_payload\":{{\"one_block\":{{\"p50_ratio\":{},\"v1_p50_ratio\":{}}},\"b200\":{{\"p50_ratio\":{},\"v1_p50_ratio\":{}}}}},",
                p.v1.merged().json(),
                spread(&p.v1.avgs()).json(),
                p.v1_p50_ratio().json(),
                p.fast_over_v1().json(),
                p.sized_ratio(&p.ours, Series::one_block_p50s).json(),
                p.sized_ratio(&p.v1, Series::one_block_p50s).json(),
                p.sized_ratio(&p.ours, Series::b200_p50s).json(),
                p.sized_ratio(&p.v1, Series::b200_p50s).json(),
            )
        };
        format!(
            "{{{v1}\"floor\":{},\"ours\":{},\"floor_avg_ns\":{},\"ours_avg_ns\":{},\"p50_ratio\":{},\"avg_ratio\":{},\"floor_drift\":{:.2},\"rounds\":[{}]}}",
            p.floor.merged().json(),
            p.ours.merged().json(),
            spread(&p.floor.avgs()).json(),
            spread(&p.ours.avgs()).json(),
            p.p50_ratio().json(),
            p.avg_ratio().json(),
            p.floor_drift(),
            p.floor
                .rounds
                .iter()
                .zip(&p.ours.rounds)
                .map(|(f, o)| format!(
                    "{{\"floor_p50_ns\":{},\"ours_p50_ns\":{},\"floor_avg_ns\":{:.1},\"ours_avg_ns\":{:.1}}}",
                    f.hist.value_at_quantile(0.5),
                    o.hist.value_at_quantile(0.5),
                    f.avg_ns,
                    o.avg_ns
                ))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let json = format!(
        "{{\"schema\":3,\"cpus\":{cpus},\"pinned\":{pinned},\"rounds\":{},\"round_trips_per_round\":{per_round},\"tput_count\":{},\"shm\":{},\"tcp\":{},\"tcp_p50_over_shm_p50\":{shm_vs_tcp:.2},\"empty_poll_ns\":{{\"shm\":{:.2},\"tcp\":{:.1},\"ctl\":{:.1}}},\"throughput\":[{}]}}\n",
        a.rounds,
        a.tput_count,
        pair_json(shm),
        pair_json(tcp),
        empty.shm_ns,
        empty.tcp_ns,
        empty.ctl_ns,
        tput_json.join(",")
    );
    std::fs::write(&a.json, json).map_err(|e| format!("cannot write {}: {e}", a.json.display()))?;
    let plot = svg(&[
        ("cache-line floor", &cl, "#999999"),
        ("tcpshm SHM", &sh, "#d62728"),
        ("raw TCP floor", &rt, "#1f77b4"),
        ("tcpshm TCP", &tc, "#2ca02c"),
    ]);
    std::fs::write(&a.svg, plot).map_err(|e| format!("cannot write {}: {e}", a.svg.display()))?;
    println!();
    println!(
        "  results written to {} and {}",
        a.json.display(),
        a.svg.display()
    );
    Ok(())
}
