//! SPSC byte ring for variable-length records, in shared memory.
//!
//! Algorithm: a single-producer single-consumer circular buffer of bytes (Lamport, with the
//! index caching of `rtrb` on the producer side and FastForward-style publication through the
//! record header on the consumer side). `head` (written only by the consumer) and `tail`
//! (written only by the producer) are monotonically increasing byte positions, each on its own
//! 128-byte line. A record is an 8-byte header (`TAG | len`) followed by `len` bytes, padded to 8.
//! The producer writes the payload, then a zero word where the *next* header will go (the
//! terminator), then the header with a Release store: the header is the publication. So the
//! consumer polls the header word at its head position (0 = empty) and a one-way hand-off
//! moves one cache line, as in the physical floor, instead of the tail line and then the data
//! line. The producer keeps a cached copy of `head` and re-reads the shared one only when the
//! cache says "full"; `tail` is stored for re-attachment and diagnostics only.
//!
//! A record never wraps: if it does not fit before the end of the buffer, the producer puts it
//! at offset 0 and publishes a WRAP marker (Release, last) at the old position. The largest
//! record is `capacity / 2 - 8` bytes, so one (plus its terminator) always fits in an empty ring.
//!
//! Every index and header read from shared memory is checked (`head <= tail <= head + cap`,
//! header tag, length bound, record inside the buffer): a corrupted control block or data
//! region yields [`PopError::Corrupted`]/[`PushError::Corrupted`], never UB.
//!
//! Peer death: each side records its [`ProcessId`](multiproc_shm::ProcessId) when it attaches;
//! a blocked side re-checks the other's liveness every [`CHECK_EVERY`](crate::CHECK_EVERY) and
//! returns `Disconnected`. Dropping an endpoint closes that side.
//!
//! ```
//! use multiproc_ring::SpscRing;
//! let ring = SpscRing::new(4096).unwrap(); // a memfd segment; fork children inherit it
//! let mut tx = ring.producer().unwrap();
//! let mut rx = ring.consumer().unwrap();
//! let mut g = tx.try_reserve(5).unwrap();
//! g.as_mut_slice().copy_from_slice(b"hello");
//! g.commit();
//! let r = rx.try_peek().unwrap();
//! assert_eq!(r.as_slice(), b"hello");
//! r.release();
//! tx.try_push(b"world").unwrap();
//! let mut v = Vec::new();
//! rx.try_pop_into(&mut v).unwrap();
//! assert_eq!(v, b"world");
//! ```

use crate::error::{PopError, PushError, RingError};
use crate::facade::{AtomicU32, AtomicU64, CachePadded, Ordering, align8, load_word, store_word};
use crate::ident;
use crate::region::ring_err;
use crate::wait::{ParkWord, WaitEnd, WaitStrategy, wait_for};
use multiproc_shm::{
    ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint,
};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"MPSPSC02");
/// Record header: this tag in the high 32 bits, the length in the low 32.
const TAG: u64 = 0x5245_4344 << 32;
/// Wrap marker: the rest of the buffer up to its end is padding.
const WRAP: u64 = 0x5752_4150_5752_4150;
const HDR: u64 = 8;
/// Positions read from shared memory must be below this (no ring moves 2^62 bytes), so the
/// position arithmetic can never overflow.
const MAX_POS: u64 = 1 << 62;
/// Smallest data capacity.
pub const MIN_CAPACITY: usize = 64;
/// Largest data capacity (records are u32-length-prefixed).
pub const MAX_CAPACITY: usize = 1 << 32;

/// Immutable ring parameters (atomics because they sit in shared memory).
#[repr(C)]
struct Config {
    magic: AtomicU64,
    capacity: AtomicU64,
    max_record: AtomicU64,
}

/// One side's shared state: who owns it, whether it closed, and where it sleeps.
#[repr(C)]
pub(crate) struct Side {
    /// The owner, in ONE word: `pid << 32 | low 32 bits of its start time` (0: never attached).
    /// Taking a side over is a single CAS of this word from the dead owner's value to ours, so
    /// two processes (or threads) racing over the same dead owner cannot both win.
    owner: AtomicU64,
    closed: AtomicU32,
    /// How many times a dead owner was replaced (diagnostics).
    takeovers: AtomicU32,
    park: ParkWord,
}

impl Side {
    fn new() -> Side {
        Side {
            owner: AtomicU64::new(0),
            closed: AtomicU32::new(0),
            takeovers: AtomicU32::new(0),
            park: ParkWord::new(),
        }
    }

    /// Closed explicitly (cheap: one load of a line written once).
    #[inline]
    fn closed(&self) -> bool {
        // Acquire: pairs with the Release store in `close`; records written before closing are
        // visible to the consumer's final re-read of `tail`.
        self.closed.load(Ordering::Acquire) != 0
    }

    /// Closed explicitly, or attached once and now dead (reads /proc: slow paths only).
    fn gone(&self) -> bool {
        if self.closed() {
            return true;
        }
        let w = self.owner.load(Ordering::Relaxed);
        w != 0 && !owner_alive(w)
    }

    fn close(&self) {
        // Release: pairs with the Acquire load in `gone`.
        self.closed.store(1, Ordering::Release);
    }
}

/// The control block at the start of a ring's region (`#[repr(C)]`, built in place).
#[repr(C)]
pub struct SpscControl {
    config: CachePadded<Config>,
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    producer: CachePadded<Side>,
    consumer: CachePadded<Side>,
    /// The consumer's position as handed out: stored before every record is returned to the
    /// caller (`head` is handed back to the producer lazily). Only a replacement consumer reads
    /// it, so it sits on a line of its own that no one else touches on the fast path.
    taken: CachePadded<AtomicU64>,
}

/// The geometry of an SPSC ring, validated once when a handle is made and used from the
/// handle's local copy afterwards (never re-read from shared memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpscGeometry {
    /// Data capacity in bytes (a power of two in `MIN_CAPACITY..=MAX_CAPACITY`, at most the
    /// real length of the segment's tail).
    pub capacity: u64,
    /// Largest record: `max_record_for(capacity)`.
    pub max_record: u64,
}

// SAFETY: `SpscControl` is `#[repr(C)]` and made only of atomic integers (inside `CachePadded`,
// itself `#[repr(C)]`), so any bit pattern is valid and `&SpscControl` over memory other
// processes write is sound; its alignment is 128; it needs no drop in a segment.
unsafe impl SharedLayout for SpscControl {
    const KIND: ObjectKind = ObjectKind::SpscRing;
    const MAX_TAIL: usize = MAX_CAPACITY;
    type Geometry = SpscGeometry;

    fn validate(&self, tail_len: usize) -> Result<SpscGeometry, ShmError> {
        // Relaxed: configuration written once before the segment was marked Ready (the
        // segment layer's Acquire of the ready state orders it).
        if self.config.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(ShmError::Corrupted("bad ring magic"));
        }
        let cap = self.config.capacity.load(Ordering::Relaxed);
        let max_record = self.config.max_record.load(Ordering::Relaxed);
        if usize::try_from(cap).map_or(true, |c| check_capacity(c).is_err()) {
            return Err(ShmError::Corrupted("bad capacity"));
        }
        if cap > tail_len as u64 {
            return Err(ShmError::Corrupted("capacity exceeds the region"));
        }
        if max_record != max_record_for(cap as usize) as u64 {
            return Err(ShmError::Corrupted("bad max record size"));
        }
        Ok(SpscGeometry {
            capacity: cap,
            max_record,
        })
    }
}

