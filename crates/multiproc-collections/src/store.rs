//! The storage engine under [`SharedDict`](crate::SharedDict) and
//! [`SharedList`](crate::SharedList): one segment holding a robust mutex, a redo journal and two
//! *spaces*, each a table of `u64` slots plus a byte arena for variable-size entries.
//!
//! ```text
//! payload: Control (512 B: mutex, geometry, active space, journal, per-space counters)
//!          table[0]  (slots x u64)   table[1]
//!          arena[0]  (arena bytes)   arena[1]
//! ```
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
//! geometry held locally (validated once at open): corruption is an `Error::Corrupted`, never an
//! out-of-bounds access or a panic. (The pthread mutex itself is glibc's and is not checked.)

use crate::error::{Error, Result};
use crate::facade::{AtomicU64, Ordering, compiler_fence};
use crate::failpoint::hit;
use multiproc_shm::{Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, TypeFingerprint};
use multiproc_sync::{LockOutcome, MutexError, RobustMutex};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

/// Bytes reserved for [`Control`] at the start of the payload.
pub(crate) const CONTROL_SIZE: u64 = 512;
/// Size of an entry's head in the arena.
pub(crate) const ENTRY_HEAD: u64 = 16;
/// The first arena offset handed out (0 is reserved so that a live slot is never 0).
pub(crate) const ARENA_START: u64 = 8;
const MAGIC: u64 = u64::from_le_bytes(*b"mpcoll01");
const NO_SLOT: u64 = u64::MAX;
/// Largest slot count (offsets and indices stay far below 2^48).
const MAX_SLOTS: u64 = 1 << 32;
/// Largest arena (offsets must fit in the 48 low bits of a dict slot).
pub(crate) const MAX_ARENA: u64 = 1 << 44;

/// The counters of one space.
#[repr(C)]
struct SpaceState {
    len: AtomicU64,
    top: AtomicU64,
    garbage: AtomicU64,
    tombstones: AtomicU64,
}

/// A redo record: "set `slot` of table[`space`] to `slot_value` and the counters to these".
#[repr(C)]
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

/// The head of the payload. Laid out so that an operation touches three cache lines of it
/// (payloads are 256-aligned): the mutex with `active`, the journal, the counters; the geometry,
/// read once at open, sits apart.
#[repr(C)]
struct Control {
    mutex: RobustMutex,
    active: AtomicU64,
    recoveries: AtomicU64,
    _pad: [u64; 8 - (std::mem::size_of::<RobustMutex>() / 8 + 2) % 8],
    journal: Journal,
    spaces: [SpaceState; 2],
    magic: AtomicU64,
    slots: AtomicU64,
    arena: AtomicU64,
    capacity: AtomicU64,
}

/// Offset of `magic` in the payload (for tests that corrupt it on purpose).
#[doc(hidden)]
pub const MAGIC_OFFSET: usize = std::mem::offset_of!(Control, magic);
const _: () = assert!(std::mem::offset_of!(Control, journal) % 64 == 0);
const _: () = assert!(std::mem::offset_of!(Control, spaces) % 64 == 0);

