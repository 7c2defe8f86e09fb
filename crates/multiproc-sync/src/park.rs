//! The one waiting primitive: a [`WaitWord`] in shared memory that waiters park on and wakers
//! poke, with a per-handle [`WaitStrategy`] and an adaptive spin ([`SpinBudget`]).
//!
//! **Protocol (a Dekker pair).** A waiter that finds its condition false (after its spin phase)
//! 1. reads the word's `epoch`,
//! 2. announces itself (`waiters += 1`, SeqCst) and runs a SeqCst fence,
//! 3. re-checks the condition, and only if it is still false
//! 4. futex-waits on `epoch` while it still holds the value read in 1, at most one *slice*,
//! 5. withdraws (`waiters -= 1`).
//!
//! A waker first publishes the state change (its own store), then [`WaitWord::wake_one`] /
//! [`WaitWord::wake_all`] run a SeqCst fence and load `waiters`. The two fences order the
//! waiter's announcement (2) against its re-check (3), and the waker's store against its load of
//! `waiters`: at least one side sees the other (store-load; Release/Acquire alone would let both
//! read stale values). So either the re-check sees the new state, or the waker sees
//! `waiters != 0`, bumps `epoch` and calls `FUTEX_WAKE`; a waiter between its re-check and its
//! futex call then finds `epoch` changed and returns at once (the kernel compares under its
//! lock). A wake with nobody announced costs a fence and one load of a line nobody writes: no
//! syscall, no RMW.
//!
//! **Slices.** Every futex sleep lasts at most the caller's `slice`; between slices the caller's
//! `on_slice` runs (dead-peer scans, ring recovery) and may end the wait. So a wake-up lost to a
//! waker SIGKILLed between its store and its `FUTEX_WAKE` costs at most one slice, and no wait
//! depends on another process being alive.
//!
//! **Adaptive spin.** [`WaitStrategy::SpinThenPark`] spins up to a [`SpinBudget`] (process-local,
//! one per handle) before parking. A wait answered inside the spin window doubles the budget (up
//! to [`SpinBudget::MAX`]); a wait that had to park halves it (down to [`SpinBudget::MIN`]). So a
//! ping-pong partner that answers in a microsecond keeps its waiter spinning (no syscall on either
//! side), while a waiter whose peer is slow, or descheduled on a busy machine, soon stops burning
//! the time slice that peer needs.
//!
//! Under `cfg(loom)` the futex is modelled by a loom `Mutex` + `Condvar` per word (the kernel's
//! compare-and-sleep under its bucket lock, and wake), with no timeout: a lost wake-up is a
//! deadlock loom reports. See `tests/loom_park.rs`.
//!
//! ```
//! use multiproc_sync::park::{SpinBudget, WaitStrategy, WaitWord};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::{Duration, Instant};
//! let w = WaitWord::new();
//! let flag = AtomicU32::new(0);
//! let budget = SpinBudget::new();
//! // Nothing sets the flag: the wait times out.
//! let r = w.wait_until(
//!     WaitStrategy::Park,
//!     &budget,
//!     Some(Instant::now() + Duration::from_millis(5)),
//!     Duration::from_millis(1),
//!     || (flag.load(Ordering::Acquire) != 0).then_some(()),
//!     || None::<()>,
//! );
//! assert!(r.is_err());
//! flag.store(1, Ordering::Release);
//! w.wake_all(); // nobody parked: one load, no syscall
//! ```

use crate::facade::{AtomicU32, Ordering, fence, spin_hint};
#[cfg(not(loom))]
use crate::futex;
use std::time::{Duration, Instant};

/// How a blocked operation waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Busy-poll until the condition holds (lowest latency, burns a CPU). Deadlines and
    /// `on_slice` still run about every slice.
    Spin,
    /// Spin up to an adaptive budget, then park (the default).
    #[default]
    SpinThenPark,
    /// Park at once, no spin phase (the polite choice on an oversubscribed machine).
    Park,
}

/// Why [`WaitWord::wait_until`] returned without its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError<E> {
    /// The deadline passed.
    TimedOut,
    /// `on_slice` ended the wait.
    Stopped(E),
}

