//! Errors of process management.

use std::io;

/// What went wrong starting, waiting for or talking to a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
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
    /// An operation that needs a started process.
    #[error("process not started")]
    NotStarted,
    /// The process was closed with `close()`.
    #[error("process object is closed")]
    Closed,
    /// `close()` on a process that is still running.
    #[error("cannot close a process while it is still running; join or terminate it first")]
    StillRunning,
    /// `join_timeout` expired while the child runs.
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
    /// Encoding the arguments or decoding the result failed: `direction` is `"encoding"` or
    /// `"decoding"`, `what` the value (`"the task arguments"`), `type_name` its Rust type.
    #[error("{direction} {what} ({type_name}) with postcard failed: {source}")]
    Codec {
        /// `"encoding"` or `"decoding"`.
        direction: &'static str,
        /// What was being encoded or decoded.
        what: &'static str,
        /// Its Rust type (`std::any::type_name`).
        type_name: &'static str,
        /// postcard's error.
        #[source]
        source: postcard::Error,
    },
    /// A closure target needs `StartMethod::Fork`.
    #[error(
        "closures can only be started with StartMethod::Fork (spawn and forkserver run registered tasks)"
    )]
    ClosureNeedsFork,
    /// A daemonic process tried to start children (as in Python).
    #[error("daemonic processes are not allowed to have children")]
    DaemonCannotHaveChildren,
    /// `set_start_method` was called a second time without `force`.
    #[error(
        "context has already been set (start method {}); pass force = true to change it",
        .0.name()
    )]
    StartMethodAlreadySet(crate::StartMethod),
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
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl ProcessError {
    pub(crate) fn os(op: &'static str) -> ProcessError {
        ProcessError::Os {
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

impl ProcessError {
    /// A codec error naming the direction, what and the Rust type `T`.
    pub(crate) fn codec<T: ?Sized>(
        direction: &'static str,
        what: &'static str,
        source: postcard::Error,
    ) -> ProcessError {
        ProcessError::Codec {
            direction,
            what,
            type_name: std::any::type_name::<T>(),
            source,
        }
    }
}
