//! The pipelined `put` of a [`RemoteQueue`](crate::RemoteQueue): a background thread per handle
//! (started by the first `put`) with its own connection, which sends the entries `put` queued
//! locally as `XADD`s, everything waiting at once in one pipeline (at most [`BATCH`] per round
//! trip). While one pipeline is on the wire the next `put`s queue up, so a producer pays about one
//! round trip per batch, not per item.
//!
//! What is guaranteed: an entry `put` accepted is sent in order after every entry accepted before
//! it, unless an error stops it; the first error (Redis unreachable, the connection broken during a
//! pipeline, an error reply) is kept and returned by the next `put`, `flush`, `close` (or logged by
//! the handle's drop), once. When Redis cannot be reached within `connect_timeout`, every entry
//! waiting is dropped with that error. On a broken connection the pipeline on the wire may be
//! stored in part; later entries are sent on a new connection.
//!
//! The same thread is the timer of the batched acknowledgements of `get`: acknowledgements that
//! wait longer than [`Acks::delay`] (at most `claim_idle / 4`) are sent by it, so an item
//! handed out stays unacknowledged for well under `claim_idle` even when the consumer stops
//! calling `get` with batch-mates still in its buffer.

use crate::conn::{Endpoint, Link};
use crate::queue::GROUP;
use crate::{LinkError, PutError};
use multiproc_shm::deadline::after;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most `XADD`s in one pipeline.
pub(crate) const BATCH: usize = 512;
/// `put` waits (backpressure) while this many entries are queued locally...
const MAX_PENDING: usize = 8192;
/// ... or while they hold this many bytes (one larger entry is still accepted alone).
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct State {
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// Entries accepted by `push` so far.
    queued: u64,
    /// Entries stored, or given up on with an error, so far.
    finished: u64,
    /// The first error not yet reported.
    error: Option<LinkError>,
    /// The thread waits for work (so `push` wakes it).
    idle: bool,
    stop: bool,
}

struct Shared {
    st: Mutex<State>,
    /// The thread waits here for entries.
    work: Condvar,
    /// `flush` and backpressured `push` wait here for progress.
    progress: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The acknowledgements `get` handed out and not yet sent, shared by a queue handle and its
/// writer thread.
pub(crate) struct Acks {
    pub(crate) ids: Mutex<(Vec<String>, Option<Instant>)>,
    /// How long an acknowledgement may wait before the thread sends it.
    pub(crate) delay: Duration,
}

impl Acks {
    pub(crate) fn new(claim_idle: Duration) -> Acks {
        Acks {
            ids: Mutex::new((Vec::new(), None)),
            delay: (claim_idle / 4).clamp(Duration::from_millis(1), Duration::from_millis(250)),
        }
    }

    /// Takes every id (all of them, or only if the oldest waited `delay`).
    pub(crate) fn take(&self, only_due: bool) -> Vec<String> {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if only_due && g.1.is_none_or(|t| t.elapsed() < self.delay) {
            return Vec::new();
        }
        g.1 = None;
        std::mem::take(&mut g.0)
    }

    /// Adds one id; returns how many wait.
    pub(crate) fn push(&self, id: String) -> usize {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        g.0.push(id);
        if g.1.is_none() {
            g.1 = Some(Instant::now());
        }
        g.0.len()
    }

    /// Puts back ids taken and not sent.
    pub(crate) fn restore(&self, mut ids: Vec<String>) {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.append(&mut g.0);
        g.0 = ids;
        if g.1.is_none() {
            g.1 = Some(Instant::now());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .is_empty()
    }
}

/// `XACK` + `XDEL` of `ids` in one `MULTI`.
pub(crate) fn ack_pipe(key: &str, ids: &[String]) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.atomic();
    push_acks(&mut p, key, ids);
    p
}

/// Adds the acknowledgement of `ids` (`XACK` then `XDEL`, replies ignored; both idempotent, so a
/// retried pipeline may send them again) to `p`; nothing when `ids` is empty.
pub(crate) fn push_acks(p: &mut redis::Pipeline, key: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    p.cmd("XACK").arg(key).arg(GROUP).arg(ids).ignore();
    p.cmd("XDEL").arg(key).arg(ids).ignore();
}

/// One handle's writer thread.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The process that started the thread (a forked child has no such thread).
    pid: u32,
    /// How long `flush` waits for one batch to make progress.
    stall: Duration,
}