/// Bytes taken by the control block (a multiple of 128; the data follows).
pub const fn control_size() -> usize {
    (std::mem::size_of::<SpscControl>() + 127) & !127
}

/// Region bytes needed for a ring of `capacity` data bytes.
pub const fn region_size(capacity: usize) -> usize {
    control_size() + capacity
}

/// Largest record (payload bytes) of a ring of `capacity` data bytes.
pub const fn max_record_for(capacity: usize) -> usize {
    capacity / 2 - HDR as usize
}

fn check_capacity(capacity: usize) -> Result<(), RingError> {
    if !capacity.is_power_of_two() {
        return Err(RingError::InvalidParams("capacity must be a power of two"));
    }
    if capacity < MIN_CAPACITY {
        return Err(RingError::InvalidParams(
            "capacity must be at least 64 bytes",
        ));
    }
    if capacity > MAX_CAPACITY {
        return Err(RingError::InvalidParams("capacity must be at most 4 GiB"));
    }
    Ok(())
}

fn new_control(capacity: usize) -> SpscControl {
    SpscControl {
        config: CachePadded(Config {
            magic: AtomicU64::new(MAGIC),
            capacity: AtomicU64::new(capacity as u64),
            max_record: AtomicU64::new(max_record_for(capacity) as u64),
        }),
        tail: CachePadded(AtomicU64::new(0)),
        head: CachePadded(AtomicU64::new(0)),
        producer: CachePadded(Side::new()),
        consumer: CachePadded(Side::new()),
        taken: CachePadded(AtomicU64::new(0)),
    }
}

/// Builds the control block in place (the `init` of [`Shared::create`]/[`Shared::heap`]).
fn init(capacity: usize) -> impl FnOnce(NonNull<SpscControl>, NonNull<u8>) -> Result<(), ShmError> {
    move |p, _tail| {
        // SAFETY: `Shared` hands us a pointer valid and aligned for one `SpscControl`, not yet
        // visible to anyone else.
        unsafe { p.as_ptr().write(new_control(capacity)) };
        Ok(())
    }
}

/// A handle's view of a ring: the shared object plus local copies of its validated geometry
/// and of the two pointers the hot paths use (so no op chases the `Shared`'s refcounted box).
#[derive(Clone)]
struct Raw {
    shared: Shared<SpscControl>,
    ctrl: NonNull<SpscControl>,
    data: NonNull<u8>,
    cap: u64,
    max_record: u64,
}

// SAFETY: the pointers point into memory `shared` keeps alive; it is shared memory reached
// through atomics and the SPSC protocol.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Raw {
    fn new(shared: Shared<SpscControl>) -> Raw {
        let g = *shared.geometry();
        Raw {
            ctrl: shared.as_ptr(),
            data: shared.tail_ptr(),
            cap: g.capacity,
            max_record: g.max_record,
            shared,
        }
    }

    #[inline]
    fn ctrl(&self) -> &SpscControl {
        // SAFETY: `ctrl` is `shared`'s layout pointer (validated); `shared` keeps it mapped as
        // long as self; SharedLayout makes `&SpscControl` over shared memory sound.
        unsafe { self.ctrl.as_ref() }
    }

    /// Pointer to data byte `idx` (<= cap: an empty record's payload may start at the end).
    #[inline]
    fn at(&self, idx: u64) -> *mut u8 {
        debug_assert!(idx <= self.cap);
        // SAFETY: idx <= cap and the tail holds at least cap bytes (validated), so the result
        // is inside the tail or one past its end.
        unsafe { self.data.as_ptr().add(idx as usize) }
    }
}

/// An SPSC byte ring: the shared object. Clone it (or serialize it) to reach the same ring;
/// take one [`Producer`] and one [`Consumer`] from it.
#[derive(Clone)]
pub struct SpscRing {
    raw: Raw,
}

impl std::fmt::Debug for SpscRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpscRing")
            .field("capacity", &self.raw.cap)
            .field("max_record", &self.raw.max_record)
            .finish()
    }
}

fn fingerprint() -> TypeFingerprint {
    TypeFingerprint::of::<SpscControl>()
}

impl SpscRing {
    /// A ring of `capacity` data bytes (a power of two, >= 64) in an anonymous (memfd) segment:
    /// forked children inherit it; pass it to spawned ones by its handle.
    pub fn new(capacity: usize) -> Result<SpscRing, RingError> {
        check_capacity(capacity)?;
        let s = Shared::create(None, fingerprint(), capacity, init(capacity)).map_err(ring_err)?;
        Ok(SpscRing { raw: Raw::new(s) })
    }

    /// A ring in the named segment `/dev/shm/multiproc.NAME` (unlinked when this handle and its
    /// clones drop in the creating process).
    pub fn create_named(name: &str, capacity: usize) -> Result<SpscRing, RingError> {
        check_capacity(capacity)?;
        let s = Shared::create(Some(name), fingerprint(), capacity, init(capacity))
            .map_err(ring_err)?;
        Ok(SpscRing { raw: Raw::new(s) })
    }

    /// Opens a named ring made by another process.
    pub fn open_named(name: &str) -> Result<SpscRing, RingError> {
        let s = Shared::open_named(name, fingerprint()).map_err(ring_err)?;
        Ok(SpscRing { raw: Raw::new(s) })
    }

    /// Opens the ring a handle names.
    pub fn open_handle(handle: &SegmentHandle) -> Result<SpscRing, RingError> {
        let s = Shared::open_handle(handle, fingerprint()).map_err(ring_err)?;
        Ok(SpscRing { raw: Raw::new(s) })
    }

    /// Wraps an opened segment, validating the control block.
    pub fn from_segment(seg: Segment) -> Result<SpscRing, RingError> {
        let s = Shared::from_segment(seg).map_err(ring_err)?;
        Ok(SpscRing { raw: Raw::new(s) })
    }

    /// A ring on the heap (one process only: threads, tests, loom, fuzzing).
    pub fn new_heap(capacity: usize) -> Result<SpscRing, RingError> {
        check_capacity(capacity)?;
        let s = Shared::heap(capacity, init(capacity)).map_err(ring_err)?;
        Ok(SpscRing { raw: Raw::new(s) })
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.raw.cap as usize
    }

    /// Largest record this ring accepts.
    pub fn max_record(&self) -> usize {
        self.raw.max_record as usize
    }

    /// The underlying segment (None for heap rings).
    pub fn segment(&self) -> Option<&Segment> {
        self.raw.shared.segment()
    }

    /// The handle another process opens this ring by.
    pub fn handle(&self) -> Option<SegmentHandle> {
        self.segment().map(Segment::handle)
    }

