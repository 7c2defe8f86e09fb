//! `Semaphore` and `BoundedSemaphore`: process-shared counting semaphores.
//!
//! Algorithm: one `u64` word holds the count (low 32 bits) and a bitmap (high 32 bits) of which
//! holder slots currently hold a unit; waiters park on a separate `u32` sequence word `seq`
//! (an eventcount) that a release bumps only when `waiters > 0`, so uncontended acquire and
//! release are one CAS each and no syscall.
//!
//! Guards record their holder, so a holder killed by SIGKILL does not leak its unit:
//! 1. reserve a free slot `i` of the 32-slot table: CAS `slot[i]: 0 -> me` (pid + start time);
//! 2. take a unit *and* mark slot `i` as holding it in one CAS: `(c, bits) -> (c-1, bits|1<<i)`;
//! 3. release: `(c, bits) -> (c+1, bits&!(1<<i))`, then free the slot.
//!
//! Death at any point leaves either a reserved slot without its bit (nothing to give back) or a
//! slot with its bit (one unit to give back) — never an ambiguous state. Waiters, after each
//! 20 ms park, look for slots whose holder is dead: a reclaimer first CASes the slot from the
//! dead identity to *its own* identity with a flag bit (so a second reclaimer, or a new holder,
//! cannot race it; if the reclaimer dies too the next one takes over the same way), then gives the
//! unit back if the bit is set, then frees the slot.
//!
//! Plain `acquire()` is not recorded (as in Python, a unit may be released by another process),
//! so a process dying after `acquire()` keeps its unit.
//!
//! ```
//! use multiproc_sync::{Semaphore, BoundedSemaphore};
//! let s = Semaphore::new(2).unwrap();
//! assert!(s.acquire(true));
//! {
//!     let _g = s.acquire_guard().unwrap();
//!     assert_eq!(s.get_value(), 0);
//!     assert!(!s.try_acquire());
//! }
//! s.release().unwrap();
//! assert_eq!(s.get_value(), 2);
//! let b = BoundedSemaphore::new(1).unwrap();
//! assert!(b.release().is_err()); // over-release
//! ```

use crate::arena::{Arena, Obj, SlotHandle, serde_as_object};
use crate::error::CreateError;
use crate::facade::{AtomicU32, AtomicU64, Ordering};
use crate::futex;
use crate::ident;
use crate::shared::{TICK, block_on, deadline_after};
use multiproc_shm::{ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError};
use std::ops::Deref;
use std::time::{Duration, Instant};

/// How many guards can hold units at once.
pub const HOLDER_SLOTS: usize = 32;

const COUNT_MASK: u64 = 0xFFFF_FFFF;

/// Errors of semaphore operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SemaphoreError {
    /// A bounded semaphore released above its initial value, or a count past `u32::MAX`.
    #[error("semaphore released too many times")]
    OverRelease,
    /// No unit became free within the timeout.
    #[error("timed out waiting for the semaphore")]
    Timeout,
    /// No unit free (non-blocking form).
    #[error("semaphore has no free unit")]
    WouldBlock,
    /// Every holder slot is in use by a guard.
    #[error("all {HOLDER_SLOTS} holder slots are in use by guards")]
    HolderTableFull,
}

/// Shared state of a [`Semaphore`] (public for loom models).
#[doc(hidden)]
#[repr(C)]
pub struct SemState {
    state: AtomicU64,
    seq: AtomicU32,
    waiters: AtomicU32,
    bound: AtomicU32,
    bounded: AtomicU32,
    slots: [AtomicU64; HOLDER_SLOTS],
}

/// What a [`Semaphore`] validated once and then uses locally: its bound, if bounded.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemGeometry {
    /// `Some(initial value)` for a [`BoundedSemaphore`].
    pub bound: Option<u32>,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern is a valid state; a corrupted count or
// slot gives errors, lost units or timeouts), align 8 <= 256, no Drop. Slot indexes are taken
// modulo the compile-time HOLDER_SLOTS; the bound is validated once and used from the local copy.
unsafe impl SharedLayout for SemState {
    const KIND: ObjectKind = ObjectKind::Semaphore;
    type Geometry = SemGeometry;
    fn validate(&self, _tail_len: usize) -> Result<SemGeometry, ShmError> {
        Ok(self.geometry())
    }
}

