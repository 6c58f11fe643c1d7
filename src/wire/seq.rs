//! Sequence numbers: u32 that wrap, compared in wrapping order.
#![forbid(unsafe_code)]

/// `a` is newer than `b` in wrapping u32 sequence space.
#[inline]
pub(crate) fn seq_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `x` lies in `[start, end]` in wrapping u32 sequence space.
#[inline]
pub(crate) fn seq_within(x: u32, start: u32, end: u32) -> bool {
    !seq_newer(start, x) && !seq_newer(x, end)
}
