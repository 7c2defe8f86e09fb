//! Shared-memory segments for multiproc.
//!
//! A [`Segment`] is a shared mapping whose first 256 bytes are a [`Header`]: magic, layout version,
//! object kind, the element type's fingerprint, sizes, the creator's identity and an init state.
//! Creators build the payload in place and then publish Ready; openers wait (bounded) for Ready
//! and validate everything before handing out a pointer. Objects keep their memory in a
//! [`Shared<L>`](Shared): a typed, validated container for an [`SharedLayout`] with geometry checked
//! once and kept locally. See `docs/architecture.md` ("Trust model").
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod deadline;
mod error;
pub mod fd_passing;
pub mod header;
mod proc_info;
mod segment;
pub mod shared;
pub mod sys;

pub use error::{Result, ShmError};
pub use header::{Expect, HEADER_SIZE, Header, ObjectKind, TypeFingerprint};
pub use proc_info::{ProcessId, current_pid, fork_count, reset_identity_in_child, start_time_of};
pub use segment::{
    DEFAULT_OPEN_TIMEOUT, NAME_PREFIX, Segment, SegmentHandle, SegmentSpec, Staleness, check_name,
    clean_stale, clean_stale_with, is_persistent_named, list_named, persistent, read_header_named,
    seals_of, staleness_of, unlink_name,
};
pub use shared::{KeepAlive, Shared, SharedLayout, TAIL_ALIGN, tail_offset};
