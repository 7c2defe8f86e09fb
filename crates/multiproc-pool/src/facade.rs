//! The atomics this crate uses (one place, per the project's CI rule).
pub use std::sync::atomic::{AtomicU64, Ordering};
