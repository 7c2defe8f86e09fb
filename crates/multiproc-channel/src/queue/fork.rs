//! The process's live queues and the fork hooks (called from `ident.rs`) that keep each queue's
//! per-process producer/consumer registration right across `fork(2)`.

use super::Inner;
use crate::peers;

/// The process's live queue `Inner`s, for the fork hooks (raw pointers: an `Inner` removes
/// itself in its `Drop`, under the registration lock, before it is freed).
struct LiveList(std::cell::UnsafeCell<Vec<*const Inner>>);
// SAFETY: the list is only touched under `peers::lock()`.
unsafe impl Sync for LiveList {}
static LIVE: LiveList = LiveList(std::cell::UnsafeCell::new(Vec::new()));

pub(super) fn live_add(p: *const Inner) {
    let _g = peers::lock();
    // SAFETY: under the lock (see `LiveList`).
    unsafe { (*LIVE.0.get()).push(p) };
}

fn live_remove(p: *const Inner) {
    let _g = peers::lock();
    // SAFETY: under the lock (see `LiveList`).
    unsafe { (*LIVE.0.get()).retain(|&q| q != p) };
}

/// Fork hook (parent, before the fork): takes the registration lock for the duration of the
/// fork and lends every queue's counts to the child to come.
pub(crate) fn fork_prepare() {
    let g = peers::lock();
    // SAFETY: under the lock; every pointer names a live `Inner` (removed before it is freed,
    // under this lock).
    for &p in unsafe { &*LIVE.0.get() } {
        // SAFETY: as above: a live `Inner` while the lock is held.
        let i = unsafe { &*p };
        i.local.before_fork(&i.ctl.get().peers);
    }
    std::mem::forget(g);
}

/// Fork hook (parent, after the fork): releases the lock taken in `fork_prepare`.
pub(crate) fn fork_parent() {
    drop(peers::Guard::assume_held());
}

/// Fork hook (child): registers this process for every queue it inherited, takes the parent's
/// loans back, releases the lock. Allocation-free.
pub(crate) fn fork_child(parent_pid: u32) {
    // SAFETY: the lock is held (taken by `fork_prepare` in the thread that forked, which is the
    // only thread of the child); pointers as in `fork_prepare`.
    for &p in unsafe { &*LIVE.0.get() } {
        // SAFETY: as above.
        let i = unsafe { &*p };
        i.local.in_child(&i.ctl.get().peers, parent_pid);
    }
    drop(peers::Guard::assume_held());
}

impl Drop for Inner {
    fn drop(&mut self) {
        live_remove(self as *const Inner);
        self.local.release(&self.ctl.get().peers);
    }
}
