//! `Array<T>` and `RawArray<T>`: a fixed-length array of plain data in shared memory.
//!
//! Each lives in a `Shared<Head>`: the head (`RobustMutex` for `Array`, then the length as an
//! atomic `u64`), then the elements as the raw tail. Creating and opening validate the stored
//! length once against the tail's real length (`len * size_of::<T>() == tail_len`) and index
//! with that local copy from then on, so a length rewritten later by another process changes
//! nothing here: never an out-of-bounds access. A guard borrows the handle (no `KeepAlive`: see
//! `value.rs` for why a leaked guard is harmless with the futex mutex).
//!
//! ```
//! use multiproc_sync::Array;
//! let a = Array::<f64>::zeroed(4).unwrap();
//! a.get_lock().unwrap()[1..3].copy_from_slice(&[1.5, 2.5]);
//! assert_eq!(a.to_vec().unwrap(), vec![0.0, 1.5, 2.5, 0.0]);
//! ```

use crate::error::{AccessError, CreateError, LockResult, RecoverResult, refuse_owner_died};
use crate::facade::raw;
use crate::facade::{AtomicU64, Ordering};
use crate::mutex::{LockOutcome, Locker, MutexError, RobustMutex};
use crate::value::{SharedData, check_align};
use multiproc_shm::{
    ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;

use crate::arena::{Arena, Backing, ObjectHandle, SlotHandle};

/// The largest element area (bytes) this process accepts, created or opened.
pub const MAX_ARRAY_BYTES: usize = isize::MAX as usize / 4;

/// The shared head of an [`Array`]: the lock and the length; the elements are the tail.
#[repr(C)]
struct LockedHead<T> {
    mutex: RobustMutex,
    len: AtomicU64,
    _t: PhantomData<fn() -> T>,
}

/// The shared head of a [`RawArray`]: the length; the elements are the tail.
#[repr(C)]
struct RawHead<T> {
    len: AtomicU64,
    _t: PhantomData<fn() -> T>,
}

/// The stored length must describe the tail exactly: `len * size_of::<T>() == tail_len`.
fn validate_len<T>(len: u64, tail_len: usize) -> Result<usize, ShmError> {
    let size = std::mem::size_of::<T>() as u64;
    match len.checked_mul(size) {
        Some(bytes) if bytes == tail_len as u64 => Ok(len as usize),
        _ => Err(ShmError::OutOfRange {
            what: "array length (elements) for its segment",
            found: len,
            limit: tail_len as u64 / size.max(1),
        }),
    }
}

// SAFETY: `#[repr(C)]`, atomics only (the PhantomData is zero-sized), any bit pattern valid,
// align 8, no Drop. The length sizes the tail: validated against its real length here, and the
// object indexes with the returned copy only.
unsafe impl<T: SharedData> SharedLayout for LockedHead<T> {
    const KIND: ObjectKind = ObjectKind::Array;
    const MAX_TAIL: usize = MAX_ARRAY_BYTES;
    type Geometry = usize;
    fn validate(&self, tail_len: usize) -> Result<usize, ShmError> {
        // Relaxed: written once by the creator before Ready (the header's Ready flag orders it).
        validate_len::<T>(self.len.load(Ordering::Relaxed), tail_len)
    }
}

// SAFETY: as for LockedHead.
unsafe impl<T: SharedData> SharedLayout for RawHead<T> {
    const KIND: ObjectKind = ObjectKind::RawArray;
    const MAX_TAIL: usize = MAX_ARRAY_BYTES;
    type Geometry = usize;
    fn validate(&self, tail_len: usize) -> Result<usize, ShmError> {
        // Relaxed: as above.
        validate_len::<T>(self.len.load(Ordering::Relaxed), tail_len)
    }
}

/// Creates the segment of an array of `len` elements (zeroed, or a copy of `items`).
fn create_array<L: SharedLayout<Geometry = usize>, T: SharedData>(
    name: Option<&str>,
    len: usize,
    items: Option<&[T]>,
    head: L,
) -> Result<Shared<L>, CreateError> {
    const {
        assert!(
            std::mem::size_of::<T>() > 0,
            "zero-sized element types are not supported"
        )
    };
    check_align::<T>()?;
    let size = std::mem::size_of::<T>();
    let bytes = len
        .checked_mul(size)
        .filter(|b| *b <= MAX_ARRAY_BYTES)
        .ok_or(CreateError::TooLarge { len, elem: size })?;
    Ok(Shared::<L>::create(
        name,
        TypeFingerprint::of::<T>(),
        bytes,
        |p, tail| {
            // SAFETY: `p` is valid for one L and `tail` for `bytes` zeroed bytes, aligned to 128
            // (>= align_of::<T>(), checked), both unseen by others before Ready.
            unsafe {
                p.as_ptr().write(head);
                if let Some(items) = items {
                    std::ptr::copy_nonoverlapping(items.as_ptr(), tail.as_ptr().cast::<T>(), len);
                }
            }
            Ok(())
        },
    )?)
}

/// Where an arena array's elements start in its slot: after the head, aligned for `T`.
const fn data_off<H, T>() -> usize {
    std::mem::size_of::<H>().next_multiple_of(std::mem::align_of::<T>())
}

macro_rules! array_common {
    ($ty:ident, $head:ident, $min:expr) => {
        impl<T: SharedData> $ty<T> {
            fn from_shm(shm: Shared<$head<T>>) -> Self {
                let len = *shm.geometry();
                $ty {
                    head: shm.as_ptr(),
                    data: shm.tail_ptr().cast::<T>(),
                    len,
                    backing: Backing::Own(shm),
                }
            }

            /// An arena array: reads the length once and checks the elements fit the slot.
            fn from_slot(backing: Backing<$head<T>>) -> Result<Self, ShmError> {
                let head = backing.ptr();
                let room = backing.slot_size().unwrap_or(0);
                let off = data_off::<$head<T>, T>();
                // SAFETY: the slot holds a head of this type (tag checked on open, or just
                // written), mapped while `backing` lives; atomics only.
                // Relaxed: written by the creator before the handle existed (the slot's
                // refcount Acquire on open orders it).
                let len = unsafe { head.as_ref() }.len.load(Ordering::Relaxed);
                let len = validate_len::<T>(
                    len,
                    (len as usize)
                        .checked_mul(std::mem::size_of::<T>())
                        .filter(|b| off + b <= room)
                        .ok_or(ShmError::OutOfRange {
                            what: "array length (elements) for its arena slot",
                            found: len,
                            limit: (room.saturating_sub(off) / std::mem::size_of::<T>()) as u64,
                        })?,
                )?;
                // SAFETY: off + len * size_of::<T>() <= the slot size (checked above), so the
                // elements are inside the slot; aligned (see `data_off` and `create_in`).
                let data = unsafe { head.cast::<u8>().add(off) }.cast::<T>();
                Ok($ty {
                    head,
                    data,
                    len,
                    backing,
                })
            }

            /// Whether an array of `len` elements goes into an arena slot (head and elements
            /// within [`crate::arena::MAX_OBJECT`] bytes); bigger arrays keep their own segment.
            pub fn fits_arena(len: usize) -> bool {
                len.checked_mul(std::mem::size_of::<T>())
                    .and_then(|b| b.checked_add(data_off::<$head<T>, T>()))
                    .is_some_and(|b| b <= crate::arena::MAX_OBJECT)
            }

            fn create_in(
                arena: &Arena,
                len: usize,
                items: Option<&[T]>,
            ) -> Result<Self, CreateError> {
                const {
                    assert!(
                        std::mem::size_of::<T>() > 0,
                        "zero-sized element types are not supported"
                    )
                };
                check_align::<T>()?;
                if !Self::fits_arena(len) {
                    return Self::create(None, len, items);
                }
                let size = data_off::<$head<T>, T>() + len * std::mem::size_of::<T>();
                let backing = Backing::new_in_sized(
                    arena,
                    size,
                    $min,
                    &TypeFingerprint::of::<T>(),
                    $head::new(len),
                )?;
                let a = Self::from_slot(backing)?;
                if let Some(items) = items {
                    // SAFETY: `a.data` has room for `len` Ts (from_slot checked it) and no
                    // other handle names the slot yet.
                    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), a.data.as_ptr(), len) };
                }
                Ok(a)
            }

            /// A new array of `len` zeroed elements in a slot of `arena` when head and
            /// elements fit [`crate::arena::MAX_OBJECT`] bytes (else in its own segment, as
            /// [`Self::zeroed`]). See [`crate::arena`] for when the slot is freed.
            pub fn zeroed_in(arena: &Arena, len: usize) -> Result<Self, CreateError> {
                Self::create_in(arena, len, None)
            }

            /// [`Self::zeroed_in`] holding a copy of `items`.
            pub fn from_slice_in(arena: &Arena, items: &[T]) -> Result<Self, CreateError> {
                Self::create_in(arena, items.len(), Some(items))
            }

            /// Opens an arena array's handle ([`ShmError::StaleHandle`] if it was freed).
            pub fn open_slot(handle: &SlotHandle) -> Result<Self, CreateError> {
                check_align::<T>()?;
                Ok(Self::from_slot(Backing::open_slot(
                    handle,
                    &TypeFingerprint::of::<T>(),
                )?)?)
            }

            /// The arena handle of an arena array (`None` for one with its own segment).
            pub fn slot_handle(&self) -> Option<SlotHandle> {
                self.backing.slot_handle()
            }

            fn create(
                name: Option<&str>,
                len: usize,
                items: Option<&[T]>,
            ) -> Result<Self, CreateError> {
                Ok(Self::from_shm(create_array(
                    name,
                    len,
                    items,
                    $head::new(len),
                )?))
            }

            /// A new anonymous array of `len` zeroed elements (Python's `Array('i', 10)`): in
            /// a slot of this process's arena ([`Arena::global`]) when head and elements fit
            /// [`crate::arena::MAX_OBJECT`] bytes ([`Self::fits_arena`]), else in a segment of
            /// its own. [`Self::zeroed_segment`] always gives it a segment of its own.
            pub fn zeroed(len: usize) -> Result<Self, CreateError> {
                Self::create_in(Arena::global(), len, None)
            }

            /// A new anonymous array holding a copy of `items` (placed as [`Self::zeroed`]).
            pub fn from_slice(items: &[T]) -> Result<Self, CreateError> {
                Self::create_in(Arena::global(), items.len(), Some(items))
            }

            /// A new anonymous array of `len` zeroed elements in a segment of its own (one
            /// memfd and mapping): what [`Self::zeroed`] did before arenas.
            pub fn zeroed_segment(len: usize) -> Result<Self, CreateError> {
                Self::create(None, len, None)
            }

            /// [`Self::zeroed_segment`] holding a copy of `items`.
            pub fn from_slice_segment(items: &[T]) -> Result<Self, CreateError> {
                Self::create(None, items.len(), Some(items))
            }

            /// A new named array of `len` zeroed elements.
            pub fn create_named(name: &str, len: usize) -> Result<Self, CreateError> {
                Self::create(Some(name), len, None)
            }

            /// A new named array holding a copy of `items`.
            pub fn create_named_from_slice(name: &str, items: &[T]) -> Result<Self, CreateError> {
                Self::create(Some(name), items.len(), Some(items))
            }

            /// [`Self::create_named_from_slice`] with a persistent name: it outlives this
            /// process's handles and this process, until [`Self::unlink`],
            /// `multiproc_shm::unlink_name(name)` or `multiproc clean --persistent`.
            pub fn create_named_persistent(name: &str, items: &[T]) -> Result<Self, CreateError> {
                multiproc_shm::persistent(|| Self::create(Some(name), items.len(), Some(items)))
            }

            /// Removes this named array's name (open handles keep working; new opens fail).
            /// Returns whether it did.
            pub fn unlink(&self) -> bool {
                self.segment().unlink_name()
            }

            /// Opens a named array, checking kind, element type and length.
            pub fn open_named(name: &str) -> Result<Self, CreateError> {
                check_align::<T>()?;
                Ok(Self::from_shm(Shared::open_named(
                    name,
                    TypeFingerprint::of::<T>(),
                )?))
            }

            /// Opens the array a handle names.
            pub fn open_handle(handle: &SegmentHandle) -> Result<Self, CreateError> {
                check_align::<T>()?;
                Ok(Self::from_shm(Shared::open_handle(
                    handle,
                    TypeFingerprint::of::<T>(),
                )?))
            }

            /// Number of elements (validated once, when this handle was made).
            pub fn len(&self) -> usize {
                self.len
            }

            /// Whether it has no elements.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// The segment behind this array (an arena array's arena segment).
            pub fn segment(&self) -> &Segment {
                self.backing.segment()
            }

            /// How another process reaches this array.
            pub fn handle(&self) -> SegmentHandle {
                self.segment().handle()
            }
        }

        impl<T: SharedData> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    backing: self.backing.clone(),
                    head: self.head,
                    data: self.data,
                    len: self.len,
                }
            }
        }

        // SAFETY: the elements live in the mapping `shm` keeps alive; access is locked (Array)
        // or atomic copies of plain data (RawArray).
        unsafe impl<T: SharedData> Send for $ty<T> {}
        // SAFETY: as above.
        unsafe impl<T: SharedData> Sync for $ty<T> {}

        impl<T: SharedData> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("type", &std::any::type_name::<T>())
                    .field("len", &self.len)
                    .field("segment", self.segment())
                    .finish()
            }
        }

        impl<T: SharedData> Serialize for $ty<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.backing.wire().serialize(s)
            }
        }

        impl<'de, T: SharedData> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match ObjectHandle::deserialize(d)? {
                    ObjectHandle::Segment(h) => $ty::open_handle(&h),
                    ObjectHandle::Slot(h) => $ty::open_slot(&h),
                }
                .map_err(serde::de::Error::custom)
            }
        }
    };
}

