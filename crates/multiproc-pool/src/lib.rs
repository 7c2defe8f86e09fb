//! Python's `multiprocessing.Pool` for multiproc: worker processes running
//! `#[multiproc::task]` functions, chunked `map`, lazy `imap`, `AsyncResult`s with callbacks,
//! `maxtasksperchild`, and no hang when a worker dies.
//!
//! Each worker has its own pair of shared-memory pipes, so the pool knows exactly which jobs
//! each worker holds: a worker killed at any moment fails the job it was running with
//! [`TaskError::WorkerLost`] (or retries it, see [`PoolBuilder::retries`]), its unstarted jobs
//! go to the other workers, and it is replaced (Python's Pool hangs: pitfall B.1 of the
//! reference).
//!
//! ```no_run
//! use multiproc_pool::Pool;
//! #[multiproc_process::task(crate = multiproc_process)]
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() {
//!     multiproc_process::init();
//!     let pool = Pool::builder().processes(2).build().unwrap();
//!     assert_eq!(pool.map(square, 0..4u64).unwrap(), vec![0, 1, 4, 9]);
//!     let r = pool.apply_async(square, 3).unwrap();
//!     assert_eq!(r.get_timeout(std::time::Duration::from_secs(5)).unwrap(), 9);
//!     pool.close();
//!     pool.join().unwrap();
//! }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod error;
mod facade;
mod fdpass;
mod pool;
mod result;
mod wire;
mod worker;

pub use error::{
    ArgumentsError, BuildError, NotReady, PoolError, PoolJoinError, ReadyError, Result,
    SharedSource, SubmitError, TaskError, WorkerStartError,
};
pub use multiproc_ring::WaitStrategy;
#[cfg(feature = "test-hooks")]
pub use pool::{__fail_thread_spawns, __stall_next_sender};
pub use pool::{IMap, ITEM_WINDOW, Pool, PoolBuilder, default_chunksize};
pub use result::{
    AsyncResult, Callback, Callbacks, ErrorCallback, GetFuture, ResultFuture, WaitFuture,
};
