//! The one place this crate's atomics come from (the project's rule: atomics through a facade
//! module). The process layer has no lock-free algorithm to model under loom; its atomics are
//! plain flags (`init()` called, the log level) and the fd watcher's state pointer, so this is
//! std's in every configuration.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, Ordering};
