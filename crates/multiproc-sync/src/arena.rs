//! Arenas: many small shared objects in one segment (one fd and one mapping per arena, not per
//! object), as Python's `multiprocessing.heap` does for `RawValue`.
//!
//! An [`Arena`] is a process-local set of arena segments, one list per size class (32, 64, ...,
//! [`MAX_SLOT`] bytes). Each arena segment is a [`Shared<ArenaCtl>`]: a control block (a
//! [`RobustMutex`], the layout version, the free-list head, a bump index, a live count and a
//! one-entry journal), then a tail: a process table ([`TRACKED_PROCS`] identities) and `slots`
//! slots of `class` bytes each. A slot is the object (its first `class - 16` bytes) and the
//! slot's record in its last 16 bytes (generation, type tag, hold word): layout
//! [`ARENA_LAYOUT`] = 2, so a `Value<u64>` (robust mutex + value, 24 B) takes exactly one
//! 64-byte slot. A free slot's first 4 bytes are its free-list link. Objects larger than
//! [`MAX_OBJECT`] keep their own segments. When every segment of a class is full, the arena
//! adds one.
//! The anonymous constructors of every small kind (`Value::new`, `RawValue::new`, `Lock::new`,
//! `RLock::new`, `Semaphore::new`, `BoundedSemaphore::new`, `Event::new`, small
//! `Array`/`RawArray` `zeroed`/`from_slice`) use the process's arena ([`Arena::global`]); each
//! has a `*_segment` twin (one segment per object) and a `*_in(&arena, ..)`.
//!
//! ## Kill safety
//! Allocation and free change the control block and one slot record under the arena's robust
//! mutex, through a journal: the changer first writes the old values it needs (`j_slot`,
//! `j_head`, `j_bump`, `j_live`, `j_gen`) and publishes them with one Release store of `j_op`,
//! then changes the metadata, then clears `j_op`. The next locker that gets `OwnerDied` rolls an
//! `ALLOC` back (the allocator died before it handed the slot to anyone: the slot returns to the
//! free list or the bump index) and redoes a `FREE` (every store is of a journalled value, so a
//! redo is idempotent). Whatever instruction a SIGKILL lands on, the metadata is the state
//! before or after the operation.
//!
//! ## Lifetime: who holds a slot
//! A process that uses an arena segment takes an entry of its process table (its pid and start
//! time, as the project's locks record holders). A slot's `hold` word has one bit per table
//! entry: bit `i` set = the process of entry `i` holds a handle. Inside a process the handles
//! of a slot are counted locally (clones share one `SlotRef`; each open adds one); the first
//! sets the process's bit (a CAS that refuses a word of 0, so a freed slot is never
//! resurrected), the last clears it, and whoever leaves the word at 0 frees the slot under the
//! lock (bumping its generation).
//!
//! - A process SIGKILLed while it holds handles: its entry names a dead process; `reap_dead`
//!   (run by [`Arena::reclaim`], [`Arena::check`], and allocation when a segment or the table is
//!   full) clears its bit from every slot and frees the slots no one else holds. Idempotent, so
//!   a reaper killed midway leaves work the next one redoes.
//! - A holder killed between clearing its bit and the free leaves an orphan (live, word 0):
//!   `sweep` frees it (on `OwnerDied` recovery, a full segment, reclaim).
//! - A forked child takes its own hold on every slot its parent held at the fork (a
//!   `pthread_atfork` child handler, lock-free; the parent's `fork` returns once the child has
//!   done so, through a shared handshake word, 2 s at most), so the parent dropping its handles
//!   never frees a slot the child still uses — as a forked child's inherited mapping kept an
//!   own segment alive — and the child's drops release its own holds.
//! - Past [`TRACKED_PROCS`] live processes in one segment, a process's holds are counted in the
//!   word's high 16 bits instead (untracked): correct while it lives, leaked if it is killed
//!   holding them (the limit of the first arena slice, now only past 48 processes).
//!
//! ## Handles
//! An arena object serializes as a [`SlotHandle`]: (arena segment handle, slot, generation,
//! type tag). A process opens each arena segment once (a per-process cache keyed by segment
//! id), so a spawned child given 10,000 objects of one arena receives one fd. Opening a handle
//! whose slot was freed (and maybe reused) fails with [`ShmError::StaleHandle`]: the
//! generation no longer matches.
//!
//! ```
//! use multiproc_sync::{arena::Arena, Value};
//! let arena = Arena::new();
//! let v = Value::new_in(&arena, 41u64).unwrap();
//! *v.get_lock().unwrap() += 1;
//! assert_eq!(v.load().unwrap(), 42);
//! ```

use crate::error::{ArenaError, CreateError};
use crate::facade::{AtomicU32, AtomicU64, Ordering, StdAtomicPtr, StdAtomicU32, StdOrdering};
use crate::mutex::{LockOutcome, RobustMutex};
use multiproc_shm::{
    ObjectKind, SegmentHandle, Shared, SharedLayout, ShmError, TAIL_ALIGN, TypeFingerprint,
};
use serde::{Deserialize, Serialize};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The smallest slot size (16 bytes of object + the 16-byte slot record).
pub const MIN_SLOT: usize = 32;
/// The largest slot size.
pub const MAX_SLOT: usize = 512;
/// The largest object an arena slot holds (a slot's last 16 bytes are its record): objects
/// bigger than this keep their own segment.
pub const MAX_OBJECT: usize = MAX_SLOT - META;
/// Number of size classes (32, 64, 128, 256, 512).
const NCLASS: usize = 5;
/// The arena segment layout this build reads and writes (in the control block, checked on open):
/// 2 = slot records inside the slots' last 16 bytes, classes 32..=512. (Layout 1, the first
/// slices', kept the records in a separate array and had a 16-byte class.)
pub const ARENA_LAYOUT: u32 = 2;
/// Bytes of slot payload per arena segment (the slot count is this over the class, capped).
const SEG_PAYLOAD: usize = 2 << 20;
/// Most slots in one arena segment (local limit for `validate`).
pub const MAX_SLOTS: u32 = 1 << 16;
/// Bytes of one slot record.
const META: usize = std::mem::size_of::<SlotMeta>();
/// Processes one arena segment tracks by identity (pid + start time): each holds one bit of a
/// slot's `hold` word, so the slots of a process that died are found and reclaimed.
pub const TRACKED_PROCS: usize = 48;
/// Bytes of the process table at the start of the tail.
const PROC_TABLE: usize = TRACKED_PROCS * 8;
/// The tracked-process bits of a `hold` word.
const HOLD_BITS: u64 = (1 << TRACKED_PROCS) - 1;
/// One untracked holder (a process that found the table full): counted in the high 16 bits,
/// and, as before per-process tracking, leaked if that process is killed holding it.
const UNTRACKED_ONE: u64 = 1 << TRACKED_PROCS;
/// How long an arena operation waits for the arena lock before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

const OP_NONE: u32 = 0;
const OP_ALLOC: u32 = 1;
const OP_FREE: u32 = 2;

/// The control block of an arena segment.
#[repr(C)]
pub(crate) struct ArenaCtl {
    mutex: RobustMutex,
    /// Slot size in bytes (power of two in `MIN_SLOT..=MAX_SLOT`). Set at create, never changed.
    class: AtomicU32,
    /// Number of slots. Set at create, never changed.
    slots: AtomicU32,
    /// First free slot + 1 (0: the free list is empty).
    free_head: AtomicU32,
    /// First slot never allocated.
    bump: AtomicU32,
    /// Slots allocated.
    live: AtomicU32,
    /// Journal: `OP_NONE`, `OP_ALLOC` or `OP_FREE` (the commit flag).
    j_op: AtomicU32,
    j_slot: AtomicU32,
    j_head: AtomicU32,
    j_bump: AtomicU32,
    j_live: AtomicU32,
    j_gen: AtomicU32,
    /// [`ARENA_LAYOUT`]. Set at create, never changed; an arena of another layout (0 here in
    /// a layout-1 segment, whose word was padding) is refused on open.
    layout: AtomicU32,
}

/// One slot's record, in the slot's last 16 bytes. (The free-list link of a free slot lives in
/// the first 4 bytes of its object bytes, unused while it is free, so the record stays 16
/// bytes.)
#[repr(C)]
struct SlotMeta {
    /// Bumped on every free: a handle names the generation it was made for.
    generation: AtomicU32,
    /// 0: free. Else live, holding the object whose type tag this is.
    tag: AtomicU32,
    /// Who holds the slot: bit `i` (< [`TRACKED_PROCS`]) = the process in table entry `i`
    /// holds a handle; the high 16 bits count untracked holders. 0 when free, or an orphan
    /// awaiting `sweep`. One word, so "still held" and "take a reference" are one CAS.
    hold: AtomicU64,
}

