//! Errors of the sync layer.

use crate::mutex::MutexError;
use multiproc_shm::ShmError;

/// Any error of this crate: what each operation's own error ([`CreateError`], [`ArenaError`],
/// [`AccessError`], [`LockError`], [`crate::BarrierCreateError`], `ShmError`) converts into with
/// `?`, for code that returns several of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The segment could not be created or opened.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// Locking failed (see [`MutexError`]).
    #[error(transparent)]
    Mutex(#[from] MutexError),
    /// A lock's previous holder died while holding it (the guard was dropped on the way here).
    #[error("the previous lock holder died while holding the lock; the data may be half-updated")]
    OwnerDied,
    /// An indexed access of an array failed (see [`AccessError`]; its `Lock` case arrives as
    /// `Mutex` or `OwnerDied`).
    #[error(transparent)]
    Access(AccessError),
    /// A `Value`/`Array` could not be created (see [`CreateError`]; its `Shm` and `Arena`
    /// cases arrive as `Shm` and `Shm`/`Mutex`, so this holds `TooLarge`).
    #[error(transparent)]
    Create(CreateError),
    /// An OS error.
    #[error("{0}")]
    Os(#[from] std::io::Error),
    /// A barrier's party count out of range (from [`crate::BarrierCreateError`]).
    #[error("parties must be 1..={max}, got {parties}")]
    BadParties {
        /// Given.
        parties: u32,
        /// The limit.
        max: u32,
    },
}

impl From<crate::BarrierCreateError> for SyncError {
    fn from(e: crate::BarrierCreateError) -> SyncError {
        match e {
            crate::BarrierCreateError::BadParties(parties) => SyncError::BadParties {
                parties,
                max: crate::barrier::MAX_PARTIES,
            },
            crate::BarrierCreateError::Shm(s) => SyncError::Shm(s),
        }
    }
}

/// Why a shared object (`Value`, `Array`, their raw twins, or an arena-placed lock, event or
/// semaphore) could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Its segment could not be created, opened or validated (wrong type, corrupted header,
    /// name clash, an element type aligned beyond 128 bytes, ...).
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// An array whose size overflows or exceeds the largest array.
    #[error("array of {len} elements of {elem} bytes is too large")]
    TooLarge {
        /// Elements.
        len: usize,
        /// Element size.
        elem: usize,
    },
    /// The process arena could not place it (see [`ArenaError`]).
    #[error(transparent)]
    Arena(#[from] ArenaError),
}

/// Why an arena call failed: [`Arena::check`](crate::Arena::check),
/// [`Arena::reclaim`](crate::Arena::reclaim), or placing an object (inside a [`CreateError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaError {
    /// An arena segment could not be created, or its metadata is corrupted.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// The arena segment's lock failed (its timeout, an OS error).
    #[error("the arena's lock")]
    Lock(#[source] MutexError),
}

impl From<MutexError> for ArenaError {
    fn from(e: MutexError) -> ArenaError {
        ArenaError::Lock(e)
    }
}

/// Why an indexed access of an [`Array`](crate::Array) or [`RawArray`](crate::RawArray) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// An index past the end.
    #[error("index {index} out of range for an array of length {len}")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A slice of the wrong length.
    #[error("length mismatch: got {got} elements, the array holds {len}")]
    LengthMismatch {
        /// Given.
        got: usize,
        /// Expected.
        len: usize,
    },
    /// Taking the array's lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl From<CreateError> for SyncError {
    fn from(e: CreateError) -> SyncError {
        match e {
            CreateError::Shm(s) => SyncError::Shm(s),
            too_large @ CreateError::TooLarge { .. } => SyncError::Create(too_large),
            CreateError::Arena(a) => a.into(),
        }
    }
}

impl From<ArenaError> for SyncError {
    fn from(e: ArenaError) -> SyncError {
        match e {
            ArenaError::Shm(s) => SyncError::Shm(s),
            ArenaError::Lock(m) => SyncError::Mutex(m),
        }
    }
}

impl From<AccessError> for SyncError {
    fn from(e: AccessError) -> SyncError {
        match e {
            AccessError::Lock(l) => l.into(),
            other => SyncError::Access(other),
        }
    }
}

/// A failed lock attempt: nothing is held when this is returned.
///
/// The error owns no guard and borrows nothing, so `?` takes it into `Box<dyn Error>`,
/// `anyhow::Error` or [`SyncError`] (`*v.get_lock()? += 1` in a `fn main() -> Result<..>`).
///
/// `OwnerDied`: the previous holder died inside its critical section. The plain lock calls
/// (`get_lock`, `lock`, `acquire` on a guard) took the lock over, *released it again* and
/// report this, so code that does not think about death stops at `?` instead of reading a
/// half-written update. To take a dead holder's lock and repair what it protects, call the
/// `*_recover` twin (`Value::get_lock_recover`, `Lock::lock_recover`, ...): it returns
/// `(guard, owner_died)` and never fails with `OwnerDied`.
///
/// ```
/// fn bump(v: &multiproc_sync::Value<i64>) -> Result<(), Box<dyn std::error::Error>> {
///     *v.get_lock()? += 1;
///     Ok(())
/// }
/// let v = multiproc_sync::Value::new(0i64).unwrap();
/// bump(&v).unwrap();
/// let (g, owner_died) = v.get_lock_recover().unwrap();
/// assert_eq!((*g, owner_died), (1, false));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The previous holder died holding the lock (the lock was taken over and released again;
    /// call the `*_recover` variant to take it and repair the data).
    #[error(
        "the previous lock holder died while holding the lock; the data may be half-updated \
         (take it with the *_recover call, e.g. get_lock_recover(), to repair it)"
    )]
    OwnerDied,
    /// Any other failure (timeout, would block, deadlock, OS error).
    #[error(transparent)]
    Failed(#[from] MutexError),
}

impl LockError {
    /// Whether this is `OwnerDied`.
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied)
    }
}

impl From<LockError> for SyncError {
    fn from(e: LockError) -> SyncError {
        match e {
            LockError::OwnerDied => SyncError::OwnerDied,
            LockError::Failed(m) => SyncError::Mutex(m),
        }
    }
}

/// The result of a lock attempt.
pub type LockResult<G> = Result<G, LockError>;

/// The result of a `*_recover` lock attempt: the guard and whether the previous holder died
/// holding the lock (then the data may be half-updated: check or repair it before use).
pub type RecoverResult<G> = Result<(G, bool), LockError>;

/// Turns a recover result into a plain lock result: a dead owner's lock is released (the guard
/// dropped) and reported as [`LockError::OwnerDied`]. For crates building guards on this one.
#[doc(hidden)]
#[inline]
pub fn refuse_owner_died<G>(r: RecoverResult<G>) -> LockResult<G> {
    match r {
        Ok((g, false)) => Ok(g),
        Ok((g, true)) => {
            drop(g);
            Err(LockError::OwnerDied)
        }
        Err(e) => Err(e),
    }
}
