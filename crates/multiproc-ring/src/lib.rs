//! Lock-free rings in shared memory: the engine under every multiproc Pipe, Queue and Pool.
//!
//! * [`SpscRing`]: single-producer single-consumer byte ring of variable-length records, with
//!   zero-copy [`Producer::try_reserve`]/[`WriteGrant::commit`] and
//!   [`Consumer::try_peek`]/[`ReadGrant::release`], copying and batch forms.
//! * [`MpmcRing`]: bounded multi-producer multi-consumer ring of fixed-size slots (Vyukov's
//!   queue, as crossbeam's `ArrayQueue`), each slot holding one record up to the slot size;
//!   a slot claimed by a process that died is recovered (see `docs/ring.md`).
//! * [`WaitStrategy`]: spin, spin-then-yield, spin-then-futex-park (default), park.
//!
//! Both rings are written over a raw region (control block + data) so the same code runs on
//! the heap (tests, loom, fuzzing) and in a [`multiproc_shm::Segment`] across processes.
//!
//! ```
//! use multiproc_ring::MpmcRing;
//! let q = MpmcRing::new(64, 56).unwrap();
//! q.try_push(b"job").unwrap();
//! let mut v = Vec::new();
//! q.try_pop_into(&mut v).unwrap();
//! assert_eq!(v, b"job");
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

#[doc(hidden)]
pub mod copy;
mod error;
mod facade;
mod ident;
pub mod mpmc;
mod region;
pub mod spsc;
mod wait;

pub use error::{PopError, PushError, RingError};
pub use facade::CachePadded;
pub use mpmc::MpmcRing;
pub use spsc::{Consumer, Producer, ReadGrant, SpscRing, WriteGrant};
pub use wait::{CHECK_EVERY, WaitStrategy};
