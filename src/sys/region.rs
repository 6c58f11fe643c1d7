//! Memory a queue can live in: a [`Mapping`](super::Mapping) in real use,
//! a [`HeapRegion`] in tests and in-process use.
//!
//! [`Region`] is sealed: the crate decides which types are memory a queue
//! may own, so no safe code can hand a queue memory it still reads or
//! writes itself. A queue takes its region by value and never gives out a
//! reference to it again.

use std::alloc::Layout;
use std::ptr::NonNull;

mod sealed {
    pub(crate) trait Sealed {}
}

/// Memory a queue can own: `size()` bytes at `base()`, 64-byte aligned,
/// valid for reads and writes for as long as the value lives. Sealed:
/// implemented by [`Mapping`](super::Mapping) and [`HeapRegion`] only.
pub(crate) trait Region: sealed::Sealed + Send + Sync + 'static {
    /// Start of the region.
    fn base(&self) -> *mut u8;
    /// Size in bytes.
    fn size(&self) -> usize;
}

impl sealed::Sealed for super::Mapping {}

impl Region for super::Mapping {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn size(&self) -> usize {
        self.len()
    }
}

/// Bytes of alignment of a [`HeapRegion`] (a cache line, as a mapping's
/// page alignment provides).
pub(crate) const HEAP_ALIGN: usize = 64;

/// A zeroed, 64-byte aligned heap region, owned by exactly one value: for
/// tests, fuzzing and in-process queues. A queue that takes it is its
/// only user; cloning copies the bytes into a new region.
#[derive(Debug)]
pub(crate) struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by this value; every access
// from a shared reference goes through the owning queue, which uses atomics
// for the words two threads share (see the queue modules).
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// A zeroed region of `size` bytes (at least 1).
    ///
    /// # Panics
    /// If `size` is 0 or too large for an allocation (a caller bug).
    pub(crate) fn new(size: usize) -> HeapRegion {
        let layout = Layout::from_size_align(size.max(1), HEAP_ALIGN).expect("region size");
        // SAFETY: layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HeapRegion { ptr, layout }
    }

    /// A region of `size` bytes whose first bytes are `init` (cut to the
    /// size): arbitrary memory for tests and fuzzing.
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub(crate) fn with_contents(size: usize, init: &[u8]) -> HeapRegion {
        let mut r = HeapRegion::new(size);
        let n = init.len().min(size);
        r.as_mut_slice()[..n].copy_from_slice(&init[..n]);
        r
    }

    /// The bytes (this value is their only owner).
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+size is a live allocation owned by self; a
        // HeapRegion is never shared with a queue while a reference to it
        // exists (queues take it by value and give out no reference).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The bytes, to change.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl sealed::Sealed for HeapRegion {}

impl Region for HeapRegion {
    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn size(&self) -> usize {
        self.layout.size()
    }
}

impl Clone for HeapRegion {
    /// A copy of the bytes in a new region (the original stays its own).
    fn clone(&self) -> Self {
        HeapRegion::with_contents(self.layout.size(), self.as_slice())
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