const _: () = assert!(std::mem::size_of::<Control>() as u64 <= CONTROL_SIZE);
const _: () = assert!(std::mem::align_of::<Control>() <= 256);

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
    fn table_off(&self, space: usize) -> u64 {
        CONTROL_SIZE + space as u64 * self.slots * 8
    }

    fn arena_off(&self, space: usize) -> u64 {
        CONTROL_SIZE + 2 * self.slots * 8 + space as u64 * self.arena
    }

    /// Total payload bytes, or None on overflow / out of limits.
    fn payload_size(&self) -> Option<u64> {
        if self.slots == 0
            || self.slots > MAX_SLOTS
            || self.arena < 64
            || self.arena > MAX_ARENA
            || self.arena % 8 != 0
            || self.capacity == 0
            || self.capacity > self.slots
        {
            return None;
        }
        let tables = self.slots.checked_mul(16)?;
        let arenas = self.arena.checked_mul(2)?;
        CONTROL_SIZE.checked_add(tables)?.checked_add(arenas)
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

/// A segment with the store layout, opened and validated.
pub(crate) struct Store {
    seg: Segment,
    base: NonNull<u8>,
    geo: Geometry,
}

// SAFETY: `base` points into the mapping owned by `seg` (an Arc, kept alive by the Store); every
// access to shared memory goes through atomics or happens under the robust mutex.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

impl Clone for Store {
    fn clone(&self) -> Self {
        Store {
            seg: self.seg.clone(),
            base: self.base,
            geo: self.geo,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("segment", &self.seg)
            .field("geometry", &self.geo)
            .finish()
    }
}

impl Store {
    /// Creates a store segment (named or anonymous). The table and arena memory is fresh from
    /// `ftruncate`, hence zero (an empty table), and is only touched as it is used.
    pub(crate) fn create(
        name: Option<&str>,
        kind: ObjectKind,
        fp: TypeFingerprint,
        geo: Geometry,
    ) -> Result<Store> {
        let size = geo
            .payload_size()
            .filter(|s| *s <= isize::MAX as u64 / 2)
            .ok_or(Error::BadParameter("capacity or arena size out of range"))?;
        let spec = SegmentSpec::new(kind, fp, size as usize, 256);
        let init = |p: NonNull<u8>, _len: usize| -> multiproc_shm::Result<()> {
            let c = p.as_ptr().cast::<Control>();
            // SAFETY: the payload is `size` >= CONTROL_SIZE bytes, 256-aligned and unseen by
            // anyone until Ready, so we may build the Control in place. Fresh memory is zero.
            unsafe {
                RobustMutex::init_at(std::ptr::addr_of_mut!((*c).mutex)).map_err(|source| {
                    multiproc_shm::ShmError::Os {
                        op: "pthread_mutex_init",
                        source,
                    }
                })?;
                let c = &*c;
                c.magic.store(MAGIC, Ordering::Relaxed);
                c.slots.store(geo.slots, Ordering::Relaxed);
                c.arena.store(geo.arena, Ordering::Relaxed);
                c.capacity.store(geo.capacity, Ordering::Relaxed);
                for s in &c.spaces {
                    s.top.store(ARENA_START, Ordering::Relaxed);
                }
            }
            // Publication to openers is the segment's Release store of Ready.
            Ok(())
        };
        let seg = match name {
            Some(n) => Segment::create_named(n, &spec, init)?,
            None => Segment::create_anonymous(&spec, init)?,
        };
        Ok(Store::from_parts(seg, geo))
    }

    fn expect(kind: ObjectKind, fp: TypeFingerprint) -> Expect {
        Expect::new(kind, fp).min_payload_size(CONTROL_SIZE)
    }

    /// Opens a named store segment and validates its geometry.
    pub(crate) fn open_named(name: &str, kind: ObjectKind, fp: TypeFingerprint) -> Result<Store> {
        Self::validate(Segment::open_named(name, &Self::expect(kind, fp))?)
    }

    /// Opens the store a handle names.
    pub(crate) fn open_handle(
        h: &SegmentHandle,
        kind: ObjectKind,
        fp: TypeFingerprint,
    ) -> Result<Store> {
        Self::validate(Segment::open_handle(h, &Self::expect(kind, fp))?)
    }

    fn validate(seg: Segment) -> Result<Store> {
        let c = seg.payload_ptr().as_ptr().cast::<Control>();
        // SAFETY: the segment was validated with payload >= CONTROL_SIZE bytes, 256-aligned; all
        // fields read here are atomics (any bit pattern is valid).
        let c = unsafe { &*c };
        if c.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(Error::Corrupted("bad collection magic"));
        }
        let geo = Geometry {
            slots: c.slots.load(Ordering::Relaxed),
            arena: c.arena.load(Ordering::Relaxed),
            capacity: c.capacity.load(Ordering::Relaxed),
        };
        if geo.payload_size() != Some(seg.payload_len() as u64) {
            return Err(Error::Corrupted("geometry does not match the segment size"));
        }
        Ok(Store::from_parts(seg, geo))
    }

    fn from_parts(seg: Segment, geo: Geometry) -> Store {
        let base = seg.payload_ptr();
        Store { seg, base, geo }
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
    }

    fn control(&self) -> &Control {
        // SAFETY: the payload starts with a Control (checked at create/open: payload_size >=
        // CONTROL_SIZE); the mapping lives as long as self.seg.
        unsafe { &*self.base.as_ptr().cast::<Control>() }
    }

    /// How many times a holder's death was recovered from.
    pub(crate) fn recoveries(&self) -> u64 {
        self.control().recoveries.load(Ordering::Relaxed)
    }

    /// Locks; on `OwnerDied`, replays the journal before returning. Returns whether the previous
    /// holder died.
    #[inline]
    pub(crate) fn lock(&self, how: How) -> Result<(Locked<'_>, bool), MutexError> {
        let m = &self.control().mutex;
        let r = match how {
            How::Block => m.lock(),
            How::Try => m.try_lock(),
            How::Timeout(t) => m.lock_timeout(t),
        }?;
        let l = Locked {
            store: self,
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
pub(crate) struct Locked<'a> {
    store: &'a Store,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a Locked exists only while this thread holds the lock.
        unsafe { self.store.control().mutex.unlock() }
    }
}

impl<'a> Locked<'a> {
    #[inline]
    fn c(&self) -> &'a Control {
        self.store.control()
    }

    #[inline]
    pub(crate) fn geo(&self) -> Geometry {
        self.store.geo
    }

    /// Replays a pending journal (the previous holder died after its commit point).
    fn recover(&self) {
        let c = self.c();
        c.recoveries.fetch_add(1, Ordering::Relaxed);
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
    pub(crate) fn active(&self) -> Result<usize> {
        match self.c().active.load(Ordering::Relaxed) {
            0 => Ok(0),
            1 => Ok(1),
            _ => Err(Error::Corrupted("active space index")),
        }
    }

    /// The validated counters of `space`.
    #[inline]
    pub(crate) fn state(&self, space: usize) -> Result<State> {
        let s = &self.c().spaces[space & 1];
        let st = State {
            len: s.len.load(Ordering::Relaxed),
            top: s.top.load(Ordering::Relaxed),
            garbage: s.garbage.load(Ordering::Relaxed),
            tombstones: s.tombstones.load(Ordering::Relaxed),
        };
        let g = self.geo();
        if st.top < ARENA_START
            || st.top > g.arena
            || st.top % 8 != 0
            || st.garbage > st.top
            || st.len > g.slots
            || st.tombstones > g.slots
            || st.len + st.tombstones > g.slots
        {
            return Err(Error::Corrupted("space counters"));
        }
        Ok(st)
    }

    /// Slot `i` of table[`space`]. `i` must be < slots (callers mask or check).
    #[inline]
    pub(crate) fn slot(&self, space: usize, i: u64) -> &'a AtomicU64 {
        let g = self.geo();
        let i = i.min(g.slots - 1);
        let off = g.table_off(space & 1) + i * 8;
        // SAFETY: off + 8 <= CONTROL_SIZE + 2*slots*8 <= payload size (geometry validated), and
        // 8-aligned (CONTROL_SIZE and the 256-aligned base are); AtomicU64 has u64's layout.
        unsafe {
            &*self
                .store
                .base
                .as_ptr()
                .add(off as usize)
                .cast::<AtomicU64>()
        }
    }

    #[inline]
    fn arena_ptr(&self, space: usize, off: u64) -> *mut u8 {
        let g = self.geo();
        debug_assert!(off <= g.arena);
        // SAFETY: callers check off <= arena; arena_off(space) + arena <= payload size.
        unsafe {
            self.store
                .base
                .as_ptr()
                .add((g.arena_off(space & 1) + off) as usize)
        }
    }

    /// Reads and bounds-checks the entry at arena offset `off` of `space`.
    #[inline]
    pub(crate) fn entry(&self, space: usize, off: u64) -> Result<Entry> {
        let g = self.geo();
        if off < ARENA_START || off % 8 != 0 || off > g.arena - ENTRY_HEAD {
            return Err(Error::Corrupted("entry offset"));
        }
        let p = self.arena_ptr(space, off);
        // SAFETY: off + 16 <= arena, 8-aligned; we hold the lock so nobody writes these bytes;
        // u64 has no invalid bit patterns.
        let (hash, lens) = unsafe { (p.cast::<u64>().read(), p.add(8).cast::<u64>().read()) };
        let key_len = lens & 0xffff_ffff;
        let val_len = lens >> 32;
        if off + ENTRY_HEAD + key_len + val_len > g.arena {
            return Err(Error::Corrupted("entry length"));
        }
        Ok(Entry {
            off,
            hash,
            key_len,
            val_len,
        })
    }

    /// Copies `len` bytes at `off` of `space` into `out` (replacing its contents).
    pub(crate) fn read_into(&self, space: usize, off: u64, len: u64, out: &mut Buf) {
        // Callers pass ranges inside a checked Entry.
        debug_assert!(off + len <= self.geo().arena);
        let dst = out.prepare(len as usize);
        // SAFETY: the range is inside the arena (from a checked Entry); we hold the lock, so no
        // one writes it; dst has room for len bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.arena_ptr(space, off), dst, len as usize) };
    }

    /// Whether the key bytes of `e` equal `key`, reading the arena a word at a time (copies into
    /// registers, under the lock).
    #[inline]
    pub(crate) fn key_eq(&self, space: usize, e: &Entry, key: &[u8]) -> bool {
        if e.key_len != key.len() as u64 {
            return false;
        }
        let p = self.arena_ptr(space, e.off + ENTRY_HEAD);
        let mut words = key.chunks_exact(8);
        let mut i = 0usize;
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            // SAFETY: i + 8 <= key_len, so the word is inside the checked entry; lock held.
            let a = unsafe { p.add(i).cast::<u64>().read_unaligned() };
            if a != u64::from_ne_bytes(b) {
                return false;
            }
            i += 8;
        }
        for &b in words.remainder() {
            // SAFETY: i < key_len, inside the checked entry; lock held.
            if unsafe { p.add(i).read() } != b {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Writes an entry at `off` of `space` (free space: past `top` of the active space, or in
    /// the inactive space). Returns the offset past it. The caller checked that it fits.
    pub(crate) fn write_entry(
        &self,
        space: usize,
        off: u64,
        hash: u64,
        key: &[u8],
        val: &[u8],
    ) -> u64 {
        let size = entry_size(key.len() as u64, val.len() as u64);
        assert!(off + size <= self.geo().arena, "checked by the caller");
        let p = self.arena_ptr(space, off);
        let lens = key.len() as u64 | ((val.len() as u64) << 32);
        // SAFETY: [off, off + size) is inside the arena and free (nobody reads it before it is
        // published); we hold the lock; off is 8-aligned.
        unsafe {
            p.cast::<u64>().write(hash);
            p.add(8).cast::<u64>().write(lens);
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(16), key.len());
            std::ptr::copy_nonoverlapping(val.as_ptr(), p.add(16 + key.len()), val.len());
        }
        off + size
    }

    /// Copies entry `e` of `from` space to `off` of the other space; returns the offset past it.
    pub(crate) fn copy_entry(&self, from: usize, e: &Entry, to: usize, off: u64) -> u64 {
        let size = e.size();
        assert!(
            off + size <= self.geo().arena && from != to,
            "checked by the caller"
        );
        // SAFETY: source range inside `from`'s arena (checked Entry, size rounds up within the
        // arena because the arena length is a multiple of 8), destination inside `to`'s arena;
        // the two arenas do not overlap; lock held.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.arena_ptr(from, e.off),
                self.arena_ptr(to, off),
                size as usize,
            );
        }
        off + size
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
        let s = &c.spaces[space];
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
    pub(crate) fn begin_rebuild(&self) -> Result<usize> {
        let to = 1 - self.active()?;
        let g = self.geo();
        let p = self.slot(to, 0) as *const AtomicU64 as *mut u8;
        // SAFETY: table[to] is slots*8 bytes inside the payload; it is inactive, so no reader
        // looks at it, and we hold the lock.
        unsafe { std::ptr::write_bytes(p, 0, (g.slots * 8) as usize) };
        hit(); // inactive table cleared
        Ok(to)
    }

    /// Publishes a rebuilt space: writes its counters, then flips `active` (the commit point).
    pub(crate) fn finish_rebuild(&self, to: usize, st: State) {
        let c = self.c();
        let s = &c.spaces[to & 1];
        hit(); // new space built, counters not written
        s.len.store(st.len, Ordering::Relaxed);
        s.top.store(st.top, Ordering::Relaxed);
        s.garbage.store(st.garbage, Ordering::Relaxed);
        s.tombstones.store(st.tombstones, Ordering::Relaxed);
        hit(); // counters written, not flipped
        // Release: the rebuilt table, arena and counters are stored before the flip (partner:
        // the next locker's mutex acquire, then its read of `active`). Weaker would let a death
        // publish a half-built space.
        c.active.store((to & 1) as u64, Ordering::Release);
        // Nothing of a later operation is moved before the flip (see `commit`).
        compiler_fence(Ordering::SeqCst);
        hit(); // flipped
    }
}
