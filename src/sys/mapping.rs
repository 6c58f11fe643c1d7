//! Mapping queue files and shared-memory objects.
//!
//! # Trust model of a mapping
//!
//! A [`Mapping`] is `MAP_SHARED`: another process (the peer of a shm queue,
//! or anyone who can write the file) may change the bytes at any time. The
//! queues therefore treat mapped bytes as input, like bytes from a socket:
//! every size and index read from a mapping is bounds-checked before use.
//! A file truncated by someone else while mapped makes the kernel raise
//! SIGBUS on access; that cannot be prevented from user space, which is why
//! files are created 0600 and locked (see [`MapOptions`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

#[cfg(test)]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::error::{FileError, FileErrorKind};

/// The largest mapping [`Mapping::open`] populates (64 MiB): filling the
/// page tables of 16,384 pages takes milliseconds, on the thread that
/// logs a connection in; a larger queue faults its pages in on first use
/// rather than stall that thread (and, for a file on disk, read it all).
pub(crate) const POPULATE_MAX: usize = 64 << 20;

/// How to create and map a file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapOptions {
    /// Permission bits for a file this call creates (default 0600). The
    /// mode is set exactly, regardless of the umask.
    pub mode: u32,
    /// The lock the mapping holds, so a second process (or a second
    /// object in this process) cannot map the file in the same role.
    pub lock: Lock,
}

/// The lock a [`Mapping`] holds while it lives (and a crash releases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lock {
    /// None.
    None,
    /// An exclusive `flock` of the whole file (a queue file's owner).
    File,
    /// An exclusive open-file-description lock of the byte `len + role`
    /// past the end of the file: one per end of a shared-memory queue, so
    /// its writer and its reader (often another process) both map it.
    Role(u64),
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            mode: 0o600,
            lock: Lock::File,
        }
    }
}

/// A file mapped read-write and shared. Unmapped on drop.
///
/// It keeps no file descriptor: the mapping holds the kernel's open file,
/// and with it the lock (`flock` and open-file-description locks belong
/// to the open file, which lives until the last mapping of it goes). So a
/// connection costs one descriptor, its socket, whatever it maps.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Whether `open` created the file (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    created: bool,
    path: PathBuf,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to
