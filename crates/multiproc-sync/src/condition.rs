//! `Condition`: a process-shared condition variable over a [`Lock`] or an [`RLock`]
//! (Python's `multiprocessing.Condition`; the default lock is an RLock).
//!
//! Algorithm: a fixed table of [`WAIT_SLOTS`] waiter slots, each `(owner, ticket, state)`, where
//! `state` is the waiter's own futex word. Everything except the waiter's sleep happens under the
//! condition's lock:
//! * `wait`: take a free slot (or one whose owner is dead), stamp it with the next ticket and
//!   `WAITING`, release the lock (all RLock levels), sleep on the slot's word until it reads
//!   `NOTIFIED` or the timeout passes, re-acquire the lock, then read the slot (notified or not)
//!   and free it. A waiter whose timeout races a notify returns true: it consumed that notify.
//! * `notify(n)`: mark the `n` oldest `WAITING` slots (smallest tickets) `NOTIFIED` and wake each
//!   on its own word. Exactly `min(n, live waiters)` waiters are woken, never more: there are no
//!   spurious "everyone sees a changed sequence" wake-ups.
//!
//! Death: before notifying a slot, `notify` checks that its owner is alive (a `/proc` read, skipped
//! for waiters of the notifier's own process); a dead waiter's slot is freed and the notify goes
//! to the next live waiter, so a killed waiter never swallows a notify. A waiter killed *after*
//! being notified has consumed it, exactly as if it had returned and then died. A notifier
//! killed between marking a slot and its wake syscall delays that waiter by at most 100 ms
//! (waiters' sleeps are bounded). The lock's own
//! guarantees apply to the lock (an RLock is always reclaimed from a dead owner; a Lock only
//! when taken with [`Condition::lock`] / [`Lock::lock`]).
//!
//! ```
//! use multiproc_sync::Condition;
//! use std::time::Duration;
//! let c = Condition::new().unwrap();
//! assert!(c.wait_timeout(Duration::ZERO).is_err()); // not holding the lock
//! let _g = c.lock().unwrap();
//! assert_eq!(c.wait_timeout(Duration::ZERO), Ok(false));
//! assert_eq!(c.notify(1), Ok(0));
//! ```

use crate::error::{LockResult, RecoverResult, refuse_owner_died};
use crate::facade::{AtomicU32, AtomicU64, Ordering};
use crate::futex;
use crate::ident;
use crate::lock::{Lock, LockGuard, LockMode};
use crate::rlock::{RLock, RLockGuard};
use crate::shared::{LOST_WAKE_TICK, deadline_after};
use multiproc_shm::{ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError};
use std::time::{Duration, Instant};

/// How many processes/threads can wait on one condition at once.
pub const WAIT_SLOTS: usize = 64;

const WAITING: u32 = 0;
const NOTIFIED: u32 = 1;

/// Errors of condition operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConditionError {
    /// `wait`, `notify` or `release` without holding the lock (Python: AssertionError /
    /// RuntimeError "cannot wait on un-acquired lock").
    #[error("the condition's lock is not held")]
    NotHeld,
    /// Every waiter slot is in use.
    #[error("all {WAIT_SLOTS} waiter slots are in use")]
    TooManyWaiters,
    /// `wait_timeout` could not re-acquire the lock within its timeout plus
    /// [`REACQUIRE_GRACE`] (another process holds it): the lock is NOT held on return.
    #[error("could not re-acquire the condition's lock in time; it is not held")]
    LockNotReacquired,
}

/// How long past its deadline `wait_timeout` keeps trying to re-acquire the lock (at least;
/// the timeout itself is used when longer) before giving up with
/// [`ConditionError::LockNotReacquired`]: a process holding the lock forever can delay a timed
/// wait, not hang it.
pub const REACQUIRE_GRACE: Duration = Duration::from_millis(100);

#[repr(C)]
struct WaitSlot {
    owner: AtomicU64,
    ticket: AtomicU32,
    state: AtomicU32,
}

/// Shared state of a [`Condition`].
#[doc(hidden)]
#[repr(C)]
pub struct CondState {
    next_ticket: AtomicU32,
    _pad: AtomicU32,
    slots: [WaitSlot; WAIT_SLOTS],
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern is a valid state; a corrupted one gives
// errors or timeouts, never UB), align 8 <= 256, no Drop. No field sizes or indexes anything.
unsafe impl SharedLayout for CondState {
    const KIND: ObjectKind = ObjectKind::Condition;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
        Ok(())
    }
}

