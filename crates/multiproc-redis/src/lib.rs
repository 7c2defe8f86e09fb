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
mod error;
mod pool;
mod queue;
mod worker;
mod writer;

pub use conn::{MAX_MESSAGE_LIMIT, Options, redact_url};
pub use error::{
    ConnectError, Error, GetError, LinkError, PutError, Result, SubmitError, TaskError,
};
pub use pool::{IMapUnordered, RemotePool, RemoteResult};
pub use queue::{Delivery, RemoteQueue};
pub use worker::{ServeOptions, ServeStats, serve};

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
