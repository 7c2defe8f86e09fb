//! Shared by the obj_* targets of multiproc-sync: the scribble op and the call timeout.
#![allow(dead_code)]

use multiproc_shm::Segment;
use std::time::Duration;

/// Every blocking call's timeout.
pub const T: Duration = Duration::from_micros(200);

/// At most this many ops per input.
pub const MAX_OPS: usize = 64;

/// The header's init-state word (`multiproc_shm::header::INIT_STATE_OFFSET`).
const INIT_STATE: std::ops::Range<usize> = 44..48;

/// Writes up to 16 bytes anywhere in the segment (header included), as a hostile process could.
/// Returns whether it touched the header's init state: opening such a segment again waits (up
/// to the shm layer's default open timeout, several seconds) for a Ready that never comes —
/// bounded, but longer than libFuzzer's per-input limit, so targets skip `Reopen` after it.
pub fn scribble(seg: &Segment, at: u32, bytes: &[u8]) -> bool {
    let len = seg.mapped_len();
    let n = bytes.len().min(16);
    let at = at as usize % len;
    seg.scribble(at, &bytes[..n]);
    at < INIT_STATE.end && at + n > INIT_STATE.start
}
