//! Errors of the collections layer.

use multiproc_shm::ShmError;
use multiproc_sync::{MutexError, SyncError};

/// Errors of [`SharedDict`](crate::SharedDict), [`SharedList`](crate::SharedList) and
/// [`Manager`](crate::Manager).
///
/// Operations take keys and values by reference, so a failed operation leaves them with the
/// caller (nothing to hand back).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// A creation parameter is unusable.
    #[error("bad parameter: {0}")]
    BadParameter(&'static str),
    /// A key or value could not be encoded.
    #[error("encoding with postcard failed: {0}")]
    Encode(postcard::Error),
    /// Stored bytes did not decode as the expected type.
    #[error("decoding with postcard failed: {0}")]
    Decode(postcard::Error),
    /// The shared structure holds impossible values (a corrupted or hostile segment).
    #[error("corrupted shared structure: {0}")]
    Corrupted(&'static str),
    /// Locking failed (`Deadlock` if this thread already holds a guard of the same object).
    #[error(transparent)]
    Lock(#[from] MutexError),
    /// The segment could not be created or opened.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// An error from the sync layer (Manager's values, arrays).
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A queue could not be created (see `Manager::queue`).
    #[error(transparent)]
    Channel(#[from] multiproc_channel::ChannelError),
    /// A barrier could not be created (see `Manager::barrier`).
    #[error(transparent)]
    Barrier(#[from] multiproc_sync::BarrierCreateError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<multiproc_sync::CreateError> for Error {
    fn from(e: multiproc_sync::CreateError) -> Error {
        Error::Sync(e.into())
    }
}
