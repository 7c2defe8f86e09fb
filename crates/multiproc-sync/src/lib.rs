//! Process-shared synchronization for multiproc: the shared futex, a robust mutex, and
//! `Value<T>` / `Array<T>` with `get_lock()`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod facade;
pub mod futex;
