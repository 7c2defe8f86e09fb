//! Wait strategies: spin, spin-then-yield, spin-then-park on a shared futex.
//!
//! A [`ParkWord`] lives in shared memory next to the state a waiter waits for. The sleeper
//! announces itself in `parked` and re-checks its condition before `futex_wait`; the waker,
//! after publishing, runs a SeqCst fence and reads `parked` (Dekker: one of the two sees the
//! other). So the waker's common path costs one fence and one load of a line nobody writes
//! while no one sleeps: no syscall. Every park is bounded (`CHECK_EVERY`), so peer-death checks
//! and deadlines run even if a wake-up were lost to a process killed between its two steps.
//!
//! ```
//! use multiproc_ring::WaitStrategy;
//! assert_eq!(WaitStrategy::default(), WaitStrategy::SpinPark);
//! ```

use crate::facade::{AtomicU32, Ordering, fence, spin_hint};
use multiproc_sync::futex;
use std::time::{Duration, Instant};

/// How a blocked operation waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Busy-spin (lowest latency, burns a CPU). Deadlines and peer checks still run.
    Spin,
    /// Spin briefly, then `sched_yield` in a loop.
    SpinYield,
    /// Spin briefly, yield a few times, then sleep on a futex (the default).
    #[default]
    SpinPark,
    /// Sleep on the futex at once: no spinning budget.
    Park,
}

impl From<WaitStrategy> for multiproc_sync::park::WaitStrategy {
    /// The primitive's strategy closest to a ring strategy (`SpinYield` spins, then parks).
    fn from(s: WaitStrategy) -> Self {
        use multiproc_sync::park::WaitStrategy as P;
        match s {
            WaitStrategy::Spin => P::Spin,
            WaitStrategy::SpinYield | WaitStrategy::SpinPark => P::SpinThenPark,
            WaitStrategy::Park => P::Park,
        }
    }
}

impl From<multiproc_sync::park::WaitStrategy> for WaitStrategy {
    fn from(s: multiproc_sync::park::WaitStrategy) -> Self {
        use multiproc_sync::park::WaitStrategy as P;
        match s {
            P::Spin => WaitStrategy::Spin,
            P::SpinThenPark => WaitStrategy::SpinPark,
            P::Park => WaitStrategy::Park,
        }
    }
}

/// How often a blocked waiter re-checks peer liveness (and how long one futex sleep lasts at most).
pub const CHECK_EVERY: Duration = Duration::from_millis(10);
const SPINS: u32 = 200;
const YIELDS: u32 = 10;

/// A futex word and a sleeper count, placed in shared memory.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct ParkWord {
    parked: AtomicU32,
    seq: AtomicU32,
}

impl ParkWord {
    pub(crate) fn new() -> ParkWord {
        ParkWord {
            parked: AtomicU32::new(0),
            seq: AtomicU32::new(0),
        }
    }

    /// Called after publishing: wakes up to `n` sleepers if any announced themselves.
    #[inline]
    pub(crate) fn wake_if_parked(&self, n: u32) {
        // SeqCst fence: pairs with the sleeper's SeqCst fence in `park` (Dekker). Either the
        // sleeper's re-check sees what we published, or we see its `parked` announcement. With
        // Release/Acquire alone both loads could read stale values (store-load reordering) and
        // the sleeper would miss this wake-up.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) != 0 {
            self.wake_slow(n);
        }
    }

    /// Whether a sleeper has announced itself, WITHOUT the store-load fence of
    /// [`ParkWord::wake_if_parked`]: a hint for a producer that publishes lazily (a deferred
    /// batch is published at once when it sees a sleeper). A sleeper that announces itself
    /// concurrently may be missed; the caller's contract must cover that (see
    /// `Producer::push_deferred`).
    #[inline]
    pub(crate) fn has_sleepers(&self) -> bool {
        // Relaxed: a hint; no data is read on its strength.
        self.parked.load(Ordering::Relaxed) != 0
    }

    #[cold]
    pub(crate) fn wake_slow(&self, n: u32) {
        // Release: the bump is what the sleeper's futex compares; ordering of the data is
        // carried by the fence above.
        self.seq.fetch_add(1, Ordering::Release);
        futex::wake(&self.seq, n);
    }

    /// Announce, re-check with `poll`, and sleep at most `max` if still nothing.
    fn park<R>(&self, max: Duration, poll: &mut impl FnMut() -> Option<R>) -> Option<R> {
        // Relaxed is enough for the snapshot: the fences order it against the waker's bump.
        let seq = self.seq.load(Ordering::Relaxed);
        self.parked.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: partner of the waker's fence in `wake_if_parked` (see there).
        fence(Ordering::SeqCst);
        let r = poll();
        if r.is_none() {
            futex::wait(&self.seq, seq, Some(max));
        }
        self.parked.fetch_sub(1, Ordering::Relaxed);
        r
    }
}

/// What a wait loop reports besides success.
pub(crate) enum WaitEnd<E> {
    Err(E),
    TimedOut,
}

/// Waits until `poll` yields, the deadline passes, or `periodic` (run about every
/// [`CHECK_EVERY`]) reports an error.
#[inline(never)]
pub(crate) fn wait_for<R, E>(
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    park: &ParkWord,
    mut poll: impl FnMut() -> Option<Result<R, E>>,
    mut periodic: impl FnMut() -> Option<E>,
) -> Result<R, WaitEnd<E>> {
    let mut i: u32 = 0;
    let mut last_check = Instant::now();
    loop {
        if let Some(r) = poll() {
            return r.map_err(WaitEnd::Err);
        }
        i = i.saturating_add(1);
        let phase = match strategy {
            WaitStrategy::Spin => 0,
            WaitStrategy::SpinYield => u8::from(i > SPINS),
            WaitStrategy::SpinPark if i <= SPINS => 0,
            WaitStrategy::SpinPark if i <= SPINS + YIELDS => 1,
            WaitStrategy::SpinPark | WaitStrategy::Park => 2,
        };
        if phase != 0 || i.is_multiple_of(128) {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(WaitEnd::TimedOut);
            }
            if now.duration_since(last_check) >= CHECK_EVERY {
                last_check = now;
                if let Some(e) = periodic() {
                    return Err(WaitEnd::Err(e));
                }
            }
        }
        match phase {
            0 => spin_hint(),
            1 => std::thread::yield_now(),
            _ => {
                let max = match deadline {
                    Some(d) => d
                        .saturating_duration_since(Instant::now())
                        .min(CHECK_EVERY)
                        .max(Duration::from_micros(1)),
                    None => CHECK_EVERY,
                };
                if let Some(r) = park.park(max, &mut poll) {
                    return r.map_err(WaitEnd::Err);
                }
            }
        }
    }
}
