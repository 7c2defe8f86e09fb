//! Errors of the sync layer.

use crate::mutex::MutexError;
use multiproc_shm::ShmError;

/// Errors creating or opening shared objects, or using them.
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
    /// An index past the end of an array.
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
    /// A size computation overflowed.
    #[error("array of {len} elements of {elem} bytes is too large")]
    TooLarge {
        /// Elements.
        len: usize,
        /// Element size.
        elem: usize,
    },
    /// An OS error.
    #[error("{0}")]
    Os(#[from] std::io::Error),
}

/// A failed lock attempt. `OwnerDied` hands the guard back: the lock *is* held and usable, but
/// the previous holder died inside its critical section (like std's `PoisonError::into_inner`).
pub enum LockError<G> {
    /// The previous holder died holding the lock; here is the guard anyway.
    OwnerDied(G),
    /// Any other failure: nothing is held.
    Failed(MutexError),
}

impl<G> LockError<G> {
    /// The guard, if the lock is held (OwnerDied).
    pub fn into_inner(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            LockError::Failed(_) => None,
        }
    }

    /// Whether this is `OwnerDied`.
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// Maps the guard.
    pub fn map<U>(self, f: impl FnOnce(G) -> U) -> LockError<U> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::Failed(e) => LockError::Failed(e),
        }
    }
}

impl<G> std::fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> std::fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the previous lock holder died while holding the lock; the data may be half-updated",
            ),
            LockError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

impl<G> From<LockError<G>> for SyncError {
    fn from(e: LockError<G>) -> SyncError {
        match e {
            LockError::OwnerDied(_) => SyncError::OwnerDied,
            LockError::Failed(m) => SyncError::Mutex(m),
        }
    }
}

/// The result of a lock attempt.
pub type LockResult<G> = Result<G, LockError<G>>;
