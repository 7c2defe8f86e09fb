//! `SharedLock`: a robust process-shared lock in its own segment, what [`Manager::lock`]
//! (crate::Manager::lock) hands out (Python's `Manager().Lock()` / `multiprocessing.Lock`).
//!
//! It is a [`RobustMutex`] alone in an anonymous or named segment: a holder that dies hands the
//! next locker `Err(LockError::OwnerDied(guard))`, and the lock keeps working.
//!
//! ```
//! use multiproc_collections::SharedLock;
//! let lock = SharedLock::new().unwrap();
//! {
//!     let _g = lock.acquire().unwrap();
//!     assert!(lock.try_acquire().is_err()); // relocking from the holding thread is refused
//! }
//! assert!(lock.try_acquire().is_ok());
//! ```

use crate::error::{Error, Result};
use multiproc_shm::{Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, TypeFingerprint};
use multiproc_sync::{LockError, LockOutcome, LockResult, MutexError, RobustMutex};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

/// A robust lock in shared memory.
#[derive(Clone)]
pub struct SharedLock {
    seg: Segment,
    m: NonNull<RobustMutex>,
}

// SAFETY: the mutex lives in the mapping kept alive by `seg`; RobustMutex is Sync.
unsafe impl Send for SharedLock {}
// SAFETY: as above.
unsafe impl Sync for SharedLock {}

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

fn expect() -> Expect {
    Expect::new(ObjectKind::Mutex, fp()).payload_size(std::mem::size_of::<RobustMutex>() as u64)
}

impl SharedLock {
    fn build(name: Option<&str>) -> Result<Self> {
        let spec = SegmentSpec::new(
            ObjectKind::Mutex,
            fp(),
            std::mem::size_of::<RobustMutex>(),
            std::mem::align_of::<RobustMutex>(),
        );
        let init = |p: NonNull<u8>, _| {
            // SAFETY: the payload is sized and aligned for a RobustMutex and unseen by others.
            unsafe { RobustMutex::init_at(p.as_ptr().cast()) }.map_err(|source| {
                multiproc_shm::ShmError::Os {
                    op: "pthread_mutex_init",
                    source,
                }
            })
        };
        let seg = match name {
            Some(n) => Segment::create_named(n, &spec, init)?,
            None => Segment::create_anonymous(&spec, init)?,
        };
        Ok(Self::from_segment(seg))
    }

    fn from_segment(seg: Segment) -> Self {
        let m = seg.payload_ptr().cast();
        SharedLock { seg, m }
    }

    /// A new anonymous lock.
    pub fn new() -> Result<Self> {
        Self::build(None)
    }

    /// A new named lock.
    pub fn create(name: &str) -> Result<Self> {
        Self::build(Some(name))
    }

    /// Opens a named lock.
    pub fn open(name: &str) -> Result<Self> {
        Ok(Self::from_segment(Segment::open_named(name, &expect())?))
    }

    /// Opens the lock a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self> {
        Ok(Self::from_segment(Segment::open_handle(handle, &expect())?))
    }

    /// The segment behind this lock.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    fn mutex(&self) -> &RobustMutex {
        // SAFETY: validated segment of exactly one RobustMutex, initialized by its creator.
        unsafe { self.m.as_ref() }
    }

    fn guard(
        &self,
        r: std::result::Result<LockOutcome, MutexError>,
    ) -> LockResult<SharedLockGuard<'_>> {
        let g = || SharedLockGuard {
            m: self.mutex(),
            _not_send: PhantomData,
        };
        match r {
            Ok(LockOutcome::Acquired) => Ok(g()),
            Ok(LockOutcome::OwnerDied) => Err(LockError::OwnerDied(g())),
            Err(e) => Err(LockError::Failed(e)),
        }
    }

    /// Takes the lock (`with lock:`).
    pub fn acquire(&self) -> LockResult<SharedLockGuard<'_>> {
        self.guard(self.mutex().lock())
    }

    /// Takes the lock without waiting.
    pub fn try_acquire(&self) -> LockResult<SharedLockGuard<'_>> {
        self.guard(self.mutex().try_lock())
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<SharedLockGuard<'_>> {
        self.guard(self.mutex().lock_timeout(timeout))
    }

    /// Takes the lock, treating a dead previous holder as a plain acquisition.
    pub fn acquire_recovering(&self) -> Result<SharedLockGuard<'_>> {
        match self.acquire() {
            Ok(g) => Ok(g),
            Err(LockError::OwnerDied(g)) => Ok(g),
            Err(LockError::Failed(e)) => Err(Error::Lock(e)),
        }
    }
}

/// A held [`SharedLock`]; releases on drop. `!Send`.
pub struct SharedLockGuard<'a> {
    m: &'a RobustMutex,
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
