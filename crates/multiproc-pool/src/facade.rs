//! The atomics this crate uses (one place, per the project's CI rule).
/// The test hooks' counter (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
pub use std::sync::atomic::AtomicU32;
pub use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
