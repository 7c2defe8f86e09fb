//! This process's pid (cached, reset in a forked child) and a fork counter, so a handle can tell
//! cheaply whether it may have been copied into another process by `fork`.

use crate::facade::{AtomicBool, AtomicU32, AtomicU64, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
/// Bumped in the parent before every fork (the child inherits the bumped value).
static FORKS: AtomicU64 = AtomicU64::new(0);
static HOOK_REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// Registers the fork handlers once, never blocking: a `std::sync::Once` here could be caught
/// mid-initialization by a `fork` in another thread, leaving the child's copy "running" forever.
extern "C" fn install() {
    // Relaxed: the flag only deduplicates registration; nothing is published through it.
    if !HOOK_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: the handlers only touch atomics (async-signal safe, valid in the child).
        unsafe { libc::pthread_atfork(Some(prepare), None, Some(in_child)) };
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
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

/// Forks made by this process (or its ancestors, as inherited) since the hook was installed.
pub(crate) fn forks() -> u64 {
    install();
    FORKS.load(Ordering::Relaxed)
}
