//! Errors of ring operations: one type per operation family.

use multiproc_shm::ShmError;

/// Why a record could not be written (push or reserve). The caller still holds the payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PushError {
    /// No room now (non-blocking forms only).
    #[error("ring is full")]
    Full,
    /// The record is larger than the ring's largest record; it was not written (never truncated).
    #[error("record of {len} bytes exceeds the ring's max record size of {max} bytes")]
    TooLarge {
        /// The record's length.
        len: usize,
        /// The ring's limit.
        max: usize,
    },
    /// The deadline passed while waiting for room.
    #[error("timed out waiting for room in the ring")]
    Timeout,
    /// The consumer closed its end or died (or the ring was closed).
    #[error("the ring's other side is closed or dead")]
    Disconnected,
    /// The shared control block holds impossible values.
    #[error("ring corrupted: {0}")]
    Corrupted(&'static str),
}

/// Why no record could be read (pop or peek).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PopError {
    /// Nothing to read now (non-blocking forms only).
    #[error("ring is empty")]
    Empty,
    /// The deadline passed while waiting for a record.
    #[error("timed out waiting for a record")]
    Timeout,
    /// The ring is empty and the producer closed its end or died (or the ring was closed).
    #[error("the ring is empty and its other side is closed or dead")]
    Disconnected,
    /// The shared control block or a record header holds impossible values.
    #[error("ring corrupted: {0}")]
    Corrupted(&'static str),
}

/// Why a ring could not be created, opened or attached to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The segment layer failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// Bad parameters (an SPSC capacity not a power of two; a size or slot count too small or
    /// too large).
    #[error("invalid ring parameters: {0}")]
    InvalidParams(&'static str),
    /// The control block does not describe a valid ring.
    #[error("ring control block corrupted: {0}")]
    Corrupted(&'static str),
    /// Another live process (or handle) is already this ring's producer/consumer.
    #[error("the ring already has a live {side} (pid {pid})")]
    AlreadyAttached {
        /// "producer" or "consumer".
        side: &'static str,
        /// Its pid.
        pid: u32,
    },
    /// That side closed the ring; it cannot be attached again.
    #[error("the ring's {0} side was closed")]
    Closed(&'static str),
}
