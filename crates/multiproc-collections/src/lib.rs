//! Shared collections for multiproc: [`SharedDict`] and [`SharedList`] live entirely in shared
//! memory, under a robust process-shared mutex, and [`Manager`] makes them (and values, arrays,
//! locks) the way Python's `multiprocessing.Manager()` does — without a server process.
//!
//! Storage, crash consistency and capacity are described in `docs/collections.md`; in short:
//! one segment per object, a hash table (or index array) of offsets plus an append arena that is
//! compacted into a second space when full, a redo journal for point updates, and a fixed
//! capacity chosen at creation (`WriteError::Full` beyond it; untouched memory costs nothing).
//!
//! ```
//! use multiproc_collections::Manager;
//! let m = Manager::new();
//! let d = m.dict_from([("count".to_string(), 300i64)]).unwrap();
//! d.update("count", |c| c.unwrap_or(0) - 1).unwrap();
//! assert_eq!(d.get("count").unwrap(), Some(299));
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod codec;
mod dict;
mod error;
mod facade;
mod failpoint;
mod list;
mod lock;
mod manager;
mod store;

pub use dict::{
    CollectionOptions, DEFAULT_BYTES_PER_ENTRY, DEFAULT_CAPACITY, DictGuard, Key, SharedDict,
};
pub use error::{CreateError, Error, ReadError, Result, WriteError};
#[cfg(feature = "failpoints")]
pub use failpoint::arm as arm_crash_point;
pub use list::{ListGuard, SharedList};
pub use lock::{SharedLock, SharedLockGuard};
pub use manager::Manager;
#[doc(hidden)]
pub use store::MAGIC_OFFSET;

/// Read-only views for tools (`multiproc inspect`) that do not know an object's types.
pub mod inspect {
    pub use crate::store::len_of;
}