impl SemState {
    /// A semaphore with `value` units; `bounded` makes releases above `value` an error.
    pub fn new(value: u32, bounded: bool) -> Self {
        SemState {
            state: AtomicU64::new(u64::from(value)),
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            bound: AtomicU32::new(value),
            bounded: AtomicU32::new(u32::from(bounded)),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Reads the bound (what `validate` does on open; any value is acceptable: it only limits
    /// releases). Objects call this once and keep the result.
    pub fn geometry(&self) -> SemGeometry {
        // Relaxed: written once by the creator before Ready (the header's Ready flag orders it).
        let bounded = self.bounded.load(Ordering::Relaxed) != 0;
        let bound = self.bound.load(Ordering::Relaxed);
        SemGeometry {
            bound: bounded.then_some(bound),
        }
    }

    /// Current count.
    pub fn value(&self) -> u32 {
        (self.state.load(Ordering::Relaxed) & COUNT_MASK) as u32
    }

    /// One attempt to take a unit, marking `bit` (0 for anonymous). Err(seq value) on failure.
    #[inline]
    fn try_take(&self, bit: u64) -> Result<(), u32> {
        // SeqCst: load half of the store-load pattern with `waiters` (see shared::block_on);
        // seq is read before the state so a release after our failed read changes it.
        let v = self.seq.load(Ordering::SeqCst);
        let mut s = self.state.load(Ordering::SeqCst);
        loop {
            if s & COUNT_MASK == 0 {
                return Err(v);
            }
            // SeqCst: Acquire partner of the releasing CAS (what the releaser did before
            // happens-before our use of the unit), and part of the store-load pattern.
            match self.state.compare_exchange_weak(
                s,
                (s - 1) | bit,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Ok(()),
                Err(x) => s = x,
            }
        }
    }

    fn acquire_bit(&self, bit: u64, deadline: Option<Instant>) -> bool {
        if self.try_take(bit).is_ok() {
            return true;
        }
        self.acquire_slow(bit, deadline)
    }

    #[cold]
    fn acquire_slow(&self, bit: u64, deadline: Option<Instant>) -> bool {
        let r = block_on(
            &self.seq,
            &self.waiters,
            deadline,
            Some(TICK),
            || self.try_take(bit),
            || {
                self.reclaim_dead();
                self.try_take(bit).ok()
            },
        );
        if r.is_err() && self.value() > 0 {
            // We may have consumed a wake meant for a unit now free: pass it on.
            self.notify();
        }
        r.is_ok()
    }

    /// Anonymous acquire (`deadline` None = forever).
    pub fn acquire(&self, deadline: Option<Instant>) -> bool {
        self.acquire_bit(0, deadline)
    }

    /// Anonymous non-blocking acquire.
    pub fn try_acquire(&self) -> bool {
        self.try_take(0).is_ok()
    }

    /// Anonymous release.
    pub fn release(&self, g: SemGeometry) -> Result<(), SemaphoreError> {
        self.give_back(0, g)?;
        Ok(())
    }

    /// Adds a unit and clears `bit`.
    fn give_back(&self, bit: u64, g: SemGeometry) -> Result<(), SemaphoreError> {
        let limit = g.bound.unwrap_or(u32::MAX);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if (s & COUNT_MASK) as u32 >= limit {
                return Err(SemaphoreError::OverRelease);
            }
            // SeqCst: Release for the next taker, and the store half of the store-load
            // pattern with `waiters` (loaded in notify).
            match self.state.compare_exchange_weak(
                s,
                (s + 1) & !bit,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        self.notify();
        Ok(())
    }

    #[inline]
    fn notify(&self) {
        // SeqCst: load half of the store-load pattern (see shared::block_on).
        if self.waiters.load(Ordering::SeqCst) > 0 {
            // SeqCst: a waiter that read the old seq before failing now sees it changed.
            self.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(&self.seq, 1);
        }
    }

    /// Reserves a holder slot for `me`. Returns its index.
    fn reserve(&self, me: u64) -> Option<usize> {
        (0..HOLDER_SLOTS).find(|&i| {
            // Relaxed probe; Acquire on the CAS pairs with the Release store that freed the slot.
            self.slots[i].load(Ordering::Relaxed) == 0
                && self.slots[i]
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        })
    }

    fn unreserve(&self, i: usize) {
        // Release: the slot's reuse by another reserver comes after our use.
        self.slots[i % HOLDER_SLOTS].store(0, Ordering::Release);
    }

    fn slot_bit(i: usize) -> u64 {
        1u64 << (32 + (i % HOLDER_SLOTS))
    }

    /// Guard acquire for packed identity `me`. Returns the slot index.
    pub fn acquire_guarded(
        &self,
        me: u64,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<usize, SemaphoreError> {
        let i = self.reserve(me).ok_or(SemaphoreError::HolderTableFull)?;
        let bit = Self::slot_bit(i);
        let ok = if block {
            self.acquire_bit(bit, deadline)
        } else {
            self.try_take(bit).is_ok()
        };
        if ok {
            Ok(i)
        } else {
            self.unreserve(i);
            Err(if block {
                SemaphoreError::Timeout
            } else {
                SemaphoreError::WouldBlock
            })
        }
    }

    /// Guard release of slot `i`.
    pub fn release_guarded(&self, i: usize, g: SemGeometry) {
        // Cannot over-release: the unit was taken by this guard.
        let _ = self.give_back(Self::slot_bit(i), g);
        self.unreserve(i);
    }

    /// Gives back the units of dead guard holders. Returns how many slots it freed.
    pub fn reclaim_dead(&self) -> usize {
        let (my_pid, me) = ident::process();
        let mut n = 0;
        for i in 0..HOLDER_SLOTS {
            // Relaxed probe; the CAS decides.
            let s = self.slots[i].load(Ordering::Relaxed);
            if s == 0 || ident::unpack(s).pid == my_pid || ident::packed_alive(s) {
                continue;
            }
            // AcqRel: we take the slot over exclusively from a dead process (Acquire: its
            // writes before death; Release: publishes our claim to other reclaimers).
            if self.slots[i]
                .compare_exchange(s, me | ident::FLAG_BIT, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let bit = Self::slot_bit(i);
            // SeqCst: as in give_back (store-load with waiters).
            let mut st = self.state.load(Ordering::SeqCst);
            while st & bit != 0 {
                match self.state.compare_exchange_weak(
                    st,
                    (st + 1) & !bit,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => {
                        self.notify();
                        break;
                    }
                    Err(x) => st = x,
                }
            }
            self.unreserve(i);
            n += 1;
        }
        n
    }
}

/// A process-shared counting semaphore (Python's `multiprocessing.Semaphore`).
#[derive(Clone)]
pub struct Semaphore {
    obj: Obj<SemState>,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.get_value())
            .finish()
    }
}

serde_as_object!(Semaphore, SemState);

impl Semaphore {
    fn from_shm(shm: Shared<SemState>) -> Self {
        Self::from_obj(Obj::own(shm))
    }

    fn from_obj(obj: Obj<SemState>) -> Self {
        Semaphore { obj }
    }

    /// A new semaphore with `value` units in a slot of `arena` (one fd and mapping per arena segment, not per object;
    /// the slot is padded to at least 64 bytes so two hot futex words never share a cache line).
    /// See [`crate::arena`] for when the slot is freed.
    pub fn new_in(arena: &Arena, value: u32) -> Result<Semaphore, CreateError> {
        Ok(Semaphore::from_obj(Obj::new_in(
            arena,
            64,
            SemState::new(value, false),
        )?))
    }

    /// Opens an arena semaphore's handle ([`ShmError::StaleHandle`] if it was freed, or of another
    /// kind).
    pub fn open_slot(handle: &SlotHandle) -> Result<Semaphore, ShmError> {
        Ok(Semaphore::from_obj(Obj::open_slot(handle)?))
    }

    /// The arena handle of an arena semaphore (`None` for one with its own segment).
    pub fn slot_handle(&self) -> Option<SlotHandle> {
        self.obj.slot_handle()
    }

    /// A semaphore with `value` units, in a slot of this process's arena ([`crate::Arena::global`]): one fd and
    /// mapping per arena segment, not per object, and a 64-byte slot, so two hot futex words
    /// never share a cache line. Inherited by forked children (each holds the slot from the fork
    /// on); spawned children get it by serializing it. An arena lock that cannot be taken maps
    /// to `ShmError::Os { op: "arena lock", .. }`. `handle()`/`segment()` then name the whole
    /// arena segment: use `slot_handle()` or serde to reach the object, or
    /// [`Semaphore::new_segment`] for a segment of its own.
    pub fn new(value: u32) -> Result<Semaphore, ShmError> {
        Ok(Self::from_obj(Obj::new_default(SemState::new(
            value, false,
        ))?))
    }

    /// A semaphore with `value` units in an anonymous segment of its own (what
    /// [`Semaphore::new`] did before arenas).
    pub fn new_segment(value: u32) -> Result<Semaphore, ShmError> {
        Ok(Self::from_shm(crate::shared::create(
            None,
            SemState::new(value, false),
        )?))
    }

    /// A semaphore in `/dev/shm/multiproc.NAME`.
    pub fn create_named(name: &str, value: u32) -> Result<Semaphore, ShmError> {
        Ok(Self::from_shm(crate::shared::create(
            Some(name),
            SemState::new(value, false),
        )?))
    }

    /// Opens a named semaphore (bounded or not).
    pub fn open_named(name: &str) -> Result<Semaphore, ShmError> {
        Ok(Self::from_shm(crate::shared::open_named(name)?))
    }

    /// Opens the semaphore a handle names (checking kind, layout and geometry).
    pub fn open_handle(handle: &SegmentHandle) -> Result<Semaphore, ShmError> {
        Ok(Self::from_shm(crate::shared::open_handle(handle)?))
    }

    /// How another process reaches it.
    pub fn handle(&self) -> SegmentHandle {
        self.obj.segment().handle()
    }

    /// The segment holding the shared state (for tools and fuzzing: its bytes are what other
    /// processes share).
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }

    fn state(&self) -> &SemState {
        self.obj.get()
    }

    /// The current count (Python `get_value`).
    pub fn get_value(&self) -> u32 {
        self.state().value()
    }

    /// Python `acquire(block)`. Not recorded: see [`Semaphore::acquire_guard`] for death safety.
    pub fn acquire(&self, block: bool) -> bool {
        if block {
            self.state().acquire(None)
        } else {
            self.try_acquire()
        }
    }

    /// Takes a unit without blocking a thread (Python's `acquire()` for async code; not
    /// recorded, as [`Semaphore::acquire`]): a future that is `Ready` once a unit is taken.
    /// Runtime-agnostic, woken through [`crate::notify`]; while it waits it gives back units of
    /// dead guard holders every 20 ms, as the blocking call does.
    ///
    /// Cancel safety: a unit is only taken inside the poll that returns `Ready`, so dropping
    /// the future takes nothing; a future dropped after being woken passes the wake-up on to
    /// the next waiter if a unit is free.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let s = multiproc_sync::Semaphore::new(0).unwrap();
    /// let s2 = s.clone();
    /// std::thread::spawn(move || s2.release().unwrap());
    /// s.acquire_async().await;
    /// assert_eq!(s.get_value(), 0);
    /// # });
    /// ```
    #[cfg(not(loom))]
    pub fn acquire_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        SemAcquire {
            sem: self,
            w: crate::notify::AsyncWait::new(),
            done: false,
        }
    }

    /// Python `acquire(True, timeout)`.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.state().acquire(deadline_after(timeout))
    }

    /// Python `acquire(False)`.
    pub fn try_acquire(&self) -> bool {
        self.state().try_acquire()
    }

    /// Python `release`.
    pub fn release(&self) -> Result<(), SemaphoreError> {
        self.state().release(*self.obj.geometry())
    }

    /// Takes a unit through a guard that gives it back on drop — or, if this process dies,
    /// lets the next waiter give it back. At most [`HOLDER_SLOTS`] guards at once.
    pub fn acquire_guard(&self) -> Result<SemaphoreGuard<'_>, SemaphoreError> {
        self.guarded(None, true)
    }