impl<T> LockedHead<T> {
    fn new(len: usize) -> Self {
        LockedHead {
            mutex: RobustMutex::new(),
            len: AtomicU64::new(len as u64),
            _t: PhantomData,
        }
    }
}

impl<T> RawHead<T> {
    fn new(len: usize) -> Self {
        RawHead {
            len: AtomicU64::new(len as u64),
            _t: PhantomData,
        }
    }
}

/// A fixed-length `[T]` in shared memory guarded by a robust process-shared lock (Python's `Array`).
pub struct Array<T: SharedData> {
    /// Its own segment or an arena slot.
    backing: Backing<LockedHead<T>>,
    /// The head, inside the memory `backing` keeps alive.
    head: NonNull<LockedHead<T>>,
    /// The first element (the segment's tail, or after the head in the slot).
    data: NonNull<T>,
    /// The validated length.
    len: usize,
}

array_common!(Array, LockedHead, 64);

impl<T: SharedData> Array<T> {
    #[inline]
    fn mutex(&self) -> &RobustMutex {
        // SAFETY: `head` points into memory `backing` keeps alive as long as `self`; atomics.
        unsafe { &self.head.as_ref().mutex }
    }

    fn guard(
        &self,
        lock: impl FnOnce(&RobustMutex, Locker) -> Result<LockOutcome, MutexError>,
    ) -> RecoverResult<ArrayGuard<'_, T>> {
        let who = Locker::current();
        let died = match lock(self.mutex(), who)? {
            LockOutcome::Acquired => false,
            LockOutcome::OwnerDied => true,
        };
        Ok((
            ArrayGuard {
                array: self,
                who,
                _not_send: PhantomData,
            },
            died,
        ))
    }

    /// Locks the array; the guard derefs to `[T]`. If the last holder died inside its critical
    /// section, the lock is released again and this is `Err(LockError::OwnerDied)`;
    /// [`Array::get_lock_recover`] takes such a lock.
    #[inline]
    pub fn get_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        refuse_owner_died(self.get_lock_recover())
    }

    /// Locks without waiting.
    pub fn try_get_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        refuse_owner_died(self.guard(|m, who| m.try_lock_with(who)))
    }

    /// Locks, waiting at most `timeout`.
    pub fn get_lock_timeout(&self, timeout: Duration) -> LockResult<ArrayGuard<'_, T>> {
        refuse_owner_died(self.get_lock_recover_timeout(timeout))
    }

    /// Locks, also when the previous holder died holding the lock: returns the guard and
    /// whether it did (`true`: the elements may be half-updated). Never `Err(OwnerDied)`.
    #[inline]
    pub fn get_lock_recover(&self) -> RecoverResult<ArrayGuard<'_, T>> {
        self.guard(|m, who| m.lock_with(who, None))
    }

    /// [`Array::get_lock_recover`] waiting at most `timeout`.
    pub fn get_lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<ArrayGuard<'_, T>> {
        self.guard(|m, who| m.lock_with(who, Some(timeout)))
    }

    /// Element `index`, read under the lock.
    pub fn get(&self, index: usize) -> Result<T, AccessError> {
        let g = self.get_lock()?;
        g.get(index).copied().ok_or(AccessError::IndexOutOfRange {
            index,
            len: self.len,
        })
    }

    /// Sets element `index` under the lock.
    pub fn set(&self, index: usize, value: T) -> Result<(), AccessError> {
        let mut g = self.get_lock()?;
        let len = self.len;
        *g.get_mut(index)
            .ok_or(AccessError::IndexOutOfRange { index, len })? = value;
        Ok(())
    }

    /// A copy of every element, taken under the lock.
    pub fn to_vec(&self) -> LockResult<Vec<T>> {
        Ok(self.get_lock()?.to_vec())
    }
}

