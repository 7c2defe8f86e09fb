//! `AsyncResult<R>` (Python's `ApplyResult`/`MapResult`), callbacks, and the sinks the result
//! handler threads deliver chunk results to.
//!
//! Async: an `AsyncResult` is also a [`Future`] (`.await` it, or `get_async()`/`wait_async()`
//! to keep it). A pending future leaves its task's [`Waker`] in the result's slot, under the
//! slot's lock; the thread that fills the slot (a worker's receiver thread, `terminate`, or
//! death handling) takes the wakers under the same lock after marking the slot ready and wakes
//! them after unlocking it. So no runtime thread ever blocks, any executor works (std's `Waker`
//! only), and a wake cannot be lost: a poll either sees `ready` or leaves its waker before the
//! filler looks for wakers. See docs/async-pool-process.md.

use crate::error::{NotReady, TaskError};
use crate::facade::{AtomicBool, Ordering};
use multiproc_process::registry;
use multiproc_ring::WaitStrategy;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// This module's results: what a task gives instead of its value.
type Result<T, E = TaskError> = std::result::Result<T, E>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A callback run on the pool's result thread with the value.
pub type Callback<R> = Box<dyn FnOnce(&R) + Send + 'static>;
/// A callback run on the pool's result thread with the error.
pub type ErrorCallback = Box<dyn FnOnce(&TaskError) + Send + 'static>;

/// Python's `callback=` / `error_callback=`: exactly one of them runs, once, on a pool thread,
/// before the result becomes ready. A panicking callback is caught (the pool keeps working).
pub struct Callbacks<R> {
    pub(crate) on_ok: Option<Callback<R>>,
    pub(crate) on_err: Option<ErrorCallback>,
}

impl<R> Default for Callbacks<R> {
    fn default() -> Self {
        Callbacks {
            on_ok: None,
            on_err: None,
        }
    }
}

impl<R> std::fmt::Debug for Callbacks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("callback", &self.on_ok.is_some())
            .field("error_callback", &self.on_err.is_some())
            .finish()
    }
}

impl<R> Callbacks<R> {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }
    /// Python's `callback`: runs with the value on success.
    pub fn on_success(mut self, f: impl FnOnce(&R) + Send + 'static) -> Self {
        self.on_ok = Some(Box::new(f));
        self
    }
    /// Python's `error_callback`: runs with the error on failure.
    pub fn on_error(mut self, f: impl FnOnce(&TaskError) + Send + 'static) -> Self {
        self.on_err = Some(Box::new(f));
        self
    }
}

struct SlotState<R> {
    value: Option<Result<R>>,
    ready: bool,
    ok: bool,
    callbacks: Callbacks<R>,
    /// The wakers of pending futures, by registration id (a dropped future removes its own, so
    /// this holds at most one entry per live pending future).
    wakers: Vec<(u64, Waker)>,
    /// The next registration id.
    next_waker: u64,
    /// A delivery started (its callbacks may be running): a second one is dropped.
    claimed: bool,
    /// Waiters asleep on the condvar (`set` notifies only if some are).
    sleepers: usize,
}

pub(crate) struct Slot<R> {
    st: Mutex<SlotState<R>>,
    cv: Condvar,
    /// Set (Release) after `st.ready`, so a waiter can spin on it without the lock.
    done: AtomicBool,
    /// How `get`/`wait` wait before sleeping on the condvar (the pool's wait strategy).
    wait: WaitStrategy,
}

/// Spins of a waiter before it yields (`SpinYield`).
const SPINS: u32 = 100;
/// Spins of a `SpinPark` waiter before it sleeps.
const PARK_SPINS: u32 = 8;

impl<R> Slot<R> {
    pub(crate) fn with_wait(callbacks: Callbacks<R>, wait: WaitStrategy) -> Arc<Slot<R>> {
        Arc::new(Slot {
            st: Mutex::new(SlotState {
                value: None,
                ready: false,
                ok: false,
                callbacks,
                wakers: Vec::new(),
                next_waker: 0,
                claimed: false,
                sleepers: 0,
            }),
            cv: Condvar::new(),
            done: AtomicBool::new(false),
            wait,
        })
    }

