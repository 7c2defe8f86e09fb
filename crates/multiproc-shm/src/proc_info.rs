//! Process identity: a pid plus its start time, so a reused pid is never mistaken for the creator;
//! and this process's own identity, cached, for every crate above (the one home of "who am I
//! after a fork").
//!
//! The start time is field 22 of `/proc/PID/stat` (clock ticks since boot). A process is "the same"
//! only when both the pid and that start time match.
//!
//! # This process, across `fork`
//! [`current_pid`] and [`ProcessId::current`] are cached in statics and cleared in a forked child
//! by a `pthread_atfork` child handler registered at load time (from `.init_array`, before `main`
//! and before any thread can fork; a `std::sync::Once` there once deadlocked a forked child whose
//! parent had another thread inside `call_once`). [`fork_count`] is bumped by the prepare handler
//! in the parent before every fork, so a handle that records it can tell cheaply whether it may
//! have been copied into another process.
//!
//! Other crates' own child handlers may run before or after this one (the order of handlers
//! registered from different crates' `.init_array` entries is the link order); one that needs this
//! process's identity calls [`reset_identity_in_child`] first. Everything here is async-signal
//! safe and allocation-free on the paths a child handler takes: the `/proc` reader uses a stack
//! buffer and raw `open`/`read`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static FORKS: AtomicU64 = AtomicU64::new(0);
static HOOK_REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn before_fork() {
    // Relaxed: a counter read by this process (or the child, which inherits it) only.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn in_child() {
    reset_identity_in_child();
}

/// Clears the cached identity (idempotent; async-signal safe). Fork child handlers of other
/// crates call it before they use [`current_pid`] or [`ProcessId::current`], whatever the order
/// the handlers run in.
#[doc(hidden)]
pub fn reset_identity_in_child() {
    PID.store(0, Ordering::Relaxed);
    START.store(0, Ordering::Relaxed);
}

/// Registers the fork handlers once, never blocking.
extern "C" fn register() {
    // Relaxed: the flag only deduplicates registration; nothing is published through it. A
    // plain load first: after the first call (made at load time) this is a read, not a
    // locked read-modify-write, on every `fork_count`/`forks` call.
    if !HOOK_REGISTERED.load(Ordering::Relaxed) && !HOOK_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: both handlers only store to atomics (async-signal safe, valid in the child).
        unsafe { libc::pthread_atfork(Some(before_fork), None, Some(in_child)) };
    }
}

/// Registers the handlers at load time, before `main` and before any thread can fork.
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_LOAD: extern "C" fn() = register;

/// This process's pid (cached; cleared in a forked child). No syscall on the fast path.
#[inline]
pub fn current_pid() -> u32 {
    // Relaxed: the value is this process's own; a stale read is impossible (cleared in the child
    // before anything else of the child runs, or by `reset_identity_in_child`).
    let p = PID.load(Ordering::Relaxed);
    if p != 0 { p } else { current_pid_slow() }
}

#[cold]
fn current_pid_slow() -> u32 {
    register();
    // SAFETY: getpid has no preconditions (and is async-signal safe, as a fork handler needs).
    let p = unsafe { libc::getpid() } as u32;
    PID.store(p, Ordering::Relaxed);
    p
}

/// Forks made by this process (or its ancestors, as inherited) since the handlers were
/// registered: a handle that recorded it and sees it unchanged was not copied by `fork`.
pub fn fork_count() -> u64 {
    register();
    FORKS.load(Ordering::Relaxed)
}

/// A process identity that survives pid reuse: `(pid, start time in clock ticks since boot)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_time: u64,
}

impl ProcessId {
    /// This process (cached after the first call; cleared in a forked child). Allocation-free.
    #[inline]
    pub fn current() -> ProcessId {
        let pid = current_pid();
        // Relaxed: as for `PID`.
        let s = START.load(Ordering::Relaxed);
        if s != 0 {
            return ProcessId { pid, start_time: s };
        }
        ProcessId::current_slow(pid)
    }

