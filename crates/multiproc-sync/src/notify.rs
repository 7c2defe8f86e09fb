//! The per-process notifier: wakes async futures (`std::task::Waker`s) when another process
//! wakes the shared futex word they wait on, without a thread per waiting future and without
//! any cost on the blocking fast path.
//!
//! **Protocol.** A future whose condition is false does exactly what a blocking waiter does
//! ([`crate::park`]): read the word's `epoch`, announce itself (`waiters += 1`), SeqCst fence,
//! re-check the condition, and only if it is still false *register* (word address, expected
//! value, `Waker`) here and return `Pending`. The peer's unchanged `wake_one`/`wake_all` then
//! sees `waiters != 0`, bumps `epoch` and calls `FUTEX_WAKE`. So a waker pays nothing new: the
//! async waiter is one more announced waiter.
//!
//! **Notifier threads.** Registrations are spread over *shards* of at most 127; each shard has
//! one thread blocked in `futex_waitv(2)` ([`crate::futex::wait_many`]) on all its words plus
//! one process-local control word (bumped when registrations change). When the kernel returns,
//! the thread fires every registration whose word no longer holds its expected value (or
//! whose slice ran out): it withdraws it (`waiters -= 1`), wakes its `Waker` and drops it; the
//! future registers again on its next poll if it still has to wait. A thousand waiting futures
//! cost eight threads, and an idle process none (the first registration starts the first one).
//!
//! **Slices.** Every armed registration also has its future polled at least every [`SLICE`]
//! (20 ms), so the future's poll runs the periodic checks a blocking call runs between its
//! parked slices (dead peers, ring recovery), and a wake-up lost to a waker SIGKILLed between
//! its store and its `FUTEX_WAKE` costs at most a slice, as for blocking waiters. A slice poll
//! leaves the registration armed (its word still holds the expected value, so it is still
//! valid): a future that finds nothing new keeps it and costs no new registration. A
//! registration whose future was not polled for a whole slice (abandoned or leaked) is
//! withdrawn at its next slice, releasing its mapping.
//!
//! **Withdrawal** happens exactly once per registration: by the notifier when it fires it, or by
//! the future when it is polled to completion, re-registers, or is dropped (whichever comes
//! first, decided under the registration's lock).
//!
//! **Memory.** A registration holds a [`KeepAlive`] of the object its words live in, so the
//! notifier may read them after the future's owner dropped every handle; a leaked
//! (`mem::forget`) future keeps one mapping for at most two slices, never UB.
//!
//! **Fallback.** Without `futex_waitv` (Linux < 5.16: `ENOSYS`) a shard polls its words every
//! [`FALLBACK_POLL`] (1 ms) instead: correct, slower to react, and costs wake-ups while futures
//! wait. `MULTIPROC_NOTIFY_POLL=1` in the environment forces it (tests).
//!
//! **Fork.** A child forked while futures wait in its parent starts with no registrations and
//! starts its own notifier on first use (the parent's threads do not exist in the child).
//!
//! ```
//! use multiproc_sync::notify::AsyncWait;
//! use multiproc_sync::park::WaitWord;
//! use std::task::{Context, Poll, Waker};
//! let mut w = AsyncWait::new();
//! let mut cx = Context::from_waker(Waker::noop());
//! // A condition that already holds is Ready at once, without registering anything.
//! let word = WaitWord::new();
//! assert_eq!(unsafe { w.poll_raw(&mut cx, &word, None, || Some(7)) }, Poll::Ready(7));
//! ```