    /// Becomes this ring's producer (records this process in the control block). Fails if a live
    /// producer exists or the producer side was closed; a dead producer's place is taken over.
    pub fn producer(&self) -> Result<Producer, RingError> {
        let c = self.raw.ctrl();
        let took_over = attach(&c.producer, "producer")?;
        let tail = c.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's Release store of head.
        let head = c.head.load(Ordering::Acquire);
        if !tail.is_multiple_of(8)
            || !head.is_multiple_of(8)
            || tail >= MAX_POS
            || head >= MAX_POS
            || tail.max(head) - tail.min(head) > self.raw.cap
        {
            return Err(RingError::Corrupted("head/tail out of range"));
        }
        let tail = self.scan_published(tail.max(head), head)?;
        Ok(Producer {
            raw: self.raw.clone(),
            tail,
            cached_head: head,
            strategy: WaitStrategy::default(),
            took_over,
            pending: None,
            pending_from: 0,
            pending_n: 0,
        })
    }

    /// Becomes this ring's consumer (as [`SpscRing::producer`]).
    pub fn consumer(&self) -> Result<Consumer, RingError> {
        let c = self.raw.ctrl();
        let took_over = attach(&c.consumer, "consumer")?;
        // Relaxed: only the values matter; the consumer that stored them is gone (closed sides
        // cannot be attached, so a previous consumer, if any, died), and the records past them
        // are published by their headers' Release stores.
        let head = c.head.load(Ordering::Relaxed);
        let taken = c.taken.load(Ordering::Relaxed);
        if !head.is_multiple_of(8)
            || head >= MAX_POS
            || !taken.is_multiple_of(8)
            || taken < head
            || taken - head > self.raw.cap
        {
            return Err(RingError::Corrupted("head out of range"));
        }
        // Start after every record the previous consumer handed out (`taken`), and hand the
        // bytes between `head` and `taken` back to the producer on the first publication.
        Ok(Consumer {
            raw: self.raw.clone(),
            head: taken,
            published: head,
            strategy: WaitStrategy::default(),
            budget: multiproc_sync::park::SpinBudget::new(),
            took_over,
        })
    }

    /// Follows published headers from `from` to the terminator: the position a (re-attaching)
    /// producer continues at. A producer killed after publishing a record but before storing
    /// `tail` left `tail` behind the true end.
    fn scan_published(&self, from: u64, head: u64) -> Result<u64, RingError> {
        let cap = self.raw.cap;
        let mut t = from;
        loop {
            if t - head > cap {
                return Err(RingError::Corrupted(
                    "published records exceed the capacity",
                ));
            }
            let idx = t & (cap - 1);
            // SAFETY: masked, 8-aligned index into the data region.
            let w = unsafe { load_word(self.raw.at(idx), Ordering::Acquire) };
            if w == 0 {
                return Ok(t);
            } else if w == WRAP {
                t += cap - idx;
            } else if w & !0xFFFF_FFFF == TAG && (w & 0xFFFF_FFFF) <= self.raw.max_record {
                t += align8(HDR + (w & 0xFFFF_FFFF));
            } else {
                return Err(RingError::Corrupted("bad record header"));
            }
        }
    }
}

/// The owner word of a process: `pid << 32 | low 32 bits of its start time`.
fn owner_word(me: multiproc_shm::ProcessId) -> u64 {
    (u64::from(me.pid) << 32) | u64::from(me.start_time as u32)
}

/// Whether the owner a side's word names is alive (reads /proc: slow paths only). A word with
/// pid 0 names nobody alive; a start-time part of 0 (unknown) matches any start time.
fn owner_alive(w: u64) -> bool {
    let (pid, lo) = ((w >> 32) as u32, w as u32);
    pid != 0
        && multiproc_shm::ProcessId::of(pid)
            .is_some_and(|p| (lo == 0 || p.start_time as u32 == lo) && p.is_alive())
}

/// Bound on CAS retries of one attach (only an owner word rewritten in a loop gets near it).
const MAX_ATTACH_TRIES: u32 = 1000;

/// Takes `side` for this process. Returns whether a dead owner was replaced (a takeover).
///
/// The whole ownership is one word, taken with one CAS from the value whose owner we found
/// dead: of several processes (or threads) racing over the same dead owner exactly one CAS
/// succeeds; the others then read the winner's word, find it alive and get `AlreadyAttached`.
/// (With the pid and the start time in two words, a loser read the winner's pid next to the
/// dead owner's start time, judged it dead and took the side too.)
fn attach(side: &Side, name: &'static str) -> Result<bool, RingError> {
    // Acquire: pairs with the Release store in `Side::close`.
    if side.closed.load(Ordering::Acquire) != 0 {
        return Err(RingError::Closed(name));
    }
    let me = owner_word(ident::current());
    // Relaxed (load and CAS): the word is an identity, not a publication of other data; the
    // positions a new owner starts from are loaded separately and validated.
    let mut cur = side.owner.load(Ordering::Relaxed);
    for _ in 0..MAX_ATTACH_TRIES {
        if cur != 0 && owner_alive(cur) {
            return Err(RingError::AlreadyAttached {
                side: name,
                pid: (cur >> 32) as u32,
            });
        }
        match side
            .owner
            .compare_exchange(cur, me, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                if cur != 0 {
                    side.takeovers.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(cur != 0);
            }
            Err(now) => cur = now,
        }
    }
    Err(RingError::Corrupted("side owner keeps changing"))
}

impl serde::Serialize for SpscRing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.handle() {
            Some(h) => h.serialize(s),
            None => Err(serde::ser::Error::custom(
                "a heap ring cannot be sent to another process",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SpscRing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = SegmentHandle::deserialize(d)?;
        SpscRing::open_handle(&h).map_err(serde::de::Error::custom)
    }
}

fn push_wait_err(e: WaitEnd<PushError>) -> PushError {
    match e {
        WaitEnd::Err(e) => e,
        WaitEnd::TimedOut => PushError::Timeout,
    }
}

fn pop_wait_err(e: WaitEnd<PopError>) -> PopError {
    match e {
        WaitEnd::Err(e) => e,
        WaitEnd::TimedOut => PopError::Timeout,
    }
}

use multiproc_shm::deadline::after as deadline_after;

/// The writing end of an [`SpscRing`]. Dropping it closes the producer side: the consumer
/// drains what is left, then sees `Disconnected`.
pub struct Producer {
    raw: Raw,
    /// Our own position (only we write the shared tail).
    tail: u64,
    /// The consumer's position as last read.
    cached_head: u64,
    strategy: WaitStrategy,
    /// This producer replaced a dead one.
    took_over: bool,
    /// Deferred publication (`push_deferred`/`commit_deferred`): the publishing store of the
    /// first written-but-unpublished record (its header, or a WRAP marker), still to be made.
    /// Records after it are fully written (headers stored Relaxed); the consumer cannot see
    /// them because it stops at the terminator this store will replace.
    pending: Option<(u64, u64)>,
    /// Position of the first unpublished record, and how many are unpublished.
    pending_from: u64,
    pending_n: u32,
}

/// A deferred batch is published once it holds this many records...
pub const DEFER_MAX_RECORDS: u32 = 64;

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .finish()
    }
}

/// Where a planned record goes: `skip` padding bytes (a WRAP marker) then `need` bytes.
#[derive(Clone, Copy)]
struct Plan {
    skip: u64,
    need: u64,
}

impl Producer {
    /// Sets how blocking calls wait (default [`WaitStrategy::SpinPark`]).
    pub fn set_wait_strategy(&mut self, s: WaitStrategy) {
        self.strategy = s;
    }

