//! The only place that calls the operating system for memory: mapping
//! queue files and shared-memory objects. Every `unsafe` of the crate
//! outside the two queue modules lives here.
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

use crate::error::{FileError, FileErrorKind};

/// How to create and map a file.
#[derive(Clone, Copy, Debug)]
pub struct MapOptions {
    /// Permission bits for a file this call creates (default 0600). The
    /// mode is set exactly, regardless of the umask.
    pub mode: u32,
    /// Take an exclusive `flock` so a second process (or a second object
    /// in this process) cannot map the same queue for writing.
    pub lock: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            mode: 0o600,
            lock: true,
        }
    }
}

/// A file mapped read-write and shared. Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    created: bool,
    path: PathBuf,
    _file: File,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to
// another thread moves the only handle to it.
unsafe impl Send for Mapping {}
// SAFETY: shared access only hands out `&[u8]` or the raw pointer; writes
// through the raw pointer are the caller's responsibility (atomics in the
// shm queue).
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Opens or creates `path` with exactly `len` bytes and maps it.
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
    pub fn open(path: &Path, len: usize, opts: MapOptions) -> Result<Mapping, FileError> {
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
        if opts.lock {
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
        // SAFETY: fd is a valid open descriptor of a file at least `len`
        // bytes long (checked or reserved above); we ask the kernel for a
        // fresh address and check the result before using it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
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
            created,
            path: path.into(),
            _file: file,
        })
    }

    /// Whether this call created the file (its content is all zero).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self. Bytes may be
        // changed by another process (see the module docs); every user of
        // these bytes treats them as untrusted input.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsMut<[u8]> for Mapping {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`, and `&mut self` makes this the only
        // reference handed out by this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
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

/// A [`Mapping`] shared by the persistent queue and the receive half of
/// the same connection, which persists the local ack into the queue file's
/// header (see [`AckWord`]). Both live on one thread; neither keeps a
/// reference into the mapping across calls.
#[derive(Clone, Debug)]
pub struct SharedMapping(std::sync::Arc<Mapping>);

impl SharedMapping {
    /// Shares `m`.
    pub fn new(m: Mapping) -> Self {
        SharedMapping(std::sync::Arc::new(m))
    }

    /// The path of the mapped file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A handle to the aligned u32 at `offset`.
    ///
    /// # Panics
    /// If `offset` is not 4-aligned or not inside the mapping (a caller bug).
    pub fn word(&self, offset: usize) -> AckWord {
        assert!(offset % 4 == 0 && offset + 4 <= self.0.len);
        AckWord {
            map: self.clone(),
            offset,
        }
    }
}

impl AsRef<[u8]> for SharedMapping {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().as_ref()
    }
}

impl AsMut<[u8]> for SharedMapping {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is a live mapping kept alive by the Arc. The
        // slice is exclusive for its (call-long) lifetime: the only other
        // accesses are AckWord's, on the same thread, which never overlap a
        // call that holds this slice (see SharedMapping).
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }
}

/// One u32 of a shared mapping, read and written atomically (so a crash
/// never tears it) without holding a reference across calls.
#[derive(Clone, Debug)]
pub struct AckWord {
    map: SharedMapping,
    offset: usize,
}

impl AckWord {
    fn atomic(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: offset is 4-aligned and inside the page-aligned mapping
        // (checked in `word`), which the Arc keeps alive as long as self.
        unsafe {
            std::sync::atomic::AtomicU32::from_ptr(self.map.0.ptr.as_ptr().add(self.offset).cast())
        }
    }

    /// The stored value (little-endian on disk; this crate targets
    /// little-endian hosts, checked at compile time in lib.rs).
    pub fn get(&self) -> u32 {
        // Relaxed: single-threaded use; atomicity only guards against a
        // torn value after a crash.
        self.atomic().load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores `v`; it survives a kill -9 as soon as this returns.
    pub fn set(&self, v: u32) {
        // Relaxed: as in `get`.
        self.atomic().store(v, std::sync::atomic::Ordering::Relaxed)
    }
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
        let mut m = Mapping::open(&p, 4096, MapOptions::default()).unwrap();
        assert!(m.created());
        m.as_mut()[10] = 7;
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
        assert_eq!(m.as_ref()[10], 7);
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
