//! `Value<T>` and `RawValue<T>`: one plain-data value in shared memory, with or without a lock.
//!
//! Python's `Value('q', 0)` becomes `Value::new(0i64)`; `with v.get_lock(): v.value += 1` becomes
//! `*v.get_lock()? += 1`. The lock is a [`RobustMutex`] next to the value in the same segment, so
//! a holder killed mid-update hands the next locker [`LockError::OwnerDied`] with the guard.
//! `RawValue<T>` is Python's `lock=False`: loads and stores are single volatile copies, so a reader
//! racing a writer of a multi-word `T` may see a torn value, exactly as in Python.
//!
//! Handles are `Clone` (same memory) and serialize as their segment handle: deserializing opens
//! the segment and checks its kind and element type, so a `Value<i64>` cannot be opened as
//! `Value<f64>`.
//!
//! ```
//! use multiproc_sync::Value;
//! let v = Value::new(41i64).unwrap();
//! *v.get_lock().unwrap() += 1;
//! assert_eq!(v.load().unwrap(), 42);
//! ```

use crate::error::{LockError, LockResult, SyncError};
use crate::mutex::{LockOutcome, MutexError, RobustMutex};
use multiproc_shm::{Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, TypeFingerprint};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// What a shared value may hold: plain data, valid for any bit pattern (another process may have
/// written any bytes), with no pointers.
pub trait SharedData: FromBytes + IntoBytes + Immutable + Copy + Send + 'static {}
impl<T: FromBytes + IntoBytes + Immutable + Copy + Send + 'static> SharedData for T {}

#[repr(C)]
struct ValueCell<T> {
    mutex: RobustMutex,
    value: UnsafeCell<T>,
}

fn spec_of<C, T: 'static>(kind: ObjectKind, size: usize, align: usize) -> SegmentSpec {
    let _ = PhantomData::<C>;
    SegmentSpec::new(kind, TypeFingerprint::of::<T>(), size, align)
}

/// Creates a segment (anonymous or named) and runs `init` on its payload.
pub(crate) fn create_segment(
    name: Option<&str>,
    spec: &SegmentSpec,
    init: impl FnOnce(NonNull<u8>, usize) -> multiproc_shm::Result<()>,
) -> Result<Segment, SyncError> {
    Ok(match name {
        Some(n) => Segment::create_named(n, spec, init)?,
        None => Segment::create_anonymous(spec, init)?,
    })
}

pub(crate) fn init_mutex(ptr: *mut RobustMutex) -> multiproc_shm::Result<()> {
    // SAFETY: callers pass a pointer into a payload that nobody else can see yet, aligned for
    // RobustMutex (payloads are 256-aligned and the mutex is at offset 0 of its cell).
    unsafe { RobustMutex::init_at(ptr) }.map_err(|source| multiproc_shm::ShmError::Os {
        op: "pthread_mutex_init",
        source,
    })
}

/// A `T` in shared memory guarded by a robust process-shared lock (Python's `Value`).
pub struct Value<T: SharedData> {
    seg: Segment,
    cell: NonNull<ValueCell<T>>,
}

// SAFETY: the cell lives in shared memory owned by `seg` (kept alive by the handle); access to the
// value goes through the robust mutex, which is Sync.
unsafe impl<T: SharedData> Send for Value<T> {}
// SAFETY: as above.
unsafe impl<T: SharedData> Sync for Value<T> {}

impl<T: SharedData> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            seg: self.seg.clone(),
            cell: self.cell,
        }
    }
}

impl<T: SharedData> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("segment", &self.seg)
            .finish()
    }
}

impl<T: SharedData> Value<T> {
    fn spec() -> SegmentSpec {
        spec_of::<ValueCell<T>, T>(
            ObjectKind::Value,
            std::mem::size_of::<ValueCell<T>>(),
            std::mem::align_of::<ValueCell<T>>(),
        )
    }

    fn expect() -> Expect {
        Expect::new(ObjectKind::Value, TypeFingerprint::of::<T>())
            .payload_size(std::mem::size_of::<ValueCell<T>>() as u64)
    }

    fn create(name: Option<&str>, value: T) -> Result<Self, SyncError> {
        let seg = create_segment(name, &Self::spec(), |p, _| {
            let cell = p.as_ptr().cast::<ValueCell<T>>();
            // SAFETY: the payload is at least size_of::<ValueCell<T>>() bytes and 256-aligned,
            // and nobody else can see it before Ready.
            unsafe {
                init_mutex(std::ptr::addr_of_mut!((*cell).mutex))?;
                std::ptr::addr_of_mut!((*cell).value)
                    .cast::<T>()
                    .write(value);
            }
            Ok(())
        })?;
        Ok(Self::from_segment(seg))
    }

    fn from_segment(seg: Segment) -> Self {
        let cell = seg.payload_ptr().cast::<ValueCell<T>>();
        Value { seg, cell }
    }

    /// A new anonymous shared value (memfd: shared with forked and spawned children).
    pub fn new(value: T) -> Result<Self, SyncError> {
        Self::create(None, value)
    }

    /// A new named value other processes can open by `name`.
    pub fn create_named(name: &str, value: T) -> Result<Self, SyncError> {
        Self::create(Some(name), value)
    }

    /// Opens a named value, checking that it holds a `Value<T>`.
    pub fn open_named(name: &str) -> Result<Self, SyncError> {
        Ok(Self::from_segment(Segment::open_named(
            name,
            &Self::expect(),
        )?))
    }

