//! Atomics for this crate: multiproc-sync's facade (loom-swappable) plus `compiler_fence`.

pub(crate) use multiproc_sync::facade::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::compiler_fence;

/// Under loom there is no compiler to reorder: a no-op.
#[cfg(loom)]
pub(crate) fn compiler_fence(_: Ordering) {}