    #[cold]
    fn current_slow(pid: u32) -> ProcessId {
        let start_time = start_time_of(pid).unwrap_or(0);
        // Relaxed: as for `PID`.
        START.store(start_time, Ordering::Relaxed);
        ProcessId { pid, start_time }
    }

    /// The process with this pid if it is running now.
    pub fn of(pid: u32) -> Option<ProcessId> {
        start_time_of(pid).map(|start_time| ProcessId { pid, start_time })
    }

    /// Whether this exact process (pid and start time) is still alive. A zombie counts as dead.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != b'Z' && state != b'X',
            None => false,
        }
    }
}

/// The start time (clock ticks since boot) of a running process, or `None` if there is none.
/// Allocation-free (a fork child handler may call it).
pub fn start_time_of(pid: u32) -> Option<u64> {
    read_stat(pid).map(|(_, t)| t)
}

/// Reads (state, starttime) from /proc/PID/stat into a stack buffer. The comm field may hold
/// spaces and parentheses, so parsing starts after the *last* ')'.
fn read_stat(pid: u32) -> Option<(u8, u64)> {
    if pid == 0 {
        return None;
    }
    // "/proc/" + at most 10 digits + "/stat" + NUL.
    let mut path = [0u8; 24];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 10];
    let (mut d, mut v) = (0, pid);
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    for &b in b"/stat" {
        path[n] = b;
        n += 1;
    }
    // A stat line is a few hundred bytes (52 numeric fields and a comm of at most 64 bytes).
    let mut buf = [0u8; 2048];
    let mut len = 0;
    // SAFETY: `path` is NUL-terminated (zero-initialised, at most 21 bytes written); reads go
    // into the unwritten tail of the local buffer, with its remaining length.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        while len < buf.len() {
            let r = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if r <= 0 {
                break;
            }
            len += r as usize;
        }
        libc::close(fd);
    }
    parse_stat(&buf[..len])
}

fn parse_stat(text: &[u8]) -> Option<(u8, u64)> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    // After comm: field 3 is state; starttime is field 22, i.e. the 20th after comm.
    let state = *fields.next()?.first()?;
    let field = fields.nth(18)?;
    let mut t: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        t = t.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((state, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line =
            b"123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(line), Some((b'S', 98765)));
        assert_eq!(parse_stat(b"123 (x) S 1 2"), None);
        assert_eq!(parse_stat(b"no paren"), None);
    }

    #[test]
    fn cached_identity_matches_the_kernel_and_proc() {
        let me = ProcessId::current();
        assert_eq!(me.pid, std::process::id());
        let text = std::fs::read_to_string(format!("/proc/{}/stat", me.pid)).unwrap();
        let after = &text[text.rfind(')').unwrap() + 1..];
        let start: u64 = after.split_whitespace().nth(19).unwrap().parse().unwrap();
        assert_eq!(me.start_time, start);
        assert_eq!(ProcessId::current(), me);
    }

    #[test]
    fn a_forked_child_sees_its_own_pid_and_a_bumped_fork_count() {
        let parent = ProcessId::current();
        let forks = fork_count();
        // SAFETY: the child only reads atomics, /proc (allocation-free) and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let me = ProcessId::current();
            // SAFETY: getpid has no preconditions.
            let real = unsafe { libc::getpid() } as u32;
            let ok = me.pid != parent.pid
                && me.pid == real
                && me.start_time != 0
                && fork_count() == forks + 1;
            // SAFETY: _exit without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(fork_count(), forks + 1);
        assert_eq!(ProcessId::current(), parent);
    }

    #[test]
    fn current_process_is_alive_and_fake_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let other = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!other.is_alive());
        assert!(
            !ProcessId {
                pid: 0,
                start_time: 0
            }
            .is_alive()
        );
    }
}
