//! `Value<T>` and `RawValue<T>`: one plain-data value in shared memory, with or without a lock.
//!
//! Python's `Value('q', 0)` becomes `Value::new(0i64)`; `with v.get_lock(): v.value += 1` becomes
//! `*v.get_lock()? += 1`. The lock is a [`RobustMutex`] next to the value in the same segment, so
//! a holder killed mid-update makes the next `get_lock()` fail with [`LockError::OwnerDied`]
//! (nothing held, so `?` takes it), while [`Value::get_lock_recover`] takes the lock and says
//! whether the data needs repair.
//! `RawValue<T>` is Python's `lock=False`: loads and stores are atomic copies (one atomic for 1, 2,
//! 4 or 8 bytes, else word- or byte-wise), so a reader racing a writer of a multi-word `T` may see
//! a torn value, exactly as in Python — but never a data race.
//!
//! An anonymous `Value::new` / `RawValue::new` lives in a slot of the process's arena
//! ([`crate::arena`]: many values per segment, one fd and mapping per arena segment); a named one,
//! or one made with `new_segment`, in a segment of its own. A [`ValueGuard`] borrows the handle;
//! it holds no `KeepAlive`: leaking a guard and dropping every handle unmaps a lock this thread
//! still holds, which is harmless with the futex mutex (nothing in this process points into the
//! mapping: no robust list as glibc's had), and a `KeepAlive` per lock cost 20-30% of
//! `value_lock_incr` (docs/sync.md). Other processes take the lock over once this thread exits.
//!
//! Handles are `Clone` (same memory) and serialize as an [`ObjectHandle`] (the arena segment,
//! slot and generation, or the own segment): deserializing opens it and checks its kind and
//! element type, so a `Value<i64>` cannot be opened as `Value<f64>`, and a freed slot is refused.
//!
//! ```
//! use multiproc_sync::Value;
//! let v = Value::new(41i64).unwrap();
//! *v.get_lock().unwrap() += 1;
//! assert_eq!(v.load().unwrap(), 42);
//! ```

use crate::arena::{Arena, Backing, ObjectHandle, SlotHandle};
use crate::error::{CreateError, LockError, LockResult, RecoverResult, refuse_owner_died};
use crate::facade::raw;
use crate::mutex::{LockOutcome, Locker, MutexError, RobustMutex};
use multiproc_shm::{
    ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// What a shared value may hold: plain data, valid for any bit pattern (another process may have
/// written any bytes), with no pointers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not plain data, so it cannot live in a shared Value/Array",
    label = "not plain data",
    note = "Value<T> needs plain data: derive zerocopy FromBytes+IntoBytes+Immutable (with \
            #[repr(C)]) or use a fixed array; for a String or Vec use a Queue or SharedDict"
)]
pub trait SharedData: FromBytes + IntoBytes + Immutable + Copy + Send + 'static {}
// `do_not_recommend`: a type that is not plain data gets the one message above, not one error
// per unmet zerocopy bound.
#[diagnostic::do_not_recommend]
impl<T: FromBytes + IntoBytes + Immutable + Copy + Send + 'static> SharedData for T {}

/// The shared layout of a [`Value`]: the lock, then the value.
#[repr(C)]
struct ValueCell<T> {
    mutex: RobustMutex,
    value: UnsafeCell<T>,
}

// SAFETY: the mutex is atomics only and `T: SharedData` is valid for any bytes, so any bit
// pattern is a valid ValueCell; `value` is only touched by the lock holder (an `UnsafeCell`
// reached under the lock); `T`'s alignment is checked to be <= 256 in `Value::create`; no Drop
// (T: Copy). Nothing in it sizes or indexes anything.
unsafe impl<T: SharedData> SharedLayout for ValueCell<T> {
    const KIND: ObjectKind = ObjectKind::Value;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
        Ok(())
    }
}

// SAFETY: shared between threads (and processes) by design: the mutex is atomics, the value is
// reached only by the lock holder.
unsafe impl<T: SharedData> Sync for ValueCell<T> {}

/// The shared layout of a [`RawValue`]: the value alone, accessed only through atomic copies.
#[repr(C)]
struct RawCell<T> {
    value: UnsafeCell<T>,
}

