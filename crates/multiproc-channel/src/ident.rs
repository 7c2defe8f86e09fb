//! This process's pid (cached, reset in a forked child) and a fork counter, so a handle can tell
//! cheaply whether it may have been copied into another process by `fork`; its identity word
//! (`pid << 32 | low 32 bits of its start time`) for the queue's peer accounting; and the fork
//! hooks that hand a parent's queue registrations over to its child (see `peers`).

use crate::facade::{AtomicBool, AtomicU32, AtomicU64, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
/// This process's identity word (0: not computed yet).
static WORD: AtomicU64 = AtomicU64::new(0);
/// Bumped in the parent before every fork (the child inherits the bumped value).
static FORKS: AtomicU64 = AtomicU64::new(0);
static HOOK_REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    crate::queue::fork_prepare();
}

extern "C" fn in_parent() {
    crate::queue::fork_parent();
}

extern "C" fn in_child() {
    let parent = PID.swap(0, Ordering::Relaxed);
    WORD.store(0, Ordering::Relaxed);
    crate::queue::fork_child(parent);
}

/// Registers the fork handlers once, never blocking: a `std::sync::Once` here could be caught
/// mid-initialization by a `fork` in another thread, leaving the child's copy "running" forever.
extern "C" fn install() {
    // Relaxed: the flag only deduplicates registration; nothing is published through it.
    if !HOOK_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: the handlers only touch atomics, process-local memory under a lock the
        // prepare handler took, and `open`/`read` of /proc (async-signal safe, no allocation).
        unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
    }
}

/// Registers the handlers at load time, before `main` and before any thread can fork.
#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL_AT_LOAD: extern "C" fn() = install;

/// This process's pid.
#[inline]
pub(crate) fn pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 { p } else { pid_slow() }
}

#[cold]
fn pid_slow() -> u32 {
    install();
    // SAFETY: getpid has no preconditions (and is async-signal safe, as the fork hook needs).
    let p = unsafe { libc::getpid() } as u32;
    PID.store(p, Ordering::Relaxed);
    p
}

/// Forks made by this process (or its ancestors, as inherited) since the hook was installed.
pub(crate) fn forks() -> u64 {
    install();
    FORKS.load(Ordering::Relaxed)
}

/// This process's identity word: `pid << 32 | low 32 bits of its start time` (cached).
pub(crate) fn word() -> u64 {
    let w = WORD.load(Ordering::Relaxed);
    if w != 0 {
        return w;
    }
    let p = pid();
    let w = (u64::from(p) << 32) | u64::from(start_time_of(p).unwrap_or(0) as u32);
    WORD.store(w, Ordering::Relaxed);
    w
}

/// Whether the process an identity word names is alive (a zombie is dead; a start-time part of
/// 0, unknown, matches any start time). Reads /proc: slow paths only.
pub(crate) fn word_alive(w: u64) -> bool {
    let (pid, lo) = ((w >> 32) as u32, w as u32);
    pid != 0
        && multiproc_shm::ProcessId::of(pid)
            .is_some_and(|p| (lo == 0 || p.start_time as u32 == lo) && p.is_alive())
}

/// The start time (field 22 of `/proc/PID/stat`) read without allocating, so the fork hook may
/// call it in the child of a threaded parent.
fn start_time_of(pid: u32) -> Option<u64> {
    let mut path = [0u8; 32];
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
    path[n] = 0;
    let mut buf = [0u8; 1024];
    // SAFETY: `path` is NUL-terminated; `buf` is a writable local buffer of the length given.
    let len = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let r = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        r
    };
    let text = buf.get(..usize::try_from(len).ok()?)?;
    let close = text.iter().rposition(|&b| b == b')')?;
    // After comm: state is field 3; starttime is field 22, the 20th field after comm.
    let field = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    let mut t: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        t = t.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn start_time_matches_proc_info() {
        let p = super::pid();
        assert_eq!(
            super::start_time_of(p),
            multiproc_shm::start_time_of(p),
            "no-alloc /proc reader agrees with multiproc-shm"
        );
    }
}
