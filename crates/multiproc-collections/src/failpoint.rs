//! Crash points for the crash-consistency tests (cargo feature `failpoints`, off by default;
//! without it `hit` is an empty inline function).
//!
//! A test forks a child, calls [`arm`]`(n)` in it and runs operations: the child SIGKILLs itself
//! at the `n`-th crash point, i.e. between two specific stores of the update protocol. Looping
//! `n` over every point checks each possible interruption deterministically, which random kills
//! reach only by luck (the commit-to-apply window is a few instructions wide).

#[cfg(feature = "failpoints")]
mod imp {
    use crate::facade::{AtomicU64, Ordering};

    // Process-local (not in shared memory): each forked child arms its own countdown.
    static COUNTDOWN: AtomicU64 = AtomicU64::new(0);

    /// SIGKILL this process at the `n`-th crash point from now (0 disarms).
    pub fn arm(n: u64) {
        COUNTDOWN.store(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn hit() {
        let c = COUNTDOWN.load(Ordering::Relaxed);
        if c != 0 {
            COUNTDOWN.store(c - 1, Ordering::Relaxed);
            if c == 1 {
                // SAFETY: plain syscalls; SIGKILL ends the process here, like an outside kill.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
        }
    }
}

#[cfg(feature = "failpoints")]
pub use imp::arm;
#[cfg(feature = "failpoints")]
pub(crate) use imp::hit;

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit() {}