/// The held lock of an [`Array`]; derefs to `[T]`. `!Send`.
pub struct ArrayGuard<'a, T: SharedData> {
    array: &'a Array<T>,
    /// The locking thread (unlocks with the same identity).
    who: Locker,
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
        // The borrow `'a` keeps the memory mapped until this returns.
        // The guard exists only while this thread holds the lock (and is !Send).
        self.array.mutex().unlock_as(self.who)
    }
}

/// A fixed-length `[T]` in shared memory without a lock (Python's `RawArray`). Element reads and
/// writes are atomic copies (one atomic for elements of 1, 2, 4 or 8 bytes, else word- or
/// byte-wise): racing accesses to a multi-word element may be torn, as in Python.
pub struct RawArray<T: SharedData> {
    /// Its own segment or an arena slot.
    backing: Backing<RawHead<T>>,
    /// The head, inside the memory `backing` keeps alive.
    head: NonNull<RawHead<T>>,
    /// The first element (the segment's tail, or after the head in the slot).
    data: NonNull<T>,
    /// The validated length.
    len: usize,
}

array_common!(RawArray, RawHead, 16);

impl<T: SharedData> RawArray<T> {
    /// Element `index` (an atomic copy; may be torn if another process writes it meanwhile).
    #[inline]
    pub fn get(&self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        // SAFETY: index < len (the validated length, whose elements fill the tail exactly), so
        // the element is inside the mapping `shm` keeps; aligned (tail 128-aligned, T's align
        // <= 128); every access to the elements is atomic; T is FromBytes.
        Some(unsafe { raw::load(self.data.as_ptr().add(index)) })
    }

    /// Sets element `index` (an atomic copy).
    #[inline]
    pub fn set(&self, index: usize, value: T) -> Result<(), AccessError> {
        if index >= self.len {
            return Err(AccessError::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        // SAFETY: as in get.
        unsafe { raw::store(self.data.as_ptr().add(index), value) };
        Ok(())
    }

    /// Copies every element out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }

    /// Overwrites every element from `items` (which must have the same length).
    pub fn copy_from_slice(&self, items: &[T]) -> Result<(), AccessError> {
        if items.len() != self.len {
            return Err(AccessError::LengthMismatch {
                got: items.len(),
                len: self.len,
            });
        }
        for (i, v) in items.iter().enumerate() {
            // SAFETY: i < len, as in get.
            unsafe { raw::store(self.data.as_ptr().add(i), *v) };
        }
        Ok(())
    }

    /// The raw element pointer. Every access through it must be atomic (other processes access
    /// the elements concurrently).
    pub fn as_ptr(&self) -> *mut T {
        self.data.as_ptr()
    }
}
