//! `Array<T>` and `RawArray<T>`: a fixed-length array of plain data in shared memory.
//!
//! Layout of the payload: a head (`RobustMutex` for `Array`, then the length as `u64`), then the
//! elements at the next offset aligned for `T`. Opening re-checks that the stored length matches
//! the segment size exactly, so a corrupted length is an error, never an out-of-bounds slice.
//!
//! ```
//! use multiproc_sync::Array;
//! let a = Array::<f64>::zeroed(4).unwrap();
//! a.get_lock().unwrap()[1..3].copy_from_slice(&[1.5, 2.5]);
//! assert_eq!(a.to_vec().unwrap(), vec![0.0, 1.5, 2.5, 0.0]);
//! ```

use crate::error::{LockError, LockResult, SyncError};
use crate::mutex::{LockOutcome, MutexError, RobustMutex};
use crate::value::{SharedData, create_segment, init_mutex};
use multiproc_shm::{
    Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, ShmError, TypeFingerprint,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;

#[repr(C)]
struct LockedHead {
    mutex: RobustMutex,
    len: u64,
}

#[repr(C)]
struct RawHead {
    len: u64,
}

const fn round_up(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}

/// Payload layout for `len` elements after a head of `head` bytes: (data offset, payload size).
fn layout<T>(head: usize, len: usize) -> Result<(usize, usize), SyncError> {
    let off = round_up(head, std::mem::align_of::<T>());
    let size = std::mem::size_of::<T>();
    len.checked_mul(size)
        .and_then(|b| b.checked_add(off))
        .filter(|total| *total <= isize::MAX as usize / 2)
        .map(|total| (off, total))
        .ok_or(SyncError::TooLarge { len, elem: size })
}

/// Reads and checks the stored length of an opened array segment.
fn checked_len<T>(seg: &Segment, head: usize, len_offset: usize) -> Result<usize, SyncError> {
    // SAFETY: validation guaranteed payload_len >= head (min_payload_size), len_offset + 8 <= head,
    // and len_offset is 8-aligned in the 256-aligned payload.
    let len = unsafe {
        seg.payload_ptr()
            .as_ptr()
            .add(len_offset)
            .cast::<u64>()
            .read_volatile()
    };
    let len = usize::try_from(len).map_err(|_| ShmError::Corrupted("array length"))?;
    let (_, total) = layout::<T>(head, len).map_err(|_| ShmError::Corrupted("array length"))?;
    if total != seg.payload_len() {
        return Err(ShmError::SizeMismatch {
            what: "array payload for its stored length",
            header: seg.payload_len() as u64,
            expected: total as u64,
        }
        .into());
    }
    Ok(len)
}

macro_rules! array_common {
    ($ty:ident, $kind:expr, $head:ty, $len_off:expr) => {
        impl<T: SharedData> $ty<T> {
            fn expect() -> Expect {
                const {
                    assert!(
                        std::mem::size_of::<T>() > 0,
                        "zero-sized element types are not supported"
                    )
                };
                Expect::new($kind, TypeFingerprint::of::<T>())
                    .min_payload_size(std::mem::size_of::<$head>() as u64)
            }

            fn open_segment(seg: Segment) -> Result<Self, SyncError> {
                let len = checked_len::<T>(&seg, std::mem::size_of::<$head>(), $len_off)?;
                Ok(Self::from_parts(seg, len))
            }

            fn from_parts(seg: Segment, len: usize) -> Self {
                let (off, _) =
                    layout::<T>(std::mem::size_of::<$head>(), len).expect("checked at create/open");
                // SAFETY: off <= payload size (checked), inside the mapping.
                let data = unsafe {
                    NonNull::new_unchecked(seg.payload_ptr().as_ptr().add(off).cast::<T>())
                };
                $ty { seg, data, len }
            }

            /// A new anonymous array of `len` zeroed elements (Python's `Array('i', 10)`).
            pub fn zeroed(len: usize) -> Result<Self, SyncError> {
                Self::create(None, len, None)
            }

            /// A new anonymous array holding a copy of `items`.
            pub fn from_slice(items: &[T]) -> Result<Self, SyncError> {
                Self::create(None, items.len(), Some(items))
            }

            /// A new named array of `len` zeroed elements.
            pub fn create_named(name: &str, len: usize) -> Result<Self, SyncError> {
                Self::create(Some(name), len, None)
            }

            /// A new named array holding a copy of `items`.
            pub fn create_named_from_slice(name: &str, items: &[T]) -> Result<Self, SyncError> {
                Self::create(Some(name), items.len(), Some(items))
            }

            /// Opens a named array, checking kind, element type and length.
            pub fn open_named(name: &str) -> Result<Self, SyncError> {
                Self::open_segment(Segment::open_named(name, &Self::expect())?)
            }

            /// Opens the array a handle names.
            pub fn open_handle(handle: &SegmentHandle) -> Result<Self, SyncError> {
                Self::open_segment(Segment::open_handle(handle, &Self::expect())?)
            }

            /// Number of elements.
            pub fn len(&self) -> usize {
                self.len
            }

            /// Whether it has no elements.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// The segment behind this array.
            pub fn segment(&self) -> &Segment {
                &self.seg
            }
        }

        impl<T: SharedData> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    seg: self.seg.clone(),
                    data: self.data,
                    len: self.len,
                }
            }
        }

        // SAFETY: the elements live in shared memory owned by seg; access is locked (Array) or
        // volatile copies of plain data (RawArray).
        unsafe impl<T: SharedData> Send for $ty<T> {}
        // SAFETY: as above.
        unsafe impl<T: SharedData> Sync for $ty<T> {}

        impl<T: SharedData> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("type", &std::any::type_name::<T>())
                    .field("len", &self.len)
                    .field("segment", &self.seg)
                    .finish()
            }
        }

        impl<T: SharedData> Serialize for $ty<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.seg.handle().serialize(s)
            }
        }

        impl<'de, T: SharedData> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let h = SegmentHandle::deserialize(d)?;
                $ty::open_handle(&h).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A fixed-length `[T]` in shared memory guarded by a robust process-shared lock (Python's `Array`).
pub struct Array<T: SharedData> {
    seg: Segment,
    data: NonNull<T>,
    len: usize,
}

array_common!(
    Array,
    ObjectKind::Array,
    LockedHead,
    std::mem::offset_of!(LockedHead, len)
);

impl<T: SharedData> Array<T> {
    fn create(name: Option<&str>, len: usize, items: Option<&[T]>) -> Result<Self, SyncError> {
        let _ = Self::expect();
        let (off, total) = layout::<T>(std::mem::size_of::<LockedHead>(), len)?;
        let spec = SegmentSpec::new(
            ObjectKind::Array,
            TypeFingerprint::of::<T>(),
            total,
            std::mem::align_of::<LockedHead>().max(std::mem::align_of::<T>()),
        );
        let seg = create_segment(name, &spec, |p, _| {
            let head = p.as_ptr().cast::<LockedHead>();
            // SAFETY: the payload holds `total` bytes (head + elements), 256-aligned, unseen by
            // others; memfd/shm files start zeroed, so elements are zero unless copied.
            unsafe {
                init_mutex(std::ptr::addr_of_mut!((*head).mutex))?;
                std::ptr::addr_of_mut!((*head).len).write(len as u64);
                if let Some(items) = items {
                    std::ptr::copy_nonoverlapping(
                        items.as_ptr(),
                        p.as_ptr().add(off).cast::<T>(),
                        len,
                    );
                }
            }
            Ok(())
        })?;
        Ok(Self::from_parts(seg, len))
    }

    fn mutex(&self) -> &RobustMutex {
        // SAFETY: the head is at the start of the live payload, initialized at create.
        unsafe { &(*self.seg.payload_ptr().as_ptr().cast::<LockedHead>()).mutex }
    }

    fn guard(&self, r: Result<LockOutcome, MutexError>) -> LockResult<ArrayGuard<'_, T>> {
        let g = || ArrayGuard {
            array: self,
            _not_send: PhantomData,
        };
        match r {
            Ok(LockOutcome::Acquired) => Ok(g()),
            Ok(LockOutcome::OwnerDied) => Err(LockError::OwnerDied(g())),
            Err(e) => Err(LockError::Failed(e)),
        }
    }

    /// Locks the array; the guard derefs to `[T]`.
    #[inline]
    pub fn get_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.mutex().lock())
    }

    /// Locks without waiting.
    pub fn try_get_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.mutex().try_lock())
    }

    /// Locks, waiting at most `timeout`.
    pub fn get_lock_timeout(&self, timeout: Duration) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.mutex().lock_timeout(timeout))
    }

    /// Element `index`, read under the lock.
    pub fn get(&self, index: usize) -> Result<T, SyncError> {
        let g = self.get_lock()?;
        g.get(index).copied().ok_or(SyncError::IndexOutOfRange {
            index,
            len: self.len,
        })
    }

    /// Sets element `index` under the lock.
    pub fn set(&self, index: usize, value: T) -> Result<(), SyncError> {
        let mut g = self.get_lock()?;
        let len = self.len;
        *g.get_mut(index)
            .ok_or(SyncError::IndexOutOfRange { index, len })? = value;
        Ok(())
    }

    /// A copy of every element, taken under the lock.
    pub fn to_vec(&self) -> Result<Vec<T>, SyncError> {
        Ok(self.get_lock()?.to_vec())
    }
}

