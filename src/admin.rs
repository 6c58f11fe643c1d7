//! The operator's side of tcpshm, as a library: what is in queue files,
//! shared-memory objects and doorbells ([`queue_file`], [`shm_object`],
//! [`doorbell`], [`dir`]),
//! which files are stale ([`stale_files`], [`remove`]), moving a pair
//! aside to start it afresh ([`reset_pair`]), and carrying a C++
//! library's queue file over ([`import_cpp`]). The `tcpshm` command's
//! `inspect`, `clean`, `reset` and `import-cpp` are thin layers over it.
//!
//! Reading never changes a file and takes no lock, so a live process is
//! never disturbed: a file read while a process writes it may be caught
//! in between, and its report says so. Changing a file (remove, reset)
//! takes its lock first, so a file a live process holds is never
//! touched.
//!
//! A queue file is read with the very code that opens it for real, so
//! what is reported is what a login would find. Nothing here panics on a
//! broken file: that is a report with a `problem`.
//!
//! Names may contain `_`, so a file name `a_b_c.ptcp` may be the pair
//! `a_b`/`c` or `a`/`b_c`: a pair is reported only where the file's
//! recorded pair tag, or a name the directory tells (a client's
//! `.lastserver`), settles it.
#![forbid(unsafe_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, SystemTime};

use crate::cpp_ptcp::{self, CppQueue};
use crate::doorbell;
use crate::error::{FileError, FileErrorKind};
use crate::pair_files::{self, pair_tag, TagCheck};
use crate::ptcp_queue::{pair_tag32, PtcpQueue, FILE_HEADER_SIZE};
use crate::shm_queue::{self, BLOCK, TRAILER};
use crate::sys::files::{self, LockKind};
use crate::sys::{HeapRegion, MapOptions};
use crate::wire::{MsgHeader, Name, HEADER_SIZE};

/// Bytes of payload a message summary keeps.
const HEAD_BYTES: usize = 16;

/// One pending message of a queue file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MsgSummary {
    /// Its sequence number.
    pub seq: u32,
    /// Its type.
    pub msg_type: u16,
    /// Payload bytes.
    pub len: usize,
    /// The first payload bytes (at most 16).
    pub head: Vec<u8>,
}

/// The layout of a queue file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueFormat {
    /// This project's (`docs/protocol.md`, "The send queue file"), with its
    /// format version.
    Tcpshm(u32),
    /// The C++ library's (`docs/cpp-interop.md`).
    Cpp,
    /// Neither.
    Unknown,
}

impl std::fmt::Display for QueueFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueFormat::Tcpshm(v) => write!(f, "tcpshm v{v}"),
            QueueFormat::Cpp => f.write_str("C++"),
            QueueFormat::Unknown => f.write_str("unknown"),
        }
    }
}

/// A `.ptcp` send-queue file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QueueFileReport {
    /// The file.
    pub path: PathBuf,
    /// `(local, remote)` of the file name `<local>_<remote>.ptcp`, where
    /// the file's pair tag or the directory settles how it splits.
    pub pair: Option<(Name, Name)>,
    /// Its layout.
    pub format: QueueFormat,
    /// Bytes of the message area.
    pub capacity: usize,
    /// Messages this side has consumed from the peer.
    pub local_ack: u32,
    /// Sequence number of the oldest unacknowledged message: also how many
    /// of this side's messages the peer has acknowledged since the pair
    /// started (mod 2^32).
    pub seq_start: u32,
    /// One past the newest message.
    pub seq_end: u32,
    /// Payload and header bytes of the pending messages.
    pub pending_bytes: usize,
    /// Share of the message area in use (0 to 1).
    pub fill: f64,
    /// Whether a live process holds it.
    pub held: bool,
    /// The processes holding it, where the kernel tells them.
    pub holder_pids: Vec<i32>,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
    /// The pending messages, oldest first.
    pub messages: Vec<MsgSummary>,
}

impl QueueFileReport {
    /// Messages pushed and not acknowledged.
    pub fn pending(&self) -> u32 {
        self.seq_end.wrapping_sub(self.seq_start)
    }
}

fn stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
}