    /// Largest record accepted.
    pub fn max_record(&self) -> usize {
        self.raw.max_record as usize
    }

    /// Whether the consumer closed its end or died.
    pub fn is_disconnected(&self) -> bool {
        self.raw.ctrl().consumer.gone()
    }

    /// Whether the consumer closed its end explicitly (one load of a line this producer
    /// already reads on every publication; no /proc read: a dead consumer is
    /// [`Producer::is_disconnected`]).
    #[inline]
    pub fn peer_closed(&self) -> bool {
        self.raw.ctrl().consumer.closed()
    }

    /// Whether this producer took the side over from a producer that died. The dead producer's
    /// published records are kept (this one continues after them); a record it had reserved
    /// but not committed is gone, so a framing layer above may find its last message cut short.
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    /// Closes the producer side (same as dropping it): the consumer drains what was published,
    /// then gets `Disconnected`; the side cannot be attached again.
    pub fn close(self) {}

    /// Re-reads the consumer's position, checking it.
    #[inline]
    fn refresh_head(&mut self) -> Result<(), PushError> {
        // Acquire: pairs with the consumer's Release store of head in `publish_head`; the
        // consumer's reads of the bytes we are about to overwrite happen-before our writes.
        let h = self.raw.ctrl().head.load(Ordering::Acquire);
        if h < self.cached_head || h > self.tail || !h.is_multiple_of(8) {
            return Err(PushError::Corrupted("head out of range"));
        }
        self.cached_head = h;
        Ok(())
    }

    /// Plans a record of `len` bytes at `self.tail`, refreshing the cached head if needed.
    #[inline]
    fn plan(&mut self, len: usize) -> Result<Plan, PushError> {
        let cap = self.raw.cap;
        if len as u64 > self.raw.max_record {
            return Err(PushError::TooLarge {
                len,
                max: self.raw.max_record as usize,
            });
        }
        let need = align8(HDR + len as u64);
        let to_end = cap - (self.tail & (cap - 1));
        let skip = if need <= to_end { 0 } else { to_end };
        // Room for the record and the terminator word after it.
        let total = skip + need + HDR;
        if self.tail + total - self.cached_head > cap {
            self.refresh_head()?;
            if self.tail + total - self.cached_head > cap {
                if self.raw.ctrl().consumer.closed() {
                    return Err(PushError::Disconnected);
                }
                // A deferred batch must be published before anyone waits for room: the
                // consumer cannot free what it cannot see.
                self.flush();
                return Err(PushError::Full);
            }
        }
        Ok(Plan { skip, need })
    }

    /// The data index of the planned record's payload.
    #[inline]
    fn payload_idx(&self, plan: Plan) -> u64 {
        ((self.tail + plan.skip) & (self.raw.cap - 1)) + HDR
    }

    /// Writes the terminator (and, after a wrap, the header at offset 0) of the record whose
    /// payload is written, advances the local tail, and returns the publishing store still to
    /// be made: `(index, word)` of the header, or of the WRAP marker when the record wrapped.
    #[inline]
    fn finish_deferred(&mut self, plan: Plan, len: usize) -> (u64, u64) {
        let mask = self.raw.cap - 1;
        let rec = self.tail + plan.skip;
        let next = rec + plan.need;
        // SAFETY: both indices are masked (< cap) and 8-aligned; `plan` checked that
        // [tail, next + 8) is free (the consumer is done with it and will not read past a zero
        // header).
        unsafe {
            // The terminator: the consumer stops here until the next header replaces it.
            store_word(self.raw.at(next & mask), 0, Ordering::Relaxed);
            if plan.skip > 0 {
                // Published by the WRAP marker's Release store (made by the caller).
                store_word(self.raw.at(rec & mask), TAG | len as u64, Ordering::Relaxed);
            }
        }
        let publish = if plan.skip > 0 {
            (self.tail & mask, WRAP)
        } else {
            (rec & mask, TAG | len as u64)
        };
        self.tail = next;
        publish
    }

    /// Makes a publishing store returned by `finish_deferred`.
    #[inline]
    fn publish_word(&self, (idx, word): (u64, u64), order: Ordering) {
        // Release (for the first record of a publication): pairs with the consumer's Acquire
        // load of this word in `locate_at_head`; the payload, the terminator and any headers
        // written before are visible once it sees it. Relaxed would let it read stale payload
        // bytes. Later records of a batch are stored Relaxed *before* the first one's Release,
        // so the consumer sees the whole batch at once and does not chase the producer through
        // the lines it is still writing.
        // SAFETY: idx is masked and 8-aligned (from finish_deferred).
        unsafe { store_word(self.raw.at(idx), word, order) };
    }

    /// Publishes the record whose payload is written (and any deferred batch before it).
    #[inline]
    fn finish(&mut self, plan: Plan, len: usize) {
        let p = self.finish_deferred(plan, len);
        match self.pending.take() {
            None => self.publish_word(p, Ordering::Release),
            Some(first) => {
                // Behind the deferred batch: stored before the batch's first word, whose
                // Release store publishes both (as in `try_push_batch`).
                self.publish_word(p, Ordering::Relaxed);
                self.publish_word(first, Ordering::Release);
                self.pending_n = 0;
            }
        }
    }

    /// Writes the record whose payload is written but defers its publication: it joins the
    /// pending batch, which is published by `flush` (or any publishing operation).
    #[inline]
    fn finish_lazy(&mut self, plan: Plan, len: usize) {
        let from = self.tail;
        let p = self.finish_deferred(plan, len);
        if self.pending.is_none() {
            self.pending = Some(p);
            self.pending_from = from;
        } else {
            // Relaxed: published by the Release store of the batch's first word (`flush`).
            self.publish_word(p, Ordering::Relaxed);
        }
        self.pending_n += 1;
        // Publish now if the batch is long enough (bounds what a reader waits for and what a
        // killed writer loses), or if the consumer sleeps (never delay a parked reader).
        // `has_waiters_hint` is a plain load of the consumer's side line (which `peer_closed`
        // reads on every send anyway), without the store-load fence: only the flush pays it.
        if self.pending_n >= DEFER_MAX_RECORDS
            || self.tail - self.pending_from >= self.raw.cap / 8
            || self.raw.ctrl().consumer.park.has_waiters_hint()
        {
            self.flush();
        }
    }

    /// Publishes the deferred batch (records written by [`Producer::push_deferred`] or
    /// [`WriteGrant::commit_deferred`]) and wakes a sleeping consumer. Cheap if nothing is
    /// deferred.
    #[inline]
    pub fn flush(&mut self) {
        if let Some(first) = self.pending.take() {
            self.pending_n = 0;
            self.publish_word(first, Ordering::Release);
            self.publish_tail();
        }
    }

    /// How many records are written but not yet published (deferred).
    pub fn pending(&self) -> usize {
        self.pending_n as usize
    }

    #[inline]
    fn publish_tail(&mut self) {
        let c = self.raw.ctrl();
        // Relaxed: `tail` only tells a re-attaching producer where to start (it re-scans the
        // headers anyway); records are published by their headers.
        c.tail.store(self.tail, Ordering::Relaxed);
        c.consumer.park.wake_one();
    }

