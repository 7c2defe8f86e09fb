//! MPMC ring: a bounded multi-producer multi-consumer queue of fixed-size slots, each holding
//! one variable-length record up to the slot size, in shared memory.
//!
//! Algorithm: Dmitry Vyukov's bounded MPMC queue with per-slot sequence stamps (as crossbeam's
//! `ArrayQueue`), changed so that a claim names its claimer. Each slot has a 64-bit `word` =
//! `claimer pid << 32 | stamp`. Positions are lap-encoded as in crossbeam, so the slot count
//! (the capacity) may be any number in `2..=MAX_SLOTS`: with `one_lap =
//! slots.next_power_of_two()`, position `p = lap * one_lap + index` (`index < slots`) uses slot
//! `index`, and the position after a lap's last index is index 0 of the next lap (for a
//! power-of-two slot count simply `p + 1`: the format is the one before lap encoding). The slot
//! goes through `(0, p)` free → `(W, p)` being written by pid W → `(0, p+1)` full → `(R, p+1)`
//! being read by pid R → `(0, p+one_lap)` free for the next lap. The claim is a CAS on the slot
//! word (the linearization point), so the claimer's pid is recorded atomically with the claim;
//! `tail` and `head` are hints that any thread moves past a slot it sees claimed (helping), so a
//! process that dies between the claim and the index bump leaves nothing wedged.
//!
//! Peer death: a slot stuck in `(W, p)` at `head`, or `(R, p+1)` at `tail - one_lap`, whose claimer
//! is dead (pid + start time, see `ident`) is recovered by a blocked waiter's periodic check
//! (or [`MpmcRing::recover`]): a dead writer's slot is published as a *lost* record (skipped by
//! consumers), a dead reader's slot is released. At most the dead process's in-flight record is
//! lost; [`MpmcRing::lost_records`] counts them. See `docs/ring.md`.
//!
//! Indices are masked; a record length read from a slot is checked against the slot size.
//!
//! ```
//! use multiproc_ring::MpmcRing;
//! let q = MpmcRing::new(8, 24).unwrap();
//! for i in 0..8u8 { q.try_push(&[i; 3]).unwrap(); }
//! assert!(q.try_push(b"x").is_err()); // full
//! let mut v = Vec::new();
//! q.try_pop_into(&mut v).unwrap();
//! assert_eq!(v, [0, 0, 0]);
//! ```

use crate::error::{PopError, PushError, RingError};
use crate::facade::{AtomicU32, AtomicU64, CachePadded, Ordering, spin_hint};
use crate::ident;
use crate::region::ring_err;
use crate::wait::{ParkWord, WaitEnd, WaitStrategy, wait_for};
use multiproc_shm::{
    ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint,
};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"MPMPMC03");
/// Length of a record whose writer died mid-write: consumers skip it.
const LOST_LEN: u64 = u32::MAX as u64;
/// Marks a slot's `meta` as a record length (`LEN_TAG | len`), never a claimer (whose value,
/// `pid | start_time << 22`, keeps bit 63 clear: see `claimer_value`).
const LEN_TAG: u64 = 1 << 63;
/// The pid bits of a claimer value.
const PID_BITS: u64 = (1 << 22) - 1;
const SLOT_HDR: usize = std::mem::size_of::<SlotHdr>();
/// Most slots (stamps are 32-bit and compared by wrapping difference).
pub const MAX_SLOTS: usize = 1 << 24;
/// Largest slot size.
pub const MAX_SLOT_SIZE: usize = 1 << 30;
/// Give up a non-blocking op after this many lost races (only a corrupted ring gets here).
pub const MAX_RETRIES: u32 = 1 << 16;
/// This process's retry bound ([`set_max_retries`]).
static MAX_RETRIES_NOW: crate::facade::StdAtomicU32 = crate::facade::StdAtomicU32::new(MAX_RETRIES);

/// Sets, for every MPMC ring handle of this process, how many lost races or helped-past slots a
/// push or pop retries before it reports the ring `Corrupted` (default [`MAX_RETRIES`]). For
/// fuzz targets: a scribbled ring can make every call run to the bound, which with coverage
/// instrumentation was most of a target's time; the loop's logic is the same at any bound.
/// Too low a bound would report a live ring under heavy contention as corrupted.
#[doc(hidden)]
pub fn set_max_retries(n: u32) {
    // Relaxed: a process-local setting, read on the retry path only.
    MAX_RETRIES_NOW.store(n.max(1), crate::facade::StdOrdering::Relaxed);
}

/// Whether `tries` lost races are too many (see [`set_max_retries`]).
#[inline]
fn too_many(tries: u32) -> bool {
    // Relaxed: as in `set_max_retries`.
    tries > MAX_RETRIES_NOW.load(crate::facade::StdOrdering::Relaxed)
}
/// How long a non-blocking pop waits for a live producer that is still writing the head slot
/// while later slots are claimed (crossbeam's `ArrayQueue::pop` waits for it without bound; we
/// bound it, since the writer may be a hostile or stopped process). Past it: `Empty`. 50 ms
/// was too short on a 2-core machine at load 10: a producer preempted mid-write for longer
/// made the own-push test see `Empty` about once in 2 million tries.
pub const HEAD_WRITER_PATIENCE: Duration = Duration::from_millis(200);
/// This process's head-writer patience in ns ([`set_head_writer_patience`]).
#[cfg(not(loom))]
static HEAD_WRITER_PATIENCE_NS: crate::facade::StdAtomicU64 =
    crate::facade::StdAtomicU64::new(HEAD_WRITER_PATIENCE.as_nanos() as u64);

