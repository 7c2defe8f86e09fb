//! Errors of the pool, one type per operation: [`BuildError`] (building a pool),
//! [`SubmitError`] (handing it work), [`TaskError`] (what a task gave instead of its value),
//! [`PoolJoinError`] (`join`), [`ReadyError`] (`wait_ready`), [`NotReady`] (`successful`), and
//! [`PoolError`], their union, for the synchronous calls that submit and wait in one (`apply`,
//! `map`, `starmap`) and for code that returns any of them with `?`.

/// A worker (or one of its pipes or threads) could not be started, or workers kept exiting
/// before taking a job and the pool gave up. The step that failed is in the text, its error
/// only in [`source`](std::error::Error::source) (an error report prints each once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("starting a worker: {what}")]
pub struct WorkerStartError {
    /// The step that failed (its error is the source), or why the pool gave up.
    pub what: String,
    /// The error of the step that failed (a process, shared-memory or OS error); `None` when
    /// the pool gave up by itself.
    #[source]
    pub source: Option<SharedSource>,
}

impl WorkerStartError {
    /// For the step `what` that failed with an error, as a `map_err` argument.
    pub(crate) fn step<E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
    ) -> impl FnOnce(E) -> WorkerStartError {
        move |e| WorkerStartError {
            what: what.to_string(),
            source: Some(SharedSource(std::sync::Arc::new(e))),
        }
    }
}