    /// [`Semaphore::acquire_guard`] giving up after `timeout`.
    pub fn acquire_guard_timeout(
        &self,
        timeout: Duration,
    ) -> Result<SemaphoreGuard<'_>, SemaphoreError> {
        self.guarded(deadline_after(timeout), true)
    }

    /// [`Semaphore::acquire_guard`] without blocking.
    pub fn try_acquire_guard(&self) -> Result<SemaphoreGuard<'_>, SemaphoreError> {
        self.guarded(None, false)
    }

    fn guarded(
        &self,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<SemaphoreGuard<'_>, SemaphoreError> {
        let (pid, me) = ident::process();
        let slot = self.state().acquire_guarded(me, deadline, block)?;
        Ok(SemaphoreGuard {
            sem: self,
            slot,
            pid,
        })
    }

    /// Gives back units held by guards of dead processes now (waiters also do it on their own).
    pub fn reclaim_dead(&self) -> usize {
        self.state().reclaim_dead()
    }
}

/// The future of [`Semaphore::acquire_async`].
#[cfg(not(loom))]
struct SemAcquire<'a> {
    sem: &'a Semaphore,
    w: crate::notify::AsyncWait,
    done: bool,
}

#[cfg(not(loom))]
impl std::future::Future for SemAcquire<'_> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = &mut *self;
        let st = this.sem.state();
        if this.w.check_due(TICK) {
            st.reclaim_dead();
        }
        // SAFETY: `seq` and `waiters` live in the semaphore's mapping, which the KeepAlive
        // keeps mapped.
        let r = unsafe {
            this.w
                .poll_counted(cx, &st.seq, &st.waiters, this.sem.obj.keep_alive(), || {
                    st.try_take(0)
                })
        };
        if r.is_ready() {
            this.done = true;
        }
        r
    }
}

