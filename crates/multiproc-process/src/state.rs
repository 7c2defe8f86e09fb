//! Per-process global state: who this process is, the children it started (for
//! `active_children`, reaping of dropped handles and the at-exit join), and a long-lived
//! spawner thread. (The default start method is kept in `start_method`.)

use crate::facade::{AtomicBool, AtomicU8, Ordering};
use multiproc_shm::ProcessId;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

/// Set by `init()`.
pub(crate) static INIT_CALLED: AtomicBool = AtomicBool::new(false);

pub(crate) struct Current {
    pub name: String,
    pub identity: Vec<u32>,
    pub daemon: bool,
    pub parent: Option<ProcessId>,
    pub counter: u32,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on this process's identity (created as "MainProcess" on first use; reset after fork).
pub(crate) fn with_current<R>(f: impl FnOnce(&mut Current) -> R) -> R {
    let mut g = lock(&CURRENT);
    if g.is_none() {
        *g = Some(Current {
            name: "MainProcess".into(),
            identity: Vec::new(),
            daemon: false,
            parent: None,
            counter: 0,
        });
    }
    f(g.as_mut().expect("just set"))
}

/// Locks the identity (held across `fork` so the child never inherits it locked by another thread).
pub(crate) fn lock_current() -> MutexGuard<'static, Option<Current>> {
    lock(&CURRENT)
}

/// Locks the children list (held across `fork`, as [`lock_current`]).
pub(crate) fn lock_children() -> MutexGuard<'static, Vec<ChildRec>> {
    lock(&CHILDREN)
}

pub(crate) fn set_current(c: Current) {
    *lock(&CURRENT) = Some(c);
}

