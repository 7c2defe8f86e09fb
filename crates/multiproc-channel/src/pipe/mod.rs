//! `Pipe` and `Connection`: Python's `multiprocessing.Pipe` over two SPSC byte rings.
//!
//! A duplex pipe is two [`SpscRing`]s in memfd segments (one per direction); a simplex pipe is
//! one. Each message is one ring record `[tag][bytes]` when it fits the ring's largest record,
//! else a run of contiguous records: `FIRST [total: u64 LE][chunk]`, then `CONT [chunk]` until
//! `total` bytes arrived (one producer per ring, so fragments never interleave). A message is
//! never truncated; one larger than the pipe's `max_message` (default 64 MiB) is refused at
//! `send` with [`SendError::TooLarge`](crate::SendError::TooLarge).
//!
//! Messages are encoded straight into the ring's reserved space (`reserve` -> encode ->
//! `commit_len`) and decoded from the record in place (`peek` -> decode -> `release`); only
//! messages larger than [`SMALL_RESERVE`] (or than a ring record) go through a `Vec`.
//!
//! **Binding.** An end binds to the first process that uses it (send/recv/poll): that process
//! is recorded as the ring side's owner, and the peer sees `Eof`/`Disconnected` when it dies or
//! closes the end. So the Python pattern works: create a pipe, fork (or pass an end to a spawned
//! child), and let each process use its end. Dropping a bound end in its own process closes it;
//! dropping an unbound end closes it only if no fork happened and it was never serialized since
//! it was made (a forked child may own the copy); [`Connection::close`] always closes.
//! Known limit: an end that its process never used is bound to nobody, so if that process dies
//! the peer cannot tell (it waits until its timeout); [`Connection::bind`] binds eagerly.
//!
//! ```
//! use multiproc_channel::Pipe;
//! let (mut a, mut b) = Pipe::duplex::<String>().unwrap();
//! a.send(&"ping".to_string()).unwrap();
//! assert_eq!(b.recv().unwrap(), "ping");
//! b.send_bytes(b"xxpongxx", 2, Some(4)).unwrap();
//! assert_eq!(a.recv_bytes().unwrap(), b"pong");
//! ```

use crate::codec::{Codec, Postcard};
use crate::error::ChannelError;
use multiproc_ring::SpscRing;

#[cfg(not(loom))]
mod async_impl;
mod connection;
mod named;
mod wait;

#[cfg(not(loom))]
pub use async_impl::SendFuture;
pub use connection::{ConnIntoIter, ConnIter, ConnTryIter, Connection};
pub use wait::{Sentinel, Waitable, wait};

const WHOLE: u8 = 0;
const FIRST: u8 = 1;
const CONT: u8 = 2;
/// Bytes reserved for encoding in place before falling back to a sized `Vec`.
pub const SMALL_RESERVE: usize = 1024;
/// Default ring capacity per direction.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
/// Default largest message.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest `max_message` this process accepts: at create, from a named pipe's control block and
/// from a deserialized handle (64 MiB). A receiver never holds more than this for one message.
pub const MAX_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

/// Pipe parameters.
#[derive(Clone, Copy, Debug)]
pub struct PipeOptions {
    /// Ring bytes per direction (power of two, >= 4096).
    pub capacity: usize,
    /// Largest message in bytes (encoded), at most [`MAX_MESSAGE_LIMIT`].
    pub max_message: usize,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            capacity: DEFAULT_CAPACITY,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Which ways a named pipe carries messages (Python's `Pipe(duplex=...)`), for
/// [`Pipe::create_named`]. Anonymous pipes choose with [`Pipe::duplex`] / [`Pipe::simplex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeMode {
    /// Both ends send and receive (`duplex=True`).
    Duplex,
    /// The creator receives and the opener sends (`duplex=False`).
    Simplex,
}

/// The two ends a pipe constructor returns.
pub type Ends<T, C = Postcard> = (Connection<T, C>, Connection<T, C>);

/// Makes pipes.
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A duplex pipe with the default codec (postcard): both ends send and receive.
    pub fn duplex<T>() -> Result<Ends<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::duplex_with(PipeOptions::default())
    }

    /// A simplex pipe with the default codec: `(reader, writer)`, as Python's
    /// `Pipe(duplex=False)`.
    pub fn simplex<T>() -> Result<Ends<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::simplex_with(PipeOptions::default())
    }

    /// A duplex pipe with explicit options and codec.
    pub fn duplex_with<T, C: Codec<T>>(opts: PipeOptions) -> Result<Ends<T, C>, ChannelError> {
        check(&opts)?;
        let ab = SpscRing::new(opts.capacity)?;
        let ba = SpscRing::new(opts.capacity)?;
        Ok((
            Connection::new(Some(ab.clone()), Some(ba.clone()), opts.max_message),
            Connection::new(Some(ba), Some(ab), opts.max_message),
        ))
    }

    /// A simplex pipe with explicit options and codec: `(reader, writer)`.
    pub fn simplex_with<T, C: Codec<T>>(opts: PipeOptions) -> Result<Ends<T, C>, ChannelError> {
        check(&opts)?;
        let r = SpscRing::new(opts.capacity)?;
        Ok((
            Connection::new(None, Some(r.clone()), opts.max_message),
            Connection::new(Some(r), None, opts.max_message),
        ))
    }
}

fn check(opts: &PipeOptions) -> Result<(), ChannelError> {
    if !opts.capacity.is_power_of_two() || opts.capacity < 4096 {
        return Err(ChannelError::InvalidParams(
            "capacity must be a power of two >= 4096",
        ));
    }
    if opts.max_message == 0 || opts.max_message > MAX_MESSAGE_LIMIT {
        return Err(ChannelError::InvalidParams(
            "max_message must be in 1..=64 MiB",
        ));
    }
    Ok(())
}