    /// Opens the value a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self, SyncError> {
        Ok(Self::from_segment(Segment::open_handle(
            handle,
            &Self::expect(),
        )?))
    }

    /// The segment behind this value.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    fn cell(&self) -> &ValueCell<T> {
        // SAFETY: the pointer is into the live mapping held by self.seg, aligned and sized for a
        // ValueCell<T> (checked at create/open); the fields are a Sync mutex and an UnsafeCell.
        unsafe { self.cell.as_ref() }
    }

    fn guard(&self, r: Result<LockOutcome, MutexError>) -> LockResult<ValueGuard<'_, T>> {
        match r {
            Ok(LockOutcome::Acquired) => Ok(ValueGuard::new(self.cell())),
            Ok(LockOutcome::OwnerDied) => Err(LockError::OwnerDied(ValueGuard::new(self.cell()))),
            Err(e) => Err(LockError::Failed(e)),
        }
    }

    /// Locks the value (Python's `with v.get_lock():`). `Err(OwnerDied(guard))` means the last
    /// holder died inside its critical section; the guard is still yours.
    #[inline]
    pub fn get_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.cell().mutex.lock())
    }

    /// Locks without waiting (`Failed(WouldBlock)` if held).
    pub fn try_get_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.cell().mutex.try_lock())
    }

    /// Locks, waiting at most `timeout` (`Failed(Timeout)`).
    pub fn get_lock_timeout(&self, timeout: Duration) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.cell().mutex.lock_timeout(timeout))
    }

    /// Reads the value under the lock.
    pub fn load(&self) -> Result<T, LockError<T>> {
        match self.get_lock() {
            Ok(g) => Ok(*g),
            Err(e) => Err(e.map(|g| *g)),
        }
    }

    /// Writes the value under the lock.
    pub fn store(&self, value: T) -> Result<(), LockError<()>> {
        match self.get_lock() {
            Ok(mut g) => {
                *g = value;
                Ok(())
            }
            Err(e) => Err(e.map(|mut g| *g = value)),
        }
    }
}

/// The held lock of a [`Value`]; derefs to the value. Unlocks on drop. `!Send`: a robust mutex is
/// released by the thread that took it.
pub struct ValueGuard<'a, T: SharedData> {
    cell: &'a ValueCell<T>,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: SharedData> ValueGuard<'a, T> {
    fn new(cell: &'a ValueCell<T>) -> Self {
        ValueGuard {
            cell,
            _not_send: PhantomData,
        }
    }
}

impl<T: SharedData> Deref for ValueGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no other guard (in any process) accesses the value.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T: SharedData> DerefMut for ValueGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock exclusively, and &mut self prevents aliasing through this guard.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T: SharedData> Drop for ValueGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { self.cell.mutex.unlock() }
    }
}

impl<T: SharedData> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seg.handle().serialize(s)
    }
}

impl<'de, T: SharedData> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        Value::open_handle(&h).map_err(serde::de::Error::custom)
    }
}

/// A `T` in shared memory without a lock (Python's `Value(..., lock=False)` / `RawValue`).
pub struct RawValue<T: SharedData> {
    seg: Segment,
    ptr: NonNull<T>,
}

// SAFETY: the value lives in shared memory owned by seg; accesses are volatile copies of plain data.
unsafe impl<T: SharedData> Send for RawValue<T> {}
// SAFETY: as above.
unsafe impl<T: SharedData> Sync for RawValue<T> {}

impl<T: SharedData> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            seg: self.seg.clone(),
            ptr: self.ptr,
        }
    }
}

impl<T: SharedData> RawValue<T> {
    fn expect() -> Expect {
        Expect::new(ObjectKind::RawValue, TypeFingerprint::of::<T>())
            .payload_size(std::mem::size_of::<T>() as u64)
    }

    fn create(name: Option<&str>, value: T) -> Result<Self, SyncError> {
        let spec = SegmentSpec::new(
            ObjectKind::RawValue,
            TypeFingerprint::of::<T>(),
            std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        );
        let seg = create_segment(name, &spec, |p, _| {
            // SAFETY: the payload holds size_of::<T>() bytes, 256-aligned, unseen by others.
            unsafe { p.as_ptr().cast::<T>().write(value) };
            Ok(())
        })?;
        Ok(Self::from_segment(seg))
    }

    fn from_segment(seg: Segment) -> Self {
        let ptr = seg.payload_ptr().cast::<T>();
        RawValue { seg, ptr }
    }

    /// A new anonymous raw value.
    pub fn new(value: T) -> Result<Self, SyncError> {
        Self::create(None, value)
    }

    /// A new named raw value.
    pub fn create_named(name: &str, value: T) -> Result<Self, SyncError> {
        Self::create(Some(name), value)
    }

    /// Opens a named raw value.
    pub fn open_named(name: &str) -> Result<Self, SyncError> {
        Ok(Self::from_segment(Segment::open_named(
            name,
            &Self::expect(),
        )?))
    }

    /// Opens the raw value a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self, SyncError> {
        Ok(Self::from_segment(Segment::open_handle(
            handle,
            &Self::expect(),
        )?))
    }

    /// One volatile read (may be torn if another process writes a multi-word `T` concurrently).
    #[inline]
    pub fn load(&self) -> T {
        // SAFETY: ptr is valid and aligned for T inside the live mapping; T is FromBytes so any
        // bytes are a valid T. Volatile: the memory is changed by other processes.
        unsafe { self.ptr.as_ptr().read_volatile() }
    }

    /// One volatile write.
    #[inline]
    pub fn store(&self, value: T) {
        // SAFETY: as in load; T is plain data.
        unsafe { self.ptr.as_ptr().write_volatile(value) }
    }

    /// The raw pointer, for atomics the caller builds on it.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The segment behind this value.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

impl<T: SharedData> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seg.handle().serialize(s)
    }
}

impl<'de, T: SharedData> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        RawValue::open_handle(&h).map_err(serde::de::Error::custom)
    }
}