/// The held lock of an [`Array`]; derefs to `[T]`. `!Send`.
pub struct ArrayGuard<'a, T: SharedData> {
    array: &'a Array<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: SharedData> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: we hold the lock; data..data+len is inside the mapping (checked at open) and
        // properly aligned; T is FromBytes so the bytes are valid Ts.
        unsafe { std::slice::from_raw_parts(self.array.data.as_ptr(), self.array.len) }
    }
}

impl<T: SharedData> DerefMut for ArrayGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, and the lock makes this the only access in any process.
        unsafe { std::slice::from_raw_parts_mut(self.array.data.as_ptr(), self.array.len) }
    }
}

impl<T: SharedData> Drop for ArrayGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { self.array.mutex().unlock() }
    }
}

/// A fixed-length `[T]` in shared memory without a lock (Python's `RawArray`). Element reads and
/// writes are single volatile copies: racing accesses may be torn, as in Python.
pub struct RawArray<T: SharedData> {
    seg: Segment,
    data: NonNull<T>,
    len: usize,
}

array_common!(RawArray, ObjectKind::RawArray, RawHead, 0);

impl<T: SharedData> RawArray<T> {
    fn create(name: Option<&str>, len: usize, items: Option<&[T]>) -> Result<Self, SyncError> {
        let _ = Self::expect();
        let (off, total) = layout::<T>(std::mem::size_of::<RawHead>(), len)?;
        let spec = SegmentSpec::new(
            ObjectKind::RawArray,
            TypeFingerprint::of::<T>(),
            total,
            std::mem::align_of::<RawHead>().max(std::mem::align_of::<T>()),
        );
        let seg = create_segment(name, &spec, |p, _| {
            // SAFETY: the payload holds `total` bytes, 256-aligned, unseen by others.
            unsafe {
                p.as_ptr()
                    .cast::<RawHead>()
                    .write(RawHead { len: len as u64 });
                if let Some(items) = items {
                    std::ptr::copy_nonoverlapping(
                        items.as_ptr(),
                        p.as_ptr().add(off).cast::<T>(),
                        len,
                    );
                }
            }
            Ok(())
        })?;
        Ok(Self::from_parts(seg, len))
    }

