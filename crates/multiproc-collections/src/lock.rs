//! `SharedLock`: a robust process-shared lock in its own segment, what [`Manager::lock`]
//! (crate::Manager::lock) hands out (Python's `Manager().Lock()` / `multiprocessing.Lock`).
//!
//! It is a [`RobustMutex`] alone in an anonymous or named segment: a holder that dies hands the
//! next locker `Err(LockError::OwnerDied)` (the lock released again, so `?` takes the error), or
//! `(guard, true)` from [`SharedLock::lock_recover`], and the lock keeps working.
//!
//! ```
//! use multiproc_collections::SharedLock;
//! let lock = SharedLock::new().unwrap();
//! {
//!     let _g = lock.lock().unwrap();
//!     assert!(lock.try_lock().is_err()); // relocking from the holding thread is refused
//! }
//! assert!(lock.try_lock().is_ok());
//! ```

use crate::error::CreateError;
use multiproc_shm::{
    KeepAlive, ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint,
};
use multiproc_sync::{
    LockOutcome, LockResult, MutexError, RecoverResult, RobustMutex, refuse_owner_died,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

/// The lock's segment payload: one robust mutex.
#[repr(C)]
struct LockLayout {
    mutex: RobustMutex,
}

// SAFETY: (1) `#[repr(C)]`, one `RobustMutex`, whose bytes are any value (what its code does
// with rewritten bytes is `RobustMutex`'s contract, multiproc-sync's); (2) the mutex is reached
// only through its own API, never through a reference to its bytes; (3) its alignment is that
// of the mutex (<= 256); (4) no `Drop`.
unsafe impl SharedLayout for LockLayout {
    const KIND: ObjectKind = ObjectKind::Mutex;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> multiproc_shm::Result<()> {
        // Nothing sizes or indexes anything (and MAX_TAIL = 0 refuses any tail).
        Ok(())
    }
}

/// A robust lock in shared memory.
#[derive(Clone)]
pub struct SharedLock {
    shared: Shared<LockLayout>,
    /// The segment behind `shared` (a clone; `Shared` may be heap-backed, a lock never is).
    seg: Segment,
}

impl std::fmt::Debug for SharedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLock")
            .field("segment", &self.seg)
            .finish()
    }
}

fn fp() -> TypeFingerprint {
    TypeFingerprint::of::<RobustMutex>()
}

impl SharedLock {
    fn build(name: Option<&str>) -> Result<Self, CreateError> {
        let init = |p: NonNull<LockLayout>, _tail: NonNull<u8>| {
            // SAFETY: `p` is valid for writing one aligned, zeroed LockLayout nobody else sees
            // before Ready; the mutex is its first field.
            unsafe { RobustMutex::init_at(std::ptr::addr_of_mut!((*p.as_ptr()).mutex)) }.map_err(
                |source| ShmError::Os {
                    op: "robust mutex init",
                    source,
                },
            )
        };
        Self::from_shared(Shared::create(name, fp(), 0, init)?)
    }

    fn from_shared(shared: Shared<LockLayout>) -> Result<Self, CreateError> {
        let seg = shared
            .segment()
            .cloned()
            .ok_or(CreateError::BadParameter("a lock needs a segment"))?;
        Ok(SharedLock { shared, seg })
    }

    /// A new anonymous lock.
    pub fn new() -> Result<Self, CreateError> {
        Self::build(None)
    }

    /// A new named lock.
    pub fn create_named(name: &str) -> Result<Self, CreateError> {
        Self::build(Some(name))
    }

    /// Opens a named lock.
    pub fn open_named(name: &str) -> Result<Self, CreateError> {
        Self::from_shared(Shared::open_named(name, fp())?)
    }

    /// Opens the lock a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self, CreateError> {
        Self::from_shared(Shared::open_handle(handle, fp())?)
    }

    /// The segment behind this lock.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// How another process reaches this lock.
    pub fn handle(&self) -> SegmentHandle {
        self.seg.handle()
    }

    fn mutex(&self) -> &RobustMutex {
        &self.shared.get().mutex
    }

    /// The guard of a lock this thread just took.
    fn held(&self) -> SharedLockGuard<'_> {
        SharedLockGuard {
            m: self.mutex(),
            _keep: self.shared.keep_alive(),
            _not_send: PhantomData,
        }
    }

    fn guard(
        &self,
        r: std::result::Result<LockOutcome, MutexError>,
    ) -> RecoverResult<SharedLockGuard<'_>> {
        let died = r? == LockOutcome::OwnerDied;
        Ok((self.held(), died))
    }

    /// Takes the lock (`with lock:`), waiting as long as it takes. A previous holder that died
    /// holding it gives `Err(LockError::OwnerDied)` (the lock released again); see
    /// [`SharedLock::lock_recover`].
    pub fn lock(&self) -> LockResult<SharedLockGuard<'_>> {
        refuse_owner_died(self.lock_recover())
    }

    /// Takes the lock without waiting.
    pub fn try_lock(&self) -> LockResult<SharedLockGuard<'_>> {
        refuse_owner_died(self.guard(self.mutex().try_lock()))
    }

    /// Takes the lock, waiting at most `timeout` (the form to use when another process may
    /// hold it forever).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<SharedLockGuard<'_>> {
        refuse_owner_died(self.lock_recover_timeout(timeout))
    }

    /// Takes the lock, also from a dead holder: the guard and whether the previous holder died
    /// holding it (then what it protects may be half-updated). Never `Err(OwnerDied)`.
    pub fn lock_recover(&self) -> RecoverResult<SharedLockGuard<'_>> {
        self.guard(self.mutex().lock())
    }

    /// [`SharedLock::lock_recover`] waiting at most `timeout`.
    pub fn lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<SharedLockGuard<'_>> {
        self.guard(self.mutex().lock_timeout(timeout))
    }

    /// Takes the lock, treating a dead previous holder as a plain acquisition (what
    /// [`SharedLock::lock_recover`] reports, ignored).
    pub fn lock_ignoring_death(&self) -> Result<SharedLockGuard<'_>, MutexError> {
        self.mutex().lock()?;
        Ok(self.held())
    }
}

/// A held [`SharedLock`]; releases on drop. `!Send`. It keeps the lock's memory mapped while it
/// lives: leaking it (`mem::forget`) and dropping every `SharedLock` leaks the mapping (the lock
/// stays held), it never unmaps a robust mutex that is still on this thread's robust list.
pub struct SharedLockGuard<'a> {
    m: &'a RobustMutex,
    /// Dropped after `Drop::drop` unlocked.
    _keep: KeepAlive,
    _not_send: PhantomData<*const ()>,
}

impl Drop for SharedLockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { self.m.unlock() }
    }
}

impl Serialize for SharedLock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.seg.handle().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        SharedLock::open_handle(&h).map_err(serde::de::Error::custom)
    }
}
