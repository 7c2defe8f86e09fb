//! The atomics this crate uses (one place, per the project's CI rule).
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
