//! Shared by the obj_* targets of multiproc-sync: the scribble op and the call timeout.
#![allow(dead_code)]

use multiproc_shm::Segment;
use std::time::Duration;

/// Every blocking call's timeout.
pub const T: Duration = Duration::from_millis(2);

/// At most this many ops per input.
pub const MAX_OPS: usize = 64;

/// Writes up to 16 bytes anywhere in the segment (header included), as a hostile process could.
pub fn scribble(seg: &Segment, at: u32, bytes: &[u8]) {
    let len = seg.mapped_len();
    let n = bytes.len().min(16);
    seg.scribble(at as usize % len, &bytes[..n]);
}
