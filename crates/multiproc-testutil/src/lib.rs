//! Test helpers shared by the cross-process test suites: fork a child that runs a closure,
//! wait for it with a deadline, kill it; unique segment names.
//!
//! The child runs only the closure and leaves with `_exit` (no destructors, no atexit handlers,
//! so it never unlinks its parent's segments). Closures should touch only pre-built shared
//! objects and avoid allocating: the test harness is multi-threaded, and another thread may have
//! held the allocator's lock at the fork.

use std::time::{Duration, Instant};

/// A forked child.
pub struct Child {
    /// Its pid.
    pub pid: libc::pid_t,
    reaped: bool,
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Forks; the child runs `f` and exits with its return value.
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: fork has no memory-safety preconditions; the child only runs `f` then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: _exit never returns and is async-signal-safe.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

impl Child {
    /// Waits at most `timeout` for the child to end; kills it and panics on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Exit {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: valid out-pointer; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return if libc::WIFEXITED(status) {
                    Exit::Code(libc::WEXITSTATUS(status))
                } else {
                    Exit::Signal(libc::WTERMSIG(status))
                };
            }
            assert!(
                r == 0,
                "waitpid failed: {}",
                std::io::Error::last_os_error()
            );
            if Instant::now() >= deadline {
                self.kill();
                panic!("child {} did not finish within {timeout:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (30 s at most) and asserts a clean exit with code 0.
    pub fn join_ok(mut self) {
        assert_eq!(
            self.wait_timeout(Duration::from_secs(30)),
            Exit::Code(0),
            "child {} failed",
            self.pid
        );
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: plain syscalls on our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.reaped = true;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A unique segment name for a test.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether /dev/shm/multiproc.NAME exists.
pub fn shm_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/multiproc.{name}")).exists()
}

impl Child {
    /// Whether the child is still running (reaps it and returns its exit if not).
    pub fn exited(&mut self) -> Option<Exit> {
        if self.reaped {
            return None;
        }
        let mut status = 0;
        // SAFETY: valid out-pointer; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == self.pid {
            self.reaped = true;
            return Some(if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else {
                Exit::Signal(libc::WTERMSIG(status))
            });
        }
        None
    }
}