/// The client names (and their last servers) a directory's `.lastserver`
/// files tell.
fn last_servers(dir: &Path) -> Vec<(Name, Option<Name>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("lastserver"))
        .filter_map(|p| {
            let client = Name::new(stem(&p)).ok()?;
            let b = std::fs::read(&p).unwrap_or_default();
            let mut field = [0u8; 16];
            let n = b.len().min(16);
            field[..n].copy_from_slice(&b[..n]);
            Some((client, Name::from_wire_opt(&field).ok().flatten()))
        })
        .collect();
    v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    v
}

/// The names a directory tells: its clients and their last servers.
fn known_names(dir: &Path) -> Vec<Name> {
    last_servers(dir)
        .into_iter()
        .flat_map(|(c, s)| std::iter::once(c).chain(s))
        .collect()
}

fn summaries(start: u32, msgs: impl Iterator<Item = (MsgHeader, Vec<u8>)>) -> Vec<MsgSummary> {
    msgs.enumerate()
        .map(|(i, (h, p))| MsgSummary {
            seq: start.wrapping_add(i as u32),
            msg_type: h.msg_type,
            len: p.len(),
            head: p[..p.len().min(HEAD_BYTES)].to_vec(),
        })
        .collect()
}

/// Reads the queue file at `path` (ours or the C++ library's).
pub fn queue_file(path: &Path) -> QueueFileReport {
    let held = files::locks_on(path).unwrap_or_default();
    let mut r = QueueFileReport {
        path: path.into(),
        pair: None,
        format: QueueFormat::Unknown,
        capacity: 0,
        local_ack: 0,
        seq_start: 0,
        seq_end: 0,
        pending_bytes: 0,
        fill: 0.0,
        held: !held.is_empty(),
        holder_pids: held.iter().filter_map(|h| h.pid).collect(),
        problem: None,
        messages: Vec::new(),
    };
    let known = path.parent().map(known_names).unwrap_or_default();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            r.problem = Some(format!("cannot read: {e}"));
            return r;
        }
    };
    let live = if r.held {
        " (a live process holds it: it may have changed while read; run again)"
    } else {
        ""
    };
    if bytes.starts_with(b"TCPSHMPQ") {
        r.format = QueueFormat::Tcpshm(u32::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11],
        ]));
        r.capacity = bytes.len().saturating_sub(FILE_HEADER_SIZE);
        match PtcpQueue::open(HeapRegion::with_contents(bytes.len(), &bytes)) {
            Ok((q, _ack)) => {
                let t = q.pair_tag();
                let is = |a: &Name, b: &Name| pair_tag32(pair_tag(a, b)) == t;
                let tag_is: Option<TagCheck<'_>> = (t != 0).then_some(&is);
                r.pair = pair_files::pair_of(stem(path), tag_is, &known);
                let (s, e) = q.seq_range();
                r.seq_start = s;
                r.seq_end = e;
                r.local_ack = q.local_ack();
                let data = q.sendable();
                r.pending_bytes = data.len();
                r.fill = data.len() as f64 / r.capacity.max(1) as f64;
                let mut off = 0;
                let mut msgs = Vec::new();
                while let Ok(h) = MsgHeader::decode(&data[off..]) {
                    let end = off + h.size as usize;
                    if end > data.len() {
                        break;
                    }
                    msgs.push((h, data[off + HEADER_SIZE..end].to_vec()));
                    off += h.padded_size();
                }
                r.messages = summaries(s, msgs.into_iter());
            }
            Err(why) => r.problem = Some(format!("{why}{live}")),
        }
    } else if cpp_ptcp::has_cpp_size(bytes.len()) {
        r.format = QueueFormat::Cpp;
        r.pair = pair_files::pair_of(stem(path), None, &known);
        r.capacity = bytes.len() - cpp_ptcp::TRAILER;
        match CppQueue::parse(&bytes) {
            Ok(q) => {
                let (s, e) = q.seq_range();
                r.seq_start = s;
                r.seq_end = e;
                r.local_ack = q.ack_seq;
                r.pending_bytes = (q.write_idx - q.read_idx) as usize * 8;
                r.fill = r.pending_bytes as f64 / r.capacity.max(1) as f64;
                r.messages = summaries(s, q.messages.into_iter());
            }
            Err(why) => r.problem = Some(format!("{why}{live}")),
        }
    } else if bytes.iter().all(|&b| b == 0) {
        r.problem = Some("all zero: created and never used".into());
    } else {
        r.problem = Some(format!(
            "not a send queue: no tcpshm magic, and {} bytes is not the size of a C++ one",
            bytes.len()
        ));
    }
    r
}

