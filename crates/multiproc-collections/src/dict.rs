//! `SharedDict<K, V>`: a hash map in shared memory (Python's `Manager().dict()` without the
//! server process).
//!
//! Keys and values are encoded with postcard; keys are compared by their encoded bytes (postcard
//! is deterministic, and `String`/`&str`, `Vec<T>`/`&[T]` encode alike, so `get("k")` works on
//! a `SharedDict<String, _>`). The table is open addressing with linear probing over `u64`
//! slots: `0` empty, `1` tombstone, otherwise a 16-bit hash tag and the arena offset of the
//! entry. Entries are appended to the arena; when it (or the table's tombstone budget) runs out,
//! the live entries are compacted into the other space (see `store.rs` for the crash-consistent
//! update order). Every operation takes the segment's robust mutex; [`SharedDict::update`] is a
//! read-modify-write under it, the atomic form of Python's `d['count'] -= 1`.
//!
//! ```
//! use multiproc_collections::SharedDict;
//! let d: SharedDict<String, i64> = SharedDict::new().unwrap();
//! d.insert(&"count".to_string(), &300).unwrap();
//! d.update("count", |v| v.unwrap_or(0) - 1).unwrap();
//! assert_eq!(d.get("count").unwrap(), Some(299));
//! {
//!     let mut g = d.get_lock().unwrap(); // several operations at once
//!     let c = g.get("count").unwrap().unwrap();
//!     g.insert(&"copy".to_string(), &c).unwrap();
//! }
//! assert_eq!(d.len().unwrap(), 2);
//! ```

use crate::codec::{decode, encode, hash};
use crate::error::{CreateError, ReadError, WriteError};
use crate::facade::Ordering;
use crate::store::{
    ARENA_START, Buf, DictFlavor, Entry, Geometry, How, MAX_ARENA, State, entry_size,
};
use multiproc_shm::{Segment, SegmentHandle, TypeFingerprint};
use multiproc_sync::{LockResult, MutexError, RecoverResult, refuse_owner_died};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::time::Duration;

/// The dict's store and its held lock.
type Store = crate::store::Store<DictFlavor>;
type Locked<'a> = crate::store::Locked<'a, DictFlavor>;

/// How many entries a snapshot (`keys`, `values`, `items`) reserves room for up front; it grows
/// past that as entries are actually read (the length comes from shared memory).
const SNAPSHOT_RESERVE: usize = 1024;

const EMPTY: u64 = 0;
const TOMB: u64 = 1;
const OFF_MASK: u64 = (1 << 48) - 1;

/// Entries a dict made by [`SharedDict::new`] can hold.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Arena bytes per entry of capacity when none is given (key + value + 16 bytes of head).
pub const DEFAULT_BYTES_PER_ENTRY: usize = 128;

/// Options of a [`SharedDict`] or [`SharedList`](crate::SharedList) beyond its capacity (as
/// `QueueOptions` are for a `Queue`): given to `with_options` / `create_named_with`.
///
/// ```
/// use multiproc_collections::{CollectionOptions, SharedDict};
/// // 16 entries whose keys and values take up to 4 KiB encoded in all.
/// let d: SharedDict<String, Vec<u8>> =
///     SharedDict::with_options(16, CollectionOptions { bytes: Some(4096) })?;
/// d.insert(&"k".to_string(), &vec![0; 1000])?;
/// # Ok::<(), multiproc_collections::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectionOptions {
    /// Arena bytes for the encoded keys and values (elements) in all, plus 16 bytes per entry
    /// (rounded to 8). `None`: [`DEFAULT_BYTES_PER_ENTRY`] per entry of capacity.
    pub bytes: Option<usize>,
}

impl CollectionOptions {
    /// The arena size these options give a collection of `capacity` entries.
    pub(crate) fn bytes_for(&self, capacity: usize) -> usize {
        self.bytes
            .unwrap_or_else(|| capacity.saturating_mul(DEFAULT_BYTES_PER_ENTRY))
    }
}