use crate::facade::{AtomicU32, Ordering, StdAtomicU32, fence};
use crate::futex::{self, WAIT_MANY_MAX, WaitManyResult};
use crate::park::{SpinBudget, WaitStrategy, WaitWord};
use multiproc_shm::{KeepAlive, Shared, SharedLayout};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The longest a registration waits before its future is polled anyway (periodic checks).
pub const SLICE: Duration = Duration::from_millis(20);
/// How often a shard polls its words when the kernel lacks `futex_waitv`.
pub const FALLBACK_POLL: Duration = Duration::from_millis(1);
/// Registrations per notifier thread (one `futex_waitv` slot is the control word).
pub const PER_THREAD: usize = WAIT_MANY_MAX - 1;
/// Most pause hints an async future spins before it registers ([`AsyncWait::spin`]): a few
/// tens of microseconds of a runtime thread at most, and only while waits keep being answered
/// within the spin (the budget halves on every miss, down to [`SpinBudget::MIN`]).
pub const ASYNC_SPIN_MAX: u32 = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One waiting future's registration.
struct Entry {
    /// The futex word the waker bumps (`epoch`, or the state word of a counted primitive).
    word: *const AtomicU32,
    /// The announced-waiter count this registration holds one unit of while armed.
    waiters: *const AtomicU32,
    /// The value `word` held when the future announced itself.
    expected: u32,
    shard: &'static Shard,
    state: Mutex<EntryState>,
    /// Keeps `word` and `waiters` mapped (None: the caller guarantees they are 'static).
    _keep: Option<KeepAlive>,
}

struct EntryState {
    /// Registered and holding a unit of `waiters`.
    armed: bool,
    waker: Option<Waker>,
    /// When the notifier next polls the future anyway (every slice while armed).
    deadline: Instant,
    /// The future was polled since the last slice (a future nobody polls any more, e.g. one
    /// that was leaked, is disarmed at its next slice instead of being kept for ever).
    polled: bool,
}

// SAFETY: the raw pointers point into memory `_keep` keeps mapped (or 'static memory), and are
// only used for atomic accesses; the rest is Send + Sync.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

impl Entry {
    fn word(&self) -> &AtomicU32 {
        // SAFETY: `_keep` (held by self) keeps the word mapped; see `AsyncWait::poll_raw`.
        unsafe { &*self.word }
    }

    fn waiters(&self) -> &AtomicU32 {
        // SAFETY: as in `word`.
        unsafe { &*self.waiters }
    }

    fn is_armed(&self) -> bool {
        lock(&self.state).armed
    }

    /// Disarms and withdraws (once); returns the waker to wake if this call disarmed it.
    fn disarm(&self) -> Option<Option<Waker>> {
        let mut s = lock(&self.state);
        if !s.armed {
            return None;
        }
        s.armed = false;
        // Release: as the blocking waiter's withdrawal in `park` (keeps the decrement after
        // our last use of the state; a stale high count only costs a waker one syscall).
        self.waiters().fetch_sub(1, Ordering::Release);
        self.shard.armed.fetch_sub(1, Ordering::Relaxed);
        Some(s.waker.take())
    }

    /// Notifier side: the word changed (or was woken).
    fn fire(&self) {
        if let Some(Some(w)) = self.disarm() {
            w.wake();
        }
    }

    /// Notifier side, the word unchanged: `Some(deadline)` if still armed and not due yet;
    /// if due, polls the future (its periodic checks) WITHOUT disarming it: its expected
    /// value is still the word's, so the registration stays valid and the re-poll that finds
    /// nothing new only keeps it (no new registration, no control-word wake-up).
    fn tick(&self, now: Instant) -> Option<Instant> {
        let mut s = lock(&self.state);
        if !s.armed {
            return None;
        }
        if now < s.deadline {
            return Some(s.deadline);
        }
        if !s.polled {
            // Not polled for a whole slice: withdraw it (and release its mapping).
            drop(s);
            self.fire();
            return None;
        }
        s.polled = false;
        s.deadline = now + SLICE;
        let d = s.deadline;
        let w = s.waker.clone();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
        Some(d)
    }
}

