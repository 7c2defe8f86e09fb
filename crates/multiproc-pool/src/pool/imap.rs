//! [`IMap`], the lazy results of [`Pool::imap`] / [`Pool::imap_unordered`]: it submits its
//! input a few chunks ahead and yields the results as an `Iterator` and a `Stream`.
use super::encode::{encode_job, entry_hash};
use super::{Job, Pool};
use crate::error::{Result, SubmitError, TaskError};
use crate::result::{IMapSink, IMapState, Sink, lock};
use crate::wire::Payload;
use multiproc_process::registry::Task;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

impl Pool {
    pub(super) fn imap_impl<'a, M, T, I>(
        &'a self,
        f: T,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<'a, T::Args, T::Output>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'a,
    {
        if chunksize == 0 {
            return Err(SubmitError::InvalidChunksize);
        }
        self.check_running()?;
        let hash = entry_hash(&f)?;
        Ok(IMap {
            pool: self,
            input: Box::new(items.into_iter()),
            hash,
            job: self.new_job_id(),
            chunksize,
            sink: Arc::new(IMapSink::new()),
            next_submit: 0,
            next_yield: 0,
            buffered: VecDeque::new(),
            exhausted: false,
            in_flight: 0,
            max_in_flight: 2 * self.inner.processes.max(1),
            ordered,
        })
    }
}

/// The iterator of [`Pool::imap`] / [`Pool::imap_unordered`]: yields each result (or the error
/// of its chunk, once per chunk).
pub struct IMap<'a, A, R> {
    pool: &'a Pool,
    input: Box<dyn Iterator<Item = A> + Send + 'a>,
    hash: u64,
    job: u64,
    chunksize: usize,
    sink: Arc<IMapSink<R>>,
    next_submit: u32,
    next_yield: u32,
    buffered: VecDeque<R>,
    exhausted: bool,
    in_flight: usize,
    max_in_flight: usize,
    ordered: bool,
}

impl<A, R> std::fmt::Debug for IMap<'_, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<A: Serialize, R: DeserializeOwned + Send + 'static> IMap<'_, A, R> {
    fn refill(&mut self) -> Result<(), SubmitError> {
        while !self.exhausted && self.in_flight < self.max_in_flight {
            let mut chunk = Vec::with_capacity(self.chunksize.min(1024));
            for _ in 0..self.chunksize {
                match self.input.next() {
                    Some(a) => chunk.push(a),
                    None => {
                        self.exhausted = true;
                        break;
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
            let (payload, n, fds) = encode_job(
                self.job,
                self.next_submit,
                self.hash,
                self.chunksize * 8,
                &chunk,
            )?;
            let sink: Arc<dyn Sink> = self.sink.clone();
            self.pool.submit(vec![Job {
                chunk: self.next_submit,
                items: n,
                payload: Arc::new(Payload::bytes(payload)),
                fds,
                sink,
                attempts: 0,
                limit: None,
                direct: false,
            }])?;
            self.next_submit += 1;
            self.in_flight += 1;
        }
        Ok(())
    }

    /// The next result, waiting at most `timeout` (`Some(Err(Timeout))`; the iterator keeps
    /// its place). Python's `IMapIterator.next(timeout)`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_deadline(multiproc_shm::deadline::after(timeout))
    }

    fn next_deadline(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        loop {
            if let Some(v) = self.buffered.pop_front() {
                return Some(Ok(v));
            }
            if let Err(e) = self.refill() {
                self.exhausted = true;
                return Some(Err(e.into()));
            }
            if self.in_flight == 0 {
                return None;
            }
            let sink = self.sink.clone();
            let mut g = lock(&sink.st);
            let chunk = loop {
                if let Some(c) = self.take_chunk(&mut g) {
                    break c;
                }
                g = match deadline {
                    None => sink.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Some(Err(TaskError::Timeout.into()));
                        }
                        sink.cv
                            .wait_timeout(g, d - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
            };
            drop(g);
            if let Some(r) = self.accept(chunk) {
                return Some(r);
            }
        }
    }

    /// Removes the next chunk to yield from the arrived ones, if it arrived (in order for
    /// `imap`, any for `imap_unordered`).
    fn take_chunk(&mut self, st: &mut IMapState<R>) -> Option<Result<Vec<R>, TaskError>> {
        let key = if self.ordered {
            st.chunks
                .contains_key(&self.next_yield)
                .then_some(self.next_yield)
        } else {
            st.chunks.keys().next().copied()
        };
        let chunk = st.chunks.remove(&key?)?;
        self.next_yield += 1;
        self.in_flight -= 1;
        Some(chunk)
    }

    /// Takes a chunk in: submits more input, buffers its values; `Some(Err)` for a failed chunk.
    fn accept(&mut self, chunk: Result<Vec<R>, TaskError>) -> Option<Result<R>> {
        let _ = self.refill();
        match chunk {
            Ok(v) => {
                self.buffered.extend(v);
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    /// The stream's poll: as [`Iterator::next`], but `Pending` (the result thread wakes the
    /// task when a chunk arrives) instead of blocking.
    fn poll_next_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        loop {
            if let Some(v) = self.buffered.pop_front() {
                return Poll::Ready(Some(Ok(v)));
            }
            if let Err(e) = self.refill() {
                self.exhausted = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            if self.in_flight == 0 {
                return Poll::Ready(None);
            }
            let sink = self.sink.clone();
            let mut g = lock(&sink.st);
            let Some(chunk) = self.take_chunk(&mut g) else {
                // Under the lock `deliver` inserts under: a chunk arriving after the check
                // above finds this waker.
                match &mut g.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            };
            g.waker = None;
            drop(g);
            if let Some(r) = self.accept(chunk) {
                return Poll::Ready(Some(r));
            }
        }
    }

    /// The next result, awaited (the async [`Iterator::next`]; the same as `StreamExt::next`
    /// on the [`Stream`](futures_core::Stream) this also is). Cancel-safe: a result moves out
    /// only in the poll that returns it, so dropping the future loses nothing.
    pub fn next_async(&mut self) -> impl Future<Output = Option<Result<R>>> + '_ {
        std::future::poll_fn(move |cx| self.poll_next_item(cx))
    }
}

impl<A: Serialize, R: DeserializeOwned + Send + 'static> Iterator for IMap<'_, A, R> {
    type Item = Result<R>;
    fn next(&mut self) -> Option<Result<R>> {
        self.next_deadline(None)
    }
}

// The stream is polled through `&mut` and never pinned in place (no self-references).
impl<A, R> Unpin for IMap<'_, A, R> {}

/// `imap`/`imap_unordered` as a [`Stream`](futures_core::Stream) of results: the same items as
/// the iterator, awaited without blocking a thread (the pool's result thread wakes the task).
/// Cancel-safe: dropping a `next()` future loses no result.
impl<A: Serialize, R: DeserializeOwned + Send + 'static> futures_core::Stream for IMap<'_, A, R> {
    type Item = Result<R>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        self.get_mut().poll_next_item(cx)
    }
}