/// Bounds on what a dict may hold.
pub trait Key: Serialize + DeserializeOwned + 'static {}
impl<T: Serialize + DeserializeOwned + 'static> Key for T {}

fn tag(h: u64) -> u64 {
    (h >> 48) << 48
}

fn max_load(g: &Geometry) -> u64 {
    g.slots - g.slots / 4
}

/// Where a key is, or where it would go.
#[derive(Clone, Copy)]
enum Find {
    Found { idx: u64, e: Entry },
    Vacant { idx: u64, tomb: bool },
    NoRoom,
}

fn find(l: &Locked<'_>, sp: usize, key: &[u8], h: u64) -> Result<Find, ReadError> {
    let g = l.geo();
    let mask = g.slots - 1;
    let mut i = h & mask;
    let mut first_tomb = None;
    for _ in 0..g.slots {
        let s = l.slot(sp, i).load(Ordering::Relaxed);
        if s == EMPTY {
            return Ok(match first_tomb {
                Some(t) => Find::Vacant { idx: t, tomb: true },
                None => Find::Vacant {
                    idx: i,
                    tomb: false,
                },
            });
        }
        if s == TOMB {
            first_tomb.get_or_insert(i);
        } else if tag(s) == tag(h) {
            let e = l.entry(sp, s & OFF_MASK)?;
            if e.hash == h && l.key_eq(sp, &e, key) {
                return Ok(Find::Found { idx: i, e });
            }
        }
        i = (i + 1) & mask;
    }
    Ok(match first_tomb {
        Some(t) => Find::Vacant { idx: t, tomb: true },
        None => Find::NoRoom,
    })
}

/// Inserts or overwrites `key` with `val` (encoded), compacting once if needed.
fn put(
    l: &Locked<'_>,
    key: &[u8],
    h: u64,
    val: &[u8],
    mut pre: Option<Find>,
) -> Result<(), WriteError> {
    let g = l.geo();
    if key.len() > u32::MAX as usize || val.len() > u32::MAX as usize {
        return Err(WriteError::TooLarge {
            size: (key.len() + val.len()) as u64,
            max: g.arena,
        });
    }
    // Both lengths <= u32::MAX (checked above): no overflow.
    let need = entry_size(key.len() as u64, val.len() as u64);
    if need > g.arena - ARENA_START {
        return Err(WriteError::TooLarge {
            size: need,
            max: g.arena - ARENA_START,
        });
    }
    for attempt in 0..2 {
        let sp = l.active()?;
        let st = l.state(sp)?;
        let fits = st.top + need <= g.arena;
        let found = match pre.take() {
            Some(f) => f,
            None => find(l, sp, key, h)?,
        };
        match found {
            Find::Found { idx, e } if fits => {
                let top = l.write_entry(sp, st.top, h, key, val)?;
                // garbage <= top <= arena and size <= arena (validated): no overflow.
                let garbage = st.garbage + e.size();
                l.commit(
                    sp,
                    Some((idx, tag(h) | st.top)),
                    State { top, garbage, ..st },
                );
                return Ok(());
            }
            Find::Vacant { .. } | Find::NoRoom if st.len >= g.capacity => {
                return Err(WriteError::Full {
                    what: "entries",
                    capacity: g.capacity,
                });
            }
            Find::Vacant { idx, tomb }
                if fits && (tomb || st.len + st.tombstones < max_load(&g)) =>
            {
                let top = l.write_entry(sp, st.top, h, key, val)?;
                let new = State {
                    len: st.len + 1,
                    top,
                    garbage: st.garbage,
                    tombstones: st.tombstones.checked_sub(u64::from(tomb)).ok_or(
                        WriteError::Corrupted("a tombstone the counters do not know"),
                    )?,
                };
                l.commit(sp, Some((idx, tag(h) | st.top)), new);
                return Ok(());
            }
            _ if attempt == 0 => compact(l)?,
            _ => {}
        }
    }
    Err(WriteError::Full {
        what: "arena",
        capacity: g.arena,
    })
}

