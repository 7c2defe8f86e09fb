//! Who is acting: this process and this thread as `(id, start time)` pairs, packed into one `u64`
//! so a shared word can record a holder atomically, plus a liveness check for recorded holders.
//!
//! Packing: bits 0..22 hold the pid/tid (Linux caps pids below 2^22), bits 22..63 the start time
//! in clock ticks since boot (41 bits: centuries at 100 Hz), bit 63 is free for callers' flags.
//! `0` never names anyone (pid 0 is not a user process).
//!
//! The identities are cached per thread, so the uncontended lock paths make no syscall. The cache
//! is invalidated in a forked child through a `pthread_atfork` child handler that bumps a
//! generation counter.
//!
//! Under `cfg(loom)` there is no cache (loom atomics cannot live in statics): every call reads
//! `/proc` afresh, which is correct, only slower.

#[cfg(not(loom))]
use crate::facade::{AtomicBool, AtomicU64, Ordering};
use multiproc_shm::ProcessId;
#[cfg(not(loom))]
use std::cell::Cell;

/// Mask of the id part.
pub(crate) const ID_MASK: u64 = (1 << 22) - 1;
/// Mask of the start-time part (after shifting down).
const START_MASK: u64 = (1 << 41) - 1;
/// A flag bit callers may set on a packed id.
pub(crate) const FLAG_BIT: u64 = 1 << 63;

#[cfg(not(loom))]
static FORK_GEN: AtomicU64 = AtomicU64::new(1);
#[cfg(not(loom))]
static ATFORK_REGISTERED: AtomicBool = AtomicBool::new(false);

#[cfg(not(loom))]
extern "C" fn after_fork_in_child() {
    // Relaxed: the child is single-threaded right after fork; only this thread reads it.
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
}

#[cfg(not(loom))]
/// Registers the fork handler once, without ever blocking: a `Once` here could be caught
/// mid-initialization by a `fork` in another thread and deadlock the child.
extern "C" fn register_atfork() {
    // Relaxed: the flag only deduplicates registration; nothing is published through it.
    if !ATFORK_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: registering a plain extern "C" fn without prepare/parent handlers; the handler
        // only touches an atomic (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
}

/// Runs `register_atfork` at load time, before `main` and before any thread can fork.
#[cfg(not(loom))]
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_LOAD: extern "C" fn() = register_atfork;

#[derive(Clone, Copy)]
struct Cached {
    #[cfg_attr(loom, allow(dead_code))]
    gen_: u64,
    pid: u32,
    proc_packed: u64,
    tid: u32,
    thread_packed: u64,
}

#[cfg(not(loom))]
thread_local! {
    static CACHE: Cell<Option<Cached>> = const { Cell::new(None) };
}

/// Packs an id and a start time.
#[inline]
pub(crate) fn pack(id: u32, start_time: u64) -> u64 {
    ((start_time & START_MASK) << 22) | (u64::from(id) & ID_MASK)
}

/// Unpacks a word (ignoring the flag bit).
#[inline]
pub(crate) fn unpack(w: u64) -> ProcessId {
    ProcessId {
        pid: (w & ID_MASK) as u32,
        start_time: (w & !FLAG_BIT) >> 22,
    }
}

#[cold]
fn refresh() -> Cached {
    #[cfg(not(loom))]
    register_atfork();
    // Relaxed: read by the same thread that may have bumped it (in the child after fork).
    #[cfg(not(loom))]
    let gen_ = FORK_GEN.load(Ordering::Relaxed);
    #[cfg(loom)]
    let gen_ = 0;
    let pid = std::process::id();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let pstart = multiproc_shm::start_time_of(pid).unwrap_or(0);
    // `/proc/TID/stat` is the thread's own stat (a hidden entry of every thread id).
    let tstart = if tid == pid {
        pstart
    } else {
        multiproc_shm::start_time_of(tid).unwrap_or(0)
    };
    let c = Cached {
        gen_,
        pid,
        proc_packed: pack(pid, pstart),
        tid,
        thread_packed: pack(tid, tstart),
    };
    #[cfg(not(loom))]
    CACHE.with(|cell| cell.set(Some(c)));
    c
}

#[cfg(loom)]
fn cached() -> Cached {
    refresh()
}

#[cfg(not(loom))]
#[inline]
fn cached() -> Cached {
    // Relaxed: see refresh.
    let gen_ = FORK_GEN.load(Ordering::Relaxed);
    match CACHE.with(|c| c.get()) {
        Some(c) if c.gen_ == gen_ => c,
        _ => refresh(),
    }
}

/// This process: `(pid, packed id)`.
#[inline]
pub(crate) fn process() -> (u32, u64) {
    let c = cached();
    (c.pid, c.proc_packed)
}

/// This thread: `(tid, packed id with the thread's start time)`.
#[inline]
pub(crate) fn thread() -> (u32, u64) {
    let c = cached();
    (c.tid, c.thread_packed)
}

/// Whether the process (or thread) a packed word names is alive. A zombie counts as dead.
pub(crate) fn packed_alive(w: u64) -> bool {
    let p = unpack(w);
    if p.pid == 0 {
        return false;
    }
    if p.start_time == 0 {
        return id_alive(p.pid);
    }
    p.is_alive()
}

/// Whether any live process or thread has this id (used when the start time is not yet
/// recorded). Reads `/proc/ID/stat`, which also exists for thread ids.
pub(crate) fn id_alive(id: u32) -> bool {
    ProcessId::of(id).is_some_and(|p| p.is_alive())
}

/// Liveness of a holder recorded as an id in a futex word plus, maybe, its packed identity in a
/// side word written just after: exact when the side word names the same id, else by id only.
pub(crate) fn holder_alive(id: u32, side: u64) -> bool {
    if id == 0 {
        return false;
    }
    if unpack(side).pid == id {
        packed_alive(side)
    } else {
        id_alive(id)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrips_and_self_is_alive() {
        let (pid, w) = process();
        assert_eq!(unpack(w).pid, pid);
        assert!(packed_alive(w));
        let (tid, t) = thread();
        assert_eq!(unpack(t).pid, tid);
        assert!(packed_alive(t));
        assert!(!packed_alive(w + (1 << 22)));
        assert!(!packed_alive(0));
        let x = pack(5, 77);
        assert_eq!(
            unpack(x | FLAG_BIT),
            ProcessId {
                pid: 5,
                start_time: 77
            }
        );
    }

    #[test]
    fn other_thread_has_its_own_identity() {
        let (tid, _) = thread();
        let other = std::thread::spawn(thread).join().unwrap();
        assert_ne!(other.0, tid);
        assert_ne!(unpack(other.1).start_time, 0, "read from /proc/TID/stat");
        // `join` returns when the kernel clears the thread's tid word, a moment before the
        // task finishes exiting (its /proc entry can still say running): wait for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while packed_alive(other.1) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!packed_alive(other.1), "the thread has exited");
    }
}
