//! `Lock`: a process-shared binary semaphore on one futex word, releasable by any process.
//!
//! Python's `multiprocessing.Lock` is a semaphore of value 1, not a mutex: any process may
//! release it, and releasing an unheld lock is an error. So this is not a pthread mutex.
//!
//! Algorithm (one `u32` futex word `state` plus a waiter count):
//! * `0` = free; `ANON` (bit 31) = held through [`Lock::acquire`] (nobody in particular owns it);
//!   `pid` (< 2^22) = held through a guard by process `pid`, whose full identity
//!   (pid + start time) is in the side word `holder`.
//! * Acquire: CAS `0 -> tag`; on failure spin [`SPIN`](crate::shared) times, then count
//!   yourself in `waiters` and futex-wait on `state`, 20 ms at a time.
//! * Release: CAS `tag -> 0`, then wake one waiter only if `waiters > 0` (no syscall when
//!   uncontended).
//! * Death: after each 20 ms park a waiter checks whether a guard holder (`state` = pid) is
//!   dead (pid + start time, zombies count as dead) and, if so, takes the lock over with one
//!   CAS; [`Lock::lock`] then releases it and returns `Err(LockError::OwnerDied)`, and
//!   [`Lock::lock_recover`] returns `(guard, true)`. A lock taken with `acquire()` is
//!   never reclaimed: it may legitimately be released by another process later (hand-off).
//!
//! ```
//! use multiproc_sync::Lock;
//! let lock = Lock::new().unwrap();
//! assert!(lock.acquire(false));
//! assert!(!lock.try_acquire());
//! lock.release().unwrap();
//! assert!(lock.release().is_err()); // releasing an unheld lock
//! {
//!     let _g = lock.lock().unwrap(); // Err(OwnerDied) if the last holder died: see lock_recover
//! }
//! assert!(lock.try_acquire());
//! ```

use crate::arena::{Arena, Obj, SlotHandle, serde_as_object};
use crate::error::CreateError;
use crate::error::{LockError, LockResult, RecoverResult, refuse_owner_died};
use crate::facade::{AtomicU32, AtomicU64, Ordering};
use crate::futex;
use crate::ident;
use crate::mutex::MutexError;
use crate::shared::{TICK, block_on, deadline_after};
use multiproc_shm::{
    KeepAlive, ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError,
};
use std::time::{Duration, Instant};

/// `state` value of a lock held through `acquire()`.
const ANON: u32 = 1 << 31;

/// Errors of [`Lock::release`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LockReleaseError {
    /// The lock was not held (Python: "semaphore or lock released too many times").
    #[error("release of an unheld lock")]
    ReleaseUnheld,
}

/// The shared state of a [`Lock`] (public for loom models; use [`Lock`]).
#[doc(hidden)]
#[repr(C)]
pub struct LockState {
    state: AtomicU32,
    waiters: AtomicU32,
    holder: AtomicU64,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern is a valid state; a corrupted one gives
// errors or timeouts, never UB), align 8 <= 256, no Drop. No field sizes or indexes anything.
unsafe impl SharedLayout for LockState {
    const KIND: ObjectKind = ObjectKind::Lock;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
        Ok(())
    }
}

impl Default for LockState {
    fn default() -> Self {
        Self::new()
    }
}

/// How a lock is held (for Condition's release/restore).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockMode {
    Anon,
    Tagged,
}

impl LockState {
    /// A free lock.
    pub fn new() -> Self {
        LockState {
            state: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            holder: AtomicU64::new(0),
        }
    }