    /// Spins (and yields) as the wait strategy says until the slot is ready or the budget or
    /// the deadline runs out; the caller then takes the lock (and sleeps if still not ready).
    fn spin_until_ready(&self, deadline: Option<Instant>) {
        let (spins, yields) = match self.wait {
            WaitStrategy::Park => return,
            // A few spins, then sleep: no yields (on a loaded machine each `sched_yield` may
            // give away a whole time slice), and few spins: a caller of `get` spinning 100
            // times (~3 µs of `pause`) per result took the CPU from the result threads and
            // workers it waits for (apply_async 10-30% slower on the 2-CPU VM).
            WaitStrategy::SpinPark => (PARK_SPINS, 0),
            WaitStrategy::SpinYield => (SPINS, u32::MAX),
            // Spins without yielding (until the deadline): on a machine with fewer idle cores
            // than spinners, `SpinYield` is the better choice.
            WaitStrategy::Spin => (u32::MAX, u32::MAX),
        };
        let mut i: u32 = 0;
        // Acquire: pairs with the Release store in `set` (the value is read under the lock
        // anyway; this only decides when to take it).
        while !self.done.load(Ordering::Acquire) {
            i = i.wrapping_add(1);
            if i.is_multiple_of(1024) && deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            if i < spins {
                std::hint::spin_loop();
            } else if i - spins < yields {
                std::thread::yield_now();
            } else {
                return;
            }
        }
    }

    /// Whether the slot is filled (a waiter that reads results itself polls this).
    pub(crate) fn is_done(&self) -> bool {
        // Acquire: pairs with the Release store in `set`.
        self.done.load(Ordering::Acquire)
    }

    /// Fills the slot once (later calls are ignored), running the matching callback first.
    pub(crate) fn set(&self, v: Result<R>) {
        let mut g = lock(&self.st);
        // Exactly once: a second delivery (a result racing `terminate`) is dropped.
        if g.ready || g.claimed {
            return;
        }
        g.claimed = true;
        if g.callbacks.on_ok.is_some() || g.callbacks.on_err.is_some() {
            // Callbacks run without the lock, before the result is ready (as Python's).
            let cbs = std::mem::take(&mut g.callbacks);
            drop(g);
            match &v {
                Ok(r) => {
                    if let Some(f) = cbs.on_ok {
                        let _ = catch_unwind(AssertUnwindSafe(|| f(r)));
                    }
                }
                Err(e) => {
                    if let Some(f) = cbs.on_err {
                        let _ = catch_unwind(AssertUnwindSafe(|| f(e)));
                    }
                }
            }
            g = lock(&self.st);
        }
        // Fill the result, then notify.
        g.ok = v.is_ok();
        g.value = Some(v);
        g.ready = true;
        // Release: pairs with the Acquire load of a spinning waiter (which then takes the lock).
        self.done.store(true, Ordering::Release);
        // Taken under the lock that `ready` was set under: a future polled after this sees
        // `ready`; one polled before left its waker here.
        let wakers = std::mem::take(&mut g.wakers);
        // Only a waiter asleep on the condvar needs the wake-up (a `notify_all` is a futex
        // syscall even with nobody waiting: one per result on the receiver threads).
        let sleepers = g.sleepers;
        drop(g);
        if sleepers > 0 {
            self.cv.notify_all();
        }
        for (_, w) in wakers {
            w.wake();
        }
    }

