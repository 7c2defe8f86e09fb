//! Atomics (through `multiproc_sync::facade`, so loom can swap them in), `CachePadded`, and word
//! access to the ring's data region.
//!
//! Control blocks hold facade atomics and are modelled by loom. The data region (record headers
//! and payload bytes) is plain shared memory: its 8-byte record headers are read and written
//! through std atomics built over the raw address, which loom does not model (its ordering is
//! carried by the control block's head/tail, which loom does check).

pub(crate) use multiproc_sync::facade::{AtomicU32, AtomicU64, Ordering, spin_hint};
/// Process-local statics (settings never in shared memory, so loom need not model them).
pub(crate) use multiproc_sync::facade::{StdAtomicU32, StdAtomicU64, StdOrdering};

/// Pads and aligns a value to 128 bytes (two cache lines: the adjacent-line prefetcher pulls
/// pairs), so a producer's and a consumer's hot words never share a line.
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Loads an 8-byte word of the data region.
///
/// # Safety
/// `p` is 8-aligned and points into a live mapping of at least 8 bytes.
#[inline]
pub(crate) unsafe fn load_word(p: *const u8, order: std::sync::atomic::Ordering) -> u64 {
    // SAFETY: the caller guarantees alignment and a live mapping; an atomic access is never a
    // data race even if another process writes the word concurrently.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(p.cast_mut().cast::<u64>()) }.load(order)
}

/// Stores an 8-byte word of the data region.
///
/// # Safety
/// `p` is 8-aligned and points into a live mapping of at least 8 bytes.
#[inline]
pub(crate) unsafe fn store_word(p: *mut u8, v: u64, order: std::sync::atomic::Ordering) {
    // SAFETY: as in `load_word`.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(p.cast::<u64>()) }.store(v, order)
}

/// Rounds up to a multiple of 8.
#[inline]
pub(crate) const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}