    /// Reserves `len` bytes for one record without waiting. Write them through the grant and
    /// `commit` it; dropping the grant abandons the record.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, PushError> {
        let plan = self.plan(len)?;
        Ok(WriteGrant { p: self, plan, len })
    }

    /// Reserves `len` bytes, waiting for room.
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, PushError> {
        let plan = self.plan_wait(len, None)?;
        Ok(WriteGrant { p: self, plan, len })
    }

    /// Reserves `len` bytes, waiting at most `timeout` for room.
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, PushError> {
        let plan = self.plan_wait_for(len, timeout)?;
        Ok(WriteGrant { p: self, plan, len })
    }

    /// Reserves `len` bytes, waiting until `deadline` (`None`: as long as needed) for room.
    /// For callers that computed one deadline for several waits (see
    /// `multiproc_shm::deadline`); the clock is read only if there is no room at once.
    pub fn reserve_deadline(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<WriteGrant<'_>, PushError> {
        let plan = self.plan_wait(len, deadline)?;
        Ok(WriteGrant { p: self, plan, len })
    }

    #[inline]
    fn plan_wait(&mut self, len: usize, deadline: Option<Instant>) -> Result<Plan, PushError> {
        match self.plan(len) {
            Err(PushError::Full) => self.plan_slow(len, deadline),
            r => r,
        }
    }

    /// [`plan_wait`](Self::plan_wait) with a timeout: the clock is read (for the deadline) only
    /// if there is no room at once (a clock read is ~20-25 ns on a VM, on every send).
    #[inline]
    fn plan_wait_for(&mut self, len: usize, timeout: Duration) -> Result<Plan, PushError> {
        match self.plan(len) {
            Err(PushError::Full) => self.plan_slow(len, deadline_after(timeout)),
            r => r,
        }
    }

    #[cold]
    fn plan_slow(&mut self, len: usize, deadline: Option<Instant>) -> Result<Plan, PushError> {
        let raw = self.raw.clone();
        let c = raw.ctrl();
        let strategy = self.strategy;
        wait_for(
            strategy,
            deadline,
            &c.producer.park,
            || match self.plan(len) {
                Err(PushError::Full) => None,
                r => Some(r),
            },
            || c.consumer.gone().then_some(PushError::Disconnected),
        )
        .map_err(push_wait_err)
    }

    /// Whether a record of `len` bytes would fit now, from a fresh reading of the consumer's
    /// position (no state change; `true` on anything odd, so the caller's `plan` reports it).
    fn room_for(&self, len: usize) -> bool {
        let cap = self.raw.cap;
        let c = self.raw.ctrl();
        if len as u64 > self.raw.max_record || c.consumer.closed() {
            return true;
        }
        let need = align8(HDR + len as u64);
        let to_end = cap - (self.tail & (cap - 1));
        let skip = if need <= to_end { 0 } else { to_end };
        // Acquire: as in `refresh_head`.
        let h = c.head.load(Ordering::Acquire);
        h < self.cached_head || h > self.tail || self.tail + skip + need + HDR - h <= cap
    }

    /// Async readiness: `Ready(Ok)` once a record of `len` bytes fits (reserve it with
    /// [`Producer::try_reserve`] in the same poll), `Ready(Err)` with what a blocking reserve
    /// would return (`Disconnected` once the consumer closed or died, `TooLarge`, `Corrupted`);
    /// `Pending` after registering with the notifier (`multiproc_sync::notify`) on the
    /// producer's park word, which the consumer wakes when it frees space. Checks the
    /// consumer's liveness about every [`CHECK_EVERY`](crate::CHECK_EVERY), as a blocked
    /// reserve does. Takes nothing: cancel-safe.
    #[cfg(not(loom))]
    pub fn poll_writable(
        &mut self,
        cx: &mut std::task::Context<'_>,
        w: &mut multiproc_sync::notify::AsyncWait,
        len: usize,
    ) -> std::task::Poll<Result<(), PushError>> {
        use std::task::Poll;
        loop {
            match self.plan(len) {
                Err(PushError::Full) => {}
                r => {
                    w.cancel();
                    return Poll::Ready(r.map(drop));
                }
            }
            if w.check_due(crate::CHECK_EVERY) && self.raw.ctrl().consumer.gone() {
                w.cancel();
                return Poll::Ready(Err(PushError::Disconnected));
            }
            let shared = &self.raw.shared;
            match w.poll_shared(
                cx,
                shared,
                |c| &c.producer.park,
                || self.room_for(len).then_some(()),
            ) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    #[inline]
    fn write_record(&mut self, plan: Plan, rec: &[u8]) {
        let idx = self.payload_idx(plan);
        // SAFETY: bytes [idx, idx + len) lie inside the data region (plan checked the record fits
        // before the end) and belong to the producer until its header is published: the
        // consumer reads nothing past a zero header, and the Acquire load of head in
        // `refresh_head` ordered its last reads of them before this write.
        unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), self.raw.at(idx), rec.len()) };
        self.finish(plan, rec.len());
    }

    /// Copies one record in without waiting.
    #[inline]
    pub fn try_push(&mut self, rec: &[u8]) -> Result<(), PushError> {
        let plan = self.plan(rec.len())?;
        self.write_record(plan, rec);
        self.publish_tail();
        Ok(())
    }

    /// Copies one record in, waiting for room.
    #[inline]
    pub fn push(&mut self, rec: &[u8]) -> Result<(), PushError> {
        let plan = self.plan_wait(rec.len(), None)?;
        self.write_record(plan, rec);
        self.publish_tail();
        Ok(())
    }

    /// Copies one record in, waiting at most `timeout` for room.
    pub fn push_timeout(&mut self, rec: &[u8], timeout: Duration) -> Result<(), PushError> {
        let plan = self.plan_wait_for(rec.len(), timeout)?;
        self.write_record(plan, rec);
        self.publish_tail();
        Ok(())
    }

    /// Copies one record in, waiting for room, and defers its publication (a `BufWriter` for
    /// the ring): the record joins a batch that is published with one Release store, one fence
    /// and at most one wake-up, when
    /// * the batch holds [`DEFER_MAX_RECORDS`] records or `capacity / 8` bytes,
    /// * this producer sees the consumer asleep (checked on every deferred push, with a plain
    ///   load: a consumer that falls asleep *while* this push runs may be missed),
    /// * the ring is full (before any wait for room),
    /// * [`Producer::flush`], any publishing push/commit, or drop.
    ///
    /// So a deferred record is visible to the consumer at the latest at the producer's next
    /// publication: a producer that goes idle must `flush`. If the producer dies first, its
    /// unpublished records are lost (a replacement producer starts at the last published one).
    #[inline]
    pub fn push_deferred(&mut self, rec: &[u8]) -> Result<(), PushError> {
        let plan = self.plan_wait(rec.len(), None)?;
        let idx = self.payload_idx(plan);
        // SAFETY: as in `write_record`.
        unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), self.raw.at(idx), rec.len()) };
        self.finish_lazy(plan, rec.len());
        Ok(())
    }

    /// Copies in as many of `recs` as fit now, publishing them with one store (and at most one
    /// wake-up). Returns how many were written; `Full` if none fit.
    pub fn try_push_batch<R: AsRef<[u8]>>(&mut self, recs: &[R]) -> Result<usize, PushError> {
        let mut n = 0;
        // A deferred batch goes out with this one.
        let mut first = self.pending.take();
        self.pending_n = 0;
        for r in recs {
            let r = r.as_ref();
            match self.plan(r.len()) {
                Ok(plan) => {
                    let idx = self.payload_idx(plan);
                    // SAFETY: as in `write_record`.
                    unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), self.raw.at(idx), r.len()) };
                    let p = self.finish_deferred(plan, r.len());
                    if first.is_none() {
                        first = Some(p);
                    } else {
                        self.publish_word(p, Ordering::Relaxed);
                    }
                }
                Err(e) if n == 0 => {
                    if let Some(p) = first {
                        self.publish_word(p, Ordering::Release);
                        self.publish_tail();
                    }
                    return Err(e);
                }
                Err(_) => break,
            }
            n += 1;
        }
        if let Some(p) = first {
            self.publish_word(p, Ordering::Release);
            self.publish_tail();
        }
        Ok(n)
    }

    /// Copies in all of `recs`, waiting for room as needed (publishing once per batch that fits).
    pub fn push_batch<R: AsRef<[u8]>>(&mut self, recs: &[R]) -> Result<(), PushError> {
        self.push_batch_deadline(recs, None)
    }

    /// [`Producer::push_batch`] with a deadline for the whole batch; on `Timeout` some records
    /// may have been written (as with a partial socket write).
    pub fn push_batch_timeout<R: AsRef<[u8]>>(
        &mut self,
        recs: &[R],
        timeout: Duration,
    ) -> Result<(), PushError> {
        self.push_batch_deadline(recs, deadline_after(timeout))
    }

    fn push_batch_deadline<R: AsRef<[u8]>>(
        &mut self,
        mut recs: &[R],
        deadline: Option<Instant>,
    ) -> Result<(), PushError> {
        while !recs.is_empty() {
            let n = match self.try_push_batch(recs) {
                Ok(n) => n,
                Err(PushError::Full) => {
                    let plan = self.plan_slow(recs[0].as_ref().len(), deadline)?;
                    self.write_record(plan, recs[0].as_ref());
                    self.publish_tail();
                    1
                }
                Err(e) => return Err(e),
            };
            recs = &recs[n..];
        }
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Flush on drop: the deferred batch is published before the side closes.
        if let Some(first) = self.pending.take() {
            self.publish_word(first, Ordering::Release);
        }
        let c = self.raw.ctrl();
        c.producer.close();
        c.consumer.park.wake_all();
    }
}