    /// The poll of every future of this slot: `Ready` with the locked state once the slot is
    /// filled, else leaves (or refreshes) the waker under `reg` and returns `Pending`.
    fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        reg: &mut Option<u64>,
    ) -> Poll<MutexGuard<'_, SlotState<R>>> {
        let mut g = lock(&self.st);
        if g.ready {
            if let Some(id) = reg.take() {
                g.wakers.retain(|(i, _)| *i != id);
            }
            return Poll::Ready(g);
        }
        match *reg {
            Some(id) => {
                if let Some((_, w)) = g.wakers.iter_mut().find(|(i, _)| *i == id) {
                    if !w.will_wake(cx.waker()) {
                        w.clone_from(cx.waker());
                    }
                } else {
                    g.wakers.push((id, cx.waker().clone()));
                }
            }
            None => {
                let id = g.next_waker;
                g.next_waker += 1;
                g.wakers.push((id, cx.waker().clone()));
                *reg = Some(id);
            }
        }
        Poll::Pending
    }

    /// Removes a dropped future's waker.
    fn unregister(&self, reg: Option<u64>) {
        if let Some(id) = reg {
            lock(&self.st).wakers.retain(|(i, _)| *i != id);
        }
    }
}

/// The pending result of `apply_async`/`map_async`/`starmap_async` (Python's `AsyncResult`).
///
/// The value moves out at the first successful [`get`](AsyncResult::get) (later gets give
/// [`TaskError::AlreadyTaken`]); `ready`/`successful` keep answering.
///
/// In async code, `.await` it (it is [`IntoFuture`]), or borrow it with
/// [`get_async`](AsyncResult::get_async) / [`wait_async`](AsyncResult::wait_async): no thread
/// blocks, the pool's result thread wakes the task, and any executor works. A worker that dies
/// resolves the future with the same [`TaskError::WorkerLost`] that [`get`](AsyncResult::get)
/// gives; a terminated or dropped pool with [`TaskError::Terminated`].
///
/// ```no_run
/// # use multiproc_pool::Pool;
/// # #[multiproc_process::task(crate = multiproc_process)]
/// # fn square(x: u64) -> u64 { x * x }
/// # async fn demo(pool: &Pool) -> Result<(), multiproc_pool::PoolError> {
/// let nine = pool.apply_async(square, 3)?.await?;
/// let r = pool.apply_async(square, 4)?;
/// r.wait_async().await;          // r stays usable
/// assert_eq!(r.get_async().await?, 16);
/// # assert_eq!(nine, 9);
/// # Ok(()) }
/// ```
pub struct AsyncResult<R> {
    pub(crate) slot: Arc<Slot<R>>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    /// Waits for the result and takes it. Never waits forever on a dead worker: its tasks fail
    /// with [`TaskError::WorkerLost`].
    pub fn get(&self) -> std::result::Result<R, TaskError> {
        self.get_deadline(None)
    }

    /// [`get`](AsyncResult::get) waiting at most `timeout`: [`TaskError::Timeout`] if not ready
    /// (the result stays for a later get).
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<R, TaskError> {
        self.get_deadline(multiproc_shm::deadline::after(timeout))
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<R> {
        let mut g = self.wait_until(deadline);
        if !g.ready {
            return Err(TaskError::Timeout);
        }
        g.value.take().unwrap_or(Err(TaskError::AlreadyTaken))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> MutexGuard<'_, SlotState<R>> {
        let s = &self.slot;
        s.spin_until_ready(deadline);
        let mut g = lock(&s.st);
        while !g.ready {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            g.sleepers += 1;
            g = match deadline {
                None => s.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    s.cv.wait_timeout(g, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            g.sleepers -= 1;
        }
        g
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        drop(self.wait_until(None));
    }

    /// Waits at most `timeout`; true if the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(multiproc_shm::deadline::after(timeout))
            .ready
    }

    /// The value, awaited: the async [`get`](AsyncResult::get). Cancel-safe: dropping the
    /// future before it completes leaves the value in the result (a later `get`, `get_async`
    /// or `.await` takes it); the value moves out only in the poll that returns it. Time
    /// limits come from the executor (e.g. `tokio::time::timeout`), or use
    /// [`get_timeout`](AsyncResult::get_timeout) outside async code.
    pub fn get_async(&self) -> GetFuture<'_, R> {
        GetFuture {
            slot: &self.slot,
            reg: None,
        }
    }

    /// Completes when the result is ready, taking nothing: the async
    /// [`wait`](AsyncResult::wait). Cancel-safe.
    pub fn wait_async(&self) -> WaitFuture<'_, R> {
        WaitFuture {
            slot: &self.slot,
            reg: None,
        }
    }