    /// One CAS `0 -> tag`.
    #[inline]
    fn try_take(&self, tag: u32) -> Result<(), u32> {
        // SeqCst: the success side is the Acquire partner of the releaser's CAS to 0 (the
        // critical section before it happens-before ours); the failure load must be SeqCst
        // because it is the load half of the store-load pattern with `waiters` (see block_on).
        self.state
            .compare_exchange(0, tag, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
    }

    /// Takes the lock over from a dead guard holder. Returns whether it did.
    fn reclaim_dead(&self, tag: u32) -> bool {
        // Relaxed is enough for the probe: the CAS below decides.
        let s = self.state.load(Ordering::Relaxed);
        if s == 0 || s & ANON != 0 {
            return false;
        }
        // Acquire: pairs with the holder's Release store of its identity.
        let h = self.holder.load(Ordering::Acquire);
        if ident::holder_alive(s, h) {
            return false;
        }
        // SeqCst: as in try_take (we become the holder).
        self.state
            .compare_exchange(s, tag, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn acquire_with(&self, tag: u32, deadline: Option<Instant>) -> Option<bool> {
        if self.try_take(tag).is_ok() {
            return Some(false);
        }
        self.acquire_slow(tag, deadline)
    }

    #[cold]
    fn acquire_slow(&self, tag: u32, deadline: Option<Instant>) -> Option<bool> {
        let r = block_on(
            &self.state,
            &self.waiters,
            deadline,
            Some(TICK),
            || self.try_take(tag).map(|_| false),
            || self.reclaim_dead(tag).then_some(true),
        );
        match r {
            Ok(died) => Some(died),
            Err(_) => {
                self.pass_on_wake();
                None
            }
        }
    }

    /// A waiter leaving on timeout may have consumed a wake meant for the lock's next owner.
    fn pass_on_wake(&self) {
        // SeqCst: same store-load pairing as block_on's exit.
        if self.state.load(Ordering::SeqCst) == 0 && self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.state, 1);
        }
    }

    /// Python `acquire`: anonymous hold. `deadline` None = forever.
    pub fn acquire_anon(&self, deadline: Option<Instant>) -> bool {
        self.acquire_with(ANON, deadline).is_some()
    }

    /// Non-blocking anonymous acquire.
    pub fn try_acquire_anon(&self) -> bool {
        self.try_take(ANON).is_ok()
    }

    /// Guard acquire by process `pid` whose packed identity is `me`. Returns Some(owner_died).
    pub fn acquire_tagged(&self, pid: u32, me: u64, deadline: Option<Instant>) -> Option<bool> {
        let r = self.acquire_with(pid, deadline)?;
        // Release: pairs with reclaim_dead's Acquire load; a reclaimer that sees our pid in
        // `state` and this word sees our full identity.
        self.holder.store(me, Ordering::Release);
        Some(r)
    }

    /// Non-blocking guard acquire.
    pub fn try_acquire_tagged(&self, pid: u32, me: u64) -> bool {
        if self.try_take(pid).is_ok() {
            // Release: as in acquire_tagged.
            self.holder.store(me, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Python `release`: whoever holds it.
    pub fn release(&self) -> Result<(), LockReleaseError> {
        // Relaxed probe; the CAS decides.
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s == 0 {
                return Err(LockReleaseError::ReleaseUnheld);
            }
            // SeqCst: Release for the next owner's Acquire, and the store half of the
            // store-load pattern with `waiters` below.
            match self
                .state
                .compare_exchange(s, 0, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(v) => s = v,
            }
        }
        self.wake_one();
        Ok(())
    }

    /// Guard release: only if still held by `pid`.
    pub fn release_tagged(&self, pid: u32) -> bool {
        // SeqCst: as in release.
        let ok = self
            .state
            .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.wake_one();
        }
        ok
    }

    #[inline]
    fn wake_one(&self) {
        // SeqCst: load half of the store-load pattern (see block_on).
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.state, 1);
        }
    }

    /// Whether anyone holds it.
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn mode(&self) -> Option<LockMode> {
        match self.state.load(Ordering::Relaxed) {
            0 => None,
            ANON => Some(LockMode::Anon),
            _ => Some(LockMode::Tagged),
        }
    }
}