// SAFETY: `T: SharedData` is valid for any bytes; `value` is only accessed through atomic
// copies (`facade::raw`), never through a reference; alignment checked <= 256 at create; no Drop.
unsafe impl<T: SharedData> SharedLayout for RawCell<T> {
    const KIND: ObjectKind = ObjectKind::RawValue;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
        Ok(())
    }
}

// SAFETY: every access is atomic (see above).
unsafe impl<T: SharedData> Sync for RawCell<T> {}

/// Refuses element types aligned beyond a payload's 256 bytes (a `#[repr(align(512))]` type).
pub(crate) fn check_align<T>() -> Result<(), CreateError> {
    let align = std::mem::align_of::<T>();
    if align > 128 {
        return Err(ShmError::OutOfRange {
            what: "element alignment",
            found: align as u64,
            limit: 128,
        }
        .into());
    }
    Ok(())
}

fn create_cell<L: SharedLayout>(
    name: Option<&str>,
    fp: TypeFingerprint,
    cell: L,
) -> Result<Shared<L>, CreateError> {
    Ok(Shared::<L>::create(name, fp, 0, |p, _| {
        // SAFETY: `p` is valid and aligned for one `L` and unseen by others before Ready.
        unsafe { p.as_ptr().write(cell) };
        Ok(())
    })?)
}

/// A `T` in shared memory guarded by a robust process-shared lock (Python's `Value`).
pub struct Value<T: SharedData> {
    /// The cell, inside the memory `backing` keeps alive.
    cell: NonNull<ValueCell<T>>,
    backing: Backing<ValueCell<T>>,
}

// SAFETY: the cell is shared memory built for sharing (ValueCell is Sync: a mutex of atomics and
// a value reached only under it); `backing` (Send + Sync) keeps it mapped.
unsafe impl<T: SharedData> Send for Value<T> {}
// SAFETY: as above.
unsafe impl<T: SharedData> Sync for Value<T> {}

impl<T: SharedData> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            cell: self.cell,
            backing: self.backing.clone(),
        }
    }
}

impl<T: SharedData> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("segment", self.backing.segment())
            .field("slot", &self.backing.slot_handle())
            .finish()
    }
}

impl<T: SharedData> Value<T> {
    fn create(name: Option<&str>, value: T) -> Result<Self, CreateError> {
        check_align::<T>()?;
        let cell = ValueCell {
            mutex: RobustMutex::new(),
            value: UnsafeCell::new(value),
        };
        Ok(Self::from_backing(Backing::Own(create_cell(
            name,
            TypeFingerprint::of::<T>(),
            cell,
        )?)))
    }

    /// A new anonymous shared value, in a slot of this process's arena ([`Arena::global`]):
    /// one fd and mapping per arena segment, not per value, and a 64-byte slot at least, so two
    /// hot locks never share a cache line. A `T` too big for an arena slot (the lock and the
    /// value over [`crate::arena::MAX_OBJECT`] bytes) gets its own segment. Shared with forked
    /// children (each holds the slot from the fork on) and spawned ones (through serde).
    /// [`Value::new_segment`] gives the value a segment of its own.
    pub fn new(value: T) -> Result<Self, CreateError> {
        if Arena::fits(std::mem::size_of::<ValueCell<T>>(), 64) {
            Self::new_in(Arena::global(), value)
        } else {
            Self::create(None, value)
        }
    }

    /// A new anonymous value in a segment of its own (one memfd and mapping): what
    /// [`Value::new`] did before arenas. [`Value::segment`] is then this value's alone.
    pub fn new_segment(value: T) -> Result<Self, CreateError> {
        Self::create(None, value)
    }

    /// A new named value other processes can open by `name`.
    pub fn create_named(name: &str, value: T) -> Result<Self, CreateError> {
        Self::create(Some(name), value)
    }

    /// A new named value whose name outlives this process's handles and this process, until
    /// [`Value::unlink`], `multiproc_shm::unlink_name(name)` or `multiproc clean --persistent`
    /// (as Python's `SharedMemory`): a service can hand out the name while creators come and go.
    pub fn create_named_persistent(name: &str, value: T) -> Result<Self, CreateError> {
        multiproc_shm::persistent(|| Self::create(Some(name), value))
    }

    /// Removes this named value's name (handles already open keep working; new opens fail).
    /// Returns whether it did (false for an anonymous value, or a name already gone or reused).
    pub fn unlink(&self) -> bool {
        self.segment().unlink_name()
    }

