//! A robust, process-shared mutex on one futex word, placed in shared memory.
//!
//! Layout (16 bytes, `#[repr(C)]`, any bit pattern valid):
//! * `word: u32` — the futex word: `0` when free, else the holder's thread id (< 2^22);
//! * `waiters: u32` — how many lockers are parked (so an uncontended unlock makes no syscall);
//! * `owner: u64` — the holder's packed identity (tid + thread start time, see `ident`), written
//!   right after the CAS that took `word`, cleared right before the store that frees it.
//!
//! Lock: CAS `word: 0 -> tid` (Acquire), then store `owner`. Contended: a short spin with
//! exponential backoff reading `word` (TTAS), then count yourself in `waiters` and futex-wait on
//! `word` in [`PARK_SLICE`] slices. Unlock: clear `owner`, CAS `word: tid -> 0` (SeqCst), wake one
//! parked waiter if `waiters > 0`. Uncontended lock + unlock is two CASes and two plain stores:
//! no syscall (the thread id is cached per thread and refreshed after `fork`, see `ident`).
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

/// A robust process-shared mutex, to be placed in shared memory with [`RobustMutex::init_at`].
#[repr(C)]
pub struct RobustMutex {
    word: AtomicU32,
    waiters: AtomicU32,
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
            waiters: AtomicU32::new(0),
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

    /// Records our identity after taking the word.
    #[inline]
    fn set_owner(&self, who: Locker) {
        // Release: pairs with `holder_dead`'s Acquire load, so a checker that reads our identity
        // also reads it after (not before) our CAS, never a stale owner for our tid.
        self.owner.store(who.me, Ordering::Release);
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
        (s == who.tid && self.owner.load(Ordering::Acquire) == who.me)
            .then_some(Err(MutexError::Deadlock))
    }

    /// Takes the lock over if the holder named by `s` is dead (or `s` names nobody). Returns
    /// whether it did.
    fn reclaim_dead(&self, who: Locker, s: u32, alive: &dyn Fn(u32, u64) -> bool) -> bool {
        if s == 0 {
            return false;
        }
        let id = s & ident::ID_MASK as u32;
        // Acquire: pairs with the holder's Release store of its identity (set_owner).
        let o = self.owner.load(Ordering::Acquire);
        // Our own tid in the word but not our identity beside it: a previous thread with the
        // same (reused) tid died holding it, or the word was rewritten. Not us, so not alive.
        let live = if id == who.tid {
            false
        } else {
            s == id && alive(id, o)
        };
        if live {
            return false;
        }
        // SeqCst: we become the holder (Acquire part: whatever the dead holder wrote is
        // visible to us); the CAS fails if anyone else took over or the holder unlocked.
        if self
            .word
            .compare_exchange(s, who.tid, Ordering::SeqCst, Ordering::Relaxed)
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
        for i in 0..SPIN_LIMIT {
            // Exponential backoff (1, 2, 4, .. 32 pauses): polling less often leaves the cache
            // line with the holder, so its unlock and next critical section are not slowed by
            // our reads.
            for _ in 0..(1u32 << (i / 8).min(5)) {
                spin_hint();
            }
            // Relaxed: only a hint for when to try; the CAS does the synchronizing acquire.
            if self.word.load(Ordering::Relaxed) == 0
                && self.cas_free(who, Ordering::Acquire).is_ok()
            {
                self.set_owner(who);
                return Ok(LockOutcome::Acquired);
            }
        }
        self.park(who, deadline, alive)
    }

    /// Parks in bounded slices until the lock is ours, its holder is found dead, or `deadline`.
    ///
    /// Ordering: `waiters` is incremented SeqCst before the attempt that reads `word`, and the
    /// unlocker changes `word` SeqCst before loading `waiters` SeqCst: one of the two sees the
    /// other (a store-load pattern, which needs SeqCst on both sides), so an unlocker never
    /// skips the wake of a waiter that then sleeps; the kernel's compare of `word == v` closes
    /// the gap between our attempt and the sleep. Slices bound everything else: a wake consumed
    /// by a waiter that was then killed, a `waiters` count rewritten by another process.
    fn park(
        &self,
        who: Locker,
        deadline: Option<Instant>,
        alive: &dyn Fn(u32, u64) -> bool,
    ) -> Result<LockOutcome, MutexError> {
        // SeqCst: see above (pairs with unlock's SeqCst CAS + SeqCst load of `waiters`).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            // SeqCst: the load half of the store-load pattern with `waiters`.
            let s = self.word.load(Ordering::SeqCst);
            if s == 0 {
                if self.cas_free(who, Ordering::SeqCst).is_ok() {
                    self.set_owner(who);
                    break Ok(LockOutcome::Acquired);
                }
                continue;
            }
            let slice = match deadline {
                None => PARK_SLICE,
                Some(d) => match futex::remaining(d) {
                    Some(left) => left.min(PARK_SLICE),
                    None => {
                        // One last look: a dead holder is taken over even at the deadline.
                        if self.reclaim_dead(who, s, alive) {
                            break Ok(LockOutcome::OwnerDied);
                        }
                        break Err(MutexError::Timeout);
                    }
                },
            };
            if futex::wait(&self.word, s, Some(slice)) == WaitResult::TimedOut
                && self.reclaim_dead(who, s, alive)
            {
                break Ok(LockOutcome::OwnerDied);
            }
        };
        // SeqCst: keeps the count exact for the unlockers' SeqCst loads (a stale high count
        // only costs them a wake syscall).
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if r.is_err() {
            // We may have consumed a wake meant for the next owner: pass it on.
            // SeqCst: same store-load pairing as above.
            if self.word.load(Ordering::SeqCst) == 0 && self.waiters.load(Ordering::SeqCst) > 0 {
                futex::wake(&self.word, 1);
            }
        }
        r
    }

    /// [`RobustMutex::unlock`] for `who`. Only a word naming `who.tid` is released: if another
    /// locker took the lock over meanwhile (it judged us dead, or the word was rewritten), this
    /// leaves it alone.
    #[doc(hidden)]
    #[inline]
    pub fn unlock_as(&self, who: Locker) {
        // Relaxed: the release CAS below orders this store before the word becomes 0 (a store
        // before a Release/SeqCst RMW in program order is visible to whoever acquires it).
        // Clearing it closes the window in which the next holder's tid (if reused from a dead
        // thread) would sit beside a stale identity and look dead.
        if self.owner.load(Ordering::Relaxed) == who.me {
            self.owner.store(0, Ordering::Relaxed);
        }
        // SeqCst: Release for the next owner's Acquire, and the store half of the store-load
        // pattern with `waiters` (see `park`).
        if self
            .word
            .compare_exchange(who.tid, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
            // SeqCst: the load half.
            && self.waiters.load(Ordering::SeqCst) > 0
        {
            futex::wake(&self.word, 1);
        }
    }
}
