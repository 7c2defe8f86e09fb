//! The storage engine under [`SharedDict`](crate::SharedDict) and
//! [`SharedList`](crate::SharedList): one segment holding a robust mutex, a redo journal and two
//! *spaces*, each a table of `u64` slots plus a byte arena for variable-size entries.
//!
//! ```text
//! payload: Control<F> (mutex, active space, journal, per-space counters, geometry)
//!          tail: table[0] (slots x u64)  table[1]  arena[0] (arena bytes)  arena[1]
//! ```
//!
//! The payload is a [`multiproc_shm::Shared`]`<Control<F>>`: the control block is a
//! [`SharedLayout`] whose geometry (slot count, arena bytes, capacity) is validated once at open
//! against the real tail length and this process's limits, then used from the handle's local
//! copy; the tables and arenas are the raw tail, reached only through atomics (slots) and raw
//! copies under the lock (entries), never through a `&[u8]`. `F` is the flavor (dict or list):
//! it names the object kind and the geometry rules (a dict's slot count is a power of two,
//! because its probes mask with `slots - 1`).
//!
//! Only the *active* space is live. An entry (`EntryHead` + key bytes + value bytes, 8-aligned)
//! is appended at the arena's `top`; a slot holds its offset (the dict adds a 16-bit hash tag).
//!
//! Crash consistency (a holder SIGKILLed at any instruction leaves a consistent structure for
//! the next locker, who sees `OwnerDied` from the robust mutex):
//! * A point change (insert, overwrite, remove, push, pop, set) first writes the new entry into
//!   free arena space past `top` (invisible), then fills the journal (the slot to change, its new
//!   value and the new counters), then publishes the journal with one store of `pending = 1`
//!   (the commit point), applies it, and clears `pending`. The next locker after a death replays
//!   a pending journal (idempotent) and ignores anything past `top`.
//! * A bulk change (compaction, clear, list insert/remove in the middle) builds the complete new
//!   state in the *inactive* space, which nobody reads, and publishes it with one store of
//!   `active` (the commit point). A death before that leaves the old space untouched.
//!
//! Stores into the segment are atomics or plain copies under the lock. The model is "a process
//! dies at an instruction boundary": every store it executed reaches memory (the CPU drains its
//! store buffer; the next locker reads only after taking the mutex the kernel released for the
//! dead owner), none after does. So only program order matters: each commit store is Release
//! (nothing earlier moves after it) followed by a compiler fence (nothing later moves before).
//!
//! Every offset, length and counter read from the segment is bounds-checked against the
//! geometry held locally (validated once at open), and every loop over the table is bounded by
//! that slot count: corruption (or a hostile process writing the segment at any time) is an
//! `Corrupted`, never an out-of-bounds access, a panic or a hang. The largest allocation
//! a read makes is one entry, which the checks keep inside one arena (a size fixed at creation,
//! checked at open against the mapping and [`MAX_ARENA`]). Guards handed to users hold a
//! [`KeepAlive`], so a leaked guard leaks the mapping instead of unmapping a held robust mutex.

use crate::error::{CreateError, ReadError, WriteError};
use crate::facade::{AtomicU64, Ordering, compiler_fence};
use crate::failpoint::hit;
use multiproc_shm::{
    KeepAlive, ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint,
};
use multiproc_sync::{LockOutcome, MutexError, RobustMutex};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

/// Size of an entry's head in the arena.
pub(crate) const ENTRY_HEAD: u64 = 16;
/// The first arena offset handed out (0 is reserved so that a live slot is never 0).
pub(crate) const ARENA_START: u64 = 8;
/// "mpcoll02": the store layout on the `Shared` container (tables in the raw tail).
const MAGIC: u64 = u64::from_le_bytes(*b"mpcoll02");
const NO_SLOT: u64 = u64::MAX;
/// Largest slot count (offsets and indices stay far below 2^48).
const MAX_SLOTS: u64 = 1 << 32;
/// Largest arena (offsets must fit in the 48 low bits of a dict slot).
pub(crate) const MAX_ARENA: u64 = 1 << 44;
/// Smallest arena.
const MIN_ARENA: u64 = 64;

