//! Errors of process management.

use std::io;

/// Why a child could not be started: [`Process::spawn`](crate::Process::spawn),
/// [`Process::new`](crate::Process::new), [`Process::fork`](crate::Process::fork),
/// [`Process::start`](crate::Process::start) and the builder's `spawn`/`target`.
/// No child is left running after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The function is not a `#[multiproc::task]`: a spawned child could not find it.
    #[error("{}", task_not_registered_text(.0))]
    TaskNotRegistered(&'static str),
    /// A spawned child never answered the handshake: its `main` does not call `multiproc::init()`
    /// first (or it is not a multiproc binary).
    #[error(
        "the child process did not answer the start handshake within {0:?}: does `main` call \
         `multiproc::init()` as its first line?"
    )]
    InitNotCalled(std::time::Duration),
    /// The child exited before completing the handshake.
    #[error(
        "the child process exited during the start handshake ({}): does `main` call \
         `multiproc::init()` as its first line?",
        exit_text(*.exitcode)
    )]
    HandshakeEof {
        /// The child's exit code if it was reaped.
        exitcode: Option<i32>,
    },
    /// The child refused the parent at the handshake (different build, unknown task...).
    #[error("the child process refused the start: {0}")]
    Refused(String),
    /// `Process::spawn` ran in a process started by multiproc whose `main` skipped `init()`.
    #[error(
        "this process was started by multiproc but never called `multiproc::init()`: call it as the \
         first line of `main`"
    )]
    InitMissingInChild,
    /// `start` on a process that was already started.
    #[error("process already started")]
    AlreadyStarted,
    /// `start` on a process closed with `close()`.
    #[error("process object is closed")]
    Closed,
    /// A closure target needs `StartMethod::Fork`.
    #[error(
        "closures can only be started with StartMethod::Fork (spawn and forkserver run registered tasks)"
    )]
    ClosureNeedsFork,
    /// A daemonic process tried to start children (as in Python).
    #[error("daemonic processes are not allowed to have children")]
    DaemonCannotHaveChildren,
    /// `StartMethod::Fork` in a process that runs other threads, refused under
    /// `refuse_if_threaded` / `set_refuse_fork_if_threaded`.
    #[error(
        "refusing to fork a process that runs {threads} threads (a lock another thread holds \
         would deadlock the child): use StartMethod::Spawn or ForkServer"
    )]
    ThreadedFork {
        /// The threads of this process at the time (the caller's included).
        threads: usize,
    },
    /// Too many fds to pass to one child.
    #[error("too many fds to pass to a child ({0}, at most {1})")]
    TooManyFds(usize, usize),
    /// Encoding the task arguments (or a record of the start protocol) failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Why [`Process::join`](crate::Process::join) (and `join_timeout`, `join_async`,
/// `join_timeout_async`) gave no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The process was never started.
    #[error("process not started")]
    NotStarted,
    /// The process was closed with `close()`.
    #[error("process object is closed")]
    Closed,
    /// The timeout expired while the child runs (it still runs; join again later).
    #[error("timed out waiting for the process")]
    Timeout,
    /// The task panicked; the child's exit code is 1.
    #[error("task panicked in the child process: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The task failed in the child outside the user's code (argument decoding...).
    #[error("task failed in the child process: {0}")]
    TaskFailed(String),
    /// The child ended without sending a result (killed, `exit()` called, ...).
    #[error("the child process ended without a result (exitcode {exitcode})")]
    NoResult {
        /// 0 or an exit code, or `-signal` when killed by a signal.
        exitcode: i32,
    },
    /// Decoding the child's result failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Why a call that acts on the running child ([`Process::terminate`](crate::Process::terminate),
/// `kill`, `interrupt`, `sentinel`) could not: there is no child to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotRunning {
    /// The process was never started.
    #[error("process not started")]
    NotStarted,
    /// The process was closed with `close()`.
    #[error("process object is closed")]
    Closed,
}

impl From<NotRunning> for JoinError {
    fn from(e: NotRunning) -> JoinError {
        match e {
            NotRunning::NotStarted => JoinError::NotStarted,
            NotRunning::Closed => JoinError::Closed,
        }
    }
}

/// [`Process::close`](crate::Process::close) on a process whose child still runs: join or
/// terminate it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot close a process while it is still running; join or terminate it first")]
pub struct StillRunning;

/// [`set_start_method`](crate::set_start_method) a second time without `force`; holds the method
/// already set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "context has already been set (start method {}); pass force = true to change it",
    .0.name()
)]
pub struct StartMethodAlreadySet(pub crate::StartMethod);

/// Encoding or decoding a value that crosses to or from a child failed.
#[derive(Debug, thiserror::Error)]
#[error("{direction} {what} ({type_name}) with postcard failed: {source}")]
pub struct CodecError {
    /// `"encoding"` or `"decoding"`.
    pub direction: &'static str,
    /// What was being encoded or decoded (`"the task arguments"`).
    pub what: &'static str,
    /// Its Rust type (`std::any::type_name`).
    pub type_name: &'static str,
    /// postcard's error.
    #[source]
    pub source: postcard::Error,
}

impl CodecError {
    /// A codec error naming the direction, what and the Rust type `T`.
    pub(crate) fn new<T: ?Sized>(
        direction: &'static str,
        what: &'static str,
        source: postcard::Error,
    ) -> CodecError {
        CodecError {
            direction,
            what,
            type_name: std::any::type_name::<T>(),
            source,
        }
    }
}

/// Any error of this crate, for code that starts and joins in one function and returns with `?`:
/// each operation returns its own type ([`StartError`], [`JoinError`], [`NotRunning`],
/// [`StillRunning`], [`StartMethodAlreadySet`]) and each converts into this one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Starting a child failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Joining a child gave no value.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// There was no running child to act on.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    /// `close` while the child runs.
    #[error(transparent)]
    StillRunning(#[from] StillRunning),
    /// `set_start_method` a second time.
    #[error(transparent)]
    StartMethodAlreadySet(#[from] StartMethodAlreadySet),
}

impl StartError {
    pub(crate) fn os(op: &'static str) -> StartError {
        StartError::Os {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

/// Result with [`ProcessError`].
pub type Result<T, E = ProcessError> = std::result::Result<T, E>;

/// The one text of "this function is not a registered task", shared with the Pool's error.
#[doc(hidden)]
pub fn task_not_registered_text(type_name: &str) -> String {
    format!(
        "`{type_name}` is not a registered task: add #[multiproc::task] to the function \
         (spawn, forkserver and Pool run registered tasks; closures need Process::fork)"
    )
}

/// `exit status 0` / `killed by signal 9` / `exit status unknown` (never `Some(0)`).
#[doc(hidden)]
pub fn exit_text(exitcode: Option<i32>) -> String {
    match exitcode {
        Some(c) if c < 0 => format!("killed by signal {}", -c),
        Some(c) => format!("exit status {c}"),
        None => "exit status unknown".to_string(),
    }
}