    /// Whether the call has completed.
    pub fn ready(&self) -> bool {
        lock(&self.slot.st).ready
    }

    /// Whether the call completed without error; [`NotReady`] before it is ready
    /// (Python's `ValueError`).
    pub fn successful(&self) -> std::result::Result<bool, NotReady> {
        let g = lock(&self.slot.st);
        if !g.ready {
            return Err(NotReady);
        }
        Ok(g.ok)
    }
}

/// The future of [`AsyncResult::get_async`]: the value (or the task's error).
#[must_use = "futures do nothing unless polled"]
pub struct GetFuture<'a, R> {
    slot: &'a Slot<R>,
    reg: Option<u64>,
}

/// The future of [`AsyncResult::wait_async`]: completes when the result is ready.
#[must_use = "futures do nothing unless polled"]
pub struct WaitFuture<'a, R> {
    slot: &'a Slot<R>,
    reg: Option<u64>,
}

/// The future of `.await` on an [`AsyncResult`] (which it owns): the value (or the task's
/// error). Dropping it drops the result.
#[must_use = "futures do nothing unless polled"]
pub struct ResultFuture<R> {
    slot: Arc<Slot<R>>,
    reg: Option<u64>,
}

impl<R> std::fmt::Debug for GetFuture<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetFuture").finish_non_exhaustive()
    }
}

impl<R> std::fmt::Debug for WaitFuture<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFuture").finish_non_exhaustive()
    }
}

impl<R> std::fmt::Debug for ResultFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultFuture").finish_non_exhaustive()
    }
}

impl<R> Future for GetFuture<'_, R> {
    type Output = std::result::Result<R, TaskError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = self.get_mut();
        this.slot
            .poll_ready(cx, &mut this.reg)
            .map(|mut g| g.value.take().unwrap_or(Err(TaskError::AlreadyTaken)))
    }
}

impl<R> Future for WaitFuture<'_, R> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.slot.poll_ready(cx, &mut this.reg).map(drop)
    }
}

impl<R> Future for ResultFuture<R> {
    type Output = std::result::Result<R, TaskError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = self.get_mut();
        this.slot
            .poll_ready(cx, &mut this.reg)
            .map(|mut g| g.value.take().unwrap_or(Err(TaskError::AlreadyTaken)))
    }
}

impl<R> Drop for GetFuture<'_, R> {
    fn drop(&mut self) {
        self.slot.unregister(self.reg);
    }
}

impl<R> Drop for WaitFuture<'_, R> {
    fn drop(&mut self) {
        self.slot.unregister(self.reg);
    }
}

impl<R> Drop for ResultFuture<R> {
    fn drop(&mut self) {
        self.slot.unregister(self.reg);
    }
}

/// `pool.apply_async(f, x)?.await`: the value, as [`AsyncResult::get`] gives it, without
/// blocking a thread.
impl<R> IntoFuture for AsyncResult<R> {
    type Output = std::result::Result<R, TaskError>;
    type IntoFuture = ResultFuture<R>;
    fn into_future(self) -> ResultFuture<R> {
        ResultFuture {
            slot: self.slot,
            reg: None,
        }
    }
}

/// `(&r).await`: [`AsyncResult::get_async`].
impl<'a, R> IntoFuture for &'a AsyncResult<R> {
    type Output = std::result::Result<R, TaskError>;
    type IntoFuture = GetFuture<'a, R>;
    fn into_future(self) -> GetFuture<'a, R> {
        self.get_async()
    }
}

