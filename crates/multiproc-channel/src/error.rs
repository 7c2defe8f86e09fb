//! Errors: one type per operation family. `put` errors hand the item back.

use crate::codec::CodecError;
use multiproc_ring::RingError;
use multiproc_shm::ShmError;

/// Why a pipe or queue could not be created, opened or received from another process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The ring layer failed.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The segment layer failed (includes a type-fingerprint mismatch on open).
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// Bad parameters.
    #[error("invalid parameters: {0}")]
    InvalidParams(&'static str),
    /// The shared control block holds impossible values.
    #[error("corrupted: {0}")]
    Corrupted(&'static str),
}

/// Why `send`/`send_bytes` failed. The caller still holds the message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// This end was closed (Python: `OSError("handle is closed")`).
    #[error("the connection is closed")]
    Closed,
    /// This end cannot send (the read end of a simplex pipe; Python: `OSError`).
    #[error("the connection is read-only")]
    NotWritable,
    /// Another live process is bound to this end (it was used there first).
    #[error("this end is in use by another live process")]
    InUse,
    /// The other end closed or died.
    #[error("the other end of the pipe is closed or dead")]
    Disconnected,
    /// Larger than the configured maximum message size: nothing was sent.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `send_bytes` offset/size outside the buffer (Python: `ValueError`).
    #[error("bad range: offset {offset} size {size:?} for a buffer of {len} bytes")]
    BadRange {
        /// Offset asked for.
        offset: usize,
        /// Size asked for.
        size: Option<usize>,
        /// Buffer length.
        len: usize,
    },
    /// The deadline passed (only `send_timeout`); a large message may be partly written,
    /// and the connection is then unusable for sending (`Closed` afterwards).
    #[error("timed out sending")]
    Timeout,
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The ring is corrupted.
    #[error("corrupted: {0}")]
    Corrupted(&'static str),
}

/// Why `recv`/`recv_bytes`/`recv_bytes_into`/`poll` failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// This end was closed (Python: `OSError("handle is closed")`).
    #[error("the connection is closed")]
    Closed,
    /// This end cannot receive (the write end of a simplex pipe; Python: `OSError`).
    #[error("the connection is write-only")]
    NotReadable,
    /// Another live process is bound to this end (it was used there first).
    #[error("this end is in use by another live process")]
    InUse,
    /// The other end closed (or died) and everything it sent was read (Python: `EOFError`).
    #[error("end of file: the other end is closed and the pipe is drained")]
    Eof,
    /// Nothing arrived within the timeout (the connection stays usable).
    #[error("timed out waiting for a message")]
    Timeout,
    /// `recv_bytes_into` got a buffer shorter than the message; the message stays in the
    /// connection for the next receive (Python: `BufferTooShort`).
    #[error("buffer too short: the message needs {needed} bytes")]
    BufferTooShort {
        /// Bytes needed (message length, plus the offset asked for).
        needed: usize,
    },
    /// The message is larger than the receiver's maximum.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Decoding failed (the message is consumed).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A message was lost: its sender died mid-message, or this end took over a ring from a dead
    /// reader in the middle of a message. Reported once per lost message; the next receive
    /// starts at the next whole message.
    #[error("message lost: {0}")]
    Lost(&'static str),
    /// The ring is corrupted.
    #[error("corrupted: {0}")]
    Corrupted(&'static str),
}

/// Why a `put` failed; the item is handed back where it was not sent.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PutError<T> {
    /// The queue holds `maxsize` items (non-blocking put; Python: `queue.Full`).
    #[error("queue is full")]
    Full(T),
    /// Still full at the deadline (Python: `queue.Full` after `timeout`).
    #[error("timed out: queue still full")]
    Timeout(T),
    /// The queue was closed (Python: `ValueError`).
    #[error("queue is closed")]
    Closed(T),
    /// Every consumer is gone (dropped, closed, or its process dead): nobody would get it.
    #[error("queue is disconnected: every consumer is gone")]
    Disconnected(T),
    /// Larger than the queue's maximum message size.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The item.
        item: T,
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Encoding failed (Python reports this late, from the feeder thread; here at `put`).
    #[error("{1}")]
    Codec(T, CodecError),
    /// A large message's side segment could not be made.
    #[error("side segment for a large message: {1}")]
    Io(T, String),
    /// The queue is corrupted.
    #[error("corrupted: {1}")]
    Corrupted(T, &'static str),
}

impl<T> PutError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Timeout(t)
            | PutError::Closed(t)
            | PutError::Disconnected(t)
            | PutError::TooLarge { item: t, .. }
            | PutError::Codec(t, _)
            | PutError::Io(t, _)
            | PutError::Corrupted(t, _) => t,
        }
    }
}

impl<T> std::fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Timeout(_) => f.write_str("Timeout(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Disconnected(_) => f.write_str("Disconnected(..)"),
            PutError::TooLarge { len, max, .. } => {
                write!(f, "TooLarge {{ len: {len}, max: {max} }}")
            }
            PutError::Codec(_, e) => write!(f, "Codec({e:?})"),
            PutError::Io(_, e) => write!(f, "Io({e:?})"),
            PutError::Corrupted(_, e) => write!(f, "Corrupted({e:?})"),
        }
    }
}

/// Why a `get` failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing to get now (non-blocking get; Python: `queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// Nothing arrived within the timeout (Python: `queue.Empty` after `timeout`).
    #[error("timed out: queue still empty")]
    Timeout,
    /// The queue was closed (by this handle: Python's `ValueError`; by another: after draining).
    #[error("queue is closed")]
    Closed,
    /// Every producer is gone (dropped, closed, or its process dead) and the queue is drained.
    #[error("queue is disconnected: every producer is gone and the queue is drained")]
    Disconnected,
    /// Decoding failed (the item is consumed).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A large message's side segment vanished (its sender or a reader died mid-way).
    #[error("large message lost: {0}")]
    Lost(String),
    /// The queue is corrupted.
    #[error("corrupted: {0}")]
    Corrupted(&'static str),
}

/// Why `task_done` failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskDoneError {
    /// More `task_done` calls than items put (Python: `ValueError('task_done() called too many
    /// times')`).
    #[error("task_done() called too many times")]
    TooManyCalls,
}

/// Why `join_timeout` returned without all tasks done.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// Unfinished tasks remain at the deadline.
    #[error("timed out with {unfinished} unfinished tasks")]
    Timeout {
        /// Unfinished count at the deadline.
        unfinished: u32,
    },
}