/// A reserved, not yet published record: write its bytes, then [`commit`](WriteGrant::commit).
/// Dropping it abandons the record (nothing is published).
pub struct WriteGrant<'a> {
    p: &'a mut Producer,
    plan: Plan,
    len: usize,
}

impl std::fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.len)
            .finish()
    }
}

impl WriteGrant<'_> {
    /// The reserved bytes, in the ring. They hold whatever was there before.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let idx = self.p.payload_idx(self.plan);
        // SAFETY: [idx, idx + len) lies inside the data region (plan) and is owned by the
        // producer until the tail passes it (see `write_record`); the memory is initialized
        // (zeroed at creation, written since) and u8 has no invalid values. The &mut borrows
        // the grant, which borrows the producer exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.p.raw.at(idx), self.len) }
    }

    /// Reserved length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether zero bytes were reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Publishes the record (all reserved bytes).
    #[inline]
    pub fn commit(self) {
        let n = self.len;
        self.commit_len(n);
    }

    /// Publishes the record shortened to its first `n` bytes (`n` is clamped to the reserved
    /// length).
    #[inline]
    pub fn commit_len(self, n: usize) {
        let n = n.min(self.len);
        let plan = Plan {
            skip: self.plan.skip,
            need: align8(HDR + n as u64),
        };
        self.p.finish(plan, n);
        self.p.publish_tail();
    }

    /// [`WriteGrant::commit_len`] with deferred publication: see [`Producer::push_deferred`].
    #[inline]
    pub fn commit_len_deferred(self, n: usize) {
        let n = n.min(self.len);
        let plan = Plan {
            skip: self.plan.skip,
            need: align8(HDR + n as u64),
        };
        self.p.finish_lazy(plan, n);
    }

    /// [`WriteGrant::commit`] with deferred publication: see [`Producer::push_deferred`].
    #[inline]
    pub fn commit_deferred(self) {
        let n = self.len;
        self.commit_len_deferred(n);
    }
}

/// The reading end of an [`SpscRing`]. Dropping it closes the consumer side: the producer's
/// writes then fail with `Disconnected`.
pub struct Consumer {
    raw: Raw,
    /// Our position (records before it are consumed).
    head: u64,
    /// The position last stored to the shared `head`: space is handed back to the producer
    /// lazily, every `capacity / 8` bytes or when the ring runs empty, which keeps the head
    /// line and the wake-up fence off the per-record path. (The shared `taken` is stored on
    /// every record: see `docs/ring.md`, "Takeover".)
    published: u64,
    strategy: WaitStrategy,
    /// The async receives' adaptive spin (process-local; `poll_readable`).
    budget: multiproc_sync::park::SpinBudget,
    /// This consumer replaced a dead one.
    took_over: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

/// Where the next record is: padding to skip, data index, length.
#[derive(Clone, Copy)]
struct Loc {
    skip: u64,
    idx: u64,
    len: u64,
}

impl Loc {
    #[inline]
    fn advance(&self) -> u64 {
        self.skip + align8(HDR + self.len)
    }
}

impl Consumer {
    /// Sets how blocking calls wait (default [`WaitStrategy::SpinPark`]).
    pub fn set_wait_strategy(&mut self, s: WaitStrategy) {
        self.strategy = s;
    }

    /// Largest record the ring accepts.
    pub fn max_record(&self) -> usize {
        self.raw.max_record as usize
    }

    /// Whether the producer closed its end or died (records may still be left to read).
    pub fn is_disconnected(&self) -> bool {
        self.raw.ctrl().producer.gone()
    }

    /// Whether this consumer took the side over from a consumer that died. It starts after the
    /// last record the dead consumer was handed (popped, or released after a peek), so it may
    /// start in the middle of a message of a framing layer above (the dead consumer took its
    /// first records), and it gets again a record the dead one was only peeking at. See
    /// `docs/ring.md`, "Takeover".
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    /// Closes the consumer side (same as dropping it): the producer's writes then fail with
    /// `Disconnected`; the side cannot be attached again.
    pub fn close(self) {}

    /// Whether no published record is waiting.
    pub fn is_empty(&mut self) -> bool {
        matches!(self.locate_at_head(), Err(PopError::Empty))
    }

    /// Finds the next record; `Disconnected` if there is none and the producer closed.
    #[inline]
    fn locate(&mut self) -> Result<Loc, PopError> {
        // Not recursive, so it inlines into the pop/peek paths (the empty case is out of line).
        match self.locate_at_head() {
            Err(PopError::Empty) => self.locate_empty(),
            r => r,
        }
    }

