//! `tcpshm demo`: one command for a newcomer. Starts an echo server and an
//! echo client as child processes on this host, runs a TCP and an SHM
//! ping-pong, kills the client with kill -9 halfway through each and
//! restarts it, and prints a table of the results. It removes its files and
//! shared-memory objects afterwards unless asked to keep them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::fmt_ns;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Messages per run (ping-pong, one in flight).
    #[arg(long, default_value_t = 20_000)]
    pub count: u32,
    /// Keep the files in this directory instead of a temporary one.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
}

/// A child process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[String]) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args[0]))?;
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Proc { child, lines: rx })
    }

    /// The next line, or None at exit or after `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct RunResult {
    transport: &'static str,
    messages: u32,
    p50: u64,
    p99: u64,
    recovered: bool,
    killed_at: u32,
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn client_run(
    shm: bool,
    addr: &str,
    name: &str,
    work: &Path,
    count: u32,
    shm_dir: &Path,
) -> Result<RunResult, String> {
    let transport = if shm { "shm" } else { "tcp" };
    let mut args = vec![
        "echo-client".to_string(),
        name.to_string(),
        "--server".into(),
        addr.to_string(),
        "--count".into(),
        count.to_string(),
        "--dir".into(),
        work.join(name).display().to_string(),
        "--shm-dir".into(),
        shm_dir.display().to_string(),
        "--retry".into(),
        "10".into(),
        "--progress".into(),
    ];
    if shm {
        args.push("--shm".into());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    // First run: kill -9 halfway.
    let mut c = Proc::spawn(&args)?;
    let mut killed_at = 0;
    while let Some(l) = c.line(Duration::from_secs(30)) {
        if let Some(n) = l
            .strip_prefix("progress ")
            .and_then(|n| n.parse::<u32>().ok())
        {
            if n >= count / 2 {
                c.child.kill().map_err(|e| format!("kill -9 failed: {e}"))?; // SIGKILL
                let _ = c.child.wait();
                killed_at = n;
                break;
            }
        } else if l.starts_with("error") {
            return Err(format!("{transport} client: {l}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{transport} run did not finish in time"));
        }
    }
    if killed_at == 0 {
        return Err(format!("{transport} client stopped before halfway"));
    }
    println!(
        "  {transport}: killed the client with kill -9 after {killed_at} echoes; restarting it"
    );
    // Second run: resumes where it was and finishes.
    let mut c = Proc::spawn(&args)?;
    let mut done = None;
    while let Some(l) = c.line(Duration::from_secs(30)) {
        if l.starts_with("logged in") {
            println!("  {transport}: restarted client {l}");
        } else if let Some(n) = l
            .strip_prefix("progress ")
            .and_then(|n| n.parse::<u32>().ok())
        {
            let pct = (n as u64 * 100 / count.max(1) as u64).min(100);
            if pct % 25 == 0 && pct < 100 {
                println!("  {transport}: {pct}%");
            }
        } else if l.starts_with("done:") {
            println!("  {transport}: 100%, every echo checked");
            done = Some(l);
        } else if l.starts_with("error") || l.starts_with("bad echo") {
            return Err(format!("{transport} client: {l}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{transport} run did not finish in time"));
        }
    }
    let status = c.child.wait().map_err(|e| e.to_string())?;
    let done =
        done.ok_or_else(|| format!("{transport} client exited without finishing ({status})"))?;
    Ok(RunResult {
        transport,
        messages: field(&done, "messages").unwrap_or(0) as u32,
        p50: field(&done, "rtt_p50_ns").unwrap_or(0),
        p99: field(&done, "rtt_p99_ns").unwrap_or(0),
        recovered: status.success(),
        killed_at,
    })
}

pub fn run(a: Args) -> Result<(), String> {
    let pid = std::process::id() % 1_000_000;
    let (server, work, temp) = match &a.keep {
        Some(d) => (format!("demo{pid}"), d.clone(), false),
        None => (
            format!("demo{pid}"),
            std::env::temp_dir().join(format!("tcpshm-demo-{pid}")),
            true,
        ),
    };
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let shm_ok = a.shm_dir.is_dir();
    let clients = [format!("dt{pid}"), format!("ds{pid}")];
    println!(
        "tcpshm demo: an echo server and a client on this host, {} ping-pong messages per run",
        a.count
    );
    println!(
        "  starting echo-server {server} (files in {})",
        work.display()
    );
    let srv = Proc::spawn(&[
        "echo-server".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--name".into(),
        server.clone(),
        "--dir".into(),
        work.join("server").display().to_string(),
        "--shm-dir".into(),
        a.shm_dir.display().to_string(),
        "--shm-groups".into(),
        if shm_ok { "1" } else { "0" }.into(),
    ])?;
    let first = srv.line(Duration::from_secs(10)).unwrap_or_default();
    let addr = first
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .ok_or_else(|| format!("echo-server did not start: {first}"))?
        .to_string();
    println!("  server listening on {addr}");
    let mut results = Vec::new();
    let mut outcome = Ok(());
    for (i, shm) in [false, true].into_iter().enumerate() {
        if shm && !shm_ok {
            println!("  shm: skipped ({} does not exist)", a.shm_dir.display());
            continue;
        }
        println!(
            "  {} run: client {}",
            if shm { "shm" } else { "tcp" },
            clients[i]
        );
        match client_run(shm, &addr, &clients[i], &work, a.count, &a.shm_dir) {
            Ok(r) => results.push(r),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    drop(srv);
    // Clean up unless asked to keep.
    for c in &clients {
        for (s, r) in [(&server, c), (c, &server)] {
            if temp || a.keep.is_none() {
                let _ = std::fs::remove_file(a.shm_dir.join(format!("{s}_{r}.shm")));
            }
        }
    }
    if temp {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        println!("  files kept in {}", work.display());
    }
    outcome?;
    println!();
    println!("  transport  messages  RTT p50     RTT p99     killed at  recovered");
    for r in &results {
        println!(
            "  {:<9}  {:>8}  {:<10}  {:<10}  {:>9}  {}",
            r.transport,
            r.messages,
            fmt_ns(r.p50 as f64),
            fmt_ns(r.p99 as f64),
            r.killed_at,
            if r.recovered {
                "yes, every echo once, in order"
            } else {
                "NO"
            }
        );
    }
    println!("  (RTT measured by the restarted client over the rest of the run)");
    if results.iter().all(|r| r.recovered) {
        Ok(())
    } else {
        Err("a run did not recover".into())
    }
}
