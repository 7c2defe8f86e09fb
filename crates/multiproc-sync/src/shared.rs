//! The crate's glue to [`multiproc_shm::Shared`] (every object here keeps its memory in a
//! `Shared<Layout>`), plus the bounded blocking loop the primitives use.
//!
//! A layout is written in place by the creator (inside `Shared::create`'s `init`, before the
//! segment is marked Ready); openers get kind, type fingerprint and size checked by the segment
//! layer, then the layout's own `validate`, which returns the geometry the object uses locally.

use crate::facade::{AtomicU32, Ordering, spin_hint};
use crate::futex::{self, WaitResult};
use multiproc_shm::{Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint};
use std::time::{Duration, Instant};

/// The fingerprint a layout-only object records: the layout type itself.
fn fp<L: SharedLayout>() -> TypeFingerprint {
    TypeFingerprint::of::<L>()
}

/// Creates an anonymous (memfd, `name` None) or named segment holding `value` (no tail).
pub(crate) fn create<L: SharedLayout>(name: Option<&str>, value: L) -> Result<Shared<L>, ShmError> {
    Shared::<L>::create(name, fp::<L>(), 0, |p, _| {
        // SAFETY: `p` is valid for writing one `L`, aligned, and unseen by others before Ready.
        unsafe { p.as_ptr().write(value) };
        Ok(())
    })
}

/// Opens a named layout-only object.
pub(crate) fn open_named<L: SharedLayout>(name: &str) -> Result<Shared<L>, ShmError> {
    Shared::open_named(name, fp::<L>())
}

/// Opens a layout-only object from a handle.
pub(crate) fn open_handle<L: SharedLayout>(h: &SegmentHandle) -> Result<Shared<L>, ShmError> {
    Shared::open_handle(h, fp::<L>())
}

/// The segment of an object this crate made: always segment-backed (the heap backing is only
/// used by tests of the algorithms, which use the layouts directly, never the objects).
pub(crate) fn segment_of<L: SharedLayout>(s: &Shared<L>) -> &Segment {
    s.segment()
        .expect("objects of multiproc-sync always live in a segment")
}

/// How another process reaches an object of this crate.
pub(crate) fn handle_of<L: SharedLayout>(s: &Shared<L>) -> SegmentHandle {
    segment_of(s).handle()
}

/// Implements serde for a handle type with a `shm: Shared<_>` field and a
/// `from_shm(Shared<_>) -> Self` constructor.
macro_rules! serde_as_handle {
    ($ty:ty, $layout:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&$crate::shared::handle_of(&self.shm), s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let h = <multiproc_shm::SegmentHandle as serde::Deserialize>::deserialize(d)?;
                let shm = $crate::shared::open_handle::<$layout>(&h)
                    .map_err(<D::Error as serde::de::Error>::custom)?;
                Ok(<$ty>::from_shm(shm))
            }
        }
    };
}
pub(crate) use serde_as_handle;

/// Spins before parking (iterations of a pause hint).
#[cfg(not(loom))]
pub(crate) const SPIN: u32 = 200;
#[cfg(loom)]
pub(crate) const SPIN: u32 = 1;

/// How long a parked waiter sleeps before it checks for dead holders.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// How long a waiter that depends on nobody's identity (Event, Condition) sleeps before it
/// re-checks its word anyway: covers a waker killed between its store and its `FUTEX_WAKE`.
pub(crate) const LOST_WAKE_TICK: Duration = Duration::from_millis(100);

/// Why a blocking loop ended without success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The deadline passed.
    Timeout,
}

/// The blocking loop every primitive uses.
///
/// `attempt` either succeeds (`Ok`) or returns the futex word value to sleep on (`Err(v)`).
/// First it spins [`SPIN`] times; then it registers in `waiters` (so releasers know to wake) and
/// parks on `word` while it still holds `v`, at most `tick` at a time (None: no tick), calling
/// `on_tick` after every timed-out park (death checks; it may succeed on its own). On `deadline`
/// it gives up after one last attempt.
///
/// Ordering: `waiters` is incremented SeqCst before the attempt that reads the state, and
/// releasers change the state SeqCst before loading `waiters` SeqCst: one of the two sees the
/// other (a store-load pattern, which needs SeqCst on both sides), so a releaser never misses a
/// waiter that then sleeps forever. The kernel's compare of `word == v` closes the remaining gap
/// between the attempt and the sleep.
#[inline]
pub(crate) fn block_on<R>(
    word: &AtomicU32,
    waiters: &AtomicU32,
    deadline: Option<Instant>,
    tick: Option<Duration>,
    mut attempt: impl FnMut() -> Result<R, u32>,
    mut on_tick: impl FnMut() -> Option<R>,
) -> Result<R, Stop> {
    for _ in 0..SPIN {
        match attempt() {
            Ok(r) => return Ok(r),
            Err(_) => spin_hint(),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    block_slow(word, waiters, deadline, tick, &mut attempt, &mut on_tick)
}

/// [`block_on`] without its spin phase (park-only waits).
#[cold]
pub(crate) fn block_slow<R>(
    word: &AtomicU32,
    waiters: &AtomicU32,
    deadline: Option<Instant>,
    tick: Option<Duration>,
    attempt: &mut impl FnMut() -> Result<R, u32>,
    on_tick: &mut impl FnMut() -> Option<R>,
) -> Result<R, Stop> {
    // SeqCst: see the function docs (pairs with the releaser's SeqCst state change + load).
    waiters.fetch_add(1, Ordering::SeqCst);
    let r = loop {
        let v = match attempt() {
            Ok(r) => break Ok(r),
            Err(v) => v,
        };
        let left = match deadline {
            Some(d) => match futex::remaining(d) {
                Some(left) => Some(left),
                None => {
                    if let Some(r) = on_tick() {
                        break Ok(r);
                    }
                    break Err(Stop::Timeout);
                }
            },
            None => None,
        };
        let t = match (left, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if futex::wait(word, v, t) == WaitResult::TimedOut
            && let Some(r) = on_tick()
        {
            break Ok(r);
        }
    };
    // SeqCst: keeps the count exact for the releasers' SeqCst loads (a stale high count only
    // costs them a wake syscall).
    waiters.fetch_sub(1, Ordering::SeqCst);
    r
}

/// The deadline `d` from now; `None` (no deadline) when that overflows (multiproc-shm's rule).
pub(crate) use multiproc_shm::deadline::after as deadline_after;