/// Sets, for every MPMC ring handle of this process, how long a non-blocking pop waits for a
/// live producer still writing the head slot while later slots are claimed (default
/// [`HEAD_WRITER_PATIENCE`]) before it reports `Empty`. For fuzz targets, whose scribbles make
/// the head slot look claimed by a live process on many inputs (each one then cost the full
/// default), and tests; a shorter patience only makes such a pop give up sooner.
#[doc(hidden)]
#[cfg(not(loom))]
pub fn set_head_writer_patience(d: Duration) {
    // Relaxed: a process-local setting; a pop that reads the old value waits as long as it did.
    HEAD_WRITER_PATIENCE_NS.store(
        d.as_nanos().min(u128::from(u64::MAX)) as u64,
        crate::facade::StdOrdering::Relaxed,
    );
}
/// Spins before the head-writer wait starts yielding and looking at the clock.
#[cfg(not(loom))]
const HEAD_WRITER_SPINS: u32 = 128;
/// Under loom: a few yields only (the model must stay finite; loom has no clock).
#[cfg(loom)]
const HEAD_WRITER_SPINS: u32 = 2;
/// How often that wait checks whether the head slot's writer died (reads /proc).
const HEAD_WRITER_CHECK: Duration = Duration::from_millis(1);

#[repr(C)]
struct Config {
    magic: AtomicU64,
    slots: AtomicU64,
    slot_size: AtomicU64,
    stride: AtomicU64,
}

#[repr(C)]
struct State {
    closed: AtomicU32,
    _pad: AtomicU32,
    lost: AtomicU64,
}

/// The control block at the start of an MPMC ring's region.
#[repr(C)]
pub struct MpmcControl {
    config: CachePadded<Config>,
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    not_empty: CachePadded<ParkWord>,
    not_full: CachePadded<ParkWord>,
    state: CachePadded<State>,
}

/// A slot's header: 16 bytes, so a slot of up to 16 record bytes is 32 bytes and two share a
/// cache line (see [`stride_for`]).
#[repr(C)]
struct SlotHdr {
    /// claimer pid << 32 | stamp.
    word: AtomicU64,
    /// While a claim is held: the claimer's `pid | start_time << 22` once it wrote it (see
    /// `claimer_dead`). In a full slot: `LEN_TAG | len`, the record's length (`LOST_LEN` for a
    /// record lost to a dead writer). 0 in a slot a reader released.
    meta: AtomicU64,
}

/// Bytes taken by the control block.
pub const fn control_size() -> usize {
    (std::mem::size_of::<MpmcControl>() + 127) & !127
}

/// Bytes between slots for `slot_size`: header + data rounded to 32 when that is at most 32
/// (a slot of up to 16 record bytes; two per cache line, never straddling one), else rounded
/// to 64. Packing two slots per line moves two small records per line transfer: a throwaway
/// probe (one producer, one consumer, 8-byte records, 8192 slots, two pinned processes)
/// measured ~31 M records/s at stride 32 against ~20 M at stride 64 (docs/ring.md).
pub const fn stride_for(slot_size: usize) -> usize {
    let n = SLOT_HDR + slot_size;
    if n <= 32 { 32 } else { (n + 63) & !63 }
}

/// Region bytes for `slots` slots of `slot_size` bytes.
pub const fn region_size(slots: usize, slot_size: usize) -> usize {
    control_size() + slots * stride_for(slot_size)
}

/// Largest slot area (`slots * stride`) any ring may have.
const MAX_AREA: usize = isize::MAX as usize / 2;

fn check_params(slots: usize, slot_size: usize) -> Result<(), RingError> {
    if !(2..=MAX_SLOTS).contains(&slots) {
        return Err(RingError::InvalidParams("slots must be in 2..=2^24"));
    }
    if slot_size == 0 || slot_size > MAX_SLOT_SIZE {
        return Err(RingError::InvalidParams("slot size must be in 1..=2^30"));
    }
    if slots
        .checked_mul(stride_for(slot_size))
        .is_none_or(|n| n > MAX_AREA)
    {
        return Err(RingError::InvalidParams("ring too large"));
    }
    Ok(())
}

/// The geometry of an MPMC ring, validated once when a handle is made and used from the
/// handle's local copy afterwards (never re-read from shared memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpmcGeometry {
    /// Number of slots, the ring's capacity (`2..=MAX_SLOTS`, any value).
    pub slots: u64,
    /// The index bits of a position: `slots.next_power_of_two() - 1` (a position is
    /// `lap * (mask + 1) + index`, `index < slots`).
    pub mask: u64,
    /// Largest record (`1..=MAX_SLOT_SIZE`).
    pub slot_size: u64,
    /// Bytes between slots: `stride_for(slot_size)`; `slots * stride` fits in the tail.
    pub stride: u64,
}

// SAFETY: `MpmcControl` is `#[repr(C)]` and made only of atomic integers (inside `#[repr(C)]`
// `CachePadded`s), so any bit pattern is valid and `&MpmcControl` over memory other processes
// write is sound; its alignment is 128; it needs no drop in a segment.
unsafe impl SharedLayout for MpmcControl {
    const KIND: ObjectKind = ObjectKind::MpmcRing;
    const MAX_TAIL: usize = MAX_AREA;
    type Geometry = MpmcGeometry;

