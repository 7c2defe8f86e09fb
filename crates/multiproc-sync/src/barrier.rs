//! `Barrier`: a process-shared barrier for a fixed number of parties (Python's
//! `multiprocessing.Barrier`).
//!
//! Algorithm: one futex word packs `arrived` (bits 0..10), a `BROKEN` bit (bit 10) and a
//! generation (bits 11..32). A party CASes `arrived + 1` (its arrival index is the old value);
//! the last one (`index == parties - 1`) runs the action, then stores `(generation + 1,
//! arrived 0)` and wakes everyone. The others futex-wait until the generation changes. While
//! the last party runs the action `arrived == parties`, so an early party of the next round
//! waits for the new generation instead of joining the old one. `abort` sets `BROKEN`; `reset`
//! records the generation it cancels in `aborted_gen` and starts a new one, so parties still
//! waiting in the cancelled generation see BrokenBarrier, as in Python.
//!
//! Death: a party registers its identity (pid + start time) in a slot table for as long as it is
//! inside `wait`. Waiters park 20 ms at a time and then check the registered parties: a dead one
//! breaks the barrier (every waiter gets [`BarrierError::Broken`]) and its slot is freed. A party
//! that dies *between* rounds is not registered; the others then wait until their timeout (the
//! barrier's default timeout applies), which also breaks the barrier, as in Python.
//!
//! ```
//! use multiproc_sync::Barrier;
//! let b = Barrier::new(1).unwrap();
//! assert_eq!(b.wait(), Ok(0));
//! b.abort();
//! assert!(b.broken());
//! b.reset();
//! assert_eq!(b.wait(), Ok(0));
//! ```

use crate::facade::{AtomicU32, AtomicU64, Ordering};
use crate::futex;
use crate::ident;
use crate::shared::{Stop, TICK, block_on, deadline_after, serde_as_handle};
use multiproc_shm::{ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most parties a barrier can have.
pub const MAX_PARTIES: u32 = 64;
/// Registration slots (parties plus early arrivals of the next round).
const REG_SLOTS: usize = 2 * MAX_PARTIES as usize;

const ARRIVED_MASK: u32 = (1 << 10) - 1;
const BROKEN: u32 = 1 << 10;
const GEN_SHIFT: u32 = 11;
const NO_TIMEOUT: u64 = u64::MAX;

/// Errors of barrier operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is broken (abort, reset, a timeout, a failed action, or a dead party)
    /// (Python: BrokenBarrierError).
    #[error("the barrier is broken")]
    Broken,
    /// This party's timeout passed; the barrier is now broken for everyone.
    #[error("timed out waiting at the barrier; it is now broken")]
    Timeout,
    /// `parties` out of range.
    #[error("parties must be 1..={MAX_PARTIES}, got {0}")]
    BadParties(u32),
}