    /// Opens a named value, checking that it holds a `Value<T>`.
    pub fn open_named(name: &str) -> Result<Self, CreateError> {
        Ok(Self::from_backing(Backing::Own(Shared::open_named(
            name,
            TypeFingerprint::of::<T>(),
        )?)))
    }

    /// Opens the value a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self, CreateError> {
        Ok(Self::from_backing(Backing::Own(Shared::open_handle(
            handle,
            TypeFingerprint::of::<T>(),
        )?)))
    }

    fn from_backing(backing: Backing<ValueCell<T>>) -> Self {
        Value {
            cell: backing.ptr(),
            backing,
        }
    }

    /// A new value in a slot of `arena` (one fd and mapping per arena segment, not per value;
    /// the slot is padded to at least 64 bytes so two hot locks never share a cache line).
    /// See [`crate::arena`] for when the slot is freed.
    pub fn new_in(arena: &Arena, value: T) -> Result<Self, CreateError> {
        check_align::<T>()?;
        let cell = ValueCell {
            mutex: RobustMutex::new(),
            value: UnsafeCell::new(value),
        };
        Ok(Self::from_backing(Backing::new_in(
            arena,
            64,
            &TypeFingerprint::of::<T>(),
            cell,
        )?))
    }

    /// Opens an arena value's handle ([`ShmError::StaleHandle`] if it was freed).
    pub fn open_slot(handle: &SlotHandle) -> Result<Self, CreateError> {
        Ok(Self::from_backing(Backing::open_slot(
            handle,
            &TypeFingerprint::of::<T>(),
        )?))
    }

    /// The arena handle of an arena value (`None` for a value with its own segment).
    pub fn slot_handle(&self) -> Option<SlotHandle> {
        self.backing.slot_handle()
    }

    /// The segment behind this value (an arena value's arena segment, shared with others).
    pub fn segment(&self) -> &Segment {
        self.backing.segment()
    }

    /// How another process reaches this value's segment. For an arena value this names the
    /// whole arena (opening it as a `Value` fails its type check): use
    /// [`Value::slot_handle`] or serde.
    pub fn handle(&self) -> SegmentHandle {
        self.segment().handle()
    }

    #[inline]
    fn cell(&self) -> &ValueCell<T> {
        // SAFETY: `cell` points into the memory `backing` keeps alive for as long as `self`;
        // ValueCell is valid for any bytes and only shared-safe fields (see its SharedLayout).
        unsafe { self.cell.as_ref() }
    }

    #[inline]
    fn guard(
        &self,
        lock: impl FnOnce(&RobustMutex, Locker) -> Result<LockOutcome, MutexError>,
    ) -> RecoverResult<ValueGuard<'_, T>> {
        let who = Locker::current();
        let cell = self.cell();
        let died = match lock(&cell.mutex, who)? {
            LockOutcome::Acquired => false,
            LockOutcome::OwnerDied => true,
        };
        Ok((
            ValueGuard {
                cell,
                who,
                _not_send: PhantomData,
            },
            died,
        ))
    }

    /// Locks the value (Python's `with v.get_lock():`). If the last holder died inside its
    /// critical section, the lock is released again and this is `Err(LockError::OwnerDied)`;
    /// [`Value::get_lock_recover`] takes such a lock.
    #[inline]
    pub fn get_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        refuse_owner_died(self.get_lock_recover())
    }

    /// Locks without waiting (`Failed(WouldBlock)` if held).
    pub fn try_get_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        refuse_owner_died(self.guard(|m, who| m.try_lock_with(who)))
    }

    /// Locks, waiting at most `timeout` (`Failed(Timeout)`).
    pub fn get_lock_timeout(&self, timeout: Duration) -> LockResult<ValueGuard<'_, T>> {
        refuse_owner_died(self.get_lock_recover_timeout(timeout))
    }

    /// Locks, also when the previous holder died holding the lock: returns the guard and
    /// whether it did (`true`: the value may be half-updated; check or repair it). Never
    /// `Err(OwnerDied)`.
    ///
    /// ```
    /// let v = multiproc_sync::Value::new(0u64).unwrap();
    /// let (mut g, owner_died) = v.get_lock_recover().unwrap();
    /// if owner_died {
    ///     *g = 0; // repair: here, start over
    /// }
    /// *g += 1;
    /// ```
    #[inline]
    pub fn get_lock_recover(&self) -> RecoverResult<ValueGuard<'_, T>> {
        self.guard(|m, who| m.lock_with(who, None))
    }

    /// [`Value::get_lock_recover`] waiting at most `timeout`.
    pub fn get_lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<ValueGuard<'_, T>> {
        self.guard(|m, who| m.lock_with(who, Some(timeout)))
    }

    /// Reads the value under the lock (`Err(OwnerDied)` as [`Value::get_lock`]).
    pub fn load(&self) -> Result<T, LockError> {
        Ok(*self.get_lock()?)
    }

    /// Writes the value under the lock (`Err(OwnerDied)` as [`Value::get_lock`]: nothing is
    /// written then).
    pub fn store(&self, value: T) -> Result<(), LockError> {
        *self.get_lock()? = value;
        Ok(())
    }
}

