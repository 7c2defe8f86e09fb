//! Test helpers: forked children with bounded waits, and a shared page of counters.
#![allow(dead_code, clippy::disallowed_types)]

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A forked child process. Killed and reaped on drop if still running.
pub struct Child {
    pub pid: libc::pid_t,
    reaped: bool,
}

/// Forks; the child runs `f` and `_exit`s with its return value (101 on panic).
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: fork has no preconditions; the child only runs `f` and then `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

impl Child {
    /// Waits up to `d`; Some(exit code, or 128 + signal) once it ended.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<i32> {
        let deadline = Instant::now() + d;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (10 s at most) and returns the exit code; panics (after killing it) on a hang.
    pub fn join(&mut self) -> i32 {
        match self.wait_timeout(Duration::from_secs(10)) {
            Some(c) => c,
            None => {
                self.kill();
                panic!("child {} hung", self.pid);
            }
        }
    }

    /// Asserts a clean exit.
    pub fn join_ok(&mut self) {
        let c = self.join();
        assert_eq!(c, 0, "child {} exited with {c}", self.pid);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let mut status = 0;
            // SAFETY: as above.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            self.reaped = true;
        }
    }

    /// SIGKILL without reaping (the child stays a zombie: still counts as dead).
    pub fn kill_no_reap(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A shared anonymous page of counters, inherited by forked children.
pub struct Shared {
    ptr: *mut AtomicU64,
}

// SAFETY: the page holds atomics only.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    pub fn new() -> Shared {
        // SAFETY: a fresh shared anonymous mapping of one page (zeroed).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Shared { ptr: p.cast() }
    }

    /// Counter `i` (0..512).
    pub fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < 512);
        // SAFETY: inside the page; AtomicU64 over zeroed shared memory is valid.
        unsafe { &*self.ptr.add(i) }
    }

    pub fn get(&self, i: usize) -> u64 {
        self.at(i).load(Ordering::SeqCst)
    }

    pub fn add(&self, i: usize, n: u64) -> u64 {
        self.at(i).fetch_add(n, Ordering::SeqCst)
    }

    pub fn set(&self, i: usize, v: u64) {
        self.at(i).store(v, Ordering::SeqCst)
    }

    /// Polls until counter `i` reaches `v` (10 s at most).
    pub fn wait_for(&self, i: usize, v: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get(i) < v {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping the page we mapped.
        unsafe { libc::munmap(self.ptr.cast(), 4096) };
    }
}

/// Unused import guard for AtomicU32 in some test files.
pub type U32 = AtomicU32;

/// Lower-bound timing check with slack: `elapsed >= want - 10 ms`.
pub fn at_least(elapsed: Duration, want: Duration) -> bool {
    elapsed + Duration::from_millis(10) >= want
}
