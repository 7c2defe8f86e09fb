//! Python's `multiprocessing` channels over shared-memory rings: [`Pipe`]/[`Connection`],
//! [`Queue`], [`JoinableQueue`], [`SimpleQueue`], typed, kill-safe, with no feeder thread.
//!
//! * Messages are encoded by a [`Codec`]: [`Postcard`] (serde) by default, straight into the
//!   ring's reserved space; [`Plain`] copies plain-data types as they are.
//! * A pipe is one SPSC byte ring per direction; a queue is an MPMC ring of slots plus a small
//!   control block (exact `maxsize`, unfinished-task count).
//! * Messages of any size up to a maximum (64 MiB by default): pipes split large ones into
//!   contiguous ring records, queues pass them through a side segment in `/dev/shm`.
//! * A process killed at any point loses at most its own in-flight message; the others get
//!   `Eof`/`Disconnected` or carry on (the rings recover dead claimers).
//! * Handles serialize as segment handles, so they can be passed to spawned processes.
//! * Async: `recv_async`/`send_async` on connections, `get_async`/`put_async`/`join_async` on
//!   queues: runtime-agnostic futures woken across processes by a per-process notifier
//!   (`docs/async.md`).
//!
//! ```
//! use multiproc_channel::{Pipe, Queue};
//! let q: Queue<(u32, String)> = Queue::new(16).unwrap();
//! q.put((1, "job".into())).unwrap();
//! assert_eq!(q.get().unwrap(), (1, "job".to_string()));
//!
//! let (mut parent, mut child) = Pipe::duplex::<Vec<u8>>().unwrap();
//! child.send(&vec![1, 2, 3]).unwrap();
//! assert_eq!(parent.recv().unwrap(), vec![1, 2, 3]);
//! ```
//!
//! See `docs/channel.md` for the design, the Python mapping and figures.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod codec;
mod error;
mod facade;
mod ident;
mod peers;
pub mod pipe;
pub mod queue;

#[cfg(feature = "bitcode")]
pub use codec::Bitcode;
pub use codec::{Codec, CodecError, Plain, Postcard};
pub use error::{ChannelError, GetError, JoinError, PutError, RecvError, SendError, TaskDoneError};
#[cfg(not(loom))]
pub use pipe::SendFuture;
pub use pipe::{
    ConnIntoIter, ConnIter, ConnTryIter, Connection, Pipe, PipeMode, PipeOptions, Sentinel,
    Waitable, wait,
};
pub use queue::{
    IntoIter, Iter, JoinableQueue, Queue, QueueOptions, Receiver, Sender, SimpleQueue, TryIter,
};
