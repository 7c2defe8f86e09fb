//! Errors of the collections layer, one type per kind of operation (issue 18):
//!
//! - [`CreateError`]: making or opening a [`SharedDict`](crate::SharedDict),
//!   [`SharedList`](crate::SharedList) or [`SharedLock`](crate::SharedLock);
//! - [`ReadError`]: the calls that only look (`get`, `contains_key`, `len`, `is_empty`, `keys`,
//!   `values`, `items`, `to_vec`, `verify`);
//! - [`WriteError`]: the calls that change the structure (`insert`, `update`, `remove`, `push`,
//!   `pop`, `set`, `clear`, `compact`); it has every variant of `ReadError` (a change reads
//!   first) plus the capacity and index errors;
//! - [`Error`]: their union, for `?` in code that mixes them (and the compound
//!   [`Manager::dict_from`](crate::Manager::dict_from) / `list_from`).
//!
//! Operations take keys and values by reference, so a failed operation leaves them with the
//! caller (nothing to hand back). The one-call operations (`d.insert(..)`) take the lock
//! themselves and report a failure to take it as `Lock`; the guard's methods never do.

use multiproc_shm::ShmError;
use multiproc_sync::{LockError, MutexError, SyncError};

/// Creating or opening a dict, list or lock failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// A creation parameter is unusable (a capacity of 0, an arena beyond the maximum).
    #[error("bad parameter: {0}")]
    BadParameter(&'static str),
    /// The segment could not be created or opened, or is not a valid one of this type (wrong
    /// kind or types, corrupted header or geometry).
    #[error(transparent)]
    Shm(#[from] ShmError),
}

/// A read of a dict or list failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The key could not be encoded.
    #[error("encoding with postcard failed: {0}")]
    Encode(postcard::Error),
    /// Stored bytes did not decode as the expected type.
    #[error("decoding with postcard failed: {0}")]
    Decode(postcard::Error),
    /// The shared structure holds impossible values (a corrupted or hostile segment).
    #[error("corrupted shared structure: {0}")]
    Corrupted(&'static str),
    /// Taking the lock failed (`Deadlock` if this thread already holds a guard of the same
    /// object). Only from the one-call operations.
    #[error(transparent)]
    Lock(#[from] MutexError),
}

/// A change of a dict or list failed; the structure is as it was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The structure is at its capacity: `what` is `"entries"` (the entry count given at
    /// creation) or `"arena"` (the bytes for keys and values, even after compaction).
    #[error("the shared {what} capacity ({capacity}) is exhausted")]
    Full {
        /// Which resource ran out.
        what: &'static str,
        /// Its size.
        capacity: u64,
    },
    /// One entry is larger than the whole arena.
    #[error("an entry of {size} bytes does not fit in an arena of {max} bytes")]
    TooLarge {
        /// Encoded entry size.
        size: u64,
        /// Arena size.
        max: u64,
    },
    /// An index past the end of a list.
    #[error("index {index} out of range for a list of length {len}")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The list's length.
        len: usize,
    },
    /// A key or value could not be encoded.
    #[error("encoding with postcard failed: {0}")]
    Encode(postcard::Error),
    /// Stored bytes did not decode as the expected type (the value a change returns or reads).
    #[error("decoding with postcard failed: {0}")]
    Decode(postcard::Error),
    /// The shared structure holds impossible values (a corrupted or hostile segment).
    #[error("corrupted shared structure: {0}")]
    Corrupted(&'static str),
    /// Taking the lock failed. Only from the one-call operations.
    #[error(transparent)]
    Lock(#[from] MutexError),
}

impl From<ReadError> for WriteError {
    /// A change reads first: each read failure is the same failure of the change.
    fn from(e: ReadError) -> WriteError {
        match e {
            ReadError::Encode(e) => WriteError::Encode(e),
            ReadError::Decode(e) => WriteError::Decode(e),
            ReadError::Corrupted(what) => WriteError::Corrupted(what),
            ReadError::Lock(e) => WriteError::Lock(e),
        }
    }
}

/// Any error of this crate: the union of the per-operation errors (each converts with `?`) and
/// of the lower layers' errors that [`Manager`](crate::Manager)'s compound calls and user code
/// mixing collections with sync or channel objects meet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating or opening an object.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// A read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A change.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Taking a lock failed (`get_lock()?`, `SharedLock::lock_timeout(..)?`).
    #[error(transparent)]
    Lock(#[from] MutexError),
    /// An error from the sync layer (values, arrays, a dead lock holder).
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A queue could not be created (see `Manager::queue`).
    #[error(transparent)]
    Channel(#[from] multiproc_channel::ChannelError),
    /// A barrier could not be created (see `Manager::barrier`).
    #[error(transparent)]
    Barrier(#[from] multiproc_sync::BarrierCreateError),
}

/// The result type of this crate's compound calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<multiproc_sync::CreateError> for Error {
    fn from(e: multiproc_sync::CreateError) -> Error {
        Error::Sync(e.into())
    }
}

impl From<LockError> for Error {
    /// `get_lock()?` and `SharedLock::lock()?`: a dead previous holder is
    /// `Sync(SyncError::OwnerDied)`, any other failure `Lock`.
    fn from(e: LockError) -> Error {
        match e {
            LockError::Failed(m) => Error::Lock(m),
            other => Error::Sync(other.into()),
        }
    }
}
