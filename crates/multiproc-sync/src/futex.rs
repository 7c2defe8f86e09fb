//! Shared futex: wait and wake on a `u32` in shared memory, across processes.
//!
//! Never uses `FUTEX_PRIVATE_FLAG` (private futexes key on the address space and cannot wake another
//! process). Waits may return spuriously; callers loop on their condition. Timeouts are relative
//! and measured on CLOCK_MONOTONIC by the kernel.
//!
//! Under `cfg(loom)` a wait is a `yield_now` (a legal spurious wake-up) and a wake does nothing,
//! so loom explores the algorithms above without a kernel.
//!
//! ```
//! use multiproc_sync::futex;
//! use std::sync::atomic::AtomicU32;
//! use std::time::Duration;
//! let word = AtomicU32::new(0);
//! // The word is not 1, so the wait returns at once.
//! assert_eq!(futex::wait(&word, 1, Some(Duration::from_millis(10))), futex::WaitResult::ValueChanged);
//! assert_eq!(futex::wake(&word, 1), 0);
//! ```

use crate::facade::AtomicU32;
use std::time::Duration;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken (or spuriously returned): re-check the condition.
    Woken,
    /// The word did not hold the expected value when the wait began.
    ValueChanged,
    /// The timeout elapsed.
    TimedOut,
    /// A signal interrupted the wait: re-check and wait again.
    Interrupted,
}

/// Sleeps while `*word == expected`, at most `timeout` (None: no limit).
#[cfg(not(loom))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (AtomicU32 has u32's
    // layout); FUTEX_WAIT without the private flag only reads it; ts_ptr is null or points to a
    // live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            0usize,
            0u32,
        )
    };
    if r == 0 {
        return WaitResult::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitResult::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitResult::TimedOut,
        Some(libc::EINTR) => WaitResult::Interrupted,
        _ => WaitResult::Woken,
    }
}

/// Wakes up to `n` waiters on `word`; returns how many were woken.
#[cfg(not(loom))]
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a valid u32; FUTEX_WAKE does not access memory besides keying on it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            0usize,
            0usize,
            0u32,
        )
    };
    r.max(0) as usize
}

/// Wakes every waiter on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// Loom stand-in: a spurious wake-up.
#[cfg(loom)]
pub fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> WaitResult {
    if word.load(crate::facade::Ordering::SeqCst) != expected {
        return WaitResult::ValueChanged;
    }
    loom::thread::yield_now();
    WaitResult::Woken
}

/// Loom stand-in: waiters re-check on their own.
#[cfg(loom)]
pub fn wake(_word: &AtomicU32, _n: u32) -> usize {
    0
}

/// Remaining time until `deadline`, or None if it has passed.
pub fn remaining(deadline: std::time::Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(std::time::Instant::now())
        .filter(|d| !d.is_zero())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_times_out() {
        let w = AtomicU32::new(5);
        let t = Instant::now();
        assert_eq!(
            wait(&w, 5, Some(Duration::from_millis(50))),
            WaitResult::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(45));
    }

    #[test]
    fn wake_releases_a_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let h = std::thread::spawn(move || {
            while w2.load(crate::facade::Ordering::Acquire) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(5)));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, crate::facade::Ordering::Release);
        wake(&w, 1);
        h.join().unwrap();
    }
}
