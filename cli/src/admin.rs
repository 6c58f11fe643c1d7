//! Operating commands: `inspect`, `clean`, `reset`, `import-cpp`, thin
//! layers over `tcpshm::admin`: it reads files without disturbing live
//! processes, and changes one only after taking its lock.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tcpshm::admin::{self, BellReport, QueueFileReport, ShmReport};
use tcpshm::Name;

use crate::util::CliError;

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
    /// Remove the pair LOCAL/REMOTE too (current pairs are otherwise
    /// always kept). LOCAL_REMOTE works where the names hold no `_`.
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
    /// The pair, LOCAL/REMOTE (this side's name, then the peer's).
    /// LOCAL_REMOTE, as in the file name LOCAL_REMOTE.ptcp, works where
    /// the names hold no `_`.
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

fn pair_strings(p: Option<(Name, Name)>) -> (Option<String>, Option<String>) {
    match p {
        Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
        None => (None, None),
    }
}

fn queue_json(r: &QueueFileReport, messages: bool) -> Value {
    let (local, remote) = pair_strings(r.pair);
    let mut v = json!({
        "path": r.path,
        "local": local,
        "remote": remote,
        "format": r.format.to_string(),
        "capacity": r.capacity,
        "held": r.held,
        "holder_pids": r.holder_pids,
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
    let (sender, receiver) = pair_strings(r.pair);
    json!({
        "path": r.path,
        "sender": sender,
        "receiver": receiver,
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

fn bell_json(r: &BellReport) -> Value {
    json!({
        "path": r.path,
        "server": r.owner.map(|(s, _)| s.to_string()),
        "group": r.owner.map(|(_, g)| g),
        "slots": r.slots,
        "rung": r.rung,
        "held": r.held,
        "problem": r.problem,
    })
}

fn print_bell(r: &BellReport) {
    println!("{}", r.path.display());
    if let Some((s, g)) = &r.owner {
        println!("  doorbell    of server {s}, SHM group {g}");
    }
    if let Some(p) = &r.problem {
        println!("  PROBLEM     {p}");
        return;
    }
    println!(
        "  slots       {}, {} rung and not yet taken",
        r.slots, r.rung
    );
    println!(
        "  held        {}",
        if r.held {
            "yes (the server is running)"
        } else {
            "no (its server is not running: `tcpshm clean` removes it)"
        }
    );
}

fn print_queue(r: &QueueFileReport, messages: bool) {
    println!("{}", r.path.display());
    match &r.pair {
        Some((l, rm)) => println!("  pair        {l} -> {rm}"),
        None => {
            println!("  pair        unknown (names with '_': the name splits more than one way)")
        }
    }
    println!("  format      {}, {} bytes", r.format, r.capacity);
    println!("  held        {}", held_text(&r.holder_pids, r.held));
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

pub fn inspect(a: InspectArgs) -> Result<(), CliError> {
    let mut queues = Vec::new();
    let mut shms = Vec::new();
    let mut bells = Vec::new();
    let mut lasts = Vec::new();
    for p in &a.paths {
        if p.is_dir() {
            let r = admin::dir(p, &a.shm_dir)?;
            if r.queues.is_empty() && r.shm.is_empty() && r.last_servers.is_empty() {
                return Err(CliError::Usage(format!(
                    "{}: no queue files (*.ptcp) here; is it the directory given to Client::new or Server::new?",
                    p.display()
                )));
            }
            queues.extend(r.queues);
            shms.extend(r.shm);
            lasts.extend(
                r.last_servers
                    .into_iter()
                    .map(|(c, s)| (p.join(format!("{c}.lastserver")), s)),
            );
        } else if !p.exists() {
            return Err(CliError::Usage(format!(
                "{}: no such file or directory",
                p.display()
            )));
        } else if p.extension().is_some_and(|x| x == "shm") {
            shms.push(admin::shm_object(p));
        } else if p.extension().is_some_and(|x| x == "bell") {
            bells.push(admin::doorbell(p));
        } else {
            queues.push(admin::queue_file(p));
        }
    }
    if a.json {
        let v = json!({
            "schema": JSON_SCHEMA,
            "queues": queues.iter().map(|q| queue_json(q, a.messages)).collect::<Vec<_>>(),
            "shm": shms.iter().map(shm_json).collect::<Vec<_>>(),
            "bells": bells.iter().map(bell_json).collect::<Vec<_>>(),
            "last_server": lasts.iter().map(|(p, n)| json!({"path": p, "server": n.map(|n| n.to_string()).unwrap_or_default()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    for (p, n) in &lasts {
        let n = n.map_or_else(|| "(none)".to_string(), |n| n.to_string());
        println!("{}\n  last server {n}", p.display());
    }
    for q in &queues {
        print_queue(q, a.messages);
    }
    for s in &shms {
        print_shm(s);
    }
    for b in &bells {
        print_bell(b);
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

/// A pair given as `LOCAL/REMOTE` (a `/` is never in a name), or as
/// `LOCAL_REMOTE` where that splits only one way.
pub fn parse_pair(s: &str) -> Result<(Name, Name), String> {
    let name = |x: &str| Name::new(x).map_err(|e| format!("pair {s:?}: {x:?}: {e}"));
    if let Some((l, r)) = s.split_once('/') {
        return Ok((name(l)?, name(r)?));
    }
    let splits: Vec<_> = s
        .match_indices('_')
        .filter_map(|(i, _)| Some((Name::new(&s[..i]).ok()?, Name::new(&s[i + 1..]).ok()?)))
        .collect();
    match splits.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("pair {s:?}: expected LOCAL/REMOTE")),
        _ => Err(format!(
            "pair {s:?} splits more than one way (names with '_'): write LOCAL/REMOTE"
        )),
    }
}

pub fn clean(a: CleanArgs) -> Result<(), CliError> {
    let older = a
        .older_than
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(CliError::Usage)?;
    if a.dirs.is_empty() && older.is_none() {
        return Err(CliError::Usage(
            "nothing to look at: give --dir DIR (repeatable) and/or --older-than".into(),
        ));
    }
    let pairs = a
        .pair
        .iter()
        .map(|p| parse_pair(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Usage)?;
    let stale = admin::stale_files(&a.dirs, &a.shm_dir, older, &pairs)?;
    let mut out = Vec::new();
    for c in &stale {
        let status = if c.held {
            "kept: a live process holds it".to_string()
        } else if !a.yes {
            "would remove".to_string()
        } else {
            match admin::remove(&c.path) {
                Ok(()) => "removed".into(),
                Err(e) if e.is_in_use() => "kept: a live process took it".into(),
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
                "path": c.path, "bytes": c.bytes, "reason": c.reason, "status": st,
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
            c.bytes,
            c.path.display(),
            c.reason
        );
        if st == "would remove" || st == "removed" {
            total += c.bytes;
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

pub fn reset(a: ResetArgs) -> Result<(), CliError> {
    let (local, remote) = parse_pair(&a.pair).map_err(CliError::Usage)?;
    let done = admin::reset_pair(&a.dir, &a.shm_dir, &local, &remote).map_err(|e| {
        CliError::Failed(format!(
            "{}: stop the process using it first",
            CliError::from(e)
        ))
    })?;
    println!(
        "moved the files of pair {local}/{remote} to {}",
        done.backup.display()
    );
    if done.forgot_last_server {
        println!("{local} forgot its last server {remote}: at its next login both sides start the pair afresh (sequence 0)");
    } else {
        println!("this side starts the pair afresh at the next login; reset the client's side too (tcpshm reset on its directory) so the server does");
    }
    println!(
        "inspect the old files with: tcpshm inspect {}",
        done.backup.display()
    );
    Ok(())
}

pub fn import_cpp(a: ImportArgs) -> Result<(), CliError> {
    let r = admin::import_cpp(&a.file, &a.dir, a.capacity).map_err(|e| match &e.kind {
        tcpshm::FileErrorKind::Exists => CliError::Usage(format!(
            "{} exists: move it away first (tcpshm reset), the import never overwrites",
            e.path.display()
        )),
        _ => CliError::from(e),
    })?;
    println!(
        "imported {}: {} pending messages (sequence {}..{}), local ack {}, into {} ({} bytes)",
        a.file.display(),
        r.pending(),
        r.seq_start,
        r.seq_end,
        r.local_ack,
        r.path.display(),
        r.capacity
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

    #[test]
    fn pairs() {
        let n = |s: &str| Name::new(s).unwrap();
        assert_eq!(parse_pair("c1_srv").unwrap(), (n("c1"), n("srv")));
        assert_eq!(parse_pair("desk_1/srv").unwrap(), (n("desk_1"), n("srv")));
        assert!(parse_pair("desk_1_srv")
            .unwrap_err()
            .contains("more than one way"));
        assert!(parse_pair("nounderscore").is_err());
    }
}
