//! The fault-injection hooks of this crate's tests (feature `test-hooks`): a sender thread that
//! stalls once, worker starts whose threads fail to start. Without the feature they do nothing.
#[cfg(feature = "test-hooks")]
use crate::facade::{AtomicU64, Ordering};
#[cfg(feature = "test-hooks")]
use std::time::Duration;

/// Test hook: thread starts of a new worker that fail on purpose (see `__fail_thread_spawns`).
#[cfg(feature = "test-hooks")]
static FAIL_THREAD_SPAWNS: crate::facade::AtomicU32 = crate::facade::AtomicU32::new(0);

/// Test hook: milliseconds the next sender thread to find work waits before taking it.
#[cfg(feature = "test-hooks")]
static STALL_NEXT_SENDER_MS: AtomicU64 = AtomicU64::new(0);

/// Test hook (feature `test-hooks`, for this crate's tests): the next sender thread that finds
/// work for its worker waits `d` before taking the job (between its check of the worker and
/// the take), once.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn __stall_next_sender(d: Duration) {
    STALL_NEXT_SENDER_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

pub(super) fn stall_sender_hook() {
    #[cfg(feature = "test-hooks")]
    stall_sender_hook_armed();
}

#[cfg(feature = "test-hooks")]
fn stall_sender_hook_armed() {
    // Relaxed: a test hook; nothing is published through it. A load first: no locked
    // read-modify-write per job sent when the hook is unarmed.
    if STALL_NEXT_SENDER_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let ms = STALL_NEXT_SENDER_MS.swap(0, Ordering::Relaxed);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Test hook (feature `test-hooks`, for this crate's tests): the next `n` worker starts fail
/// to start their sender thread (after the receiver thread started), as when the process runs
/// out of threads.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn __fail_thread_spawns(n: u32) {
    FAIL_THREAD_SPAWNS.store(n, Ordering::Relaxed);
}

/// Whether this thread start fails on purpose (test hook; always false without the feature).
pub(super) fn fail_thread_spawn_hook() -> bool {
    #[cfg(feature = "test-hooks")]
    return FAIL_THREAD_SPAWNS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    #[cfg(not(feature = "test-hooks"))]
    false
}
