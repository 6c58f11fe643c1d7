//! A page of a file mapped shared by two processes, reached only through
//! atomic words: where the cache-line floor ping-pongs.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicU64;

/// One page (4096 bytes) of `path`, mapped read-write and shared.
pub struct SharedPage {
    ptr: *mut u8,
}

const PAGE: usize = 4096;

impl SharedPage {
    /// Maps the first page of `path` (created, and sized, if needed).
    pub fn open(path: &Path) -> Result<SharedPage, String> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.set_len(PAGE as u64)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: a fresh shared mapping of an open file of PAGE bytes; the
        // kernel picks the address. The mapping outlives the file handle.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(SharedPage { ptr: ptr.cast() })
    }

    /// The 8-byte word at byte `off` (8-aligned, inside the page).
    ///
    /// # Panics
    /// If `off` is not an 8-aligned offset inside the page.
    pub fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= PAGE, "word at {off}");
        // SAFETY: inside the live, page-aligned mapping (checked), 8-aligned;
        // both processes reach these bytes only atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once; no reference
        // from `word` outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), PAGE);
        }
    }
}