/// The first empty slot of table[`sp`] on the probe sequence of `hash`. At most `slots` probes:
/// a full table (only possible if someone wrote slots they should not have: a rebuild never
/// places more than `slots - 1` entries) is Corrupted, never an endless loop under the lock.
fn probe_empty(l: &Locked<'_>, sp: usize, hash: u64) -> Result<u64, WriteError> {
    let mask = l.geo().slots - 1;
    let mut j = hash & mask;
    for _ in 0..l.geo().slots {
        if l.slot(sp, j).load(Ordering::Relaxed) == EMPTY {
            return Ok(j);
        }
        j = (j + 1) & mask;
    }
    Err(WriteError::Corrupted(
        "no empty slot in a table being rebuilt",
    ))
}

/// Rebuilds the live entries into the other space (drops garbage and tombstones).
fn compact(l: &Locked<'_>) -> Result<(), WriteError> {
    let g = l.geo();
    let from = l.active()?;
    l.state(from)?;
    let to = l.begin_rebuild()?;
    let mut top = ARENA_START;
    let mut len = 0u64;
    for i in 0..g.slots {
        let s = l.slot(from, i).load(Ordering::Relaxed);
        if s == EMPTY || s == TOMB {
            continue;
        }
        let e = l.entry(from, s & OFF_MASK)?;
        if top + e.size() > g.arena || len >= g.slots {
            return Err(WriteError::Corrupted("live entries exceed the arena"));
        }
        let j = probe_empty(l, to, e.hash)?;
        l.slot(to, j).store(tag(e.hash) | top, Ordering::Relaxed);
        top = l.copy_entry(from, &e, to, top)?;
        crate::failpoint::hit(); // mid-rebuild
        len += 1;
    }
    l.finish_rebuild(
        to,
        State {
            len,
            top,
            garbage: 0,
            tombstones: 0,
        },
    );
    Ok(())
}

fn remove_raw(l: &Locked<'_>, key: &[u8], h: u64, out: &mut Buf) -> Result<bool, WriteError> {
    let sp = l.active()?;
    let st = l.state(sp)?;
    let Find::Found { idx, e } = find(l, sp, key, h)? else {
        return Ok(false);
    };
    l.read_into(sp, e.off + 16 + e.key_len, e.val_len, out)?;
    let g = l.geo();
    // A slot followed by an empty one ends every probe chain through it: it can become empty
    // instead of a tombstone.
    let next_empty = l
        .slot(sp, (idx + 1) & (g.slots - 1))
        .load(Ordering::Relaxed)
        == EMPTY;
    let new = State {
        len: st
            .len
            .checked_sub(1)
            .ok_or(WriteError::Corrupted("length below zero"))?,
        top: st.top,
        garbage: st.garbage + e.size(),
        tombstones: st.tombstones + u64::from(!next_empty),
    };
    l.commit(sp, Some((idx, if next_empty { EMPTY } else { TOMB })), new);
    Ok(true)
}

