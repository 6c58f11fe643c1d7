//! `tcpshm bench`: latency and throughput between two processes on this
//! host, against baselines measured in the same run, so the results are
//! ratios that survive a noisy machine.
//!
//! The parent (pinned to the first CPU) and a `bench-peer` child (pinned to
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
//! Each measurement runs `--runs` times; the table shows medians of the
//! runs, the JSON file every run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use hdrhistogram::Histogram;
use tcpshm::sys::{MapOptions, Mapping};
use tcpshm::wire::{Login, LoginResponse};
use tcpshm::{
    Accept, Client, ClientHandler, Config, ConnId, ConnTx, Received, Server, ServerHandler,
};

use crate::util::{fmt_ns, now};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Round trips per RTT measurement.
    #[arg(long, default_value_t = 200_000)]
    pub rtt_count: u32,
    /// Messages per throughput measurement.
    #[arg(long, default_value_t = 500_000)]
    pub tput_count: u32,
    /// Repetitions of every measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// A smoke run: a few thousand messages, one run (for CI).
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

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// cacheline FILE | rawtcp ADDR | server DIR
    pub mode: String,
    pub target: String,
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// Payload sizes of the RTT measurements (the C++ library's method).
const RTT_SIZES: [usize; 4] = [16, 36, 68, 200];
/// Payload sizes of the throughput measurements.
const TPUT_SIZES: [usize; 4] = [16, 64, 256, 1024];
/// Messages of this type are consumed without an echo (throughput).
const SINK_TYPE: u16 = 100;

