//! Where a ring's memory lives: a [`multiproc_shm::Shared`] — a segment across processes, or
//! `Shared::heap` for tests, loom models and fuzzing. The control block is the `SharedLayout`,
//! the data area (SPSC bytes, MPMC slots) is its tail; the geometry is validated once by the
//! layout's `validate` and used from the handle's local copy.

use crate::error::RingError;
use multiproc_shm::ShmError;

/// A `Shared` error as a ring error: a control block that fails validation is `Corrupted`
/// (as it always was for rings); everything else is the segment layer's error.
pub(crate) fn ring_err(e: ShmError) -> RingError {
    match e {
        ShmError::Corrupted(what) => RingError::Corrupted(what),
        e => RingError::Shm(e),
    }
}
