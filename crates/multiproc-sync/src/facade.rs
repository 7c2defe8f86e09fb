//! The one place atomics and `UnsafeCell` come from, so loom can swap them in under `cfg(loom)`.
//!
//! Algorithms in this crate take their atomics from here; loom models (`tests/loom_*.rs`, run with
//! `RUSTFLAGS="--cfg loom"`) then explore every interleaving on heap memory.

#[cfg(not(loom))]
pub use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// Spin hint (a yield under loom, so models make progress).
#[inline]
pub fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
