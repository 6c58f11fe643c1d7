//! What is in a queue file or a shared-memory object, read without
//! changing it and without taking any lock (so a live process is never
//! disturbed): the data behind `tcpshm inspect`, `clean` and `reset`.
//!
//! A queue file is copied into memory and opened there with the very code
//! that opens it for real ([`PtcpQueue::open`]), so what is reported is
//! what a login would find. A file of the C++ library's layout is read by
//! [`crate::cpp_ptcp`]. Nothing here fails: a broken file is a report with
//! a [`problem`](QueueFileReport::problem).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::cpp_ptcp::{self, CppQueue};
use crate::ptcp_queue::{PtcpQueue, FILE_HEADER_SIZE};
use crate::shm_queue::{self, BLOCK, TRAILER};
use crate::sys::files::{self, Held, LockKind};
use crate::sys::HeapRegion;
use crate::wire::{MsgHeader, HEADER_SIZE};

/// Bytes of payload a message summary keeps.
pub const HEAD_BYTES: usize = 16;

/// One pending message of a queue file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgSummary {
    /// Its sequence number.
    pub seq: u32,
    /// Its type.
    pub msg_type: u16,
    /// Payload bytes.
    pub len: usize,
    /// The first payload bytes (at most [`HEAD_BYTES`]).
    pub head: Vec<u8>,
}

/// The layout of a queue file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFormat {
    /// This project's (`ptcp_queue`), with its format version.
    Tcpshm(u32),
    /// The C++ library's (`cpp_ptcp`).
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
pub struct QueueFileReport {
    /// The file.
    pub path: PathBuf,
    /// `(local, remote)` from the file name `<local>_<remote>.ptcp` (split
    /// at the first `_`; names may contain `_` too).
    pub pair: Option<(String, String)>,
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
    /// The locks live processes hold on it.
    pub held: Vec<Held>,
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

    /// Whether a live process holds the file.
    pub fn is_held(&self) -> bool {
        !self.held.is_empty()
    }
}

/// `(a, b)` from `<a>_<b>.<ext>`.
pub fn split_pair(path: &Path) -> Option<(String, String)> {
    let stem = path.file_stem()?.to_str()?;
    let (a, b) = stem.split_once('_')?;
    (!a.is_empty() && !b.is_empty()).then(|| (a.to_string(), b.to_string()))
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
    let mut r = QueueFileReport {
        path: path.into(),
        pair: split_pair(path),
        format: QueueFormat::Unknown,
        capacity: 0,
        local_ack: 0,
        seq_start: 0,
        seq_end: 0,
        pending_bytes: 0,
        fill: 0.0,
        held: files::locks_on(path).unwrap_or_default(),
        problem: None,
        messages: Vec::new(),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            r.problem = Some(format!("cannot read: {e}"));
            return r;
        }
    };
    let live = if r.is_held() {
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
pub struct ShmReport {
    /// The object (normally in /dev/shm).
    pub path: PathBuf,
    /// `(sender, receiver)` from `<sender>_<receiver>.shm`.
    pub pair: Option<(String, String)>,
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
    let mut r = ShmReport {
        path: path.into(),
        pair: split_pair(path),
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

/// Whether the path looks like a queue file or an shm object, by name.
pub fn kind_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "ptcp" => Some("ptcp"),
        "shm" => Some("shm"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_names() {
        assert_eq!(
            split_pair(Path::new("/d/c1_srv.ptcp")),
            Some(("c1".into(), "srv".into()))
        );
        assert_eq!(split_pair(Path::new("/d/nounderscore.ptcp")), None);
    }
}