impl Writer {
    pub(crate) fn start(ep: Endpoint, key: String, acks: Arc<Acks>) -> Result<Writer, PutError> {
        let stall = ep
            .opts
            .connect_timeout
            .saturating_mul(2)
            .saturating_add(ep.opts.io_timeout);
        let shared = Arc::new(Shared {
            st: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mp-redis-put".into())
            .spawn(move || run(&s, ep, &key, &acks))
            .map_err(|e| PutError::Spawn {
                what: "put",
                msg: e.to_string(),
            })?;
        Ok(Writer {
            shared,
            thread: Some(thread),
            pid: std::process::id(),
            stall,
        })
    }

    /// Whether this writer's thread runs in this process.
    pub(crate) fn is_ours(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Queues one encoded entry. Returns (and clears) an earlier error instead, without queuing;
    /// waits while too much is queued, at most `stall` without progress (then `Timeout`).
    pub(crate) fn push(&self, bytes: Vec<u8>) -> Result<(), PutError> {
        let sh = &self.shared;
        let mut st = lock(&sh.st);
        let mut last = (st.finished, Instant::now());
        loop {
            if let Some(e) = st.error.take() {
                return Err(e.into());
            }
            let full = st.pending.len() >= MAX_PENDING
                || (!st.pending.is_empty() && st.pending_bytes + bytes.len() > MAX_PENDING_BYTES);
            if !full {
                break;
            }
            st = self.wait_progress(st, &mut last)?;
        }
        st.pending_bytes += bytes.len();
        st.pending.push_back(bytes);
        st.queued += 1;
        if st.idle {
            st.idle = false;
            sh.work.notify_one();
        }
        Ok(())
    }

    /// Waits for the writer to finish a batch (`progress`), or `Timeout` once no batch finished
    /// for `stall`: `last` is the batch count last seen and when it changed.
    fn wait_progress<'a>(
        &self,
        st: MutexGuard<'a, State>,
        last: &mut (u64, Instant),
    ) -> Result<MutexGuard<'a, State>, PutError> {
        if st.finished != last.0 {
            *last = (st.finished, Instant::now());
        }
        let waited = last.1.elapsed();
        if waited >= self.stall {
            return Err(PutError::Timeout);
        }
        Ok(self
            .shared
            .progress
            .wait_timeout(st, self.stall - waited)
            .unwrap_or_else(|p| p.into_inner())
            .0)
    }

    /// Waits until every entry queued so far is stored or given up on, as long as a batch
    /// completes every `stall` (else `Timeout`; the entries stay queued). `take_error`: return
    /// (and clear) the first error not yet reported.
    pub(crate) fn flush(&self, take_error: bool) -> Result<(), PutError> {
        let sh = &self.shared;
        let mut st = lock(&sh.st);
        let target = st.queued;
        let mut last = (st.finished, Instant::now());
        while st.finished < target {
            st = self.wait_progress(st, &mut last)?;
        }
        match st.error.take() {
            Some(e) if take_error => Err(e.into()),
            other => {
                st.error = other;
                Ok(())
            }
        }
    }

    /// Whether entries are queued and not finished.
    pub(crate) fn busy(&self) -> bool {
        let st = lock(&self.shared.st);
        st.finished < st.queued
    }

    /// Flushes (bounded, as [`Writer::flush`]), then stops the thread. Entries still queued after
    /// a flush timeout are dropped; returns the error to report, if any.
    pub(crate) fn shutdown(&mut self) -> Result<(), PutError> {
        let r = self.flush(true);
        {
            let mut st = lock(&self.shared.st);
            let dropped = st.pending.len();
            if dropped > 0 {
                st.finished += dropped as u64;
                st.pending.clear();
                st.pending_bytes = 0;
                tracing::warn!(target: "multiproc", "remote queue: {dropped} queued puts dropped at close (no progress)");
            }
            st.stop = true;
            self.shared.work.notify_one();
        }
        if let Some(t) = self.thread.take() {
            // Bounded: the thread finishes at most one pipeline (io_timeout) or connection attempt
            // (connect_timeout) first.
            let _ = t.join();
        }
        r
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.is_ours() {
            // Forked: the thread is not in this process (joining would wait forever).
            std::mem::forget(self.thread.take());
            return;
        }
        if let Err(e) = self.shutdown() {
            tracing::warn!(target: "multiproc", "remote queue: puts not stored at drop: {e}");
        }
    }
}

fn run(sh: &Shared, ep: Endpoint, key: &str, acks: &Acks) {
    let connect_timeout = ep.opts.connect_timeout;
    let mut link = Link::new(ep);
    loop {
        let batch: Vec<Vec<u8>> = {
            let mut st = lock(&sh.st);
            if st.pending.is_empty() {
                if st.stop {
                    return;
                }
                st.idle = true;
                st = sh
                    .work
                    .wait_timeout(st, acks.delay)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.idle = false;
            }
            let n = st.pending.len().min(BATCH);
            let b: Vec<Vec<u8>> = st.pending.drain(..n).collect();
            st.pending_bytes -= b.iter().map(Vec::len).sum::<usize>();
            b
        };
        let due = acks.take(true);
        if !due.is_empty() {
            let p = ack_pipe(key, &due);
            let deadline = after(connect_timeout);
            // Idempotent: safe to send again after a lost connection.
            if let Err(e) = link.retry("ack", deadline, |c| p.query::<()>(c)) {
                tracing::warn!(target: "multiproc", "remote queue: {} acknowledgements failed: {e}", due.len());
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut p = redis::pipe();
        for bytes in &batch {
            p.cmd("XADD").arg(key).arg("*").arg("d").arg(bytes).ignore();
        }
        let deadline = after(connect_timeout);
        // A connection quiet for a while is checked first (PING) so that a server restarted
        // meanwhile does not take a pipeline into a dead socket.
        let r = link
            .fresh(deadline)
            .and_then(|()| link.once("put", deadline, |c| p.query::<()>(c)));
        let mut st = lock(&sh.st);
        st.finished += batch.len() as u64;
        if let Err(e) = r {
            if matches!(e, LinkError::Unreachable { .. }) {
                // Redis is away: what waits is dropped with the error, not sent minutes later.
                st.finished += st.pending.len() as u64;
                st.pending.clear();
                st.pending_bytes = 0;
            }
            tracing::debug!(target: "multiproc", "remote queue: pipelined put failed: {e}");
            if st.error.is_none() {
                st.error = Some(e);
            }
        }
        sh.progress.notify_all();
    }
}
