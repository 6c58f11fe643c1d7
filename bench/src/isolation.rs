//! `tcpshm isolation`: does one peer's behaviour degrade another's
//! service? A good client's echo RTT, over TCP or (`--shm`) shared memory,
//! is measured in rounds that alternate between quiet and one abuser in
//! the same connection group of the same server:
//! - `stall`: logs in, sends requests and never reads, so its send queue
//!   (or ring) on the server fills and its requests wait unanswered;
//! - `heartbeats`: logs in and floods heartbeat frames (over shared
//!   memory: the session's TCP socket, which its SHM group reads);
//! - `stream`: logs in and streams messages the server consumes, as fast
//!   as its pacing allows;
//! - `idle`, the control: logs in and wakes as often as the others, but
//!   sends nothing. What it costs is what a third process costs on this
//!   machine, not the server's work for an abuser.
//!
//! Abusers are paced (a burst of 64 KiB, then a millisecond's sleep) and
//! not pinned, so on a 2-CPU machine they take a few percent of a CPU
//! instead of a whole one: what is measured is the server's work for
//! them, not a lost core. Every abuser process is killed after its round
//! (and on every exit path, by `Peer`'s drop). The ratio reported per
//! abuser is its round's p50 (and p99) over the mean of the two quiet
//! rounds around it, median over the rounds. This is a measurement, not a
//! test: the machine's drift decides the spread, which is printed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tcpshm_cli::util::{fmt_ns, now};

use crate::ours;
use crate::peer::{self, Peer, PeerArgs};
use crate::rounds;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rounds per abuser (each between two quiet rounds).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Echo round trips of the good client per round.
    #[arg(long, default_value_t = 5000)]
    pub per_round: u32,
    /// The good client and the abusers over shared memory.
    #[arg(long)]
    pub shm: bool,
    /// Where to write the JSON results.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Directory of shared-memory objects (the server's, unused by TCP).
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: std::path::PathBuf,
}

/// The abusers, as `peer abuse-<kind>` modes.
pub const KINDS: [&str; 4] = ["idle", "stall", "heartbeats", "stream"];

/// Bytes an abuser writes per burst, and its sleep between bursts.
const BURST: usize = 64 * 1024;
const PAUSE: Duration = Duration::from_millis(1);

/// The abuser process `pid`'s client name (the parent removes its shm
/// objects by it): a name of its own, because a stalled TCP session that
/// was killed keeps its slot until the server's connection timeout (it
/// never reads the close from a socket whose data it cannot consume).
fn abuser_name(kind: &str, pid: u32) -> String {
    format!("ab{}{}", &kind[..2], pid % 1_000_000)
}

/// Logs in over raw TCP as `name` (a new pair), returns the socket, non
/// blocking.
fn login(addr: &str, name: &str, use_shm: bool) -> Result<TcpStream, String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut l = tcpshm_v1::Login::new(name);
    l.use_shm = use_shm;
    let (p, r) = tcpshm_v1::Peer::login(addr, &l, Duration::from_secs(10))
        .map_err(|e| format!("login to {addr}: {e}"))?;
    if r.status != tcpshm_v1::STATUS_OK {
        return Err(format!("login refused: {}", r.error_text()));
    }
    p.stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(p.stream)
}

/// Frames of `msg_type` with `payload` bytes each, padded to 8, as many
/// as fit in `bytes`.
fn frames(msg_type: u16, payload: usize, bytes: usize) -> Vec<u8> {
    let f = tcpshm_v1::frame(msg_type, 0, &vec![0u8; payload]);
    f.repeat(bytes / f.len())
}