/// Which structure a store holds: its object kind and its geometry rules.
pub(crate) trait Flavor: Send + Sync + 'static {
    /// The segment kind.
    const KIND: ObjectKind;
    /// Whether the table is a hash table probed with `slots - 1` as a mask: then the slot count
    /// must be a power of two (any other count would make the probe sequence skip slots and a
    /// probe for an empty one spin forever) and at least twice the capacity.
    const HASHED: bool;
}

/// The dict's flavor.
pub(crate) enum DictFlavor {}
impl Flavor for DictFlavor {
    const KIND: ObjectKind = ObjectKind::Dict;
    const HASHED: bool = true;
}

/// The list's flavor.
pub(crate) enum ListFlavor {}
impl Flavor for ListFlavor {
    const KIND: ObjectKind = ObjectKind::List;
    const HASHED: bool = false;
}

/// The counters of one space.
#[repr(C)]
struct SpaceState {
    len: AtomicU64,
    top: AtomicU64,
    garbage: AtomicU64,
    tombstones: AtomicU64,
}

/// The mutex with what every operation reads first. Its own cache line(s), whatever the mutex's
/// size.
#[repr(C, align(64))]
struct Head {
    mutex: RobustMutex,
    active: AtomicU64,
    recoveries: AtomicU64,
}

/// A redo record: "set `slot` of table[`space`] to `slot_value` and the counters to these".
#[repr(C, align(64))]
struct Journal {
    pending: AtomicU64,
    space: AtomicU64,
    slot: AtomicU64,
    slot_value: AtomicU64,
    len: AtomicU64,
    top: AtomicU64,
    garbage: AtomicU64,
    tombstones: AtomicU64,
}

/// The counters of both spaces, on one cache line.
#[repr(C, align(64))]
struct Spaces([SpaceState; 2]);

/// The control block at the start of the payload. Laid out so that an operation touches three
/// cache lines of it (the mutex with `active`, the journal, the counters); the geometry, read
/// once at open, sits apart. The tables and arenas follow in the raw tail.
#[repr(C)]
pub(crate) struct Control<F> {
    head: Head,
    journal: Journal,
    spaces: Spaces,
    magic: AtomicU64,
    slots: AtomicU64,
    arena: AtomicU64,
    capacity: AtomicU64,
    _flavor: PhantomData<F>,
}

/// Offset of `magic` in the payload (for tests that corrupt it on purpose; `slots`, `arena` and
/// `capacity` follow it, 8 bytes each).
#[doc(hidden)]
pub const MAGIC_OFFSET: usize = std::mem::offset_of!(Control<DictFlavor>, magic);
const _: () = assert!(std::mem::offset_of!(Control<DictFlavor>, journal) % 64 == 0);
const _: () = assert!(std::mem::offset_of!(Control<DictFlavor>, spaces) % 64 == 0);
const _: () = assert!(std::mem::align_of::<Control<DictFlavor>>() <= 256);

// SAFETY: (1) `Control` is `#[repr(C)]` and made of atomics, a `RobustMutex` and a zero-sized
// marker; every bit pattern of each is a value (what the mutex's own code does with rewritten
// bytes is `RobustMutex`'s contract, multiproc-sync's); (2) the atomics are only accessed
// atomically and the mutex only through its own API, never through a reference to its bytes,
// so `&Control` over live shared memory is sound; (3) its alignment is 64; (4) no `Drop`.
unsafe impl<F: Flavor> SharedLayout for Control<F> {
    const KIND: ObjectKind = F::KIND;
    const MAX_TAIL: usize = (MAX_SLOTS * 16 + MAX_ARENA * 2) as usize;
    type Geometry = Geometry;

