//! `SharedList<T>`: a list in shared memory (Python's `Manager().list()` without the server).
//!
//! Elements are postcard-encoded entries in the arena; the table is the index array (slot `i`
//! holds the arena offset of element `i`). `push`, `pop` and `set` are point changes through
//! the journal; `insert` and `remove` in the middle rebuild the list into the other space (O(n),
//! as a `Vec`'s memmove is) and publish it with one store, so a holder killed at any moment leaves
//! either the old or the new list. See `store.rs` for the update order.
//!
//! ```
//! use multiproc_collections::SharedList;
//! let l: SharedList<String> = SharedList::with_capacity(16).unwrap();
//! l.push(&"b".into()).unwrap();
//! l.insert(0, &"a".into()).unwrap();
//! assert_eq!(l.to_vec().unwrap(), vec!["a".to_string(), "b".to_string()]);
//! assert_eq!(l.pop().unwrap().as_deref(), Some("b"));
//! ```

use crate::codec::{decode, encode};
use crate::dict::arena_bytes;
use crate::dict::{CollectionOptions, DEFAULT_CAPACITY, Key};
use crate::error::{CreateError, ReadError, WriteError};
use crate::facade::Ordering;
use crate::store::{ARENA_START, Buf, Geometry, How, ListFlavor, State, entry_size};
use multiproc_shm::{Segment, SegmentHandle, TypeFingerprint};
use multiproc_sync::{LockResult, MutexError, RecoverResult, refuse_owner_died};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::time::Duration;

/// The list's store and its held lock.
type Store = crate::store::Store<ListFlavor>;
type Locked<'a> = crate::store::Locked<'a, ListFlavor>;

/// How many elements `to_vec` reserves room for up front; it grows past that as elements are
/// actually read (the length comes from shared memory).
const SNAPSHOT_RESERVE: usize = 1024;

enum Edit<'b> {
    None,
    Insert(u64, &'b [u8]),
    Remove(u64),
}

fn full_arena(g: &Geometry) -> WriteError {
    WriteError::Full {
        what: "arena",
        capacity: g.arena,
    }
}

fn check_size(g: &Geometry, val: &[u8]) -> Result<u64, WriteError> {
    // len <= isize::MAX, so the rounding cannot overflow.
    let need = entry_size(0, val.len() as u64);
    if val.len() > u32::MAX as usize || need > g.arena - ARENA_START {
        return Err(WriteError::TooLarge {
            size: need,
            max: g.arena - ARENA_START,
        });
    }
    Ok(need)
}

/// Rebuilds the list into the other space, applying `edit`.
fn rebuild(l: &Locked<'_>, edit: Edit<'_>) -> Result<(), WriteError> {
    let g = l.geo();
    let from = l.active()?;
    let st = l.state(from)?;
    let to = l.begin_rebuild()?;
    let mut top = ARENA_START;
    let mut n = 0u64;
    for i in 0..=st.len {
        if let Edit::Insert(at, v) = edit
            && at == i
        {
            if n >= g.slots {
                return Err(WriteError::Full {
                    what: "entries",
                    capacity: g.capacity,
                });
            }
            let end = l.write_entry(to, top, 0, &[], v)?;
            l.slot(to, n).store(top, Ordering::Relaxed);
            top = end;
            n += 1;
        }
        if i == st.len {
            break;
        }
        if matches!(edit, Edit::Remove(at) if at == i) {
            continue;
        }
        if n >= g.slots {
            return Err(WriteError::Corrupted("more elements than slots"));
        }
        let e = l.entry(from, l.slot(from, i).load(Ordering::Relaxed))?;
        let end = l.copy_entry(from, &e, to, top)?;
        l.slot(to, n).store(top, Ordering::Relaxed);
        top = end;
        crate::failpoint::hit(); // mid-rebuild
        n += 1;
    }
    l.finish_rebuild(
        to,
        State {
            len: n,
            top,
            garbage: 0,
            tombstones: 0,
        },
    );
    Ok(())
}

fn push_raw(l: &Locked<'_>, val: &[u8]) -> Result<(), WriteError> {
    let g = l.geo();
    let need = check_size(&g, val)?;
    for attempt in 0..2 {
        let sp = l.active()?;
        let st = l.state(sp)?;
        if st.len >= g.capacity {
            return Err(WriteError::Full {
                what: "entries",
                capacity: g.capacity,
            });
        }
        if st.top + need <= g.arena {
            let top = l.write_entry(sp, st.top, 0, &[], val)?;
            let new = State {
                len: st.len + 1,
                top,
                ..st
            };
            l.commit(sp, Some((st.len, st.top)), new);
            return Ok(());
        }
        if attempt == 0 {
            rebuild(l, Edit::None)?;
        }
    }
    Err(full_arena(&g))
}

