//! Shared by the obj_* targets: the call timeout (and the timer slack that makes it mean what it
//! says), and the scribble op of the sync objects' targets.
#![allow(dead_code)]

use multiproc_shm::Segment;
use std::time::Duration;

/// Every blocking call's timeout: longer than the objects' spin phase (200 spins), so a timed
/// call parks in the kernel before it gives up.
pub const T: Duration = Duration::from_micros(50);

/// Once per process: the thread's timer slack to 1 ns (default 50 µs), so a call with timeout
/// `T` sleeps about `T` rather than `T` + 50 µs (with one thread per target, every timed wait
/// runs to its deadline: the slack was most of an input's time).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: PR_SET_TIMERSLACK takes a number of nanoseconds; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    });
}

/// How long a pop waits for a live writer of the MPMC head slot in the targets (default
/// 200 ms): scribbles make that slot look claimed by a live process (often this one) on many
/// inputs, and each such pop then waited the whole default (`obj_mpmc` spent half its time in
/// `sched_yield`). The wait's logic is the same at any length.
pub const HEAD_PATIENCE: Duration = Duration::from_micros(200);

/// How many lost races or helped-past slots an MPMC push or pop retries before it reports the
/// ring corrupted (default 65,536): on a scribbled ring many calls ran to the bound, and those
/// loops' coverage callbacks were most of `obj_queue`'s time. One thread drives each target, so
/// no live race is lost here.
pub const MAX_RETRIES: u32 = 256;

/// Once per process: the MPMC head-writer patience to [`HEAD_PATIENCE`] and the retry bound to
/// [`MAX_RETRIES`].
pub fn short_ring_waits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        multiproc_ring::mpmc::set_head_writer_patience(HEAD_PATIENCE);
        multiproc_ring::mpmc::set_max_retries(MAX_RETRIES);
    });
}

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
