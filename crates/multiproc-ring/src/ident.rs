//! This process's identity for the rings' ownership words: the cached pid and (pid, start time)
//! of `multiproc-shm` (the one home of "who am I after a fork"), and the liveness test of an
//! owner the rings recorded.

use multiproc_shm::ProcessId;

/// This process's pid (cached; cleared in a forked child).
#[inline]
pub(crate) fn pid() -> u32 {
    multiproc_shm::current_pid()
}

/// This process's identity (pid + start time), cached.
#[inline]
pub(crate) fn current() -> ProcessId {
    ProcessId::current()
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
