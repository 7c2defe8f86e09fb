//! Process plumbing for workloads: fork a child pinned to a CPU, wait for it with a deadline.
//!
//! The bench forks from a single-threaded parent (nothing here starts threads), so forked
//! children may allocate freely.

use std::time::{Duration, Instant};

/// Number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Pins the calling process to `cpu` (modulo the CPU count). Pinning failure is not fatal.
pub fn pin_to_cpu(cpu: usize) {
    let n = cpus();
    if n < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A forked child process.
pub struct Child {
    pid: libc::pid_t,
    done: bool,
}

/// Forks a child pinned to `cpu` that runs `f` and exits with its return code.
pub fn fork_pinned(cpu: Option<usize>, f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the bench parent is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if let Some(c) = cpu {
            pin_to_cpu(c);
        }
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Child { pid, done: false }
}

impl Child {
    /// Waits up to `timeout`; returns the exit code, or an error (the child is killed on timeout).
    pub fn wait(&mut self, timeout: Duration) -> Result<i32, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: valid out-pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.done = true;
                if libc::WIFEXITED(status) {
                    return Ok(libc::WEXITSTATUS(status));
                }
                return Err(format!("child killed by signal {}", libc::WTERMSIG(status)));
            }
            if r < 0 {
                return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("child did not finish within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Kills and reaps the child.
    pub fn kill(&mut self) {
        if !self.done {
            // SAFETY: plain syscalls on our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.done = true;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for every child; Ok only if all exited 0.
pub fn wait_all(children: &mut [Child], timeout: Duration) -> Result<(), String> {
    for c in children.iter_mut() {
        match c.wait(timeout)? {
            0 => {}
            code => return Err(format!("child exited with code {code}")),
        }
    }
    Ok(())
}