/// Whether this process was started by multiproc (`MULTIPROC_CHILD` set) but never called
/// `init()`. The environment is read at most once per process image and never once `init()` ran,
/// so a forked child (which inherits the answer) never takes std's environment lock here.
pub(crate) fn started_without_init() -> bool {
    // 0: not known yet, 1: no, 2: yes. Relaxed: a cached answer, the same whoever computes it.
    static CACHE: AtomicU8 = AtomicU8::new(0);
    if INIT_CALLED.load(Ordering::Relaxed) {
        return false;
    }
    match CACHE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = std::env::var_os(crate::boot::CHILD_ENV).is_some();
            CACHE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// A child this process started.
pub(crate) struct ChildRec {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    /// The process that started it (a forked child inherits the list and must ignore it).
    pub owner: u32,
    pub pidfd: Arc<OwnedFd>,
    /// Set when the `Process` handle was dropped while the child ran: we reap it.
    pub orphan: Option<Reap>,
}

/// How to collect a child's exit status.
pub(crate) enum Reap {
    /// Our own child: waitpid.
    Direct,
    /// A fork-server child: the server writes the exit code to this pipe.
    Server(OwnedFd),
}

static CHILDREN: Mutex<Vec<ChildRec>> = Mutex::new(Vec::new());
static ATEXIT: Once = Once::new();

pub(crate) fn register_child(rec: ChildRec) {
    ensure_atexit();
    lock(&CHILDREN).push(rec);
}

/// Registers the at-exit join of children (once per process image; called before a fork so a
/// forked child never waits on a registration another thread was running).
pub(crate) fn ensure_atexit() {
    ATEXIT.call_once(|| {
        // SAFETY: `at_exit` is a valid extern "C" fn with no arguments.
        unsafe { libc::atexit(at_exit) };
    });
}

pub(crate) fn unregister_child(pid: i32) {
    lock(&CHILDREN).retain(|c| c.pid != pid);
}

/// Hands a still-running child over to the registry to be reaped later.
pub(crate) fn orphan_child(pid: i32, reap: Reap) {
    if let Some(c) = lock(&CHILDREN).iter_mut().find(|c| c.pid == pid) {
        c.orphan = Some(reap);
    }
}

fn exited(pidfd: &OwnedFd) -> bool {
    crate::sys::poll_readable(pidfd.as_fd(), Some(Duration::ZERO)).unwrap_or(true)
}

fn reap(pid: i32, how: &Reap, block: bool) -> Option<i32> {
    match how {
        Reap::Direct => match crate::sys::waitpid(pid, block) {
            Ok(r) => r,
            Err(_) => Some(-1), // ECHILD: someone else reaped it
        },
        Reap::Server(fd) => {
            use std::os::fd::AsRawFd;
            if !block && !exited_fd(fd) {
                return None;
            }
            let b = crate::sys::read_to_end(fd.as_raw_fd(), 4).unwrap_or_default();
            Some(b.try_into().map(i32::from_le_bytes).unwrap_or(-1))
        }
    }
}

fn exited_fd(fd: &OwnedFd) -> bool {
    crate::sys::poll_readable(fd.as_fd(), Some(Duration::ZERO)).unwrap_or(true)
}

/// Reaps finished orphans; returns (pid, name, daemon) of every live child this process started.
pub(crate) fn live_children() -> Vec<(i32, String, bool)> {
    let me = std::process::id();
    let mut g = lock(&CHILDREN);
    g.retain(|c| {
        if c.owner != me {
            return true;
        }
        match &c.orphan {
            Some(how) if exited(&c.pidfd) => {
                let code = reap(c.pid, how, false);
                code.is_none()
            }
            _ => true,
        }
    });
    g.iter()
        .filter(|c| c.owner == me && !exited(&c.pidfd))
        .map(|c| (c.pid, c.name.clone(), c.daemon))
        .collect()
}

/// Python's `_exit_function`: terminate daemonic children, join the others, reap everything.
pub(crate) fn shutdown_children() {
    let me = std::process::id();
    let recs: Vec<ChildRec> = {
        let mut g = lock(&CHILDREN);
        let all = std::mem::take(&mut *g);
        let (mine, other): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.owner == me);
        *g = other;
        mine
    };
    if recs.is_empty() {
        return;
    }
    tracing::info!(target: "multiproc", "process shutting down");
    for c in &recs {
        if c.daemon && !exited(&c.pidfd) {
            tracing::info!(target: "multiproc", "terminating daemonic child {} (pid {})", c.name, c.pid);
            crate::sys::pidfd_signal(&c.pidfd, libc::SIGTERM);
        }
    }
    for c in recs {
        if !c.daemon && !exited(&c.pidfd) {
            tracing::info!(target: "multiproc", "calling join() for process {}", c.name);
            // A child that does not finish (blocked on a queue nobody feeds...) would otherwise
            // hang this exit silently: after a second, say which child it waits for.
            let done = crate::sys::poll_readable(c.pidfd.as_fd(), Some(JOIN_QUIET)).unwrap_or(true);
            if !done {
                note_waiting(c.pid, &c.name);
            }
        }
        let _ = crate::sys::poll_readable(c.pidfd.as_fd(), None);
        match &c.orphan {
            Some(how) => {
                reap(c.pid, how, true);
            }
            // The handle still exists (leaked or in a static): reap our own child all the same.
            None => {
                let _ = crate::sys::waitpid(c.pid, false);
            }
        }
    }
}

/// How long the at-exit join waits for a non-daemon child before saying which one it waits for.
const JOIN_QUIET: Duration = Duration::from_secs(1);

/// Logs (tracing `warn`, and on stderr when no tracing subscriber is installed: the message
/// must be seen, since the process looks hung) which child the at-exit join is waiting for.
fn note_waiting(pid: i32, name: &str) {
    tracing::warn!(
        target: "multiproc",
        "at exit: still waiting for non-daemon child {name} (pid {pid}) to finish; \
         join() or terminate() it, or make it a daemon"
    );
    if !tracing::dispatcher::has_been_set() {
        use std::io::Write;
        // Straight to fd 2 (not `eprintln!`, which a test harness may capture).
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: at exit: still waiting for non-daemon child {name} (pid {pid}) to \
             finish; join() or terminate() it, or make it a daemon"
        );
    }
}

extern "C" fn at_exit() {
    // Never unwind out of an atexit handler.
    let _ = std::panic::catch_unwind(shutdown_children);
}

/// Whether the current thread is allowed to report `Ordering` users; kept for the facade rule.
#[allow(dead_code)]
pub(crate) fn init_called() -> bool {
    // Acquire not needed: the flag only gates a diagnostic; Relaxed is enough.
    INIT_CALLED.load(Ordering::Relaxed)
}
