//! Errors, one type per kind of call (issue 18):
//!
//! - [`ConnectError`], for [`RemoteQueue::connect`](crate::RemoteQueue::connect),
//!   [`RemotePool::connect`](crate::RemotePool::connect) / `attach`, and the start of
//!   [`serve`](crate::serve);
//! - [`PutError`], for what a queue sends (`put`, `put_confirmed`, `put_many`, `flush`, `close`,
//!   `destroy`);
//! - [`GetError`], for what a queue reads (`get*`, `get_delivery*`, `Delivery::ack`, `qsize`,
//!   `empty`);
//! - [`SubmitError`], for giving a pool work (`apply_async*`, `apply_named`, `imap_unordered`,
//!   `flush`);
//! - [`TaskError`], for a task's outcome ([`RemoteResult::get`](crate::RemoteResult::get), the items
//!   of `imap_unordered`, the callback of `apply_async_callback`);
//! - [`LinkError`]: talking to Redis failed (every type above carries it as `Link`);
//! - [`Error`], their union, returned by the calls that submit and wait in one (`apply`, `map`).
//!
//! Every type is `Clone + PartialEq` (a result's error is kept and compared; a put error found
//! by the writer thread is reported later): the causes are kept as text, never with a password
//! in it.

use std::time::Duration;

/// Talking to Redis failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// No connection could be made within the connect timeout.
    #[error("cannot reach redis at {url} within {timeout:?}: {msg}")]
    Unreachable {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The time allowed.
        timeout: Duration,
        /// The last connection error.
        msg: String,
    },
    /// The connection broke during a call whose effect is unknown (e.g. a `put` that may or may
    /// not have been stored).
    #[error("connection to redis lost during {during}: {msg}")]
    ConnectionLost {
        /// The call.
        during: &'static str,
        /// The I/O error.
        msg: String,
    },
    /// Redis answered with an error reply.
    #[error("redis error: {msg}")]
    Redis {
        /// The reply's code (`NOGROUP`, `WRONGTYPE`, `NOAUTH`, ...), when it has one.
        code: Option<String>,
        /// The whole error text.
        msg: String,
    },
}

impl LinkError {
    /// Whether this is an error reply with `code` (what the crate decides by, never the text).
    pub fn is_code(&self, code: &str) -> bool {
        matches!(self, LinkError::Redis { code: Some(c), .. } if c == code)
    }

    /// Whether the connection is gone (unreachable, or lost mid-call), as opposed to an error
    /// reply.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. }
        )
    }
}

impl From<redis::RedisError> for LinkError {
    /// An error reply (a connection error is turned into `ConnectionLost` by the link, which
    /// knows the call).
    /// A pipeline's failure carries the code of its first failing command.
    fn from(e: redis::RedisError) -> LinkError {
        let msg = e.to_string();
        let code = match e.code() {
            Some(c) => Some(c.to_owned()),
            None => e
                .into_server_errors()
                .and_then(|errs| errs.first().map(|(_, s)| s.code().to_owned())),
        };
        LinkError::Redis { code, msg }
    }
}

/// Connecting a queue, a pool or a worker failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be parsed (the message never contains the password).
    #[error("bad redis URL {url}: {msg}")]
    BadUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What was wrong.
        msg: String,
    },
    /// A client name for [`RemotePool::attach`](crate::RemotePool::attach) that is not 1..=64
    /// characters of `[A-Za-z0-9_.-]`.
    #[error("bad client name {client:?} (1..=64 of [A-Za-z0-9_.-])")]
    BadClient {
        /// The name given.
        client: String,
    },
    /// Redis could not be reached, or refused the setup (e.g. the consumer group).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A background thread of the handle could not be started.
    #[error("starting the {what} thread: {msg}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        msg: String,
    },
}

/// Sending to a queue failed. `put`'s errors include those of earlier pipelined `put`s (see
/// [`RemoteQueue::put`](crate::RemoteQueue::put)).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutError {
    /// An encoded item is larger than [`Options::max_message`](crate::Options::max_message);
    /// nothing was sent.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The item could not be encoded.
    #[error("codec: {0}")]
    Codec(String),
    /// This handle was closed.
    #[error("closed")]
    Closed,
    /// No batch of queued puts completed in time (they stay queued).
    #[error("timed out")]
    Timeout,
    /// Talking to Redis failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The handle's put thread could not be started.
    #[error("starting the {what} thread: {msg}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        msg: String,
    },
}

