//! This process's pid (cached, reset in a forked child) and a fork counter, so a handle can tell
//! cheaply whether it may have been copied into another process by `fork`.

use crate::facade::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);
/// Bumped in the parent before every fork (the child inherits the bumped value).
static FORKS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

extern "C" fn prepare() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn in_child() {
    PID.store(0, Ordering::Relaxed);
}

fn install() {
    HOOK.call_once(|| {
        // SAFETY: the handlers only touch atomics (async-signal safe, valid in the child).
        unsafe { libc::pthread_atfork(Some(prepare), None, Some(in_child)) };
    });
}

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
