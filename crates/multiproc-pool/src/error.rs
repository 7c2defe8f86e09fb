//! Errors of the pool.

/// Why a pool call or a task failed. `Clone` so a map's first error and callbacks can share it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// `processes(0)` (Python: `ValueError("Number of processes must be at least 1")`).
    #[error("Number of processes must be at least 1")]
    InvalidProcesses,
    /// `maxtasksperchild(0)` (Python: `ValueError("maxtasksperchild must be a positive int or None")`).
    #[error("maxtasksperchild must be a positive int or None")]
    InvalidMaxTasks,
    /// `chunksize(0)`.
    #[error("chunksize must be at least 1")]
    InvalidChunksize,
    /// A call after `close()` or `terminate()` (Python: `ValueError("Pool not running")`).
    #[error("Pool not running")]
    NotRunning,
    /// `join()` on a pool that was neither closed nor terminated (Python: `ValueError`).
    #[error("Pool is still running: call close() or terminate() before join()")]
    StillRunning,
    /// The result was not ready within the timeout (Python: `multiprocessing.TimeoutError`).
    #[error("timed out waiting for the result")]
    Timeout,
    /// `successful()` before the result is ready (Python: `ValueError`).
    #[error("the result is not ready")]
    NotReady,
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
    /// The function is not a `#[multiproc::task]`.
    #[error("{}", multiproc_process::task_not_registered_text(.0))]
    TaskNotRegistered(&'static str),
    /// Encoding the arguments in the parent failed.
    #[error("bad task arguments: {0}")]
    Arguments(String),
    /// Starting a worker process or its pipes failed (or workers kept exiting before taking
    /// a job, and the pool gave up).
    #[error("starting a worker: {what}")]
    Start {
        /// The step that failed (its error is the source), or why the pool gave up.
        what: String,
        /// The error of the step that failed (a process, shared-memory or OS error), for
        /// [`std::error::Error::source`] chains; `None` when the pool gave up by itself.
        #[source]
        source: Option<StartSource>,
    },
}

impl PoolError {
    /// [`PoolError::Start`] for the step `what` that failed with an error (kept as the source,
    /// not repeated in the text: a report that walks `source()` prints each once), as a
    /// `map_err` argument.
    pub(crate) fn start<E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
    ) -> impl FnOnce(E) -> PoolError {
        move |e| PoolError::Start {
            what: what.to_string(),
            source: Some(StartSource(std::sync::Arc::new(e))),
        }
    }
}

/// The error behind a [`PoolError::Start`]: shared (a pool that gives up hands the same
/// error to every waiting call), so two are equal when they are the same error.
#[derive(Clone)]
pub struct StartSource(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl StartSource {
    /// The error itself (downcast it to `multiproc_process::StartError`,
    /// `std::io::Error`, ...).
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for StartSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for StartSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for StartSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for StartSource {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StartSource {}

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
        let e = PoolError::start("creating its eventfd")(std::io::Error::from_raw_os_error(
            libc::EMFILE,
        ));
        // The step in the text, the cause only as the source (printed once in a chain).
        assert_eq!(e.to_string(), "starting a worker: creating its eventfd");
        let src = e.source().expect("the step's error is the source");
        let io = src
            .downcast_ref::<StartSource>()
            .and_then(|s| s.get().downcast_ref::<std::io::Error>())
            .expect("an io::Error behind it");
        assert_eq!(io.raw_os_error(), Some(libc::EMFILE));
        // Clones (what a pool that gives up hands to every waiter) are equal; another error
        // with the same text is not the same error.
        assert_eq!(e.clone(), e);
        assert_ne!(
            PoolError::start("creating its eventfd")(std::io::Error::from_raw_os_error(
                libc::EMFILE
            )),
            e
        );
    }
}