    fn validate(&self, tail_len: usize) -> Result<MpmcGeometry, ShmError> {
        // Relaxed: configuration written once before the segment was marked Ready (the segment
        // layer's Acquire of the ready state orders it).
        if self.config.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(ShmError::Corrupted("bad ring magic"));
        }
        let slots = self.config.slots.load(Ordering::Relaxed);
        let slot_size = self.config.slot_size.load(Ordering::Relaxed);
        let stride = self.config.stride.load(Ordering::Relaxed);
        let (Ok(n), Ok(ss)) = (usize::try_from(slots), usize::try_from(slot_size)) else {
            return Err(ShmError::Corrupted("bad geometry"));
        };
        if check_params(n, ss).is_err() || stride != stride_for(ss) as u64 {
            return Err(ShmError::Corrupted("bad geometry"));
        }
        // check_params bounds the product, so it cannot overflow.
        if n * stride_for(ss) > tail_len {
            return Err(ShmError::Corrupted("slots exceed the region"));
        }
        Ok(MpmcGeometry {
            slots,
            mask: slots.next_power_of_two() - 1,
            slot_size,
            stride,
        })
    }
}

#[inline]
fn pack(pid: u32, stamp: u32) -> u64 {
    (u64::from(pid) << 32) | u64::from(stamp)
}

#[inline]
fn split(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
}

/// Builds the control block and the slot headers in place (the `init` of
/// [`Shared::create`]/[`Shared::heap`]). On the heap the slot headers (in the tail) are never
/// dropped: they are plain atomics (under loom, handles into the model, which needs no drop).
fn init(
    slots: usize,
    slot_size: usize,
) -> impl FnOnce(NonNull<MpmcControl>, NonNull<u8>) -> Result<(), ShmError> {
    move |p, tail| {
        let ctrl = MpmcControl {
            config: CachePadded(Config {
                magic: AtomicU64::new(MAGIC),
                slots: AtomicU64::new(slots as u64),
                slot_size: AtomicU64::new(slot_size as u64),
                stride: AtomicU64::new(stride_for(slot_size) as u64),
            }),
            tail: CachePadded(AtomicU64::new(0)),
            head: CachePadded(AtomicU64::new(0)),
            not_empty: CachePadded(ParkWord::new()),
            not_full: CachePadded(ParkWord::new()),
            state: CachePadded(State {
                closed: AtomicU32::new(0),
                _pad: AtomicU32::new(0),
                lost: AtomicU64::new(0),
            }),
        };
        // SAFETY: `Shared` hands us a pointer valid and aligned for one `MpmcControl`, unseen.
        unsafe { p.as_ptr().write(ctrl) };
        for i in 0..slots {
            let hdr = SlotHdr {
                word: AtomicU64::new(pack(0, i as u32)),
                meta: AtomicU64::new(0),
            };
            // SAFETY: the tail holds `slots * stride` bytes (its length is exactly that) and
            // is 128-aligned, so slot i's header is inside it and 32-aligned (the stride is a
            // multiple of 32); nobody else sees it yet.
            unsafe {
                tail.as_ptr()
                    .add(i * stride_for(slot_size))
                    .cast::<SlotHdr>()
                    .write(hdr)
            };
        }
        Ok(())
    }
}

/// A handle's view of a ring: the shared object plus local copies of its validated geometry
/// and the pointers the hot paths use.
#[derive(Clone)]
struct Raw {
    shared: Shared<MpmcControl>,
    ctrl: NonNull<MpmcControl>,
    slots_base: NonNull<u8>,
    /// Index bits of a position (`one_lap - 1`).
    mask: u64,
    /// Positions per lap: `slots.next_power_of_two()`.
    one_lap: u64,
    slots: u64,
    slot_size: u64,
    stride: u64,
}