fn set_raw(l: &Locked<'_>, index: usize, val: &[u8]) -> Result<(), WriteError> {
    let g = l.geo();
    let need = check_size(&g, val)?;
    for attempt in 0..2 {
        let sp = l.active()?;
        let st = l.state(sp)?;
        if index as u64 >= st.len {
            return Err(WriteError::IndexOutOfRange {
                index,
                len: st.len as usize,
            });
        }
        let old = l.entry(sp, l.slot(sp, index as u64).load(Ordering::Relaxed))?;
        if st.top + need <= g.arena {
            let top = l.write_entry(sp, st.top, 0, &[], val)?;
            let new = State {
                top,
                garbage: st.garbage + old.size(),
                ..st
            };
            l.commit(sp, Some((index as u64, st.top)), new);
            return Ok(());
        }
        if attempt == 0 {
            rebuild(l, Edit::None)?;
        }
    }
    Err(full_arena(&g))
}

/// Reads element `index` into `out`; false past the end.
fn get_raw(l: &Locked<'_>, index: usize, out: &mut Buf) -> Result<bool, ReadError> {
    let sp = l.active()?;
    let st = l.state(sp)?;
    if index as u64 >= st.len {
        return Ok(false);
    }
    let e = l.entry(sp, l.slot(sp, index as u64).load(Ordering::Relaxed))?;
    l.read_into(sp, e.off + 16 + e.key_len, e.val_len, out)?;
    Ok(true)
}

fn pop_raw(l: &Locked<'_>, out: &mut Buf) -> Result<bool, WriteError> {
    let sp = l.active()?;
    let st = l.state(sp)?;
    if st.len == 0 {
        return Ok(false);
    }
    let e = l.entry(sp, l.slot(sp, st.len - 1).load(Ordering::Relaxed))?;
    l.read_into(sp, e.off + 16 + e.key_len, e.val_len, out)?;
    let new = State {
        len: st.len - 1,
        garbage: st.garbage + e.size(),
        ..st
    };
    l.commit(sp, None, new);
    Ok(true)
}

fn list_geometry(capacity: usize, bytes: usize) -> Result<Geometry, CreateError> {
    if capacity == 0 {
        return Err(CreateError::BadParameter("capacity must be at least 1"));
    }
    Ok(Geometry {
        slots: capacity as u64,
        arena: arena_bytes(bytes)?,
        capacity: capacity as u64,
    })
}

/// A list in shared memory, shared by every process holding a handle.
pub struct SharedList<T> {
    store: Store,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for SharedList<T> {
    fn clone(&self) -> Self {
        SharedList {
            store: self.store.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedList")
            .field("type", &std::any::type_name::<T>())
            .field("store", &self.store)
            .finish()
    }
}

impl<T: Key> SharedList<T> {
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<T>()
    }

    fn build(name: Option<&str>, capacity: usize, bytes: usize) -> Result<Self, CreateError> {
        let geo = list_geometry(capacity, bytes)?;
        Ok(Self::from_store(Store::create(
            name,
            Self::fingerprint(),
            geo,
        )?))
    }

    fn from_store(store: Store) -> Self {
        SharedList {
            store,
            _types: PhantomData,
        }
    }

    /// A new anonymous list for [`DEFAULT_CAPACITY`] elements.
    pub fn new() -> Result<Self, CreateError> {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A new anonymous list for `capacity` elements
    /// ([`DEFAULT_BYTES_PER_ENTRY`](crate::DEFAULT_BYTES_PER_ENTRY) bytes each).
    pub fn with_capacity(capacity: usize) -> Result<Self, CreateError> {
        Self::with_options(capacity, CollectionOptions::default())
    }

    /// A new anonymous list for `capacity` elements with `opts` (the arena size).
    pub fn with_options(capacity: usize, opts: CollectionOptions) -> Result<Self, CreateError> {
        Self::build(None, capacity, opts.bytes_for(capacity))
    }

    /// A new named list other processes can [`open_named`](Self::open_named).
    pub fn create_named(name: &str, capacity: usize) -> Result<Self, CreateError> {
        Self::create_named_with(name, capacity, CollectionOptions::default())
    }

    /// [`create_named`](Self::create_named) with `opts` (the arena size).
    pub fn create_named_with(
        name: &str,
        capacity: usize,
        opts: CollectionOptions,
    ) -> Result<Self, CreateError> {
        Self::build(Some(name), capacity, opts.bytes_for(capacity))
    }

    /// Opens a named list, checking that it holds `SharedList<T>`.
    pub fn open_named(name: &str) -> Result<Self, CreateError> {
        Ok(Self::from_store(Store::open_named(
            name,
            Self::fingerprint(),
        )?))
    }

    /// Opens the list a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<Self, CreateError> {
        Self::open_handle_timeout(handle, multiproc_shm::DEFAULT_OPEN_TIMEOUT)
    }

    /// [`open_handle`](Self::open_handle) waiting at most `timeout` for the segment to be Ready
    /// (its creator still initializing it — or another process having rewritten its state).
    pub fn open_handle_timeout(
        handle: &SegmentHandle,
        timeout: Duration,
    ) -> Result<Self, CreateError> {
        Ok(Self::from_store(Store::open_handle(
            handle,
            Self::fingerprint(),
            timeout,
        )?))
    }

    /// The segment behind this list.
    pub fn segment(&self) -> &Segment {
        self.store.segment()
    }

    /// How another process reaches this list.
    pub fn handle(&self) -> SegmentHandle {
        self.store.segment().handle()
    }

    /// The element capacity given at creation.
    pub fn capacity(&self) -> usize {
        self.store.geometry().capacity as usize
    }

    /// How many times a lock holder's death was recovered from.
    pub fn recoveries(&self) -> u64 {
        self.store.recoveries()
    }

    fn guard<'a>(
        &'a self,
        r: Result<(Locked<'a>, bool), MutexError>,
    ) -> RecoverResult<ListGuard<'a, T>> {
        r.map(|(l, died)| (ListGuard::new(l), died))
            .map_err(Into::into)
    }

