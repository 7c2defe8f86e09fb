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