/// A process-shared lock (Python's `multiprocessing.Lock`). Clone = another handle to the same
/// lock; serializes as its segment handle.
#[derive(Clone)]
pub struct Lock {
    obj: Obj<LockState>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

serde_as_object!(Lock, LockState);

impl Lock {
    fn from_shm(shm: Shared<LockState>) -> Self {
        Self::from_obj(Obj::own(shm))
    }

    fn from_obj(obj: Obj<LockState>) -> Self {
        Lock { obj }
    }

    /// A new free lock in a slot of `arena` (one fd and mapping per arena segment, not per object;
    /// the slot is padded to at least 64 bytes so two hot futex words never share a cache line).
    /// See [`crate::arena`] for when the slot is freed.
    pub fn new_in(arena: &Arena) -> Result<Lock, CreateError> {
        Ok(Lock::from_obj(Obj::new_in(arena, 64, LockState::new())?))
    }

    /// Opens an arena lock's handle ([`ShmError::StaleHandle`] if it was freed, or of another
    /// kind).
    pub fn open_slot(handle: &SlotHandle) -> Result<Lock, ShmError> {
        Ok(Lock::from_obj(Obj::open_slot(handle)?))
    }

    /// The arena handle of an arena lock (`None` for one with its own segment).
    pub fn slot_handle(&self) -> Option<SlotHandle> {
        self.obj.slot_handle()
    }

    /// A new, free lock in a slot of this process's arena ([`crate::Arena::global`]): one fd and
    /// mapping per arena segment, not per object, and a 64-byte slot, so two hot futex words
    /// never share a cache line. Inherited by forked children (each holds the slot from the fork
    /// on); spawned children get it by serializing it. An arena lock that cannot be taken maps
    /// to `ShmError::Os { op: "arena lock", .. }`. `handle()`/`segment()` then name the whole
    /// arena segment: use `slot_handle()` or serde to reach the object, or
    /// [`Lock::new_segment`] for a segment of its own.
    pub fn new() -> Result<Lock, ShmError> {
        Ok(Lock::from_obj(Obj::new_default(LockState::new())?))
    }

    /// A new, free lock in an anonymous segment of its own (one memfd and mapping): what
    /// [`Lock::new`] did before arenas. [`Lock::segment`] is then this lock's alone.
    pub fn new_segment() -> Result<Lock, ShmError> {
        Ok(Lock::from_shm(crate::shared::create(
            None,
            LockState::new(),
        )?))
    }

    /// A new lock in `/dev/shm/multiproc.NAME`, for unrelated processes to [`Lock::open_named`].
    pub fn create_named(name: &str) -> Result<Lock, ShmError> {
        Ok(Lock::from_shm(crate::shared::create(
            Some(name),
            LockState::new(),
        )?))
    }

    /// Opens a named lock.
    pub fn open_named(name: &str) -> Result<Lock, ShmError> {
        Ok(Lock::from_shm(crate::shared::open_named(name)?))
    }

    /// Opens the lock a handle names (checking kind, layout and geometry).
    pub fn open_handle(handle: &SegmentHandle) -> Result<Lock, ShmError> {
        Ok(Lock::from_shm(crate::shared::open_handle(handle)?))
    }

    /// How another process reaches this lock.
    pub fn handle(&self) -> SegmentHandle {
        self.obj.segment().handle()
    }

    /// The segment holding the shared state (for tools and fuzzing: its bytes are what other
    /// processes share).
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }

    pub(crate) fn state(&self) -> &LockState {
        self.obj.get()
    }

    /// Python `acquire(block)`: with `block` false, returns at once. Not recorded: if the
    /// caller dies, the lock stays held (use [`Lock::lock`] for death safety).
    pub fn acquire(&self, block: bool) -> bool {
        if block {
            self.state().acquire_anon(None)
        } else {
            self.try_acquire()
        }
    }

