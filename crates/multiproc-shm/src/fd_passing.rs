//! Collecting the fds that a value's serialization refers to, so a spawner can pass them on.
//!
//! An anonymous segment serializes as [`SegmentHandle::Fd`](crate::SegmentHandle::Fd): an fd
//! number of *this* process. For that number to mean the same memfd in a spawned (re-exec'd)
//! child, the spawner must keep exactly those fds open across `exec` at the same numbers. It learns
//! which ones by serializing the task arguments inside [`collect_fds`]: every `Fd` handle
//! serialized meanwhile (and every fd given to [`register_fd`]) is recorded on a thread-local list.
//!
//! ```
//! use multiproc_shm::fd_passing::{collect_fds, register_fd};
//! let ((), fds) = collect_fds(|| register_fd(7));
//! assert_eq!(fds, vec![7]);
//! register_fd(9); // outside a collection: ignored
//! ```

use std::cell::RefCell;
use std::os::fd::RawFd;

thread_local! {
    static COLLECTOR: RefCell<Vec<Vec<RawFd>>> = const { RefCell::new(Vec::new()) };
    static FD_MAP: RefCell<Option<Vec<(RawFd, RawFd)>>> = const { RefCell::new(None) };
}

/// Runs `f` (typically a deserialization) with fd numbers of *another* process mapped to fds of
/// this one: an `Fd` handle naming `from` opens `to` instead, and one naming an fd that is not in
/// `map` opens nothing (`StaleHandle`), never whatever this process has at that number. A
/// receiver of fds over `SCM_RIGHTS` (a pool worker) uses it; maps nest (the inner one wins).
///
/// ```
/// use multiproc_shm::fd_passing::{local_fd, with_fd_map};
/// assert_eq!(with_fd_map(&[(7, 12)], || (local_fd(7), local_fd(8))), (12, -1));
/// assert_eq!(local_fd(7), 7); // outside a map: the number itself
/// ```
pub fn with_fd_map<R>(map: &[(RawFd, RawFd)], f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Vec<(RawFd, RawFd)>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let old = self.0.take();
            FD_MAP.with(|m| *m.borrow_mut() = old);
        }
    }
    let old = FD_MAP.with(|m| m.borrow_mut().replace(map.to_vec()));
    let _restore = Restore(old);
    f()
}

/// The fd of this process that a handle's fd number `fd` stands for: itself outside
/// [`with_fd_map`], its mapping inside one (-1 when it is not mapped).
pub fn local_fd(fd: RawFd) -> RawFd {
    FD_MAP.with(|m| match &*m.borrow() {
        None => fd,
        Some(map) => map
            .iter()
            .find(|(from, _)| *from == fd)
            .map_or(-1, |(_, to)| *to),
    })
}

/// Runs `f` (typically a serialization) and returns its result with every fd registered during it,
/// deduplicated, in first-seen order. Collections nest: an inner one does not leak into the outer.
pub fn collect_fds<R>(f: impl FnOnce() -> R) -> (R, Vec<RawFd>) {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            COLLECTOR.with(|c| {
                c.borrow_mut().pop();
            });
        }
    }
    COLLECTOR.with(|c| c.borrow_mut().push(Vec::new()));
    let guard = Pop;
    let r = f();
    let fds = COLLECTOR.with(|c| c.borrow_mut().last_mut().map(std::mem::take));
    drop(guard);
    (r, fds.unwrap_or_default())
}

/// Records `fd` in the innermost running [`collect_fds`] of this thread (no-op outside one).
/// Serializers of fd-carrying handles call it.
pub fn register_fd(fd: RawFd) {
    COLLECTOR.with(|c| {
        if let Some(list) = c.borrow_mut().last_mut()
            && !list.contains(&fd)
        {
            list.push(fd);
        }
    });
}

/// `serialize_with` helper for an fd field: registers the fd, then serializes it as an `i32`.
pub fn serialize_fd<S: serde::Serializer>(fd: &RawFd, s: S) -> Result<S::Ok, S::Error> {
    register_fd(*fd);
    s.serialize_i32(*fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_collections_are_separate() {
        let ((_, inner), outer) = collect_fds(|| {
            register_fd(1);
            collect_fds(|| register_fd(2))
        });
        assert_eq!(inner, vec![2]);
        assert_eq!(outer, vec![1]);
    }
}
