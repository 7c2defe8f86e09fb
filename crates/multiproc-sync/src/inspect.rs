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
//! let v = Value::new_segment(7u32).unwrap(); // named values and new_segment: own segment
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

/// Most bytes of a value [`value_bytes_of`] copies (longer values are cut there).
pub const MAX_SHOWN_BYTES: usize = 4096;

/// A snapshot copy of a `Value<T>` segment's value bytes (at most [`MAX_SHOWN_BYTES`]), read
/// without its lock (a writer meanwhile may tear it). The value's place follows from the type
/// size and alignment the header records (after the 16-byte lock, aligned for `T`); both are
/// checked against the payload before the copy. Other kinds are `WrongKind`.
pub fn value_bytes_of(seg: Segment) -> Result<Vec<u8>, ShmError> {
    // Validated as a Value (kind, size); `seg` keeps the mapping alive for the copy below.
    let _checked = Shared::<ValueHead>::from_segment(seg.clone())?;
    let h = seg.header();
    let align = h.type_align;
    if align == 0 || !align.is_power_of_two() || align > 128 {
        return Err(ShmError::OutOfRange {
            what: "value type alignment",
            found: align,
            limit: 128,
        });
    }
    let off = (std::mem::size_of::<RobustMutex>() as u64).next_multiple_of(align);
    let size = h.type_size.min(MAX_SHOWN_BYTES as u64);
    let payload = seg.payload_len() as u64;
    if off.saturating_add(h.type_size) > payload {
        return Err(ShmError::OutOfRange {
            what: "value size",
            found: h.type_size,
            limit: payload.saturating_sub(off),
        });
    }
    let mut out = vec![0u8; size as usize];
    // SAFETY: `off + size <= payload_len` (checked above), so the source lies inside the
    // mapping, which `shared` keeps alive; `out` is a distinct local buffer. A raw copy, not a
    // reference: other processes may write those bytes meanwhile (the copy may be torn, never
    // unsound).
    unsafe {
        std::ptr::copy_nonoverlapping(
            seg.payload_ptr().as_ptr().add(off as usize),
            out.as_mut_ptr(),
            out.len(),
        )
    };
    Ok(out)
}

/// What [`array_of`] reads from an `Array<T>` segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayView {
    /// The element count (checked: `len * type_size` is the segment's element bytes).
    pub len: u64,
    /// The element size the header records.
    pub elem_size: u64,
    /// A snapshot copy of the first elements' bytes (at most `first` of them), read unlocked.
    pub first: Vec<u8>,
}

/// The length and the first `first` elements (as bytes) of an `Array<T>` segment, read without
/// its lock. The length is read once and checked against the segment's real element bytes.
pub fn array_of(seg: Segment, first: usize) -> Result<ArrayView, ShmError> {
    #[repr(C)]
    struct Head {
        mutex: RobustMutex,
        len: crate::facade::AtomicU64,
    }
    // SAFETY: atomics only (any bit pattern valid), align 8, no Drop; `len` is only reported
    // after the check below against the real tail length.
    unsafe impl SharedLayout for Head {
        const KIND: ObjectKind = ObjectKind::Array;
        const MAX_TAIL: usize = isize::MAX as usize;
        type Geometry = ();
        fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
            Ok(())
        }
    }
    let elem_size = seg.header().type_size;
    let shared = Shared::<Head>::from_segment(seg)?;
    // Relaxed: read once, then checked; a snapshot for display.
    let len = shared.get().len.load(crate::facade::Ordering::Relaxed);
    let tail = shared.tail_len() as u64;
    if len.checked_mul(elem_size) != Some(tail) {
        return Err(ShmError::OutOfRange {
            what: "array length",
            found: len,
            limit: tail.checked_div(elem_size).unwrap_or(0),
        });
    }
    let n = len.min(first as u64).saturating_mul(elem_size).min(tail) as usize;
    let mut bytes = vec![0u8; n.min(MAX_SHOWN_BYTES)];
    shared.tail_read(0, &mut bytes)?;
    Ok(ArrayView {
        len,
        elem_size,
        first: bytes,
    })
}
