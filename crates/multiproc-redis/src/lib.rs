//! # multiproc-redis: beyond one machine
//!
//! [`RemoteQueue`] and [`RemotePool`] carry multiproc's queue and pool across hosts on Redis
//! Streams with consumer groups: at-least-once delivery through the pending-entry list, and
//! `XAUTOCLAIM` so entries held by a consumer (or worker) that died are taken over by a live one.
//!
//! * [`RemoteQueue<T>`]: `put`, `get`, `get_timeout`, `qsize`, `close`; [`RemoteQueue::get_delivery`]
//!   returns a [`Delivery`] to [`Delivery::ack`] (at-least-once), `get` acknowledges on receipt.
//! * [`RemotePool`]: `apply`, `apply_async` ([`RemoteResult::get_timeout`]), `map`,
//!   `imap_unordered`, run by workers that are the user's own binary started with [`serve`]; tasks
//!   are `#[multiproc::task]` functions found by their stable id, with a build check.
//!
//! Every key of a queue or pool carries the hash tag `{mp:NAME}`, so each lives in one Redis Cluster
//! slot. Passwords (from the URL or `MULTIPROC_REDIS_PASSWORD`) are never logged nor put in errors.
//! See `docs/redis.md` for the delivery semantics per call and what a Redis restart does.
//!
//! ```no_run
//! use multiproc_redis::RemoteQueue;
//! let q: RemoteQueue<u64> = RemoteQueue::connect("redis://127.0.0.1:6379", "jobs").unwrap();
//! q.put(&7).unwrap();
//! let d = q.get_delivery_timeout(std::time::Duration::from_secs(1)).unwrap();
//! assert_eq!(d.ack().unwrap(), 7);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod conn;
mod pool;
mod queue;
mod worker;
mod writer;

pub use conn::{MAX_MESSAGE_LIMIT, Options, redact_url};
pub use pool::{IMapUnordered, RemotePool, RemoteResult};
pub use queue::{Delivery, RemoteQueue};
pub use worker::{ServeOptions, ServeStats, serve};

use std::time::Duration;

/// Everything that can go wrong talking to Redis or running a remote task.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL could not be parsed (the message never contains the password).
    #[error("bad redis URL {url}: {msg}")]
    BadUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What was wrong.
        msg: String,
    },
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
    /// Redis restarted (its run id changed) while a task was in flight: without persistence the
    /// task and its result are gone.
    #[error("redis restarted while the task was in flight (its state is lost)")]
    BrokerRestarted,
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Redis(String),
    /// An encoded message is larger than the configured maximum; nothing was sent.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The maximum ([`Options::max_message`]).
        max: usize,
    },
    /// A value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// A timed call ran out of time.
    #[error("timed out")]
    Timeout,
    /// The queue or pool was closed by this handle.
    #[error("closed")]
    Closed,
    /// The function is not a `#[multiproc::task]` of this binary.
    #[error("not a registered #[multiproc::task]: {0}")]
    TaskNotRegistered(String),
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
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The keys of a queue or pool named `name`: `{mp:NAME}:suffix` (one cluster slot per name).
pub(crate) fn key(name: &str, suffix: &str) -> String {
    format!("{{mp:{name}}}:{suffix}")
}

/// A unique-enough id for a consumer, worker or client: host, pid, time and a counter.
pub(crate) fn unique_id(kind: &str) -> String {
    use std::sync::Mutex;
    static N: Mutex<u64> = Mutex::new(0);
    let n = {
        let mut g = N.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        *g
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{kind}-{}-{}-{:x}-{n}",
        hostname(),
        std::process::id(),
        nanos & 0xffff_ffff
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}
