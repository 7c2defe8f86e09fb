//! This process's identity, cached, and reset in a forked child (`pthread_atfork`), so the ring's
//! fast paths never make a syscall or read `/proc` to learn who they are.

use crate::facade::{
    StdAtomicBool as AtomicBool, StdAtomicU32 as AtomicU32, StdAtomicU64 as AtomicU64,
    StdOrdering as Ordering,
};
use multiproc_shm::ProcessId;

static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static HOOK_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the fork handler once, never blocking. A `std::sync::Once` here deadlocked forked
/// children: when another thread was inside `call_once` at the fork, the child's copy of the
/// `Once` stays "running" forever (seen as a hung pipe test under a loaded CI run).
extern "C" fn register_hook() {
    // Relaxed: the flag only deduplicates registration; nothing is published through it.
    if !HOOK_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: registering a plain extern "C" fn that only stores to atomics is async-signal
        // safe and valid in the child.
        unsafe { libc::pthread_atfork(None, None, Some(reset_in_child)) };
    }
}

/// Registers the hook at load time, before `main` and before any thread can fork.
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_LOAD: extern "C" fn() = register_hook;

extern "C" fn reset_in_child() {
    PID.store(0, Ordering::Relaxed);
    START.store(0, Ordering::Relaxed);
}

/// This process's pid (cached; reset by fork).
#[inline]
pub(crate) fn pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 { p } else { pid_slow() }
}

#[cold]
fn pid_slow() -> u32 {
    register_hook();
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

/// This process's identity (pid + start time), cached.
pub(crate) fn current() -> ProcessId {
    let pid = pid();
    let s = START.load(Ordering::Relaxed);
    if s != 0 {
        return ProcessId { pid, start_time: s };
    }
    let id = ProcessId::current();
    START.store(id.start_time, Ordering::Relaxed);
    id
}

/// Whether the process `pid` (with start time `start`, or any start time if 0) is alive.
/// A zombie counts as dead. `pid == 0` is "nobody", reported alive (not attached yet).
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return true;
    }
    if start != 0 {
        return ProcessId {
            pid,
            start_time: start,
        }
        .is_alive();
    }
    match ProcessId::of(pid) {
        Some(p) => p.is_alive(),
        None => false,
    }
}