/// A shared-memory queue object.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShmReport {
    /// The object (normally in /dev/shm).
    pub path: PathBuf,
    /// `(sender, receiver)` of the name `<sender>_<receiver>.shm`, where
    /// the object's pair tag (or a name without `_`) settles the split.
    pub pair: Option<(Name, Name)>,
    /// Bytes of blocks.
    pub capacity: usize,
    /// Blocks published by the writer.
    pub write_idx: u32,
    /// Blocks consumed by the reader.
    pub read_idx: u32,
    /// Share of the ring in use (0 to 1).
    pub fill: f64,
    /// `Some(from)` if a tcpshm writer announced the stamped fast path (see
    /// `docs/shm-fast-path.md`) from index `from`; `None`: v1 only.
    pub fast_from: Option<u32>,
    /// Whether a live writer holds its end.
    pub writer_held: bool,
    /// Whether a live reader holds its end.
    pub reader_held: bool,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// Reads the trailer of the shared-memory queue object at `path`.
pub fn shm_object(path: &Path) -> ShmReport {
    let tag = shm_queue::tag_of(path).unwrap_or(0);
    let is = |a: &Name, b: &Name| pair_tag(a, b) == tag;
    let tag_is: Option<TagCheck<'_>> = (tag != 0).then_some(&is);
    let mut r = ShmReport {
        path: path.into(),
        pair: pair_files::pair_of(stem(path), tag_is, &[]),
        capacity: 0,
        write_idx: 0,
        read_idx: 0,
        fill: 0.0,
        fast_from: None,
        writer_held: false,
        reader_held: false,
        problem: None,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(e) => {
            r.problem = Some(format!("cannot read: {e}"));
            return r;
        }
    };
    for h in files::locks_on(path).unwrap_or_default() {
        if h.kind == LockKind::Ofd {
            r.writer_held |= h.start == len as u64;
            r.reader_held |= h.start == len as u64 + 1;
        }
    }
    let cap = len.saturating_sub(TRAILER);
    if shm_queue::check_capacity(cap).is_err() {
        r.problem = Some(format!(
            "{len} bytes is not a queue: capacity (size - 256) must be a power of two"
        ));
        return r;
    }
    r.capacity = cap;
    let mut t = [0u8; TRAILER];
    match std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut t, cap as u64)) {
        Ok(()) => {}
        Err(e) => {
            r.problem = Some(format!("cannot read: {e}"));
            return r;
        }
    }
    let w32 = |o: usize| u32::from_le_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]]);
    r.write_idx = w32(0);
    r.read_idx = w32(128);
    let ann = u64::from_le_bytes(t[8..16].try_into().expect("8 bytes"));
    if (ann >> 32) as u32 == 0x7473_6631 {
        r.fast_from = Some(ann as u32);
    }
    let used = r.write_idx.wrapping_sub(r.read_idx) as usize;
    let blocks = cap / BLOCK;
    if used > blocks {
        r.problem = Some(format!(
            "indices impossible: write {} is not within {blocks} blocks after read {}",
            r.write_idx, r.read_idx
        ));
    } else {
        r.fill = used as f64 / blocks as f64;
    }
    r
}

/// A server group's doorbell (`<shm_dir>/<server>.<group>.bell`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BellReport {
    /// The object (normally in /dev/shm).
    pub path: PathBuf,
    /// The server and its SHM group, from the name.
    pub owner: Option<(Name, usize)>,
    /// Slots of the group.
    pub slots: u64,
    /// Bits set now: rings the server has not taken yet (0 or a few on a
    /// live server; what is left of the last moment on a stopped one).
    pub rung: u32,
    /// Whether a live server holds it.
    pub held: bool,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// Reads the doorbell at `path`.
