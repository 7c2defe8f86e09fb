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
//! Start with [`docs::readme`] (the Python -> multiproc table) and [`docs::guide`] (every concept
//! side by side); [`docs`] holds the design documents.
//!
//! # Deriving serde and zerocopy traits without pinning their versions
//!
//! `multiproc` re-exports [`serde`] and [`zerocopy`]; point their derives at the re-exports and
//! your `Cargo.toml` needs only `multiproc`:
//!
//! ```
//! use multiproc::serde::{Deserialize, Serialize};
//! use multiproc::zerocopy::{FromBytes, Immutable, IntoBytes};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! #[serde(crate = "multiproc::serde")]
//! struct Job {
//!     id: u64,
//!     name: String,
//! }
//!
//! #[derive(FromBytes, IntoBytes, Immutable, Clone, Copy, Debug, PartialEq)]
//! #[zerocopy(crate = "multiproc::zerocopy")]
//! #[repr(C)]
//! struct Point {
//!     x: f64,
//!     y: f64,
//! }
//!
//! let q = multiproc::Queue::<Job>::new(4).unwrap();
//! q.put(Job { id: 1, name: "a".into() }).unwrap();
//! assert_eq!(q.get().unwrap().id, 1);
//! let p = multiproc::Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
//! assert_eq!(p.load().unwrap().y, 2.0);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

/// serde, re-exported: `#[derive(multiproc::serde::Serialize)]` with
/// `#[serde(crate = "multiproc::serde")]` needs no serde line in your `Cargo.toml`.
pub use serde;
/// zerocopy, re-exported: `#[derive(multiproc::zerocopy::FromBytes, ..)]` with
/// `#[zerocopy(crate = "multiproc::zerocopy")]` for plain data in `Value`/`Array`.
pub use zerocopy;

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
    Connection, GetError, JoinableQueue, Pipe, PipeMode, PutError, Queue, Receiver, RecvError,
    SendError, Sender, Sentinel, SimpleQueue, wait,
};
pub use multiproc_ring::{
    Consumer, MpmcRing, PopError, Producer, PushError, ReadGrant, RingError, SpscRing,
    WaitStrategy, WriteGrant,
};
pub use multiproc_shm::{ObjectKind, Segment, SegmentHandle, ShmError};
pub use multiproc_sync::{
    AccessError, ArenaError, Array, ArrayGuard, CreateError, LockError, LockOutcome, LockResult,
    MutexError, RawArray, RawValue, RecoverResult, SharedData, SyncError, Value, ValueGuard,
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
    ChildInfo, JoinError, NotRunning, ParentProcess, Process, ProcessBuilder, ProcessError,
    ProcessInfo, StartError, StartMethod, StartMethodAlreadySet, StillRunning, active_children,
    current_process, get_all_start_methods, get_start_method, init, init_before_main, init_with,
    parent_process, set_start_method, task,
};
#[cfg(feature = "log-to-stderr")]
pub use multiproc_process::{log_to_stderr, stderr_layer};

/// Pools of worker processes (the `multiproc-pool` crate).
pub use multiproc_pool as pool;
pub use multiproc_pool::{
    ArgumentsError, AsyncResult, BuildError, Callbacks, IMap, NotReady, Pool, PoolBuilder,
    PoolError, PoolJoinError, ReadyError, SubmitError, TaskError, WorkerStartError,
};

/// Beyond one machine: `RemoteQueue` and `RemotePool` on Redis Streams (the `multiproc-redis`
/// crate, with the `redis` feature). See `docs/redis.md`.
#[cfg(feature = "redis")]
pub use multiproc_redis as redis;

