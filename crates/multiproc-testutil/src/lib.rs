//! Test helpers shared by the cross-process test suites: fork a child that runs a closure,
//! wait for it with a deadline, kill it; unique segment names; a shared page of counters that
//! forked children see; a small deterministic rng.
//!
//! The child runs only the closure and leaves with `_exit` (no destructors, no atexit handlers,
//! so it never unlinks its parent's segments). Closures should touch only pre-built shared
//! objects and avoid allocating: the test harness is multi-threaded, and another thread may have
//! held the allocator's lock at the fork.

pub mod redis;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
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

impl Exit {
    /// The shell's number for it: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Forks; the child runs `f` and exits with its return value.
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    fork_pinned(None, f)
}

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

/// Forks; the child pins itself to `cpu` (if given, see [`pin_to_cpu`]), runs `f` and exits
/// with its return value (101 if it panicked).
pub fn fork_pinned(cpu: Option<usize>, f: impl FnOnce() -> i32) -> Child {
    // SAFETY: fork has no memory-safety preconditions; the child only runs `f` then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if let Some(c) = cpu {
            pin_to_cpu(c);
        }
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: _exit never returns and is async-signal-safe.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

impl Child {
    /// Waits at most `timeout` for the child to end; kills it and panics on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Exit {
        assert!(!self.reaped, "child {} was already reaped", self.pid);
        match self.try_wait_timeout(timeout) {
            Some(e) => e,
            None => {
                self.kill();
                panic!("child {} did not finish within {timeout:?}", self.pid);
            }
        }
    }

    /// Waits at most `timeout` for the child to end; `None` on timeout, when the child is left
    /// running (dropping the `Child` kills it). Never panics. Sleeps on the child's pidfd, so
    /// it returns as soon as the child ends (a bench may time the wait).
    pub fn try_wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        // Our own unreaped child: its pid cannot be reused meanwhile.
        let pidfd = multiproc_shm::sys::pidfd_open(self.pid).ok();
        loop {
            if let Some(e) = self.exited() {
                return Some(e);
            }
            let now = Instant::now();
            if self.reaped || now >= deadline {
                return None;
            }
            let left = (deadline - now).min(Duration::from_millis(100));
            match &pidfd {
                // Wakes when the child ends; errors and EINTR only end the slice early.
                Some(fd) => {
                    let _ = multiproc_shm::sys::poll_readable(fd.as_fd(), Some(left));
                }
                None => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        }
    }

    /// Waits at most `timeout` for the child's exit code, as an error what a bench reports: a
    /// signal, or a timeout (the child is then killed). Never panics.
    pub fn wait_code(&mut self, timeout: Duration) -> Result<i32, String> {
        match self.try_wait_timeout(timeout) {
            Some(Exit::Code(c)) => Ok(c),
            Some(Exit::Signal(s)) => Err(format!("child killed by signal {s}")),
            None => {
                self.kill();
                Err(format!("child did not finish within {timeout:?}"))
            }
        }
    }

    /// Waits (30 s at most) and asserts a clean exit with code 0.
    pub fn join_ok(mut self) {
        self.join_ok_within(Duration::from_secs(30));
    }

    /// Waits at most `timeout` and asserts a clean exit with code 0; kills the child and panics
    /// on timeout.
    pub fn join_ok_within(&mut self, timeout: Duration) {
        assert_eq!(
            self.wait_timeout(timeout),
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

    /// SIGKILLs the child without reaping it: it stays a zombie (which still counts as dead)
    /// until a wait, `kill` or the drop reaps it.
    pub fn kill_no_reap(&mut self) {
        if !self.reaped {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for every child (each at most `timeout`); `Ok` only if all exited with code 0.
pub fn wait_all(children: &mut [Child], timeout: Duration) -> Result<(), String> {
    for c in children.iter_mut() {
        match c.wait_code(timeout)? {
            0 => {}
            code => return Err(format!("child exited with code {code}")),
        }
    }
    Ok(())
}

/// The state letter of process `pid` in `/proc/PID/stat` (`R`, `S`, `D`, `Z`, ...); `None` if
/// there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|st| st.chars().next())
}

/// Whether `pid` runs: it exists and is not a zombie (or dead, `X`).
pub fn alive(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z' | 'X'))
}

/// This process's children as `/proc/self/task/*/children` lists them: (live, zombies).
pub fn children() -> (Vec<u32>, Vec<u32>) {
    let (mut live, mut zombies) = (Vec::new(), Vec::new());
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (live, zombies);
    };
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for pid in s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if proc_state(pid) == Some('Z') {
                zombies.push(pid);
            } else {
                live.push(pid);
            }
        }
    }
    (live, zombies)
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

/// Lower-bound timing check with slack: `elapsed >= want - 10 ms`.
pub fn at_least(elapsed: Duration, want: Duration) -> bool {
    elapsed + Duration::from_millis(10) >= want
}

/// A small xorshift generator (deterministic, for tests only).
pub struct Rng(pub u64);

impl Rng {
    /// The next value (the state must not be 0).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`0..1` for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One page of `u64` counters in a `MAP_SHARED` anonymous mapping: forked children inherit it,
/// so parent and children see each other's updates. Zeroed at creation; unmapped on drop.
pub struct Shared {
    ptr: *mut AtomicU64,
}

// SAFETY: the page holds atomics only, and the mapping lives as long as the value.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    /// The number of counters in the page.
    pub const LEN: usize = 512;

    /// Maps a fresh zeroed page.
    pub fn new() -> Shared {
        let p = multiproc_shm::sys::map_shared_anon(4096).expect("mmap failed");
        Shared {
            ptr: p.as_ptr().cast(),
        }
    }

    /// Counter `i` (`0..512`).
    pub fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < Self::LEN);
        // SAFETY: inside the page (512 zero-initialized u64s); AtomicU64 has u64's layout.
        unsafe { &*self.ptr.add(i) }
    }

    /// Reads counter `i` (SeqCst).
    pub fn get(&self, i: usize) -> u64 {
        self.at(i).load(Ordering::SeqCst)
    }

    /// Adds `n` to counter `i` (SeqCst); returns the previous value.
    pub fn add(&self, i: usize, n: u64) -> u64 {
        self.at(i).fetch_add(n, Ordering::SeqCst)
    }

    /// Sets counter `i` (SeqCst).
    pub fn set(&self, i: usize, v: u64) {
        self.at(i).store(v, Ordering::SeqCst)
    }

    /// Polls until counter `i` reaches `v` (10 s at most); false on timeout.
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
        if let Some(p) = std::ptr::NonNull::new(self.ptr.cast::<u8>()) {
            // SAFETY: the page mapped in `new`; `&self` borrows into it end with `self`.
            unsafe { multiproc_shm::sys::unmap(p, 4096) };
        }
    }
}

