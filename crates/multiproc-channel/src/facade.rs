//! Atomics come from here only. This crate has no lock-free algorithm of its own worth a loom
//! model (the rings under it are modelled in `multiproc-ring`), so these are always `std`'s:
//! that also lets process-global statics (`ident.rs`) use them.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