/// The abuser process: logs in, says "ready", then abuses until killed.
pub fn abuse(kind: &str, p: &PeerArgs) -> Result<(), String> {
    let name = abuser_name(kind, std::process::id());
    if p.shm && (kind == "stall" || kind == "stream") {
        return abuse_shm_client(kind, &name, p);
    }
    let mut s = login(&p.target, &name, p.shm)?;
    let burst = match kind {
        "heartbeats" => frames(0, 0, BURST),
        "stream" => frames(ours::SINK_TYPE, 56, BURST),
        "stall" => frames(1, 16, BURST),
        "idle" => Vec::new(),
        k => return Err(format!("unknown abuser {k}")),
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = vec![0u8; 1 << 16];
    loop {
        let mut off = 0;
        while off < burst.len() {
            match s.write(&burst[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("abuser {kind}: {e}")),
            }
        }
        if kind != "stall" && kind != "idle" {
            // Read what the server sends (acks, heartbeats), as a peer must.
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
        std::thread::sleep(PAUSE);
    }
}

/// A real client over shared memory that stalls (pushes requests until
/// its ring is full and never reads the echoes) or streams (pushes up to
/// 1000 messages the server consumes per burst), keeping its session
/// alive with the TCP poll.
fn abuse_shm_client(kind: &str, name: &str, p: &PeerArgs) -> Result<(), String> {
    let dir = p.dir.clone().ok_or("abuser over shm: no --dir")?.join(name);
    let cfg = ours::bench_config(&p.shm_dir, true);
    let mut c: tcpshm::Client = tcpshm::Client::new(name, dir, cfg).map_err(|e| e.to_string())?;
    let mut echoes = ours::Echoes(0);
    c.connect(tcpshm::Transport::Shm, p.target.as_str(), 0)
        .map_err(|e| format!("abuser {kind}: {e}"))?;
    println!("ready");
    let _ = std::io::stdout().flush();
    let (t, len) = if kind == "stall" {
        (1, 16)
    } else {
        (ours::SINK_TYPE, 56)
    };
    loop {
        for _ in 0..1000 {
            match c.connection().alloc(t, len) {
                Ok(m) => m.push(),
                Err(_) => break,
            }
        }
        // A stream's echoes are none (the server sinks them); a stall
        // never reads what comes back: its TCP side alone keeps it alive.
        if kind == "stream" {
            c.poll(now(), &mut echoes);
        } else {
            c.parts().0.poll(now(), &mut echoes);
        }
        if c.connection().is_closed() {
            return Err(format!("abuser {kind}: disconnected"));
        }
        std::thread::sleep(PAUSE);
    }
}

/// One abused round with the quiet rounds on either side: p50 and p99 of
/// each (nanoseconds).
#[derive(Clone, Copy, Debug)]
struct Around {
    before: (f64, f64),
    during: (f64, f64),
    after: (f64, f64),
}

impl Around {
    /// The abused round's p50 and p99 over the mean of the quiet ones.
    fn ratios(&self) -> (f64, f64) {
        let over = |x: f64, before: f64, after: f64| x / ((before + after) / 2.0).max(1.0);
        let (b, d, a) = (self.before, self.during, self.after);
        (over(d.0, b.0, a.0), over(d.1, b.1, a.1))
    }
}

/// Runs the rounds and prints (and writes) the ratios.
pub fn run(a: Args) -> Result<(), String> {
    if a.shm && !a.shm_dir.is_dir() {
        return Err(format!(
            "shared-memory directory {} does not exist (is /dev/shm mounted? use --shm-dir)",
            a.shm_dir.display()
        ));
    }
    let pinned = peer::pin(0);
    let dir = std::env::temp_dir().join(format!("tcpshm-isolation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let r = measure(&a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (quiet_p50, abused) = r?;
    println!(
        "tcpshm isolation: {} rounds per abuser of {} echo round trips over {}; good client on CPU 0{}, server on CPU 1, abusers paced and not pinned",
        a.rounds,
        a.per_round,
        if a.shm { "shared memory" } else { "TCP" },
        if pinned { "" } else { " (not pinned)" }
    );
    let q = rounds::spread(&quiet_p50);
    println!(
        "  quiet rounds: p50 {} [{}-{}]",
        fmt_ns(q.median),
        fmt_ns(q.p25),
        fmt_ns(q.p75)
    );
    println!("  abused round / the quiet rounds around it, median [p25-p75] (max):");
    let mut json = Vec::new();
    for (k, rounds) in KINDS.iter().zip(&abused) {
        let (p50, p99): (Vec<f64>, Vec<f64>) = rounds.iter().map(Around::ratios).unzip();
        let (s50, s99) = (rounds::spread(&p50), rounds::spread(&p99));
        println!(
            "  {k:<11} p50 {:.2}x [{:.2}-{:.2}] ({:.2})   p99 {:.2}x [{:.2}-{:.2}] ({:.2})",
            s50.median, s50.p25, s50.p75, s50.max, s99.median, s99.p25, s99.p75, s99.max
        );
        json.push(format!(
            "\"{k}\": {{ \"p50_ratio\": {}, \"p99_ratio\": {} }}",
            s50.json(),
            s99.json()
        ));
    }
    if let Some(p) = &a.json {
        let body = format!(
            "{{ \"schema\": 1, \"transport\": \"{}\", \"rounds\": {}, \"per_round\": {}, \"pinned\": {pinned}, \"quiet_p50_ns\": {}, {} }}\n",
            if a.shm { "shm" } else { "tcp" },
            a.rounds,
            a.per_round,
            q.json(),
            json.join(", ")
        );
        std::fs::write(p, body).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// The quiet rounds' p50s, and per abuser its rounds with their quiet
/// neighbours. Order: quiet, idle, quiet, stall, quiet, heartbeats, quiet, stream,
/// quiet, idle, ...
fn measure(a: &Args, dir: &std::path::Path) -> Result<(Vec<f64>, Vec<Vec<Around>>), String> {
    let (server, addr) = ours::spawn_server(&dir.join("server"), &a.shm_dir, false, None)?;
    let mut good = ours::our_client(dir, &addr, a.shm, false, &a.shm_dir)?;
    let mut seq = 0;
    let mut round = |good: &mut _| -> Result<(f64, f64), String> {
        let r = ours::our_round(good, a.per_round, &mut seq)?;
        Ok(r.p50_p99())
    };
    let mut shm = ShmObjects {
        dir: a.shm_dir.clone(),
        names: vec![ours::CLIENT_SHM.to_string()],
    };
    let mut before = round(&mut good)?;
    let mut quiet = vec![before.0];
    let mut abused = vec![Vec::new(); KINDS.len()];
    let deadline = Instant::now() + Duration::from_secs(600);
    for _ in 0..a.rounds.max(1) {
        for (k, kind) in KINDS.iter().enumerate() {
            if Instant::now() > deadline {
                return Err("isolation: still running after 10 minutes, stopped".into());
            }
            let mut args = vec![format!("abuse-{kind}"), addr.clone()];
            args.extend(["--dir".into(), dir.display().to_string()]);
            args.extend(["--shm-dir".into(), a.shm_dir.display().to_string()]);
            if a.shm {
                args.push("--shm".into());
            }
            let mut abuser = Peer::spawn(&args)?;
            shm.names.push(abuser_name(kind, abuser.pid()));
            if abuser.line() != "ready" {
                return Err(format!("abuser {kind} did not start"));
            }
            // Let the abuse reach its steady state (a full queue, a busy
            // socket) before measuring.
            std::thread::sleep(Duration::from_millis(20));
            let during = round(&mut good)?;
            drop(abuser); // killed, and waited for
            std::thread::sleep(Duration::from_millis(20));
            let after = round(&mut good)?;
            quiet.push(after.0);
            abused[k].push(Around {
                before,
                during,
                after,
            });
            before = after;
        }
    }
    drop(server);
    Ok((quiet, abused))
}

/// The shm objects of the run's clients and the server, removed on every
/// exit path.
struct ShmObjects {
    dir: std::path::PathBuf,
    names: Vec<String>,
}

impl Drop for ShmObjects {
    fn drop(&mut self) {
        for n in &self.names {
            for (from, to) in [(n.as_str(), ours::SERVER), (ours::SERVER, n.as_str())] {
                let _ = std::fs::remove_file(self.dir.join(format!("{from}_{to}.shm")));
            }
        }
    }
}