pub fn doorbell(path: &Path) -> BellReport {
    let mut r = BellReport {
        path: path.into(),
        owner: pair_files::bell_of(path),
        slots: 0,
        rung: 0,
        held: !files::locks_on(path).unwrap_or_default().is_empty(),
        problem: None,
    };
    match std::fs::read(path) {
        Ok(b) => match doorbell::read_header(&b) {
            Ok((slots, rung)) => (r.slots, r.rung) = (slots, rung),
            Err(why) => r.problem = Some(why),
        },
        Err(e) => r.problem = Some(e.to_string()),
    }
    r
}

/// Whether the path looks like a queue file, an shm object or a
/// doorbell, by name.
fn kind_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "ptcp" => Some("ptcp"),
        "shm" => Some("shm"),
        "bell" => Some("bell"),
        _ => None,
    }
}

/// What a queue directory holds, read as [`queue_file`] and
/// [`shm_object`] read their files.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DirReport {
    /// Its queue files (`*.ptcp`), by name.
    pub queues: Vec<QueueFileReport>,
    /// The shared-memory objects of its pairs that exist.
    pub shm: Vec<ShmReport>,
    /// The clients whose `.lastserver` is here, and the server each last
    /// logged in to.
    pub last_servers: Vec<(Name, Option<Name>)>,
}

/// Reads a queue directory (given to `Client::new` or `Server::new`) and
/// the shared-memory objects of its pairs in `shm_dir`.
///
/// # Errors
/// The directory cannot be read.
pub fn dir(dir: &Path, shm_dir: &Path) -> Result<DirReport, FileError> {
    let rd = std::fs::read_dir(dir).map_err(|e| FileError::io(dir, "read directory", e))?;
    let mut ptcp: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| kind_of(p) == Some("ptcp"))
        .collect();
    ptcp.sort();
    let queues: Vec<QueueFileReport> = ptcp.iter().map(|p| queue_file(p)).collect();
    let mut shm_paths = Vec::new();
    for (l, r) in queues.iter().filter_map(|q| q.pair) {
        let pp = pair_files::PairPaths::new(dir, shm_dir, &l, &r);
        for s in [pp.shm_out, pp.shm_in] {
            if s.exists() && !shm_paths.contains(&s) {
                shm_paths.push(s);
            }
        }
    }
    Ok(DirReport {
        queues,
        shm: shm_paths.iter().map(|p| shm_object(p)).collect(),
        last_servers: last_servers(dir),
    })
}

/// A file [`stale_files`] found: no current pair of a client uses it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stale {
    /// The file or shared-memory object.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Why it is stale.
    pub reason: String,
    /// Whether a live process holds it (then [`remove`] keeps it).
    pub held: bool,
}

fn age(p: &Path) -> Option<Duration> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    SystemTime::now().duration_since(m).ok()
}