    fn validate(&self, tail_len: usize) -> multiproc_shm::Result<Geometry> {
        let magic = self.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(ShmError::Corrupted(
                "bad collection magic (not a store, or another layout version)",
            ));
        }
        // Each field is read once, here; the handle keeps this copy.
        let geo = Geometry {
            slots: self.slots.load(Ordering::Relaxed),
            arena: self.arena.load(Ordering::Relaxed),
            capacity: self.capacity.load(Ordering::Relaxed),
        };
        let tail = geo.tail_size::<F>()?;
        if tail != tail_len as u64 {
            return Err(ShmError::SizeMismatch {
                what: "store tables and arenas (from the geometry) vs the segment's tail",
                header: tail,
                expected: tail_len as u64,
            });
        }
        Ok(geo)
    }
}

/// Counters of a space, copied out and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub len: u64,
    pub top: u64,
    pub garbage: u64,
    pub tombstones: u64,
}

/// Sizes fixed at creation; held locally after validation, never re-read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Slots per table (a power of two for the dict).
    pub slots: u64,
    /// Bytes per arena (a multiple of 8).
    pub arena: u64,
    /// The entry limit (dict: live keys, list: elements).
    pub capacity: u64,
}

impl Geometry {
    /// Offset of table[`space`] in the tail.
    fn table_off(&self, space: usize) -> u64 {
        space as u64 * self.slots * 8
    }

    /// Offset of arena[`space`] in the tail.
    fn arena_off(&self, space: usize) -> u64 {
        2 * self.slots * 8 + space as u64 * self.arena
    }

    /// Checks every field against the flavor's rules and this process's limits; returns the
    /// tail size the geometry needs (two tables, two arenas).
    fn tail_size<F: Flavor>(&self) -> multiproc_shm::Result<u64> {
        let out = |what, found, limit| Err(ShmError::OutOfRange { what, found, limit });
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return out("store slot count", self.slots, MAX_SLOTS);
        }
        if F::HASHED && !self.slots.is_power_of_two() {
            return out(
                "dict slot count (must be a power of two)",
                self.slots,
                MAX_SLOTS,
            );
        }
        if self.arena < MIN_ARENA || self.arena > MAX_ARENA || !self.arena.is_multiple_of(8) {
            return out(
                "store arena bytes (a multiple of 8, at least 64)",
                self.arena,
                MAX_ARENA,
            );
        }
        let max_capacity = if F::HASHED {
            self.slots / 2
        } else {
            self.slots
        };
        if self.capacity == 0 || self.capacity > max_capacity {
            return out("store capacity", self.capacity, max_capacity);
        }
        // slots <= 2^32 and arena <= 2^44: no overflow.
        Ok(self.slots * 16 + self.arena * 2)
    }
}

/// Rounds an entry's size up to 8 bytes.
pub(crate) fn entry_size(key_len: u64, val_len: u64) -> u64 {
    (ENTRY_HEAD + key_len + val_len + 7) & !7
}

/// One entry's head, read and bounds-checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub off: u64,
    pub hash: u64,
    pub key_len: u64,
    pub val_len: u64,
}

impl Entry {
    pub(crate) fn size(&self) -> u64 {
        entry_size(self.key_len, self.val_len)
    }
}

/// A byte buffer on the stack for small entries (no allocation), on the heap for large ones.
pub(crate) struct Buf {
    stack: [u8; 112],
    len: usize,
    heap: Vec<u8>,
}

impl Buf {
    pub(crate) fn new() -> Buf {
        Buf {
            stack: [0; 112],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// Room for `len` bytes, which the caller fills completely.
    fn prepare(&mut self, len: usize) -> *mut u8 {
        self.len = len;
        if len <= self.stack.len() {
            self.stack.as_mut_ptr()
        } else {
            self.heap.clear();
            self.heap.resize(len, 0);
            self.heap.as_mut_ptr()
        }
    }

    /// The bytes read last.
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len <= self.stack.len() {
            &self.stack[..self.len]
        } else {
            &self.heap[..self.len]
        }
    }
}

/// A store segment, opened and validated: the control block, the raw tail and the geometry
/// validated when this handle was made.
pub(crate) struct Store<F: Flavor> {
    shared: Shared<Control<F>>,
    /// The segment behind `shared` (a clone: `Shared` also has a heap backing, stores never).
    seg: Segment,
    /// `*shared.geometry()`, copied for the hot paths.
    geo: Geometry,
}

impl<F: Flavor> Clone for Store<F> {
    fn clone(&self) -> Self {
        Store {
            shared: self.shared.clone(),
            seg: self.seg.clone(),
            geo: self.geo,
        }
    }
}

impl<F: Flavor> std::fmt::Debug for Store<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("segment", &self.seg)
            .field("geometry", &self.geo)
            .finish()
    }
}