/// Pins the calling thread to CPU `cpu` if the machine has it.
pub fn pin(cpu: usize) -> bool {
    let n = online_cpus();
    if n < 2 {
        return false;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (cpu < n
    // <= CPU_SETSIZE on the machines we run on, checked below); the call
    // only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPUs online (not the affinity mask, which a pinned parent passes on).
fn online_cpus() -> usize {
    // SAFETY: plain sysconf query.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

/// Latency statistics of one measurement, in ns.
#[derive(Clone, Debug, Default)]
struct Rtt {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
    /// (quantile, ns) along the distribution, for the plot.
    curve: Vec<(f64, u64)>,
}

/// Quantiles plotted: 50% to 99.99%.
const CURVE: [f64; 10] = [
    0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
];

impl Rtt {
    fn of(h: &Histogram<u64>) -> Rtt {
        Rtt {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            curve: CURVE.iter().map(|&q| (q, h.value_at_quantile(q))).collect(),
        }
    }
    fn json(&self) -> String {
        format!(
            "{{\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"mean_ns\":{:.1}}}",
            self.p50, self.p99, self.p999, self.max, self.mean
        )
    }
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    s[s.len() / 2]
}

fn median_rtt(v: &[Rtt]) -> Rtt {
    Rtt {
        p50: median(&v.iter().map(|r| r.p50).collect::<Vec<_>>()),
        p99: median(&v.iter().map(|r| r.p99).collect::<Vec<_>>()),
        p999: median(&v.iter().map(|r| r.p999).collect::<Vec<_>>()),
        max: median(&v.iter().map(|r| r.max).collect::<Vec<_>>()),
        mean: median(&v.iter().map(|r| r.mean).collect::<Vec<_>>()),
        curve: (0..CURVE.len())
            .map(|i| {
                (
                    CURVE[i],
                    median(&v.iter().map(|r| r.curve[i].1).collect::<Vec<_>>()),
                )
            })
            .collect(),
    }
}

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

/// Size of RTT message `i`: drawn from RTT_SIZES by a fixed sequence.
fn rtt_size(i: u32) -> usize {
    RTT_SIZES[(i.wrapping_mul(2_654_435_761) >> 30) as usize]
}

struct Peer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn spawn(args: &[String]) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("bench-peer")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the bench peer: {e}"))?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Peer { child, out })
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.out.read_line(&mut l);
        l.trim().to_string()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- baselines

/// Bare cache-line ping-pong through a shared file mapping: the parent
/// stores k in line A, the peer answers k in line B.
fn cacheline(a: &Args, n: u32) -> Result<Rtt, String> {
    let path = a
        .shm_dir
        .join(format!("tcpshm-bench-cl-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let map = Mapping::open(
        &path,
        4096,
        MapOptions {
            mode: 0o600,
            lock: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut peer = Peer::spawn(&[
        "cacheline".into(),
        path.display().to_string(),
        "--count".into(),
        n.to_string(),
    ])?;
    let _ = peer.line(); // ready
                         // Words in two cache lines of the mapping, atomic in both processes.
    let (a_word, b_word) = (map.word64(0), map.word64(64));
    let mut h = hist();
    let warm = n / 10;
    for k in 1..=u64::from(n) {
        let t0 = Instant::now();
        // Release/Acquire: the ping-pong's own ordering, as a queue needs.
        a_word.store(k, Ordering::Release);
        while b_word.load(Ordering::Acquire) != k {
            std::hint::spin_loop();
        }
        if k > u64::from(warm) {
            let _ = h.record(t0.elapsed().as_nanos().max(1) as u64);
        }
    }
    drop(peer);
    let _ = std::fs::remove_file(&path);
    Ok(Rtt::of(&h))
}

fn peer_cacheline(p: &PeerArgs) -> Result<(), String> {
    let map = Mapping::open(
        std::path::Path::new(&p.target),
        4096,
        MapOptions {
            mode: 0o600,
            lock: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let (a_word, b_word) = (map.word64(0), map.word64(64));
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
fn raw_tcp(n: u32) -> Result<Rtt, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let _peer = Peer::spawn(&[
        "rawtcp".into(),
        addr.to_string(),
        "--count".into(),
        n.to_string(),
    ])?;
    let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256];
    let mut h = hist();
    let warm = n / 10;
    for i in 0..n {
        let len = (8 + rtt_size(i) + 7) & !7;
        buf[..8].copy_from_slice(&(len as u64).to_le_bytes());
        let t0 = Instant::now();
        nonblocking_write_all(&mut s, &buf[..len]).map_err(|e| e.to_string())?;
        nonblocking_read_exact(&mut s, &mut buf[..len]).map_err(|e| e.to_string())?;
        if i >= warm {
            let _ = h.record(t0.elapsed().as_nanos().max(1) as u64);
        }
    }
    Ok(Rtt::of(&h))
}

fn peer_rawtcp(p: &PeerArgs) -> Result<(), String> {
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

// ---------------------------------------------------------------- ours

/// The peer's server: echoes, except SINK_TYPE messages, consumed silently.
struct BenchEcho;

impl ServerHandler for BenchEcho {
    fn on_new_connection(
        &mut self,
        _: std::net::SocketAddr,
        _: &Login,
        _: &mut LoginResponse,
    ) -> Accept {
        Accept::Group(0)
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        if msg.msg_type() == SINK_TYPE {
            // Read every byte, as an application would.
            std::hint::black_box(msg.payload().iter().fold(0u8, |a, b| a ^ b));
            msg.pop();
            return;
        }
        let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        msg.pop();
        rsp.push();
    }
}

fn bench_config(shm_dir: &std::path::Path) -> Config {
    Config {
        tcp_queue_size: 1 << 20,
        tcp_recv_buf_init_size: 1 << 16,
        tcp_recv_buf_max_size: (1 << 20) + 4096,
        shm_dir: shm_dir.to_path_buf(),
        ..Config::default()
    }
}

fn peer_server(p: &PeerArgs) -> Result<(), String> {
    let mut server = Server::new("bsrv", &p.target, bench_config(&p.shm_dir), BenchEcho)
        .map_err(|e| e.to_string())?;
    server.start("127.0.0.1:0").map_err(|e| e.to_string())?;
    println!("{}", server.local_addr().expect("listening"));
    let _ = std::io::stdout().flush();
    crate::util::catch_stop_signals();
    let mut last_ctl = 0;
    while !crate::util::stopping() {
        let t = now();
        if t - last_ctl > crate::echo_client::TCP_POLL_EVERY_NS {
            server.poll_ctl(t);
            last_ctl = t;
        }
        server.poll_tcp(t, 0);
        server.poll_shm(0);
    }
    Ok(())
}

#[derive(Default)]
struct Echoes(u32);

impl ClientHandler for Echoes {
    fn on_login_success(&mut self, _: &LoginResponse) -> i64 {
        now()
    }
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
        self.0 += 1;
    }
}

/// One connected client of the peer's server, over `shm` or TCP.
fn our_client(
    dir: &std::path::Path,
    addr: &str,
    shm: bool,
    shm_dir: &std::path::Path,
) -> Result<Client<Echoes>, String> {
    let name = if shm { "bshm" } else { "btcp" };
    let mut c = Client::new(name, dir.join(name), bench_config(shm_dir), Echoes(0))
        .map_err(|e| e.to_string())?;
    c.connect(tcpshm::Transport::from_use_shm(shm), addr, 0)
        .map_err(|e| e.to_string())?;
    Ok(c)
}

fn poll(c: &mut Client<Echoes>, shm: bool, last_tcp: &mut i64) {
    if shm {
        c.poll_shm();
        let t = now();
        if t - *last_tcp > crate::echo_client::TCP_POLL_EVERY_NS {
            c.poll_tcp(t);
            *last_tcp = t;
        }
    } else {
        c.poll_tcp(now());
    }
}

fn our_rtt(c: &mut Client<Echoes>, shm: bool, n: u32) -> Result<Rtt, String> {
    let mut h = hist();
    let warm = n / 10;
    let mut last_tcp = 0;
    c.handler().0 = 0;
    for i in 0..n {
        let size = rtt_size(i);
        let t0 = Instant::now();
        let mut m = c
            .connection()
            .alloc(1, size)
            .map_err(|e| format!("alloc: {e}"))?;
        m.payload_mut()[..4].copy_from_slice(&i.to_le_bytes());
        m.push();
        while c.handler().0 <= i {
            poll(c, shm, &mut last_tcp);
            if c.connection().is_closed() {
                return Err("connection closed during the benchmark".into());
            }
        }
        if i >= warm {
            let _ = h.record(t0.elapsed().as_nanos().max(1) as u64);
        }
    }
    Ok(Rtt::of(&h))
}

/// Streams `n` messages of `size` bytes (consumed silently by the peer),
/// then one echoed marker; returns messages per second.
fn our_tput(c: &mut Client<Echoes>, shm: bool, size: usize, n: u32) -> Result<f64, String> {
    let mut last_tcp = 0;
    c.handler().0 = 0;
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n {
        match c.connection().alloc(SINK_TYPE, size) {
            Ok(mut m) => {
                m.payload_mut().copy_from_slice(&src);
                m.push_more(); // TCP: batched into the next write
                sent += 1;
            }
            Err(tcpshm::AllocError::Full) => {
                c.connection().flush();
                poll(c, shm, &mut last_tcp);
            }
            Err(e) => return Err(format!("alloc: {e}")),
        }
        if c.connection().is_closed() {
            return Err("connection closed during the benchmark".into());
        }
    }
    let m = c
        .connection()
        .alloc(1, 8)
        .map_err(|e| format!("alloc: {e}"));
    match m {
        Ok(m) => m.push(),
        Err(_) => {
            while c.connection().alloc(1, 8).is_err() {
                c.connection().flush();
                poll(c, shm, &mut last_tcp);
            }
            c.connection()
                .alloc(1, 8)
                .map_err(|e| e.to_string())?
                .push();
        }
    }
    while c.handler().0 == 0 {
        c.connection().flush();
        poll(c, shm, &mut last_tcp);
    }
    Ok(f64::from(n) / t0.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- report

struct RunResults {
    cacheline: Rtt,
    raw_tcp: Rtt,
    shm: Rtt,
    tcp: Rtt,
    shm_tput: Vec<f64>,
    tcp_tput: Vec<f64>,
}

fn one_run(a: &Args, rtt_n: u32, tput_n: u32, dir: &std::path::Path) -> Result<RunResults, String> {
    let cacheline = cacheline(a, rtt_n)?;
    let raw_tcp = raw_tcp(rtt_n)?;
    let mut peer = Peer::spawn(&[
        "server".into(),
        dir.join("server").display().to_string(),
        "--shm-dir".into(),
        a.shm_dir.display().to_string(),
    ])?;
    let addr = peer.line();
    // One transport at a time: a live TCP connection would add a read
    // syscall to every loop of the peer while SHM is measured.
    let mut shm_c = our_client(dir, &addr, true, &a.shm_dir)?;
    let shm = our_rtt(&mut shm_c, true, rtt_n)?;
    let shm_tput = TPUT_SIZES
        .iter()
        .map(|&size| our_tput(&mut shm_c, true, size, tput_n))
        .collect::<Result<Vec<_>, _>>()?;
    shm_c.stop();
    let mut tcp_c = our_client(dir, &addr, false, &a.shm_dir)?;
    let tcp = our_rtt(&mut tcp_c, false, rtt_n)?;
    let tcp_tput = TPUT_SIZES
        .iter()
        .map(|&size| our_tput(&mut tcp_c, false, size, tput_n))
        .collect::<Result<Vec<_>, _>>()?;
    tcp_c.stop();
    // SAFETY: plain syscall; the pid is our child's.
    unsafe {
        libc::kill(peer.child.id() as i32, libc::SIGTERM);
    }
    let _ = peer.child.wait();
    for c in ["bshm"] {
        for (s, r) in [("bsrv", c), (c, "bsrv")] {
            let _ = std::fs::remove_file(a.shm_dir.join(format!("{s}_{r}.shm")));
        }
    }
    Ok(RunResults {
        cacheline,
        raw_tcp,
        shm,
        tcp,
        shm_tput,
        tcp_tput,
    })
}

pub fn run(mut a: Args) -> Result<(), String> {
    if a.quick {
        a.rtt_count = a.rtt_count.min(3000);
        a.tput_count = a.tput_count.min(5000);
        a.runs = 1;
    }
    if !a.shm_dir.is_dir() {
        return Err(format!(
            "shared-memory directory {} does not exist",
            a.shm_dir.display()
        ));
    }
    let cpus = online_cpus();
    let pinned = pin(0);
    println!(
        "tcpshm bench: {} round trips and {} streamed messages per measurement, {} run(s); {} CPUs{}",
        a.rtt_count,
        a.tput_count,
        a.runs,
        cpus,
        if pinned { ", parent on CPU 0, peer on CPU 1" } else { ", not pinned" }
    );
    let dir = std::env::temp_dir().join(format!("tcpshm-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    for r in 0..a.runs {
        println!("  run {}/{}...", r + 1, a.runs);
        let res = one_run(&a, a.rtt_count, a.tput_count, &dir);
        let _ = std::fs::remove_dir_all(dir.join("server"));
        for c in ["bshm", "btcp"] {
            let _ = std::fs::remove_dir_all(dir.join(c));
        }
        runs.push(res?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let cl = median_rtt(&runs.iter().map(|r| r.cacheline.clone()).collect::<Vec<_>>());
    let rt = median_rtt(&runs.iter().map(|r| r.raw_tcp.clone()).collect::<Vec<_>>());
    let shm = median_rtt(&runs.iter().map(|r| r.shm.clone()).collect::<Vec<_>>());
    let tcp = median_rtt(&runs.iter().map(|r| r.tcp.clone()).collect::<Vec<_>>());
    // Ratios per run, then their median (robust to a noisy run).
    let shm_ratio = median(
        &runs
            .iter()
            .map(|r| r.shm.p50 as f64 / r.cacheline.p50 as f64)
            .collect::<Vec<_>>(),
    );
    let tcp_ratio = median(
        &runs
            .iter()
            .map(|r| r.tcp.p50 as f64 / r.raw_tcp.p50 as f64)
            .collect::<Vec<_>>(),
    );
    let shm_vs_tcp = median(
        &runs
            .iter()
            .map(|r| r.tcp.p50 as f64 / r.shm.p50 as f64)
            .collect::<Vec<_>>(),
    );
    println!();
    println!(
        "  RTT (one message in flight, payload 16/36/68/200 B), medians of {} run(s):",
        a.runs
    );
    println!(
        "  {:<22} {:>10} {:>10} {:>10} {:>10} {:>10}  ratio p50",
        "", "p50", "p99", "p99.9", "max", "mean"
    );
    let row = |name: &str, r: &Rtt, ratio: String| {
        println!(
            "  {:<22} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            name,
            fmt_ns(r.p50 as f64),
            fmt_ns(r.p99 as f64),
            fmt_ns(r.p999 as f64),
            fmt_ns(r.max as f64),
            fmt_ns(r.mean),
            ratio
        )
    };
    row("cache-line ping-pong", &cl, "floor".into());
    row(
        "tcpshm SHM",
        &shm,
        format!("{shm_ratio:.2}x floor (target <= 2.5x)"),
    );
    row("raw TCP ping-pong", &rt, "floor".into());
    row(
        "tcpshm TCP",
        &tcp,
        format!("{tcp_ratio:.2}x floor (target <= 1.15x)"),
    );
    println!("  SHM p50 is {shm_vs_tcp:.1}x lower than TCP p50 (target >= 10x)");
    println!();
    println!("  Streaming throughput (medians):");
    println!(
        "  {:<10} {:>16} {:>12} {:>16} {:>12}",
        "payload", "SHM msg/s", "SHM MB/s", "TCP msg/s", "TCP MB/s"
    );
    let mut tput_json = Vec::new();
    for (i, size) in TPUT_SIZES.iter().enumerate() {
        let s = median(&runs.iter().map(|r| r.shm_tput[i]).collect::<Vec<_>>());
        let t = median(&runs.iter().map(|r| r.tcp_tput[i]).collect::<Vec<_>>());
        println!(
            "  {:<10} {:>16.0} {:>12.1} {:>16.0} {:>12.1}",
            format!("{size} B"),
            s,
            s * *size as f64 / 1e6,
            t,
            t * *size as f64 / 1e6
        );
        tput_json.push(format!(
            "{{\"payload\":{size},\"shm_msgs_per_s\":{s:.0},\"tcp_msgs_per_s\":{t:.0}}}"
        ));
    }
    let runs_json: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"cacheline\":{},\"raw_tcp\":{},\"shm\":{},\"tcp\":{},\"shm_tput\":{:?},\"tcp_tput\":{:?}}}",
                r.cacheline.json(),
                r.raw_tcp.json(),
                r.shm.json(),
                r.tcp.json(),
                r.shm_tput.iter().map(|v| v.round()).collect::<Vec<_>>(),
                r.tcp_tput.iter().map(|v| v.round()).collect::<Vec<_>>()
            )
        })
        .collect();
    let json = format!(
        "{{\"cpus\":{cpus},\"pinned\":{pinned},\"rtt_count\":{},\"tput_count\":{},\"median\":{{\"cacheline\":{},\"raw_tcp\":{},\"shm\":{},\"tcp\":{},\"shm_p50_over_cacheline_p50\":{shm_ratio:.3},\"tcp_p50_over_raw_tcp_p50\":{tcp_ratio:.3},\"tcp_p50_over_shm_p50\":{shm_vs_tcp:.2},\"throughput\":[{}]}},\"runs\":[{}]}}\n",
        a.rtt_count,
        a.tput_count,
        cl.json(),
        rt.json(),
        shm.json(),
        tcp.json(),
        tput_json.join(","),
        runs_json.join(",")
    );
    std::fs::write(&a.json, json).map_err(|e| format!("cannot write {}: {e}", a.json.display()))?;
    let plot = svg(&[
        ("cache-line floor", &cl, "#999999"),
        ("tcpshm SHM", &shm, "#d62728"),
        ("raw TCP floor", &rt, "#1f77b4"),
        ("tcpshm TCP", &tcp, "#2ca02c"),
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

pub fn peer(p: PeerArgs) -> Result<(), String> {
    pin(1);
    match p.mode.as_str() {
        "cacheline" => peer_cacheline(&p),
        "rawtcp" => peer_rawtcp(&p),
        "server" => peer_server(&p),
        m => Err(format!("unknown bench peer mode {m}")),
    }
}