/// The geometry an arena segment was validated with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArenaGeom {
    class: usize,
    slots: u32,
}

/// Offset of the first slot in the tail: after the process table, 128-aligned (so every slot
/// is aligned to its size up to 128, and a 64-byte slot is one cache line).
const SLOTS_OFF: usize = PROC_TABLE.div_ceil(TAIL_ALIGN) * TAIL_ALIGN;

fn tail_len_for(class: usize, slots: usize) -> usize {
    SLOTS_OFF + class * slots
}

// SAFETY: repr(C), atomics only (the mutex too), so any bit pattern is valid and every field
// another process writes is atomic; align 8 <= 256; no Drop. `validate` reads class and slots once
// and checks them against the real tail length and local limits.
unsafe impl SharedLayout for ArenaCtl {
    const KIND: ObjectKind = ObjectKind::Raw;
    const MAX_TAIL: usize = 4 << 20;
    type Geometry = ArenaGeom;
    fn validate(&self, tail_len: usize) -> Result<ArenaGeom, ShmError> {
        let layout = self.layout.load(Ordering::Relaxed);
        if layout != ARENA_LAYOUT {
            return Err(ShmError::VersionMismatch {
                found: layout,
                expected: ARENA_LAYOUT,
            });
        }
        let class = self.class.load(Ordering::Relaxed) as usize;
        let slots = self.slots.load(Ordering::Relaxed);
        if !class.is_power_of_two() || !(MIN_SLOT..=MAX_SLOT).contains(&class) {
            return Err(ShmError::OutOfRange {
                what: "arena slot size",
                found: class as u64,
                limit: MAX_SLOT as u64,
            });
        }
        if slots == 0 || slots > MAX_SLOTS {
            return Err(ShmError::OutOfRange {
                what: "arena slot count",
                found: slots as u64,
                limit: MAX_SLOTS as u64,
            });
        }
        let need = tail_len_for(class, slots as usize);
        if need > tail_len {
            return Err(ShmError::OutOfRange {
                what: "arena tail",
                found: need as u64,
                limit: tail_len as u64,
            });
        }
        Ok(ArenaGeom { class, slots })
    }
}

/// The size class index for an object of `size` bytes in a slot of at least `min` bytes (the
/// slot holds the object and its 16-byte record; `None`: too big for an arena).
fn class_index(size: usize, min: usize) -> Option<usize> {
    let c = size
        .checked_add(META)?
        .max(min)
        .max(MIN_SLOT)
        .checked_next_power_of_two()?;
    if c > MAX_SLOT {
        return None;
    }
    Some(c.trailing_zeros() as usize - MIN_SLOT.trailing_zeros() as usize)
}

/// `n` zeroed counters, allocated zeroed (calloc: pages are touched only when used).
fn zeroed_counts(n: usize) -> Box<[StdAtomicU32]> {
    let v: Box<[u32]> = vec![0u32; n].into_boxed_slice();
    // SAFETY: AtomicU32 has the same size, alignment and bit validity as u32, so a boxed slice
    // of one is a boxed slice of the other (same allocation layout).
    unsafe { Box::from_raw(Box::into_raw(v) as *mut [StdAtomicU32]) }
}

/// Removes one holder `mine` (a process bit, or one untracked holder) from a hold word;
/// returns the word left, or `None` if `mine` was not there (a corrupt word: leak, never
/// underflow).
fn release_hold(hold: &AtomicU64, mine: u64) -> Option<u64> {
    if mine & HOLD_BITS != 0 {
        // AcqRel: the Release orders this process's last writes to the object before a free;
        // the Acquire (for the one leaving 0) sees every other holder's release.
        let prev = hold.fetch_and(!mine, Ordering::AcqRel);
        return (prev & mine != 0).then_some(prev & !mine);
    }
    let mut n = hold.load(Ordering::Relaxed);
    loop {
        if n >> TRACKED_PROCS == 0 {
            return None;
        }
        // AcqRel: as above.
        match hold.compare_exchange_weak(n, n - UNTRACKED_ONE, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return Some(n - UNTRACKED_ONE),
            Err(cur) => n = cur,
        }
    }
}

/// The 32-bit type tag of an object kind + element type (never 0).
pub(crate) fn type_tag(kind: ObjectKind, fp: &TypeFingerprint) -> u32 {
    let h = fp.hash() ^ ((kind as u64) << 56);
    let t = (h ^ (h >> 32)) as u32;
    t.max(1)
}

/// One arena segment, mapped in this process.
pub(crate) struct ArenaSeg {
    shm: Shared<ArenaCtl>,
    /// This process's view: its table entry and how many handles it holds per slot. Replaced
    /// (the old one leaked) in a forked child, whose identity differs.
    local: StdAtomicPtr<Local>,
}

/// What one process knows about its holds in one arena segment.
struct Local {
    /// The process (pid + start time) this view belongs to.
    me: u64,
    /// Its process-table entry (`None`: the table was full; its holds are untracked).
    idx: Option<u32>,
    /// Handles (`SlotRef`s) this process holds per slot; bit 31 = a thread is changing the
    /// process's bit in the slot's `hold` word (the 0 <-> 1 transitions).
    counts: Box<[StdAtomicU32]>,
}

const BUSY: u32 = 1 << 31;

impl Drop for ArenaSeg {
    fn drop(&mut self) {
        fork_unregister(self);
        let p = self.local.load(StdOrdering::Acquire);
        if !p.is_null() {
            // SAFETY: `p` came from Box::into_raw in `local()` and is freed only here, once,
            // when no `&Local` borrowed from `&self` can be alive.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// What [`ArenaSeg::check`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Arena segments.
    pub segments: usize,
    /// Slots in all segments.
    pub slots: u64,
    /// Live slots (the sum of the live counters, checked against the slot records).
    pub live: u64,
    /// Slots on free lists.
    pub free: u64,
    /// Slots never allocated.
    pub untouched: u64,
}

/// The held arena lock; unlocks on drop.
struct ArenaLock<'a> {
    m: &'a RobustMutex,
}

impl Drop for ArenaLock<'_> {
    fn drop(&mut self) {
        // SAFETY: an ArenaLock exists only while this thread holds the mutex (made in `lock`,
        // not Send since it borrows a per-call reference and is dropped in the same frame).
        unsafe { self.m.unlock() }
    }
}

impl ArenaSeg {
    fn create(class: usize) -> Result<ArenaSeg, ShmError> {
        let slots = (SEG_PAYLOAD / class).min(MAX_SLOTS as usize);
        let shm = Shared::<ArenaCtl>::create(
            None,
            TypeFingerprint::of::<ArenaCtl>(),
            tail_len_for(class, slots),
            |p, _tail| {
                // SAFETY: `p` is valid for one ArenaCtl, aligned, zeroed and unseen by others;
                // the tail is zeroed (all slots free, generation 0, no links) which is the
                // initial state; only layout, class and slots need setting.
                unsafe {
                    let c = p.as_ref();
                    c.layout.store(ARENA_LAYOUT, Ordering::Relaxed);
                    c.class.store(class as u32, Ordering::Relaxed);
                    c.slots.store(slots as u32, Ordering::Relaxed);
                }
                Ok(())
            },
        )?;
        Ok(ArenaSeg::wrap(shm))
    }