/// The files no current pair uses, in the queue directories `dirs` and
/// in `shm_dir`:
/// - the files of a pair of a client (whose `.lastserver` is in `dirs`)
///   with a server name other than its current one;
/// - the files of the pairs in `pairs` (`(local, remote)`), current or
///   not;
/// - with `older_than`, any queue file or object not modified for that
///   long.
///
/// A file named as a client's current pair is always kept (unless named
/// in `pairs`), whatever splitting its name would suggest. Nothing is
/// removed here: see [`remove`].
///
/// # Errors
/// A directory that cannot be read.
pub fn stale_files(
    dirs: &[PathBuf],
    shm_dir: &Path,
    older_than: Option<Duration>,
    pairs: &[(Name, Name)],
) -> Result<Vec<Stale>, FileError> {
    let mut current: Vec<(Name, Name)> = Vec::new();
    let mut ptcp = Vec::new();
    for d in dirs {
        let r = dir(d, shm_dir)?;
        current.extend(r.last_servers.iter().filter_map(|(c, s)| Some((*c, (*s)?))));
        ptcp.extend(r.queues.into_iter().map(|q| (q.path, q.pair)));
    }
    let names = |a: &Name, b: &Name| [format!("{a}_{b}"), format!("{b}_{a}")];
    let named = |stem: &str| {
        pairs
            .iter()
            .any(|(a, b)| names(a, b).iter().any(|n| n == stem))
    };
    let is_current = |stem: &str| {
        current
            .iter()
            .any(|(c, s)| names(c, s).iter().any(|n| n == stem))
    };
    let known: Vec<Name> = current.iter().flat_map(|&(c, s)| [c, s]).collect();
    let mut shm = match std::fs::read_dir(shm_dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| kind_of(p) == Some("shm"))
            .map(|p| {
                let pair = shm_object(&p).pair;
                let pair = pair.or_else(|| pair_files::pair_of(stem(&p), None, &known));
                (p, pair)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    shm.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<Stale> = Vec::new();
    // The doorbells no live server holds: its next start makes them anew.
    if let Ok(rd) = std::fs::read_dir(shm_dir) {
        let mut bells: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| kind_of(p) == Some("bell"))
            .collect();
        bells.sort();
        for path in bells {
            if files::locks_on(&path).unwrap_or_default().is_empty() {
                out.push(Stale {
                    bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                    held: false,
                    reason: "the doorbell of a server that is not running".into(),
                    path,
                });
            }
        }
    }
    for (path, pair) in ptcp.into_iter().chain(shm) {
        let s = stem(&path);
        let why = if named(s) {
            Some("asked for by --pair".to_string())
        } else if is_current(s) {
            None
        } else if let Some((c, srv)) = pair.and_then(|(a, b)| {
            current
                .iter()
                .find(|(c, srv)| (*c == a && *srv != b) || (*c == b && *srv != a))
        }) {
            Some(format!("a previous server name of client {c} (now {srv})"))
        } else {
            older_than
                .filter(|&lim| age(&path).is_some_and(|a| a > lim))
                .map(|lim| format!("not modified for over {lim:?}"))
        };
        if let Some(reason) = why {
            out.push(Stale {
                bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                held: !files::locks_on(&path).unwrap_or_default().is_empty(),
                path,
                reason,
            });
        }
    }
    Ok(out)
}

/// Removes a queue file or shared-memory object that no live process
/// holds, after taking its locks (so no process can start using it
/// meanwhile).
///
/// # Errors
/// [`FileErrorKind::InUse`] if a live process holds it; the I/O error
/// otherwise.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match pair_files::take(path)? {
        Some(t) => t.remove(),
        None => Err(FileError::io(
            path,
            "remove",
            std::io::ErrorKind::NotFound.into(),
        )),
    }
}

/// What [`reset_pair`] did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Reset {
    /// The backup directory the pair's files were moved into.
    pub backup: PathBuf,
    /// Whether the directory was `local`'s client directory with `remote`
    /// as its last server, which it forgot (moved into the backup too):
    /// the client's next login then makes the server start the pair
    /// afresh as well. Otherwise reset the other side too.
    pub forgot_last_server: bool,
}

/// Moves the files of the pair `local`/`remote` of the directory `dir`
/// (its `.ptcp` file, and the two shm objects of the pair in `shm_dir`)
/// into a new directory `<dir>/backup-<UTC time>-<local>_<remote>`; a
/// client directory also forgets `remote` as its last server. Both sides
/// then start the pair afresh at the next login: the way out of a
/// sequence number mismatch (`docs/operations.md`). Nothing is destroyed:
/// [`dir`] reads the backup.
///
/// # Errors
/// [`FileErrorKind::InUse`] if a live process holds a file (nothing is
/// moved then), `NotFound` if the pair has no files here.
pub fn reset_pair(
    dir: &Path,
    shm_dir: &Path,
    local: &Name,
    remote: &Name,
) -> Result<Reset, FileError> {
    let last = pair_files::last_server_path(dir, local);
    let forget = last_servers(dir)
        .iter()
        .any(|(c, s)| c == local && *s == Some(*remote));
    if forget {
        // Held by a live client: refuse before moving anything.
        drop(pair_files::take(&last)?);
    }
    let backup = pair_files::reset_pair(dir, shm_dir, local, remote)?;
    if forget {
        if let Some(t) = pair_files::take(&last)? {
            t.move_to(&backup.join(last.file_name().expect("a file name")))?;
        }
    }
    Ok(Reset {
        backup,
        forgot_last_server: forget,
    })
}