impl<F: Flavor> Store<F> {
    /// Creates a store segment (named or anonymous). The tail (tables and arenas) is fresh,
    /// hence zero (an empty table), and is only touched as it is used.
    pub(crate) fn create(
        name: Option<&str>,
        fp: TypeFingerprint,
        geo: Geometry,
    ) -> Result<Self, CreateError> {
        let tail = geo
            .tail_size::<F>()
            .ok()
            .filter(|s| *s <= isize::MAX as u64 / 2)
            .ok_or(CreateError::BadParameter(
                "capacity or arena size out of range",
            ))?;
        let init = |p: NonNull<Control<F>>, _tail: NonNull<u8>| -> multiproc_shm::Result<()> {
            let c = p.as_ptr();
            // SAFETY: `p` is valid for writing one zeroed, aligned Control that nobody sees
            // before Ready, so we may build the mutex in place; zeroed memory is a valid
            // Control for everything else (atomics and a zero-sized marker).
            unsafe {
                RobustMutex::init_at(std::ptr::addr_of_mut!((*c).head.mutex)).map_err(
                    |source| ShmError::Os {
                        op: "robust mutex init",
                        source,
                    },
                )?;
            }
            // SAFETY: as above; the Control is initialized (the mutex just now, the rest zero).
            let c = unsafe { p.as_ref() };
            c.magic.store(MAGIC, Ordering::Relaxed);
            c.slots.store(geo.slots, Ordering::Relaxed);
            c.arena.store(geo.arena, Ordering::Relaxed);
            c.capacity.store(geo.capacity, Ordering::Relaxed);
            for s in &c.spaces.0 {
                s.top.store(ARENA_START, Ordering::Relaxed);
            }
            // Publication to openers is the segment's Release store of Ready.
            Ok(())
        };
        Self::from_shared(Shared::create(name, fp, tail as usize, init)?)
    }

    /// Opens a named store segment and validates its geometry.
    pub(crate) fn open_named(name: &str, fp: TypeFingerprint) -> Result<Self, CreateError> {
        Self::from_shared(Shared::open_named(name, fp)?)
    }

    /// Opens the store a handle names, waiting at most `timeout` for it to be Ready.
    pub(crate) fn open_handle(
        h: &SegmentHandle,
        fp: TypeFingerprint,
        timeout: Duration,
    ) -> Result<Self, CreateError> {
        Self::from_shared(Shared::open_handle_timeout(h, fp, timeout)?)
    }

    fn from_shared(shared: Shared<Control<F>>) -> Result<Self, CreateError> {
        let seg = shared
            .segment()
            .cloned()
            .ok_or(CreateError::BadParameter("a store needs a segment"))?;
        let geo = *shared.geometry();
        Ok(Store { shared, seg, geo })
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
    }

    fn control(&self) -> &Control<F> {
        self.shared.get()
    }

    /// How many times a holder's death was recovered from.
    pub(crate) fn recoveries(&self) -> u64 {
        self.control().head.recoveries.load(Ordering::Relaxed)
    }

    /// Locks; on `OwnerDied`, replays the journal before returning. Returns whether the previous
    /// holder died. `keep_alive`: the guard will be handed to the user (who may leak it), so it
    /// must keep the mapping alive on its own; internal one-operation guards, which never
    /// outlive `&self`, skip the refcount.
    #[inline]
    pub(crate) fn lock(
        &self,
        how: How,
        keep_alive: bool,
    ) -> Result<(Locked<'_, F>, bool), MutexError> {
        let m = &self.control().head.mutex;
        let r = match how {
            How::Block => m.lock(),
            How::Try => m.try_lock(),
            How::Timeout(t) => m.lock_timeout(t),
        }?;
        let l = Locked {
            store: self,
            _keep: keep_alive.then(|| self.shared.keep_alive()),
            _not_send: PhantomData,
        };
        let died = r == LockOutcome::OwnerDied;
        if died {
            l.recover();
        }
        Ok((l, died))
    }
}

