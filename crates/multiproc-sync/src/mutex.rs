//! A robust, process-shared mutex: glibc's `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED`,
//! `PTHREAD_MUTEX_ROBUST` and `PTHREAD_MUTEX_ERRORCHECK`, placed in shared memory.
//!
//! Why pthread and not our own futex word (the full reasoning is in docs/architecture.md): the
//! kernel itself walks a dying thread's robust list (registered by glibc for every thread) and
//! marks each mutex it held with `FUTEX_OWNER_DIED`, waking one waiter. That happens for every
//! death, SIGKILL included, at the moment of death, with no polling and no pid-reuse window. An
//! own design would have to poll owner liveness (pid + start time) from waiters on a timer.
//!
//! When the holder dies, the next locker gets [`LockOutcome::OwnerDied`]: it holds the lock, the
//! mutex has already been marked consistent again (so it keeps working for everyone), and the
//! caller decides whether the protected data needs repair. Relocking from the holding thread is
//! [`MutexError::Deadlock`], not a hang (error-checking type). Unlocking must happen on the locking
//! thread, so guards built on this are `!Send`.
//!
//! Fast path: a short spin that reads glibc's lock word (the first `int` of the mutex, which is
//! the owner's TID or 0) and calls `pthread_mutex_trylock` only when it reads 0; then
//! `pthread_mutex_clocklock` in 50 ms slices, which parks on the futex (slices bound a wake-up
//! lost to a woken waiter's death; see `lock_slow`). Uncontended lock + unlock is two atomic RMWs
//! plus glibc's robust-list bookkeeping, no syscall.
//!
//! ```
//! use multiproc_sync::mutex::{RobustMutex, LockOutcome};
//! let m = Box::new(std::mem::MaybeUninit::<RobustMutex>::uninit());
//! let m = Box::into_raw(m).cast::<RobustMutex>();
//! // SAFETY: fresh, aligned, exclusively owned memory.
//! unsafe { RobustMutex::init_at(m).unwrap() };
//! let m = unsafe { &*m };
//! assert_eq!(m.lock().unwrap(), LockOutcome::Acquired);
//! // SAFETY: this thread holds the lock.
//! unsafe { m.unlock() };
//! ```

use crate::facade::{AtomicI32, Ordering, spin_hint};
use std::cell::UnsafeCell;
use std::io;
use std::time::{Duration, Instant};

/// How many times `lock` polls the lock word before parking in the kernel.
const SPIN_LIMIT: u32 = 200;

/// The longest a locker sleeps in the kernel before re-trying (bounds a lost wake-up).
const PARK_SLICE: Duration = Duration::from_millis(50);

unsafe extern "C" {
    // glibc >= 2.30; libc 0.2 does not bind it. Same contract as pthread_mutex_timedlock but the
    // deadline is on `clock` (CLOCK_MONOTONIC here, immune to wall-clock jumps).
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// How a lock was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// The usual case.
    Acquired,
    /// The previous holder died holding it. The lock is now held by the caller and usable again,
    /// but the data it protects may be half-updated.
    OwnerDied,
}

/// Why a lock was not obtained.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutexError {
    /// `try_lock` found it held.
    #[error("the lock is held by another thread or process")]
    WouldBlock,
    /// The timeout elapsed.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// This thread already holds it (relocking would deadlock).
    #[error("this thread already holds the lock")]
    Deadlock,
    /// A previous holder died and the mutex was unlocked without being made consistent.
    #[error("the lock is unrecoverable (a previous owner died and it was never made consistent)")]
    NotRecoverable,
    /// Another error from pthreads.
    #[error("pthread mutex error: errno {0}")]
    Os(i32),
}

/// A robust process-shared mutex, to be placed in shared memory with [`RobustMutex::init_at`].
#[repr(C)]
pub struct RobustMutex {
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: pthread mutexes are designed to be used from many threads (and, process-shared, from
// many processes); every access goes through pthread calls or atomic loads.
unsafe impl Sync for RobustMutex {}
// SAFETY: as above; the object itself has no thread affinity (only a held lock does).
unsafe impl Send for RobustMutex {}

fn check(rc: libc::c_int, what: &'static str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::Error::from_raw_os_error(rc).kind(),
            format!("{what}: errno {rc}"),
        ))
    }
}

