//! Processes for multiproc, as Python's `multiprocessing.Process`: start a function in another
//! process and manage its life, with the task's return value coming back from `join`.
//!
//! * [`init`] is the first line of `main`: in a child started by multiproc it runs the task.
//! * `#[multiproc::task]` registers a `fn(A, ..) -> R` (serde arguments and result) in a
//!   link-time registry; [`Process::spawn`] takes the plain function.
//! * Start methods ([`StartMethod`]): `Spawn` (re-exec of `/proc/self/exe`, the default, safe in
//!   threaded parents), `Fork` (closures; meant for single-threaded parents: a threaded one logs a warning once,
//!   or is refused under `refuse_if_threaded`) and `ForkServer`.
//! * Daemons die with their parent (`PR_SET_PDEATHSIG`); exit codes follow Python (`-signal` when
//!   killed); no zombie is left behind; [`log_to_stderr`] prints `[INFO/Process-1] ...`.
//!
//! ```no_run
//! use multiproc_process::{Process, init};
//! #[multiproc_process::task(crate = multiproc_process)]
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() {
//!     init();
//!     let mut p = Process::spawn(square, 7).unwrap();
//!     assert_eq!(p.join().unwrap(), 49);
//! }
//! ```
//!
//! What `#[task]` refuses at compile time (a child must find a task by a fixed id):
//!
//! ```compile_fail
//! #[multiproc_process::task(crate = multiproc_process)]
//! fn generic<T>(x: T) -> u8 { 0 }
//! ```
//! ```compile_fail
//! #[multiproc_process::task(crate = multiproc_process)]
//! async fn not_async(x: u8) -> u8 { x }
//! ```
//! ```compile_fail
//! #[multiproc_process::task(crate = multiproc_process, unknown = 1)]
//! fn bad_option(x: u8) -> u8 { x }
//! ```
//! ```compile_fail
//! // arguments must be serde types
//! struct NotSerde;
//! #[multiproc_process::task(crate = multiproc_process)]
//! fn not_serde(x: NotSerde) -> u8 { 0 }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod boot;
mod builder;
mod child;
mod error;
mod facade;
mod fdwatch;
mod forkserver;
mod introspect;
mod launch;
mod log;
mod process;
pub mod registry;
mod spawn;
mod start_method;
mod state;
use multiproc_shm::sys;

pub use builder::{DEFAULT_HANDSHAKE_TIMEOUT, ProcessBuilder};
pub use child::{init, init_with, panic_message};
pub use error::{
    CodecError, JoinError, NotRunning, ProcessError, Result, StartError, StartMethodAlreadySet,
    StillRunning,
};
#[doc(hidden)]
pub use error::{exit_text, task_not_registered_text};
pub use introspect::{
    ChildInfo, ParentProcess, ProcessInfo, active_children, current_process, parent_process,
};
pub use log::{LogInitError, level_name};
#[cfg(feature = "log-to-stderr")]
pub use log::{PythonFormat, log_to_stderr, stderr_layer};
pub use multiproc_macros::task;
pub use process::Process;
pub use registry::Task;
pub use start_method::{
    StartMethod, get_all_start_methods, get_start_method, set_refuse_fork_if_threaded,
    set_start_method,
};
pub use tracing::Level;

/// Runs [`init`] before `main`, from an ELF constructor: for binaries whose `main` is not
/// yours, such as libtest test binaries (`cargo test`, nextest). Put it once in the test crate.
///
/// ```ignore
/// multiproc_process::init_before_main!();
/// ```
///
/// With a setup function, it runs [`init_with`]`(setup)` instead (`setup: fn()`, run in this
/// process before `main` and in every spawned or fork-server child before its task):
///
/// ```ignore
/// fn setup() { /* install a tracing subscriber */ }
/// multiproc_process::init_before_main!(setup);
/// ```
#[macro_export]
macro_rules! init_before_main {
    ($setup:path) => {
        #[used]
        // SAFETY: .init_array entries are plain `extern "C" fn()` pointers run by the loader
        // before main; ours reads the environment, runs `setup` and, in a child, runs the task
        // and exits.
        #[unsafe(link_section = ".init_array")]
        static __MULTIPROC_INIT_BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn __multiproc_init_before_main() {
                $crate::init_with($setup);
            }
            __multiproc_init_before_main
        };
    };
    () => {
        #[used]
        // SAFETY: .init_array entries are plain `extern "C" fn()` pointers run by the loader
        // before main; ours only reads the environment and, in a child, runs the task and exits.
        #[unsafe(link_section = ".init_array")]
        static __MULTIPROC_INIT_BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn __multiproc_init_before_main() {
                $crate::init();
            }
            __multiproc_init_before_main
        };
    };
}

/// Whether this process's fd watcher thread (the one that wakes `join_async` futures) runs:
/// a test hook (feature `test-hooks`; it exits once no future waits).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn __fd_watcher_running() -> bool {
    fdwatch::__watcher_running()
}

/// The pid of this process's fork server, if it runs (a test hook, feature `test-hooks`, e.g.
/// to lower its fd limit).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn __fork_server_pid() -> Option<i32> {
    forkserver::server_pid()
}

/// What `#[multiproc::task]` expands to refers to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{
        TASKS, TaskEntry, TaskFailure, assert_task_arg, assert_task_result, run_chunk, run_task,
        type_id_of_val,
    };
    pub use linkme;
}
