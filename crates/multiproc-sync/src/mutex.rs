//! A robust, process-shared mutex on one futex word, placed in shared memory.
//!
//! Layout (16 bytes, `#[repr(C)]`, any bit pattern valid):
//! * `word: u32` — the futex word: `0` when free, else the holder's thread id (< 2^22), plus
//!   [`WAITERS`] (bit 31) once a locker may be parked on it (Drepper's "mutex3", as glibc's);
//! * a reserved `u32`;
//! * `owner: u64` — the holder's packed identity (tid + thread start time, see `ident`), written
//!   right after the CAS that took `word` (unless it is already there), left in place on unlock.
//!
//! Lock: CAS `word: 0 -> tid` (Acquire), then store `owner`. Contended: a short spin with
//! exponential backoff reading `word` (TTAS), then set [`WAITERS`] and futex-wait on `word` in
//! [`PARK_SLICE`] slices; a parked locker takes the lock as `tid | WAITERS` (others may still be
//! parked). Unlock: CAS `word: tid -> 0`; if the word was `tid | WAITERS`, set it
//! to 0 and wake one. So an unlock makes a wake syscall only when a locker parked since the last
//! one (not on every unlock while a woken waiter is still being scheduled, as a waiter count
//! would). Uncontended lock + unlock is two CASes and a load (plus a store when another thread held
//! it last): no syscall (the thread id
//! is cached per thread and refreshed after `fork`, see `ident`).
//!
//! Death: after every park slice that times out, a waiter checks the holder: the thread named by
//! `word` (with the start time from `owner` when `owner` names the same tid, so a reused tid is
//! not mistaken for the dead holder) must exist and not be a zombie. If it is gone — killed, or a
//! thread that exited holding a leaked guard — the waiter takes the lock over with one CAS
//! `word: dead -> tid` and reports [`LockOutcome::OwnerDied`]: it holds the lock, and decides
//! whether the protected data needs repair. `try_lock` makes the same check when it finds the lock
//! held (a syscall, but only on that contended path). A word whose id part is 0 or names no live
//! thread (a corrupted word) is taken over the same way.
//!
//! Why not glibc's robust `pthread_mutex_t` (what this crate used before; see
//! docs/architecture.md): glibc keeps the robust list *inside* the shared mutex
//! (`__list.__next/__prev`) and follows those pointers on unlock and at thread exit, so a process
//! that rewrites them makes the holder write to addresses of the attacker's choosing; it asserts
//! (aborts) on some corrupted states; and a mutex unmapped while on the robust list (a leaked
//! guard) makes the thread's next robust lock write into whatever is mapped there now. Here, no
//! pointer is stored in shared memory, every state is a valid state, and a leaked guard leaves
//! nothing behind in this process. The price is detection latency: a dead holder is noticed by
//! its waiters within one park slice, not at the moment of death.
//!
//! Relocking from the holding thread is [`MutexError::Deadlock`], not a hang. Unlocking must
//! happen on the locking thread (the CAS names its tid), so guards built on this are `!Send`.
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

use crate::facade::{AtomicU32, AtomicU64, Ordering, spin_hint};
use crate::futex::{self, WaitResult};
use crate::ident;
use std::io;
use std::time::{Duration, Instant};

/// How many times a contended `lock` polls the word before parking in the kernel.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 200;
#[cfg(loom)]
const SPIN_LIMIT: u32 = 1;

/// The futex word's "someone may be parked" bit (thread ids are below 2^22).
pub const WAITERS: u32 = 1 << 31;

/// The thread-id part of the futex word.
const TID_MASK: u32 = ident::ID_MASK as u32;

/// The longest a locker sleeps in the kernel before it re-tries and checks the holder's
/// liveness (bounds both a lost wake-up and the detection of a dead holder).
pub const PARK_SLICE: Duration = Duration::from_millis(20);

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
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
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
    /// (Kept for API stability: the futex mutex is always made consistent on take-over, so it
    /// never returns this.)
    #[error("the lock is unrecoverable (a previous owner died and it was never made consistent)")]
    NotRecoverable,
    /// An OS error (errno).
    #[error("mutex error: errno {0}")]
    Os(i32),
}

/// Who is locking: the thread id stored in the futex word and the packed identity stored beside
/// it. Public for loom models (which use fake ids); the methods without `_as` use this thread's.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locker {
    /// Thread id (< 2^22, non-zero).
    pub tid: u32,
    /// Packed identity (tid + thread start time).
    pub me: u64,
}

impl Locker {
    /// The calling thread (cached; no syscall after the first call in a thread or after fork).
    #[inline]
    pub fn current() -> Locker {
        let (tid, me) = ident::thread();
        Locker { tid, me }
    }
}