impl RobustMutex {
    /// Builds the mutex in place.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of a `RobustMutex`, suitably aligned, and not in use by
    /// any thread or process (no one may lock it before this returns).
    pub unsafe fn init_at(ptr: *mut RobustMutex) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is a valid out-pointer; pthread_mutexattr_init initializes it.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        check(rc, "mutexattr_init")?;
        let a = attr.as_mut_ptr();
        // SAFETY: `a` was initialized above and is destroyed below; the constants are valid.
        let set = unsafe {
            check(
                libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
                "setpshared",
            )
            .and_then(|_| {
                check(
                    libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                    "setrobust",
                )
            })
            .and_then(|_| {
                check(
                    libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK),
                    "settype",
                )
            })
            // SAFETY (inner): the caller guarantees ptr is valid and unused; UnsafeCell<T>
            // has T's layout, so the cast gives the pthread_mutex_t.
            .and_then(|_| {
                check(
                    libc::pthread_mutex_init(ptr.cast::<libc::pthread_mutex_t>(), a),
                    "mutex_init",
                )
            })
        };
        // SAFETY: `a` is initialized; destroying an attr does not affect mutexes made from it.
        unsafe { libc::pthread_mutexattr_destroy(a) };
        set
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.inner.get()
    }

    /// glibc's lock word (`__data.__lock`, the first int): 0 when free, else owner TID | flags.
    #[inline]
    fn lock_word(&self) -> &AtomicI32 {
        // SAFETY: on glibc the first field of pthread_mutex_t is the `int __lock` futex word,
        // 4-aligned; glibc itself only accesses it atomically, so an atomic load is race-free.
        unsafe { &*self.raw().cast::<AtomicI32>() }
    }

    fn outcome(rc: libc::c_int) -> Result<LockOutcome, MutexError> {
        match rc {
            0 => Ok(LockOutcome::Acquired),
            libc::EOWNERDEAD => Ok(LockOutcome::OwnerDied),
            libc::EBUSY => Err(MutexError::WouldBlock),
            libc::ETIMEDOUT => Err(MutexError::Timeout),
            libc::EDEADLK => Err(MutexError::Deadlock),
            libc::ENOTRECOVERABLE => Err(MutexError::NotRecoverable),
            e => Err(MutexError::Os(e)),
        }
    }

    /// Called with the lock held after EOWNERDEAD: mark it consistent so it keeps working.
    fn made_consistent(
        &self,
        r: Result<LockOutcome, MutexError>,
    ) -> Result<LockOutcome, MutexError> {
        if r == Ok(LockOutcome::OwnerDied) {
            // SAFETY: we hold the lock (EOWNERDEAD means the lock was acquired).
            let rc = unsafe { libc::pthread_mutex_consistent(self.raw()) };
            if rc != 0 {
                return Err(MutexError::Os(rc));
            }
        }
        r
    }

    /// Takes the lock without blocking.
    #[inline]
    pub fn try_lock(&self) -> Result<LockOutcome, MutexError> {
        // SAFETY: the mutex was initialized by init_at (contract of whoever placed it).
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw()) };
        self.made_consistent(Self::outcome(rc))
    }

    /// Takes the lock, waiting as long as it takes.
    #[inline]
    pub fn lock(&self) -> Result<LockOutcome, MutexError> {
        match self.try_lock() {
            Err(MutexError::WouldBlock) => self.lock_slow(None),
            r => r,
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockOutcome, MutexError> {
        match self.try_lock() {
            Err(MutexError::WouldBlock) => self.lock_slow(Some(Instant::now() + timeout)),
            r => r,
        }
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Result<LockOutcome, MutexError> {
        for i in 0..SPIN_LIMIT {
            // Exponential backoff (1, 2, 4, .. 32 pauses): polling less often leaves the cache
            // line with the holder, so its unlock and next critical section are not slowed by
            // our reads.
            for _ in 0..(1u32 << (i / 8).min(5)) {
                spin_hint();
            }
            // Relaxed: only a hint for when to try; trylock does the synchronizing acquire.
            if self.lock_word().load(Ordering::Relaxed) == 0 {
                match self.try_lock() {
                    Err(MutexError::WouldBlock) => {}
                    r => return r,
                }
            }
        }
        // Park in bounded slices, never indefinitely. glibc's robust unlock clears the word
        // (waiters bit included) and wakes one sleeper; if that sleeper is SIGKILLed before it
        // re-takes the lock, and someone else then takes and releases it without contention,
        // the other sleepers are never woken although the lock is free (found by the chaos
        // soak, tests/chaos.rs). A sleeper whose wake-up was lost thus retries within one slice.
        loop {
            let now = Instant::now();
            let slice_end = match deadline {
                Some(d) if d <= now => return Err(MutexError::Timeout),
                Some(d) => d.min(now + PARK_SLICE),
                None => now + PARK_SLICE,
            };
            let ts = monotonic_deadline(slice_end);
            // SAFETY: initialized mutex; ts is a valid timespec on CLOCK_MONOTONIC.
            let rc = unsafe { pthread_mutex_clocklock(self.raw(), libc::CLOCK_MONOTONIC, &ts) };
            match Self::outcome(rc) {
                Err(MutexError::Timeout) => continue,
                r => return self.made_consistent(r),
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold the lock (obtained from `lock`, `try_lock` or `lock_timeout`).
    #[inline]
    pub unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock; the error-checking type would return EPERM otherwise.
        let rc = unsafe { libc::pthread_mutex_unlock(self.raw()) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock failed");
    }

    /// Whether someone holds the lock right now (a racy snapshot, for tools).
    pub fn is_locked(&self) -> bool {
        self.lock_word().load(Ordering::Relaxed) != 0
    }
}

fn monotonic_deadline(deadline: Instant) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut sec = now
        .tv_sec
        .saturating_add(left.as_secs().min(i64::MAX as u64 / 2) as libc::time_t);
    let mut nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}