/// A notifier thread's registrations.
struct Shard {
    /// Process-local futex word in every `futex_waitv` of this shard: bumped (and woken) when
    /// registrations are added or withdrawn, so the thread rebuilds its set.
    control: StdAtomicU32,
    /// Armed registrations (at most [`PER_THREAD`]; reserved before an entry is pushed).
    armed: crate::facade::StdAtomicUsize,
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Shard {
    fn poke(&self) {
        // Release: the thread's Acquire load of `control` then sees the entry list change
        // (the list itself is under its mutex).
        self.control.fetch_add(1, Ordering::Release);
        futex::wake(&self.control, 1);
    }

    fn run(&'static self) {
        let mut snap: Vec<Arc<Entry>> = Vec::with_capacity(PER_THREAD);
        loop {
            // Acquire: pairs with `poke`'s Release; read BEFORE the snapshot, so a registration
            // pushed after the snapshot has bumped it (futex_waitv then returns at once).
            let c0 = self.control.load(Ordering::Acquire);
            snap.clear();
            {
                let mut list = lock(&self.entries);
                list.retain(|e| e.is_armed());
                snap.extend(list.iter().cloned());
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut fired = false;
            for e in &snap {
                // Relaxed: a changed value only means "fire"; the future re-checks its state
                // with its own orderings.
                if e.word().load(Ordering::Relaxed) != e.expected {
                    e.fire();
                    fired = true;
                } else if let Some(d) = e.tick(now) {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
            if fired {
                continue;
            }
            let mut words: Vec<(&AtomicU32, u32)> = Vec::with_capacity(snap.len() + 1);
            words.push((&self.control, c0));
            // At most PER_THREAD are armed (reserved before they are pushed); the bound is
            // kept anyway, so a miscount costs a slice, never the fast path.
            words.extend(snap.iter().take(PER_THREAD).map(|e| (e.word(), e.expected)));
            let timeout = next.map(|d| d.saturating_duration_since(now));
            if polling() {
                let t = timeout.map_or(FALLBACK_POLL, |t| t.min(FALLBACK_POLL));
                futex::wait(&self.control, c0, Some(t));
                continue;
            }
            match futex::wait_many(&words, timeout) {
                // A word was woken: fire its entry even if its value came back to the
                // expected one (a lock released and re-taken), as a woken blocking waiter
                // re-checks; the others are scanned at the loop top.
                WaitManyResult::Woken(i) if i >= 1 => {
                    if let Some(e) = snap.get(i - 1) {
                        e.fire();
                    }
                }
                WaitManyResult::Unsupported => {
                    // ENOSYS (or a refusal): poll from now on, in every shard.
                    FORCE_POLL.store(true, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
}

/// Set when `futex_waitv` is unavailable (or by `MULTIPROC_NOTIFY_POLL=1`).
static FORCE_POLL: crate::facade::StdAtomicBool = crate::facade::StdAtomicBool::new(false);

fn polling() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // Relaxed: a switch; any stale value is only a slower or faster wait.
    FORCE_POLL.load(Ordering::Relaxed)
        || *ENV.get_or_init(|| std::env::var_os("MULTIPROC_NOTIFY_POLL").is_some_and(|v| v == "1"))
}

/// The process's shards (leaked: one per 127 concurrent registrations, kept for reuse).
struct Registry {
    pid: u32,
    shards: Vec<&'static Shard>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pid: 0,
    shards: Vec::new(),
});

/// How many notifier threads this process runs (diagnostics and tests).
pub fn threads() -> usize {
    let r = lock(&REGISTRY);
    if r.pid == std::process::id() {
        r.shards.len()
    } else {
        0
    }
}

/// Picks a shard with room (starting a thread for a new one if every shard is full) and
/// reserves one unit of its capacity.
fn reserve_shard() -> Option<&'static Shard> {
    let mut r = lock(&REGISTRY);
    let me = std::process::id();
    if r.pid != me {
        // A forked child: the parent's threads are not here. Forget its shards (their locks
        // may be held by threads that do not exist in this process).
        r.shards = Vec::new();
        r.pid = me;
    }
    for s in &r.shards {
        // Relaxed: a process-local counter under the registry lock's protection for reservers;
        // the notifier only decrements it.
        if s.armed.fetch_add(1, Ordering::Relaxed) < PER_THREAD {
            return Some(s);
        }
        s.armed.fetch_sub(1, Ordering::Relaxed);
    }
    let s: &'static Shard = Box::leak(Box::new(Shard {
        control: StdAtomicU32::new(0),
        armed: crate::facade::StdAtomicUsize::new(1),
        entries: Mutex::new(Vec::with_capacity(PER_THREAD)),
    }));
    let n = r.shards.len();
    let spawned = std::thread::Builder::new()
        .name(format!("multiproc-notify-{n}"))
        .stack_size(64 * 1024)
        .spawn(move || s.run());
    match spawned {
        Ok(_) => {
            r.shards.push(s);
            Some(s)
        }
        Err(_) => None,
    }
}

/// A future's async waiting state: at most one registration with the notifier. Keep one per
/// future (it withdraws on drop); poll it with the future's condition.
#[derive(Default)]
pub struct AsyncWait {
    entry: Option<Arc<Entry>>,
    last_check: Option<Instant>,
}

impl std::fmt::Debug for AsyncWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWait")
            .field("registered", &self.entry.is_some())
            .finish()
    }
}

impl AsyncWait {
    /// No registration.
    pub const fn new() -> AsyncWait {
        AsyncWait {
            entry: None,
            last_check: None,
        }
    }