/// The project's documents, as they are in the repository (README and guide snippets are
/// doctests, so they keep compiling).
pub mod docs {
    /// The README: what multiproc is, adding it, the Python -> multiproc table.
    #[doc = include_str!("../README.md")]
    pub mod readme {}
    /// docs/guide.md: the Python guide's examples side by side.
    #[doc = include_str!("../docs/guide.md")]
    pub mod guide {}
    /// docs/architecture.md: layers, the trust model, shared-memory rules.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/architecture.md"))]
    pub mod architecture {}
    /// docs/sync.md: the futex, the robust mutex, locks, Value/Array.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/sync.md"))]
    pub mod sync {}
    /// docs/ring.md: the SPSC and MPMC rings.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/ring.md"))]
    pub mod ring {}
    /// docs/async.md: async/await (`recv_async`, `get_async`, `wait_async`, ...) and the
    /// per-process notifier that wakes futures across processes.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/async.md"))]
    pub mod async_await {}
    /// docs/channel.md: Pipe, Queue, codecs.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/channel.md"))]
    pub mod channel {}
    /// docs/process.md: Process, start methods, the task registry.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/process.md"))]
    pub mod process {}
    /// docs/collections.md: SharedDict, SharedList, Manager.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/collections.md"))]
    pub mod collections {}
    /// docs/pool.md: the Pool.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/pool.md"))]
    pub mod pool {}
    /// docs/async-pool-process.md: pool results as futures, `IMap` as a stream,
    /// `Process::join_async`.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/async-pool-process.md"))]
    pub mod async_pool_process {}
    /// docs/redis.md: RemoteQueue and RemotePool on Redis Streams.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/redis.md"))]
    pub mod redis {}
    /// docs/benchmarks.md: every number and how to reproduce it.
    #[cfg_attr(not(doctest), doc = include_str!("../docs/benchmarks.md"))]
    pub mod benchmarks {}
    /// CHANGELOG.md.
    #[cfg_attr(not(doctest), doc = include_str!("../CHANGELOG.md"))]
    pub mod changelog {}
}

/// Mistakes the compiler refuses, with the one-line hint it prints (each block below must fail
/// to compile; they are doctests).
///
/// A task argument that is not a serde type:
/// ```compile_fail,E0277
/// struct NotSerde;
/// #[multiproc::task]
/// fn f(_x: NotSerde) {}
/// ```
/// A borrowed task argument (the hint says `&str` → `String`):
/// ```compile_fail
/// #[multiproc::task]
/// fn f(s: &str) -> usize { s.len() }
/// ```
/// A `Value` of something that is not plain data:
/// ```compile_fail,E0277
/// let _v = multiproc::Value::new(String::new());
/// ```
/// A closure given to `Process::spawn` (it cannot travel to a re-executed child; reported by
/// `cargo build`, not `cargo check`):
/// ```compile_fail,E0080
/// let q = 5u32;
/// let _ = multiproc::Process::spawn(move |x: u32| x + q, 1u32);
/// ```
/// The same for a `Pool`:
/// ```compile_fail,E0080
/// let pool = multiproc::Pool::new(1).unwrap();
/// let k = 2u64;
/// let _ = pool.map(move |x: u64| x * k, 0..4u64);
/// ```
/// A task result that is not a serde type:
/// ```compile_fail,E0277
/// struct NotSerde;
/// #[multiproc::task]
/// fn f() -> NotSerde { NotSerde }
/// ```
/// And what compiles: a forked closure that never returns needs no `-> ()`:
/// ```
/// multiproc::init();
/// let mut p = multiproc::Process::fork(|| std::process::exit(0)).unwrap();
/// let _ = p.join();
/// assert_eq!(p.exitcode(), Some(0));
/// let _spawn_worker = || multiproc::Process::fork(|| loop { std::thread::park() });
/// ```
pub mod compile_errors {}

/// The common imports.
pub mod prelude {
    pub use crate::{Array, LockError, RawArray, RawValue, SyncError, Value};
    pub use crate::{AsyncResult, Callbacks, Pool, PoolError, SubmitError, TaskError};
    pub use crate::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
    pub use crate::{Connection, JoinableQueue, Pipe, Queue, SimpleQueue};
    pub use crate::{JoinError, Process, ProcessError, StartError, StartMethod};
    pub use crate::{Manager, SharedDict, SharedList, SharedLock};
}
