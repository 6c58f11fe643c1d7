//! The stats file the echo programs publish beside their queue files,
//! `<dir>/<name>.stats`, and the `tcpshm stats` command that shows it.
//!
//! The file is JSON (schema in README), rewritten every second by writing
//! `<name>.stats.tmp` and renaming it over the old one: a reader always
//! sees a whole file, with no locking.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tcpshm::ConnStats;

/// Version of the stats file and of `tcpshm stats --json`.
pub const SCHEMA: u32 = 1;

/// How often the echo programs publish.
pub const EVERY_NS: i64 = 1_000_000_000;

fn conn_json(peer: &str, s: &ConnStats, now: i64) -> Value {
    json!({
        "peer": peer,
        "transport": s.transport.map(|t| if t.is_shm() { "shm" } else { "tcp" }),
        "connected": s.connected,
        "msgs_sent": s.msgs_sent,
        "bytes_sent": s.bytes_sent,
        "msgs_received": s.msgs_received,
        "bytes_received": s.bytes_received,
        "acked": s.acked,
        "pending": s.pending,
        "resent": s.resent,
        "sessions": s.sessions,
        "reconnects": s.sessions.saturating_sub(1),
        "heartbeats_sent": s.heartbeats_sent,
        "queue_fill": s.queue_fill,
        "last_close": s.last_close.map(|c| c.reason.to_string()),
        "last_close_errno": s.last_close.map(|c| c.os_error.unwrap_or(0)),
        "heard_ago_ns": s.last_heard.map(|t| now.saturating_sub(t).max(0)),
    })
}

/// Writes `<dir>/<name>.stats` for `process` with its connections.
pub fn publish(dir: &Path, process: &str, name: &str, conns: &[(String, ConnStats)], now: i64) {
    let v = json!({
        "schema": SCHEMA,
        "process": process,
        "name": name,
        "pid": std::process::id(),
        "updated_unix_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "connections": conns.iter().map(|(p, s)| conn_json(p, s, now)).collect::<Vec<_>>(),
    });
    let path = dir.join(format!("{name}.stats"));
    let tmp = dir.join(format!("{name}.stats.tmp"));
    // Best effort: statistics never stop the program.
    if std::fs::write(&tmp, v.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directories of the processes (their queue directories), or stats
    /// files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Show again every --interval-ms until interrupted (or --iterations).
    #[arg(long)]
    pub watch: bool,
    /// Milliseconds between two --watch refreshes.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// With --watch: stop after this many refreshes (0: never).
    #[arg(long, default_value_t = 0)]
    pub iterations: u64,
    /// Machine-readable output: the stats files as read (schema in README).
    #[arg(long)]
    pub json: bool,
}

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().and_then(|x| x.to_str()) == Some("stats"))
                .collect();
            v.sort();
            out.extend(v);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    if out.is_empty() {
        return Err("no stats files (*.stats) found: the echo programs write one into their --dir every second".into());
    }
    Ok(out)
}

fn read(path: &Path) -> Value {
    match std::fs::read_to_string(path).map(|t| serde_json::from_str::<Value>(&t)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => json!({"path": path, "error": format!("not a stats file: {e}")}),
        Err(e) => json!({"path": path, "error": e.to_string()}),
    }
}

fn show(vals: &[Value]) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    println!(
        "{:<20} {:<8} {:<14} {:<4} {:>4} {:>12} {:>12} {:>10} {:>8} {:>7} {:>6} {:>6} {:>6} {:>9}  last close",
        "process", "pid", "peer", "via", "up", "sent", "received", "acked", "pending", "resent", "recon", "hbeats", "fill%", "heard"
    );
    for v in vals {
        if let Some(e) = v.get("error") {
            println!("{}: {e}", v["path"]);
            continue;
        }
        let age = now_ms - v["updated_unix_ms"].as_i64().unwrap_or(0);
        let who = format!(
            "{} {}",
            v["process"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("?")
        );
        let stale = if age > 3000 {
            format!(" (stale: updated {}s ago; process gone?)", age / 1000)
        } else {
            String::new()
        };
        let conns = v["connections"].as_array().cloned().unwrap_or_default();
        if conns.is_empty() {
            println!("{who:<20} {:<8} (no connections){stale}", v["pid"]);
        }
        for c in conns {
            let n = |k: &str| c[k].as_u64().map_or("-".to_string(), |x| x.to_string());
            let heard = c["heard_ago_ns"]
                .as_i64()
                .map_or("-".to_string(), |ns| crate::util::fmt_ns(ns as f64));
            println!(
                "{who:<20} {:<8} {:<14} {:<4} {:>4} {:>12} {:>12} {:>10} {:>8} {:>7} {:>6} {:>6} {:>6.1} {:>9}  {}{stale}",
                v["pid"].to_string(),
                c["peer"].as_str().unwrap_or("?"),
                c["transport"].as_str().unwrap_or("-"),
                if c["connected"].as_bool() == Some(true) { "yes" } else { "no" },
                n("msgs_sent"),
                n("msgs_received"),
                n("acked"),
                n("pending"),
                n("resent"),
                n("reconnects"),
                n("heartbeats_sent"),
                100.0 * c["queue_fill"].as_f64().unwrap_or(0.0),
                heard,
                c["last_close"].as_str().unwrap_or("-"),
            );
        }
    }
}

pub fn run(a: Args) -> Result<(), String> {
    crate::util::catch_stop_signals();
    let mut n = 0;
    loop {
        let vals: Vec<Value> = files(&a.paths)?.iter().map(|p| read(p)).collect();
        if a.json {
            println!("{}", json!({"schema": SCHEMA, "processes": vals}));
        } else {
            show(&vals);
        }
        n += 1;
        if !a.watch || (a.iterations > 0 && n >= a.iterations) || crate::util::stopping() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(a.interval_ms));
        if crate::util::stopping() {
            return Ok(());
        }
        if !a.json {
            println!();
        }
    }
}