// another thread moves the only handle to it.
unsafe impl Send for Mapping {}
// SAFETY: from a shared reference, safe code reaches the bytes only through
// atomics (`word32`, `word64`, `read`, `write`); the crate-internal raw
// pointer is used by the one queue that owns the mapping.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Opens or creates `path` with exactly `len` bytes and maps it. Up to
    /// [`POPULATE_MAX`] bytes the whole mapping is populated
    /// (`MAP_POPULATE`: the page tables are filled here, so the hot path
    /// takes no page fault on a shared-memory object; a failure to
    /// populate only leaves pages to fault later).
    ///
    /// A file that does not exist (or has size 0, left by a crash during
    /// creation) is created with `opts.mode` and its full size reserved with
    /// `posix_fallocate`, so a full disk or a full /dev/shm is an error here
    /// and not a SIGBUS later. An existing file of another size is refused,
    /// never resized.
    ///
    /// # Errors
    /// A [`FileError`] naming the path: open, lock, reserve or mmap failure,
    /// or a wrong size.
    pub(crate) fn open(path: &Path, len: usize, opts: MapOptions) -> Result<Mapping, FileError> {
        // `tcpshm clean` and `reset` take a file's lock, then unlink it: a
        // file locked here that is no longer at `path` is opened again.
        let mut tries = 0;
        loop {
            let (m, linked) = Self::open_once(path, len, opts)?;
            if linked || opts.lock == Lock::None || tries == 3 {
                return Ok(m);
            }
            tries += 1;
        }
    }

    /// Maps the file at `path`; also tells whether it was still the file
    /// at its path once locked (not unlinked or replaced meanwhile).
    fn open_once(path: &Path, len: usize, opts: MapOptions) -> Result<(Mapping, bool), FileError> {
        let err = |op, e| FileError::io(path, op, e);
        if len == 0 {
            return Err(err("map", io::Error::from(io::ErrorKind::InvalidInput)));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(opts.mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| err("open", e))?;
        let fd = file.as_raw_fd();
        if opts.lock == Lock::File {
            // SAFETY: plain syscall on a descriptor we own.
            let r = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(FileError {
                        path: path.into(),
                        kind: FileErrorKind::InUse,
                    });
                }
                return Err(err("lock", e));
            }
        }
        let found = file.metadata().map_err(|e| err("stat", e))?.len();
        let created = found == 0;
        if created {
            file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
                .map_err(|e| err("chmod", e))?;
            if let Err(e) = reserve(&file, len) {
                // Leave nothing half-made behind.
                let _ = std::fs::remove_file(path);
                return Err(err("reserve space", e));
            }
        } else if found != len as u64 {
            return Err(FileError {
                path: path.into(),
                kind: FileErrorKind::WrongSize {
                    expected: len as u64,
                    found,
                },
            });
        }
        let populate = if len <= POPULATE_MAX {
            libc::MAP_POPULATE
        } else {
            0
        };
        // SAFETY: fd is a valid open descriptor of a file at least `len`
        // bytes long (checked or reserved above); we ask the kernel for a
        // fresh address and check the result before using it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated: every page table entry is made now, so no
                // message pays a page fault on its first lap of a ring.
                libc::MAP_SHARED | populate,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err("mmap", io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| err("mmap", io::Error::from(io::ErrorKind::Other)))?;
        let m = Mapping {
            ptr,
            len,
            created,
            path: path.into(),
        };
        if let Lock::Role(role) = opts.lock {
            lock_role(&file, path, len, role)?;
        }
        let linked = super::files::still_linked(&file, path);
        // The descriptor goes here; the mapping keeps the open file, and
        // the lock with it.
        drop(file);
        Ok((m, linked))
    }

    /// Maps the whole of an existing file at `path` (at most `max_len`
    /// bytes, a multiple of 8), without creating, resizing or locking it:
    /// a file another process made and keeps (a group's doorbell). Its
    /// bytes are input like any mapping's.
    ///
    /// # Errors
    /// A [`FileError`]: no such file, an empty, unaligned or too large
    /// one, or a failed mmap.
    pub(crate) fn open_existing(path: &Path, max_len: usize) -> Result<Mapping, FileError> {
        let err = |op, e| FileError::io(path, op, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| err("open", e))?;
        let len = file.metadata().map_err(|e| err("stat", e))?.len();
        if len == 0 || len % 8 != 0 || len > max_len as u64 {
            return Err(FileError {
                path: path.into(),
                kind: FileErrorKind::WrongSize {
                    expected: max_len as u64,
                    found: len,
                },
            });
        }
        let len = len as usize;
        // SAFETY: as in `open_once`: a valid descriptor of a file of `len`
        // bytes (just read), a fresh address, the result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err("mmap", io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| err("mmap", io::Error::from(io::ErrorKind::Other)))?;
        Ok(Mapping {
            ptr,
            len,
            created: false,
            path: path.into(),
        })
    }

    #[cfg(test)]
    /// Whether this call created the file (its content is all zero).
    pub(crate) fn created(&self) -> bool {
        self.created
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Start of the mapping (page aligned). Crate-internal: the queues
    /// that own a mapping are the only ones to touch its bytes other than
    /// through the atomic accessors below.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[cfg(test)]
    /// The aligned u32 at byte `off`, accessed atomically (another process
    /// may change it at any time).
    ///
    /// # Panics
    /// If `off` is not 4-aligned or the word is not inside the mapping (a
    /// caller bug).
    pub(crate) fn word32(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.len, "word32 at {off}");
        // SAFETY: the word is inside the live, page-aligned mapping (checked
        // above) and 4-aligned; safe code only ever reaches a mapping's
        // bytes atomically (the queues that write it plainly own theirs and
        // give out no reference to it).
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    /// The aligned u64 at byte `off`, as [`word32`](Self::word32).
    ///
    /// # Panics
    /// If `off` is not 8-aligned or the word is not inside the mapping.
    pub(crate) fn word64(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len, "word64 at {off}");
        // SAFETY: as in `word32`, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    fn byte(&self, off: usize) -> &AtomicU8 {
        // SAFETY: callers check off < len; as in `word32`.
        unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) }
    }

    /// Copies bytes from `off` into `out`, each read atomically (Relaxed:
    /// small files such as the last server name, read and written by one
    /// thread; atomicity only keeps safe code free of data races).
    ///
    /// # Panics
    /// If the range is not inside the mapping.
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= self.len, "read past the mapping");
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(off + i).load(Ordering::Relaxed);
        }
    }

    /// Copies `src` to byte `off`, each byte stored atomically (Relaxed, as
    /// in [`read`](Self::read)).
    ///
    /// # Panics
    /// If the range is not inside the mapping.
    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        assert!(off + src.len() <= self.len, "write past the mapping");
        for (i, b) in src.iter().enumerate() {
            self.byte(off + i).store(*b, Ordering::Relaxed);
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Takes the exclusive lock of one role (a byte past the end of the file
/// of `len` bytes) with an open-file-description lock, so that a second
/// writer (or reader) of a shared-memory queue is refused, in this process
/// or another, while the peer's role stays free. The lock goes with the
/// open file (and with the process on a crash).
///
/// # Errors
/// [`FileErrorKind::InUse`] if another open file holds the role.
fn lock_role(file: &File, path: &Path, len: usize, role: u64) -> Result<(), FileError> {
    // SAFETY: a zeroed flock struct is a valid value for the call.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = (len as u64 + role) as libc::off_t;
    fl.l_len = 1;
    // SAFETY: plain syscall on a descriptor we own, with a valid struct.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
        return Err(FileError {
            path: path.into(),
            kind: FileErrorKind::InUse,
        });
    }
    Err(FileError::io(path, "lock queue role", e))
}

/// Reserves `len` bytes of backing store for `file`.
fn reserve(file: &File, len: usize) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match r {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to a sparse size.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len as u64),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tcpshm-sys-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not support mmap of files")]
    fn create_map_and_refuse_wrong_size_and_second_lock() {
        let p = tmp("a.bin");
        let _ = std::fs::remove_file(&p);
        let m = Mapping::open(&p, 4096, MapOptions::default()).unwrap();
        assert!(m.created());
        m.write(10, &[7]);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        match Mapping::open(&p, 4096, MapOptions::default()) {
            Err(FileError {
                kind: FileErrorKind::InUse,
                ..
            }) => {}
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(m);
        let m = Mapping::open(&p, 4096, MapOptions::default()).unwrap();
        assert!(!m.created());
        let mut b = [0u8];
        m.read(10, &mut b);
        assert_eq!(b, [7]);
        assert_eq!(m.word32(8).load(Ordering::Relaxed), 7 << 16);
        drop(m);
        match Mapping::open(&p, 8192, MapOptions::default()) {
            Err(FileError {
                kind:
                    FileErrorKind::WrongSize {
                        expected: 8192,
                        found: 4096,
                    },
                ..
            }) => {}
            other => panic!("expected WrongSize, got {other:?}"),
        }
        std::fs::remove_file(&p).unwrap();
    }
}
