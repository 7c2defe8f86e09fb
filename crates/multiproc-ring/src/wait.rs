//! Wait strategies: spin, spin-then-yield, spin-then-park on a shared futex.
//!
//! A `ParkWord` (multiproc-sync's `WaitWord`) lives in shared memory next to the state a
//! waiter waits for. The sleeper announces itself in `waiters` and re-checks its condition
//! before `futex_wait`; the waker, after publishing, runs a SeqCst fence and reads `waiters`
//! (Dekker: one of the two sees the other). So the waker's common path costs one fence and
//! one load of a line nobody writes while no one sleeps: no syscall. Every park is bounded (`CHECK_EVERY`), so peer-death checks
//! and deadlines run even if a wake-up were lost to a process killed between its two steps.
//!
//! ```
//! use multiproc_ring::WaitStrategy;
//! assert_eq!(WaitStrategy::default(), WaitStrategy::SpinPark);
//! ```

use crate::facade::spin_hint;
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

/// The ring's park word is the one waiting primitive of multiproc-sync (epoch + waiter count,
/// the Dekker protocol loom-tested there), so async futures register on it as on any other
/// `WaitWord` (see `multiproc_sync::notify`).
pub(crate) use multiproc_sync::park::WaitWord as ParkWord;

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
    // The time of the last `periodic` check, read lazily: a wait that ends within its first
    // spins never reads the clock (~20-25 ns per read on a VM, on the round trip's path).
    let mut last_check: Option<Instant> = None;
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
            let last = *last_check.get_or_insert(now);
            if now.duration_since(last) >= CHECK_EVERY {
                last_check = Some(now);
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
                if let Some(r) = park.park_slice(max, &mut poll) {
                    return r.map_err(WaitEnd::Err);
                }
            }
        }
    }
}