/// Where a job's chunk results go. Called on a result thread (or by terminate / death handling).
pub(crate) trait Sink: Send + Sync {
    /// `Ok(body)`: the postcard sequence of the chunk's results.
    fn deliver(&self, chunk: u32, res: Result<&[u8]>);
}

/// Decodes a chunk's results: one postcard sequence (one call, no per-item framing).
pub(crate) fn decode_items<R: DeserializeOwned + 'static>(body: &[u8]) -> Result<Vec<R>> {
    if body.starts_with(&registry::PLAIN_MAGIC) {
        // A plain chunk (a `map` of primitive numbers): one slice copy.
        return registry::plain_read::<R>(body).ok_or_else(|| {
            TaskError::Task(format!(
                "decoding a task result: a malformed plain-data chunk of `{}`",
                std::any::type_name::<R>()
            ))
        });
    }
    postcard::from_bytes(body).map_err(|e| {
        TaskError::Task(registry::codec_message(
            "decoding",
            "a task result",
            std::any::type_name::<R>(),
            &e,
        ))
    })
}

/// One `apply`.
pub(crate) struct ApplySink<R> {
    pub(crate) slot: Arc<Slot<R>>,
}

impl<R: DeserializeOwned + Send + 'static> Sink for ApplySink<R> {
    fn deliver(&self, _chunk: u32, res: Result<&[u8]>) {
        let v = res.and_then(|b| match b.split_first() {
            // One result (a varint length of 1): decoded alone, no `Vec`.
            Some((1, item)) => postcard::from_bytes(item)
                .map_err(|e| TaskError::Task(format!("decoding the result: {e}"))),
            _ => decode_items::<R>(b)?
                .pop()
                .ok_or_else(|| TaskError::Task("empty result".into())),
        });
        self.slot.set(v);
    }
}

struct MapState<R> {
    /// Each chunk's results as they arrive (`Some(empty)` for a chunk placed in `whole`).
    chunks: Vec<Option<Vec<R>>>,
    /// For a map of plain results (primitive numbers): the whole result, allocated at the
    /// start, each chunk copied to its place as it arrives (`len` stays 0 until every chunk
    /// did), so the last result does not wait for a concatenation of all of them.
    whole: Option<Whole<R>>,
    remaining: usize,
    first_err: Option<(u32, TaskError)>,
}

struct Whole<R> {
    out: Vec<R>,
    chunksize: usize,
    total: usize,
}

/// Where chunk `i` of a [`Whole`] goes: its elements of the result's spare capacity, as a
/// raw pointer taken under the sink's lock and written after it is released.
struct Dst<R> {
    ptr: *mut MaybeUninit<R>,
    len: usize,
}

impl<R: DeserializeOwned + 'static> Whole<R> {
    /// Chunk `i`'s place in the result (`None` if it lies past the capacity).
    fn dst(&mut self, i: usize) -> Option<Dst<R>> {
        let start = i.checked_mul(self.chunksize)?;
        let len = self.chunksize.min(self.total.saturating_sub(start));
        let spare = self.out.spare_capacity_mut().get_mut(start..start + len)?;
        Some(Dst {
            ptr: spare.as_mut_ptr(),
            len,
        })
    }

    /// Copies chunk `i`'s results (a plain chunk, or postcard) to `dst`.
    ///
    /// # Safety
    ///
    /// `dst` came from [`Whole::dst`] for chunk `i` of a `Whole` that is still alive and whose
    /// `out` is neither moved, grown nor read meanwhile, and no other thread writes chunk `i`
    /// (the caller claimed it under the sink's lock).
    unsafe fn place(dst: Dst<R>, i: usize, body: &[u8]) -> Result<()> {
        // SAFETY: the caller's contract: `dst` is chunk `i`'s part of `out`'s capacity, alive
        // and written by this thread alone (other chunks are disjoint ranges).
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.ptr, dst.len) };
        let bad = || TaskError::Task(format!("a result chunk of the wrong length (chunk {i})"));
        if body.starts_with(&registry::PLAIN_MAGIC) {
            return if registry::plain_read_into(body, dst) {
                Ok(())
            } else {
                Err(bad())
            };
        }
        let v = decode_items::<R>(body)?;
        if v.len() != dst.len() {
            return Err(bad());
        }
        for (d, x) in dst.iter_mut().zip(v) {
            d.write(x);
        }
        Ok(())
    }
}