/// How to wait for the lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum How {
    Block,
    Try,
    Timeout(Duration),
}

/// The held lock of a store: every access to the structure goes through here. Unlocks on drop;
/// `!Send` (the robust mutex must be released by the thread that took it).
///
/// Field order matters: `Drop::drop` unlocks first, then `_keep` is dropped (it may unmap).
pub(crate) struct Locked<'a, F: Flavor> {
    store: &'a Store<F>,
    /// Keeps the mapping while the lock is held, if the guard may be leaked (`mem::forget`):
    /// a leaked guard then leaks the mapping, never unmaps a robust mutex still on this
    /// thread's robust list.
    _keep: Option<KeepAlive>,
    _not_send: PhantomData<*const ()>,
}

impl<F: Flavor> Drop for Locked<'_, F> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a Locked exists only while this thread holds the lock.
        unsafe { self.store.control().head.mutex.unlock() }
    }
}

impl<'a, F: Flavor> Locked<'a, F> {
    #[inline]
    fn c(&self) -> &'a Control<F> {
        self.store.control()
    }

    #[inline]
    pub(crate) fn geo(&self) -> Geometry {
        self.store.geo
    }

    /// Replays a pending journal (the previous holder died after its commit point).
    fn recover(&self) {
        let c = self.c();
        c.head.recoveries.fetch_add(1, Ordering::Relaxed);
        let j = &c.journal;
        if j.pending.load(Ordering::Relaxed) != 1 {
            return;
        }
        let space = j.space.load(Ordering::Relaxed);
        let slot = j.slot.load(Ordering::Relaxed);
        if space > 1 || (slot != NO_SLOT && slot >= self.geo().slots) {
            // A journal that names no valid slot (a corrupted segment): drop it rather than
            // replay it on every recovery; operations then report Corrupted if the counters are
            // off.
            j.pending.store(0, Ordering::Release);
            return;
        }
        self.apply_journal();
    }

    /// The active space (0 or 1).
    #[inline]
    pub(crate) fn active(&self) -> Result<usize, ReadError> {
        match self.c().head.active.load(Ordering::Relaxed) {
            0 => Ok(0),
            1 => Ok(1),
            _ => Err(ReadError::Corrupted("active space index")),
        }
    }

    /// The validated counters of `space`.
    #[inline]
    pub(crate) fn state(&self, space: usize) -> Result<State, ReadError> {
        let s = &self.c().spaces.0[space & 1];
        let st = State {
            len: s.len.load(Ordering::Relaxed),
            top: s.top.load(Ordering::Relaxed),
            garbage: s.garbage.load(Ordering::Relaxed),
            tombstones: s.tombstones.load(Ordering::Relaxed),
        };
        let g = self.geo();
        // len and tombstones are each <= slots <= 2^32 before they are added: no overflow.
        if st.top < ARENA_START
            || st.top > g.arena
            || !st.top.is_multiple_of(8)
            || st.garbage > st.top
            || st.len > g.slots
            || st.tombstones > g.slots
            || st.len + st.tombstones > g.slots
        {
            return Err(ReadError::Corrupted("space counters"));
        }
        Ok(st)
    }

    /// Slot `i` of table[`space`]. `i` must be < slots (callers mask or check; a larger one is
    /// clamped to the last slot, never out of bounds).
    #[inline]
    pub(crate) fn slot(&self, space: usize, i: u64) -> &'a AtomicU64 {
        let g = self.geo();
        let i = i.min(g.slots - 1);
        let off = g.table_off(space & 1) + i * 8;
        // SAFETY: off + 8 <= 2 * slots * 8 <= tail length (the validated geometry reproduces the
        // tail length exactly); 8-aligned (the tail is 128-aligned); AtomicU64 has u64's layout
        // and every bit pattern is a valid u64. The mapping lives as long as `self.store`.
        unsafe {
            &*self
                .store
                .shared
                .tail_ptr()
                .as_ptr()
                .add(off as usize)
                .cast::<AtomicU64>()
        }
    }

    /// The address of arena offset `off` of `space` (clamped to the arena's end).
    #[inline]
    fn arena_ptr(&self, space: usize, off: u64) -> *mut u8 {
        let g = self.geo();
        let off = off.min(g.arena);
        // SAFETY: arena_off(space) + arena <= tail length (validated geometry), so the address
        // is inside the tail or one past its end.
        unsafe {
            self.store
                .shared
                .tail_ptr()
                .as_ptr()
                .add((g.arena_off(space & 1) + off) as usize)
        }
    }

    /// Whether `[off, off + len)` lies inside an arena.
    #[inline]
    fn in_arena(&self, off: u64, len: u64) -> bool {
        off.checked_add(len)
            .is_some_and(|end| end <= self.geo().arena)
    }

    /// Reads and bounds-checks the entry at arena offset `off` of `space`.
    #[inline]
    pub(crate) fn entry(&self, space: usize, off: u64) -> Result<Entry, ReadError> {
        let g = self.geo();
        if off < ARENA_START || !off.is_multiple_of(8) || off > g.arena - ENTRY_HEAD {
            return Err(ReadError::Corrupted("entry offset"));
        }
        let p = self.arena_ptr(space, off);
        // SAFETY: off + 16 <= arena and 8-aligned, inside the tail. Raw reads (copies), not
        // references: a hostile process may write these bytes even while we hold the lock, which
        // can only tear the values; u64 has no invalid bit patterns.
        let (hash, lens) = unsafe { (p.cast::<u64>().read(), p.add(8).cast::<u64>().read()) };
        let key_len = lens & 0xffff_ffff;
        let val_len = lens >> 32;
        // Each length < 2^32 and off < 2^44: no overflow.
        if off + ENTRY_HEAD + key_len + val_len > g.arena {
            return Err(ReadError::Corrupted("entry length"));
        }
        Ok(Entry {
            off,
            hash,
            key_len,
            val_len,
        })
    }

    /// Copies `len` bytes at `off` of `space` into `out` (replacing its contents). The range
    /// must lie in the arena (it comes from a checked [`Entry`]; anything else is Corrupted), so
    /// `out` never grows past one arena.
    pub(crate) fn read_into(
        &self,
        space: usize,
        off: u64,
        len: u64,
        out: &mut Buf,
    ) -> Result<(), ReadError> {
        if !self.in_arena(off, len) {
            return Err(ReadError::Corrupted("entry range"));
        }
        let dst = out.prepare(len as usize);
        // SAFETY: the range is inside the arena (checked above); dst has room for len bytes and
        // is local. A raw copy: bytes a hostile process writes meanwhile are copied torn, which
        // decoding then rejects or accepts as some value; never a reference to shared bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.arena_ptr(space, off), dst, len as usize) };
        Ok(())
    }

    /// Whether the key bytes of `e` equal `key`, reading the arena a word at a time (copies into
    /// registers, under the lock).
    #[inline]
    pub(crate) fn key_eq(&self, space: usize, e: &Entry, key: &[u8]) -> bool {
        if e.key_len != key.len() as u64 || !self.in_arena(e.off + ENTRY_HEAD, e.key_len) {
            return false;
        }
        let p = self.arena_ptr(space, e.off + ENTRY_HEAD);
        let mut words = key.chunks_exact(8);
        let mut i = 0usize;
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            // SAFETY: i + 8 <= key_len, so the word is inside the checked entry; a raw read.
            let a = unsafe { p.add(i).cast::<u64>().read_unaligned() };
            if a != u64::from_ne_bytes(b) {
                return false;
            }
            i += 8;
        }
        for &b in words.remainder() {
            // SAFETY: i < key_len, inside the checked entry; a raw read.
            if unsafe { p.add(i).read() } != b {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Writes an entry at `off` of `space` (free space: past `top` of the active space, or in
    /// the inactive space). Returns the offset past it. Callers checked that it fits; if it
    /// does not, nothing is written and the answer is `Full`.
    pub(crate) fn write_entry(
        &self,
        space: usize,
        off: u64,
        hash: u64,
        key: &[u8],
        val: &[u8],
    ) -> Result<u64, WriteError> {
        let g = self.geo();
        if key.len() > u32::MAX as usize || val.len() > u32::MAX as usize {
            return Err(WriteError::TooLarge {
                size: (key.len() as u64).saturating_add(val.len() as u64),
                max: g.arena,
            });
        }
        let size = entry_size(key.len() as u64, val.len() as u64);
        if !off.is_multiple_of(8) || !self.in_arena(off, size) {
            return Err(WriteError::Full {
                what: "arena",
                capacity: g.arena,
            });
        }
        let p = self.arena_ptr(space, off);
        let lens = key.len() as u64 | ((val.len() as u64) << 32);
        // SAFETY: [off, off + size) is inside the arena (checked) and free (nobody reads it
        // before it is published); off is 8-aligned; the sources are local slices. Raw writes.
        unsafe {
            p.cast::<u64>().write(hash);
            p.add(8).cast::<u64>().write(lens);
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(16), key.len());
            std::ptr::copy_nonoverlapping(val.as_ptr(), p.add(16 + key.len()), val.len());
        }
        Ok(off + size)
    }

    /// Copies entry `e` of `from` space to `off` of the other space; returns the offset past it.
    pub(crate) fn copy_entry(
        &self,
        from: usize,
        e: &Entry,
        to: usize,
        off: u64,
    ) -> Result<u64, WriteError> {
        let size = e.size();
        if from & 1 == to & 1 || !self.in_arena(e.off, size) {
            return Err(WriteError::Corrupted("entry to copy"));
        }
        if !self.in_arena(off, size) {
            return Err(WriteError::Full {
                what: "arena",
                capacity: self.geo().arena,
            });
        }
        // SAFETY: source and destination ranges are inside their arenas (checked above); the
        // two arenas do not overlap (from != to). A raw copy between shared bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.arena_ptr(from, e.off),
                self.arena_ptr(to, off),
                size as usize,
            );
        }
        Ok(off + size)
    }

    /// Commits a point change of the active space through the journal: optionally
    /// `table[space][slot] = value`, and the counters `st`.
    pub(crate) fn commit(&self, space: usize, slot: Option<(u64, u64)>, st: State) {
        let j = &self.c().journal;
        let (si, sv) = slot.unwrap_or((NO_SLOT, 0));
        hit(); // new entry written past top, journal not started
        j.space.store(space as u64, Ordering::Relaxed);
        j.slot.store(si, Ordering::Relaxed);
        j.slot_value.store(sv, Ordering::Relaxed);
        j.len.store(st.len, Ordering::Relaxed);
        j.top.store(st.top, Ordering::Relaxed);
        j.garbage.store(st.garbage, Ordering::Relaxed);
        j.tombstones.store(st.tombstones, Ordering::Relaxed);
        hit(); // journal filled, not committed
        // The commit point. Release: the entry bytes and journal fields above are stored before
        // it (partner: the next locker's mutex acquire, after which it reads the journal in
        // `recover`); Relaxed could let `pending = 1` land before them, and a death in between
        // would replay a half-written journal.
        j.pending.store(1, Ordering::Release);
        // Keeps the compiler from moving the apply stores below before the commit point (a
        // death then would leave a changed slot with no journal to finish the counters). The
        // CPU needs no fence for this: a killed process stops at an instruction boundary, every
        // store it retired reaches memory anyway, and the next locker reads only after taking
        // the mutex the kernel released for the dead owner (which orders everything).
        compiler_fence(Ordering::SeqCst);
        hit(); // committed, nothing applied
        self.apply_journal();
    }

    /// Applies the journal (idempotent) and clears it.
    fn apply_journal(&self) {
        let c = self.c();
        let j = &c.journal;
        let space = (j.space.load(Ordering::Relaxed) & 1) as usize;
        let si = j.slot.load(Ordering::Relaxed);
        if si != NO_SLOT && si < self.geo().slots {
            self.slot(space, si)
                .store(j.slot_value.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        hit(); // slot applied, counters not
        let s = &c.spaces.0[space];
        s.len
            .store(j.len.load(Ordering::Relaxed), Ordering::Relaxed);
        hit(); // slot and len applied, the other counters not
        s.top
            .store(j.top.load(Ordering::Relaxed), Ordering::Relaxed);
        s.garbage
            .store(j.garbage.load(Ordering::Relaxed), Ordering::Relaxed);
        s.tombstones
            .store(j.tombstones.load(Ordering::Relaxed), Ordering::Relaxed);
        hit(); // applied, journal still pending
        // Release: the apply stores above are done before the journal is retired (partner: the
        // next locker's mutex acquire); weaker would let a death leave `pending = 0` with the
        // slot or counters not yet written.
        j.pending.store(0, Ordering::Release);
    }

    /// Starts a bulk rebuild: zeroes the inactive table. Returns the inactive space index.
    pub(crate) fn begin_rebuild(&self) -> Result<usize, ReadError> {
        let to = 1 - self.active()?;
        let g = self.geo();
        // SAFETY: table[to] is the `slots * 8` bytes at table_off(to) of the tail (validated
        // geometry); it is inactive, so no reader looks at it, and we hold the lock. A raw write.
        unsafe {
            let p = self
                .store
                .shared
                .tail_ptr()
                .as_ptr()
                .add(g.table_off(to) as usize);
            std::ptr::write_bytes(p, 0, (g.slots * 8) as usize);
        }
        hit(); // inactive table cleared
        Ok(to)
    }

    /// Publishes a rebuilt space: writes its counters, then flips `active` (the commit point).
    pub(crate) fn finish_rebuild(&self, to: usize, st: State) {
        let c = self.c();
        let s = &c.spaces.0[to & 1];
        hit(); // new space built, counters not written
        s.len.store(st.len, Ordering::Relaxed);
        s.top.store(st.top, Ordering::Relaxed);
        s.garbage.store(st.garbage, Ordering::Relaxed);
        s.tombstones.store(st.tombstones, Ordering::Relaxed);
        hit(); // counters written, not flipped
        // Release: the rebuilt table, arena and counters are stored before the flip (partner:
        // the next locker's mutex acquire, then its read of `active`). Weaker would let a death
        // publish a half-built space.
        c.head.active.store((to & 1) as u64, Ordering::Release);
        // Nothing of a later operation is moved before the flip (see `commit`).
        compiler_fence(Ordering::SeqCst);
        hit(); // flipped
    }
}

/// For tools (`multiproc inspect`): the entry count of a dict or list segment whose key and
/// value types are unknown, read without taking its lock (a snapshot: a change in flight may be
/// missed). The segment is validated as its header's kind (`Dict` or `List`) with its geometry
/// checked like any opener's; a count beyond the slot count is `Corrupted`.
pub fn len_of(seg: Segment) -> Result<u64, ShmError> {
    fn len<F: Flavor>(seg: Segment) -> Result<u64, ShmError> {
        let shared = Shared::<Control<F>>::from_segment(seg)?;
        let c = shared.get();
        // Relaxed: a display snapshot; nothing is read through these values.
        let active = match c.head.active.load(Ordering::Relaxed) {
            0 => 0,
            1 => 1,
            _ => return Err(ShmError::Corrupted("active space index")),
        };
        let n = c.spaces.0[active].len.load(Ordering::Relaxed);
        if n > shared.geometry().slots {
            return Err(ShmError::Corrupted("entry count"));
        }
        Ok(n)
    }
    match seg.header().object_kind() {
        Some(ObjectKind::List) => len::<ListFlavor>(seg),
        _ => len::<DictFlavor>(seg),
    }
}