/// A process-local adaptive spin count (one per handle; never in shared memory).
#[derive(Debug)]
pub struct SpinBudget(crate::facade::StdAtomicU32);

impl Default for SpinBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for SpinBudget {
    fn clone(&self) -> Self {
        SpinBudget(crate::facade::StdAtomicU32::new(self.get()))
    }
}

impl SpinBudget {
    /// Fewest spins of a `SpinThenPark` wait.
    pub const MIN: u32 = 16;
    /// Most spins of a `SpinThenPark` wait (a few tens of µs).
    pub const MAX: u32 = 8192;
    /// The starting budget.
    pub const START: u32 = 256;

    /// A budget at [`Self::START`].
    pub fn new() -> SpinBudget {
        SpinBudget(crate::facade::StdAtomicU32::new(Self::START))
    }

    /// The current budget.
    pub fn get(&self) -> u32 {
        // Relaxed: process-local heuristic; a stale value only changes how long we spin.
        self.0.load(Ordering::Relaxed).clamp(Self::MIN, Self::MAX)
    }

    /// A wait was answered inside the spin window: spin longer next time.
    pub fn hit(&self) {
        let b = self.get();
        if b < Self::MAX {
            // Relaxed: as in `get`.
            self.0.store((b * 2).min(Self::MAX), Ordering::Relaxed);
        }
    }

    /// A wait had to park: spin less next time.
    pub fn miss(&self) {
        let b = self.get();
        if b > Self::MIN {
            // Relaxed: as in `get`.
            self.0.store((b / 2).max(Self::MIN), Ordering::Relaxed);
        }
    }
}

/// The loom stand-in for the kernel's futex: compare-and-sleep under a lock, wake under it.
#[cfg(loom)]
#[derive(Debug)]
struct LoomFutex {
    lock: loom::sync::Mutex<()>,
    cv: loom::sync::Condvar,
}

/// A futex word and a count of announced waiters, placed in shared memory (8 bytes, atomics
/// only: any bit pattern is a valid state; a corrupted one costs a spurious wake or a slice).
#[derive(Debug)]
#[repr(C)]
pub struct WaitWord {
    /// Bumped by a waker that saw a waiter; what the waiters' futex compares.
    epoch: AtomicU32,
    /// Waiters announced (between steps 2 and 5 of the protocol).
    waiters: AtomicU32,
    #[cfg(loom)]
    kernel: LoomFutex,
}

impl Default for WaitWord {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitWord {
    /// Nobody waiting.
    pub fn new() -> WaitWord {
        WaitWord {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            #[cfg(loom)]
            kernel: LoomFutex {
                lock: loom::sync::Mutex::new(()),
                cv: loom::sync::Condvar::new(),
            },
        }
    }

    /// Waiters announced right now (a hint: it may be one too high after a waiter was killed).
    pub fn waiters(&self) -> u32 {
        // Relaxed: a diagnostic reading.
        self.waiters.load(Ordering::Relaxed)
    }

    /// Wakes one parked waiter, if any announced itself. Call after publishing the change.
    #[inline]
    pub fn wake_one(&self) {
        if self.anyone() {
            self.wake_slow(1);
        }
    }

    /// Wakes every parked waiter, if any announced itself. Call after publishing the change.
    #[inline]
    pub fn wake_all(&self) {
        if self.anyone() {
            self.wake_slow(u32::MAX);
        }
    }

    #[inline]
    fn anyone(&self) -> bool {
        // SeqCst fence: the waker's half of the Dekker pair; partner of the fence in `park`
        // after the waiter's announcement. Orders the caller's earlier state store before the
        // load of `waiters` below.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above (fence-to-fence synchronization with `park`).
        self.waiters.load(Ordering::Relaxed) != 0
    }

    #[cold]
    fn wake_slow(&self, n: u32) {
        // Release: pairs with the waiter's Acquire snapshot of `epoch` (a waiter that sees the
        // bump re-checks and sees the state published before it). The bump makes a waiter
        // that is between its re-check and its futex call return at once.
        self.epoch.fetch_add(1, Ordering::Release);
        self.kernel_wake(n);
    }

