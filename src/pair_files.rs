//! The files of a pair of names, and the operations an operator (or the
//! library itself) runs on them: moving a pair aside to start it afresh
//! ([`reset_pair`]), and removing the shared-memory objects of a pair no
//! process uses any more ([`remove_shm_pair`]). Each takes the file's lock
//! before it touches it, so a live process's files are never moved or
//! removed, and a process starting at the same moment either finds the
//! file gone (and creates a new one) or keeps it.
//!
//! A pair `local`/`remote` has, on `local`'s side:
//! - `<dir>/<local>_<remote>.ptcp`: the TCP send queue;
//! - `<shm_dir>/<local>_<remote>.shm` (written by `local`) and
//!   `<shm_dir>/<remote>_<local>.shm` (read by `local`): the two rings,
//!   shared with the peer.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{FileError, FileErrorKind};
use crate::shm_queue::shm_path;
use crate::sys::files::{self, Taken};

/// The files of a pair on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairPaths {
    /// `<dir>/<local>_<remote>.ptcp`.
    pub ptcp: PathBuf,
    /// `<shm_dir>/<local>_<remote>.shm` (local writes).
    pub shm_out: PathBuf,
    /// `<shm_dir>/<remote>_<local>.shm` (local reads).
    pub shm_in: PathBuf,
}

impl PairPaths {
    /// The paths of pair `local`/`remote`.
    pub fn new(dir: &Path, shm_dir: &Path, local: &str, remote: &str) -> PairPaths {
        PairPaths {
            ptcp: dir.join(format!("{local}_{remote}.ptcp")),
            shm_out: shm_path(shm_dir, local, remote),
            shm_in: shm_path(shm_dir, remote, local),
        }
    }
}

/// Takes one existing file for removal: a `.ptcp` by its `flock`, an shm
/// object by the locks of both its ends.
fn take(path: &Path) -> Result<Option<Taken>, FileError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io(path, "stat", e)),
    };
    let roles = (path.extension().and_then(|e| e.to_str()) == Some("shm")).then_some(len);
    files::take_for_removal(path, roles).map(Some)
}

/// A UTC timestamp `YYYYMMDDTHHMMSSZ` for file names.
pub fn utc_stamp(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (s / 86_400, s % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Moves the pair's files into a new directory
/// `<dir>/backup-<UTC time>-<local>_<remote>` and returns it: the `.ptcp`
/// file (which no process may hold), and the two shm objects: moved if no
/// process holds them, else copied (the peer's server keeps its mapping
/// and empties the rings when the pair starts afresh). Nothing is
/// destroyed: `tcpshm inspect` reads the backup.
///
/// This side then starts the pair afresh (sequence numbers 0, empty
/// queue). The peer does so too when the client's next login reports no
/// last server name ([`crate::Client::reset_pair`] moves that file as
/// well): the way out of a sequence number mismatch.
///
/// # Errors
/// [`FileErrorKind::InUse`] if a live process holds the `.ptcp` file
/// (nothing is moved then), [`FileErrorKind::Io`] if none of the files
/// exists or a move fails.
pub fn reset_pair(
    dir: &Path,
    shm_dir: &Path,
    local: &str,
    remote: &str,
) -> Result<PathBuf, FileError> {
    let p = PairPaths::new(dir, shm_dir, local, remote);
    let ptcp = take(&p.ptcp)?;
    let mut shm = Vec::new();
    for path in [&p.shm_out, &p.shm_in] {
        match take(path) {
            Ok(Some(t)) => shm.push((path.clone(), Some(t))),
            Ok(None) => {}
            Err(e) if is_in_use(&e) => shm.push((path.clone(), None)),
            Err(e) => return Err(e),
        }
    }
    if ptcp.is_none() && shm.is_empty() {
        return Err(FileError::io(
            &p.ptcp,
            "reset",
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no files of pair {local}_{remote} here or in {}",
                    shm_dir.display()
                ),
            ),
        ));
    }
    let backup = dir.join(format!(
        "backup-{}-{local}_{remote}",
        utc_stamp(SystemTime::now())
    ));
    std::fs::create_dir_all(&backup).map_err(|e| FileError::io(&backup, "create", e))?;
    let to = |path: &Path| backup.join(path.file_name().expect("a file name"));
    if let Some(t) = ptcp {
        t.move_to(&to(&p.ptcp))?;
    }
    for (path, t) in shm {
        match t {
            Some(t) => t.move_to(&to(&path))?,
            None => {
                std::fs::copy(&path, to(&path)).map_err(|e| FileError::io(&path, "copy", e))?;
            }
        }
    }
    Ok(backup)
}

/// Removes the shared-memory objects of pair `a`/`b` (both directions)
/// that no process holds. Returns the objects removed; one that is held
/// or missing is left alone.
pub fn remove_shm_pair(shm_dir: &Path, a: &str, b: &str) -> Vec<PathBuf> {
    let mut gone = Vec::new();
    for path in [shm_path(shm_dir, a, b), shm_path(shm_dir, b, a)] {
        if let Ok(Some(t)) = take(&path) {
            if t.remove().is_ok() {
                gone.push(path);
            }
        }
    }
    gone
}

/// Whether an error is "a live process holds it".
pub fn is_in_use(e: &FileError) -> bool {
    matches!(e.kind, FileErrorKind::InUse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(utc_stamp(t), "20261118T110640Z");
    }
}
