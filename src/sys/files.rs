//! What the operating tools need from the OS about queue files and shm
//! objects: who holds them (the kernel's lock table, read without taking
//! any lock, so looking never disturbs a process that is starting), and
//! taking a file for removal so that no process can start using it at the
//! same moment.
//!
//! Queue files are held with `flock`; a shared-memory queue's two ends
//! hold open-file-description locks on one byte each past the end of the
//! object (byte `size` for the writer, `size + 1` for the reader).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{FileError, FileErrorKind};

/// A lock the kernel lists on a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// `FLOCK` (a queue file's owner), `OFDLCK` (an shm queue end) or
    /// `POSIX`.
    pub kind: LockKind,
    /// The holder's process id, when the kernel tells it (not for OFD
    /// locks).
    pub pid: Option<i32>,
    /// First byte of the locked range (0 for `flock`).
    pub start: u64,
}

/// The kind of a lock in `/proc/locks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// `flock(2)`.
    Flock,
    /// An open-file-description lock (`F_OFD_SETLK`).
    Ofd,
    /// A process-associated record lock.
    Posix,
}

/// The locks held on `path` now, from `/proc/locks`.
///
/// # Errors
/// If the file or the lock table cannot be read.
pub(crate) fn locks_on(path: &Path) -> io::Result<Vec<Held>> {
    let md = std::fs::metadata(path)?;
    let table = std::fs::read_to_string("/proc/locks")?;
    Ok(parse_locks(
        &table,
        dev_major(md.dev()),
        dev_minor(md.dev()),
        md.ino(),
    ))
}

fn dev_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn dev_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// Lines such as `1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`, or with
/// `->` for a waiter (skipped); the device is `major:minor` in hex.
fn parse_locks(table: &str, major: u64, minor: u64, ino: u64) -> Vec<Held> {
    let mut out = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[1] == "->" {
            continue;
        }
        let kind = match f[1] {
            "FLOCK" => LockKind::Flock,
            "OFDLCK" => LockKind::Ofd,
            "POSIX" => LockKind::Posix,
            _ => continue,
        };
        let mut id = f[5].split(':');
        let (Some(ma), Some(mi), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let same = u64::from_str_radix(ma, 16).ok() == Some(major)
            && u64::from_str_radix(mi, 16).ok() == Some(minor)
            && i.parse::<u64>().ok() == Some(ino);
        if !same {
            continue;
        }
        let pid = f[4].parse::<i32>().ok().filter(|p| *p > 0);
        let start = f[6].parse::<u64>().unwrap_or(0);
        out.push(Held { kind, pid, start });
    }
    out
}

/// Whether `file` is still the file at `path` (not unlinked or replaced
/// since it was opened).
pub(crate) fn still_linked(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A queue file or shm object taken for removal: its locks are ours, so no
/// process holds it or can take it until [`remove`](Self::remove) has
/// unlinked it (a process that opened it just before re-checks, after
/// locking, that the path is still its file, and opens a new one).
#[derive(Debug)]
pub(crate) struct Taken {
    file: File,
    path: PathBuf,
}

/// Takes `path` for removal: its `flock` (a queue file), or the locks of
/// both ends of an shm queue (`shm_roles_at`: the object's size, where
/// the role bytes start).
///
/// # Errors
/// [`FileErrorKind::InUse`] if a process holds it; an I/O error otherwise.
pub(crate) fn take_for_removal(path: &Path, shm_roles_at: Option<u64>) -> Result<Taken, FileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| FileError::io(path, "open", e))?;
    let in_use = || FileError {
        path: path.into(),
        kind: FileErrorKind::InUse,
    };
    let fd = file.as_raw_fd();
    match shm_roles_at {
        None => {
            // SAFETY: plain syscall on a descriptor we own.
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    in_use()
                } else {
                    FileError::io(path, "lock", e)
                });
            }
        }
        Some(at) => {
            // SAFETY: a zeroed flock struct is a valid value for the call.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            fl.l_start = at as libc::off_t;
            fl.l_len = 2; // the writer's and the reader's byte
                          // SAFETY: plain syscall on a descriptor we own, valid struct.
            if unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) } != 0 {
                let e = io::Error::last_os_error();
                return Err(
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                        in_use()
                    } else {
                        FileError::io(path, "lock", e)
                    },
                );
            }
        }
    }
    if !still_linked(&file, path) {
        return Err(FileError::io(
            path,
            "lock",
            io::Error::new(io::ErrorKind::NotFound, "removed or replaced meanwhile"),
        ));
    }
    Ok(Taken {
        file,
        path: path.into(),
    })
}

impl Taken {
    /// Unlinks the file, then lets its locks go.
    ///
    /// # Errors
    /// If the unlink fails.
    pub(crate) fn remove(self) -> Result<(), FileError> {
        std::fs::remove_file(&self.path).map_err(|e| FileError::io(&self.path, "remove", e))?;
        drop(self.file);
        Ok(())
    }

    /// Moves the file to `to` (the same filesystem: a rename; else a copy
    /// and an unlink), then lets its locks go.
    ///
    /// # Errors
    /// If neither works.
    pub(crate) fn move_to(self, to: &Path) -> Result<(), FileError> {
        if std::fs::rename(&self.path, to).is_err() {
            std::fs::copy(&self.path, to).map_err(|e| FileError::io(to, "copy", e))?;
            std::fs::remove_file(&self.path).map_err(|e| FileError::io(&self.path, "remove", e))?;
        }
        drop(self.file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_table_lines() {
        let t = "1: FLOCK  ADVISORY  WRITE 4242 00:1a:77 0 EOF\n\
                 2: OFDLCK ADVISORY  WRITE -1 00:1a:77 1048832 1048832\n\
                 2: -> FLOCK  ADVISORY  WRITE 99 00:1a:77 0 EOF\n\
                 3: POSIX  ADVISORY  WRITE 7 fd:01:77 0 EOF\n";
        let got = parse_locks(t, 0, 0x1a, 77);
        assert_eq!(
            got,
            vec![
                Held {
                    kind: LockKind::Flock,
                    pid: Some(4242),
                    start: 0
                },
                Held {
                    kind: LockKind::Ofd,
                    pid: None,
                    start: 1048832
                },
            ]
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "no flock under Miri")]
    fn a_held_file_is_not_taken_and_a_free_one_is() {
        let d = std::env::temp_dir().join(format!("tcpshm-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("x.ptcp");
        let m = crate::sys::Mapping::open(&p, 128, crate::sys::MapOptions::default()).unwrap();
        let held = locks_on(&p).unwrap();
        assert!(
            held.iter()
                .any(|h| h.kind == LockKind::Flock && h.pid == Some(std::process::id() as i32)),
            "{held:?}"
        );
        assert!(matches!(
            take_for_removal(&p, None),
            Err(FileError {
                kind: FileErrorKind::InUse,
                ..
            })
        ));
        drop(m);
        take_for_removal(&p, None).unwrap().remove().unwrap();
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