    #[cfg(not(loom))]
    fn kernel_wake(&self, n: u32) {
        futex::wake(&self.epoch, n);
    }

    #[cfg(loom)]
    fn kernel_wake(&self, n: u32) {
        let _g = self.kernel.lock.lock().unwrap();
        if n == 1 {
            self.kernel.cv.notify_one();
        } else {
            self.kernel.cv.notify_all();
        }
    }

    #[cfg(not(loom))]
    fn kernel_wait(&self, seen: u32, max: Duration) {
        futex::wait(&self.epoch, seen, Some(max));
    }

    /// Sleeps (no timeout: a lost wake-up is a deadlock loom reports) while `epoch == seen`.
    #[cfg(loom)]
    fn kernel_wait(&self, seen: u32, _max: Duration) {
        let g = self.kernel.lock.lock().unwrap();
        // SeqCst: the kernel's compare happens under the bucket lock the waker also takes.
        if self.epoch.load(Ordering::SeqCst) == seen {
            drop(self.kernel.cv.wait(g).unwrap());
        }
    }

    /// Whether a waiter has announced itself, WITHOUT the store-load fence of
    /// [`WaitWord::wake_one`]: a hint for a producer that publishes lazily (the ring's deferred
    /// batches are published at once when a sleeper shows). A waiter that announces itself
    /// concurrently may be missed; the caller's contract must cover that.
    #[inline]
    pub fn has_waiters_hint(&self) -> bool {
        // Relaxed: a hint; no data is read on its strength.
        self.waiters.load(Ordering::Relaxed) != 0
    }

    /// One parked slice of the protocol, for callers with a wait loop of their own (the rings):
    /// read `epoch`, announce, re-check `cond`, and if it is still `None` sleep at most `max`
    /// (until a waker bumps `epoch`), then withdraw. Returns what `cond` returned.
    #[inline]
    pub fn park_slice<R>(&self, max: Duration, cond: &mut impl FnMut() -> Option<R>) -> Option<R> {
        self.park(max, cond)
    }

    /// The futex word (`epoch`) and the waiter count, for the async notifier (same crate).
    #[cfg(not(loom))]
    pub(crate) fn words(&self) -> (&AtomicU32, &AtomicU32) {
        (&self.epoch, &self.waiters)
    }

    /// Announce, re-check, sleep at most `max` if still nothing (one slice).
    fn park<R>(&self, max: Duration, cond: &mut impl FnMut() -> Option<R>) -> Option<R> {
        // Acquire: pairs with the waker's Release bump, so a later re-check after a bump sees
        // what the waker published. Read before the announcement: a bump after this read makes
        // the futex call return at once.
        let seen = self.epoch.load(Ordering::Acquire);
        // SeqCst: the announcement (with the fence below, the waiter's half of the Dekker pair).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // SeqCst fence: partner of the waker's fence in `anyone`.
        fence(Ordering::SeqCst);
        let r = cond();
        if r.is_none() {
            self.kernel_wait(seen, max);
        }
        // Release: keeps the count's decrement after our last use of the state; a stale high
        // count only costs a waker one wake syscall.
        self.waiters.fetch_sub(1, Ordering::Release);
        r
    }

    /// Waits until `cond` yields `Some`, `deadline` passes, or `on_slice` (run after every parked
    /// slice, and about every `slice` while spinning) yields an error.
    ///
    /// `cond` must read the state the waker publishes before its `wake_*` call. `slice` bounds
    /// every futex sleep (and so how late a liveness check or a lost wake-up is noticed).
    #[inline]
    pub fn wait_until<R, E>(
        &self,
        strategy: WaitStrategy,
        budget: &SpinBudget,
        deadline: Option<Instant>,
        slice: Duration,
        mut cond: impl FnMut() -> Option<R>,
        mut on_slice: impl FnMut() -> Option<E>,
    ) -> Result<R, WaitError<E>> {
        if let Some(r) = cond() {
            return Ok(r);
        }
        self.wait_slow(strategy, budget, deadline, slice, &mut cond, &mut on_slice)
    }

