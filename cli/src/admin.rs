//! Operating commands: `inspect`, `clean`, `reset`, `import-cpp`. Each
//! reads files without disturbing live processes (`tcpshm::inspect`), and
//! changes one only after taking its lock (`tcpshm::pair_files`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tcpshm::cpp_ptcp::CppQueue;
use tcpshm::inspect::{self, QueueFileReport, ShmReport};
use tcpshm::pair_files::{self, PairPaths};
use tcpshm::ptcp_queue::PtcpQueue;
use tcpshm::sys::files;
use tcpshm::sys::MapOptions;

/// Version of the `--json` output of `inspect` and `clean`.
const JSON_SCHEMA: u32 = 1;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Queue directories, `.ptcp` files or shm objects (`.shm`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Directory of shared-memory objects (for the pairs of a directory).
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// List the pending messages: sequence number, type, size, first bytes.
    #[arg(long)]
    pub messages: bool,
    /// Machine-readable output (schema in README).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CleanArgs {
    /// Queue directories to look in (repeatable).
    #[arg(long = "dir")]
    pub dirs: Vec<PathBuf>,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Also remove files not modified for this long (e.g. 30m, 12h, 7d),
    /// except the current pair of a client directory.
    #[arg(long)]
    pub older_than: Option<String>,
    /// Remove the current pair LOCAL_REMOTE too (its files are otherwise
    /// always kept).
    #[arg(long)]
    pub pair: Vec<String>,
    /// Remove; without it, only list what would be removed.
    #[arg(long)]
    pub yes: bool,
    /// Machine-readable output (schema in README).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// The queue directory of the side to reset.
    #[arg(long)]
    pub dir: PathBuf,
    /// The pair, LOCAL_REMOTE (as in the file name LOCAL_REMOTE.ptcp).
    #[arg(long)]
    pub pair: String,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The C++ library's `.ptcp` file.
    pub file: PathBuf,
    /// The queue directory to write this project's file into (same name).
    #[arg(long)]
    pub dir: PathBuf,
    /// Capacity of the new file in bytes (`Config::tcp_queue_size` of the
    /// process that will use it; default: the C++ file's).
    #[arg(long)]
    pub capacity: Option<usize>,
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn held_text(pids: &[i32], held: bool) -> String {
    match (held, pids.is_empty()) {
        (false, _) => "no".into(),
        (true, true) => "yes (a live process)".into(),
        (true, false) => format!(
            "yes (pid {})",
            pids.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn queue_json(r: &QueueFileReport, messages: bool) -> Value {
    let pids: Vec<i32> = r.held.iter().filter_map(|h| h.pid).collect();
    let mut v = json!({
        "path": r.path,
        "local": r.pair.as_ref().map(|p| &p.0),
        "remote": r.pair.as_ref().map(|p| &p.1),
        "format": r.format.to_string(),
        "capacity": r.capacity,
        "held": r.is_held(),
        "holder_pids": pids,
        "local_ack": r.local_ack,
        "seq_start": r.seq_start,
        "seq_end": r.seq_end,
        "acked": r.seq_start,
        "pending": r.pending(),
        "pending_bytes": r.pending_bytes,
        "fill": r.fill,
        "problem": r.problem,
    });
    if messages {
        v["messages"] = r
            .messages
            .iter()
            .map(|m| json!({"seq": m.seq, "type": m.msg_type, "len": m.len, "head_hex": hex(&m.head)}))
            .collect();
    }
    v
}

fn shm_json(r: &ShmReport) -> Value {
    json!({
        "path": r.path,
        "sender": r.pair.as_ref().map(|p| &p.0),
        "receiver": r.pair.as_ref().map(|p| &p.1),
        "capacity": r.capacity,
        "write_idx": r.write_idx,
        "read_idx": r.read_idx,
        "fill": r.fill,
        "ring": if r.fast_from.is_some() { "fast path" } else { "v1" },
        "fast_from": r.fast_from,
        "writer_held": r.writer_held,
        "reader_held": r.reader_held,
        "problem": r.problem,
    })
}

fn print_queue(r: &QueueFileReport, messages: bool) {
    println!("{}", r.path.display());
    if let Some((l, rm)) = &r.pair {
        println!("  pair        {l} -> {rm}");
    }
    let pids: Vec<i32> = r.held.iter().filter_map(|h| h.pid).collect();
    println!("  format      {}, {} bytes", r.format, r.capacity);
    println!("  held        {}", held_text(&pids, r.is_held()));
    if let Some(p) = &r.problem {
        println!("  PROBLEM     {p}");
        return;
    }
    println!(
        "  sequence    {}..{}: {} pending ({} bytes, {:.1}% full), {} acked",
        r.seq_start,
        r.seq_end,
        r.pending(),
        r.pending_bytes,
        100.0 * r.fill,
        r.seq_start
    );
    println!(
        "  local ack   {} (messages consumed from the peer)",
        r.local_ack
    );
    if messages {
        for m in &r.messages {
            println!(
                "    seq {:<10} type {:<5} {:>5} B  {}",
                m.seq,
                m.msg_type,
                m.len,
                hex(&m.head)
            );
        }
    }
}

fn print_shm(r: &ShmReport) {
    println!("{}", r.path.display());
    if let Some((s, rc)) = &r.pair {
        println!("  ring        {s} -> {rc}");
    }
    if let Some(p) = &r.problem {
        println!("  PROBLEM     {p}");
        return;
    }
    println!(
        "  indices     write {} read {}: {:.1}% full of {} bytes",
        r.write_idx,
        r.read_idx,
        100.0 * r.fill,
        r.capacity
    );
    println!(
        "  format      {}",
        match r.fast_from {
            Some(f) => format!("v1 ring, fast path announced from block {f}"),
            None => "v1 ring".into(),
        }
    );
    println!(
        "  held        writer {}, reader {}",
        if r.writer_held { "yes" } else { "no" },
        if r.reader_held { "yes" } else { "no" }
    );
}

/// What a queue directory holds: its queue files, the shm objects of
/// their pairs, and the last server names (file, name) of its clients.
struct DirEntries {
    ptcp: Vec<PathBuf>,
    shm: Vec<PathBuf>,
    last: Vec<(PathBuf, String)>,
}

/// Files of a directory: queue files, last server names, and the shm
/// objects of its pairs.
fn dir_entries(dir: &Path, shm_dir: &Path) -> Result<DirEntries, String> {
    let mut ptcp = Vec::new();
    let mut last = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        match p.extension().and_then(|x| x.to_str()) {
            Some("ptcp") => ptcp.push(p),
            Some("lastserver") => {
                let b = std::fs::read(&p).unwrap_or_default();
                let name: String = b
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as char)
                    .collect();
                last.push((p, name));
            }
            _ => {}
        }
    }
    ptcp.sort();
    let mut shm = Vec::new();
    for q in &ptcp {
        if let Some((l, r)) = inspect::split_pair(q) {
            let pp = PairPaths::new(dir, shm_dir, &l, &r);
            for s in [pp.shm_out, pp.shm_in] {
                if s.exists() && !shm.contains(&s) {
                    shm.push(s);
                }
            }
        }
    }
    Ok(DirEntries { ptcp, shm, last })
}

pub fn inspect(a: InspectArgs) -> Result<(), String> {
    let mut queues = Vec::new();
    let mut shms = Vec::new();
    let mut lasts = Vec::new();
    for p in &a.paths {
        if p.is_dir() {
            let DirEntries {
                ptcp: q,
                shm: s,
                last: l,
            } = dir_entries(p, &a.shm_dir)?;
            if q.is_empty() && s.is_empty() && l.is_empty() {
                return Err(format!(
                    "{}: no queue files (*.ptcp) here; is it the directory given to Client::new or Server::new?",
                    p.display()
                ));
            }
            queues.extend(q.iter().map(|q| inspect::queue_file(q)));
            shms.extend(s.iter().map(|s| inspect::shm_object(s)));
            lasts.extend(l);
        } else if !p.exists() {
            return Err(format!("{}: no such file or directory", p.display()));
        } else {
            match inspect::kind_of(p) {
                Some("shm") => shms.push(inspect::shm_object(p)),
                _ => queues.push(inspect::queue_file(p)),
            }
        }
    }
    if a.json {
        let v = json!({
            "schema": JSON_SCHEMA,
            "queues": queues.iter().map(|q| queue_json(q, a.messages)).collect::<Vec<_>>(),
            "shm": shms.iter().map(shm_json).collect::<Vec<_>>(),
            "last_server": lasts.iter().map(|(p, n)| json!({"path": p, "server": n})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    for (p, n) in &lasts {
        println!(
            "{}\n  last server {}",
            p.display(),
            if n.is_empty() { "(none)" } else { n }
        );
    }
    for q in &queues {
        print_queue(q, a.messages);
    }
    for s in &shms {
        print_shm(s);
    }
    Ok(())
}

/// "30s", "10m", "12h", "7d".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number and s, m, h or d (e.g. 12h)"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("duration {s:?}: unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n * secs))
}

struct Candidate {
    path: PathBuf,
    size: u64,
    why: String,
}

fn age(p: &Path) -> Option<Duration> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    SystemTime::now().duration_since(m).ok()
}

fn shm_objects(shm_dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(shm_dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| inspect::kind_of(p) == Some("shm") && inspect::split_pair(p).is_some())
        .collect();
    v.sort();
    v
}

pub fn clean(a: CleanArgs) -> Result<(), String> {
    let older = a.older_than.as_deref().map(parse_duration).transpose()?;
    if a.dirs.is_empty() && older.is_none() {
        return Err("nothing to look at: give --dir DIR (repeatable) and/or --older-than".into());
    }
    // Current pairs (client, last server) are kept unless named by --pair.
    let mut current: Vec<(String, String)> = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
    let push = |path: PathBuf, why: String, cands: &mut Vec<Candidate>| {
        if cands.iter().any(|c| c.path == path) {
            return;
        }
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        cands.push(Candidate { path, size, why });
    };
    let named = |l: &str, r: &str| a.pair.iter().any(|p| *p == format!("{l}_{r}"));
    let mut ptcps = Vec::new();
    for d in &a.dirs {
        let DirEntries {
            ptcp, last: lasts, ..
        } = dir_entries(d, &a.shm_dir)?;
        for (p, server) in &lasts {
            let client = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            if !server.is_empty() {
                current.push((client.clone(), server.clone()));
            }
        }
        ptcps.extend(ptcp.into_iter().map(|p| (d.clone(), p)));
    }
    let is_current = |l: &str, r: &str| {
        current
            .iter()
            .any(|(c, s)| (c == l && s == r) || (c == r && s == l))
    };
    for (d, p) in &ptcps {
        let Some((l, r)) = inspect::split_pair(p) else {
            continue;
        };
        if is_current(&l, &r) && !named(&l, &r) {
            continue;
        }
        let prev = current.iter().find(|(c, s)| *c == l && *s != r);
        if let Some((_, s)) = prev {
            push(
                p.clone(),
                format!("previous server name of client {l} (now {s})"),
                &mut cands,
            );
            let pp = PairPaths::new(d, &a.shm_dir, &l, &r);
            for s2 in [pp.shm_out, pp.shm_in] {
                if s2.exists() {
                    push(s2, format!("shm of {l}'s previous server {r}"), &mut cands);
                }
            }
        } else if named(&l, &r) {
            push(p.clone(), "asked for by --pair".into(), &mut cands);
        } else if let Some(lim) = older {
            if age(p).is_some_and(|x| x > lim) {
                push(
                    p.clone(),
                    format!(
                        "not modified for over {}",
                        a.older_than.as_deref().unwrap_or("")
                    ),
                    &mut cands,
                );
            }
        }
    }
    // Shm objects of previous server names of the clients seen, and (with
    // --older-than) any old queue object.
    for s in shm_objects(&a.shm_dir) {
        let Some((x, y)) = inspect::split_pair(&s) else {
            continue;
        };
        if is_current(&x, &y) && !named(&x, &y) && !named(&y, &x) {
            continue;
        }
        let prev = current
            .iter()
            .find(|(c, srv)| (*c == x && *srv != y) || (*c == y && *srv != x));
        if let Some((c, srv)) = prev {
            push(
                s.clone(),
                format!("shm of client {c}'s previous server (now {srv})"),
                &mut cands,
            );
        } else if named(&x, &y) || named(&y, &x) {
            push(s.clone(), "asked for by --pair".into(), &mut cands);
        } else if let Some(lim) = older {
            if age(&s).is_some_and(|v| v > lim) {
                push(
                    s.clone(),
                    format!(
                        "not modified for over {}",
                        a.older_than.as_deref().unwrap_or("")
                    ),
                    &mut cands,
                );
            }
        }
    }
    let mut out = Vec::new();
    for c in &cands {
        let held = !files::locks_on(&c.path).unwrap_or_default().is_empty();
        let status = if held {
            "kept: a live process holds it".to_string()
        } else if !a.yes {
            "would remove".to_string()
        } else {
            let roles = (inspect::kind_of(&c.path) == Some("shm")).then_some(c.size);
            match files::take_for_removal(&c.path, roles).and_then(|t| t.remove()) {
                Ok(()) => "removed".into(),
                Err(e) if pair_files::is_in_use(&e) => "kept: a live process took it".into(),
                Err(e) => format!("failed: {e}"),
            }
        };
        out.push((c, status));
    }
    if a.json {
        let v = json!({
            "schema": JSON_SCHEMA,
            "dry_run": !a.yes,
            "files": out.iter().map(|(c, st)| json!({
                "path": c.path, "bytes": c.size, "reason": c.why, "status": st,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    if out.is_empty() {
        println!("nothing stale found");
        return Ok(());
    }
    let mut total = 0;
    for (c, st) in &out {
        println!(
            "{st:<32} {:>10} B  {}  ({})",
            c.size,
            c.path.display(),
            c.why
        );
        if st == "would remove" || st == "removed" {
            total += c.size;
        }
    }
    println!(
        "{} {total} bytes{}",
        if a.yes { "freed" } else { "would free" },
        if a.yes {
            ""
        } else {
            " (dry run: add --yes to remove)"
        }
    );
    Ok(())
}

pub fn reset(a: ResetArgs) -> Result<(), String> {
    let (local, remote) = a
        .pair
        .split_once('_')
        .filter(|(l, r)| !l.is_empty() && !r.is_empty())
        .ok_or_else(|| {
            format!(
                "--pair {}: expected LOCAL_REMOTE, as in LOCAL_REMOTE.ptcp",
                a.pair
            )
        })?;
    let backup = pair_files::reset_pair(&a.dir, &a.shm_dir, local, remote)
        .map_err(|e| format!("{e}: stop the process using it first"))?;
    // A client directory whose last server is this remote: forget it too,
    // so the next login makes the server start its side afresh as well.
    let last = a.dir.join(format!("{local}.lastserver"));
    let names_remote = std::fs::read(&last)
        .map(|b| {
            b.iter()
                .take_while(|&&c| c != 0)
                .copied()
                .collect::<Vec<u8>>()
                == remote.as_bytes()
        })
        .unwrap_or(false);
    if names_remote {
        files::take_for_removal(&last, None)
            .and_then(|t| t.move_to(&backup.join(format!("{local}.lastserver"))))
            .map_err(|e| format!("{e}: stop the process using it first"))?;
    }
    println!(
        "moved the files of pair {local}_{remote} to {}",
        backup.display()
    );
    if names_remote {
        println!("{local} forgot its last server {remote}: at its next login both sides start the pair afresh (sequence 0)");
    } else {
        println!("this side starts the pair afresh at the next login; reset the client's side too (tcpshm reset on its directory) so the server does");
    }
    println!(
        "inspect the old files with: tcpshm inspect {}",
        backup.display()
    );
    Ok(())
}

pub fn import_cpp(a: ImportArgs) -> Result<(), String> {
    let q = CppQueue::read_file(&a.file)?;
    let name = a
        .file
        .file_name()
        .ok_or_else(|| format!("{}: not a file", a.file.display()))?;
    let out = a.dir.join(name);
    if out.exists() {
        return Err(format!(
            "{} exists: move it away first (tcpshm reset), the import never overwrites",
            out.display()
        ));
    }
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let capacity = a.capacity.unwrap_or(q.capacity);
    let (mut pq, mut ack) =
        PtcpQueue::open_file(&out, capacity, MapOptions::default()).map_err(|e| e.to_string())?;
    pq.restart_at(&mut ack, q.read_seq, q.ack_seq);
    for (i, (h, p)) in q.messages.iter().enumerate() {
        let Some(buf) = pq.alloc(h.msg_type, p.len()) else {
            drop((pq, ack));
            let _ = std::fs::remove_file(&out);
            return Err(format!(
                "message {} of {} does not fit a queue of {capacity} bytes: give a larger --capacity",
                i + 1,
                q.messages.len()
            ));
        };
        buf.copy_from_slice(p);
        pq.push();
    }
    let (s, e) = pq.seq_range();
    println!(
        "imported {}: {} pending messages (sequence {s}..{e}), local ack {}, into {} ({capacity} bytes)",
        a.file.display(),
        q.messages.len(),
        q.ack_seq,
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