/// Reading from a queue failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing arrived before the deadline.
    #[error("timed out")]
    Timeout,
    /// This handle was closed.
    #[error("closed")]
    Closed,
    /// An entry did not decode as the queue's type (it was dropped, so it does not come back).
    #[error("codec: {0}")]
    Codec(String),
    /// Talking to Redis failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Giving a pool work failed; nothing of this call runs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// The function is not a `#[multiproc::task]` of this binary.
    #[error("not a registered #[multiproc::task]: {0}")]
    TaskNotRegistered(String),
    /// Encoded arguments larger than [`Options::max_message`](crate::Options::max_message).
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The arguments could not be encoded.
    #[error("codec: {0}")]
    Codec(String),
    /// The pool was closed by this handle.
    #[error("closed")]
    Closed,
    /// Talking to Redis failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A submitted task gave no value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// No result before the deadline (the task may still run).
    #[error("timed out")]
    Timeout,
    /// The pool (or the iterator's source) was closed before the result came.
    #[error("closed")]
    Closed,
    /// Redis restarted (its run id changed) while the task was in flight: without persistence
    /// the task and its result are gone.
    #[error("redis restarted while the task was in flight (its state is lost)")]
    BrokerRestarted,
    /// The worker has no task with this id.
    #[error("unknown task {task:?} in worker {worker}")]
    UnknownTask {
        /// The task id asked for.
        task: String,
        /// The worker that refused it.
        worker: String,
    },
    /// The worker is a different build of the program (its task registry differs), so it refused
    /// to run the task rather than run the wrong code.
    #[error("worker {worker} is a different build: refused task {task:?}")]
    BuildMismatch {
        /// The task id.
        task: String,
        /// The worker that refused it.
        worker: String,
    },
    /// The task panicked or failed to decode its arguments in the worker.
    #[error("task failed in worker {worker}: {msg}")]
    TaskFailed {
        /// The panic or decode message.
        msg: String,
        /// The worker.
        worker: String,
    },
    /// Every worker that took the task died (missed its heartbeats) and the retries ran out.
    #[error("worker lost: task {task:?} was delivered {deliveries} times and every worker died")]
    WorkerLost {
        /// The task id.
        task: String,
        /// How many workers took it.
        deliveries: u64,
    },
    /// The result did not decode as the task's type (or the answer was malformed).
    #[error("codec: {0}")]
    Codec(String),
    /// The submission could not be confirmed, or the result not read (the task may or may not
    /// have run).
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Any error of this crate: the union of the per-call errors (each converts with `?`), returned
/// by the calls that submit and wait in one ([`RemotePool::apply`](crate::RemotePool::apply),
/// `map`).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Connecting.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Sending to a queue.
    #[error(transparent)]
    Put(#[from] PutError),
    /// Reading from a queue.
    #[error(transparent)]
    Get(#[from] GetError),
    /// Giving a pool work.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// A task's outcome.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// Talking to Redis.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each per-call error converts into the union with `?`, and a Redis error reply keeps its
    /// code for decisions (the crate never matches the text).
    #[test]
    fn per_call_errors_convert_into_the_union_and_replies_keep_their_code() {
        fn put() -> Result<(), Error> {
            Err(PutError::Closed)?
        }
        fn task() -> Result<(), Error> {
            Err(TaskError::BrokerRestarted)?
        }
        assert_eq!(put(), Err(Error::Put(PutError::Closed)));
        assert_eq!(task(), Err(Error::Task(TaskError::BrokerRestarted)));
        // (A real reply's code comes from the server's parsed error; the integration tests
        // meet WRONGTYPE, NOGROUP and BUSYGROUP from a redis-server.)
        let e = LinkError::Redis {
            code: Some("NOGROUP".into()),
            msg: "NOGROUP No such key".into(),
        };
        assert!(e.is_code("NOGROUP"), "{e:?}");
        assert!(!e.is_code("BUSYGROUP"));
        assert!(!e.is_disconnect());
        // A client-side error has no code.
        let client = LinkError::from(redis::RedisError::from((
            redis::ErrorKind::Extension,
            "NOGROUP",
            "built locally".to_string(),
        )));
        assert!(!client.is_code("NOGROUP"), "{client:?}");
        let g: GetError = e.into();
        assert!(matches!(g, GetError::Link(LinkError::Redis { .. })));
    }
}