    /// Whether the caller's periodic checks (dead peers, recovery) are due: true at most once
    /// per `every`, counted from the first call. A pending future is polled at least every
    /// [`SLICE`], so checks with `every <= SLICE` run about once per slice.
    pub fn check_due(&mut self, every: Duration) -> bool {
        let now = Instant::now();
        match self.last_check {
            Some(t) if now.duration_since(t) < every => false,
            Some(_) => {
                self.last_check = Some(now);
                true
            }
            None => {
                self.last_check = Some(now);
                false
            }
        }
    }

    /// The spin phase of an async wait, before the future registers: polls `ready` up to the
    /// handle's adaptive budget (capped at [`ASYNC_SPIN_MAX`]) with [`WaitStrategy::SpinThenPark`],
    /// [`ASYNC_SPIN_MAX`] times with `Spin`, never with `Park`; a wait answered inside it grows
    /// the budget, one that was not shrinks it (as for blocking waits). Only spins when this
    /// future holds no armed registration (not on re-polls while registered). Returns whether
    /// `ready` came true.
    ///
    /// A ping-pong partner that answers within the spin keeps the whole round trip off the
    /// notifier (no thread hop, sub-microsecond); a future whose waits are long spins
    /// [`SpinBudget::MIN`] (16) hints per wait.
    pub fn spin(
        &self,
        strategy: WaitStrategy,
        budget: &SpinBudget,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if self.entry.as_ref().is_some_and(|e| e.is_armed()) {
            return false;
        }
        let n = match strategy {
            WaitStrategy::Park => return false,
            WaitStrategy::SpinThenPark => budget.get().min(ASYNC_SPIN_MAX),
            WaitStrategy::Spin => ASYNC_SPIN_MAX,
        };
        for _ in 0..n {
            crate::facade::spin_hint();
            if ready() {
                if strategy == WaitStrategy::SpinThenPark {
                    budget.hit();
                }
                return true;
            }
        }
        if strategy == WaitStrategy::SpinThenPark {
            budget.miss();
        }
        false
    }

    /// Withdraws the current registration, if any (the future completed or is dropped).
    pub fn cancel(&mut self) {
        if let Some(e) = self.entry.take()
            && e.disarm().is_some()
        {
            // Let the notifier drop its copy (and the mapping it keeps) now.
            let mut list = lock(&e.shard.entries);
            list.retain(|x| !Arc::ptr_eq(x, &e));
            drop(list);
            e.shard.poke();
        }
    }