    #[cold]
    fn wait_slow<R, E>(
        &self,
        strategy: WaitStrategy,
        budget: &SpinBudget,
        deadline: Option<Instant>,
        slice: Duration,
        cond: &mut impl FnMut() -> Option<R>,
        on_slice: &mut impl FnMut() -> Option<E>,
    ) -> Result<R, WaitError<E>> {
        let slice = slice.max(Duration::from_micros(1));
        // Spin phase.
        let spins = match strategy {
            WaitStrategy::Spin => u32::MAX,
            WaitStrategy::SpinThenPark if cfg!(loom) => 1,
            WaitStrategy::SpinThenPark => budget.get(),
            WaitStrategy::Park => 0,
        };
        let mut slice_start = Instant::now();
        let mut i = 0u32;
        while i < spins {
            spin_hint();
            if let Some(r) = cond() {
                if strategy == WaitStrategy::SpinThenPark {
                    budget.hit();
                }
                return Ok(r);
            }
            i += 1;
            if i.is_multiple_of(64) {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(WaitError::TimedOut);
                }
                if now.duration_since(slice_start) >= slice {
                    slice_start = now;
                    if let Some(e) = on_slice() {
                        return Err(WaitError::Stopped(e));
                    }
                }
                if strategy == WaitStrategy::Spin {
                    i = 0;
                }
            }
        }
        if strategy == WaitStrategy::SpinThenPark {
            budget.miss();
        }
        // Park phase, in slices.
        loop {
            let max = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(slice),
                    _ => {
                        return match cond() {
                            Some(r) => Ok(r),
                            None => Err(WaitError::TimedOut),
                        };
                    }
                },
                None => slice,
            };
            if let Some(r) = self.park(max, cond) {
                return Ok(r);
            }
            if let Some(r) = cond() {
                return Ok(r);
            }
            if let Some(e) = on_slice() {
                return Err(WaitError::Stopped(e));
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn wait_flag(w: &WaitWord, f: &AtomicU32, s: WaitStrategy, b: &SpinBudget) -> bool {
        w.wait_until(
            s,
            b,
            Some(Instant::now() + Duration::from_secs(10)),
            Duration::from_millis(5),
            // Acquire: pairs with the setter's Release store.
            || (f.load(Ordering::Acquire) != 0).then_some(()),
            || None::<()>,
        )
        .is_ok()
    }

    #[test]
    fn every_strategy_is_woken_by_another_thread() {
        for s in [
            WaitStrategy::Spin,
            WaitStrategy::SpinThenPark,
            WaitStrategy::Park,
        ] {
            let w = Arc::new(WaitWord::new());
            let f = Arc::new(AtomicU32::new(0));
            let (w2, f2) = (w.clone(), f.clone());
            let h = std::thread::spawn(move || wait_flag(&w2, &f2, s, &SpinBudget::new()));
            std::thread::sleep(Duration::from_millis(20));
            f.store(1, Ordering::Release);
            w.wake_all();
            assert!(h.join().unwrap(), "{s:?}");
        }
    }

    #[test]
    fn on_slice_can_stop_a_parked_wait() {
        let w = WaitWord::new();
        let mut n = 0;
        let r = w.wait_until(
            WaitStrategy::Park,
            &SpinBudget::new(),
            None,
            Duration::from_millis(1),
            || None::<()>,
            || {
                n += 1;
                (n == 3).then_some("stop")
            },
        );
        assert_eq!(r, Err(WaitError::Stopped("stop")));
        assert_eq!(w.waiters(), 0);
    }

    #[test]
    fn the_budget_shrinks_on_misses_and_grows_on_hits() {
        let b = SpinBudget::new();
        for _ in 0..20 {
            b.miss();
        }
        assert_eq!(b.get(), SpinBudget::MIN);
        for _ in 0..20 {
            b.hit();
        }
        assert_eq!(b.get(), SpinBudget::MAX);
    }
}
