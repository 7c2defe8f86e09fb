//! `--load N`: N CPU-bound spinner processes (pure spin loops, not pinned) for the whole run.
//!
//! The guard kills them on drop (normal end and panic unwinding); each spinner also asks the
//! kernel for SIGKILL when the bench process dies (`PR_SET_PDEATHSIG`), which covers ctrl-c and
//! any other death of the bench.

/// The running spinners; dropping this kills and reaps them.
pub struct Spinners(Vec<libc::pid_t>);

/// Starts `n` spinners (forked before any other child, from the unpinned parent, so they may
/// run on any CPU).
pub fn start(n: usize) -> Spinners {
    // SAFETY: plain syscall.
    let parent = unsafe { libc::getpid() };
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: the bench parent is single-threaded; the child only spins and makes syscalls.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
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
        }
        pids.push(pid);
    }
    Spinners(pids)
}

impl Spinners {
    /// How many run.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain syscalls on our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