    /// Python `acquire(True, timeout)`: false if not acquired within `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.state().acquire_anon(deadline_after(timeout))
    }

    /// Python `acquire(False)`.
    pub fn try_acquire(&self) -> bool {
        self.state().try_acquire_anon()
    }

    /// Python `release`: any process may release; an unheld lock is an error.
    pub fn release(&self) -> Result<(), LockReleaseError> {
        self.state().release()
    }

    /// Whether the lock is held by anyone.
    pub fn is_locked(&self) -> bool {
        self.state().is_locked()
    }

    /// Who holds the lock through a guard ([`Lock::lock`]): its pid (in `tid`) and whether that
    /// process is alive (false: the next locker takes the lock over). `None` when the lock is
    /// free or held through [`Lock::acquire`] (which records no owner). A snapshot, for tools.
    pub fn holder(&self) -> Option<crate::mutex::Holder> {
        let st = self.state();
        // Relaxed: a snapshot for display only.
        let s = st.state.load(Ordering::Relaxed);
        if s == 0 || s & ANON != 0 {
            return None;
        }
        // Acquire: pairs with the holder's Release store of its identity (as in take_over_dead).
        let h = st.holder.load(Ordering::Acquire);
        Some(crate::mutex::Holder {
            tid: s,
            alive: ident::holder_alive(s, h),
        })
    }

    /// Blocks until acquired; the guard releases on drop. If the previous guard holder died
    /// holding the lock, this takes it over, releases it and returns
    /// `Err(LockError::OwnerDied)` (what it protects may be half-updated; take it with
    /// [`Lock::lock_recover`] to repair that).
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        refuse_owner_died(self.lock_deadline(None))
    }

    /// [`Lock::lock`] giving up after `timeout` (`Err(LockError::Failed(MutexError::Timeout))`).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
        refuse_owner_died(self.lock_deadline(deadline_after(timeout)))
    }

    /// Blocks until acquired, also from a dead holder: the guard and whether the previous guard
    /// holder died holding the lock. Never `Err(OwnerDied)`.
    pub fn lock_recover(&self) -> RecoverResult<LockGuard<'_>> {
        self.lock_deadline(None)
    }

    /// [`Lock::lock_recover`] giving up after `timeout`.
    pub fn lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<LockGuard<'_>> {
        self.lock_deadline(deadline_after(timeout))
    }

    /// [`Lock::lock`] without blocking (`Err(LockError::Failed(MutexError::WouldBlock))`).
    pub fn try_lock(&self) -> LockResult<LockGuard<'_>> {
        let (pid, me) = ident::process();
        if self.state().try_acquire_tagged(pid, me) {
            Ok(self.guard(pid))
        } else {
            Err(LockError::Failed(MutexError::WouldBlock))
        }
    }

    fn guard(&self, pid: u32) -> LockGuard<'_> {
        LockGuard {
            lock: self,
            pid,
            _keep: self.obj.keep_alive(),
        }
    }

    fn lock_deadline(&self, deadline: Option<Instant>) -> RecoverResult<LockGuard<'_>> {
        let (pid, me) = ident::process();
        match self.state().acquire_tagged(pid, me, deadline) {
            None => Err(LockError::Failed(MutexError::Timeout)),
            Some(died) => Ok((self.guard(pid), died)),
        }
    }

    /// Python `acquire()` without blocking a thread: a future that is `Ready` once this process
    /// holds the lock anonymously (release it with [`Lock::release`], from any process).
    /// Runtime-agnostic, woken through [`crate::notify`].
    ///
    /// Cancel safety: the lock is taken only in the poll that returns `Ready`; dropping the
    /// future takes nothing (a future dropped after being woken passes the wake-up on).
    #[cfg(not(loom))]
    pub fn acquire_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        let mut t = Take::new(self, ANON);
        std::future::poll_fn(move |cx| t.poll_take(cx).map(drop))
    }

    /// [`Lock::lock`] without blocking a thread: the guard, or `Err(LockError::OwnerDied)` if
    /// the previous guard holder died holding the lock (taken over and released, as `lock`
    /// does). Dead holders are looked for every 20 ms while waiting, as the blocking call does.
    ///
    /// The guard may be held across `.await`: the hold belongs to this *process* (pid + start
    /// time in the lock word), not to a thread, and is not on any thread's robust list, so a
    /// task that moves between runtime threads keeps it, and the guard releases it from
    /// whichever thread drops it.
    ///
    /// Cancel safety: the lock is taken only in the poll that returns `Ready`.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let l = multiproc_sync::Lock::new().unwrap();
    /// let g = l.lock_async().await.unwrap();
    /// assert!(l.is_locked());
    /// drop(g);
    /// assert!(!l.is_locked());
    /// # });
    /// ```
    #[cfg(not(loom))]
    pub fn lock_async(
        &self,
    ) -> impl std::future::Future<Output = LockResult<LockGuard<'_>>> + Send + '_ {
        let (pid, me) = ident::process();
        let mut t = Take::new(self, pid);
        std::future::poll_fn(move |cx| {
            t.poll_take(cx).map(|died| {
                // Release: as in `LockState::acquire_tagged`.
                self.state().holder.store(me, Ordering::Release);
                refuse_owner_died(Ok((self.guard(pid), died)))
            })
        })
    }

    /// Condition support: releases, returning how it was held.
    pub(crate) fn release_save(&self) -> Result<LockMode, LockReleaseError> {
        let mode = self.state().mode().ok_or(LockReleaseError::ReleaseUnheld)?;
        self.release()?;
        Ok(mode)
    }

    /// Condition support: re-acquires in the saved mode by `deadline`. Returns whether it did.
    pub(crate) fn acquire_restore(&self, mode: LockMode, deadline: Option<Instant>) -> bool {
        match mode {
            LockMode::Anon => self.state().acquire_anon(deadline),
            LockMode::Tagged => {
                let (pid, me) = ident::process();
                self.state().acquire_tagged(pid, me, deadline).is_some()
            }
        }
    }
}