// SAFETY: the pointers point into memory `shared` keeps alive: shared memory reached through
// atomics and the claim protocol.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Raw {
    fn new(shared: Shared<MpmcControl>) -> Raw {
        let g = *shared.geometry();
        Raw {
            ctrl: shared.as_ptr(),
            slots_base: shared.tail_ptr(),
            mask: g.mask,
            one_lap: g.mask + 1,
            slots: g.slots,
            slot_size: g.slot_size,
            stride: g.stride,
            shared,
        }
    }

    #[inline]
    fn ctrl(&self) -> &MpmcControl {
        // SAFETY: `shared`'s validated layout pointer, kept mapped by `shared`.
        unsafe { self.ctrl.as_ref() }
    }

    /// Whether `pos` names a slot (its index part is below the slot count). Positions made by
    /// [`Raw::next`] always do; one read from a scribbled `head`/`tail` may not (only when the
    /// slot count is not a power of two), and is then moved on with [`Raw::next`], never used
    /// to reach a slot it does not name.
    #[inline]
    fn valid(&self, pos: u64) -> bool {
        pos & self.mask < self.slots
    }

    /// The position after `pos`: the next index of the same lap, or index 0 of the next lap
    /// (crossbeam's lap encoding; for a power-of-two slot count this is `pos + 1`).
    #[inline]
    fn next(&self, pos: u64) -> u64 {
        if (pos & self.mask) + 1 < self.slots {
            pos.wrapping_add(1)
        } else {
            (pos & !self.mask).wrapping_add(self.one_lap)
        }
    }

    /// Moves the hint `at` (`tail` or `head`) from `pos` to the position after it, unless
    /// another thread moved it already: the index bump after a claim, and the help any thread
    /// gives past a slot it finds claimed or a position naming no slot.
    #[inline]
    fn help_past(&self, at: &AtomicU64, pos: u64) {
        // Relaxed: `tail`/`head` are hints; every slot's state is decided by its own word.
        let _ = at.compare_exchange(pos, self.next(pos), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The slot for position `pos` (its index part; an index past the last slot, from a
    /// scribbled position, is clamped to it: callers check [`Raw::valid`] first).
    #[inline]
    fn slot(&self, pos: u64) -> &SlotHdr {
        let i = (pos & self.mask).min(self.slots - 1);
        // SAFETY: i < slots and slots * stride fits in the tail (validated geometry, local
        // copy); slot headers are 32-aligned atomics, valid for any bytes.
        unsafe {
            &*self
                .slots_base
                .as_ptr()
                .add((i * self.stride) as usize)
                .cast::<SlotHdr>()
        }
    }

    #[inline]
    fn slot_data(&self, slot: &SlotHdr) -> *mut u8 {
        // SAFETY: the data follows the header inside the slot's stride.
        unsafe { (slot as *const SlotHdr as *mut u8).add(SLOT_HDR) }
    }
}

/// This process's claimer value: `pid | start_time << 22`, bit 63 clear (a start time in clock
/// ticks since boot has far fewer than 41 bits), so it is never taken for `LEN_TAG | len`.
#[inline]
fn claimer_value() -> u64 {
    let me = ident::current();
    u64::from(me.pid) | ((me.start_time & ((1 << 41) - 1)) << 22)
}

/// Whether the claim `w` on `slot` is held by a dead process.
fn claimer_dead(slot: &SlotHdr, w: u64) -> bool {
    let (pid, _) = split(w);
    if pid == 0 {
        return false;
    }
    let c = slot.meta.load(Ordering::Relaxed);
    // Acquire re-read: if the word is unchanged, `c` is this claim's claimer value or what the
    // slot held before the claimer wrote it: 0 (a writer's claim: every release and every
    // recovery of a dead reader leaves 0), a length (a reader's claim), or the value of the
    // dead claimer a recovery is replacing (another pid).
    if slot.word.load(Ordering::Acquire) != w {
        return false;
    }
    // The start time only from a claimer value with this claim's pid (pid reuse is then
    // told apart); else the pid alone is checked.
    let start = if c & LEN_TAG == 0 && (c & PID_BITS) as u32 == pid {
        c >> 22
    } else {
        0
    };
    !ident::alive(pid, start)
}

/// State of a non-blocking pop waiting for the head slot's writer.
#[derive(Default)]
struct HeadWait {
    rounds: u32,
    #[cfg_attr(loom, allow(dead_code))]
    since: Option<Instant>,
    #[cfg_attr(loom, allow(dead_code))]
    checked: Option<Instant>,
}

/// A bounded MPMC ring of records (the shared object; `Clone` gives another handle).
#[derive(Clone)]
pub struct MpmcRing {
    raw: Raw,
    strategy: WaitStrategy,
    /// Whether this handle's pops wake pushers parked on `not_full` (see
    /// [`MpmcRing::set_wakes_pushers`]).
    wake_pushers: bool,
}

impl std::fmt::Debug for MpmcRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpmcRing")
            .field("slots", &self.raw.slots)
            .field("slot_size", &self.raw.slot_size)
            .finish()
    }
}

fn fingerprint() -> TypeFingerprint {
    TypeFingerprint::of::<MpmcControl>()
}

impl MpmcRing {
    fn wrap(s: Shared<MpmcControl>) -> MpmcRing {
        MpmcRing {
            raw: Raw::new(s),
            strategy: WaitStrategy::default(),
            wake_pushers: true,
        }
    }

    /// A ring of `slots` slots (its capacity, `2..=`[`MAX_SLOTS`]) of `slot_size` bytes in an
    /// anonymous segment.
    pub fn new(slots: usize, slot_size: usize) -> Result<MpmcRing, RingError> {
        check_params(slots, slot_size)?;
        let area = slots * stride_for(slot_size);
        let s =
            Shared::create(None, fingerprint(), area, init(slots, slot_size)).map_err(ring_err)?;
        Ok(Self::wrap(s))
    }

    /// A ring in the named segment `/dev/shm/multiproc.NAME`.
    pub fn create_named(name: &str, slots: usize, slot_size: usize) -> Result<MpmcRing, RingError> {
        check_params(slots, slot_size)?;
        let area = slots * stride_for(slot_size);
        let s = Shared::create(Some(name), fingerprint(), area, init(slots, slot_size))
            .map_err(ring_err)?;
        Ok(Self::wrap(s))
    }

    /// Opens a named ring.
    pub fn open_named(name: &str) -> Result<MpmcRing, RingError> {
        Ok(Self::wrap(
            Shared::open_named(name, fingerprint()).map_err(ring_err)?,
        ))
    }

