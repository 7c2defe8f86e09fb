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

/// Most words one [`wait_many`] call takes (the kernel's `FUTEX_WAITV_MAX`).
pub const WAIT_MANY_MAX: usize = 128;

/// How a [`wait_many`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitManyResult {
    /// The word at this index was woken (others may have been too: re-check all).
    Woken(usize),
    /// Some word did not hold its expected value when the wait began (`EAGAIN`).
    ValueChanged,
    /// The timeout elapsed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
    /// The kernel has no `futex_waitv` (Linux < 5.16: `ENOSYS`), or refused the call.
    Unsupported,
}

/// `struct futex_waitv` of the kernel ABI.
#[cfg(not(loom))]
#[repr(C)]
#[derive(Clone, Copy)]
struct FutexWaitV {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: a 32-bit word, shared (no `FUTEX2_PRIVATE`: other processes wake it).
#[cfg(not(loom))]
const FUTEX2_SIZE_U32: u32 = 0x02;

/// Sleeps until any of `words` is woken while each `words[i].0` still holds `words[i].1`
/// (`futex_waitv(2)`, Linux >= 5.16), at most `timeout` (None: no limit). At most
/// [`WAIT_MANY_MAX`] words (more: `Unsupported`). Shared futexes, so a `FUTEX_WAKE` from
/// another process on any of the words ends the wait.
#[cfg(not(loom))]
pub fn wait_many(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> WaitManyResult {
    if words.is_empty() || words.len() > WAIT_MANY_MAX {
        return WaitManyResult::Unsupported;
    }
    let mut v = [FutexWaitV {
        val: 0,
        uaddr: 0,
        flags: 0,
        reserved: 0,
    }; WAIT_MANY_MAX];
    for (slot, (w, expected)) in v.iter_mut().zip(words) {
        *slot = FutexWaitV {
            val: u64::from(*expected),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        };
    }
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline (the clock `Instant` uses).
    let ts = timeout.map(|d| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let d = d.min(Duration::from_secs(86_400 * 365));
        let mut sec = now.tv_sec + d.as_secs() as libc::time_t;
        let mut nsec = now.tv_nsec + d.subsec_nanos() as libc::c_long;
        if nsec >= 1_000_000_000 {
            sec += 1;
            nsec -= 1_000_000_000;
        }
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        }
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `v[..n]` holds valid, aligned u32 addresses (from live `&AtomicU32`s borrowed for
    // the call); the kernel only reads them and the array; `ts_ptr` is null or a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            v.as_ptr(),
            words.len() as libc::c_uint,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return WaitManyResult::Woken(r as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitManyResult::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitManyResult::TimedOut,
        Some(libc::EINTR) => WaitManyResult::Interrupted,
        _ => WaitManyResult::Unsupported,
    }
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

/// Remaining time until `deadline`, or None if it has passed (multiproc-shm's deadline rule).
pub use multiproc_shm::deadline::left_nonzero as remaining;

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
    fn wait_many_is_woken_by_any_word_and_sees_changed_values() {
        let a = Arc::new(AtomicU32::new(0));
        let b = Arc::new(AtomicU32::new(0));
        // A word that already differs: EAGAIN at once.
        assert_eq!(
            wait_many(&[(&a, 0), (&b, 7)], Some(Duration::from_secs(5))),
            WaitManyResult::ValueChanged
        );
        assert_eq!(
            wait_many(&[(&a, 0)], Some(Duration::from_millis(5))),
            WaitManyResult::TimedOut
        );
        let b2 = b.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b2.store(1, crate::facade::Ordering::Release);
            wake(&b2, 1);
        });
        let r = wait_many(&[(&a, 0), (&b, 0)], Some(Duration::from_secs(10)));
        assert!(
            matches!(r, WaitManyResult::Woken(1) | WaitManyResult::ValueChanged),
            "{r:?}"
        );
        h.join().unwrap();
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