/// The waiting part of [`Lock::acquire_async`] / [`Lock::lock_async`].
#[cfg(not(loom))]
struct Take<'a> {
    lock: &'a Lock,
    tag: u32,
    w: crate::notify::AsyncWait,
    done: bool,
}

#[cfg(not(loom))]
impl<'a> Take<'a> {
    fn new(lock: &'a Lock, tag: u32) -> Take<'a> {
        Take {
            lock,
            tag,
            w: crate::notify::AsyncWait::new(),
            done: false,
        }
    }

    /// `Ready(owner_died)` once the lock is ours.
    fn poll_take(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        let st = self.lock.state();
        if self.tag != ANON && self.w.check_due(TICK) && st.reclaim_dead(self.tag) {
            self.w.cancel();
            self.done = true;
            return std::task::Poll::Ready(true);
        }
        let tag = self.tag;
        // SAFETY: `state` and `waiters` live in the lock's mapping, which the KeepAlive keeps
        // mapped.
        let r = unsafe {
            self.w.poll_counted(
                cx,
                &st.state,
                &st.waiters,
                self.lock.obj.keep_alive(),
                || st.try_take(tag).map(|_| false),
            )
        };
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

#[cfg(not(loom))]
impl Drop for Take<'_> {
    fn drop(&mut self) {
        self.w.cancel();
        if !self.done {
            // We may have been woken for a release we now leave: pass the wake-up on.
            self.lock.state().pass_on_wake();
        }
    }
}

/// Holds a [`Lock`]; releases it on drop.
#[must_use = "the lock is released when the guard drops"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    pid: u32,
    /// Keeps the mapping alive if the guard is leaked and every handle dropped.
    _keep: KeepAlive,
}

impl LockGuard<'_> {
    /// The lock.
    pub fn lock(&self) -> &Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // A forked child dropping a copy of its parent's guard must not release the parent's hold.
        if ident::process().0 == self.pid {
            self.lock.state().release_tagged(self.pid);
        }
    }
}