    /// `locate` found the ring empty: hand every consumed byte back before reporting it, and
    /// tell a closed producer from an empty ring.
    #[inline(never)]
    fn locate_empty(&mut self) -> Result<Loc, PopError> {
        if self.head != self.published {
            self.publish_head();
            match self.locate_at_head() {
                Err(PopError::Empty) => {}
                r => return r,
            }
        }
        if self.raw.ctrl().producer.closed() {
            // Records published before the close are visible after its Acquire load.
            return match self.locate_at_head() {
                Err(PopError::Empty) => Err(PopError::Disconnected),
                r => r,
            };
        }
        Err(PopError::Empty)
    }

    /// Reads and checks the header at `head` (and after a WRAP marker, at offset 0).
    #[inline]
    fn locate_at_head(&self) -> Result<Loc, PopError> {
        let cap = self.raw.cap;
        let mut idx = self.head & (cap - 1);
        let mut skip = 0;
        // Acquire: pairs with the producer's Release store of the header (or WRAP marker) in
        // `finish`; the payload is visible once the header is.
        // SAFETY: idx is masked (< cap) and 8-aligned (head is a multiple of 8).
        let mut w = unsafe { load_word(self.raw.at(idx), Ordering::Acquire) };
        if w == 0 {
            return Err(PopError::Empty);
        }
        if w == WRAP {
            skip = cap - idx;
            idx = 0;
            // Acquire: as above (the header at 0 was written before the WRAP's Release).
            // SAFETY: index 0 is in bounds and aligned.
            w = unsafe { load_word(self.raw.at(0), Ordering::Acquire) };
        }
        if w & !0xFFFF_FFFF != TAG {
            return Err(PopError::Corrupted("bad record header"));
        }
        let len = w & 0xFFFF_FFFF;
        if len > self.raw.max_record {
            return Err(PopError::Corrupted(
                "record length exceeds the max record size",
            ));
        }
        let need = align8(HDR + len);
        if need > cap - idx || skip + need > cap {
            return Err(PopError::Corrupted("record extends past the buffer"));
        }
        Ok(Loc {
            skip,
            idx: idx + HDR,
            len,
        })
    }

    /// Consumes `adv` bytes; publishes the head once enough accumulated, or when the ring is
    /// now empty (so a drained ring always gives the producer all its space back).
    #[inline]
    fn advance(&mut self, adv: u64) {
        self.head += adv;
        self.store_taken();
        if self.head - self.published >= self.raw.cap / 8 || self.next_is_empty() {
            self.publish_head();
        }
    }

    /// Whether the word at `head` is a terminator (nothing more published yet).
    #[inline]
    fn next_is_empty(&self) -> bool {
        // Relaxed: a hint only (a stale non-zero value just delays the publication to the next
        // empty check in `locate`).
        // SAFETY: masked, 8-aligned index into the data region.
        unsafe {
            load_word(
                self.raw.at(self.head & (self.raw.cap - 1)),
                Ordering::Relaxed,
            ) == 0
        }
    }

    /// Records `head` as handed out, before the record is returned to the caller: a consumer
    /// that replaces this one after its death starts there (no re-delivery of taken records).
    #[inline]
    fn store_taken(&self) {
        // Relaxed: read only by a replacement consumer after this process died; it carries no
        // data (the bytes are handed back to the producer by `head`'s Release store). The line
        // is ours alone, so the store stays in L1.
        self.raw.ctrl().taken.store(self.head, Ordering::Relaxed);
    }

    #[inline]
    fn publish_head(&mut self) {
        self.published = self.head;
        // `taken` never lags `head` (a replacement consumer checks `head <= taken`).
        self.store_taken();
        let c = self.raw.ctrl();
        // Release: pairs with the producer's Acquire load of head in `refresh_head`; our reads
        // of the released bytes happen-before its overwrites of them.
        c.head.store(self.head, Ordering::Release);
        c.producer.park.wake_one();
    }

    #[inline]
    fn slice(&self, loc: Loc) -> &[u8] {
        // SAFETY: [idx, idx + len) is inside the data region (checked in locate_at_head); the
        // producer wrote it before its Release store of the header we Acquire-loaded, and will
        // not write it again until we publish a head past it.
        unsafe { std::slice::from_raw_parts(self.raw.at(loc.idx), loc.len as usize) }
    }

    #[inline]
    fn locate_wait(&mut self, deadline: Option<Instant>) -> Result<Loc, PopError> {
        match self.locate() {
            Err(PopError::Empty) => self.locate_slow(deadline),
            r => r,
        }
    }

    /// [`locate_wait`](Self::locate_wait) with a timeout: the clock is read (for the deadline)
    /// only if no record is waiting.
    #[inline]
    fn locate_wait_for(&mut self, timeout: Duration) -> Result<Loc, PopError> {
        match self.locate() {
            Err(PopError::Empty) => self.locate_slow(deadline_after(timeout)),
            r => r,
        }
    }

    #[cold]
    fn locate_slow(&mut self, deadline: Option<Instant>) -> Result<Loc, PopError> {
        let raw = self.raw.clone();
        let c = raw.ctrl();
        let dead = std::cell::Cell::new(false);
        wait_for(
            self.strategy,
            deadline,
            &c.consumer.park,
            || match self.locate() {
                Err(PopError::Empty) if dead.get() => Some(Err(PopError::Disconnected)),
                Err(PopError::Empty) => None,
                r => Some(r),
            },
            || {
                dead.set(c.producer.gone());
                None
            },
        )
        .map_err(pop_wait_err)
    }

    /// Async readiness: `Ready(Ok)` once a record is waiting (take it with
    /// [`Consumer::try_peek`]/[`Consumer::try_pop_into`] in the same poll), `Ready(Err)` with
    /// what a blocking peek would return (`Disconnected` once the ring is drained and the
    /// producer closed or died, `Corrupted`); `Pending` after registering with the notifier
    /// (`multiproc_sync::notify`) on the consumer's park word, which every publication wakes.
    /// Before registering it spins per this consumer's wait strategy
    /// (`AsyncWait::spin`: adaptive, at most `notify::ASYNC_SPIN_MAX` hints; none with `Park`).
    /// Checks the producer's liveness about every [`CHECK_EVERY`](crate::CHECK_EVERY), as a
    /// blocked peek does. Takes nothing: cancel-safe.
    #[cfg(not(loom))]
    pub fn poll_readable(
        &mut self,
        cx: &mut std::task::Context<'_>,
        w: &mut multiproc_sync::notify::AsyncWait,
    ) -> std::task::Poll<Result<(), PopError>> {
        use std::task::Poll;
        loop {
            match self.locate() {
                Err(PopError::Empty) => {}
                r => {
                    w.cancel();
                    return Poll::Ready(r.map(drop));
                }
            }
            // Spin phase (per this consumer's strategy, adaptive): a record published within it
            // is taken without registering.
            if w.spin(self.strategy.into(), &self.budget, || {
                !matches!(self.locate_at_head(), Err(PopError::Empty))
            }) {
                continue;
            }
            if w.check_due(crate::CHECK_EVERY) && self.raw.ctrl().producer.gone() {
                w.cancel();
                // Records published before the death are still delivered.
                return Poll::Ready(match self.locate() {
                    Err(PopError::Empty) => Err(PopError::Disconnected),
                    r => r.map(drop),
                });
            }
            let shared = &self.raw.shared;
            let ctrl = self.raw.ctrl();
            match w.poll_shared(
                cx,
                shared,
                |c| &c.consumer.park,
                || {
                    (!matches!(self.locate_at_head(), Err(PopError::Empty))
                        || ctrl.producer.closed())
                    .then_some(())
                },
            ) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next record, in place, without waiting. [`release`](ReadGrant::release) it when done;
    /// dropping the grant leaves the record in the ring.
    #[inline]
    pub fn try_peek(&mut self) -> Result<ReadGrant<'_>, PopError> {
        let loc = self.locate()?;
        Ok(ReadGrant { c: self, loc })
    }

    /// The next record, waiting for one.
    pub fn peek(&mut self) -> Result<ReadGrant<'_>, PopError> {
        let loc = self.locate_wait(None)?;
        Ok(ReadGrant { c: self, loc })
    }