/// Why [`PoolBuilder::build`](crate::PoolBuilder::build) (or [`Pool::new`](crate::Pool::new))
/// made no pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `processes(0)` (Python: `ValueError("Number of processes must be at least 1")`).
    #[error("Number of processes must be at least 1")]
    InvalidProcesses,
    /// `maxtasksperchild(0)` (Python: `ValueError("maxtasksperchild must be a positive int or None")`).
    #[error("maxtasksperchild must be a positive int or None")]
    InvalidMaxTasks,
    /// The initializer is not a `#[multiproc::task]`.
    #[error("the initializer: {}", multiproc_process::task_not_registered_text(.0))]
    TaskNotRegistered(&'static str),
    /// The initializer's arguments could not be handed to the workers.
    #[error("bad initializer arguments")]
    Arguments(#[source] ArgumentsError),
    /// A worker could not be started.
    #[error(transparent)]
    Start(#[from] WorkerStartError),
}

/// Why the pool did not take the work: the `*_async` calls, `imap`/`imap_unordered`, and the
/// first half of the synchronous calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// A call after `close()` or `terminate()` (Python: `ValueError("Pool not running")`).
    #[error("Pool not running")]
    NotRunning,
    /// `chunksize(0)`.
    #[error("chunksize must be at least 1")]
    InvalidChunksize,
    /// The function is not a `#[multiproc::task]`.
    #[error("{}", multiproc_process::task_not_registered_text(.0))]
    TaskNotRegistered(&'static str),
    /// The arguments could not be handed to the workers: encoding failed, they are over the
    /// message limit, or they carry too many shared objects.
    #[error("bad task arguments")]
    Arguments(#[source] ArgumentsError),
    /// The pool gave up starting workers (see [`WorkerStartError`]): it takes no more work.
    #[error(transparent)]
    Start(#[from] WorkerStartError),
}

/// Why a task's (or the initializer's) arguments could not be handed to the workers: the
/// source of [`SubmitError::Arguments`] and [`BuildError::Arguments`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentsError {
    /// postcard refused a value (a `serde` impl that fails, a map without a length, ...).
    #[error("encoding {ty} with postcard failed")]
    Encode {
        /// The type postcard was encoding.
        ty: &'static str,
        /// postcard's error.
        #[source]
        source: postcard::Error,
    },
    /// The encoded job is over the largest message a worker's pipe carries.
    #[error("the encoded arguments ({len} bytes) exceed the maximum message of {max} bytes")]
    TooLarge {
        /// The encoded job's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The arguments hold more shared objects' fds than one job can carry.
    #[error("the arguments hold {count} fds of shared objects; at most {max} per job")]
    TooManyFds {
        /// The fds the arguments hold.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Duplicating the shared objects' fds (kept until the job is settled) failed.
    #[error("keeping the fds of the shared objects")]
    KeepFds(#[source] SharedSource),
}

impl ArgumentsError {
    /// postcard refused a value of type `A`.
    pub(crate) fn encode<A>(source: postcard::Error) -> Self {
        ArgumentsError::Encode {
            ty: std::any::type_name::<A>(),
            source,
        }
    }

    /// `dup` of the shared objects' fds failed.
    pub(crate) fn keep_fds(e: std::io::Error) -> Self {
        ArgumentsError::KeepFds(SharedSource(std::sync::Arc::new(e)))
    }
}

/// What a task gave instead of its value: [`AsyncResult::get`](crate::AsyncResult::get) and
/// `get_timeout`, an `imap` item, an [`on_error`](crate::Callbacks::on_error) callback (which
/// never sees `Timeout` or `AlreadyTaken`). `Clone` so a map's first error and callbacks can
/// share it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The result was not ready within the timeout (Python: `multiprocessing.TimeoutError`).
    #[error("timed out waiting for the result")]
    Timeout,
    /// The value was already taken by an earlier `get`.
    #[error("the result was already taken by an earlier get")]
    AlreadyTaken,
    /// The task panicked in the worker (the worker survives); the panic message.
    #[error("the task panicked: {message}")]
    TaskPanicked {
        /// The panic message.
        message: String,
    },
    /// The worker could not encode the task's result (Python: `MaybeEncodingError`); the worker
    /// survives.
    #[error("error sending result: {message}")]
    Encoding {
        /// What the encoder said.
        message: String,
    },
    /// The worker could not decode the arguments or find the task, or the parent could not
    /// decode the result.
    #[error("task failed: {0}")]
    Task(String),
    /// The worker running the task died (killed, OOM, `exit`) before returning its result.
    #[error("worker {pid} was lost ({}) while running the task", lost_text(*.signal, *.exitcode))]
    WorkerLost {
        /// The worker's pid.
        pid: u32,
        /// The signal that ended it, if a signal did.
        signal: Option<i32>,
        /// Its exit code (`-signal` when killed).
        exitcode: Option<i32>,
    },
    /// The task's result is larger than the largest message a worker can send back; the
    /// worker survives.
    #[error("the task's result of {len} bytes exceeds the maximum message of {max} bytes")]
    ResultTooLarge {
        /// The encoded result's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The task ran past its time limit ([`PoolBuilder::task_timeout`](crate::PoolBuilder::task_timeout)
    /// or [`Pool::apply_async_limited`](crate::Pool::apply_async_limited)): its worker was
    /// killed and replaced.
    #[error("the task ran past its time limit of {limit:?} in worker {pid}, which was killed")]
    TimeLimit {
        /// The worker's pid.
        pid: u32,
        /// The limit.
        limit: std::time::Duration,
    },
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// The pool gave up starting workers before the task ran (see [`WorkerStartError`]).
    #[error(transparent)]
    Start(#[from] WorkerStartError),
}

/// Why [`Pool::join`](crate::Pool::join) or `join_timeout` returned before the workers exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolJoinError {
    /// The pool was neither closed nor terminated (Python: `ValueError`).
    #[error("Pool is still running: call close() or terminate() before join()")]
    StillRunning,
    /// `join_timeout` expired; the pool keeps going.
    #[error("timed out waiting for the pool's workers to exit")]
    Timeout,
}

/// Why [`Pool::wait_ready`](crate::Pool::wait_ready) returned before every worker was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadyError {
    /// Not every worker was up within the timeout.
    #[error("timed out waiting for the pool's workers to be ready")]
    Timeout,
    /// The pool was terminated.
    #[error("Pool not running")]
    NotRunning,
}

/// [`AsyncResult::successful`](crate::AsyncResult::successful) before the result is ready
/// (Python: `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the result is not ready")]
pub struct NotReady;

/// Any error of the pool: what the synchronous calls (`apply`, `map`, `map_chunked`,
/// `starmap`) return, since they submit and wait in one call, and what each operation's own
/// error converts into with `?`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Building the pool failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The pool did not take the work.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The task gave no value.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// `join` returned early.
    #[error(transparent)]
    Join(#[from] PoolJoinError),
    /// `wait_ready` returned early.
    #[error(transparent)]
    Ready(#[from] ReadyError),
    /// `successful` before the result was ready.
    #[error(transparent)]
    NotReady(#[from] NotReady),
}

impl PoolError {
    /// The task's error if this is one (`WorkerLost`, `TaskPanicked`, ...): what a synchronous
    /// `apply`/`map` caller matches on after the submit succeeded.
    pub fn as_task(&self) -> Option<&TaskError> {
        match self {
            PoolError::Task(e) => Some(e),
            _ => None,
        }
    }
}

/// The error behind a [`WorkerStartError`] or [`ArgumentsError::KeepFds`]: shared (a pool that
/// gives up hands the same error to every waiting call), so two are equal when they are the
/// same error.
#[derive(Clone)]
pub struct SharedSource(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl SharedSource {
    /// The error itself (downcast it to `multiproc_process::StartError`,
    /// `std::io::Error`, ...).
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedSource {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedSource {}

/// `killed by signal 9` / `exit status 1` / `exit status unknown` (no `Some(..)` in messages).
fn lost_text(signal: Option<i32>, exitcode: Option<i32>) -> String {
    match signal {
        Some(s) => format!("killed by signal {s}"),
        None => multiproc_process::exit_text(exitcode),
    }
}

/// Result alias.
pub type Result<T, E = PoolError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_start_error_keeps_its_cause_as_the_source() {
        let e = WorkerStartError::step("creating its eventfd")(std::io::Error::from_raw_os_error(
            libc::EMFILE,
        ));
        // The step in the text, the cause only as the source (printed once in a chain).
        assert_eq!(e.to_string(), "starting a worker: creating its eventfd");
        let src = e.source().expect("the step's error is the source");
        let io = src
            .downcast_ref::<SharedSource>()
            .and_then(|s| s.get().downcast_ref::<std::io::Error>())
            .expect("an io::Error behind it");
        assert_eq!(io.raw_os_error(), Some(libc::EMFILE));
        // Clones (what a pool that gives up hands to every waiter) are equal; another error
        // with the same text is not the same error.
        assert_eq!(e.clone(), e);
        assert_ne!(
            WorkerStartError::step("creating its eventfd")(std::io::Error::from_raw_os_error(
                libc::EMFILE
            )),
            e
        );
    }
}