    /// Element `index` (one volatile read).
    #[inline]
    pub fn get(&self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        // SAFETY: index < len, so the element is inside the mapping; aligned; T is FromBytes.
        Some(unsafe { self.data.as_ptr().add(index).read_volatile() })
    }

    /// Sets element `index` (one volatile write).
    #[inline]
    pub fn set(&self, index: usize, value: T) -> Result<(), SyncError> {
        if index >= self.len {
            return Err(SyncError::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        // SAFETY: index < len: inside the mapping, aligned.
        unsafe { self.data.as_ptr().add(index).write_volatile(value) };
        Ok(())
    }

    /// Copies every element out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }

    /// Overwrites every element from `items` (which must have the same length).
    pub fn copy_from_slice(&self, items: &[T]) -> Result<(), SyncError> {
        if items.len() != self.len {
            return Err(SyncError::LengthMismatch {
                got: items.len(),
                len: self.len,
            });
        }
        for (i, v) in items.iter().enumerate() {
            // SAFETY: i < len.
            unsafe { self.data.as_ptr().add(i).write_volatile(*v) };
        }
        Ok(())
    }

    /// The raw element pointer, for atomics the caller builds on it.
    pub fn as_ptr(&self) -> *mut T {
        self.data.as_ptr()
    }
}
