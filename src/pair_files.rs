//! The files of a pair of names, in one place: how they are named, and
//! the operations run on them (moving a pair aside to start it afresh,
//! removing the shared-memory objects of a pair no process uses). Each
//! operation takes a file's lock before it touches it, so a live
//! process's files are never moved or removed, and a process starting at
//! the same moment either finds the file gone (and creates a new one) or
//! keeps it.
//!
//! A pair `local`/`remote` has, on `local`'s side:
//! - `<dir>/<local>_<remote>.ptcp`: the TCP send queue;
//! - `<shm_dir>/<local>_<remote>.shm` (written by `local`) and
//!   `<shm_dir>/<remote>_<local>.shm` (read by `local`): the two rings,
//!   shared with the peer;
//! - on a client, `<dir>/<client>.lastserver`: the server it last logged
//!   in to.
//!
//! A server also has, per large SHM group, `<shm_dir>/<server>.<group>.bell`:
//! the group's doorbell, which its clients ring.
//!
//! Names may contain `_`, so a file name alone does not always tell its
//! pair: `a_b`+`c` and `a`+`b_c` both make `a_b_c`. Each queue therefore
//! records a tag of its pair ([`pair_tag`]) when it is first opened, and
//! refuses to be opened for another pair (`FileErrorKind::NameCollision`);
//! the operator tools split a file name only where the tag, or a name
//! known from the directory, confirms it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{FileError, FileErrorKind};
use crate::sys::files::{self, Taken};
use crate::wire::Name;

/// `<dir>/<local>_<remote>.ptcp`: the TCP send queue of `local` to `remote`.
pub(crate) fn ptcp_path(dir: &Path, local: &Name, remote: &Name) -> PathBuf {
    dir.join(format!("{local}_{remote}.ptcp"))
}

/// `<shm_dir>/<sender>_<receiver>.shm`: the ring `sender` writes and
/// `receiver` reads (`shm_open("/<sender>_<receiver>.shm")` on Linux).
pub(crate) fn shm_path(shm_dir: &Path, sender: &Name, receiver: &Name) -> PathBuf {
    shm_dir.join(format!("{sender}_{receiver}.shm"))
}

/// `<shm_dir>/<server>.<group>.bell`: the doorbell of SHM group `group`
/// of the server `server` (`crate::doorbell`). No pair file ends so.
pub(crate) fn bell_path(shm_dir: &Path, server: &Name, group: usize) -> PathBuf {
    shm_dir.join(format!("{server}.{group}.bell"))
}

/// The server and group of a bell's file name `<server>.<group>.bell`.
pub(crate) fn bell_of(path: &Path) -> Option<(Name, usize)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".bell")?;
    let (server, group) = stem.rsplit_once('.')?;
    Some((Name::new(server).ok()?, group.parse().ok()?))
}

/// `<dir>/<client>.lastserver`.
pub(crate) fn last_server_path(dir: &Path, client: &Name) -> PathBuf {
    dir.join(format!("{client}.lastserver"))
}

/// The tag a queue of the pair `local` → `remote` records: FNV-1a (64
/// bits) of the two names with a NUL between them, never 0. Two pairs
/// whose file names are the same differ in their tags.
pub(crate) fn pair_tag(local: &Name, remote: &Name) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in local
        .as_str()
        .bytes()
        .chain([0])
        .chain(remote.as_str().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The ways `stem` (a file name without extension) splits into two valid
/// names `(a, b)` with `stem == "{a}_{b}"`: one when the names hold no
/// `_`, more when they do.
pub(crate) fn splits(stem: &str) -> Vec<(Name, Name)> {
    stem.match_indices('_')
        .filter_map(|(i, _)| Some((Name::new(&stem[..i]).ok()?, Name::new(&stem[i + 1..]).ok()?)))
        .collect()
}

/// Whether a file's recorded pair tag is the one of the pair `(a, b)`.
pub(crate) type TagCheck<'a> = &'a dyn Fn(&Name, &Name) -> bool;

/// The pair `(a, b)` of a file stem `"{a}_{b}"`: the split the file's
/// recorded tag confirms (`tag_is`) if it records one, else the split with
/// a `known` name on one side, else the only split there is. `None` when
/// these leave more than one.
pub(crate) fn pair_of(
    stem: &str,
    tag_is: Option<TagCheck<'_>>,
    known: &[Name],
) -> Option<(Name, Name)> {
    let all = splits(stem);
    let pick = |keep: &dyn Fn(&(Name, Name)) -> bool| {
        let v: Vec<_> = all.iter().filter(|p| keep(p)).collect();
        (v.len() == 1).then(|| *v[0])
    };
    if let Some(is) = tag_is {
        return pick(&|(a, b)| is(a, b));
    }
    pick(&|(a, b)| known.contains(a) || known.contains(b)).or_else(|| pick(&|_| true))
}

/// The files of a pair on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PairPaths {
    /// `<dir>/<local>_<remote>.ptcp`.
    pub ptcp: PathBuf,
    /// `<shm_dir>/<local>_<remote>.shm` (local writes).
    pub shm_out: PathBuf,
    /// `<shm_dir>/<remote>_<local>.shm` (local reads).
    pub shm_in: PathBuf,
}

