//! `tcpshm-bench idle`: what each idle strategy (`tcpshm::Idle`: busy,
//! yield, backoff, block) costs and gives, for a server process whose
//! loop uses it:
//! - its CPU over `--secs` with `--clients` connected idle clients (from
//!   `/proc/PID/stat`), no client sending;
//! - the round trip of a quiet client that sends one message every
//!   `--interval-us`, over TCP and SHM, the client busy-polling or idling
//!   by the same strategy (both sides asleep when the message comes);
//! - beside the quiet client, the floor of a wake-up: two processes that
//!   sleep in a blocking `read` and echo 16 bytes over loopback TCP, one
//!   message every `--interval-us` too, measured just before and just
//!   after each strategy's quiet rounds;
//! - for a strategy that sleeps, ping-pong against a busy server in
//!   interleaved rounds: what it costs when work keeps coming.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tcpshm::{Client, Idle, Transport};
use tcpshm_cli::util::now;

use crate::ours::{bench_config, our_round, spawn_server, Echoes, Ours};
use crate::peer::PeerArgs;
use crate::peer::{self, Peer};
use crate::rounds::{hist, median, Rtt, Series};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Strategies measured (busy, yield, backoff, block), comma-separated.
    #[arg(long, default_value = "busy,yield,backoff,block")]
    pub strategies: String,
    /// Seconds of idle CPU measured per strategy.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Idle clients connected meanwhile (half over TCP, half over SHM).
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// The quiet client's interval between messages, in microseconds.
    #[arg(long, default_value_t = 10_000)]
    pub interval_us: u64,
    /// The quiet client's messages per transport and client strategy.
    #[arg(long, default_value_t = 200)]
    pub messages: u32,
    /// Ping-pong rounds against the busy server, and round trips each.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u32,
    /// Directory of shared-memory objects (a run uses a directory in it).
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A run's files and shm objects (in directories of their own), removed
/// on every exit path; its peers are killed when dropped.
struct Clean(Vec<PathBuf>);

