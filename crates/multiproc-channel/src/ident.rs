//! This process's identity as the channel layer needs it: the pid and fork counter of
//! multiproc-shm (the one home of "who am I after a fork"; a handle that recorded the counter can
//! tell cheaply whether it may have been copied into another process by `fork`), the identity
//! word (`pid << 32 | low 32 bits of its start time`) for the queue's peer accounting, and the
//! fork hooks that hand a parent's queue registrations over to its child (see `peers`).

use crate::facade::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The parent's pid, stored by the prepare handler for the child handler (which hands the
/// parent's registrations over to the child).
static PARENT: AtomicU32 = AtomicU32::new(0);
/// This process's identity word (0: not computed yet).
static WORD: AtomicU64 = AtomicU64::new(0);
static HOOK_REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    PARENT.store(pid(), Ordering::Relaxed);
    crate::queue::fork_prepare();
}

extern "C" fn in_parent() {
    crate::queue::fork_parent();
}

extern "C" fn in_child() {
    // Whichever of multiproc-shm's child handler and this one runs first, the cached identity is
    // the child's before the queues use it.
    multiproc_shm::reset_identity_in_child();
    WORD.store(0, Ordering::Relaxed);
    crate::queue::fork_child(PARENT.load(Ordering::Relaxed));
}

/// Registers the fork handlers once, never blocking: a `std::sync::Once` here could be caught
/// mid-initialization by a `fork` in another thread, leaving the child's copy "running" forever.
extern "C" fn install() {
    // Relaxed: the flag only deduplicates registration; nothing is published through it. A
    // plain load first: after the first call (made at load time) this is a read, not a
    // locked read-modify-write, on every `fork_count`/`forks` call.
    if !HOOK_REGISTERED.load(Ordering::Relaxed) && !HOOK_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: the handlers only touch atomics, process-local memory under a lock the
        // prepare handler took, and `open`/`read` of /proc (async-signal safe, no allocation).
        unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
    }
}

/// Registers the handlers at load time, before `main` and before any thread can fork.
#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL_AT_LOAD: extern "C" fn() = install;

/// This process's pid (multiproc-shm's cache).
#[inline]
pub(crate) fn pid() -> u32 {
    multiproc_shm::current_pid()
}

/// Forks made by this process (or its ancestors, as inherited): multiproc-shm's counter.
pub(crate) fn forks() -> u64 {
    install();
    multiproc_shm::fork_count()
}

/// This process's identity word: `pid << 32 | low 32 bits of its start time` (cached).
pub(crate) fn word() -> u64 {
    let w = WORD.load(Ordering::Relaxed);
    if w != 0 {
        return w;
    }
    let id = multiproc_shm::ProcessId::current();
    let w = (u64::from(id.pid) << 32) | u64::from(id.start_time as u32);
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