fn get_raw(l: &Locked<'_>, key: &[u8], h: u64, out: &mut Buf) -> Result<bool, ReadError> {
    let sp = l.active()?;
    l.state(sp)?;
    match find(l, sp, key, h)? {
        Find::Found { e, .. } => {
            l.read_into(sp, e.off + 16 + e.key_len, e.val_len, out)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn clear_raw(l: &Locked<'_>) -> Result<(), WriteError> {
    let to = l.begin_rebuild()?;
    l.finish_rebuild(
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

/// Calls `f(key bytes, value bytes)` for every live entry, in table order.
fn for_each(
    l: &Locked<'_>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    let sp = l.active()?;
    l.state(sp)?;
    let g = l.geo();
    let (mut k, mut v) = (Buf::new(), Buf::new());
    let mut n = 0;
    for i in 0..g.slots {
        let s = l.slot(sp, i).load(Ordering::Relaxed);
        if s == EMPTY || s == TOMB {
            continue;
        }
        let e = l.entry(sp, s & OFF_MASK)?;
        l.read_into(sp, e.off + 16, e.key_len, &mut k)?;
        l.read_into(sp, e.off + 16 + e.key_len, e.val_len, &mut v)?;
        f(k.bytes(), v.bytes())?;
        n += 1;
    }
    Ok(n)
}

/// A hash map in shared memory, shared by every process holding a handle (clone it, inherit it
/// across `fork`, pass it serialized, or open it by name).
pub struct SharedDict<K, V> {
    store: Store,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for SharedDict<K, V> {
    fn clone(&self) -> Self {
        SharedDict {
            store: self.store.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for SharedDict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDict")
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("store", &self.store)
            .finish()
    }
}

/// Table geometry for `capacity` entries and `bytes` of arena.
fn dict_geometry(capacity: usize, bytes: usize) -> Result<Geometry, CreateError> {
    if capacity == 0 {
        return Err(CreateError::BadParameter("capacity must be at least 1"));
    }
    let slots = (capacity as u64)
        .checked_mul(2)
        .and_then(|s| s.max(8).checked_next_power_of_two())
        .ok_or(CreateError::BadParameter("capacity too large"))?;
    Ok(Geometry {
        slots,
        arena: arena_bytes(bytes)?,
        capacity: capacity as u64,
    })
}

/// The arena size for `bytes` of keys and values: at least 64, rounded up to 8, plus the
/// reserved start. Checked: `bytes` is the caller's (up to `usize::MAX`).
pub(crate) fn arena_bytes(bytes: usize) -> Result<u64, CreateError> {
    let arena = (bytes as u64).max(64);
    if arena > MAX_ARENA - ARENA_START {
        return Err(CreateError::BadParameter("arena too large"));
    }
    Ok(arena.next_multiple_of(8) + ARENA_START)
}

impl<K: Key, V: Key> SharedDict<K, V> {
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<(K, V)>()
    }

    fn build(name: Option<&str>, capacity: usize, bytes: usize) -> Result<Self, CreateError> {
        let geo = dict_geometry(capacity, bytes)?;
        let store = Store::create(name, Self::fingerprint(), geo)?;
        Ok(Self::from_store(store))
    }

    fn from_store(store: Store) -> Self {
        SharedDict {
            store,
            _types: PhantomData,
        }
    }

    /// A new anonymous dict for [`DEFAULT_CAPACITY`] entries (memory is touched only as used).
    pub fn new() -> Result<Self, CreateError> {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A new anonymous dict for `capacity` entries, with [`DEFAULT_BYTES_PER_ENTRY`] arena bytes
    /// per entry.
    pub fn with_capacity(capacity: usize) -> Result<Self, CreateError> {
        Self::with_options(capacity, CollectionOptions::default())
    }

    /// A new anonymous dict for `capacity` entries with `opts` (the arena size).
    pub fn with_options(capacity: usize, opts: CollectionOptions) -> Result<Self, CreateError> {
        Self::build(None, capacity, opts.bytes_for(capacity))
    }

    /// A new named dict (`/dev/shm/multiproc.NAME`) other processes can [`open_named`](Self::open_named).
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

    /// Opens a named dict, checking that it holds `SharedDict<K, V>`.
    pub fn open_named(name: &str) -> Result<Self, CreateError> {
        Ok(Self::from_store(Store::open_named(
            name,
            Self::fingerprint(),
        )?))
    }

    /// Opens the dict a handle names.
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

    /// The segment behind this dict.
    pub fn segment(&self) -> &Segment {
        self.store.segment()
    }

    /// How another process reaches this dict.
    pub fn handle(&self) -> SegmentHandle {
        self.store.segment().handle()
    }

    /// The entry capacity given at creation.
    pub fn capacity(&self) -> usize {
        self.store.geometry().capacity as usize
    }

    /// How many times a lock holder's death was recovered from (the journal replayed).
    pub fn recoveries(&self) -> u64 {
        self.store.recoveries()
    }

    fn guard<'a>(
        &'a self,
        r: Result<(Locked<'a>, bool), MutexError>,
    ) -> RecoverResult<DictGuard<'a, K, V>> {
        r.map(|(l, died)| (DictGuard::new(l), died))
            .map_err(Into::into)
    }

    /// Locks the dict for several operations at once (Python's `with lock:` around a block).
    /// `Err(OwnerDied)`: the previous holder died holding it (the lock is released again); the
    /// structure has been repaired (every single operation is atomic), but a multi-operation
    /// sequence of the dead holder may be half done: take the lock with
    /// [`get_lock_recover`](Self::get_lock_recover) to look.
    ///
    /// The guard keeps the dict's memory mapped while it lives: leaking it (`mem::forget`)
    /// leaks the mapping (and leaves the dict locked), it never unmaps a held lock.
    pub fn get_lock(&self) -> LockResult<DictGuard<'_, K, V>> {
        refuse_owner_died(self.get_lock_recover())
    }

    /// [`get_lock`](Self::get_lock) without waiting (`Failed(WouldBlock)` if held).
    pub fn try_get_lock(&self) -> LockResult<DictGuard<'_, K, V>> {
        refuse_owner_died(self.guard(self.store.lock(How::Try, true)))
    }

    /// [`get_lock`](Self::get_lock) waiting at most `timeout` (`Failed(Timeout)`). This is the
    /// form to use when another process may hold the lock forever (a hostile or stuck one): the
    /// one-call operations (`insert`, `get`, ...) wait as long as it takes, the guard offers the
    /// same operations after a bounded wait.
    pub fn get_lock_timeout(&self, timeout: Duration) -> LockResult<DictGuard<'_, K, V>> {
        refuse_owner_died(self.get_lock_recover_timeout(timeout))
    }

    /// Locks for one operation; a dead previous holder is recovered from silently.
    /// Locks, also when the previous holder died holding the lock: the guard and whether it
    /// did. The structure itself is repaired either way (every single operation is atomic);
    /// `true` says a multi-operation sequence of the dead holder may be half done. Never
    /// `Err(OwnerDied)`.
    pub fn get_lock_recover(&self) -> RecoverResult<DictGuard<'_, K, V>> {
        self.guard(self.store.lock(How::Block, true))
    }

    /// [`get_lock_recover`](Self::get_lock_recover) waiting at most `timeout`.
    pub fn get_lock_recover_timeout(
        &self,
        timeout: Duration,
    ) -> RecoverResult<DictGuard<'_, K, V>> {
        self.guard(self.store.lock(How::Timeout(timeout), true))
    }

    #[inline]
    fn locked(&self) -> Result<DictGuard<'_, K, V>, MutexError> {
        // Never leaves this object's methods (which borrow `self`, hence the mapping): no
        // keep-alive refcount needed.
        let (l, _) = self.store.lock(How::Block, false)?;
        Ok(DictGuard::new(l))
    }

    /// Inserts or overwrites (`d[k] = v`).
    pub fn insert(&self, key: &K, value: &V) -> Result<(), WriteError> {
        let (k, v) = (encode(key)?, encode(value)?);
        let g = self.locked()?;
        put(&g.l, &k, hash(&k), &v, None)
    }

    /// The value for `key` (`d.get(k)`).
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, ReadError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        let mut out = Buf::new();
        let found = {
            let g = self.locked()?;
            get_raw(&g.l, &k, hash(&k), &mut out)?
        };
        if found {
            decode(out.bytes()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Removes `key`, returning its value (`d.pop(k, None)`).
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, WriteError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        let mut out = Buf::new();
        let found = {
            let g = self.locked()?;
            remove_raw(&g.l, &k, hash(&k), &mut out)?
        };
        if found {
            Ok(Some(decode(out.bytes())?))
        } else {
            Ok(None)
        }
    }

    /// Whether `key` is present (`k in d`).
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool, ReadError>
    where
        K: Borrow<Q>,
    {
        self.locked()?.contains_key(key)
    }

    /// Read-modify-write of one key under the lock: `f(current value or None)` gives the new
    /// value, which is stored and returned. `d.update("count", |v| v.unwrap_or(0) - 1)` is
    /// Python's `with lock: d['count'] -= 1`, in one critical section.
    pub fn update<Q: Serialize + ?Sized>(
        &self,
        key: &Q,
        f: impl FnOnce(Option<V>) -> V,
    ) -> Result<V, WriteError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        let mut g = self.locked()?;
        g.update_encoded(&k, f)
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize, ReadError> {
        self.locked()?.len()
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), WriteError> {
        self.locked()?.clear()
    }

    /// Rebuilds the live entries into the other space now, dropping the garbage of overwrites
    /// and removals and every tombstone (inserts do this on their own when the arena is full).
    pub fn compact(&self) -> Result<(), WriteError> {
        self.locked()?.compact()
    }

    /// A consistent snapshot of the keys.
    pub fn keys(&self) -> Result<Vec<K>, ReadError> {
        self.locked()?.keys()
    }

    /// A consistent snapshot of the values.
    pub fn values(&self) -> Result<Vec<V>, ReadError> {
        self.locked()?.values()
    }

    /// A consistent snapshot of the entries.
    pub fn items(&self) -> Result<Vec<(K, V)>, ReadError> {
        self.locked()?.items()
    }

    /// Checks every invariant (each live slot's entry in bounds and decodable, findable by its
    /// key, count equal to `len`); returns the entry count. For tests and tools.
    pub fn verify(&self) -> Result<usize, ReadError> {
        self.locked()?.verify()
    }
}

/// The held lock of a [`SharedDict`], offering its operations for several at once. Unlocks on
/// drop; `!Send`.
pub struct DictGuard<'a, K, V> {
    l: Locked<'a>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Key, V: Key> DictGuard<'a, K, V> {
    fn new(l: Locked<'a>) -> Self {
        DictGuard {
            l,
            _types: PhantomData,
        }
    }

    /// Inserts or overwrites.
    pub fn insert(&mut self, key: &K, value: &V) -> Result<(), WriteError> {
        let (k, v) = (encode(key)?, encode(value)?);
        put(&self.l, &k, hash(&k), &v, None)
    }

    /// The value for `key`.
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, ReadError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        let mut out = Buf::new();
        if get_raw(&self.l, &k, hash(&k), &mut out)? {
            decode(out.bytes()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q: Serialize + ?Sized>(&mut self, key: &Q) -> Result<Option<V>, WriteError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        let mut out = Buf::new();
        if remove_raw(&self.l, &k, hash(&k), &mut out)? {
            Ok(Some(decode(out.bytes())?))
        } else {
            Ok(None)
        }
    }

    /// Whether `key` is present.
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool, ReadError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        let sp = self.l.active()?;
        self.l.state(sp)?;
        Ok(matches!(
            find(&self.l, sp, &k, hash(&k))?,
            Find::Found { .. }
        ))
    }

    /// Read-modify-write of one key (see [`SharedDict::update`]).
    pub fn update<Q: Serialize + ?Sized>(
        &mut self,
        key: &Q,
        f: impl FnOnce(Option<V>) -> V,
    ) -> Result<V, WriteError>
    where
        K: Borrow<Q>,
    {
        let k = encode(key)?;
        self.update_encoded(&k, f)
    }

    #[inline]
    fn update_encoded(
        &mut self,
        k: &[u8],
        f: impl FnOnce(Option<V>) -> V,
    ) -> Result<V, WriteError> {
        let h = hash(k);
        let sp = self.l.active()?;
        self.l.state(sp)?;
        let found = find(&self.l, sp, k, h)?;
        let old = match found {
            Find::Found { e, .. } => {
                let mut out = Buf::new();
                self.l
                    .read_into(sp, e.off + 16 + e.key_len, e.val_len, &mut out)?;
                Some(decode(out.bytes())?)
            }
            _ => None,
        };
        let new = f(old);
        let v = encode(&new)?;
        // Nothing changed since `find` (the closure cannot reach this dict: relocking fails
        // with Deadlock), so its answer is still right.
        put(&self.l, k, h, &v, Some(found))?;
        Ok(new)
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize, ReadError> {
        let sp = self.l.active()?;
        Ok(self.l.state(sp)?.len as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> Result<(), WriteError> {
        clear_raw(&self.l)
    }

    /// Compacts now (see [`SharedDict::compact`]).
    pub fn compact(&mut self) -> Result<(), WriteError> {
        compact(&self.l)
    }

    /// The keys.
    pub fn keys(&self) -> Result<Vec<K>, ReadError> {
        let mut out = Vec::with_capacity(self.len()?.min(SNAPSHOT_RESERVE));
        for_each(&self.l, |k, _| {
            out.push(decode(k)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The values.
    pub fn values(&self) -> Result<Vec<V>, ReadError> {
        let mut out = Vec::with_capacity(self.len()?.min(SNAPSHOT_RESERVE));
        for_each(&self.l, |_, v| {
            out.push(decode(v)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The entries.
    pub fn items(&self) -> Result<Vec<(K, V)>, ReadError> {
        let mut out = Vec::with_capacity(self.len()?.min(SNAPSHOT_RESERVE));
        for_each(&self.l, |k, v| {
            out.push((decode(k)?, decode(v)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Checks every invariant; returns the entry count.
    pub fn verify(&self) -> Result<usize, ReadError> {
        let sp = self.l.active()?;
        let st = self.l.state(sp)?;
        let g = self.l.geo();
        let mut tombs = 0;
        for i in 0..g.slots {
            if self.l.slot(sp, i).load(Ordering::Relaxed) == TOMB {
                tombs += 1;
            }
        }
        if tombs != st.tombstones {
            return Err(ReadError::Corrupted("tombstone count"));
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let n = for_each(&self.l, |k, v| {
            let _: K = decode(k)?;
            let _: V = decode(v)?;
            keys.push(k.to_vec());
            Ok(())
        })?;
        if n != st.len {
            return Err(ReadError::Corrupted("len does not match the live entries"));
        }
        for k in &keys {
            match find(&self.l, sp, k, hash(k))? {
                Find::Found { e, .. } if e.off + e.size() <= st.top => {}
                Find::Found { .. } => return Err(ReadError::Corrupted("entry past top")),
                _ => return Err(ReadError::Corrupted("a live key is not findable")),
            }
        }
        Ok(n as usize)
    }
}

impl<K, V> Serialize for SharedDict<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.store.segment().handle().serialize(s)
    }
}

impl<'de, K: Key, V: Key> Deserialize<'de> for SharedDict<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        SharedDict::open_handle(&h).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebuild's probe for an empty slot is bounded by the validated slot count: a table
    /// another process filled behind our back is Corrupted, not an endless loop under the lock.
    #[test]
    fn probe_of_a_full_table_is_corrupted_not_endless() {
        let d: SharedDict<u8, u8> = SharedDict::with_capacity(4).unwrap();
        let (l, _) = d.store.lock(How::Try, false).unwrap();
        let to = 1 - l.active().unwrap();
        for i in 0..l.geo().slots {
            l.slot(to, i).store(TOMB + 1, Ordering::Relaxed);
        }
        assert!(matches!(
            probe_empty(&l, to, 0x1234),
            Err(WriteError::Corrupted(_))
        ));
        l.slot(to, 3).store(EMPTY, Ordering::Relaxed);
        assert_eq!(probe_empty(&l, to, 0x1234).unwrap(), 3);
    }
}