/// Errors creating a barrier.
#[derive(Debug, thiserror::Error)]
pub enum BarrierCreateError {
    /// `parties` out of range.
    #[error("parties must be 1..={MAX_PARTIES}, got {0}")]
    BadParties(u32),
    /// The segment.
    #[error(transparent)]
    Shm(#[from] ShmError),
}

/// Shared state of a [`Barrier`] (public for loom models).
#[doc(hidden)]
#[repr(C)]
pub struct BarrierState {
    word: AtomicU32,
    waiters: AtomicU32,
    parties: AtomicU32,
    aborted_gen: AtomicU32,
    default_timeout_ns: AtomicU64,
    reg: [AtomicU64; REG_SLOTS],
}

/// What a [`Barrier`] validated once and then uses locally: the number of parties.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierGeometry {
    /// Parties, `1..=MAX_PARTIES`.
    pub parties: u32,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern is a valid state; a corrupted word gives
// errors or timeouts), align 8 <= 256, no Drop. `parties` bounds the arrival index: validated
// once here and used from the local copy after.
unsafe impl SharedLayout for BarrierState {
    const KIND: ObjectKind = ObjectKind::Barrier;
    type Geometry = BarrierGeometry;
    fn validate(&self, _tail_len: usize) -> Result<BarrierGeometry, ShmError> {
        // Relaxed: written once by the creator before Ready (the header's Ready flag orders it).
        let parties = self.parties.load(Ordering::Relaxed);
        if parties == 0 || parties > MAX_PARTIES {
            return Err(ShmError::OutOfRange {
                what: "barrier parties",
                found: u64::from(parties),
                limit: u64::from(MAX_PARTIES),
            });
        }
        Ok(BarrierGeometry { parties })
    }
}

#[inline]
fn gen_of(w: u32) -> u32 {
    w >> GEN_SHIFT
}

#[inline]
fn next_gen(w: u32) -> u32 {
    (gen_of(w).wrapping_add(1)) << GEN_SHIFT
}

impl BarrierState {
    /// A barrier for `parties` (1..=MAX_PARTIES).
    pub fn new(parties: u32, timeout: Option<Duration>) -> Self {
        BarrierState {
            word: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            parties: AtomicU32::new(parties),
            aborted_gen: AtomicU32::new(u32::MAX),
            default_timeout_ns: AtomicU64::new(timeout.map_or(NO_TIMEOUT, |d| {
                d.as_nanos().min(u128::from(NO_TIMEOUT - 1)) as u64
            })),
            reg: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The default timeout.
    pub fn default_timeout(&self) -> Option<Duration> {
        match self.default_timeout_ns.load(Ordering::Relaxed) {
            NO_TIMEOUT => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    fn register(&self, me: u64) -> Option<usize> {
        (0..REG_SLOTS).find(|&i| {
            self.reg[i].load(Ordering::Relaxed) == 0
                && self.reg[i]
                    // Release: our identity is visible to death checkers (Acquire below).
                    .compare_exchange(0, me, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
        })
    }

    fn unregister(&self, slot: Option<usize>) {
        if let Some(i) = slot {
            self.reg[i % REG_SLOTS].store(0, Ordering::Relaxed);
        }
    }

    /// Whether a registered party is dead; frees dead slots.
    fn any_dead(&self) -> bool {
        let my_pid = ident::process().0;
        let mut dead = false;
        for r in &self.reg {
            // Acquire: pairs with register's Release.
            let w = r.load(Ordering::Acquire);
            if w != 0 && ident::unpack(w).pid != my_pid && !ident::packed_alive(w) {
                let _ = r.compare_exchange(w, 0, Ordering::Relaxed, Ordering::Relaxed);
                dead = true;
            }
        }
        dead
    }

    /// Sets BROKEN if the word is still in generation `g`. Returns the word after.
    fn break_gen(&self, g: u32) -> u32 {
        // SeqCst for the store-load pattern with waiters below.
        let mut w = self.word.load(Ordering::SeqCst);
        loop {
            if gen_of(w) != g || w & BROKEN != 0 {
                return w;
            }
            match self
                .word
                .compare_exchange(w, w | BROKEN, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.wake_all();
                    return w | BROKEN;
                }
                Err(x) => w = x,
            }
        }
    }

    fn wake_all(&self) {
        // SeqCst: load half of the store-load pattern (see shared::block_on).
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&self.word);
        }
    }

    /// Python `abort`.
    pub fn abort(&self) {
        let w = self.word.load(Ordering::SeqCst);
        self.break_gen(gen_of(w));
    }

    /// Python `reset`.
    pub fn reset(&self) {
        let mut w = self.word.load(Ordering::SeqCst);
        loop {
            // Relaxed is enough: the SeqCst CAS below publishes it (waiters read it after
            // seeing the new generation with SeqCst loads).
            self.aborted_gen.store(gen_of(w), Ordering::Relaxed);
            // SeqCst: Release for the aborted_gen store, and store half for waiters.
            match self
                .word
                .compare_exchange(w, next_gen(w), Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(x) => w = x,
            }
        }
        self.any_dead();
        self.wake_all();
    }

    /// Whether broken.
    pub fn broken(&self) -> bool {
        self.word.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// Parties currently waiting.
    pub fn n_waiting(&self, g: BarrierGeometry) -> u32 {
        let w = self.word.load(Ordering::Relaxed);
        (w & ARRIVED_MASK).min(g.parties)
    }

    /// The wait; `action` runs in the last party before the others are released.
    pub fn wait(
        &self,
        geo: BarrierGeometry,
        deadline: Option<Instant>,
        action: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Result<u32, BarrierError> {
        let (_, me) = ident::process();
        let slot = self.register(me);
        let r = self.wait_registered(geo.parties, deadline, action);
        self.unregister(slot);
        r
    }

    fn wait_registered(
        &self,
        parties: u32,
        deadline: Option<Instant>,
        action: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Result<u32, BarrierError> {
        // Arrive.
        let (idx, g) = loop {
            // SeqCst: load half of the store-load pattern with `waiters`, Acquire of the
            // previous round's release.
            let w = self.word.load(Ordering::SeqCst);
            if w & BROKEN != 0 {
                return Err(BarrierError::Broken);
            }
            let a = w & ARRIVED_MASK;
            if a >= parties {
                // The last party of this generation is running the action: wait for the next.
                self.park_while(w, deadline, gen_of(w))?;
                continue;
            }
            // SeqCst: the arrival CAS; its Release half publishes this party's writes before
            // the barrier to the last party (and through its release store, to everyone).
            if self
                .word
                .compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break (a, gen_of(w));
            }
        };
        if idx + 1 == parties {
            if let Some(f) = action {
                let run = std::panic::catch_unwind(AssertUnwindSafe(f));
                if let Err(p) = run {
                    self.break_gen(g);
                    std::panic::resume_unwind(p);
                }
            }
            let mut w = self.word.load(Ordering::SeqCst);
            loop {
                if gen_of(w) != g || w & BROKEN != 0 {
                    // Aborted or reset while the action ran.
                    return Err(BarrierError::Broken);
                }
                // SeqCst: Release of the whole round to the waiters' Acquire loads, and the
                // store half of the store-load pattern with `waiters`.
                match self
                    .word
                    .compare_exchange(w, next_gen(w), Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => break,
                    Err(x) => w = x,
                }
            }
            self.wake_all();
            return Ok(idx);
        }
        loop {
            let w = self.word.load(Ordering::SeqCst);
            if gen_of(w) != g {
                // Relaxed: ordered after the SeqCst load that saw the new generation.
                return if self.aborted_gen.load(Ordering::Relaxed) == g {
                    Err(BarrierError::Broken)
                } else {
                    Ok(idx)
                };
            }
            if w & BROKEN != 0 {
                return Err(BarrierError::Broken);
            }
            self.park_while(w, deadline, g)?;
        }
    }

    /// Parks while the word still reads `w` (bounded, with death checks). On this party's
    /// deadline or a dead party, breaks generation `g` and fails.
    fn park_while(&self, w: u32, deadline: Option<Instant>, g: u32) -> Result<(), BarrierError> {
        let r = block_on(
            &self.word,
            &self.waiters,
            deadline,
            Some(TICK),
            || {
                if self.word.load(Ordering::SeqCst) != w {
                    Ok(true)
                } else {
                    Err(w)
                }
            },
            || self.any_dead().then_some(false),
        );
        match r {
            Ok(true) => Ok(()),
            Ok(false) => {
                // A party died: break this generation (if a round completed meanwhile the
                // caller sees the new generation and carries on).
                self.break_gen(g);
                Ok(())
            }
            Err(Stop::Timeout) => {
                let after = self.break_gen(g);
                if gen_of(after) != g && self.aborted_gen.load(Ordering::Relaxed) != g {
                    // The round completed just as we timed out.
                    return Ok(());
                }
                Err(BarrierError::Timeout)
            }
        }
    }
}

type Action = Arc<dyn Fn() + Send + Sync>;

/// A process-shared barrier. Clone = another handle; serializes as its segment handle (the
/// action is per handle and is not serialized).
#[derive(Clone)]
pub struct Barrier {
    shm: Shared<BarrierState>,
    action: Option<Action>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

serde_as_handle!(Barrier, BarrierState);

impl Barrier {
    fn from_shm(shm: Shared<BarrierState>) -> Self {
        Barrier { shm, action: None }
    }

    /// A barrier for `parties` processes/threads, no default timeout.
    pub fn new(parties: u32) -> Result<Barrier, BarrierCreateError> {
        Self::with_timeout(parties, None)
    }

    /// A barrier whose `wait()` uses `timeout` (Python's `timeout` argument).
    pub fn with_timeout(
        parties: u32,
        timeout: Option<Duration>,
    ) -> Result<Barrier, BarrierCreateError> {
        check_parties(parties)?;
        Ok(Self::from_shm(crate::shared::create(
            None,
            BarrierState::new(parties, timeout),
        )?))
    }

    /// A barrier in `/dev/shm/multiproc.NAME`.
    pub fn create_named(
        name: &str,
        parties: u32,
        timeout: Option<Duration>,
    ) -> Result<Barrier, BarrierCreateError> {
        check_parties(parties)?;
        Ok(Self::from_shm(crate::shared::create(
            Some(name),
            BarrierState::new(parties, timeout),
        )?))
    }

    /// Opens a named barrier.
    pub fn open_named(name: &str) -> Result<Barrier, ShmError> {
        Ok(Self::from_shm(crate::shared::open_named(name)?))
    }

    /// Opens the barrier a handle names (checking kind, layout and geometry).
    pub fn open_handle(handle: &SegmentHandle) -> Result<Barrier, ShmError> {
        Ok(Self::from_shm(crate::shared::open_handle(handle)?))
    }

    /// This handle with an action: when *this handle's* party is the last to arrive, it runs
    /// `action` before releasing the others (Python's `action`; one party runs it per round).
    /// If it panics the barrier breaks and the panic propagates.
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Barrier {
        self.action = Some(Arc::new(action));
        self
    }

    /// How another process reaches it.
    pub fn handle(&self) -> SegmentHandle {
        crate::shared::handle_of(&self.shm)
    }

    /// The segment holding the shared state (for tools and fuzzing: its bytes are what other
    /// processes share).
    pub fn segment(&self) -> &Segment {
        crate::shared::segment_of(&self.shm)
    }

    fn state(&self) -> &BarrierState {
        self.shm.get()
    }

    /// Python `wait()`: returns the arrival index `0..parties`. Uses the default timeout.
    pub fn wait(&self) -> Result<u32, BarrierError> {
        let deadline = self.state().default_timeout().and_then(deadline_after);
        self.state()
            .wait(*self.shm.geometry(), deadline, self.action.as_deref())
    }

    /// Python `wait(timeout)`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierError> {
        self.state().wait(
            *self.shm.geometry(),
            deadline_after(timeout),
            self.action.as_deref(),
        )
    }

    /// Python `abort()`: breaks the barrier; waiters and later callers get `Broken`.
    pub fn abort(&self) {
        self.state().abort()
    }

    /// Python `reset()`: waiters get `Broken`, and the barrier is usable again.
    pub fn reset(&self) {
        self.state().reset()
    }

    /// Python `broken`.
    pub fn broken(&self) -> bool {
        self.state().broken()
    }

    /// Python `parties`.
    pub fn parties(&self) -> u32 {
        self.shm.geometry().parties
    }

    /// Python `n_waiting`.
    pub fn n_waiting(&self) -> u32 {
        self.state().n_waiting(*self.shm.geometry())
    }
}

fn check_parties(parties: u32) -> Result<(), BarrierCreateError> {
    if parties == 0 || parties > MAX_PARTIES {
        return Err(BarrierCreateError::BadParties(parties));
    }
    Ok(())
}