/// Who holds a [`RobustMutex`] (see [`RobustMutex::holder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holding thread's id as recorded in the lock word (0 for a corrupted word).
    pub tid: u32,
    /// Whether that thread is alive (false: the next locker takes the lock over).
    pub alive: bool,
}

/// A robust process-shared mutex, to be placed in shared memory with [`RobustMutex::init_at`].
#[repr(C)]
pub struct RobustMutex {
    word: AtomicU32,
    _reserved: AtomicU32,
    owner: AtomicU64,
}

impl Default for RobustMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobustMutex")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl RobustMutex {
    /// A free mutex (for heap use: loom models, tests).
    pub fn new() -> RobustMutex {
        RobustMutex {
            word: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            owner: AtomicU64::new(0),
        }
    }

    /// Builds the mutex in place. Never fails (the `Result` is kept for API stability).
    ///
    /// # Safety
    /// `ptr` must be valid for writes of a `RobustMutex`, suitably aligned, and not in use by
    /// any thread or process (no one may lock it before this returns).
    pub unsafe fn init_at(ptr: *mut RobustMutex) -> io::Result<()> {
        // SAFETY: the caller's contract: valid, aligned, unshared.
        unsafe { ptr.write(RobustMutex::new()) };
        Ok(())
    }

    /// Takes the lock without blocking.
    #[inline]
    pub fn try_lock(&self) -> Result<LockOutcome, MutexError> {
        self.try_lock_as(Locker::current(), &ident::holder_alive)
    }

    /// Takes the lock, waiting as long as it takes.
    #[inline]
    pub fn lock(&self) -> Result<LockOutcome, MutexError> {
        self.lock_as(Locker::current(), None, &ident::holder_alive)
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockOutcome, MutexError> {
        let deadline = Instant::now().checked_add(timeout);
        // A timeout too large for an Instant is as good as none, but keep it finite in intent:
        // the slices still run, so the call stays responsive to a dead holder.
        self.lock_as(Locker::current(), deadline, &ident::holder_alive)
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold the lock (obtained from `lock`, `try_lock` or `lock_timeout`).
    /// (Breaking this is not memory-unsafe — the word is only changed if it names this thread —
    /// but it would release a lock this thread took through another guard.)
    #[inline]
    pub unsafe fn unlock(&self) {
        self.unlock_as(Locker::current());
    }

    /// `lock`/`lock_timeout` for an already-known locker (guards keep it for their unlock).
    #[inline]
    pub(crate) fn lock_with(
        &self,
        who: Locker,
        timeout: Option<Duration>,
    ) -> Result<LockOutcome, MutexError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.lock_as(who, deadline, &ident::holder_alive)
    }

    /// `try_lock` for an already-known locker.
    #[inline]
    pub(crate) fn try_lock_with(&self, who: Locker) -> Result<LockOutcome, MutexError> {
        self.try_lock_as(who, &ident::holder_alive)
    }

    /// Who holds the lock right now, as a racy snapshot for tools: the holder's thread id and
    /// whether that thread is alive (a dead holder's lock is taken over by the next locker).
    /// `None` when free.
    pub fn holder(&self) -> Option<Holder> {
        // Relaxed: a snapshot for display only.
        let s = self.word.load(Ordering::Relaxed);
        if s == 0 {
            return None;
        }
        let tid = s & TID_MASK;
        // Acquire: pairs with set_owner's Release, as in reclaim_dead.
        let o = self.owner.load(Ordering::Acquire);
        let alive = tid != 0 && s & !(TID_MASK | WAITERS) == 0 && ident::holder_alive(tid, o);
        Some(Holder { tid, alive })
    }

    /// Whether someone holds the lock right now (a racy snapshot, for tools).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// The first CAS: `0 -> tid`.
    #[inline]
    fn cas_free(&self, who: Locker, success: Ordering) -> Result<u32, u32> {
        // Acquire/SeqCst on success: pairs with the unlocking CAS (Release part of its SeqCst),
        // so the previous critical section happens-before ours. Failure: Relaxed (a hint only).
        self.word
            .compare_exchange(0, who.tid, success, Ordering::Relaxed)
    }

    /// Records our identity after taking the word (a plain load when it is already ours, as when
    /// one thread locks in a loop: no second store into the line while other lockers read it).
    #[inline]
    fn set_owner(&self, who: Locker) {
        // Relaxed load: only compared with our own identity.
        if self.owner.load(Ordering::Relaxed) != who.me {
            // Release: pairs with `reclaim_dead`'s Acquire load, so a checker that reads our
            // identity also reads it after (not before) our CAS.
            self.owner.store(who.me, Ordering::Release);
        }
    }

    /// [`RobustMutex::try_lock`] for `who`, with `alive(tid, owner)` as the liveness check.
    #[doc(hidden)]
    #[inline]
    pub fn try_lock_as(
        &self,
        who: Locker,
        alive: &dyn Fn(u32, u64) -> bool,
    ) -> Result<LockOutcome, MutexError> {
        match self.cas_free(who, Ordering::Acquire) {
            Ok(_) => {
                self.set_owner(who);
                Ok(LockOutcome::Acquired)
            }
            Err(s) => self.try_contended(who, s, alive),
        }
    }

    #[cold]
    fn try_contended(
        &self,
        who: Locker,
        s: u32,
        alive: &dyn Fn(u32, u64) -> bool,
    ) -> Result<LockOutcome, MutexError> {
        if let Some(r) = self.held_by_me(who, s) {
            return r;
        }
        if self.reclaim_dead(who, s, alive) {
            return Ok(LockOutcome::OwnerDied);
        }
        Err(MutexError::WouldBlock)
    }

    /// `Some(Err(Deadlock))` if `s` says this very thread holds the lock.
    fn held_by_me(&self, who: Locker, s: u32) -> Option<Result<LockOutcome, MutexError>> {
        // Acquire: pairs with set_owner's Release (only relevant for other threads' stores;
        // our own are in program order).
        (s & !WAITERS == who.tid && self.owner.load(Ordering::Acquire) == who.me)
            .then_some(Err(MutexError::Deadlock))
    }

    /// Takes the lock over if the holder named by `s` is dead (or `s` names nobody). Returns
    /// whether it did.
    fn reclaim_dead(&self, who: Locker, s: u32, alive: &dyn Fn(u32, u64) -> bool) -> bool {
        if s == 0 {
            return false;
        }
        let id = s & TID_MASK;
        // Acquire: pairs with the holder's Release store of its identity (set_owner).
        let o = self.owner.load(Ordering::Acquire);
        // Our own tid in the word but not our identity beside it: a previous thread with the
        // same (reused) tid died holding it, or the word was rewritten. Not us, so not alive.
        // Bits outside the tid and WAITERS: a corrupted word, held by nobody.
        let live = if id == who.tid {
            false
        } else {
            s & !(TID_MASK | WAITERS) == 0 && alive(id, o)
        };
        if live {
            return false;
        }
        // The identity may be stale: a new holder whose tid was reused from a dead thread is
        // between its CAS and its identity store. The liveness check took microseconds (a
        // `/proc` read), that store takes nanoseconds: if the identity changed meanwhile, the
        // holder is a new one; look again next slice.
        // Acquire: as above.
        if self.owner.load(Ordering::Acquire) != o {
            return false;
        }
        // SeqCst: we become the holder (Acquire part: whatever the dead holder wrote is
        // visible to us); the CAS fails if anyone else took over or the holder unlocked.
        // WAITERS is kept: lockers may be parked.
        if self
            .word
            .compare_exchange(s, who.tid | WAITERS, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.set_owner(who);
            true
        } else {
            false
        }
    }

    /// [`RobustMutex::lock`] / [`RobustMutex::lock_timeout`] for `who` (deadline None: forever).
    #[doc(hidden)]
    #[inline]
    pub fn lock_as(
        &self,
        who: Locker,
        deadline: Option<Instant>,
        alive: &dyn Fn(u32, u64) -> bool,
    ) -> Result<LockOutcome, MutexError> {
        match self.cas_free(who, Ordering::Acquire) {
            Ok(_) => {
                self.set_owner(who);
                Ok(LockOutcome::Acquired)
            }
            Err(s) => self.lock_slow(who, s, deadline, alive),
        }
    }

    #[cold]
    fn lock_slow(
        &self,
        who: Locker,
        s: u32,
        deadline: Option<Instant>,
        alive: &dyn Fn(u32, u64) -> bool,
    ) -> Result<LockOutcome, MutexError> {
        if let Some(r) = self.held_by_me(who, s) {
            return r;
        }
        if self.spin(who, who.tid) {
            return Ok(LockOutcome::Acquired);
        }
        let r = loop {
            match self.park_once(who, deadline, alive) {
                Some(r) => break r,
                None => {
                    // Woken (or a slice passed): take the lock as `tid | WAITERS`, since other
                    // lockers may still be parked and our unlock must wake one of them
                    // (Drepper's "mutex3", as glibc's).
                    // Relaxed: a hint; the CAS decides. Acquire: pairs with the unlocking CAS.
                    if self.word.load(Ordering::Relaxed) == 0
                        && self
                            .word
                            .compare_exchange(
                                0,
                                who.tid | WAITERS,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        self.set_owner(who);
                        break Ok(LockOutcome::Acquired);
                    }
                }
            }
        };
        if r.is_err() && self.word.load(Ordering::Relaxed) == 0 {
            // We may have consumed the wake of an unlock that found WAITERS set, then left:
            // pass it on (a spare syscall at worst, on a path that already timed out).
            futex::wake(&self.word, 1);
        }
        r
    }

    /// Polls the word with exponential backoff (1, 2, 4, .. 32 pauses), taking the lock as `tag`
    /// when it reads 0. Polling less often leaves the cache line with the holder, so its unlock
    /// and next critical section are not slowed by our reads. Returns whether it took the lock.
    /// Only before the first park: a woken locker tries once and parks again (as glibc's), so
    /// it does not pull the line away from a holder that re-takes the lock in a loop (measured:
    /// spinning again after each wake-up cost `value_lock_incr` about 10%).
    fn spin(&self, who: Locker, tag: u32) -> bool {
        for i in 0..SPIN_LIMIT {
            for _ in 0..(1u32 << (i / 8).min(5)) {
                spin_hint();
            }
            // Relaxed: only a hint for when to try; the CAS does the synchronizing acquire.
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    // Acquire: pairs with the unlocking CAS (Release).
                    .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.set_owner(who);
                return true;
            }
        }
        false
    }

    /// One bounded park: `Some(result)` when done (taken, taken over from a dead holder, or
    /// timed out), `None` to spin and park again.
    ///
    /// A parker first makes sure [`WAITERS`] is set in the word it sleeps on (CAS `s -> s |
    /// WAITERS`), so the holder's unlock sees it and wakes one; the kernel's compare of
    /// `word == s | WAITERS` closes the gap between that CAS and the sleep (an unlock in
    /// between changes the word, and the wait returns at once). Slices bound everything else: a
    /// wake consumed by a waiter that was then killed, a word rewritten by another process.
    fn park_once(
        &self,
        who: Locker,
        deadline: Option<Instant>,
        alive: &dyn Fn(u32, u64) -> bool,
    ) -> Option<Result<LockOutcome, MutexError>> {
        // Relaxed: a hint; every decision below is a CAS.
        let s = self.word.load(Ordering::Relaxed);
        if s == 0 {
            return None;
        }
        let slice = match deadline {
            None => PARK_SLICE,
            Some(d) => match futex::remaining(d) {
                Some(left) => left.min(PARK_SLICE),
                None => {
                    // One last look: a dead holder is taken over even at the deadline.
                    if self.reclaim_dead(who, s, alive) {
                        return Some(Ok(LockOutcome::OwnerDied));
                    }
                    return Some(Err(MutexError::Timeout));
                }
            },
        };
        // Relaxed: setting the bit publishes nothing; the holder's unlock reads it with its
        // RMW, which sees the latest value in the word's modification order.
        if s & WAITERS == 0
            && self
                .word
                .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let s = s | WAITERS;
        if futex::wait(&self.word, s, Some(slice)) == WaitResult::TimedOut
            && self.reclaim_dead(who, s, alive)
        {
            return Some(Ok(LockOutcome::OwnerDied));
        }
        None
    }

    /// [`RobustMutex::unlock`] for `who`. Only a word naming `who.tid` is released: if another
    /// locker took the lock over meanwhile (it judged us dead, or the word was rewritten), this
    /// leaves it alone.
    #[doc(hidden)]
    #[inline]
    pub fn unlock_as(&self, who: Locker) {
        // The identity stays: a later holder overwrites it (see `set_owner`), and a checker
        // that reads it beside another tid judges by that tid (see `reclaim_dead`).
        // Release: the next owner's Acquire CAS sees our critical section.
        match self
            .word
            .compare_exchange(who.tid, 0, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => {}
            Err(s) => self.unlock_slow(who, s),
        }
    }

    #[cold]
    fn unlock_slow(&self, who: Locker, mut s: u32) {
        while s == who.tid | WAITERS {
            // Release: as in unlock_as.
            match self
                .word
                .compare_exchange(s, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    futex::wake(&self.word, 1);
                    return;
                }
                Err(x) => s = x,
            }
        }
        if s == who.tid {
            // The WAITERS bit was cleared by another process meanwhile (only a rewrite does
            // that): release normally; parked lockers retry within a slice.
            // Release: as in unlock_as.
            let _ = self
                .word
                .compare_exchange(s, 0, Ordering::Release, Ordering::Relaxed);
        }
    }
}