    /// Locks the list for several operations at once (see [`SharedDict::get_lock`](crate::SharedDict::get_lock)).
    /// The guard keeps the list's memory mapped while it lives (a leaked guard leaks the
    /// mapping).
    pub fn get_lock(&self) -> LockResult<ListGuard<'_, T>> {
        refuse_owner_died(self.get_lock_recover())
    }

    /// [`get_lock`](Self::get_lock) without waiting.
    pub fn try_get_lock(&self) -> LockResult<ListGuard<'_, T>> {
        refuse_owner_died(self.guard(self.store.lock(How::Try, true)))
    }

    /// [`get_lock`](Self::get_lock) waiting at most `timeout`: the form to use when another
    /// process may hold the lock forever (the one-call operations wait as long as it takes).
    pub fn get_lock_timeout(&self, timeout: Duration) -> LockResult<ListGuard<'_, T>> {
        refuse_owner_died(self.get_lock_recover_timeout(timeout))
    }

    /// Locks, also when the previous holder died holding the lock: the guard and whether it
    /// did. The structure itself is repaired either way (every single operation is atomic);
    /// `true` says a multi-operation sequence of the dead holder may be half done. Never
    /// `Err(OwnerDied)`.
    pub fn get_lock_recover(&self) -> RecoverResult<ListGuard<'_, T>> {
        self.guard(self.store.lock(How::Block, true))
    }

    /// [`get_lock_recover`](Self::get_lock_recover) waiting at most `timeout`.
    pub fn get_lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<ListGuard<'_, T>> {
        self.guard(self.store.lock(How::Timeout(timeout), true))
    }

    #[inline]
    fn locked(&self) -> Result<ListGuard<'_, T>, MutexError> {
        // Never leaves this object's methods (which borrow `self`): no keep-alive needed.
        let (l, _) = self.store.lock(How::Block, false)?;
        Ok(ListGuard::new(l))
    }

    /// Appends (`l.append(x)`).
    pub fn push(&self, value: &T) -> Result<(), WriteError> {
        let v = encode(value)?;
        let g = self.locked()?;
        push_raw(&g.l, &v)
    }

    /// Removes and returns the last element (`l.pop()`, `None` when empty).
    pub fn pop(&self) -> Result<Option<T>, WriteError> {
        let mut out = Buf::new();
        let found = pop_raw(&self.locked()?.l, &mut out)?;
        if found {
            Ok(Some(decode(out.bytes())?))
        } else {
            Ok(None)
        }
    }

    /// Element `index` (`None` past the end).
    pub fn get(&self, index: usize) -> Result<Option<T>, ReadError> {
        let mut out = Buf::new();
        let found = get_raw(&self.locked()?.l, index, &mut out)?;
        if found {
            decode(out.bytes()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Replaces element `index` (`l[i] = x`).
    pub fn set(&self, index: usize, value: &T) -> Result<(), WriteError> {
        let v = encode(value)?;
        set_raw(&self.locked()?.l, index, &v)
    }

    /// Inserts before `index` (`l.insert(i, x)`; `index == len` appends).
    pub fn insert(&self, index: usize, value: &T) -> Result<(), WriteError> {
        self.locked()?.insert(index, value)
    }

    /// Removes and returns element `index` (`l.pop(i)`).
    pub fn remove(&self, index: usize) -> Result<T, WriteError> {
        self.locked()?.remove(index)
    }

    /// Number of elements.
    pub fn len(&self) -> Result<usize, ReadError> {
        self.locked()?.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<(), WriteError> {
        self.locked()?.clear()
    }

    /// A consistent snapshot of the whole list.
    pub fn to_vec(&self) -> Result<Vec<T>, ReadError> {
        self.locked()?.to_vec()
    }

    /// Checks every invariant (each element in bounds below the arena's top and decodable);
    /// returns the length. For tests and tools.
    pub fn verify(&self) -> Result<usize, ReadError> {
        self.locked()?.verify()
    }
}

/// The held lock of a [`SharedList`], offering its operations for several at once. `!Send`.
pub struct ListGuard<'a, T> {
    l: Locked<'a>,
    _types: PhantomData<fn() -> T>,
}

impl<'a, T: Key> ListGuard<'a, T> {
    fn new(l: Locked<'a>) -> Self {
        ListGuard {
            l,
            _types: PhantomData,
        }
    }

    /// Appends.
    pub fn push(&mut self, value: &T) -> Result<(), WriteError> {
        push_raw(&self.l, &encode(value)?)
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Result<Option<T>, WriteError> {
        let mut out = Buf::new();
        if pop_raw(&self.l, &mut out)? {
            Ok(Some(decode(out.bytes())?))
        } else {
            Ok(None)
        }
    }

    /// Element `index`.
    pub fn get(&self, index: usize) -> Result<Option<T>, ReadError> {
        let mut out = Buf::new();
        if get_raw(&self.l, index, &mut out)? {
            decode(out.bytes()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Replaces element `index`.
    pub fn set(&mut self, index: usize, value: &T) -> Result<(), WriteError> {
        set_raw(&self.l, index, &encode(value)?)
    }

    /// Inserts before `index`.
    pub fn insert(&mut self, index: usize, value: &T) -> Result<(), WriteError> {
        let v = encode(value)?;
        let g = self.l.geo();
        check_size(&g, &v)?;
        let len = self.len()?;
        if index > len {
            return Err(WriteError::IndexOutOfRange { index, len });
        }
        if index == len {
            return push_raw(&self.l, &v);
        }
        if len as u64 >= g.capacity {
            return Err(WriteError::Full {
                what: "entries",
                capacity: g.capacity,
            });
        }
        rebuild(&self.l, Edit::Insert(index as u64, &v))
    }

    /// Removes and returns element `index`.
    pub fn remove(&mut self, index: usize) -> Result<T, WriteError> {
        let len = self.len()?;
        if index >= len {
            return Err(WriteError::IndexOutOfRange { index, len });
        }
        let mut out = Buf::new();
        if index == len - 1 {
            if !pop_raw(&self.l, &mut out)? {
                return Err(WriteError::Corrupted("list shorter than its length"));
            }
            return Ok(decode(out.bytes())?);
        }
        if !get_raw(&self.l, index, &mut out)? {
            return Err(WriteError::Corrupted("list shorter than its length"));
        }
        rebuild(&self.l, Edit::Remove(index as u64))?;
        Ok(decode(out.bytes())?)
    }

    /// Number of elements.
    pub fn len(&self) -> Result<usize, ReadError> {
        let sp = self.l.active()?;
        Ok(self.l.state(sp)?.len as usize)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// Removes every element.
    pub fn clear(&mut self) -> Result<(), WriteError> {
        let to = self.l.begin_rebuild()?;
        self.l.finish_rebuild(
            to,
            State {
                len: 0,
                top: ARENA_START,
                garbage: 0,
                tombstones: 0,
            },
        );
        Ok(())
    }

    /// Checks every invariant; returns the length.
    pub fn verify(&self) -> Result<usize, ReadError> {
        let sp = self.l.active()?;
        let st = self.l.state(sp)?;
        let mut buf = Buf::new();
        for i in 0..st.len {
            let e = self
                .l
                .entry(sp, self.l.slot(sp, i).load(Ordering::Relaxed))?;
            if e.off + e.size() > st.top {
                return Err(ReadError::Corrupted("element past top"));
            }
            self.l
                .read_into(sp, e.off + 16 + e.key_len, e.val_len, &mut buf)?;
            let _: T = decode(buf.bytes())?;
        }
        Ok(st.len as usize)
    }

    /// The whole list.
    pub fn to_vec(&self) -> Result<Vec<T>, ReadError> {
        let len = self.len()?;
        let mut out = Vec::with_capacity(len.min(SNAPSHOT_RESERVE));
        let mut buf = Buf::new();
        for i in 0..len {
            if !get_raw(&self.l, i, &mut buf)? {
                return Err(ReadError::Corrupted("list shorter than its length"));
            }
            out.push(decode(buf.bytes())?);
        }
        Ok(out)
    }
}

impl<T> Serialize for SharedList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.store.segment().handle().serialize(s)
    }
}

impl<'de, T: Key> Deserialize<'de> for SharedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        SharedList::open_handle(&h).map_err(serde::de::Error::custom)
    }
}
