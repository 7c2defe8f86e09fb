//! `--load N`: N CPU-bound spinner processes (pure spin loops, not pinned) for the whole run.
//!
//! The guard kills them on drop (normal end and panic unwinding); each spinner also asks the
//! kernel for SIGKILL when the bench process dies (`PR_SET_PDEATHSIG`), which covers ctrl-c and
//! any other death of the bench.

use multiproc_testutil::{Child, fork};

/// The running spinners; dropping this kills and reaps them (each [`Child`] does on drop).
pub struct Spinners(Vec<Child>);

/// Starts `n` spinners (forked before any other child, from the unpinned parent, so they may
/// run on any CPU).
pub fn start(n: usize) -> Spinners {
    // SAFETY: plain syscall.
    let parent = unsafe { libc::getpid() };
    // The bench parent is single-threaded; a child only spins and makes syscalls.
    let spinners = (0..n)
        .map(|_| {
            fork(|| {
                // SAFETY: prctl/getppid/_exit are async-signal-safe syscalls on this process only.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        libc::_exit(0);
                    }
                }
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    Spinners(spinners)
}

impl Spinners {
    /// How many run.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}