/// Converts the C++ library's queue file `file` into this project's
/// format, in `dir` under the same name, keeping its pending messages,
/// their sequence numbers and its ack; `capacity` is the new file's
/// message area (`Config::tcp_queue_size` of the process that will use
/// it; default the C++ file's). Returns the new file's report.
///
/// # Errors
/// The C++ file cannot be read or is corrupt; the new file exists
/// ([`FileErrorKind::Exists`]: an import never overwrites) or cannot be
/// made; the messages do not fit `capacity` (nothing is left behind then).
pub fn import_cpp(
    file: &Path,
    dir: &Path,
    capacity: Option<usize>,
) -> Result<QueueFileReport, FileError> {
    let bytes = std::fs::read(file).map_err(|e| FileError::io(file, "read", e))?;
    let q = CppQueue::parse(&bytes).map_err(|why| FileError::corrupt(file, why))?;
    let name = file
        .file_name()
        .ok_or_else(|| FileError::io(file, "import", std::io::ErrorKind::InvalidInput.into()))?;
    let out = dir.join(name);
    if out.exists() {
        return Err(FileError::new(&out, FileErrorKind::Exists));
    }
    std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, "create directory", e))?;
    let capacity = capacity.unwrap_or(q.capacity);
    let (mut pq, mut ack) = PtcpQueue::open_file(&out, capacity, MapOptions::default())?;
    pq.restart_at(&mut ack, q.read_seq, q.ack_seq);
    for (i, (h, p)) in q.messages.iter().enumerate() {
        let Some(buf) = pq.alloc(h.msg_type, p.len()) else {
            drop((pq, ack));
            let _ = std::fs::remove_file(&out);
            let why = format!(
                "message {} of {} does not fit a queue of {capacity} bytes: give a larger capacity",
                i + 1,
                q.messages.len()
            );
            return Err(FileError::corrupt(file, why));
        };
        buf.copy_from_slice(p);
        pq.push();
    }
    drop((pq, ack));
    Ok(queue_file(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tcpshm-admin-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("shm")).unwrap();
        d
    }

    /// A client directory `desk_1` (last server `srv`) with its current
    /// pair's queue file, and the shm objects of two clients' current
    /// pairs: names with `_` are never split at the wrong place, so no
    /// current file is stale, however old.
    #[test]
    #[cfg_attr(miri, ignore = "files")]
    fn current_pairs_with_underscores_are_kept() {
        let d = scratch("underscore");
        let shm = d.join("shm");
        let c = d.join("desk_1");
        std::fs::create_dir_all(&c).unwrap();
        let mut field = [0u8; 16];
        field[..3].copy_from_slice(b"srv");
        std::fs::write(c.join("desk_1.lastserver"), field).unwrap();
        let tag = pair_tag(&n("desk_1"), &n("srv"));
        let opts = MapOptions::default();
        let (q, ack) = PtcpQueue::open_pair(&c.join("desk_1_srv.ptcp"), 2000, opts, tag).unwrap();
        drop((q, ack));
        let c2 = d.join("desk_2");
        std::fs::create_dir_all(&c2).unwrap();
        std::fs::write(c2.join("desk_2.lastserver"), field).unwrap();
        let w = shm_queue::ShmWriter::open_file(
            &shm.join("desk_2_srv.shm"),
            4096,
            opts,
            pair_tag(&n("desk_2"), &n("srv")),
        )
        .unwrap();
        drop(w);
        // An old pair of desk_1 with a former server name is stale.
        let old = c.join("desk_1_srv_0611.ptcp");
        let (q, ack) =
            PtcpQueue::open_pair(&old, 2000, opts, pair_tag(&n("desk_1"), &n("srv_0611"))).unwrap();
        drop((q, ack));
        std::thread::sleep(Duration::from_millis(1100));

        let report = queue_file(&c.join("desk_1_srv.ptcp"));
        assert_eq!(report.pair, Some((n("desk_1"), n("srv"))));
        assert_eq!(
            shm_object(&shm.join("desk_2_srv.shm")).pair,
            Some((n("desk_2"), n("srv")))
        );
        let dirs = [c.clone(), c2.clone()];
        let stale = stale_files(&dirs, &shm, Some(Duration::from_secs(1)), &[]).unwrap();
        let paths: Vec<_> = stale.iter().map(|s| s.path.clone()).collect();
        assert_eq!(paths, vec![old.clone()], "{stale:?}");
        assert!(
            stale[0]
                .reason
                .contains("previous server name of client desk_1"),
            "{stale:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