/// One `map`: completes after every chunk finished (Python's `test_map_no_failfast`), with the
/// error of the lowest failing chunk if any failed.
pub(crate) struct MapSink<R> {
    st: Mutex<MapState<R>>,
    pub(crate) slot: Arc<Slot<Vec<R>>>,
}

impl<R: 'static> MapSink<R> {
    /// A map of `total` items in chunks of `chunksize`, `nchunks` of them.
    pub(crate) fn new(
        nchunks: usize,
        chunksize: usize,
        total: usize,
        slot: Arc<Slot<Vec<R>>>,
    ) -> MapSink<R> {
        let whole = registry::plain_width_static::<R>().map(|_| Whole {
            out: Vec::with_capacity(total),
            chunksize,
            total,
        });
        MapSink {
            st: Mutex::new(MapState {
                chunks: (0..nchunks).map(|_| None).collect(),
                whole,
                remaining: nchunks,
                first_err: None,
            }),
            slot,
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for MapSink<R> {
    fn deliver(&self, chunk: u32, res: Result<&[u8]>) {
        let mut g = lock(&self.st);
        let i = chunk as usize;
        if i >= g.chunks.len() || g.chunks[i].is_some() {
            return;
        }
        let res = match (&mut g.whole, res) {
            // Plain results: chunk `i` is claimed under the lock (a second delivery of it
            // returns above), then copied to its place after the lock is released, so that
            // receivers of different chunks copy (and take the result's page faults) side by
            // side instead of one after the other.
            (Some(w), Ok(body)) => match w.dst(i) {
                Some(dst) => {
                    g.chunks[i] = Some(Vec::new());
                    drop(g);
                    // SAFETY: `dst` is chunk `i`'s place, claimed above. `out` stays where it
                    // is until the last chunk is counted (`remaining` below, under the lock,
                    // after this copy): only then is the `Whole` taken. The sink outlives
                    // this call (the caller holds it).
                    let r = unsafe { Whole::<R>::place(dst, i, body) };
                    g = lock(&self.st);
                    r.map(|()| Vec::new())
                }
                None => Err(TaskError::Task(format!(
                    "a result chunk past the end of the map (chunk {i})"
                ))),
            },
            (None, res) => {
                drop(g);
                let res = res.and_then(decode_items::<R>);
                g = lock(&self.st);
                if g.chunks[i].is_some() {
                    return;
                }
                res
            }
            (_, Err(e)) => Err(e),
        };
        let done = {
            match res {
                Ok(v) => g.chunks[i] = Some(v),
                Err(e) => {
                    g.chunks[i] = Some(Vec::new());
                    if g.first_err.as_ref().is_none_or(|(c, _)| chunk < *c) {
                        g.first_err = Some((chunk, e));
                    }
                }
            }
            g.remaining -= 1;
            if g.remaining > 0 {
                return;
            }
            match g.first_err.take() {
                Some((_, e)) => Err(e),
                None if g.whole.is_some() => {
                    let Some(mut w) = g.whole.take() else {
                        return;
                    };
                    // SAFETY: every chunk arrived without error, and chunk `i` wrote
                    // elements `i * chunksize ..` up to its length (`Whole::place` checked
                    // it): the chunks are disjoint and cover `0..total`, within the capacity.
                    unsafe { w.out.set_len(w.total) };
                    Ok(w.out)
                }
                None => {
                    let chunks = std::mem::take(&mut g.chunks);
                    let total: usize = chunks.iter().map(|c| c.as_ref().map_or(0, Vec::len)).sum();
                    // The first chunk's buffer grows into the whole (a big one is moved by
                    // `mremap`, not copied: a fresh buffer of the whole size was a second
                    // round of page faults on every big map).
                    let mut it = chunks.into_iter().flatten();
                    let mut out = it.next().unwrap_or_default();
                    out.reserve_exact(total - out.len());
                    for c in it {
                        out.extend(c);
                    }
                    Ok(out)
                }
            }
        };
        drop(g);
        self.slot.set(done);
    }
}

/// What an `imap`'s sink holds: the chunks that arrived, and the waker of a pending stream poll.
pub(crate) struct IMapState<R> {
    pub(crate) chunks: BTreeMap<u32, Result<Vec<R>>>,
    /// Left by `IMap::poll_next` (one consumer: the `IMap` is polled through `&mut`), taken
    /// and woken by `deliver` under the same lock.
    pub(crate) waker: Option<Waker>,
}

/// The chunks of an `imap`, as they arrive.
pub(crate) struct IMapSink<R> {
    pub(crate) st: Mutex<IMapState<R>>,
    pub(crate) cv: Condvar,
    _p: PhantomData<fn() -> R>,
}

impl<R> IMapSink<R> {
    pub(crate) fn new() -> IMapSink<R> {
        IMapSink {
            st: Mutex::new(IMapState {
                chunks: BTreeMap::new(),
                waker: None,
            }),
            cv: Condvar::new(),
            _p: PhantomData,
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for IMapSink<R> {
    fn deliver(&self, chunk: u32, res: Result<&[u8]>) {
        let v = res.and_then(decode_items::<R>);
        let waker = {
            let mut g = lock(&self.st);
            g.chunks.entry(chunk).or_insert(v);
            g.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain chunk of the squares of `start..start + len` (what a worker sends back).
    fn chunk_of(start: u64, len: u64) -> Vec<u8> {
        let v: Vec<u64> = (start..start + len).map(|x| x * x).collect();
        let mut out = Vec::new();
        assert!(registry::plain_append(&v, 8, &mut out));
        out
    }

    /// Plain results placed by several threads at once, outside the sink's lock: every chunk
    /// delivered twice by different threads in scrambled orders (a requeued chunk may come
    /// back twice), a short last chunk; the map's result is exact, and a chunk of the wrong
    /// length fails the map instead of being placed.
    #[test]
    fn plain_chunks_placed_concurrently_make_the_exact_result() {
        let (total, cs) = (10_007usize, 100usize);
        let nchunks = total.div_ceil(cs);
        let slot = Slot::with_wait(Callbacks::new(), WaitStrategy::SpinPark);
        let sink = Arc::new(MapSink::<u64>::new(nchunks, cs, total, slot.clone()));
        let bodies: Vec<Vec<u8>> = (0..nchunks)
            .map(|i| {
                let start = i * cs;
                chunk_of(start as u64, cs.min(total - start) as u64)
            })
            .collect();
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (sink, bodies) = (&sink, &bodies);
                s.spawn(move || {
                    for k in 0..nchunks {
                        // Each thread its own order; threads 0/2 and 1/3 deliver the same chunks.
                        let i = (k * 37 + t * 11) % nchunks;
                        let i = if t % 2 == 0 { i } else { nchunks - 1 - i };
                        sink.deliver(i as u32, Ok(&bodies[i]));
                    }
                });
            }
        });
        let r = AsyncResult { slot };
        let want: Vec<u64> = (0..total as u64).map(|x| x * x).collect();
        assert_eq!(r.get_timeout(Duration::from_secs(10)).unwrap(), want);

        let slot = Slot::with_wait(Callbacks::new(), WaitStrategy::SpinPark);
        let sink = MapSink::<u64>::new(2, 4, 8, slot.clone());
        sink.deliver(0, Ok(&chunk_of(0, 4)));
        sink.deliver(1, Ok(&chunk_of(4, 3))); // one short
        match (AsyncResult { slot }).get_timeout(Duration::from_secs(10)) {
            Err(TaskError::Task(m)) => assert!(m.contains("wrong length"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
