//! Process-shared synchronization for multiproc: the shared futex, a robust mutex, and
//! `Value<T>` / `Array<T>` with `get_lock()`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod facade;
pub mod futex;

mod ident;
mod shared;

pub mod barrier;
pub mod condition;
pub mod event;
pub mod lock;
pub mod rlock;
pub mod semaphore;

pub use barrier::{Barrier, BarrierCreateError, BarrierError};
pub use condition::{CondGuard, CondLock, Condition, ConditionError};
pub use event::Event;
pub use lock::{Lock, LockError, LockGuard};
pub use multiproc_shm::ShmError;
pub use rlock::{RLock, RLockError, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreError, SemaphoreGuard};
