//! A typed view of a segment whose payload is one `#[repr(C)]` struct of atomics, shared by all
//! the primitives of this crate, plus the bounded blocking loop they use.
//!
//! The struct is written in place by the creator (inside `Segment::create_*`'s `init`, before
//! the segment is marked Ready); openers validate kind, type fingerprint and exact size, then
//! call the type's own `validate` on fields that come from shared memory.

use crate::facade::{AtomicU32, Ordering, spin_hint};
use crate::futex::{self, WaitResult};
use multiproc_shm::{
    Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, ShmError, TypeFingerprint,
};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// A shared struct living in a segment.
pub(crate) trait SharedLayout: Sized + 'static {
    /// The segment kind.
    const KIND: ObjectKind;
    /// Checks fields read from shared memory after opening.
    fn validate(&self) -> Result<(), ShmError> {
        Ok(())
    }
}

/// A segment holding one `T`.
pub(crate) struct Shm<T: SharedLayout> {
    seg: Segment,
    ptr: NonNull<T>,
    _t: PhantomData<T>,
}

impl<T: SharedLayout> Clone for Shm<T> {
    fn clone(&self) -> Self {
        Shm {
            seg: self.seg.clone(),
            ptr: self.ptr,
            _t: PhantomData,
        }
    }
}

// SAFETY: `T` is made of atomics only (every SharedLayout implementor), so shared access from
// several threads is what it is built for; the segment handle itself is Send + Sync.
unsafe impl<T: SharedLayout> Send for Shm<T> {}
// SAFETY: as above.
unsafe impl<T: SharedLayout> Sync for Shm<T> {}

fn spec<T: SharedLayout>() -> SegmentSpec {
    SegmentSpec::new(
        T::KIND,
        TypeFingerprint::of::<T>(),
        std::mem::size_of::<T>(),
        std::mem::align_of::<T>(),
    )
}

fn expect<T: SharedLayout>() -> Expect {
    Expect::new(T::KIND, TypeFingerprint::of::<T>()).payload_size(std::mem::size_of::<T>() as u64)
}

impl<T: SharedLayout> Shm<T> {
    /// Creates an anonymous (memfd) segment, or a named one, holding `value`.
    pub(crate) fn create(name: Option<&str>, value: T) -> Result<Self, ShmError> {
        let init = |p: NonNull<u8>, len: usize| {
            debug_assert!(len >= std::mem::size_of::<T>());
            // SAFETY: the payload is `size_of::<T>()` bytes, 256-byte aligned (>= align_of::<T>()),
            // and nobody else can see it before the segment is marked Ready.
            unsafe { p.cast::<T>().as_ptr().write(value) };
            Ok(())
        };
        let seg = match name {
            None => Segment::create_anonymous(&spec::<T>(), init)?,
            Some(n) => Segment::create_named(n, &spec::<T>(), init)?,
        };
        Ok(Self::wrap(seg))
    }

    fn wrap(seg: Segment) -> Self {
        let ptr = seg.payload_ptr().cast::<T>();
        Shm {
            seg,
            ptr,
            _t: PhantomData,
        }
    }

    fn checked(seg: Segment) -> Result<Self, ShmError> {
        let s = Self::wrap(seg);
        s.get().validate()?;
        Ok(s)
    }

    /// Opens a named segment.
    pub(crate) fn open_named(name: &str) -> Result<Self, ShmError> {
        Self::checked(Segment::open_named(name, &expect::<T>())?)
    }

    /// Opens from a handle.
    pub(crate) fn open_handle(h: &SegmentHandle) -> Result<Self, ShmError> {
        Self::checked(Segment::open_handle(h, &expect::<T>())?)
    }

    /// The shared struct.
    #[inline]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: the segment was validated for kind, fingerprint and exact size, the mapping
        // lives as long as `self.seg`, and `T` holds only atomics and plain read-only integers,
        // so a shared reference is sound even while other processes mutate it through atomics.
        unsafe { self.ptr.as_ref() }
    }

    /// How another process reaches it.
    pub(crate) fn handle(&self) -> SegmentHandle {
        self.seg.handle()
    }
}

/// Implements Clone-free serde for a handle type with a `shm: Shm<_>` field and a
/// `from_shm(Shm<_>) -> Self` constructor.
macro_rules! serde_as_handle {
    ($ty:ty, $layout:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.shm.handle(), s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let h = <multiproc_shm::SegmentHandle as serde::Deserialize>::deserialize(d)?;
                let shm = $crate::shared::Shm::<$layout>::open_handle(&h)
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

#[cold]
fn block_slow<R>(
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

/// `Some(now + d)`, saturating far in the future.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now()
        .checked_add(d)
        .or(Some(Instant::now() + Duration::from_secs(86400 * 365)))
}
