//! Read-only views of objects whose element type is unknown (for `multiproc ls/inspect`).
//!
//! A tool that finds a `Value` or `Array` segment in /dev/shm does not know its `T`, so it cannot
//! open it as `Value<T>`. These views validate the segment through [`Shared`] like any opener
//! (kind, size, geometry) and read only the lock at the start of the payload, which every `Value`
//! and `Array` layout places there. No cast at a hard-coded offset, no reference to bytes other
//! than the lock's atomics.
//!
//! ```
//! use multiproc_sync::{Value, inspect};
//! let v = Value::new(7u32).unwrap();
//! let g = v.get_lock().unwrap();
//! let state = inspect::lock_of(v.segment().clone()).unwrap();
//! assert!(state.unwrap().alive);
//! drop(g);
//! assert!(inspect::lock_of(v.segment().clone()).unwrap().is_none());
//! ```

use crate::mutex::{Holder, RobustMutex};
use multiproc_shm::{ObjectKind, Segment, Shared, SharedLayout, ShmError};

/// The lock head shared by every `Value<T>` layout.
#[repr(C)]
struct ValueHead {
    mutex: RobustMutex,
}

/// The lock head shared by every `Array<T>` layout.
#[repr(C)]
struct ArrayHead {
    mutex: RobustMutex,
}

macro_rules! head_layout {
    ($t:ty, $kind:expr) => {
        // SAFETY: a RobustMutex is atomics only (any bit pattern valid, shareable); the rest of
        // the payload is the tail, which these views never touch; no Drop.
        unsafe impl SharedLayout for $t {
            const KIND: ObjectKind = $kind;
            // The element data follows the lock; its size is whatever the segment says.
            const MAX_TAIL: usize = isize::MAX as usize;
            type Geometry = ();
            fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
                Ok(())
            }
        }
    };
}
head_layout!(ValueHead, ObjectKind::Value);
head_layout!(ArrayHead, ObjectKind::Array);

/// The holder of a `Value` or `Array` segment's lock (`None`: free), after validating the segment
/// as that kind. Other kinds are `WrongKind`.
pub fn lock_of(seg: Segment) -> Result<Option<Holder>, ShmError> {
    match seg.header().object_kind() {
        Some(ObjectKind::Array) => Ok(Shared::<ArrayHead>::from_segment(seg)?.get().mutex.holder()),
        _ => Ok(Shared::<ValueHead>::from_segment(seg)?.get().mutex.holder()),
    }
}