/// The held lock of a [`Value`]; derefs to the value. Unlocks on drop. `!Send`: a robust mutex is
/// released by the thread that took it.
pub struct ValueGuard<'a, T: SharedData> {
    cell: &'a ValueCell<T>,
    /// The locking thread (unlocks with the same identity, no second lookup).
    who: Locker,
    _not_send: PhantomData<*const ()>,
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
        // The borrow `'a` keeps the memory mapped until this returns.
        // The guard exists only while this thread holds the lock (and is !Send).
        self.cell.mutex.unlock_as(self.who)
    }
}

impl<T: SharedData> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.backing.wire().serialize(s)
    }
}

impl<'de, T: SharedData> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ObjectHandle::deserialize(d)? {
            ObjectHandle::Segment(h) => Value::open_handle(&h),
            ObjectHandle::Slot(h) => Value::open_slot(&h),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// A `T` in shared memory without a lock (Python's `Value(..., lock=False)` / `RawValue`).
///
/// Loads and stores are atomic accesses: one atomic for a `T` of 1, 2, 4 or 8 bytes (aligned
/// to its size), else a sequence of atomic words or bytes, so a reader racing a writer of a
/// multi-word `T` may see a torn value, exactly as in Python. A load is Acquire and a store
/// Release (fences around the copy), so a value published with `store` carries what the
/// writer wrote before it.
pub struct RawValue<T: SharedData> {
    /// The cell, inside the memory `backing` keeps alive.
    cell: NonNull<RawCell<T>>,
    backing: Backing<RawCell<T>>,
}

// SAFETY: the cell is only accessed atomically (RawCell is Sync); `backing` keeps it mapped.
unsafe impl<T: SharedData> Send for RawValue<T> {}
// SAFETY: as above.
unsafe impl<T: SharedData> Sync for RawValue<T> {}

impl<T: SharedData> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            cell: self.cell,
            backing: self.backing.clone(),
        }
    }
}

impl<T: SharedData> std::fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawValue")
            .field("type", &std::any::type_name::<T>())
            .field("segment", self.backing.segment())
            .field("slot", &self.backing.slot_handle())
            .finish()
    }
}

impl<T: SharedData> RawValue<T> {
    fn create(name: Option<&str>, value: T) -> Result<Self, CreateError> {
        check_align::<T>()?;
        let cell = RawCell {
            value: UnsafeCell::new(value),
        };
        Ok(Self::from_backing(Backing::Own(create_cell(
            name,
            TypeFingerprint::of::<T>(),
            cell,
        )?)))
    }

    /// A new anonymous raw value, in a slot of this process's arena ([`Arena::global`]; 32-byte
    /// slots for a `u64`, record included: not padded to a cache line, as Python's `RawValue`). A `T` over
    /// [`crate::arena::MAX_OBJECT`] bytes gets its own segment. [`RawValue::new_segment`] gives
    /// the value a segment of its own.
    pub fn new(value: T) -> Result<Self, CreateError> {
        if Arena::fits(std::mem::size_of::<RawCell<T>>(), 16) {
            Self::new_in(Arena::global(), value)
        } else {
            Self::create(None, value)
        }
    }

    /// A new anonymous raw value in a segment of its own (one memfd and mapping).
    pub fn new_segment(value: T) -> Result<Self, CreateError> {
        Self::create(None, value)
    }

    /// A new named raw value.
    pub fn create_named(name: &str, value: T) -> Result<Self, CreateError> {
        Self::create(Some(name), value)
    }