    /// Opens the ring a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<MpmcRing, RingError> {
        Ok(Self::wrap(
            Shared::open_handle(handle, fingerprint()).map_err(ring_err)?,
        ))
    }

    /// Wraps an opened segment, validating the control block.
    pub fn from_segment(seg: Segment) -> Result<MpmcRing, RingError> {
        Ok(Self::wrap(Shared::from_segment(seg).map_err(ring_err)?))
    }

    /// A ring on the heap (threads of one process, tests, loom).
    pub fn new_heap(slots: usize, slot_size: usize) -> Result<MpmcRing, RingError> {
        check_params(slots, slot_size)?;
        let area = slots * stride_for(slot_size);
        Ok(Self::wrap(
            Shared::heap(area, init(slots, slot_size)).map_err(ring_err)?,
        ))
    }

    /// Sets how this handle's blocking calls wait.
    pub fn set_wait_strategy(&mut self, s: WaitStrategy) {
        self.strategy = s;
    }

    /// Whether this handle's pops wake pushers parked in [`MpmcRing::push`] (default: yes).
    ///
    /// An owner whose pushers never park on the ring (they call [`MpmcRing::try_push`] and wait
    /// on a word of the owner's, which its consumers poke after each pop, as `Queue` does)
    /// turns it off on every handle: each pop then saves the store-load fence of the wake-up
    /// check. A pusher that does park in `push` while some handle has it off still wakes about
    /// every [`CHECK_EVERY`](crate::CHECK_EVERY) (every park is bounded) and sees the room.
    pub fn set_wakes_pushers(&mut self, on: bool) {
        self.wake_pushers = on;
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.raw.slots as usize
    }

    /// Largest record.
    pub fn slot_size(&self) -> usize {
        self.raw.slot_size as usize
    }

    /// The underlying segment (None for heap rings).
    pub fn segment(&self) -> Option<&Segment> {
        self.raw.shared.segment()
    }

    /// The handle another process opens this ring by.
    pub fn handle(&self) -> Option<SegmentHandle> {
        self.segment().map(Segment::handle)
    }

    /// Slots claimed by producers and not yet taken by consumers (a racy snapshot, for tools;
    /// bounded by the slot count even on a corrupted control block).
    pub fn pending(&self) -> u64 {
        let c = self.raw.ctrl();
        let tail = c.tail.load(Ordering::Relaxed);
        let head = c.head.load(Ordering::Relaxed);
        let raw = &self.raw;
        let shift = raw.one_lap.trailing_zeros();
        // Laps between the two (positions are `lap * one_lap + index`), then the indices.
        let laps = (tail >> shift).wrapping_sub(head >> shift) as i64;
        let slots = raw.slots as i64;
        let idx = |p: u64| (p & raw.mask).min(raw.slots) as i64;
        let d = match laps {
            // `head` may briefly pass a lagging `tail` (both are advanced by helpers).
            i64::MIN..=-2 => 0,
            -1..=1 => laps * slots + idx(tail) - idx(head),
            // Only a scribbled control block is that far apart.
            _ => slots,
        };
        d.clamp(0, slots) as u64
    }

    /// Records lost because their writer or reader died mid-operation.
    pub fn lost_records(&self) -> u64 {
        self.raw.ctrl().state.lost.load(Ordering::Relaxed)
    }

    /// Closes the ring: pushes fail with `Disconnected`, pops drain then fail with it.
    pub fn close(&self) {
        let c = self.raw.ctrl();
        // Release: pairs with the Acquire loads in `is_closed`.
        c.state.closed.store(1, Ordering::Release);
        c.not_empty.wake_all();
        c.not_full.wake_all();
    }

    /// Whether [`MpmcRing::close`] was called.
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `close`.
        self.raw.ctrl().state.closed.load(Ordering::Acquire) != 0
    }

    /// Copies one record in without waiting.
    #[inline]
    pub fn try_push(&self, rec: &[u8]) -> Result<(), PushError> {
        if rec.len() as u64 > self.raw.slot_size {
            return Err(PushError::TooLarge {
                len: rec.len(),
                max: self.raw.slot_size as usize,
            });
        }
        if self.is_closed() {
            return Err(PushError::Disconnected);
        }
        let raw = &self.raw;
        let c = raw.ctrl();
        let me = ident::pid();
        let mut tries = 0u32;
        loop {
            let t = c.tail.load(Ordering::Relaxed);
            if !raw.valid(t) {
                // A scribbled tail: move it to a position that names a slot.
                raw.help_past(&c.tail, t);
                tries += 1;
                if too_many(tries) {
                    return Err(PushError::Corrupted("tail names no slot"));
                }
                continue;
            }
            let slot = raw.slot(t);
            // Acquire: pairs with the Release store that put the slot in this state (a
            // consumer's release of the previous lap): its read of the old bytes happens-before
            // our overwrite.
            let w = slot.word.load(Ordering::Acquire);
            let (pid, stamp) = split(w);
            let d = stamp.wrapping_sub(t as u32) as i32;
            if d == 0 && pid == 0 {
                // Acquire on success: as for the load above (the CAS reads the same value).
                if slot
                    .word
                    .compare_exchange_weak(w, pack(me, stamp), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    raw.help_past(&c.tail, t);
                    // Relaxed (all `meta` stores): the slot is ours while claimed; the word's
                    // Release store that ends the claim publishes `meta` with it, and
                    // `claimer_dead` re-reads the word (Acquire) before trusting `meta`.
                    slot.meta.store(claimer_value(), Ordering::Relaxed);
                    // SAFETY: the slot's data area holds slot_size >= rec.len() bytes and is ours
                    // while we hold the claim (no one else reads or writes it).
                    unsafe {
                        crate::copy::copy_record(rec.as_ptr(), raw.slot_data(slot), rec.len())
                    };
                    slot.meta
                        .store(LEN_TAG | rec.len() as u64, Ordering::Relaxed);
                    // Release: pairs with the consumer's Acquire load/CAS of the word; the length
                    // and bytes written above are visible to it.
                    slot.word
                        .store(pack(0, stamp.wrapping_add(1)), Ordering::Release);
                    c.not_empty.wake_one();
                    return Ok(());
                }
            } else if d >= 0 {
                // Position t is claimed (or done): help move the tail past it.
                raw.help_past(&c.tail, t);
            } else if c.tail.load(Ordering::Relaxed) == t {
                // The slot still holds the previous lap's record (or its reader): full.
                return Err(PushError::Full);
            }
            tries += 1;
            if too_many(tries) {
                return Err(PushError::Corrupted(
                    "no progress (slot stamps inconsistent)",
                ));
            }
        }
    }

    /// Copies the next record into `out` without waiting for a producer; returns its length.
    ///
    /// `Empty` means no finished record could be taken. If the head slot is still being written
    /// by a live producer while later slots are already claimed (so finished records may wait
    /// behind it), this waits for that producer — briefly spinning, then yielding, at most
    /// about 200 ms (a stopped or hostile writer) — as crossbeam's `ArrayQueue::pop` does; a
    /// writer found dead meanwhile is recovered (its record counted lost). So a thread that
    /// completed a push and is the only consumer never gets `Empty` from the next `try_pop`.
    #[inline]
    pub fn try_pop_into(&self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        match self.pop_once(out) {
            // Out of line: the common pop stays exactly the plain Vyukov pop.
            Err(PopError::Empty) => self.pop_behind_head_writer(out),
            r => r,
        }
    }

    /// One pop attempt: `Empty` when the slot at the head holds no finished record (the
    /// blocking forms then park; the writer's publication wakes them).
    #[inline]
    fn pop_once(&self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        let raw = &self.raw;
        let c = raw.ctrl();
        let me = ident::pid();
        let mut tries = 0u32;
        let mut closed_seen = false;
        loop {
            let h = c.head.load(Ordering::Relaxed);
            if !raw.valid(h) {
                // A scribbled head: move it to a position that names a slot.
                raw.help_past(&c.head, h);
                tries += 1;
                if too_many(tries) {
                    return Err(PopError::Corrupted("head names no slot"));
                }
                continue;
            }
            let slot = raw.slot(h);
            // Acquire: pairs with the producer's Release store publishing the slot.
            let w = slot.word.load(Ordering::Acquire);
            let (pid, stamp) = split(w);
            let d = stamp.wrapping_sub((h as u32).wrapping_add(1)) as i32;
            if d == 0 && pid == 0 {
                // Acquire on success: as for the load above.
                if slot
                    .word
                    .compare_exchange_weak(w, pack(me, stamp), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    raw.help_past(&c.head, h);
                    // Relaxed: written before the producer's Release store we Acquired.
                    let m = slot.meta.load(Ordering::Relaxed);
                    // Relaxed: as in `try_push`.
                    slot.meta.store(claimer_value(), Ordering::Relaxed);
                    let len = m & !LEN_TAG;
                    let res = if m & LEN_TAG == 0 {
                        Some(Err(PopError::Corrupted(
                            "full slot without a record length",
                        )))
                    } else if len == LOST_LEN {
                        None
                    } else if len > raw.slot_size {
                        Some(Err(PopError::Corrupted(
                            "record length exceeds the slot size",
                        )))
                    } else {
                        // SAFETY: len <= slot_size bytes of the slot's data, ours while we hold
                        // the claim; written before the producer's Release store we Acquired;
                        // `out` is local memory.
                        unsafe {
                            crate::copy::copy_record_into(raw.slot_data(slot), len as usize, out)
                        };
                        Some(Ok(len as usize))
                    };
                    slot.meta.store(0, Ordering::Relaxed);
                    // Release: pairs with the producer's Acquire load/CAS of the next lap; our
                    // read of the bytes happens-before its overwrite.
                    slot.word.store(
                        pack(0, (h as u32).wrapping_add(raw.one_lap as u32)),
                        Ordering::Release,
                    );
                    if self.wake_pushers {
                        c.not_full.wake_one();
                    }
                    match res {
                        Some(r) => return r,
                        None => continue, // a record lost to a dead writer: skip it
                    }
                }
            } else if d >= 0 {
                raw.help_past(&c.head, h);
            } else if c.head.load(Ordering::Relaxed) == h {
                // Empty at h, or its writer is still writing (`try_pop_into` then waits for
                // it, see `pop_behind_head_writer`).
                if self.is_closed() {
                    // A producer that pushed and then closed (its last handle dropped) may have
                    // published that record after our slot load above; the close is ordered
                    // after the push (Release in `close`, Acquire in `is_closed`), so one
                    // more look at the slot finds it. Only then is the ring drained.
                    if !closed_seen {
                        closed_seen = true;
                        continue;
                    }
                    return Err(PopError::Disconnected);
                }
                return Err(PopError::Empty);
            }
            tries += 1;
            if too_many(tries) {
                return Err(PopError::Corrupted(
                    "no progress (slot stamps inconsistent)",
                ));
            }
        }
    }

    /// The head slot's claim word, if the slot is being written while the tail has moved past
    /// it: later positions are claimed and may hold finished records. (The tail only grows, so
    /// a caller that finished a push of its own at a later position sees tail != head here.)
    fn head_writer_busy(&self) -> Option<(&SlotHdr, u64)> {
        let c = self.raw.ctrl();
        // Relaxed: hints; the slot word decides.
        let h = c.head.load(Ordering::Relaxed);
        let slot = self.raw.slot(h);
        // Acquire: as in `pop_once` (pairs with the producer's Release publication).
        let w = slot.word.load(Ordering::Acquire);
        let (pid, stamp) = split(w);
        (self.raw.valid(h)
            && pid != 0
            && stamp == h as u32
            && c.head.load(Ordering::Relaxed) == h
            && c.tail.load(Ordering::Relaxed) != h)
            .then_some((slot, w))
    }

    /// `try_pop_into` after a first attempt found nothing: if the head slot is being written
    /// by a live producer while later positions are claimed, waits for it (bounded, see
    /// `wait_head_writer`) and retries, as crossbeam's `ArrayQueue::pop` does.
    #[cold]
    #[inline(never)]
    fn pop_behind_head_writer(&self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        let mut hw = HeadWait::default();
        loop {
            let Some((slot, w)) = self.head_writer_busy() else {
                // Really empty, or the writer just finished: one more plain attempt.
                return self.pop_once(out);
            };
            if !self.wait_head_writer(&mut hw, slot, w) {
                if self.is_closed() {
                    return Err(PopError::Disconnected);
                }
                return Err(PopError::Empty);
            }
            match self.pop_once(out) {
                Err(PopError::Empty) => {}
                r => return r,
            }
        }
    }

    /// One step of waiting for the live writer of the head slot (claim word `w`). Returns false
    /// when the patience is used up. Spins first; then yields, checks now and then whether the
    /// writer died (and recovers its slot if so), and gives up after the process's patience
    /// ([`HEAD_WRITER_PATIENCE`] unless [`set_head_writer_patience`] changed it).
    fn wait_head_writer(&self, hw: &mut HeadWait, slot: &SlotHdr, w: u64) -> bool {
        hw.rounds += 1;
        if hw.rounds <= HEAD_WRITER_SPINS {
            spin_hint();
            return true;
        }
        #[cfg(loom)]
        {
            let _ = (slot, w);
            false
        }
        #[cfg(not(loom))]
        {
            std::thread::yield_now();
            let now = Instant::now();
            let since = *hw.since.get_or_insert(now);
            // Relaxed: as in `set_head_writer_patience`.
            let patience = Duration::from_nanos(
                HEAD_WRITER_PATIENCE_NS.load(crate::facade::StdOrdering::Relaxed),
            );
            if now.duration_since(since) >= patience {
                return false;
            }
            if hw
                .checked
                .is_none_or(|t| now.duration_since(t) >= HEAD_WRITER_CHECK)
            {
                hw.checked = Some(now);
                if claimer_dead(slot, w) {
                    self.recover();
                }
            }
            true
        }
    }

    /// Recovers slots held by dead processes at the head (a writer died: its record is marked
    /// lost) and at the tail (a reader died: the slot is released). Returns how many were
    /// recovered. Blocked waiters call this about every [`CHECK_EVERY`](crate::CHECK_EVERY).
    pub fn recover(&self) -> usize {
        let raw = &self.raw;
        let c = raw.ctrl();
        let me = ident::pid();
        let mut n = 0;
        // A writer that died holding the slot at head.
        let h = c.head.load(Ordering::Relaxed);
        let slot = raw.slot(h);
        let w = slot.word.load(Ordering::Acquire);
        let (pid, stamp) = split(w);
        if raw.valid(h)
            && pid != 0
            && stamp == h as u32
            && claimer_dead(slot, w)
            && slot
                .word
                .compare_exchange(w, pack(me, stamp), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            // Relaxed: published by the Release store of the word below.
            slot.meta.store(LEN_TAG | LOST_LEN, Ordering::Relaxed);
            // Release: as a producer's publish (pairs with the consumer's Acquire).
            slot.word
                .store(pack(0, stamp.wrapping_add(1)), Ordering::Release);
            raw.help_past(&c.tail, h);
            c.state.lost.fetch_add(1, Ordering::Relaxed);
            c.not_empty.wake_one();
            n += 1;
        }
        // A reader that died holding the slot the tail needs next.
        let t = c.tail.load(Ordering::Relaxed);
        let slot = raw.slot(t);
        let w = slot.word.load(Ordering::Acquire);
        let (pid, stamp) = split(w);
        // The same slot one lap back: the position whose reader holds it.
        let prev = t.wrapping_sub(raw.one_lap);
        if raw.valid(t)
            && pid != 0
            && stamp == (prev as u32).wrapping_add(1)
            && claimer_dead(slot, w)
            && slot
                .word
                .compare_exchange(w, pack(me, stamp), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            // The dead reader's claimer value must not outlive its claim: the next writer's
            // claim would be judged by it until that writer stores its own (see
            // `claimer_dead`).
            slot.meta.store(0, Ordering::Relaxed);
            // Release: as a consumer's release (pairs with the producer's Acquire).
            slot.word.store(pack(0, t as u32), Ordering::Release);
            raw.help_past(&c.head, prev);
            c.state.lost.fetch_add(1, Ordering::Relaxed);
            c.not_full.wake_one();
            n += 1;
        }
        n
    }

    /// Whether the slot at the head holds a finished record, or the ring is closed (no state
    /// change: the async readiness condition of [`MpmcRing::poll_not_empty`]).
    fn head_ready(&self) -> bool {
        let c = self.raw.ctrl();
        // Relaxed: a hint; the pop that follows decides with its own Acquire.
        let h = c.head.load(Ordering::Relaxed);
        // Acquire: as in `pop_once` (pairs with the producer's Release publication).
        let (pid, stamp) = split(self.raw.slot(h).word.load(Ordering::Acquire));
        (self.raw.valid(h) && pid == 0 && stamp == (h as u32).wrapping_add(1)) || self.is_closed()
    }

    /// Whether the slot at the tail is free for this lap (a push would find room now), or the
    /// ring is closed: a hint for a pusher that waits elsewhere (see
    /// [`MpmcRing::set_wakes_pushers`]); the push decides.
    pub fn has_free_slot(&self) -> bool {
        let c = self.raw.ctrl();
        // Relaxed: a hint; the push that follows decides with its own Acquire.
        let t = c.tail.load(Ordering::Relaxed);
        // Acquire: as in `try_push` (pairs with the consumer's Release of the previous lap).
        let (pid, stamp) = split(self.raw.slot(t).word.load(Ordering::Acquire));
        (self.raw.valid(t) && pid == 0 && stamp == t as u32) || self.is_closed()
    }

    /// Async readiness for consumers: `Ready` once the head slot holds a finished record or
    /// the ring is closed (then pop with [`MpmcRing::try_pop_into`] in the same poll; another
    /// consumer may have been faster: poll again), `Pending` after registering with the
    /// notifier (`multiproc_sync::notify`) on `not_empty`. Takes nothing: cancel-safe. The
    /// caller runs [`MpmcRing::recover`] about every [`CHECK_EVERY`](crate::CHECK_EVERY), as
    /// a blocked pop does.
    #[cfg(not(loom))]
    pub fn poll_not_empty(
        &self,
        cx: &mut std::task::Context<'_>,
        w: &mut multiproc_sync::notify::AsyncWait,
    ) -> std::task::Poll<()> {
        w.poll_shared(
            cx,
            &self.raw.shared,
            |c| &c.not_empty,
            || self.head_ready().then_some(()),
        )
    }

    /// Whether the head slot holds a finished record or the ring is closed (a hint for an
    /// async consumer's spin phase; the pop decides).
    pub fn has_ready_record(&self) -> bool {
        self.head_ready()
    }

    /// For an async consumer that gives up (its future dropped): if a finished record waits at
    /// the head, wakes one parked consumer, in case the wake-up meant for it went to the one
    /// leaving. Costs a fence and a load when nobody is parked.
    pub fn pass_on_not_empty(&self) {
        if self.head_ready() {
            self.raw.ctrl().not_empty.wake_one();
        }
    }

    /// Copies one record in, waiting for room.
    pub fn push(&self, rec: &[u8]) -> Result<(), PushError> {
        self.push_deadline(rec, None)
    }

    /// Copies one record in, waiting at most `timeout`.
    pub fn push_timeout(&self, rec: &[u8], timeout: Duration) -> Result<(), PushError> {
        self.push_deadline(rec, multiproc_shm::deadline::after(timeout))
    }

    #[inline]
    fn push_deadline(&self, rec: &[u8], deadline: Option<Instant>) -> Result<(), PushError> {
        match self.try_push(rec) {
            Err(PushError::Full) => self.push_slow(rec, deadline),
            r => r,
        }
    }

    #[cold]
    fn push_slow(&self, rec: &[u8], deadline: Option<Instant>) -> Result<(), PushError> {
        wait_for(
            self.strategy,
            deadline,
            &self.raw.ctrl().not_full,
            || match self.try_push(rec) {
                Err(PushError::Full) => None,
                r => Some(r),
            },
            || {
                self.recover();
                None
            },
        )
        .map_err(|e| match e {
            WaitEnd::Err(e) => e,
            WaitEnd::TimedOut => PushError::Timeout,
        })
    }

    /// Copies the next record into `out`, waiting for one.
    pub fn pop_into(&self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        self.pop_deadline(out, None)
    }

    /// Copies the next record into `out`, waiting at most `timeout`.
    pub fn pop_into_timeout(
        &self,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, PopError> {
        self.pop_deadline(out, multiproc_shm::deadline::after(timeout))
    }

    /// As [`Self::pop_into_timeout`], waiting per `strategy` instead of this handle's own
    /// (for callers that keep a strategy per handle of their own, as Queue does).
    pub fn pop_into_timeout_with(
        &self,
        out: &mut Vec<u8>,
        timeout: Duration,
        strategy: WaitStrategy,
    ) -> Result<usize, PopError> {
        match self.pop_once(out) {
            Err(PopError::Empty) => {
                self.pop_slow(out, multiproc_shm::deadline::after(timeout), strategy)
            }
            r => r,
        }
    }

    #[inline]
    fn pop_deadline(
        &self,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<usize, PopError> {
        match self.pop_once(out) {
            Err(PopError::Empty) => self.pop_slow(out, deadline, self.strategy),
            r => r,
        }
    }

    #[cold]
    fn pop_slow(
        &self,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
        strategy: WaitStrategy,
    ) -> Result<usize, PopError> {
        let ctrl = self.raw.ctrl();
        wait_for(
            strategy,
            deadline,
            &ctrl.not_empty,
            || match self.pop_once(out) {
                Err(PopError::Empty) => None,
                r => Some(r),
            },
            || {
                self.recover();
                None
            },
        )
        .map_err(|e| match e {
            WaitEnd::Err(e) => e,
            WaitEnd::TimedOut => PopError::Timeout,
        })
    }
}

impl serde::Serialize for MpmcRing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.handle() {
            Some(h) => h.serialize(s),
            None => Err(serde::ser::Error::custom(
                "a heap ring cannot be sent to another process",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MpmcRing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        MpmcRing::open_handle(&h).map_err(serde::de::Error::custom)
    }
}