impl PairPaths {
    /// The paths of pair `local`/`remote`.
    pub(crate) fn new(dir: &Path, shm_dir: &Path, local: &Name, remote: &Name) -> PairPaths {
        PairPaths {
            ptcp: ptcp_path(dir, local, remote),
            shm_out: shm_path(shm_dir, local, remote),
            shm_in: shm_path(shm_dir, remote, local),
        }
    }
}

/// Takes one existing file for removal: a `.ptcp` by its `flock`, an shm
/// object by the locks of both its ends.
pub(crate) fn take(path: &Path) -> Result<Option<Taken>, FileError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io(path, "stat", e)),
    };
    let roles = (path.extension().and_then(|e| e.to_str()) == Some("shm")).then_some(len);
    files::take_for_removal(path, roles).map(Some)
}

/// A UTC timestamp `YYYYMMDDTHHMMSSZ` for file names.
pub(crate) fn utc_stamp(t: SystemTime) -> String {
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
/// # Errors
/// [`FileErrorKind::InUse`] if a live process holds the `.ptcp` file
/// (nothing is moved then), [`FileErrorKind::Io`] if none of the files
/// exists or a move fails.
pub(crate) fn reset_pair(
    dir: &Path,
    shm_dir: &Path,
    local: &Name,
    remote: &Name,
) -> Result<PathBuf, FileError> {
    let p = PairPaths::new(dir, shm_dir, local, remote);
    let ptcp = take(&p.ptcp)?;
    let mut shm = Vec::new();
    for path in [&p.shm_out, &p.shm_in] {
        match take(path) {
            Ok(Some(t)) => shm.push((path.clone(), Some(t))),
            Ok(None) => {}
            Err(e) if e.is_in_use() => shm.push((path.clone(), None)),
            Err(e) => return Err(e),
        }
    }
    if ptcp.is_none() && shm.is_empty() {
        let why = format!(
            "no files of pair {local}_{remote} here or in {}",
            shm_dir.display()
        );
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, why);
        return Err(FileError::io(&p.ptcp, "reset", e));
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
/// that no process holds and that are this pair's (by their tag). Returns
/// the objects removed; one that is held, missing or another pair's is
/// left alone.
pub(crate) fn remove_shm_pair(shm_dir: &Path, a: &Name, b: &Name) -> Vec<PathBuf> {
    let mut gone = Vec::new();
    for (s, r) in [(a, b), (b, a)] {
        let path = shm_path(shm_dir, s, r);
        if !crate::shm_queue::tag_of(&path).is_none_or(|t| t == 0 || t == pair_tag(s, r)) {
            continue;
        }
        if let Ok(Some(t)) = take(&path) {
            if t.remove().is_ok() {
                gone.push(path);
            }
        }
    }
    gone
}

/// Checks the pair tag `word` holds, claiming it for `tag` if it holds
/// none: `Err(())` if another pair's tag is there. One atomic
/// compare-and-swap, so two processes opening the same file at once
/// agree on whose it is.
pub(crate) fn claim(word: &std::sync::atomic::AtomicU64, tag: u64) -> Result<(), ()> {
    use std::sync::atomic::Ordering;
    // Relaxed: the tag guards nothing else in the file; only its own
    // value is compared.
    match word.compare_exchange(0, tag, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => Ok(()),
        Err(t) if t == tag => Ok(()),
        Err(_) => Err(()),
    }
}

/// [`claim`], as the error of opening `path`.
pub(crate) fn claim_for(
    path: &Path,
    word: &std::sync::atomic::AtomicU64,
    tag: u64,
) -> Result<(), FileError> {
    claim(word, tag).map_err(|()| FileError::new(path, FileErrorKind::NameCollision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(utc_stamp(t), "20261118T110640Z");
    }

    #[test]
    fn names_with_underscores_split_only_where_confirmed() {
        assert_eq!(pair_of("c1_srv", None, &[]), Some((n("c1"), n("srv"))));
        assert_eq!(splits("desk_1_srv").len(), 2);
        // Ambiguous alone; a known name, or the tag, settles it.
        assert_eq!(pair_of("desk_1_srv", None, &[]), None);
        assert_eq!(
            pair_of("desk_1_srv", None, &[n("desk_1")]),
            Some((n("desk_1"), n("srv")))
        );
        let tag = pair_tag(&n("desk"), &n("1_srv"));
        let is = |a: &Name, b: &Name| pair_tag(a, b) == tag;
        assert_eq!(
            pair_of("desk_1_srv", Some(&is), &[n("desk_1")]),
            Some((n("desk"), n("1_srv")))
        );
        assert_ne!(pair_tag(&n("a_b"), &n("c")), pair_tag(&n("a"), &n("b_c")));
        assert_eq!(pair_of("nounderscore", None, &[]), None);
    }

    #[test]
    fn a_pair_tag_is_claimed_once() {
        let w = std::sync::atomic::AtomicU64::new(0);
        let (t1, t2) = (pair_tag(&n("a_b"), &n("c")), pair_tag(&n("a"), &n("b_c")));
        assert_eq!(claim(&w, t1), Ok(()));
        assert_eq!(claim(&w, t1), Ok(()), "the same pair again");
        assert_eq!(
            claim(&w, t2),
            Err(()),
            "the other pair of the same file name"
        );
    }
}
