//! # multiproc
//!
//! Python's `multiprocessing`, rebuilt in Rust over shared memory: the same ideas (`Value`/`Array`
//! with `get_lock()`, locks, queues, pipes, processes, pools) with messages and state in shared
//! memory instead of pickles over sockets, and no process death able to hang or corrupt the rest.
//!
//! ```
//! use multiproc::prelude::*;
//! let counter = Value::new(0i64).unwrap();
//! {
//!     let mut g = counter.get_lock().unwrap();
//!     *g += 1;
//! }
//! assert_eq!(counter.load().unwrap(), 1);
//! ```
//!
//! See the README for the Python -> multiproc table and `docs/` for the design.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub use multiproc_collections as collections;
pub use multiproc_shm as shm;
pub use multiproc_sync as sync;

pub use multiproc_channel as channel;
pub use multiproc_collections::{
    DictGuard, Error as CollectionError, ListGuard, Manager, SharedDict, SharedList, SharedLock,
    SharedLockGuard,
};
pub use multiproc_ring as ring;

pub use multiproc_channel::{
    Connection, GetError, JoinableQueue, Pipe, PutError, Queue, RecvError, SendError, Sentinel,
    SimpleQueue, wait,
};
pub use multiproc_ring::{
    Consumer, MpmcRing, PopError, Producer, PushError, ReadGrant, RingError, SpscRing,
    WaitStrategy, WriteGrant,
};
pub use multiproc_shm::{ObjectKind, Segment, SegmentHandle, ShmError};
pub use multiproc_sync::{
    Array, ArrayGuard, LockError, LockOutcome, LockResult, MutexError, RawArray, RawValue,
    SharedData, SyncError, Value, ValueGuard,
};
pub use multiproc_sync::{
    Barrier, BarrierError, BoundedSemaphore, CondGuard, Condition, ConditionError, Event, Lock,
    LockGuard, LockReleaseError, RLock, RLockError, RLockGuard, Semaphore, SemaphoreError,
    SemaphoreGuard,
};

/// Processes: start methods, the task registry, logging (the `multiproc-process` crate).
pub use multiproc_process as process;
#[doc(hidden)]
pub use multiproc_process::__private;
pub use multiproc_process::{
    ChildInfo, ParentProcess, Process, ProcessBuilder, ProcessError, ProcessInfo, StartMethod,
    active_children, current_process, get_all_start_methods, get_start_method, init,
    init_before_main, init_with, parent_process, set_start_method, task,
};
#[cfg(feature = "log-to-stderr")]
pub use multiproc_process::{log_to_stderr, stderr_layer};

/// Pools of worker processes (the `multiproc-pool` crate).
pub use multiproc_pool as pool;
pub use multiproc_pool::{AsyncResult, Callbacks, IMap, Pool, PoolBuilder, PoolError};

/// Beyond one machine: `RemoteQueue` and `RemotePool` on Redis Streams (the `multiproc-redis`
/// crate, with the `redis` feature). See `docs/redis.md`.
#[cfg(feature = "redis")]
pub use multiproc_redis as redis;

/// The common imports.
pub mod prelude {
    pub use crate::{Array, LockError, RawArray, RawValue, SyncError, Value};
    pub use crate::{AsyncResult, Callbacks, Pool, PoolError};
    pub use crate::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
    pub use crate::{Connection, JoinableQueue, Pipe, Queue, SimpleQueue};
    pub use crate::{Manager, SharedDict, SharedList, SharedLock};
    pub use crate::{Process, ProcessError, StartMethod};
}
