//! The [`Pool`] handle and its public calls: `apply`, `map`, `imap`, `close`, `terminate`,
//! `join`..., and `submit`, which queues their jobs (sending one at once when a worker is idle).
use super::encode::{default_chunksize, encode_job, encode_plain_map_job, entry_hash};
use super::{Direct, IMap, Inner, Job, Phase, PoolBuilder, SCRATCH};
use crate::error::{BuildError, PoolJoinError, ReadyError, Result, SubmitError, TaskError};
use crate::facade::{AtomicU64, Ordering};
use crate::result::{ApplySink, AsyncResult, Callbacks, MapSink, Sink, Slot, lock};
use crate::wire::{Payload, PlainItems};
use multiproc_process::registry::{self, Task};
use std::sync::Arc;
use std::time::{Duration, Instant};

static JOB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Dropping a pool terminates it (Python's `with Pool() as p:` calls `terminate()`), unless it
/// was already closed and joined.
pub struct Pool {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.inner.processes)
            .finish()
    }
}

impl Pool {
    /// A builder.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// `Pool::builder().processes(n).build()`.
    pub fn new(processes: usize) -> Result<Pool, BuildError> {
        Self::builder().processes(processes).build()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// The pids of the live workers (for tests and diagnostics).
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.inner.st)
            .workers
            .iter()
            .filter(|w| !w.dead)
            .map(|w| w.pid)
            .collect()
    }

    /// Waits until every worker is up (started, its initializer run) and taking jobs, at most
    /// `timeout` ([`ReadyError::Timeout`]). Not needed for correctness: work waits in the pool
    /// until a worker is up. Benches and balance tests use it so that a worker still starting
    /// does not look slow.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), ReadyError> {
        let deadline = multiproc_shm::deadline::saturating_after(timeout);
        let mut st = lock(&self.inner.st);
        while !st.workers.iter().all(|w| w.ready && !w.dead) {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadyError::Timeout);
            }
            if st.phase == Phase::Terminated {
                return Err(ReadyError::NotRunning);
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(20)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// How many workers were replaced so far (death, time limit or `maxtasksperchild`). A
    /// worker counts once its replacement started, which is after the task it failed was
    /// settled.
    pub fn replaced_workers(&self) -> u64 {
        lock(&self.inner.st).replaced
    }

    #[doc(hidden)]
    /// Results read by the caller waiting for them (a synchronous `apply` reads its worker's
    /// result pipe itself) rather than by a receiver thread. For tests and diagnostics.
    pub fn results_read_by_callers(&self) -> u64 {
        // Relaxed: a counter.
        self.inner.direct_reads.load(Ordering::Relaxed)
    }

    #[doc(hidden)]
    /// Waits of a synchronous `apply`'s caller that spun before parking (under the default
    /// `SpinPark`, adaptive: see docs/pool.md "Wait strategy"). For tests and diagnostics.
    pub fn caller_spins(&self) -> u64 {
        // Relaxed: a counter.
        self.inner.apply_spin.spins.load(Ordering::Relaxed)
    }

    pub(super) fn new_job_id(&self) -> u64 {
        JOB_COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn submit(&self, jobs: Vec<Job>) -> Result<(), SubmitError> {
        self.submit_own(jobs, None).map(drop)
    }

    /// [`submit`](Self::submit); with `own` (the sink of a synchronous `apply`'s one job),
    /// also where that job went if this thread sent it to a worker itself.
    fn submit_own<J>(
        &self,
        jobs: J,
        own: Option<&Arc<dyn Sink>>,
    ) -> Result<Option<Direct>, SubmitError>
    where
        J: IntoIterator<Item = Job>,
        J::IntoIter: ExactSizeIterator,
    {
        let jobs = jobs.into_iter();
        let mut st = lock(&self.inner.st);
        if st.phase != Phase::Running {
            return Err(SubmitError::NotRunning);
        }
        if let Some(e) = &st.broken {
            return Err(SubmitError::Start(e.clone()));
        }
        let single = jobs.len() == 1 && st.pending.is_empty();
        st.outstanding += jobs.len();
        st.pending.extend(jobs);
        if single {
            let candidates = self.inner.fast_candidates(&st);
            drop(st);
            if !candidates.is_empty() {
                let (sent, direct) = SCRATCH.with(|b| {
                    self.inner
                        .try_dispatch(candidates, &mut b.borrow_mut(), own)
                });
                if sent {
                    return Ok(direct);
                }
            }
        } else {
            // Wake the sender threads only if one of them may take the front job now: while
            // every worker is full (a long run of `apply_async`), the results' receivers hand
            // out the queue (`on_result`), and a `notify_all` per submit woke both senders
            // only to find no room (two futex wake-ups and context switches per task).
            let front = st.pending.front().map_or(0, |j| j.items as usize);
            let n = st.pending.len();
            let room = st.workers.iter().any(|w| self.inner.has_room(w, front, n));
            drop(st);
            if !room {
                return Ok(None);
            }
        }
        self.inner.cv.notify_all();
        Ok(None)
    }

    pub(super) fn check_running(&self) -> Result<(), SubmitError> {
        if lock(&self.inner.st).phase != Phase::Running {
            return Err(SubmitError::NotRunning);
        }
        Ok(())
    }

    /// Runs `f(args)` in a worker and waits for the result (Python's `apply`).
    pub fn apply<M, T: Task<M>>(&self, f: T, args: T::Args) -> Result<T::Output>
    where
        T::Output: Send + 'static,
    {
        let (r, direct) = self.apply_job(f, args, Callbacks::new(), None, true)?;
        if let Some(d) = direct {
            let slot = &r.slot;
            self.inner.read_direct(&d, &|| slot.is_done(), &|| {
                let _ = r.wait_timeout(Duration::from_millis(1));
            });
        }
        Ok(r.get()?)
    }

    /// Starts `f(args)` in a worker (Python's `apply_async`).
    pub fn apply_async<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        self.apply_async_with(f, args, Callbacks::new())
    }

    /// [`apply_async`](Pool::apply_async) with `callback`/`error_callback`.
    pub fn apply_async_with<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        self.apply_impl(f, args, callbacks, None)
    }

    /// [`apply_async`](Pool::apply_async) with a time limit for this call (over the pool's
    /// [`task_timeout`](PoolBuilder::task_timeout)): past it the worker is killed and
    /// replaced, and the result is [`TaskError::TimeLimit`].
    pub fn apply_async_limited<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        limit: Duration,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        self.inner.limits_used.store(true, Ordering::Relaxed);
        self.apply_impl(f, args, Callbacks::new(), Some(limit))
    }

    fn apply_impl<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
        limit: Option<Duration>,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        Ok(self.apply_job(f, args, callbacks, limit, false)?.0)
    }

    /// Submits one `apply` job; with `direct`, the caller will wait for it, so if it sends
    /// the job itself it also learns where to read the result (see `Inner::read_direct`).
    fn apply_job<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
        limit: Option<Duration>,
        direct: bool,
    ) -> Result<(AsyncResult<T::Output>, Option<Direct>), SubmitError>
    where
        T::Output: Send + 'static,
    {
        let hash = entry_hash(&f)?;
        let job = self.new_job_id();
        let (payload, _, fds) = encode_job(job, 0, hash, 16, std::slice::from_ref(&args))?;
        let slot = Slot::with_wait(callbacks, self.inner.wait);
        let sink: Arc<dyn Sink> = Arc::new(ApplySink { slot: slot.clone() });
        let own = direct.then(|| sink.clone());
        // An array, not a `Vec`: one allocation less per `apply`.
        let d = self.submit_own(
            [Job {
                chunk: 0,
                items: 1,
                payload: Arc::new(Payload::bytes(payload)),
                fds,
                sink,
                attempts: 0,
                limit,
                direct: false,
            }],
            own.as_ref(),
        )?;
        Ok((AsyncResult { slot }, d))
    }

    /// `f` over every item, in order (Python's `map`; default chunksize as Python's). Items
    /// are `f`'s arguments: one value for a one-argument task, a tuple for several (so this is
    /// also `starmap`).
    pub fn map<M, T, I>(&self, f: T, items: I) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        Ok(self
            .map_async_with(f, items, None, Callbacks::new())?
            .get()?)
    }

    /// [`map`](Pool::map) with an explicit chunksize (0 is [`SubmitError::InvalidChunksize`]).
    pub fn map_chunked<M, T, I>(&self, f: T, items: I, chunksize: usize) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        Ok(self
            .map_async_with(f, items, Some(chunksize), Callbacks::new())?
            .get()?)
    }

    /// Python's `map_async` (default chunksize).
    pub fn map_async<M, T, I>(
        &self,
        f: T,
        items: I,
    ) -> Result<AsyncResult<Vec<T::Output>>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        self.map_async_with(f, items, None, Callbacks::new())
    }

    /// Python's `map_async(f, items, chunksize, callback, error_callback)`. The result is
    /// ready after every chunk ran; if any failed, it is the error of the first failing chunk.
    pub fn map_async_with<M, T, I>(
        &self,
        f: T,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> Result<AsyncResult<Vec<T::Output>>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        if chunksize == Some(0) {
            return Err(SubmitError::InvalidChunksize);
        }
        self.check_running()?;
        let hash = entry_hash(&f)?;
        // As Python: an input without a length is made a list first.
        let items: Vec<T::Args> = items.into_iter().collect();
        let cs = chunksize.unwrap_or_else(|| default_chunksize(items.len(), self.inner.processes));
        let nchunks = items.len().div_ceil(cs);
        let slot = Slot::with_wait(callbacks, self.inner.wait);
        if nchunks == 0 {
            slot.set(Ok(Vec::new()));
            return Ok(AsyncResult { slot });
        }
        let job = self.new_job_id();
        let sink: Arc<dyn Sink> = Arc::new(MapSink::<T::Output>::new(
            nchunks,
            cs,
            items.len(),
            slot.clone(),
        ));
        // Submit chunks as they are encoded (the workers start on the first at once), in
        // batches so the pool lock is not taken per chunk.
        let mut batch = Vec::new();
        // Primitive numbers both ways: a chunk of more than one item is a plain chunk, whose
        // items go from `items` straight into the worker's pipe (see `encode_plain_map_job`).
        let plain = match registry::plain_width_static::<T::Output>() {
            Some(wo) => match PlainItems::new(items) {
                Ok(p) => Ok((Arc::new(p), wo)),
                Err(v) => Err(v),
            },
            None => Err(items),
        };
        let all: &[T::Args] = match &plain {
            Ok((p, _)) => p.items(),
            Err(v) => v,
        };
        for (i, chunk) in all.chunks(cs).enumerate() {
            let (payload, n, fds) = match &plain {
                Ok((p, wo)) if chunk.len() > 1 => {
                    let start = i * cs;
                    let (payload, n) = encode_plain_map_job(
                        job,
                        i as u32,
                        hash,
                        *wo,
                        p,
                        start..start + chunk.len(),
                    )?;
                    (payload, n, None)
                }
                _ => {
                    let (bytes, n, fds) = encode_job(job, i as u32, hash, chunk.len() * 8, chunk)?;
                    (Payload::bytes(bytes), n, fds)
                }
            };
            batch.push(Job {
                chunk: i as u32,
                items: n,
                payload: Arc::new(payload),
                fds,
                sink: sink.clone(),
                attempts: 0,
                limit: None,
                direct: false,
            });
            if batch.len() >= 16 || i < 4 {
                self.submit(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.submit(batch)?;
        }
        Ok(AsyncResult { slot })
    }

    /// Python's `starmap`: `f(*args)` for every tuple. The same as [`map`](Pool::map) (a
    /// multi-argument task takes its arguments as a tuple).
    pub fn starmap<M, T, I>(&self, f: T, items: I) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        self.map(f, items)
    }

    /// Python's `starmap_async`.
    pub fn starmap_async<M, T, I>(
        &self,
        f: T,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> Result<AsyncResult<Vec<T::Output>>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        self.map_async_with(f, items, chunksize, callbacks)
    }

    /// Python's `imap`: results in order, lazily. The input is consumed as results are taken,
    /// with at most `2 * processes` chunks in flight (Python's imap drains the input at once).
    /// Default chunksize 1, as Python's. The [`IMap`] is an `Iterator` and, for async code, a
    /// [`Stream`](futures_core::Stream) ([`IMap::next_async`]); the input iterator must be
    /// `Send` so that the stream can live in a spawned task.
    pub fn imap<'a, M, T, I>(
        &'a self,
        f: T,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'a, T::Args, T::Output>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'a,
    {
        self.imap_impl(f, items, chunksize, true)
    }

    /// Python's `imap_unordered`: results in completion order (by chunk), lazily.
    pub fn imap_unordered<'a, M, T, I>(
        &'a self,
        f: T,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'a, T::Args, T::Output>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'a,
    {
        self.imap_impl(f, items, chunksize, false)
    }

    /// Python's `close()`: no new work; the workers exit once the queued work is done.
    pub fn close(&self) {
        let mut st = lock(&self.inner.st);
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
        }
        self.inner.cv.notify_all();
    }

    /// Python's `terminate()`: stops at once. Queued and running tasks fail with
    /// [`TaskError::Terminated`]; workers are killed (SIGKILL) and reaped.
    pub fn terminate(&self) {
        let (pending, procs) = {
            let mut st = lock(&self.inner.st);
            st.phase = Phase::Terminated;
            let pending = std::mem::take(&mut st.pending);
            st.outstanding -= pending.len();
            let procs: Vec<_> = st.workers.iter().filter_map(|w| w.proc.clone()).collect();
            self.inner.cv.notify_all();
            (pending, procs)
        };
        for job in pending {
            job.sink.deliver(job.chunk, Err(TaskError::Terminated));
        }
        for p in procs {
            let _ = lock(&p).kill();
        }
        self.join_threads();
    }

    /// Python's `join()`: waits for the workers to exit; [`PoolJoinError::StillRunning`] unless
    /// `close()` or `terminate()` was called.
    pub fn join(&self) -> Result<(), PoolJoinError> {
        if lock(&self.inner.st).phase == Phase::Running {
            return Err(PoolJoinError::StillRunning);
        }
        self.join_threads();
        Ok(())
    }

    /// [`join`](Pool::join) waiting at most `timeout` for the queued work
    /// ([`PoolJoinError::Timeout`] if it is not done; the pool keeps going).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolJoinError> {
        let deadline = multiproc_shm::deadline::saturating_after(timeout);
        {
            let mut st = lock(&self.inner.st);
            if st.phase == Phase::Running {
                return Err(PoolJoinError::StillRunning);
            }
            while st.outstanding > 0 || st.workers.iter().any(|w| !w.dead) {
                let now = Instant::now();
                if now >= deadline {
                    return Err(PoolJoinError::Timeout);
                }
                st.joiners += 1;
                st = self
                    .inner
                    .cv
                    .wait_timeout(st, (deadline - now).min(Duration::from_millis(20)))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.joiners -= 1;
            }
        }
        self.join_threads();
        Ok(())
    }

    fn join_threads(&self) {
        loop {
            let hs = std::mem::take(&mut lock(&self.inner.st).threads);
            if hs.is_empty() {
                break;
            }
            for h in hs {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let done = {
            let st = lock(&self.inner.st);
            st.threads.is_empty() && st.workers.iter().all(|w| w.dead)
        };
        if !done {
            self.terminate();
        }
    }
}
