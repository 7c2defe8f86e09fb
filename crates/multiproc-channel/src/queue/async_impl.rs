//! Async `get`/`put`/`join` on the queues: runtime-agnostic futures woken through the
//! per-process notifier (`multiproc_sync::notify`). See `docs/async.md`.
//!
//! Each future makes the non-blocking call first (`get_nowait`/`put_nowait`, which also look
//! for dead peers every 25 ms), and while it would block registers on the word a blocked call
//! parks on: the ring's `not_empty` for getters, the admission word next to `gets` for
//! putters, the unfinished-task word for joiners. Every 10 ms it lets the ring recover slots
//! held by dead processes, as blocked calls do between slices.

use super::{JoinableQueue, Mode, PARK_MAX, Queue, Receiver, Sender, SimpleQueue};
use crate::codec::Codec;
use crate::error::{GetError, PutError};
use crate::facade::Ordering;
use multiproc_sync::notify::AsyncWait;
use std::future::Future;
use std::task::{Context, Poll};

/// Readiness rounds within one poll before the future yields to the runtime instead (only
/// reached while a dead reader's slot awaits recovery, or under heavy competition).
const MAX_ROUNDS: u32 = 64;

impl<T: 'static, C: Codec<T>> Queue<T, C> {
    /// Removes and returns the next item without blocking a thread: the async form of
    /// [`Queue::get`] (same errors: [`GetError::Disconnected`] once the queue is drained and no
    /// live process holds a producer handle, also after a SIGKILL).
    ///
    /// **Cancel safety:** cancel-safe. An item is popped only in the poll that returns it;
    /// dropping the future takes nothing from the queue.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let q: multiproc_channel::Queue<u32> = multiproc_channel::Queue::new(8).unwrap();
    /// let q2 = q.clone();
    /// std::thread::spawn(move || q2.put(7).unwrap());
    /// assert_eq!(q.get_async().await.unwrap(), 7);
    /// # });
    /// ```
    pub fn get_async(&self) -> impl Future<Output = Result<T, GetError>> + Send + '_ {
        let mut st = Waiting {
            w: AsyncWait::new(),
            done: false,
            pass_on: move || self.sh.ring.pass_on_not_empty(),
        };
        std::future::poll_fn(move |cx| {
            let r = self.poll_get(cx, &mut st.w);
            st.done = r.is_ready();
            r
        })
    }

    fn poll_get(&self, cx: &mut Context<'_>, w: &mut AsyncWait) -> Poll<Result<T, GetError>> {
        for _ in 0..MAX_ROUNDS {
            match self.get_mode(Mode::NoWait) {
                Err(GetError::Empty) => {}
                r => {
                    w.cancel();
                    return Poll::Ready(r);
                }
            }
            // Spin phase (this handle's strategy and adaptive budget), then register.
            if w.spin(self.strategy, &self.budget, || {
                self.sh.ring.has_ready_record()
            }) {
                continue;
            }
            if w.check_due(PARK_MAX) {
                // A dead writer may hold the head slot: let the ring recover it.
                self.sh.ring.recover();
            }
            if self.sh.ring.poll_not_empty(cx, w).is_pending() {
                return Poll::Pending;
            }
        }
        w.cancel();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Puts `item` without blocking a thread: the async form of [`Queue::put`], `Pending`
    /// while the queue is full (same errors, each handing the item back).
    ///
    /// **Cancel safety:** the item is in the queue once the future returned `Ok`; dropping the
    /// future before that drops the item without putting it (it is encoded again on each
    /// attempt, and an attempt either puts it whole or not at all).
    pub fn put_async(&self, item: T) -> impl Future<Output = Result<(), PutError<T>>> + Send + '_
    where
        T: Send,
    {
        let mut st = Waiting {
            w: AsyncWait::new(),
            done: false,
            pass_on: move || {
                if self.sh.has_room() {
                    self.ctl().gets.wait.wake_one();
                }
            },
        };
        let mut item = Some(item);
        std::future::poll_fn(move |cx| {
            // Polled after completion: nothing left to put (never resolves again).
            let Some(it) = item.take() else {
                return Poll::Pending;
            };
            match self.poll_put(cx, &mut st.w, it) {
                Ok(r) => {
                    st.done = true;
                    Poll::Ready(r)
                }
                Err(it) => {
                    item = Some(it);
                    Poll::Pending
                }
            }
        })
    }

    /// One poll of `put_async`: `Ok(result)` when done, `Err(item)` when pending.
    fn poll_put(
        &self,
        cx: &mut Context<'_>,
        w: &mut AsyncWait,
        mut it: T,
    ) -> Result<Result<(), PutError<T>>, T> {
        for _ in 0..MAX_ROUNDS {
            match self.put_mode(it, Mode::NoWait) {
                Err(PutError::Full(back)) => it = back,
                r => {
                    w.cancel();
                    return Ok(r);
                }
            }
            if w.check_due(PARK_MAX) {
                // A dead reader may hold a slot: let the ring recover it.
                self.sh.ring.recover();
            }
            // The condition's loads are ordered against the consumer's slot release (or
            // `gets` bump) by the protocol's fences, as in `push_wait`/`admit_wait`.
            let ready = w.poll_shared(
                cx,
                &self.sh.ctl,
                |c| &c.gets.wait,
                || self.sh.has_room().then_some(()),
            );
            if ready.is_pending() {
                return Err(it);
            }
        }
        w.cancel();
        cx.waker().wake_by_ref();
        Err(it)
    }
}