#[cfg(not(loom))]
impl Drop for SemAcquire<'_> {
    fn drop(&mut self) {
        self.w.cancel();
        if !self.done && self.sem.state().value() > 0 {
            // We may have been woken for a unit we now leave: pass the wake-up on.
            self.sem.state().notify();
        }
    }
}

/// A unit of a [`Semaphore`], given back on drop.
#[must_use = "the unit is given back when the guard drops"]
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
    slot: usize,
    pid: u32,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // A forked child's copy of the parent's guard gives nothing back.
        if ident::process().0 == self.pid {
            self.sem
                .state()
                .release_guarded(self.slot, *self.sem.obj.geometry());
        }
    }
}

/// A semaphore whose releases may not exceed its initial value (Python's `BoundedSemaphore`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore(Semaphore);

impl BoundedSemaphore {
    /// A bounded semaphore with `value` units, in a slot of this process's arena (as
    /// [`Semaphore::new`]); [`BoundedSemaphore::new_segment`] for a segment of its own.
    pub fn new(value: u32) -> Result<BoundedSemaphore, ShmError> {
        Ok(BoundedSemaphore(Semaphore::from_obj(Obj::new_default(
            SemState::new(value, true),
        )?)))
    }

    /// A bounded semaphore with `value` units in an anonymous segment of its own (what
    /// [`BoundedSemaphore::new`] did before arenas).
    pub fn new_segment(value: u32) -> Result<BoundedSemaphore, ShmError> {
        Ok(BoundedSemaphore(Semaphore::from_shm(
            crate::shared::create(None, SemState::new(value, true))?,
        )))
    }