    /// Opens a named raw value.
    pub fn open_named(name: &str) -> Result<Self, CreateError> {
        Ok(Self::from_backing(Backing::Own(Shared::open_named(
            name,
            TypeFingerprint::of::<T>(),
        )?)))
    }

    /// Opens the raw value a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self, CreateError> {
        Ok(Self::from_backing(Backing::Own(Shared::open_handle(
            handle,
            TypeFingerprint::of::<T>(),
        )?)))
    }

    fn from_backing(backing: Backing<RawCell<T>>) -> Self {
        RawValue {
            cell: backing.ptr(),
            backing,
        }
    }

    /// A new raw value in a slot of `arena` (32-byte slots for a `u64`, record included): one fd and mapping
    /// per arena segment, not per value. See [`crate::arena`] for when the slot is freed.
    pub fn new_in(arena: &Arena, value: T) -> Result<Self, CreateError> {
        check_align::<T>()?;
        let cell = RawCell {
            value: UnsafeCell::new(value),
        };
        Ok(Self::from_backing(Backing::new_in(
            arena,
            16,
            &TypeFingerprint::of::<T>(),
            cell,
        )?))
    }

    /// Opens an arena raw value's handle ([`ShmError::StaleHandle`] if it was freed).
    pub fn open_slot(handle: &SlotHandle) -> Result<Self, CreateError> {
        Ok(Self::from_backing(Backing::open_slot(
            handle,
            &TypeFingerprint::of::<T>(),
        )?))
    }

    /// The arena handle of an arena raw value (`None` for one with its own segment).
    pub fn slot_handle(&self) -> Option<SlotHandle> {
        self.backing.slot_handle()
    }

    #[inline]
    fn value_ptr(&self) -> *mut T {
        // SAFETY: `cell` points into memory `backing` keeps alive; the projection forms no
        // reference to the value (UnsafeCell::get on a shared RawCell).
        unsafe { self.cell.as_ref().value.get() }
    }

    /// Reads the value (atomic; may be torn if another process writes a multi-word `T`
    /// concurrently).
    #[inline]
    pub fn load(&self) -> T {
        // SAFETY: the cell is inside the live memory `self.backing` holds, aligned for T
        // (segment payloads are 256-aligned, arena slots aligned to their power-of-two size;
        // align_of::<T>() <= 128 checked at create); every access to it is atomic (this type's
        // only accessors); T: FromBytes, so any bytes are a valid T.
        unsafe { raw::load(self.value_ptr()) }
    }

    /// Writes the value (atomic; see [`RawValue::load`]).
    #[inline]
    pub fn store(&self, value: T) {
        // SAFETY: as in load.
        unsafe { raw::store(self.value_ptr(), value) }
    }

    /// The raw pointer. Every access through it must be atomic (other processes access the
    /// value concurrently); prefer [`RawValue::load`]/[`RawValue::store`] or, for a
    /// `RawValue<u64>`, [`RawValue::as_atomic`].
    pub fn as_ptr(&self) -> *mut T {
        self.value_ptr()
    }

    /// The segment behind this value (an arena value's arena segment, shared with others).
    pub fn segment(&self) -> &Segment {
        self.backing.segment()
    }

    /// How another process reaches this value.
    pub fn handle(&self) -> SegmentHandle {
        self.segment().handle()
    }
}

impl RawValue<u64> {
    /// The value as an `AtomicU64`, for read-modify-write operations (`fetch_add`, CAS) shared
    /// with other processes. Mixes safely with `load`/`store`, which are atomic too.
    pub fn as_atomic(&self) -> &crate::facade::StdAtomicU64 {
        // SAFETY: the u64 is 8-aligned (offset 0 of a 256-aligned payload or of a 16-aligned
        // arena slot) and lives as long as the memory `self.backing` holds, i.e. at least as long as `&self`; every access to it by
        // this crate is atomic, and other processes must do the same (the documented contract).
        unsafe { crate::facade::StdAtomicU64::from_ptr(self.as_ptr()) }
    }
}

impl<T: SharedData> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.backing.wire().serialize(s)
    }
}

impl<'de, T: SharedData> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ObjectHandle::deserialize(d)? {
            ObjectHandle::Segment(h) => RawValue::open_handle(&h),
            ObjectHandle::Slot(h) => RawValue::open_slot(&h),
        }
        .map_err(serde::de::Error::custom)
    }
}