    /// The still-armed registration takes this poll's waker: Pending without a new
    /// registration (no state change was published since it was made, or the notifier would
    /// have fired it).
    fn rearm(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(e) = &self.entry else {
            return false;
        };
        let mut s = lock(&e.state);
        if !s.armed {
            return false;
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        s.polled = true;
        true
    }

    /// Registers (the caller has announced itself on `waiters` and found its condition false).
    ///
    /// # Safety
    /// `word` and `waiters` stay valid (mapped at these addresses) while `keep` lives, or for
    /// ever if `keep` is `None`.
    unsafe fn register(
        &mut self,
        cx: &mut Context<'_>,
        word: &AtomicU32,
        waiters: &AtomicU32,
        expected: u32,
        keep: Option<KeepAlive>,
    ) -> bool {
        let Some(shard) = reserve_shard() else {
            return false;
        };
        let e = Arc::new(Entry {
            word: word as *const AtomicU32,
            waiters: waiters as *const AtomicU32,
            expected,
            shard,
            state: Mutex::new(EntryState {
                armed: true,
                waker: Some(cx.waker().clone()),
                deadline: Instant::now() + SLICE,
                polled: true,
            }),
            _keep: keep,
        });
        lock(&shard.entries).push(e.clone());
        self.entry = Some(e);
        shard.poke();
        true
    }

    /// Polls `cond` with the [`WaitWord`] protocol: `Ready` if it yields, else registers the
    /// word with the notifier and returns `Pending` (the waker is woken when a peer wakes the
    /// word, or after at most a [`SLICE`]).
    ///
    /// `cond` must read the state the waker publishes before its `wake_*` call (as for
    /// [`WaitWord::wait_until`]); it may run twice per poll.
    ///
    /// # Safety
    /// `word` must stay mapped at its address while `keep` lives (`None`: `word` is 'static or
    /// outlives the process's notifier use; prefer [`AsyncWait::poll_shared`]).
    pub unsafe fn poll_raw<R>(
        &mut self,
        cx: &mut Context<'_>,
        word: &WaitWord,
        keep: Option<KeepAlive>,
        mut cond: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        if let Some(r) = cond() {
            self.cancel();
            return Poll::Ready(r);
        }
        if self.rearm(cx) {
            return Poll::Pending;
        }
        self.cancel();
        let (epoch, waiters) = word.words();
        // The blocking waiter's steps 1-3 (see `park`): snapshot, announce, fence, re-check.
        // Acquire: pairs with the waker's Release bump (as in `park`).
        let seen = epoch.load(Ordering::Acquire);
        // SeqCst: the announcement (the waiter's half of the Dekker pair, with the fence).
        waiters.fetch_add(1, Ordering::SeqCst);
        // SeqCst fence: partner of the waker's fence in `WaitWord::wake_*`.
        fence(Ordering::SeqCst);
        if let Some(r) = cond() {
            // Release: as the withdrawal in `park`.
            waiters.fetch_sub(1, Ordering::Release);
            return Poll::Ready(r);
        }
        // SAFETY: the caller's contract covers `epoch` and `waiters` (fields of `word`).
        if !unsafe { self.register(cx, epoch, waiters, seen, keep) } {
            // No notifier thread could be started: withdraw and yield (busy, but live).
            // Release: as above.
            waiters.fetch_sub(1, Ordering::Release);
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// [`AsyncWait::poll_raw`] on a [`WaitWord`] inside a shared object: the registration
    /// keeps the object's memory mapped.
    pub fn poll_shared<L: SharedLayout, R>(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared<L>,
        word: fn(&L) -> &WaitWord,
        cond: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        let w = word(shared.get());
        // SAFETY: `w` borrows from `shared.get()` (or is 'static: a `fn(&L) -> &WaitWord` can
        // return nothing else), and the KeepAlive keeps that memory mapped while it lives.
        unsafe { self.poll_raw(cx, w, Some(shared.keep_alive()), cond) }
    }

    /// The counted-waiter protocol of `shared::block_slow` (Event, Semaphore): announce on
    /// `waiters` (SeqCst), run `attempt`, which succeeds or returns the value of `word` to
    /// sleep on; register on `word` with that value.
    ///
    /// # Safety
    /// `word` and `waiters` must stay mapped while `keep` lives.
    pub(crate) unsafe fn poll_counted<R>(
        &mut self,
        cx: &mut Context<'_>,
        word: &AtomicU32,
        waiters: &AtomicU32,
        keep: KeepAlive,
        mut attempt: impl FnMut() -> Result<R, u32>,
    ) -> Poll<R> {
        if let Ok(r) = attempt() {
            self.cancel();
            return Poll::Ready(r);
        }
        if self.rearm(cx) {
            return Poll::Pending;
        }
        self.cancel();
        // SeqCst: the announcement, before the attempt that reads the state (the store-load
        // pattern of `block_slow`; releasers change the state SeqCst, then load `waiters`).
        waiters.fetch_add(1, Ordering::SeqCst);
        match attempt() {
            Ok(r) => {
                // SeqCst: as `block_slow`'s withdrawal.
                waiters.fetch_sub(1, Ordering::SeqCst);
                Poll::Ready(r)
            }
            Err(v) => {
                // SAFETY: the caller's contract.
                if !unsafe { self.register(cx, word, waiters, v, Some(keep)) } {
                    // SeqCst: as above.
                    waiters.fetch_sub(1, Ordering::SeqCst);
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for AsyncWait {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facade::StdAtomicBool as AtomicBool;

    struct Flag(AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_registered_wait_is_woken_by_a_plain_wake_one() {
        let word: &'static WaitWord = Box::leak(Box::new(WaitWord::new()));
        let state: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut w = AsyncWait::new();
        let cond = || (state.load(Ordering::Acquire) != 0).then_some(());
        // SAFETY: 'static words.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, cond) }.is_pending());
        assert_eq!(word.waiters(), 1);
        state.store(1, Ordering::Release);
        word.wake_one();
        let t = Instant::now();
        while !flag.0.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(10), "never woken");
            std::thread::sleep(Duration::from_micros(100));
        }
        // The notifier withdrew the registration when it fired it.
        assert_eq!(word.waiters(), 0);
        // SAFETY: as above.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, cond) }.is_ready());
        assert!(threads() >= 1);
    }

    #[test]
    fn a_slice_polls_a_pending_future() {
        let word: &'static WaitWord = Box::leak(Box::new(WaitWord::new()));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut w = AsyncWait::new();
        // SAFETY: 'static word.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, || None::<()>) }.is_pending());
        let t = Instant::now();
        while !flag.0.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(10), "no slice poll");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Polled for its periodic checks; polling again keeps (or, if a second slice passed
        // unpolled, renews) one registration: one announced waiter either way.
        // SAFETY: as above.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, || None::<()>) }.is_pending());
        assert_eq!(word.waiters(), 1);
        drop(w);
        assert_eq!(word.waiters(), 0);
    }

    #[test]
    fn a_registration_nobody_polls_is_withdrawn() {
        let word: &'static WaitWord = Box::leak(Box::new(WaitWord::new()));
        let mut cx = Context::from_waker(Waker::noop());
        let mut w = AsyncWait::new();
        // SAFETY: 'static word.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, || None::<()>) }.is_pending());
        std::mem::forget(w);
        let t = Instant::now();
        while word.waiters() != 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "never withdrawn");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn dropping_a_pending_wait_withdraws_once() {
        let word: &'static WaitWord = Box::leak(Box::new(WaitWord::new()));
        let mut cx = Context::from_waker(Waker::noop());
        let mut w = AsyncWait::new();
        // SAFETY: 'static word.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, || None::<()>) }.is_pending());
        // A spurious re-poll keeps the same registration.
        // SAFETY: as above.
        assert!(unsafe { w.poll_raw(&mut cx, word, None, || None::<()>) }.is_pending());
        assert_eq!(word.waiters(), 1);
        drop(w);
        assert_eq!(word.waiters(), 0);
    }
}
