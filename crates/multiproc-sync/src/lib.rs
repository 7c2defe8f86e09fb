//! Process-shared synchronization for multiproc: the shared futex, a robust mutex, and
//! `Value<T>` / `Array<T>` with `get_lock()` (plus their lock-free `Raw*` twins).
//!
//! Everything here lives in a [`multiproc_shm::Segment`] and is usable from any process that
//! maps it: children after `fork`, spawned children given the handle, unrelated processes by name.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod arena;
mod array;
mod error;
pub mod facade;
pub mod futex;
pub mod inspect;
pub mod mutex;
#[cfg(not(loom))]
pub mod notify;
pub mod park;
mod value;

mod ident;
mod shared;

pub mod barrier;
pub mod condition;
pub mod event;
pub mod lock;
pub mod rlock;
pub mod semaphore;

pub use arena::{Arena, ArenaStats, SlotHandle};
pub use array::{Array, ArrayGuard, RawArray};
pub use error::{
    AccessError, ArenaError, CreateError, LockError, LockResult, RecoverResult, SyncError,
    refuse_owner_died,
};
pub use mutex::{Holder, LockOutcome, MutexError, RobustMutex};
pub use value::{RawValue, SharedData, Value, ValueGuard};

pub use barrier::{Barrier, BarrierCreateError, BarrierError};
pub use condition::{CondGuard, CondLock, Condition, ConditionError};
pub use event::Event;
pub use lock::{Lock, LockGuard, LockReleaseError};
pub use rlock::{RLock, RLockError, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreError, SemaphoreGuard};