    fn wrap(shm: Shared<ArenaCtl>) -> ArenaSeg {
        ArenaSeg {
            shm,
            local: StdAtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Process table entry `i`: the packed identity (pid + start time) of a process holding
    /// slots here, or 0.
    fn proc_entry(&self, i: usize) -> &AtomicU64 {
        assert!(i < TRACKED_PROCS);
        let p = self
            .shm
            .tail_range(i * 8, 8)
            .expect("process table inside the validated tail");
        // SAFETY: inside the mapping (tail_range checked), 8-aligned (tail 128-aligned), an
        // atomic (any bit pattern valid), alive as long as `self.shm`.
        unsafe { p.cast::<AtomicU64>().as_ref() }
    }

    /// This process's view of the segment (made on first use, and again after a fork).
    fn local(&self) -> &Local {
        let me = crate::ident::process().1;
        let p = self.local.load(StdOrdering::Acquire);
        // SAFETY: a non-null pointer is a leaked-or-owned Box<Local> freed only on drop.
        if let Some(l) = unsafe { p.as_ref() }
            && l.me == me
        {
            return l;
        }
        let fresh = Box::into_raw(Box::new(Local {
            me,
            idx: self.claim_or_reap(me),
            counts: zeroed_counts(self.geom().slots as usize),
        }));
        // AcqRel: publishes the new Local to other threads (Acquire load above).
        match self
            .local
            .compare_exchange(p, fresh, StdOrdering::AcqRel, StdOrdering::Acquire)
        {
            // SAFETY: just published; lives until drop. The old one (a forked parent's) is
            // leaked: a thread of this process may not be holding it, but leaking is safe.
            Ok(_) => unsafe { &*fresh },
            Err(cur) => {
                // SAFETY: ours was never published; another thread's is (same identity, as
                // both run in this process after the same fork).
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as for `p`.
                unsafe { &*cur }
            }
        }
    }

    /// Finds or claims this process's table entry (CAS of a free one; dead ones are reaped by
    /// `reap_dead` under the lock, called from `alloc` when the table is full).
    fn claim_entry(&self, me: u64) -> Option<u32> {
        for i in 0..TRACKED_PROCS {
            // Relaxed: identity words are compared only; no data is published through them.
            if self.proc_entry(i).load(Ordering::Relaxed) == me {
                return Some(i as u32);
            }
        }
        for i in 0..TRACKED_PROCS {
            if self
                .proc_entry(i)
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some(i as u32);
            }
        }
        None
    }

    /// [`claim_entry`](Self::claim_entry), reaping dead entries under the lock when the table
    /// is full. (Never called with the arena lock held: the mutex is not reentrant.)
    fn claim_or_reap(&self, me: u64) -> Option<u32> {
        if let Some(i) = self.claim_entry(me) {
            return Some(i);
        }
        if let Ok(_g) = self.lock() {
            self.reap_dead();
        }
        self.claim_entry(me)
    }

    /// In a forked child (from the fork handler): takes a hold of the child's own on every
    /// slot the parent held at the fork, so the parent dropping its handles never frees a slot
    /// the child still uses (as a forked child's inherited mapping keeps a segment alive), and
    /// the child's drops release its own holds. Lock-free: another parent thread may have held
    /// any lock at the fork.
    #[cfg_attr(loom, allow(dead_code))]
    fn adopt_after_fork(&self) {
        let p = self.local.load(StdOrdering::Acquire);
        // SAFETY: as in `local`.
        let Some(parent) = (unsafe { p.as_ref() }) else {
            return; // the parent held nothing here
        };
        let me = crate::ident::process().1;
        if parent.me == me {
            return;
        }
        let idx = self.claim_entry(me);
        let mine = idx.map_or(UNTRACKED_ONE, |i| 1 << i);
        let counts = zeroed_counts(parent.counts.len());
        for (s, pc) in parent.counts.iter().enumerate() {
            // Relaxed: the child is single-threaded; this is its own copy of the counts.
            let c = pc.load(StdOrdering::Relaxed);
            // BUSY: a parent thread was mid-way creating or dropping a handle; in the child
            // that handle is never finished, so the child does not hold the slot.
            if c == 0 || c & BUSY != 0 {
                continue;
            }
            let m = self.meta(s as u32);
            let mut h = m.hold.load(Ordering::Relaxed);
            loop {
                if h == 0 {
                    break; // freed meanwhile (a hostile word): not held
                }
                let h1 = if mine & HOLD_BITS != 0 {
                    h | mine
                } else if h >> TRACKED_PROCS == u64::MAX >> TRACKED_PROCS {
                    break;
                } else {
                    h + UNTRACKED_ONE
                };
                // AcqRel: as in `retain`.
                match m
                    .hold
                    .compare_exchange_weak(h, h1, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => {
                        counts[s].store(c, StdOrdering::Relaxed);
                        break;
                    }
                    Err(cur) => h = cur,
                }
            }
        }
        let fresh = Box::into_raw(Box::new(Local { me, idx, counts }));
        // Release: publishes the Local. The parent's (a copy in this child) is leaked.
        self.local.store(fresh, StdOrdering::Release);
    }

    /// The hold word this process adds for one holder.
    fn my_hold(&self) -> u64 {
        match self.local().idx {
            Some(i) => 1 << i,
            None => UNTRACKED_ONE,
        }
    }

    /// Adds a local handle for `slot`; on the 0 -> 1 transition runs `take` (which adds this
    /// process to the slot's hold word, or fails).
    fn local_inc(
        &self,
        slot: u32,
        take: impl FnOnce() -> Result<(), ShmError>,
    ) -> Result<(), ShmError> {
        let c = &self.local().counts[slot as usize];
        let mut spins = 0u32;
        loop {
            // Acquire: pairs with the Release stores ending a BUSY transition.
            let n = c.load(StdOrdering::Acquire);
            if n & BUSY != 0 {
                spins += 1;
                if spins > 64 {
                    std::thread::yield_now();
                }
                continue;
            }
            if n == 0 {
                if c.compare_exchange(0, BUSY, StdOrdering::AcqRel, StdOrdering::Relaxed)
                    .is_ok()
                {
                    let r = take();
                    // Release: the hold change is done before others see the count.
                    c.store(u32::from(r.is_ok()), StdOrdering::Release);
                    return r;
                }
            } else if n + 1 >= BUSY {
                return Err(ShmError::Corrupted(
                    "arena slot: too many handles in one process",
                ));
            } else if c
                .compare_exchange(n, n + 1, StdOrdering::AcqRel, StdOrdering::Relaxed)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Drops a local handle for `slot`; on the 1 -> 0 transition removes this process from the
    /// slot's hold word and returns the word left (0: the caller frees the slot).
    fn local_dec(&self, slot: u32) -> Option<u64> {
        let c = &self.local().counts[slot as usize];
        let mine = self.my_hold();
        let m = self.meta(slot);
        let mut spins = 0u32;
        loop {
            // Acquire: as in local_inc.
            let n = c.load(StdOrdering::Acquire);
            if n & BUSY != 0 {
                spins += 1;
                if spins > 64 {
                    std::thread::yield_now();
                }
                continue;
            }
            if n == 0 {
                return None; // not counted here (a hostile or corrupt state): leak, not underflow
            }
            if n == 1 {
                if c.compare_exchange(1, BUSY, StdOrdering::AcqRel, StdOrdering::Relaxed)
                    .is_ok()
                {
                    let left = release_hold(&m.hold, mine);
                    // Release: as in local_inc.
                    c.store(0, StdOrdering::Release);
                    return left;
                }
            } else if c
                .compare_exchange(n, n - 1, StdOrdering::AcqRel, StdOrdering::Relaxed)
                .is_ok()
            {
                return None;
            }
        }
    }

    /// Under the lock: forgets every process-table entry whose process is dead (pid + start
    /// time), removing its bit from every slot and freeing the slots no one else holds.
    /// Idempotent, so a reaper killed midway leaves work the next one redoes. Returns the
    /// slots freed.
    fn reap_dead(&self) -> u64 {
        let mut freed = 0;
        let bump = self
            .ctl()
            .bump
            .load(Ordering::Relaxed)
            .min(self.geom().slots);
        for i in 0..TRACKED_PROCS {
            let e = self.proc_entry(i);
            // Relaxed: an identity word; liveness is checked against /proc.
            let who = e.load(Ordering::Relaxed);
            if who == 0 || crate::ident::packed_alive(who) {
                continue;
            }
            let bit = 1u64 << i;
            for s in 0..bump {
                let m = self.meta(s);
                if m.tag.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                // AcqRel: as a release by that process would have been.
                let prev = m.hold.fetch_and(!bit, Ordering::AcqRel);
                if prev == bit {
                    test_hook();
                    self.free_locked(s, m.generation.load(Ordering::Relaxed));
                    freed += 1;
                }
            }
            // Only after every bit is gone may a new process take the entry.
            let _ = e.compare_exchange(who, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        freed
    }

    fn ctl(&self) -> &ArenaCtl {
        self.shm.get()
    }

    fn geom(&self) -> ArenaGeom {
        *self.shm.geometry()
    }

    /// The record of `slot`: the slot's last 16 bytes.
    fn meta(&self, slot: u32) -> &SlotMeta {
        let g = self.geom();
        assert!(slot < g.slots, "slot index checked by callers");
        let p = self
            .shm
            .tail_range(SLOTS_OFF + slot as usize * g.class + g.class - META, META)
            .expect("slot record inside the validated tail");
        // SAFETY: the range is inside the mapping (checked by tail_range), 16-aligned (tail is
        // 128-aligned, SLOTS_OFF a multiple of 128, class a power of two >= 32, META = 16),
        // atomics only (any bit pattern valid), and lives as long as `self.shm`, which `&self`
        // borrows.
        unsafe { p.cast::<SlotMeta>().as_ref() }
    }

    /// The object bytes of `slot`: its first `class - 16` bytes (the record follows them).
    fn payload(&self, slot: u32) -> NonNull<u8> {
        let g = self.geom();
        self.shm
            .tail_range(SLOTS_OFF + slot as usize * g.class, g.class - META)
            .expect("payload slot inside the validated tail")
    }

    /// The free-list link of a free slot: its payload's first 4 bytes (next free slot + 1, 0:
    /// end). Meaningful only while the slot is free.
    fn next_word(&self, slot: u32) -> &AtomicU32 {
        // SAFETY: the payload is inside the mapping (payload() checks), at least 16 bytes,
        // 32-aligned; an atomic (any bit pattern valid); alive as long as `self.shm`.
        unsafe { self.payload(slot).cast::<AtomicU32>().as_ref() }
    }

    /// Takes the arena lock, repairing the metadata first if the last holder died.
    fn lock(&self) -> Result<ArenaLock<'_>, ArenaError> {
        let m = &self.ctl().mutex;
        let outcome = m.lock_timeout(LOCK_TIMEOUT)?;
        let g = ArenaLock { m };
        if outcome == LockOutcome::OwnerDied {
            RECOVERIES.fetch_add(1, crate::facade::StdOrdering::Relaxed);
            if c_journal_pending(self.ctl()) {
                JOURNAL_REPLAYS.fetch_add(1, crate::facade::StdOrdering::Relaxed);
            }
            self.recover()?;
            self.sweep();
        }
        Ok(g)
    }

    /// Replays the journal of a holder that died (under the lock).
    fn recover(&self) -> Result<(), ArenaError> {
        let c = self.ctl();
        let slots = self.geom().slots;
        // Acquire: partner of the Release store of j_op in alloc/free; the journal fields
        // written before it are visible. (The mutex handover already orders them; belt and braces.)
        let op = c.j_op.load(Ordering::Acquire);
        let s = c.j_slot.load(Ordering::Relaxed);
        let head = c.j_head.load(Ordering::Relaxed);
        if op != OP_NONE && (s >= slots || head > slots) {
            c.j_op.store(OP_NONE, Ordering::Relaxed);
            return Err(ShmError::Corrupted("arena journal names no slot").into());
        }
        match op {
            OP_ALLOC => {
                // Roll back: the allocator died before anyone saw the slot.
                let m = self.meta(s);
                m.tag.store(0, Ordering::Relaxed);
                m.hold.store(0, Ordering::Relaxed);
                c.free_head.store(head, Ordering::Relaxed);
                c.bump.store(
                    c.j_bump.load(Ordering::Relaxed).min(slots),
                    Ordering::Relaxed,
                );
                c.live
                    .store(c.j_live.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            OP_FREE => self.apply_free(),
            _ => {}
        }
        c.j_op.store(OP_NONE, Ordering::Relaxed);
        Ok(())
    }

    /// The stores of a free, all of journalled values (idempotent).
    fn apply_free(&self) {
        let c = self.ctl();
        let s = c.j_slot.load(Ordering::Relaxed);
        let m = self.meta(s);
        m.generation
            .store(c.j_gen.load(Ordering::Relaxed), Ordering::Relaxed);
        m.hold.store(0, Ordering::Relaxed);
        m.tag.store(0, Ordering::Relaxed);
        self.next_word(s)
            .store(c.j_head.load(Ordering::Relaxed), Ordering::Relaxed);
        test_hook(); // slot free, not yet on the free list
        c.free_head.store(s + 1, Ordering::Relaxed);
        c.live.store(
            c.j_live.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Frees `slot` (under the lock) if it is live with generation `generation` and no holder.
    fn free_locked(&self, slot: u32, generation: u32) {
        let c = self.ctl();
        let m = self.meta(slot);
        if m.tag.load(Ordering::Relaxed) == 0
            || m.generation.load(Ordering::Relaxed) != generation
            || m.hold.load(Ordering::Acquire) != 0
        {
            return; // freed already (a sweep), or reopened: nothing to do
        }
        c.j_slot.store(slot, Ordering::Relaxed);
        c.j_head
            .store(c.free_head.load(Ordering::Relaxed), Ordering::Relaxed);
        c.j_gen.store(generation.wrapping_add(1), Ordering::Relaxed);
        c.j_live
            .store(c.live.load(Ordering::Relaxed), Ordering::Relaxed);
        // Release: commit point; the journal above is complete before a recoverer can see
        // OP_FREE (partner: the Acquire load in `recover`).
        c.j_op.store(OP_FREE, Ordering::Release);
        crate::arena::test_hook();
        self.apply_free();
        c.j_op.store(OP_NONE, Ordering::Release);
    }

    /// Frees every orphan (live, no holder) slot (under the lock). Bounded by the slot count.
    fn sweep(&self) {
        let bump = self
            .ctl()
            .bump
            .load(Ordering::Relaxed)
            .min(self.geom().slots);
        for s in 0..bump {
            let m = self.meta(s);
            if m.tag.load(Ordering::Relaxed) != 0 && m.hold.load(Ordering::Acquire) == 0 {
                self.free_locked(s, m.generation.load(Ordering::Relaxed));
            }
        }
    }

    /// Allocates a slot holding an object of type tag `tag`; `None` if this segment is full.
    /// The slot starts held by this process (its bit, or one untracked holder) and zeroed;
    /// the caller makes the `SlotRef` (which counts it locally).
    fn alloc(&self, tag: u32) -> Result<Option<(u32, u32)>, ArenaError> {
        let mine = self.my_hold();
        let _g = self.lock()?;
        let r = self.alloc_locked(tag, mine)?;
        if r.is_some() {
            return Ok(r);
        }
        self.sweep();
        self.reap_dead();
        self.alloc_locked(tag, mine)
    }

    fn alloc_locked(&self, tag: u32, mine: u64) -> Result<Option<(u32, u32)>, ArenaError> {
        let c = self.ctl();
        let slots = self.geom().slots;
        let head = c.free_head.load(Ordering::Relaxed);
        let bump = c.bump.load(Ordering::Relaxed);
        if head > slots || bump > slots {
            return Err(ShmError::Corrupted("arena free list or bump index out of range").into());
        }
        let slot = if head != 0 {
            let s = head - 1;
            let m = self.meta(s);
            if m.tag.load(Ordering::Relaxed) != 0 {
                return Err(ShmError::Corrupted("arena free list names a live slot").into());
            }
            s
        } else if bump < slots {
            bump
        } else {
            return Ok(None);
        };
        let next = if head != 0 {
            self.next_word(slot).load(Ordering::Relaxed)
        } else {
            0
        };
        if head != 0 && next > slots {
            return Err(ShmError::Corrupted("arena free-list link out of range").into());
        }
        c.j_slot.store(slot, Ordering::Relaxed);
        c.j_head.store(head, Ordering::Relaxed);
        c.j_bump.store(bump, Ordering::Relaxed);
        c.j_live
            .store(c.live.load(Ordering::Relaxed), Ordering::Relaxed);
        // Release: commit point of the journal (partner: the Acquire load in `recover`).
        c.j_op.store(OP_ALLOC, Ordering::Release);
        crate::arena::test_hook();
        let m = self.meta(slot);
        m.hold.store(mine, Ordering::Relaxed);
        m.tag.store(tag, Ordering::Relaxed);
        crate::arena::test_hook(); // slot live, still on the free list / below bump
        if head != 0 {
            c.free_head.store(next, Ordering::Relaxed);
        } else {
            c.bump.store(bump + 1, Ordering::Relaxed);
        }
        c.live.store(
            c.j_live.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        crate::arena::test_hook();
        c.j_op.store(OP_NONE, Ordering::Release);
        let generation = m.generation.load(Ordering::Relaxed);
        // Zero the object bytes (a freed slot holds its last object's bytes), not the record
        // after them. No one else can reach the slot yet: its generation is new to handles
        // only once we return it.
        let p = self.payload(slot);
        for i in 0..(self.geom().class - META) / 8 {
            // SAFETY: inside the payload (tail_range checked: class - 16 bytes), 8-aligned
            // (slots are 32-aligned); atomic, as a hostile process may write there.
            let w =
                unsafe { crate::facade::StdAtomicU64::from_ptr(p.as_ptr().cast::<u64>().add(i)) };
            w.store(0, Ordering::Relaxed);
        }
        Ok(Some((slot, generation)))
    }

    /// Drops one handle of this process; when it was the process's last, removes the process
    /// from the slot's holders, and frees the slot when no holder is left.
    fn release(&self, slot: u32, generation: u32) {
        if self.local_dec(slot) == Some(0) {
            test_hook();
            if let Ok(_g) = self.lock() {
                self.free_locked(slot, generation);
            }
            // Lock failure (timeout): the slot stays an orphan for a later sweep.
        }
    }

    /// Adds a handle of this process to a live slot of generation `generation` holding `tag`
    /// (the first one adds the process to the slot's holders).
    fn retain(&self, slot: u32, generation: u32, tag: u32) -> Result<(), ShmError> {
        let m = self.meta(slot);
        let stale = || ShmError::StaleHandle {
            what: "arena slot generation (the object was freed)",
        };
        let wrong = || ShmError::StaleHandle {
            what: "arena slot type (another type lives there)",
        };
        let mine = self.my_hold();
        self.local_inc(slot, || {
            let mut n = m.hold.load(Ordering::Relaxed);
            // Bounded: each failed CAS means another process changed the word; give up after many.
            for _ in 0..1_000_000 {
                if n == 0 || m.generation.load(Ordering::Acquire) != generation {
                    return Err(stale());
                }
                if m.tag.load(Ordering::Relaxed) != tag {
                    return Err(wrong());
                }
                let n1 = if mine & HOLD_BITS != 0 {
                    n | mine
                } else if n >> TRACKED_PROCS == u64::MAX >> TRACKED_PROCS {
                    return Err(ShmError::Corrupted(
                        "arena slot holder count at its maximum",
                    ));
                } else {
                    n + UNTRACKED_ONE
                };
                // AcqRel: the Acquire sees the allocator's stores under the lock / the last
                // release; a CAS from a non-zero word never resurrects a freed slot.
                match m
                    .hold
                    .compare_exchange_weak(n, n1, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(()),
                    Err(cur) => n = cur,
                }
            }
            Err(ShmError::Corrupted("arena slot holders never settle"))
        })?;
        // Re-check under our hold (the generation cannot change while we hold the slot): a
        // handle of an older generation of a slot this process holds again, or a slot freed and
        // reallocated between the checks and the CAS.
        if m.generation.load(Ordering::Acquire) != generation
            || m.tag.load(Ordering::Relaxed) != tag
        {
            self.release(slot, m.generation.load(Ordering::Relaxed));
            return Err(stale());
        }
        Ok(())
    }

    /// Checks this segment's invariants (takes the lock): the free list is a chain of free
    /// slots below `bump` without cycles, live slots match the counter, no journal pending.
    fn check(&self) -> Result<ArenaStats, ArenaError> {
        let _g = self.lock()?;
        // Holds of processes that died (a forked child that exited without dropping its
        // handles) are not leaks: reclaim them before counting.
        self.reap_dead();
        let c = self.ctl();
        let slots = self.geom().slots;
        let bump = c.bump.load(Ordering::Relaxed);
        if bump > slots || c.j_op.load(Ordering::Relaxed) != OP_NONE {
            return Err(ShmError::Corrupted("arena bump out of range or journal pending").into());
        }
        let mut on_list = vec![false; bump as usize];
        let mut free = 0u64;
        let mut cur = c.free_head.load(Ordering::Relaxed);
        while cur != 0 {
            let s = cur - 1;
            if s >= bump || on_list[s as usize] {
                return Err(ShmError::Corrupted("arena free list: out of range or cycle").into());
            }
            on_list[s as usize] = true;
            if self.meta(s).tag.load(Ordering::Relaxed) != 0 {
                return Err(ShmError::Corrupted("arena free list holds a live slot").into());
            }
            free += 1;
            cur = self.next_word(s).load(Ordering::Relaxed);
        }
        let mut live = 0u64;
        for s in 0..bump {
            let is_live = self.meta(s).tag.load(Ordering::Relaxed) != 0;
            if is_live {
                live += 1;
            } else if !on_list[s as usize] {
                return Err(
                    ShmError::Corrupted("arena slot neither live nor free (leaked)").into(),
                );
            }
        }
        if live != c.live.load(Ordering::Relaxed) as u64 {
            return Err(ShmError::Corrupted("arena live counter disagrees with the slots").into());
        }
        for s in bump..slots {
            if self.meta(s).tag.load(Ordering::Relaxed) != 0 {
                return Err(ShmError::Corrupted("arena slot past bump is live").into());
            }
        }
        Ok(ArenaStats {
            segments: 1,
            slots: slots as u64,
            live,
            free,
            untouched: (slots - bump) as u64,
        })
    }
}

/// Whether [`test_hook`] yields (set by [`set_test_yield`]).
#[allow(clippy::disallowed_types)] // a process-local flag, never in shared memory nor modelled
static TEST_YIELD: crate::facade::StdAtomicBool = crate::facade::StdAtomicBool::new(false);

/// Makes every arena operation yield at its crash points (between journal commit and the
/// metadata stores, and between them and the journal clear), widening the windows a SIGKILL can
/// land in. For the kill tests only.
#[doc(hidden)]
pub fn set_test_yield(on: bool) {
    TEST_YIELD.store(on, crate::facade::StdOrdering::Relaxed);
}

#[allow(clippy::disallowed_types)] // process-local counters for tests
static RECOVERIES: crate::facade::StdAtomicU64 = crate::facade::StdAtomicU64::new(0);
#[allow(clippy::disallowed_types)]
static JOURNAL_REPLAYS: crate::facade::StdAtomicU64 = crate::facade::StdAtomicU64::new(0);

fn c_journal_pending(c: &ArenaCtl) -> bool {
    c.j_op.load(Ordering::Relaxed) != OP_NONE
}

/// How many times this process took an arena lock whose holder had died, and how many of those
/// found a journal to roll back or redo. For the kill tests.
#[doc(hidden)]
pub fn recoveries() -> (u64, u64) {
    (
        RECOVERIES.load(crate::facade::StdOrdering::Relaxed),
        JOURNAL_REPLAYS.load(crate::facade::StdOrdering::Relaxed),
    )
}

/// A crash point (see [`set_test_yield`]).
#[inline]
fn test_hook() {
    if TEST_YIELD.load(crate::facade::StdOrdering::Relaxed) {
        std::thread::yield_now();
    }
}

/// Every arena segment mapped in this process, by segment id: a handle opens its arena once
/// per process, and the fork handler finds every segment. Behind a spin lock, not a `Mutex`:
/// the fork handler and a forked child's first open must never wait for a lock another parent
/// thread held at the fork (the prepare handler takes it, so no one holds it across a fork).
struct ForkRegistry {
    lock: crate::facade::StdAtomicBool,
    segs: std::cell::UnsafeCell<Vec<(u64, Weak<ArenaSeg>)>>,
}

// SAFETY: `segs` is only touched with `lock` held (reg_lock/reg_unlock).
unsafe impl Sync for ForkRegistry {}

static FORK_REG: ForkRegistry = ForkRegistry {
    lock: crate::facade::StdAtomicBool::new(false),
    segs: std::cell::UnsafeCell::new(Vec::new()),
};

fn reg_lock() {
    // Acquire: pairs with reg_unlock's Release (the Vec's contents).
    while FORK_REG
        .lock
        .compare_exchange_weak(false, true, StdOrdering::Acquire, StdOrdering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn reg_unlock() {
    // Release: see reg_lock.
    FORK_REG.lock.store(false, StdOrdering::Release);
}

fn fork_register(seg: &Arc<ArenaSeg>) {
    #[cfg(not(loom))]
    ensure_atfork();
    let id = seg.shm.handle().map_or(0, |h| h.id());
    reg_lock();
    // SAFETY: under the registry lock.
    unsafe { (*FORK_REG.segs.get()).push((id, Arc::downgrade(seg))) };
    reg_unlock();
}

/// Called first thing in `ArenaSeg::drop`: while an entry is registered (and the lock held),
/// the segment's fields are intact.
fn fork_unregister(seg: &ArenaSeg) {
    let p = seg as *const ArenaSeg;
    reg_lock();
    // SAFETY: under the registry lock.
    unsafe { (*FORK_REG.segs.get()).retain(|(_, w)| w.as_ptr() != p) };
    reg_unlock();
}

/// The registered segment `id`, if still alive (under the registry lock).
fn find_registered(id: u64) -> Option<Arc<ArenaSeg>> {
    reg_lock();
    // SAFETY: under the registry lock.
    let found = unsafe { &*FORK_REG.segs.get() }
        .iter()
        .find(|(i, w)| *i == id && w.strong_count() > 0)
        .and_then(|(_, w)| w.upgrade());
    reg_unlock();
    found
}

/// The fork handshake: a word in a MAP_SHARED page the parent and the forked child share.
/// The parent's fork returns only once the child has taken its holds (or 2 s passed), so the
/// parent cannot drop-and-free a slot before the child holds it.
#[cfg(not(loom))]
static HANDSHAKE: StdAtomicPtr<StdAtomicU32> = StdAtomicPtr::new(std::ptr::null_mut());
/// Whether the fork in progress waits for the child (this process holds arena slots).
#[cfg(not(loom))]
static FORK_WAITS: crate::facade::StdAtomicBool = crate::facade::StdAtomicBool::new(false);

#[cfg(not(loom))]
fn ensure_atfork() {
    static ONCE: crate::facade::StdAtomicBool = crate::facade::StdAtomicBool::new(false);
    // Relaxed: dedup only; the handlers read HANDSHAKE, published below before registration.
    if ONCE.swap(true, StdOrdering::Relaxed) {
        return;
    }
    if let Ok(page) = multiproc_shm::sys::map_shared_anon(4096) {
        // Release: the handlers load it with Acquire.
        HANDSHAKE.store(page.as_ptr().cast(), StdOrdering::Release);
    }
    // SAFETY: plain extern "C" fns; see each for what they touch.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

#[cfg(not(loom))]
fn handshake() -> Option<&'static StdAtomicU32> {
    // SAFETY: null, or a page mapped once and never unmapped; a u32 at its start is aligned.
    unsafe { HANDSHAKE.load(StdOrdering::Acquire).as_ref() }
}

#[cfg(not(loom))]
extern "C" fn fork_prepare() {
    reg_lock();
    // SAFETY: under the registry lock; every pointer is a live ArenaSeg (unregistered under
    // the lock before it is freed).
    let segs = unsafe { &*FORK_REG.segs.get() };
    let any = segs.iter().any(|(_, w)| {
        // SAFETY: a registered segment's fields are intact (see fork_unregister).
        let seg = unsafe { &*w.as_ptr() };
        !seg.local.load(StdOrdering::Acquire).is_null()
    });
    let waits = any && handshake().is_some();
    FORK_WAITS.store(waits, StdOrdering::Relaxed);
    if let Some(h) = handshake() {
        // SeqCst: before the fork; the child sets it to 1 after adopting.
        h.store(0, StdOrdering::SeqCst);
    }
}

#[cfg(not(loom))]
extern "C" fn fork_parent() {
    if FORK_WAITS.load(StdOrdering::Relaxed)
        && let Some(h) = handshake()
    {
        let t = std::time::Instant::now();
        let mut spins = 0u32;
        // SeqCst: pairs with the child's store. Bounded: a child killed before adopting costs
        // 2 s here, never a hang.
        while h.load(StdOrdering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(2) {
            spins += 1;
            if spins < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
    reg_unlock();
}

#[cfg(not(loom))]
extern "C" fn fork_child() {
    // SAFETY: the registry lock is held (taken in fork_prepare by this thread, copied into
    // the child); every pointer is a live ArenaSeg (see fork_prepare).
    let segs = unsafe { &*FORK_REG.segs.get() };
    for (_, w) in segs {
        // SAFETY: a registered segment's fields are intact (see fork_unregister).
        unsafe { &*w.as_ptr() }.adopt_after_fork();
    }
    if let Some(h) = handshake() {
        // SeqCst: see fork_parent.
        h.store(1, StdOrdering::SeqCst);
    }
    reg_unlock();
}

/// The process's one `ArenaSeg` for a segment handle (mapped on first use). One per process
/// matters: a process's holds are counted in its `ArenaSeg`, under one table entry.
fn open_seg(h: &SegmentHandle) -> Result<Arc<ArenaSeg>, ShmError> {
    if let Some(seg) = find_registered(h.id()) {
        return Ok(seg);
    }
    // Mapped outside the registry lock (syscalls); two threads opening the same segment at
    // once both map it, and the second to register uses the first's (dropping its own).
    let shm = Shared::<ArenaCtl>::open_handle(h, TypeFingerprint::of::<ArenaCtl>())?;
    let seg = Arc::new(ArenaSeg::wrap(shm));
    #[cfg(not(loom))]
    ensure_atfork();
    reg_lock();
    // SAFETY: under the registry lock.
    let segs = unsafe { &mut *FORK_REG.segs.get() };
    let existing = segs
        .iter()
        .find(|(i, w)| *i == h.id() && w.strong_count() > 0)
        .and_then(|(_, w)| w.upgrade());
    if existing.is_none() {
        segs.push((h.id(), Arc::downgrade(&seg)));
    }
    reg_unlock();
    // `seg`, if unused, drops here, outside the registry lock (its Drop takes it).
    Ok(existing.unwrap_or(seg))
}

/// How another process reaches an arena object: its arena segment, slot and generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHandle {
    /// The arena segment (an fd handle registers with the spawner's fd collection once per
    /// arena: the child opens each arena once).
    pub arena: SegmentHandle,
    /// The slot index.
    pub slot: u32,
    /// The slot's generation when the handle was made.
    pub generation: u32,
    /// The object's type tag (kind + element type).
    pub tag: u32,
}

/// A process's reference to one live arena slot; frees the slot (if no other process holds
/// it) on drop. Clones of an object in one process share one `SlotRef` (one cross-process ref).
pub(crate) struct SlotRef {
    seg: Arc<ArenaSeg>,
    slot: u32,
    generation: u32,
    tag: u32,
    ptr: NonNull<u8>,
}

// SAFETY: the pointer is into the mapping `seg` keeps alive; the object behind it is shared
// memory accessed only through atomics or under its lock; SlotRef itself is immutable.
unsafe impl Send for SlotRef {}
// SAFETY: as above.
unsafe impl Sync for SlotRef {}

impl Drop for SlotRef {
    fn drop(&mut self) {
        // In a forked child this releases the child's own hold (taken for it at fork by
        // `adopt_after_fork`), never the parent's.
        self.seg.release(self.slot, self.generation);
    }
}

impl SlotRef {
    /// The object's first byte (aligned to the slot size up to 128, at least 32).
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The bytes the object may use: the slot's size less its 16-byte record.
    pub(crate) fn size(&self) -> usize {
        self.seg.geom().class - META
    }

    /// The handle another process opens.
    pub(crate) fn handle(&self) -> SlotHandle {
        SlotHandle {
            arena: self
                .seg
                .shm
                .handle()
                .expect("arena segments are segment-backed"),
            slot: self.slot,
            generation: self.generation,
            tag: self.tag,
        }
    }

    /// The arena segment.
    pub(crate) fn segment(&self) -> &multiproc_shm::Segment {
        self.seg
            .shm
            .segment()
            .expect("arena segments are segment-backed")
    }

    /// Opens a handle: maps its arena (once per process), checks the slot index, generation
    /// and type tag, and takes a reference. `size`/`align`: the object's, checked against the
    /// slot.
    pub(crate) fn open(h: &SlotHandle, tag: u32, size: usize) -> Result<SlotRef, ShmError> {
        if h.tag != tag {
            return Err(ShmError::StaleHandle {
                what: "arena object type (handle of another type)",
            });
        }
        let seg = open_seg(&h.arena)?;
        let g = seg.geom();
        if h.slot >= g.slots {
            return Err(ShmError::OutOfRange {
                what: "arena slot index",
                found: h.slot as u64,
                limit: g.slots as u64,
            });
        }
        if size > g.class - META {
            return Err(ShmError::OutOfRange {
                what: "object size for the arena slot",
                found: size as u64,
                limit: (g.class - META) as u64,
            });
        }
        seg.retain(h.slot, h.generation, tag)?;
        let ptr = seg.payload(h.slot);
        Ok(SlotRef {
            seg,
            slot: h.slot,
            generation: h.generation,
            tag,
            ptr,
        })
    }
}

struct ClassList {
    segs: Vec<Arc<ArenaSeg>>,
    /// Where the last allocation succeeded.
    hint: usize,
}

/// A set of arena segments in this process (one list per size class). Cheap to clone (shared).
/// Forked children inherit it; handles of its objects can go to any process.
#[derive(Clone)]
pub struct Arena {
    classes: Arc<[Mutex<ClassList>; NCLASS]>,
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("segments", &self.segments())
            .finish()
    }
}

impl Arena {
    /// An empty arena (segments are created on first use, per size class).
    pub fn new() -> Arena {
        Arena {
            classes: Arc::new(std::array::from_fn(|_| {
                Mutex::new(ClassList {
                    segs: Vec::new(),
                    hint: 0,
                })
            })),
        }
    }

    /// This process's arena: where [`crate::Value::new`] and [`crate::RawValue::new`] place
    /// their objects. A forked child gets a fresh one on first use (its parent's may have been
    /// mid-allocation in another thread at the fork, holding a process-local lock the child
    /// could never take); the objects it inherited stay where they are.
    pub fn global() -> &'static Arena {
        struct G {
            me: u64,
            arena: Arena,
        }
        static CUR: StdAtomicPtr<G> = StdAtomicPtr::new(std::ptr::null_mut());
        let me = crate::ident::process().1;
        loop {
            // Acquire: pairs with the AcqRel publication below.
            let p = CUR.load(StdOrdering::Acquire);
            // SAFETY: non-null pointers come from Box::into_raw below and are never freed (a
            // forked parent's is leaked in the child).
            if let Some(g) = unsafe { p.as_ref() }
                && g.me == me
            {
                return &g.arena;
            }
            let fresh = Box::into_raw(Box::new(G {
                me,
                arena: Arena::new(),
            }));
            // AcqRel: publishes the new arena; sees another thread's on failure.
            if CUR
                .compare_exchange(p, fresh, StdOrdering::AcqRel, StdOrdering::Acquire)
                .is_ok()
            {
                // SAFETY: just published, never freed.
                return unsafe { &(*fresh).arena };
            }
            // SAFETY: ours was never published.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }

    /// Whether an object of `size` bytes (with slots at least `min` bytes) fits an arena slot.
    pub fn fits(size: usize, min: usize) -> bool {
        class_index(size, min).is_some()
    }

    /// Allocates a zeroed slot of at least `size` bytes (and at least `min`, to pad hot
    /// objects to their own cache line) for an object tagged `tag`.
    pub(crate) fn alloc(&self, size: usize, min: usize, tag: u32) -> Result<SlotRef, ArenaError> {
        let ci = class_index(size, min).ok_or(ShmError::OutOfRange {
            what: "object size for an arena",
            found: size as u64,
            limit: MAX_OBJECT as u64,
        })?;
        let mut list = self.classes[ci].lock().unwrap_or_else(|e| e.into_inner());
        let n = list.segs.len();
        for k in 0..n {
            let i = (list.hint + k) % n;
            let seg = Arc::clone(&list.segs[i]);
            // A segment another process corrupted (or whose lock is wedged) is skipped: its
            // objects answer with errors, the arena carries on in the others or a new one.
            if let Ok(Some((slot, generation))) = seg.alloc(tag) {
                list.hint = i;
                return Ok(slot_ref(seg, slot, generation, tag));
            }
        }
        let seg = Arc::new(ArenaSeg::create(MIN_SLOT << ci)?);
        fork_register(&seg);
        list.segs.push(Arc::clone(&seg));
        list.hint = list.segs.len() - 1;
        let (slot, generation) = seg
            .alloc(tag)?
            .ok_or(ShmError::Corrupted("a new arena segment is full"))?;
        Ok(slot_ref(seg, slot, generation, tag))
    }

    /// Arena segments this arena created.
    pub fn segments(&self) -> usize {
        self.classes
            .iter()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).segs.len())
            .sum()
    }

    /// Reclaims the slots of processes that died holding them: every table entry naming a dead
    /// process (pid + start time) is cleared from each slot's holders, slots no one else holds
    /// are freed, and orphans (a holder died between its last release and the free) too.
    /// Allocation does this by itself when a segment is full; call it to reclaim at once.
    /// Returns the slots freed.
    pub fn reclaim(&self) -> Result<u64, ArenaError> {
        let mut freed = 0;
        for c in self.classes.iter() {
            let segs = c.lock().unwrap_or_else(|e| e.into_inner()).segs.clone();
            for s in segs {
                let _g = s.lock()?;
                let live0 = s.ctl().live.load(Ordering::Relaxed);
                s.reap_dead();
                s.sweep();
                freed += u64::from(live0.saturating_sub(s.ctl().live.load(Ordering::Relaxed)));
            }
        }
        Ok(freed)
    }

    /// Checks every segment's invariants (free list chained without cycles over free slots,
    /// live counter equal to the live slots, no journal pending), repairing first after a
    /// holder died; returns the totals.
    pub fn check(&self) -> Result<ArenaStats, ArenaError> {
        let mut t = ArenaStats::default();
        for c in self.classes.iter() {
            let segs = c.lock().unwrap_or_else(|e| e.into_inner()).segs.clone();
            for s in segs {
                let st = s.check()?;
                t.segments += 1;
                t.slots += st.slots;
                t.live += st.live;
                t.free += st.free;
                t.untouched += st.untouched;
            }
        }
        Ok(t)
    }
}

fn slot_ref(seg: Arc<ArenaSeg>, slot: u32, generation: u32, tag: u32) -> SlotRef {
    // The allocation put this process in the slot's holders: count the handle locally.
    let _ = seg.local_inc(slot, || Ok(()));
    let ptr = seg.payload(slot);
    SlotRef {
        seg,
        slot,
        generation,
        tag,
        ptr,
    }
}

/// An arena allocation's error as the [`ShmError`] that the one-segment constructors
/// (`Lock::new`, `Event::new`, ...) return: a segment error stays itself; a failure of the
/// arena's lock (its 10 s timeout, an OS error) is `ShmError::Os { op: "arena lock", .. }`
/// with the lock error as its source.
pub(crate) fn arena_error(e: CreateError) -> ShmError {
    match e {
        CreateError::Shm(e) | CreateError::Arena(ArenaError::Shm(e)) => e,
        CreateError::Arena(ArenaError::Lock(m)) => ShmError::Os {
            op: "arena lock",
            source: std::io::Error::other(m),
        },
        other => ShmError::Os {
            op: "arena lock",
            source: std::io::Error::other(other),
        },
    }
}

/// What keeps an object's memory alive: its own segment, or a slot of an arena.
pub(crate) enum Backing<L: SharedLayout> {
    /// One segment for the object.
    Own(Shared<L>),
    /// An arena slot (clones in this process share the one reference).
    Slot(Arc<SlotRef>),
}

impl<L: SharedLayout> Clone for Backing<L> {
    fn clone(&self) -> Self {
        match self {
            Backing::Own(s) => Backing::Own(s.clone()),
            Backing::Slot(s) => Backing::Slot(Arc::clone(s)),
        }
    }
}

impl<L: SharedLayout> Backing<L> {
    /// The object's layout.
    pub(crate) fn ptr(&self) -> NonNull<L> {
        match self {
            Backing::Own(s) => s.as_ptr(),
            Backing::Slot(s) => s.ptr().cast(),
        }
    }

    /// The segment holding the object (an arena's for an arena object).
    pub(crate) fn segment(&self) -> &multiproc_shm::Segment {
        match self {
            Backing::Own(s) => crate::shared::segment_of(s),
            Backing::Slot(s) => s.segment(),
        }
    }

    /// The wire form of a handle.
    pub(crate) fn wire(&self) -> ObjectHandle {
        match self {
            Backing::Own(s) => ObjectHandle::Segment(crate::shared::segment_of(s).handle()),
            Backing::Slot(s) => ObjectHandle::Slot(s.handle()),
        }
    }

    /// Places `value` in a new slot of `arena` (slot at least `min` bytes).
    pub(crate) fn new_in(
        arena: &Arena,
        min: usize,
        fp: &TypeFingerprint,
        value: L,
    ) -> Result<Self, CreateError> {
        Self::new_in_sized(arena, std::mem::size_of::<L>(), min, fp, value)
    }

    /// [`Backing::new_in`] for an object of `size >= size_of::<L>()` bytes (a head `L`
    /// followed by a tail the caller fills before sharing the handle).
    pub(crate) fn new_in_sized(
        arena: &Arena,
        size: usize,
        min: usize,
        fp: &TypeFingerprint,
        value: L,
    ) -> Result<Self, CreateError> {
        const { assert!(std::mem::align_of::<L>() <= 128) };
        let tag = type_tag(L::KIND, fp);
        let slot = arena.alloc(size.max(std::mem::size_of::<L>()), min, tag)?;
        debug_assert!(slot.size() >= std::mem::size_of::<L>());
        // SAFETY: the slot's object bytes are at least size_of::<L>() (class >= size + 16),
        // aligned to the slot size up to 128 (a power of two > size_of::<L>() >= align_of::<L>(),
        // at a 128-aligned base; align <= 128 checked above), and no other handle names it yet.
        unsafe { slot.ptr().cast::<L>().as_ptr().write(value) };
        Ok(Backing::Slot(Arc::new(slot)))
    }

    /// Opens an arena object's handle.
    pub(crate) fn open_slot(h: &SlotHandle, fp: &TypeFingerprint) -> Result<Self, ShmError> {
        let slot = SlotRef::open(h, type_tag(L::KIND, fp), std::mem::size_of::<L>())?;
        Ok(Backing::Slot(Arc::new(slot)))
    }

    /// The arena handle, for an arena object.
    pub(crate) fn slot_handle(&self) -> Option<SlotHandle> {
        match self {
            Backing::Own(_) => None,
            Backing::Slot(s) => Some(s.handle()),
        }
    }
    /// The slot's size in bytes, for an arena object.
    pub(crate) fn slot_size(&self) -> Option<usize> {
        match self {
            Backing::Own(_) => None,
            Backing::Slot(s) => Some(s.size()),
        }
    }
}

/// How an object (own segment or arena slot) is sent to another process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectHandle {
    /// An object with its own segment.
    Segment(SegmentHandle),
    /// An object in an arena slot.
    Slot(SlotHandle),
}

/// A small layout-only object (Lock, RLock, Semaphore, Event): a pointer to its state, the
/// geometry validated once, and what keeps the memory mapped (its own segment or an arena slot).
pub(crate) struct Obj<L: SharedLayout>
where
    L::Geometry: Copy,
{
    ptr: NonNull<L>,
    geom: L::Geometry,
    backing: Backing<L>,
}

// SAFETY: `ptr` points into the memory `backing` keeps mapped; `L: SharedLayout` is Send + Sync
// (shared memory built for sharing: atomics, or cells reached under a lock).
unsafe impl<L: SharedLayout> Send for Obj<L> where L::Geometry: Copy {}
// SAFETY: as above.
unsafe impl<L: SharedLayout> Sync for Obj<L> where L::Geometry: Copy {}

impl<L: SharedLayout> Clone for Obj<L>
where
    L::Geometry: Copy,
{
    fn clone(&self) -> Self {
        Obj {
            ptr: self.ptr,
            geom: self.geom,
            backing: self.backing.clone(),
        }
    }
}

impl<L: SharedLayout> Obj<L>
where
    L::Geometry: Copy,
{
    /// An object with its own segment.
    pub(crate) fn own(shm: Shared<L>) -> Self {
        Obj {
            ptr: shm.as_ptr(),
            geom: *shm.geometry(),
            backing: Backing::Own(shm),
        }
    }

    /// A new object holding `value` in a 64-byte slot (at least) of this process's arena
    /// ([`Arena::global`]): what `Lock::new`, `Event::new`, ... do. Returns the `ShmError`
    /// those constructors return (see [`arena_error`]).
    pub(crate) fn new_default(value: L) -> Result<Self, ShmError> {
        Self::new_in(Arena::global(), 64, value).map_err(arena_error)
    }

    /// A new object holding `value` in a slot of `arena` (at least `min` bytes: 64 pads a hot
    /// futex word to its own cache line).
    pub(crate) fn new_in(arena: &Arena, min: usize, value: L) -> Result<Self, CreateError> {
        let backing = Backing::new_in(arena, min, &TypeFingerprint::of::<L>(), value)?;
        Ok(Self::from_slot(backing)?)
    }

    fn from_slot(backing: Backing<L>) -> Result<Self, ShmError> {
        let ptr = backing.ptr();
        // SAFETY: the slot holds an `L` (its type tag was checked, or we just wrote it), mapped
        // while `backing` lives; `L` is valid for any bytes (SharedLayout contract 1-2).
        let geom = unsafe { ptr.as_ref() }.validate(0)?;
        Ok(Obj { ptr, geom, backing })
    }

    /// Opens an arena object's handle ([`ShmError::StaleHandle`] if it was freed).
    pub(crate) fn open_slot(h: &SlotHandle) -> Result<Self, ShmError> {
        Self::from_slot(Backing::open_slot(h, &TypeFingerprint::of::<L>())?)
    }

    /// Opens either form of handle.
    pub(crate) fn open_wire(h: &ObjectHandle) -> Result<Self, ShmError> {
        match h {
            ObjectHandle::Segment(h) => Ok(Self::own(crate::shared::open_handle(h)?)),
            ObjectHandle::Slot(h) => Self::open_slot(h),
        }
    }

    /// The shared state.
    #[inline]
    pub(crate) fn get(&self) -> &L {
        // SAFETY: `ptr` points into memory `backing` keeps alive as long as `self`; `L` is
        // valid for any bytes and only shared-safe fields (SharedLayout contract).
        unsafe { self.ptr.as_ref() }
    }

    /// The geometry validated when this handle was made.
    #[inline]
    pub(crate) fn geometry(&self) -> &L::Geometry {
        &self.geom
    }

    /// Keeps the memory mapped (for guards).
    #[inline]
    pub(crate) fn keep_alive(&self) -> multiproc_shm::KeepAlive {
        match &self.backing {
            Backing::Own(s) => s.keep_alive(),
            Backing::Slot(s) => {
                multiproc_shm::KeepAlive::new(Arc::clone(s) as Arc<dyn Send + Sync>)
            }
        }
    }

    /// The segment holding the object (an arena's for an arena object).
    pub(crate) fn segment(&self) -> &multiproc_shm::Segment {
        self.backing.segment()
    }

    /// The wire form of a handle.
    pub(crate) fn wire(&self) -> ObjectHandle {
        self.backing.wire()
    }

    /// The arena handle, for an arena object.
    pub(crate) fn slot_handle(&self) -> Option<SlotHandle> {
        self.backing.slot_handle()
    }
}

/// Implements serde for a handle type with an `obj: Obj<_>` field and a `from_obj(Obj<_>)`
/// constructor: it serializes as an [`ObjectHandle`] (own segment or arena slot).
macro_rules! serde_as_object {
    ($ty:ty, $layout:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.obj.wire(), s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let h = <$crate::arena::ObjectHandle as serde::Deserialize>::deserialize(d)?;
                let obj = $crate::arena::Obj::<$layout>::open_wire(&h)
                    .map_err(<D::Error as serde::de::Error>::custom)?;
                Ok(<$ty>::from_obj(obj))
            }
        }
    };
}
pub(crate) use serde_as_object;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_arena_of_another_layout_is_refused_on_open() {
        let seg = ArenaSeg::create(64).unwrap();
        let h = seg.shm.handle().unwrap();
        // A fresh mapping validates (the layout this build writes).
        assert!(Shared::<ArenaCtl>::open_handle(&h, TypeFingerprint::of::<ArenaCtl>()).is_ok());
        // Layout 1 (the first slices') had padding, 0, where the version now is.
        seg.ctl().layout.store(0, Ordering::Relaxed);
        let r = Shared::<ArenaCtl>::open_handle(&h, TypeFingerprint::of::<ArenaCtl>());
        assert!(
            matches!(
                r,
                Err(ShmError::VersionMismatch {
                    found: 0,
                    expected: ARENA_LAYOUT
                })
            ),
            "{:?}",
            r.err()
        );
    }

    #[test]
    fn an_arena_lock_failure_is_a_clear_shm_error() {
        let e = arena_error(ArenaError::Lock(crate::mutex::MutexError::Timeout).into());
        assert!(
            matches!(
                e,
                ShmError::Os {
                    op: "arena lock",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "arena lock failed: timed out waiting for the lock"
        );
        let e = arena_error(ShmError::Corrupted("x").into());
        assert!(matches!(e, ShmError::Corrupted("x")), "{e:?}");
    }

    #[test]
    fn a_value_u64_takes_one_64_byte_slot_record_included() {
        // Value<u64>: robust mutex (16 B) + value (8 B) = 24 B, + 16 B record <= 64.
        assert_eq!(class_index(24, 64), Some(1)); // 32 << 1 = 64
        assert_eq!(MIN_SLOT << class_index(24, 64).unwrap(), 64);
        // RawValue<u64>: 8 B + 16 B record: the 32-byte class.
        assert_eq!(MIN_SLOT << class_index(8, 16).unwrap(), 32);
        // The object and its record must fit: 49 bytes need a 128-byte slot.
        assert_eq!(MIN_SLOT << class_index(49, 64).unwrap(), 128);
        assert_eq!(class_index(MAX_OBJECT, 64), Some(NCLASS - 1));
        assert_eq!(class_index(MAX_OBJECT + 1, 64), None);
        assert_eq!(class_index(usize::MAX, 64), None);
    }
}