    /// A bounded semaphore with `value` units in a slot of `arena` (see [`Semaphore::new_in`]).
    pub fn new_in(arena: &Arena, value: u32) -> Result<BoundedSemaphore, CreateError> {
        Ok(BoundedSemaphore(Semaphore::from_obj(Obj::new_in(
            arena,
            64,
            SemState::new(value, true),
        )?)))
    }

    /// Opens an arena bounded semaphore's handle.
    pub fn open_slot(handle: &SlotHandle) -> Result<BoundedSemaphore, ShmError> {
        Ok(BoundedSemaphore(Semaphore::open_slot(handle)?))
    }

    /// A bounded semaphore in `/dev/shm/multiproc.NAME`.
    pub fn create_named(name: &str, value: u32) -> Result<BoundedSemaphore, ShmError> {
        Ok(BoundedSemaphore(Semaphore::from_shm(
            crate::shared::create(Some(name), SemState::new(value, true))?,
        )))
    }

    /// Opens a named bounded semaphore.
    pub fn open_named(name: &str) -> Result<BoundedSemaphore, ShmError> {
        Ok(BoundedSemaphore(Semaphore::open_named(name)?))
    }

    /// Opens the bounded semaphore a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<BoundedSemaphore, ShmError> {
        Ok(BoundedSemaphore(Semaphore::open_handle(handle)?))
    }
}

impl Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.0
    }
}