/// The thread-unparking waker of [`block_on`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor for tests that must show a future needs nothing from a runtime but a
/// `Waker`: polls `f` on this thread, parking between polls (thread park/unpark as the waker; no
/// reactor, no timer). Panics with "future never woke" past `deadline`: a lost wake-up leaves a
/// park to its `deadline`-long timeout and the loop to the deadline, never a hang.
pub fn block_on<F: std::future::IntoFuture>(f: F, deadline: Duration) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f.into_future());
    let end = Instant::now() + deadline;
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < end, "future never woke");
        std::thread::park_timeout(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_wait_timeout_reports_code_and_signal_and_does_not_panic_on_timeout() {
        let mut ok = fork(|| 3);
        assert_eq!(
            ok.try_wait_timeout(Duration::from_secs(10)),
            Some(Exit::Code(3))
        );
        assert_eq!(Exit::Code(3).code(), 3);
        let mut slow = fork(|| {
            std::thread::sleep(Duration::from_secs(60));
            0
        });
        assert_eq!(slow.try_wait_timeout(Duration::from_millis(20)), None);
        slow.kill_no_reap();
        let e = slow.try_wait_timeout(Duration::from_secs(10));
        assert_eq!(e, Some(Exit::Signal(libc::SIGKILL)));
        assert_eq!(e.unwrap().code(), 128 + libc::SIGKILL);
    }

    #[test]
    fn shared_counters_are_seen_by_the_parent() {
        let sh = Shared::new();
        let mut c = fork(|| {
            sh.add(7, 5);
            0
        });
        c.join_ok_within(Duration::from_secs(10));
        assert_eq!(sh.get(7), 5);
        assert!(sh.wait_for(7, 5));
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0);
    }
}
