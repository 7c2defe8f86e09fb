//! `RLock`: a process-shared recursive lock owned by one thread of one process.
//!
//! Algorithm: the futex word `state` holds the owner's thread id (system-wide unique while the
//! thread lives; `0` = free); the side word `owner` holds the owner's packed identity (tid +
//! thread start time, written right after the CAS) and `count` the recursion depth, touched only
//! by the owner. Acquire = CAS `0 -> tid` (or `count += 1` if we own it), spin, then park on
//! `state` counted in `waiters`, 20 ms at a time. Release by a non-owner is an error.
//!
//! Death: every acquisition is recorded, so a waiter whose park times out checks whether the
//! owner thread is gone (a killed process takes its threads with it) and takes the lock over with
//! one CAS, resetting the depth to 1; [`RLock::lock`] then returns
//! `Err(LockError::OwnerDied)` (released again), [`RLock::lock_recover`] `(guard, true)` and
//! [`RLock::acquire_reporting`] `Some(true)`.
//!
//! ```
//! use multiproc_sync::RLock;
//! let l = RLock::new().unwrap();
//! assert!(l.acquire(true));
//! assert!(l.acquire(true));
//! l.release().unwrap();
//! l.release().unwrap();
//! assert!(l.release().is_err()); // not owned any more
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
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Errors of [`RLock::release`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RLockError {
    /// The calling thread does not own the lock (Python: AssertionError).
    #[error("release of an RLock not owned by this thread")]
    NotOwner,
}

/// The shared state of an [`RLock`] (public for loom models; use [`RLock`]).
#[doc(hidden)]
#[repr(C)]
pub struct RLockState {
    state: AtomicU32,
    waiters: AtomicU32,
    count: AtomicU32,
    _pad: AtomicU32,
    owner: AtomicU64,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern is a valid state; a corrupted one gives
// errors or timeouts, never UB), align 8 <= 256, no Drop. No field sizes or indexes anything.
unsafe impl SharedLayout for RLockState {
    const KIND: ObjectKind = ObjectKind::RLock;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
        Ok(())
    }
}

impl Default for RLockState {
    fn default() -> Self {
        Self::new()
    }
}

impl RLockState {
    /// A free lock.
    pub fn new() -> Self {
        RLockState {
            state: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            count: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
            owner: AtomicU64::new(0),
        }
    }

    #[inline]
    fn try_take(&self, tid: u32) -> Result<(), u32> {
        // SeqCst: Acquire partner of the releasing store, and the load half of the store-load
        // pattern with `waiters` (see shared::block_on).
        self.state
            .compare_exchange(0, tid, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
    }

    fn reclaim_dead(&self, tid: u32) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        if s == 0 {
            return false;
        }
        // Acquire: pairs with the owner's Release store of its identity.
        let o = self.owner.load(Ordering::Acquire);
        if ident::holder_alive(s, o) {
            return false;
        }
        // SeqCst: as in try_take.
        self.state
            .compare_exchange(s, tid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Acquires for thread `tid` (packed identity `me`). Returns Some(owner_died) or None on
    /// timeout.
    pub fn acquire(&self, tid: u32, me: u64, deadline: Option<Instant>) -> Option<bool> {
        // Relaxed: only this thread can have stored its own tid there.
        if self.state.load(Ordering::Relaxed) == tid {
            // Relaxed: only the owner touches count.
            let c = self.count.load(Ordering::Relaxed);
            self.count.store(c.wrapping_add(1), Ordering::Relaxed);
            return Some(false);
        }
        let died = if self.try_take(tid).is_ok() {
            false
        } else {
            self.acquire_slow(tid, deadline)?
        };
        // Release: pairs with reclaim_dead's Acquire load.
        self.owner.store(me, Ordering::Release);
        self.count.store(1, Ordering::Relaxed);
        Some(died)
    }

    #[cold]
    fn acquire_slow(&self, tid: u32, deadline: Option<Instant>) -> Option<bool> {
        let r = block_on(
            &self.state,
            &self.waiters,
            deadline,
            Some(TICK),
            || self.try_take(tid).map(|_| false),
            || self.reclaim_dead(tid).then_some(true),
        );
        match r {
            Ok(d) => Some(d),
            Err(_) => {
                // SeqCst: pass on a wake we may have consumed (see LockState::pass_on_wake).
                if self.state.load(Ordering::SeqCst) == 0 && self.waiters.load(Ordering::SeqCst) > 0
                {
                    futex::wake(&self.state, 1);
                }
                None
            }
        }
    }

    /// Non-blocking acquire.
    pub fn try_acquire(&self, tid: u32, me: u64) -> bool {
        if self.state.load(Ordering::Relaxed) == tid {
            let c = self.count.load(Ordering::Relaxed);
            self.count.store(c.wrapping_add(1), Ordering::Relaxed);
            return true;
        }
        if self.try_take(tid).is_ok() {
            // Release: as in acquire.
            self.owner.store(me, Ordering::Release);
            self.count.store(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Releases one level for thread `tid`.
    pub fn release(&self, tid: u32) -> Result<(), RLockError> {
        if self.state.load(Ordering::Relaxed) != tid {
            return Err(RLockError::NotOwner);
        }
        let c = self.count.load(Ordering::Relaxed);
        if c > 1 {
            self.count.store(c - 1, Ordering::Relaxed);
            return Ok(());
        }
        self.count.store(0, Ordering::Relaxed);
        self.unlock();
        Ok(())
    }

    fn unlock(&self) {
        // SeqCst: Release for the next owner, and the store half of the store-load pattern
        // with `waiters` below.
        self.state.store(0, Ordering::SeqCst);
        // SeqCst: the load half.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.state, 1);
        }
    }

    /// Whether `tid` owns it.
    pub fn is_owned_by(&self, tid: u32) -> bool {
        self.state.load(Ordering::Relaxed) == tid
    }

    /// Releases every level (Condition::wait). Returns the depth.
    pub(crate) fn release_all(&self, tid: u32) -> Result<u32, RLockError> {
        if self.state.load(Ordering::Relaxed) != tid {
            return Err(RLockError::NotOwner);
        }
        let c = self.count.load(Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.unlock();
        Ok(c)
    }

    /// Re-acquires with a saved depth by `deadline`. Returns whether it did.
    pub(crate) fn acquire_restore(
        &self,
        tid: u32,
        me: u64,
        depth: u32,
        deadline: Option<Instant>,
    ) -> bool {
        if self.acquire(tid, me, deadline).is_none() {
            return false;
        }
        // Relaxed: only the owner touches count.
        self.count.store(depth.max(1), Ordering::Relaxed);
        true
    }
}

/// A process-shared reentrant lock (Python's `multiprocessing.RLock`). Owner = process + thread.
#[derive(Clone)]
pub struct RLock {
    obj: Obj<RLockState>,
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock").finish_non_exhaustive()
    }
}

serde_as_object!(RLock, RLockState);

impl RLock {
    fn from_shm(shm: Shared<RLockState>) -> Self {
        Self::from_obj(Obj::own(shm))
    }

    fn from_obj(obj: Obj<RLockState>) -> Self {
        RLock { obj }
    }

    /// A new free reentrant lock in a slot of `arena` (one fd and mapping per arena segment, not per object;
    /// the slot is padded to at least 64 bytes so two hot futex words never share a cache line).
    /// See [`crate::arena`] for when the slot is freed.
    pub fn new_in(arena: &Arena) -> Result<RLock, CreateError> {
        Ok(RLock::from_obj(Obj::new_in(arena, 64, RLockState::new())?))
    }

    /// Opens an arena reentrant lock's handle ([`ShmError::StaleHandle`] if it was freed, or of another
    /// kind).
    pub fn open_slot(handle: &SlotHandle) -> Result<RLock, ShmError> {
        Ok(RLock::from_obj(Obj::open_slot(handle)?))
    }

    /// The arena handle of an arena reentrant lock (`None` for one with its own segment).
    pub fn slot_handle(&self) -> Option<SlotHandle> {
        self.obj.slot_handle()
    }

    /// A new, free reentrant lock in a slot of this process's arena ([`crate::Arena::global`]): one fd and
    /// mapping per arena segment, not per object, and a 64-byte slot, so two hot futex words
    /// never share a cache line. Inherited by forked children (each holds the slot from the fork
    /// on); spawned children get it by serializing it. An arena lock that cannot be taken maps
    /// to `ShmError::Os { op: "arena lock", .. }`. `handle()`/`segment()` then name the whole
    /// arena segment: use `slot_handle()` or serde to reach the object, or
    /// [`RLock::new_segment`] for a segment of its own.
    pub fn new() -> Result<RLock, ShmError> {
        Ok(RLock::from_obj(Obj::new_default(RLockState::new())?))
    }

    /// A new, free reentrant lock in an anonymous segment of its own (what [`RLock::new`] did
    /// before arenas).
    pub fn new_segment() -> Result<RLock, ShmError> {
        Ok(RLock::from_shm(crate::shared::create(
            None,
            RLockState::new(),
        )?))
    }

    /// A new lock in `/dev/shm/multiproc.NAME`.
    pub fn create_named(name: &str) -> Result<RLock, ShmError> {
        Ok(RLock::from_shm(crate::shared::create(
            Some(name),
            RLockState::new(),
        )?))
    }

    /// Opens a named lock.
    pub fn open_named(name: &str) -> Result<RLock, ShmError> {
        Ok(RLock::from_shm(crate::shared::open_named(name)?))
    }

    /// Opens the rlock a handle names (checking kind, layout and geometry).
    pub fn open_handle(handle: &SegmentHandle) -> Result<RLock, ShmError> {
        Ok(RLock::from_shm(crate::shared::open_handle(handle)?))
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

    pub(crate) fn state(&self) -> &RLockState {
        self.obj.get()
    }

    /// Python `acquire(block)`.
    pub fn acquire(&self, block: bool) -> bool {
        if block {
            self.acquire_reporting(None).is_some()
        } else {
            self.try_acquire()
        }
    }

    /// Python `acquire(True, timeout)`.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.acquire_reporting(deadline_after(timeout)).is_some()
    }

    /// Python `acquire(False)`.
    pub fn try_acquire(&self) -> bool {
        let (tid, me) = ident::thread();
        self.state().try_acquire(tid, me)
    }

    /// Acquires, reporting `Some(true)` when it took the lock over from a dead owner.
    pub fn acquire_reporting(&self, deadline: Option<Instant>) -> Option<bool> {
        let (tid, me) = ident::thread();
        self.state().acquire(tid, me, deadline)
    }

    /// Python `release`: one level; the caller must own the lock.
    pub fn release(&self) -> Result<(), RLockError> {
        self.state().release(ident::thread().0)
    }

    /// Whether the calling thread owns it.
    pub fn is_owned(&self) -> bool {
        self.state().is_owned_by(ident::thread().0)
    }

    /// Blocks until acquired; the guard releases one level on drop. Taking the lock over from
    /// a dead owner releases it again and gives `Err(LockError::OwnerDied)` (use
    /// [`RLock::lock_recover`] to take such a lock).
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        refuse_owner_died(self.lock_deadline(None))
    }

    /// [`RLock::lock`] giving up after `timeout` (`Err(LockError::Failed(MutexError::Timeout))`).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<RLockGuard<'_>> {
        refuse_owner_died(self.lock_deadline(deadline_after(timeout)))
    }

    /// Blocks until acquired, also from a dead owner: the guard and whether the previous owner
    /// died holding the lock. Never `Err(OwnerDied)`.
    pub fn lock_recover(&self) -> RecoverResult<RLockGuard<'_>> {
        self.lock_deadline(None)
    }

    /// [`RLock::lock_recover`] giving up after `timeout`.
    pub fn lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<RLockGuard<'_>> {
        self.lock_deadline(deadline_after(timeout))
    }

    /// [`RLock::lock`] without blocking (`Err(LockError::Failed(MutexError::WouldBlock))`).
    pub fn try_lock(&self) -> LockResult<RLockGuard<'_>> {
        if self.try_acquire() {
            Ok(self.guard())
        } else {
            Err(LockError::Failed(MutexError::WouldBlock))
        }
    }

    fn lock_deadline(&self, deadline: Option<Instant>) -> RecoverResult<RLockGuard<'_>> {
        match self.acquire_reporting(deadline) {
            None => Err(LockError::Failed(MutexError::Timeout)),
            Some(died) => Ok((self.guard(), died)),
        }
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _keep: self.obj.keep_alive(),
            tid: ident::thread().0,
            _not_send: PhantomData,
        }
    }
}

/// Holds one level of an [`RLock`]. `!Send`: a level belongs to the thread that took it (as in
/// Python, only the owner may release), and a guard dropped on another thread could release
/// nothing, leaving the lock held.
#[must_use = "the level is released when the guard drops"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    /// Keeps the mapping alive if the guard is leaked and every handle dropped.
    _keep: KeepAlive,
    tid: u32,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // In a forked child the thread id differs, so a copied guard releases nothing.
        if ident::thread().0 == self.tid {
            let _ = self.lock.state().release(self.tid);
        }
    }
}