    /// The next record, waiting at most `timeout`.
    pub fn peek_timeout(&mut self, timeout: Duration) -> Result<ReadGrant<'_>, PopError> {
        let loc = self.locate_wait_for(timeout)?;
        Ok(ReadGrant { c: self, loc })
    }

    /// The next record, waiting until `deadline` (`None`: as long as needed). For callers that
    /// computed one deadline for several waits (see `multiproc_shm::deadline`); the clock is
    /// read only if no record is waiting.
    pub fn peek_deadline(&mut self, deadline: Option<Instant>) -> Result<ReadGrant<'_>, PopError> {
        let loc = self.locate_wait(deadline)?;
        Ok(ReadGrant { c: self, loc })
    }

    #[inline]
    fn take_into(&mut self, loc: Loc, out: &mut Vec<u8>) -> usize {
        out.clear();
        out.extend_from_slice(self.slice(loc));
        self.advance(loc.advance());
        loc.len as usize
    }

    /// Copies the next record into `out` (replacing its contents) without waiting; returns its
    /// length.
    #[inline]
    pub fn try_pop_into(&mut self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        let loc = self.locate()?;
        Ok(self.take_into(loc, out))
    }

    /// Copies the next record into `out`, waiting for one.
    #[inline]
    pub fn pop_into(&mut self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        let loc = self.locate_wait(None)?;
        Ok(self.take_into(loc, out))
    }

    /// Copies the next record into `out`, waiting at most `timeout`.
    pub fn pop_into_timeout(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, PopError> {
        let loc = self.locate_wait_for(timeout)?;
        Ok(self.take_into(loc, out))
    }

    /// Hands up to `max` waiting records to `f` in place, then releases them with one store (and
    /// at most one wake-up). Returns how many; `Empty` if none.
    pub fn try_pop_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, PopError> {
        let mut n = 0;
        while n < max {
            match self.locate() {
                Ok(loc) => {
                    f(self.slice(loc));
                    self.head += loc.advance();
                    if self.head - self.published >= self.raw.cap / 8 {
                        self.publish_head();
                    }
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
            n += 1;
        }
        if n > 0 {
            // The batch is taken as a whole when the call returns (one store, not one per
            // record): a consumer that dies inside the closure has its unfinished batch
            // delivered again, from the last publication on (see docs/ring.md, "Takeover").
            self.store_taken();
            if self.head - self.published >= self.raw.cap / 8 || self.next_is_empty() {
                self.publish_head();
            }
        }
        Ok(n)
    }

    /// Waits for at least one record, then hands up to `max` to `f` (see
    /// [`Consumer::try_pop_batch`]).
    pub fn pop_batch(&mut self, max: usize, f: impl FnMut(&[u8])) -> Result<usize, PopError> {
        self.pop_batch_deadline(max, f, None)
    }

    /// [`Consumer::pop_batch`] waiting at most `timeout` for the first record.
    pub fn pop_batch_timeout(
        &mut self,
        max: usize,
        f: impl FnMut(&[u8]),
        timeout: Duration,
    ) -> Result<usize, PopError> {
        self.pop_batch_deadline(max, f, deadline_after(timeout))
    }

    fn pop_batch_deadline(
        &mut self,
        max: usize,
        f: impl FnMut(&[u8]),
        deadline: Option<Instant>,
    ) -> Result<usize, PopError> {
        if max == 0 {
            return Ok(0);
        }
        self.locate_wait(deadline)?;
        self.try_pop_batch(max, f)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.publish_head();
        let c = self.raw.ctrl();
        c.consumer.close();
        c.producer.park.wake_all();
    }
}

/// A record in the ring, read in place. [`release`](ReadGrant::release) frees its bytes;
/// dropping the grant without releasing leaves it to be read again.
pub struct ReadGrant<'a> {
    c: &'a mut Consumer,
    loc: Loc,
}

impl std::fmt::Debug for ReadGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGrant")
            .field("len", &self.loc.len)
            .finish()
    }
}

impl ReadGrant<'_> {
    /// The record's bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        self.c.slice(self.loc)
    }

    /// The record's length.
    pub fn len(&self) -> usize {
        self.loc.len as usize
    }

    /// Whether the record is empty.
    pub fn is_empty(&self) -> bool {
        self.loc.len == 0
    }

    /// Frees the record's bytes for the producer.
    #[inline]
    pub fn release(self) {
        self.c.advance(self.loc.advance());
    }
}

/// One side of a ring as a tool sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideStats {
    /// The pid that attached (0: never attached).
    pub pid: u32,
    /// Attached and still alive (pid + start time), and not closed.
    pub alive: bool,
    /// Closed explicitly.
    pub closed: bool,
}

/// A snapshot of an SPSC ring's state, for tools (`multiproc ls`/`inspect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpscStats {
    /// Data bytes of the ring.
    pub capacity: u64,
    /// Bytes written and not yet consumed (record headers and padding included).
    pub pending_bytes: u64,
    /// The producer side.
    pub producer: SideStats,
    /// The consumer side.
    pub consumer: SideStats,
}

fn side_stats(s: &Side) -> SideStats {
    let w = s.owner.load(Ordering::Relaxed);
    let closed = s.closed();
    SideStats {
        pid: (w >> 32) as u32,
        alive: w != 0 && !closed && owner_alive(w),
        closed,
    }
}

/// Reads an SPSC ring's control block without attaching to either side.
///
/// `seg` must be a segment of kind [`ObjectKind::SpscRing`]; its size and the control block
/// (magic, capacity) are validated as `from_segment` does, so a corrupted segment gives an error
/// or a meaningless number, never UB.
pub fn stats_of(seg: &Segment) -> Result<SpscStats, RingError> {
    if seg.header().object_kind() != Some(ObjectKind::SpscRing) {
        return Err(RingError::Corrupted("not an SPSC ring segment"));
    }
    let raw = Raw::new(Shared::from_segment(seg.clone()).map_err(ring_err)?);
    let c = raw.ctrl();
    let tail = c.tail.load(Ordering::Relaxed);
    let head = c.head.load(Ordering::Relaxed);
    Ok(SpscStats {
        capacity: raw.cap,
        pending_bytes: tail.wrapping_sub(head).min(raw.cap),
        producer: side_stats(&c.producer),
        consumer: side_stats(&c.consumer),
    })
}