impl CondState {
    fn new() -> Self {
        CondState {
            next_ticket: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
            slots: std::array::from_fn(|_| WaitSlot {
                owner: AtomicU64::new(0),
                ticket: AtomicU32::new(0),
                state: AtomicU32::new(NOTIFIED),
            }),
        }
    }
}

/// The lock under a [`Condition`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum CondLock {
    /// A plain lock.
    Lock(Lock),
    /// A reentrant lock (Python's default).
    RLock(RLock),
}

/// Holds a condition's lock.
#[must_use = "the lock is released when the guard drops"]
#[derive(Debug)]
pub enum CondGuard<'a> {
    /// Over a Lock.
    Lock(LockGuard<'a>),
    /// Over an RLock.
    RLock(RLockGuard<'a>),
}

enum Saved {
    Lock(LockMode),
    RLock(u32),
}

/// A process-shared condition variable. Clone = another handle; serializes as its segment
/// handle plus its lock's.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "CondWire", try_from = "CondWire")]
pub struct Condition {
    shm: Shared<CondState>,
    lock: CondLock,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CondWire {
    cond: SegmentHandle,
    lock: CondLock,
}

impl From<Condition> for CondWire {
    fn from(c: Condition) -> CondWire {
        CondWire {
            cond: crate::shared::handle_of(&c.shm),
            lock: c.lock,
        }
    }
}

impl TryFrom<CondWire> for Condition {
    type Error = ShmError;
    fn try_from(w: CondWire) -> Result<Condition, ShmError> {
        Ok(Condition {
            shm: crate::shared::open_handle(&w.cond)?,
            lock: w.lock,
        })
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl Condition {
    /// A condition over a new [`RLock`] (Python's default).
    pub fn new() -> Result<Condition, ShmError> {
        Self::with_rlock(RLock::new()?)
    }

    /// A condition over `lock`.
    pub fn with_lock(lock: Lock) -> Result<Condition, ShmError> {
        Ok(Condition {
            shm: crate::shared::create(None, CondState::new())?,
            lock: CondLock::Lock(lock),
        })
    }

    /// A condition over `lock`.
    pub fn with_rlock(lock: RLock) -> Result<Condition, ShmError> {
        Ok(Condition {
            shm: crate::shared::create(None, CondState::new())?,
            lock: CondLock::RLock(lock),
        })
    }

    /// A named condition over a named RLock: segments `NAME` and `NAME.lock`.
    pub fn create_named(name: &str) -> Result<Condition, ShmError> {
        let lock = RLock::create_named(&format!("{name}.lock"))?;
        Ok(Condition {
            shm: crate::shared::create(Some(name), CondState::new())?,
            lock: CondLock::RLock(lock),
        })
    }

    /// Opens a condition made by [`Condition::create_named`].
    pub fn open_named(name: &str) -> Result<Condition, ShmError> {
        let lock = RLock::open_named(&format!("{name}.lock"))?;
        Ok(Condition {
            shm: crate::shared::open_named(name)?,
            lock: CondLock::RLock(lock),
        })
    }

    /// Opens the condition whose waiter table `handle` names, over `lock` (what
    /// deserializing a `Condition` does).
    pub fn open_handle(handle: &SegmentHandle, lock: CondLock) -> Result<Condition, ShmError> {
        Ok(Condition {
            shm: crate::shared::open_handle(handle)?,
            lock,
        })
    }

    /// How another process reaches the waiter table (see [`Condition::open_handle`]).
    pub fn handle(&self) -> SegmentHandle {
        crate::shared::handle_of(&self.shm)
    }

    /// The underlying lock.
    pub fn lock_ref(&self) -> &CondLock {
        &self.lock
    }

    fn state(&self) -> &CondState {
        self.shm.get()
    }

    /// The segment holding the condition's waiter table (its lock has its own, see
    /// [`Condition::lock_ref`]).
    pub fn segment(&self) -> &Segment {
        crate::shared::segment_of(&self.shm)
    }

    /// Python `acquire(block)` on the lock.
    pub fn acquire(&self, block: bool) -> bool {
        match &self.lock {
            CondLock::Lock(l) => l.acquire(block),
            CondLock::RLock(l) => l.acquire(block),
        }
    }

    /// Python `acquire(True, timeout)` on the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        match &self.lock {
            CondLock::Lock(l) => l.acquire_timeout(timeout),
            CondLock::RLock(l) => l.acquire_timeout(timeout),
        }
    }

    /// Python `acquire(False)` on the lock.
    pub fn try_acquire(&self) -> bool {
        self.acquire(false)
    }

    /// Python `release` of the lock.
    pub fn release(&self) -> Result<(), ConditionError> {
        match &self.lock {
            CondLock::Lock(l) => l.release().map_err(|_| ConditionError::NotHeld),
            CondLock::RLock(l) => l.release().map_err(|_| ConditionError::NotHeld),
        }
    }

    /// Acquires the lock through a guard (death-safe for a Lock too): `Err(OwnerDied)` (the lock
    /// released again) when the last holder died holding it; see [`Condition::lock_recover`].
    pub fn lock(&self) -> LockResult<CondGuard<'_>> {
        refuse_owner_died(self.lock_recover())
    }

    /// [`Condition::lock`] giving up after `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<CondGuard<'_>> {
        refuse_owner_died(self.lock_recover_timeout(timeout))
    }

    /// Acquires the lock through a guard, also from a dead holder: the guard and whether the
    /// previous holder died holding it. Never `Err(OwnerDied)`.
    pub fn lock_recover(&self) -> RecoverResult<CondGuard<'_>> {
        match &self.lock {
            CondLock::Lock(l) => l.lock_recover().map(|(g, d)| (CondGuard::Lock(g), d)),
            CondLock::RLock(l) => l.lock_recover().map(|(g, d)| (CondGuard::RLock(g), d)),
        }
    }

    /// [`Condition::lock_recover`] giving up after `timeout`.
    pub fn lock_recover_timeout(&self, timeout: Duration) -> RecoverResult<CondGuard<'_>> {
        match &self.lock {
            CondLock::Lock(l) => l
                .lock_recover_timeout(timeout)
                .map(|(g, d)| (CondGuard::Lock(g), d)),
            CondLock::RLock(l) => l
                .lock_recover_timeout(timeout)
                .map(|(g, d)| (CondGuard::RLock(g), d)),
        }
    }

    /// Whether the caller may use wait/notify: an RLock must be owned by this thread; a Lock
    /// must be held (by anyone: a Lock has no owner, as in Python).
    fn held(&self) -> bool {
        match &self.lock {
            CondLock::Lock(l) => l.is_locked(),
            CondLock::RLock(l) => l.is_owned(),
        }
    }

    fn release_save(&self) -> Result<Saved, ConditionError> {
        match &self.lock {
            CondLock::Lock(l) => l
                .release_save()
                .map(Saved::Lock)
                .map_err(|_| ConditionError::NotHeld),
            CondLock::RLock(l) => l
                .state()
                .release_all(ident::thread().0)
                .map(Saved::RLock)
                .map_err(|_| ConditionError::NotHeld),
        }
    }

    fn acquire_restore(&self, saved: Saved, deadline: Option<Instant>) -> bool {
        match (&self.lock, saved) {
            (CondLock::Lock(l), Saved::Lock(m)) => l.acquire_restore(m, deadline),
            (CondLock::RLock(l), Saved::RLock(depth)) => {
                let (tid, me) = ident::thread();
                l.state().acquire_restore(tid, me, depth, deadline)
            }
            // Saved is made from the same `self.lock` a few lines earlier.
            _ => false,
        }
    }

    /// Python `wait()`: releases the lock, sleeps until notified, re-acquires.
    pub fn wait(&self) -> Result<(), ConditionError> {
        self.wait_deadline(None).map(|_| ())
    }

    /// Python `wait(timeout)`: true if notified, false on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ConditionError> {
        self.wait_deadline(deadline_after(timeout))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool, ConditionError> {
        let start = Instant::now();
        if !self.held() {
            return Err(ConditionError::NotHeld);
        }
        let st = self.state();
        let (my_pid, me) = ident::process();
        // Under the lock: the lock's acquire/release order every slot access below except the
        // waiter's own sleep, so Relaxed suffices for the bookkeeping fields.
        // A free slot; failing that (rare: the table is full), one whose owner is dead (a
        // `/proc` read per candidate, so only then).
        let slot = st
            .slots
            .iter()
            .find(|s| s.owner.load(Ordering::Relaxed) == 0)
            .or_else(|| {
                st.slots.iter().find(|s| {
                    let o = s.owner.load(Ordering::Relaxed);
                    ident::unpack(o).pid != my_pid && !ident::packed_alive(o)
                })
            })
            .ok_or(ConditionError::TooManyWaiters)?;
        let t = st.next_ticket.load(Ordering::Relaxed);
        st.next_ticket.store(t.wrapping_add(1), Ordering::Relaxed);
        slot.owner.store(me, Ordering::Relaxed);
        slot.ticket.store(t, Ordering::Relaxed);
        slot.state.store(WAITING, Ordering::Relaxed);
        let saved = self.release_save()?;
        loop {
            // Acquire: pairs with notify's Release store of NOTIFIED.
            if slot.state.load(Ordering::Acquire) == NOTIFIED {
                break;
            }
            let left = match deadline {
                Some(d) => match futex::remaining(d) {
                    Some(l) => Some(l),
                    None => break,
                },
                None => None,
            };
            // Bounded, so a notifier killed between its store and its wake cannot strand us.
            let t = left.map_or(LOST_WAKE_TICK, |l| l.min(LOST_WAKE_TICK));
            // Woken, timed out or interrupted: the top of the loop re-checks everything.
            futex::wait(&slot.state, WAITING, Some(t));
        }
        let restore_by = deadline.map(|d| {
            let grace = d.saturating_duration_since(start).max(REACQUIRE_GRACE);
            d.checked_add(grace).unwrap_or(d)
        });
        if !self.acquire_restore(saved, restore_by) {
            // Free our slot (without the lock: a lost notify at worst, for a caller that gets
            // an error anyway).
            slot.state.store(NOTIFIED, Ordering::Relaxed);
            slot.owner.store(0, Ordering::Relaxed);
            return Err(ConditionError::LockNotReacquired);
        }
        let notified = slot.state.load(Ordering::Relaxed) == NOTIFIED;
        slot.state.store(NOTIFIED, Ordering::Relaxed);
        slot.owner.store(0, Ordering::Relaxed);
        Ok(notified)
    }

    /// Python `wait_for(predicate, timeout)`: waits until `pred()` is true or the timeout
    /// passes; returns the last value of `pred()`.
    pub fn wait_for(
        &self,
        mut pred: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, ConditionError> {
        let deadline = timeout.and_then(deadline_after);
        let mut result = pred();
        while !result {
            match deadline {
                Some(d) => match futex::remaining(d) {
                    Some(left) => {
                        self.wait_timeout(left)?;
                    }
                    None => break,
                },
                None => self.wait()?,
            }
            result = pred();
        }
        Ok(result)
    }

    /// Python `notify(n)`: wakes the `n` longest-waiting live waiters. Returns how many it woke.
    pub fn notify(&self, n: usize) -> Result<usize, ConditionError> {
        if !self.held() {
            return Err(ConditionError::NotHeld);
        }
        let st = self.state();
        let (my_pid, _) = ident::process();
        let now = st.next_ticket.load(Ordering::Relaxed);
        let mut woken = 0;
        while woken < n {
            // The oldest waiting slot: largest distance back from the next ticket.
            let oldest = st
                .slots
                .iter()
                .filter(|s| {
                    s.owner.load(Ordering::Relaxed) != 0
                        && s.state.load(Ordering::Relaxed) == WAITING
                })
                .max_by_key(|s| now.wrapping_sub(s.ticket.load(Ordering::Relaxed)));
            let Some(slot) = oldest else { break };
            let o = slot.owner.load(Ordering::Relaxed);
            if ident::unpack(o).pid == my_pid || ident::packed_alive(o) {
                // Release: pairs with the waiter's Acquire load.
                slot.state.store(NOTIFIED, Ordering::Release);
                futex::wake(&slot.state, 1);
                woken += 1;
            } else {
                // A dead waiter: free its slot; the notify goes to the next one.
                slot.state.store(NOTIFIED, Ordering::Relaxed);
                slot.owner.store(0, Ordering::Relaxed);
            }
        }
        Ok(woken)
    }

    /// Python `notify_all()`.
    pub fn notify_all(&self) -> Result<usize, ConditionError> {
        self.notify(usize::MAX)
    }
}