/// A get/put future's waiting state: on drop before completion it withdraws its registration,
/// then passes on a wake-up it may have taken from another waiter (`FUTEX_WAKE(1)` wakes one
/// waiter, which may be this future's notifier just before the future is dropped).
struct Waiting<F: Fn()> {
    w: AsyncWait,
    done: bool,
    pass_on: F,
}

impl<F: Fn()> Drop for Waiting<F> {
    fn drop(&mut self) {
        self.w.cancel();
        if !self.done {
            (self.pass_on)();
        }
    }
}

impl<T: 'static, C: Codec<T>> JoinableQueue<T, C> {
    /// Waits without blocking a thread until every item put has been marked
    /// [`task_done`](JoinableQueue::task_done): the async form of [`JoinableQueue::join`].
    /// Cancel-safe (waiting takes nothing).
    pub fn join_async(&self) -> impl Future<Output = ()> + Send + '_ {
        let mut w = AsyncWait::new();
        std::future::poll_fn(move |cx| {
            let t = &self.0.ctl().tasks;
            w.poll_shared(
                cx,
                &self.0.sh.ctl,
                |c| &c.tasks.wait,
                || {
                    // SeqCst: same total order as `task_done_inner`'s decrement and `put`'s
                    // increment (as `join_deadline`).
                    (t.unfinished.load(Ordering::SeqCst) == 0).then_some(())
                },
            )
        })
    }
}

impl<T: 'static, C: Codec<T>> SimpleQueue<T, C> {
    /// [`Queue::get_async`] (cancel-safe).
    pub fn get_async(&self) -> impl Future<Output = Result<T, GetError>> + Send + '_ {
        self.0.get_async()
    }

    /// [`Queue::put_async`] (the item is put whole or not at all).
    pub fn put_async(&self, item: T) -> impl Future<Output = Result<(), PutError<T>>> + Send + '_
    where
        T: Send,
    {
        self.0.put_async(item)
    }
}

impl<T: 'static, C: Codec<T>> Sender<T, C> {
    /// [`Queue::put_async`] (the item is put whole or not at all).
    pub fn put_async(&self, item: T) -> impl Future<Output = Result<(), PutError<T>>> + Send + '_
    where
        T: Send,
    {
        self.0.put_async(item)
    }
}

impl<T: 'static, C: Codec<T>> Receiver<T, C> {
    /// [`Queue::get_async`] (cancel-safe).
    pub fn get_async(&self) -> impl Future<Output = Result<T, GetError>> + Send + '_ {
        self.0.get_async()
    }
}