impl Drop for Clean {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A server process of one strategy, with its files.
struct Srv {
    peer: Peer,
    addr: String,
    dir: PathBuf,
    shm_dir: PathBuf,
}

/// A server whose loop idles by `idle`, its files in `dir/tag` and in a
/// directory of `shm_root` of its own.
fn start(
    idle: &str,
    tag: &str,
    dir: &Path,
    shm_root: &Path,
    clean: &mut Clean,
) -> Result<Srv, String> {
    let dir = dir.join(tag);
    let shm_dir = shm_root.join(format!("tcpshm-idle-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&shm_dir).map_err(|e| format!("{}: {e}", shm_dir.display()))?;
    clean.0.push(shm_dir.clone());
    let (peer, addr) = spawn_server(&dir.join("server"), &shm_dir, false, Some(idle))?;
    Ok(Srv {
        peer,
        addr,
        dir,
        shm_dir,
    })
}

fn client(s: &Srv, name: &str, t: Transport) -> Result<Client, String> {
    let mut c: Client = Client::new(name, s.dir.join(name), bench_config(&s.shm_dir, true))
        .map_err(|e| e.to_string())?;
    c.connect(t, s.addr.as_str(), 0)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(c)
}

/// User and system CPU ticks of process `pid` so far.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command's closing parenthesis: utime is the 14th
    // field of the line, stime the 15th.
    let rest = s.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Ok(num(11).ok_or("utime")? + num(12).ok_or("stime")?)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: plain sysconf query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Percent of a core the server used over `secs`, its idle clients kept
/// alive (their heartbeats) from here meanwhile.
fn idle_cpu(s: &Srv, clients: &mut [Client], secs: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    let c0 = cpu_ticks(s.peer.pid())?;
    let mut e = Echoes(0);
    while t0.elapsed() < Duration::from_secs(secs) {
        for c in clients.iter_mut() {
            c.poll(now(), &mut e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ticks = cpu_ticks(s.peer.pid())? - c0;
    Ok(100.0 * ticks as f64 / clock_ticks_per_second() / t0.elapsed().as_secs_f64())
}

/// Round trips of one message every `interval`, the client idling by
/// `idle` between polls (and while it waits for the echo).
fn quiet(c: &mut Client, mut idle: Idle, interval: Duration, n: u32) -> Result<Rtt, String> {
    let mut h = hist();
    let mut e = Echoes(0);
    let mut next = Instant::now();
    for i in 0..n {
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let worked = c.poll(now(), &mut e);
            idle.idle_within(c, now(), worked, left)
                .map_err(|e| format!("wait: {e}"))?;
        }
        next += interval;
        let before = e.0;
        let t0 = Instant::now();
        let mut m = c
            .connection()
            .alloc(1, 16)
            .map_err(|e| format!("alloc: {e}"))?;
        m.payload_mut()[..4].copy_from_slice(&i.to_le_bytes());
        m.push();
        idle.reset();
        while e.0 == before {
            let worked = c.poll(now(), &mut e);
            idle.idle_on(c, now(), worked)
                .map_err(|e| format!("wait: {e}"))?;
            if c.connection().is_closed() {
                return Err("connection closed".into());
            }
        }
        let _ = h.record((t0.elapsed().as_nanos() as u64).max(1));
    }
    Ok(Rtt::of(&h))
}

/// The blocking peer: echoes 16-byte messages on a blocking socket until
/// the harness closes it.
pub(crate) fn peer_blocktcp(p: &PeerArgs) -> Result<(), String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(&p.target).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut b = [0u8; 16];
    while s.read_exact(&mut b).is_ok() {
        s.write_all(&b).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The floor of a wake-up: `n` round trips of 16 bytes, one every
/// `interval`, with a peer (on the other CPU) asleep in a blocking read
/// and this side asleep in one too.
fn blocking_floor(
    h: &mut hdrhistogram::Histogram<u64>,
    interval: Duration,
    n: u32,
) -> Result<(), String> {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?.to_string();
    let _peer = Peer::spawn(&["blocktcp".to_string(), addr])?;
    let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut b = [7u8; 16];
    for _ in 0..n {
        std::thread::sleep(interval);
        let t0 = Instant::now();
        s.write_all(&b).map_err(|e| e.to_string())?;
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        let _ = h.record((t0.elapsed().as_nanos() as u64).max(1));
    }
    Ok(())
}

struct Row {
    strategy: String,
    cpu_pct: f64,
    /// The blocking floor, around this row's quiet rounds.
    floor: Rtt,
    /// (transport, client strategy, RTT)
    quiet: Vec<(&'static str, String, Rtt)>,
    /// (transport, median p50 ratio to busy, median mean ratio, p50 ns)
    busy_cost: Vec<(&'static str, f64, f64, f64)>,
}

pub fn run(a: Args) -> Result<(), String> {
    if !a.shm_dir.is_dir() {
        return Err(format!(
            "shared-memory directory {} does not exist (use --shm-dir)",
            a.shm_dir.display()
        ));
    }
    let strategies: Vec<String> = a.strategies.split(',').map(str::to_string).collect();
    for s in &strategies {
        if !["busy", "yield", "backoff", "block"].contains(&s.as_str()) {
            return Err(format!(
                "--strategies: {s} is not busy, yield, backoff or block"
            ));
        }
    }
    let pinned = peer::pin(0);
    let dir = std::env::temp_dir().join(format!("tcpshm-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut clean = Clean(vec![dir.clone()]);
    let started = Instant::now();
    let interval = Duration::from_micros(a.interval_us);
    let mut rows = Vec::new();
    for s in &strategies {
        let idle_of = |name: &str| match name {
            "yield" => Idle::yielding(),
            "backoff" => Idle::backoff(),
            "block" => Idle::block(),
            _ => Idle::busy(),
        };
        let srv = start(s, s, &dir, &a.shm_dir, &mut clean)?;
        let mut idlers = Vec::new();
        for k in 0..a.clients {
            let t = if k % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Shm
            };
            idlers.push(client(&srv, &format!("idle{k}"), t)?);
        }
        std::thread::sleep(Duration::from_millis(200)); // logins settle
        let cpu_pct = idle_cpu(&srv, &mut idlers, a.secs)?;
        eprintln!("{s}: {cpu_pct:.2}% of a core idle");
        let mut quiet_rows = Vec::new();
        let mut floor = hist();
        blocking_floor(&mut floor, interval, a.messages / 2)?;
        for (tn, t) in [("tcp", Transport::Tcp), ("shm", Transport::Shm)] {
            let mut c = client(&srv, &format!("quiet{tn}"), t)?;
            for cs in ["busy", s.as_str()] {
                if quiet_rows.iter().any(|(x, y, _)| *x == tn && y == cs) {
                    continue;
                }
                let r = quiet(&mut c, idle_of(cs), interval, a.messages)?;
                eprintln!("{s}: quiet {tn}, client {cs}: p50 {} p99 {}", r.p50, r.p99);
                quiet_rows.push((tn, cs.to_string(), r));
            }
            c.stop();
        }
        blocking_floor(&mut floor, interval, a.messages / 2)?;
        let floor = Rtt::of(&floor);
        eprintln!("{s}: blocking floor p50 {} p99 {}", floor.p50, floor.p99);
        let mut busy_cost = Vec::new();
        if s != "busy" {
            // A busy server to compare with, paused while this one is
            // measured (it spins), and this one while it is.
            let busy = start("busy", &format!("ref-{s}"), &dir, &a.shm_dir, &mut clean)?;
            let mut busy_tcp = Ours::new(client(&busy, "pptcp", Transport::Tcp)?, false);
            let mut busy_shm = Ours::new(client(&busy, "ppshm", Transport::Shm)?, true);
            busy.peer.pause();
            let mut pp_tcp = Ours::new(client(&srv, "pptcp", Transport::Tcp)?, false);
            let mut pp_shm = Ours::new(client(&srv, "ppshm", Transport::Shm)?, true);
            for (tn, ours, theirs) in [
                ("tcp", &mut pp_tcp, &mut busy_tcp),
                ("shm", &mut pp_shm, &mut busy_shm),
            ] {
                let (mut a_s, mut b_s) = (Series::new(), Series::new());
                let mut seq = 0u32;
                for _ in 0..a.rounds {
                    srv.peer.pause();
                    b_s.rounds.push(
                        busy.peer
                            .running(|| our_round(theirs, a.round_trips, &mut seq))?,
                    );
                    srv.peer.resume();
                    a_s.rounds.push(our_round(ours, a.round_trips, &mut seq)?);
                }
                let ratio = |x: Vec<f64>, y: Vec<f64>| {
                    median(&x.iter().zip(&y).map(|(p, q)| p / q).collect::<Vec<_>>())
                };
                let p50 = ratio(a_s.p50s(), b_s.p50s());
                let mean = ratio(a_s.avgs(), b_s.avgs());
                eprintln!("{s}: ping-pong {tn}: p50 {p50:.3}x busy, mean {mean:.3}x");
                busy_cost.push((tn, p50, mean, a_s.merged().p50 as f64));
            }
        }
        rows.push(Row {
            strategy: s.clone(),
            cpu_pct,
            floor,
            quiet: quiet_rows,
            busy_cost,
        });
    }
    report(&a, &rows, pinned, started.elapsed())
}

fn report(a: &Args, rows: &[Row], pinned: bool, took: Duration) -> Result<(), String> {
    println!(
        "tcpshm-bench idle: {} idle clients for {} s; quiet client every {} µs ({} messages); pinned {pinned}; {:.0} s",
        a.clients,
        a.secs,
        a.interval_us,
        a.messages,
        took.as_secs_f64()
    );
    println!("| server --idle | idle CPU | quiet TCP p50 / p99 (client busy) | (client idling too) | quiet SHM p50 / p99 (client busy) | (client idling too) | blocking floor p50 / p99 | ping-pong p50 vs busy TCP / SHM |");
    println!("|---|---|---|---|---|---|---|---|");
    let us = |ns: u64| format!("{:.1} µs", ns as f64 / 1000.0);
    for r in rows {
        let q = |t: &str, own: bool| {
            r.quiet
                .iter()
                .find(|(x, y, _)| *x == t && (y == &r.strategy) == own)
                .or_else(|| r.quiet.iter().find(|(x, _, _)| *x == t))
                .map_or("-".to_string(), |(_, _, q)| {
                    format!("{} / {}", us(q.p50), us(q.p99))
                })
        };
        let cost = |t: &str| {
            r.busy_cost
                .iter()
                .find(|c| c.0 == t)
                .map_or("-".to_string(), |c| format!("{:.3}x", c.1))
        };
        println!(
            "| {} | {:.2}% | {} | {} | {} | {} | {} / {} | {} / {} |",
            r.strategy,
            r.cpu_pct,
            q("tcp", false),
            q("tcp", true),
            q("shm", false),
            q("shm", true),
            us(r.floor.p50),
            us(r.floor.p99),
            cost("tcp"),
            cost("shm")
        );
    }
    if let Some(p) = &a.json {
        let rows_json: Vec<String> = rows
            .iter()
            .map(|r| {
                let quiet: Vec<String> = r
                    .quiet
                    .iter()
                    .map(|(t, c, q)| {
                        format!(
                            "{{\"transport\":\"{t}\",\"client_idle\":\"{c}\",\"rtt\":{}}}",
                            q.json()
                        )
                    })
                    .collect();
                let cost: Vec<String> = r
                    .busy_cost
                    .iter()
                    .map(|(t, p50, mean, ns)| {
                        format!(
                            "{{\"transport\":\"{t}\",\"p50_ratio\":{p50:.4},\"mean_ratio\":{mean:.4},\"p50_ns\":{ns}}}"
                        )
                    })
                    .collect();
                format!(
                    "{{\"strategy\":\"{}\",\"idle_cpu_pct\":{:.3},\"blocking_floor\":{},\"quiet\":[{}],\"ping_pong_vs_busy\":[{}]}}",
                    r.strategy,
                    r.cpu_pct,
                    r.floor.json(),
                    quiet.join(","),
                    cost.join(",")
                )
            })
            .collect();
        let mut f = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
        writeln!(
            f,
            "{{\"clients\":{},\"secs\":{},\"interval_us\":{},\"messages\":{},\"rows\":[{}]}}",
            a.clients,
            a.secs,
            a.interval_us,
            a.messages,
            rows_json.join(",")
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
