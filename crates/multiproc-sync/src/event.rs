//! `Event`: a process-shared flag that processes can wait on (Python's `multiprocessing.Event`).
//!
//! Algorithm: one futex word `flag` (0 clear, 1 set) and a waiter count. `wait` returns at once
//! when the flag is set, otherwise spins briefly, then counts itself in `waiters` and futex-waits
//! while the flag is 0. `set` swaps the flag to 1 and wakes everyone only if `waiters > 0`; so
//! a set with nobody parked, and a wait on a set event, make no syscall.
//!
//! Death: nobody waits on anybody's identity, so a dead waiter or setter cannot wedge the rest;
//! a waiter killed while parked leaves `waiters` one too high, which only costs later `set`s
//! a wake syscall. Parks are bounded (100 ms), so a setter killed between setting the flag and
//! its wake syscall delays waiters by at most that.
//!
//! ```
//! use multiproc_sync::Event;
//! use std::time::Duration;
//! let e = Event::new().unwrap();
//! assert!(!e.wait_timeout(Duration::from_millis(1)));
//! e.set();
//! assert!(e.is_set());
//! assert!(e.wait_timeout(Duration::ZERO));
//! e.clear();
//! assert!(!e.is_set());
//! ```

use crate::arena::{Arena, Obj, SlotHandle, serde_as_object};
use crate::error::CreateError;
use crate::facade::{AtomicU32, Ordering, spin_hint};
use crate::futex;
use crate::park::WaitStrategy;
use crate::shared::{LOST_WAKE_TICK, block_on, block_slow, deadline_after};
use multiproc_shm::{ObjectKind, Segment, SegmentHandle, Shared, SharedLayout, ShmError};
use std::time::{Duration, Instant};

/// Shared state of an [`Event`] (public for loom models).
#[doc(hidden)]
#[repr(C)]
pub struct EventState {
    flag: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern is a valid state; a corrupted one gives
// errors or timeouts, never UB), align 8 <= 256, no Drop. No field sizes or indexes anything.
unsafe impl SharedLayout for EventState {
    const KIND: ObjectKind = ObjectKind::Event;
    type Geometry = ();
    fn validate(&self, _tail_len: usize) -> Result<(), ShmError> {
        Ok(())
    }
}

impl Default for EventState {
    fn default() -> Self {
        Self::new()
    }
}

impl EventState {
    /// A clear event.
    pub fn new() -> Self {
        EventState {
            flag: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Whether set.
    #[inline]
    pub fn is_set(&self) -> bool {
        // Acquire: pairs with set's SeqCst swap, so what the setter wrote before set() is
        // visible to a caller that sees the flag.
        self.flag.load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    #[inline]
    pub fn set(&self) {
        // SeqCst: Release for waiters' reads, and the store half of the store-load pattern
        // with `waiters` (see shared::block_on).
        let was = self.flag.swap(1, Ordering::SeqCst);
        // SeqCst: the load half.
        if was == 0 && self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&self.flag);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        // Release: a waiter that then sees 0 and later 1 sees the later set's writes anyway;
        // Release keeps clear ordered after the clearer's earlier writes.
        self.flag.store(0, Ordering::Release);
    }

    /// Waits until set or `deadline`. Returns the flag.
    #[inline]
    pub fn wait(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        self.wait_slow(deadline)
    }

    /// Waits until set or `deadline`, per `strategy`: `SpinThenPark` is [`Self::wait`]; `Park`
    /// skips the spin phase (announce, re-check, futex sleep at once); `Spin` busy-polls the
    /// flag until the deadline. Returns the flag.
    #[inline]
    pub fn wait_with(&self, strategy: WaitStrategy, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        self.wait_with_slow(strategy, deadline)
    }

    #[cold]
    fn wait_with_slow(&self, strategy: WaitStrategy, deadline: Option<Instant>) -> bool {
        match strategy {
            WaitStrategy::SpinThenPark => self.wait_slow(deadline),
            WaitStrategy::Park => self.park(deadline),
            WaitStrategy::Spin => {
                let mut i = 0u32;
                loop {
                    if self.is_set() {
                        return true;
                    }
                    spin_hint();
                    i = i.wrapping_add(1);
                    if i.is_multiple_of(128) && deadline.is_some_and(|d| Instant::now() >= d) {
                        return self.is_set();
                    }
                }
            }
        }
    }

    /// The attempt both blocking paths make: set, or the futex value to sleep on.
    fn attempt(&self) -> Result<(), u32> {
        // SeqCst: load half of the store-load pattern with `waiters`; also acquires.
        if self.flag.load(Ordering::SeqCst) != 0 {
            Ok(())
        } else {
            Err(0)
        }
    }

    #[cold]
    fn park(&self, deadline: Option<Instant>) -> bool {
        block_slow(
            &self.flag,
            &self.waiters,
            deadline,
            // Bounded: a setter killed between its swap and its wake must not strand us.
            Some(LOST_WAKE_TICK),
            &mut || self.attempt(),
            &mut || None,
        )
        .is_ok()
    }

    #[cold]
    fn wait_slow(&self, deadline: Option<Instant>) -> bool {
        block_on(
            &self.flag,
            &self.waiters,
            deadline,
            // Bounded: a setter killed between its swap and its wake must not strand us.
            Some(LOST_WAKE_TICK),
            || self.attempt(),
            || None,
        )
        .is_ok()
    }
}

/// A process-shared event. Clone = another handle; serializes as its segment handle.
#[derive(Clone)]
pub struct Event {
    obj: Obj<EventState>,
    /// How this handle's `wait`s wait (process-local; clones inherit it).
    strategy: WaitStrategy,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

serde_as_object!(Event, EventState);

impl Event {
    fn from_shm(shm: Shared<EventState>) -> Self {
        Self::from_obj(Obj::own(shm))
    }

    /// A new clear event in a slot of `arena` (one fd and mapping per arena segment, not per object;
    /// the slot is padded to at least 64 bytes so two hot futex words never share a cache line).
    /// See [`crate::arena`] for when the slot is freed.
    pub fn new_in(arena: &Arena) -> Result<Event, CreateError> {
        Ok(Event::from_obj(Obj::new_in(arena, 64, EventState::new())?))
    }

    /// Opens an arena event's handle ([`ShmError::StaleHandle`] if it was freed, or of another
    /// kind).
    pub fn open_slot(handle: &SlotHandle) -> Result<Event, ShmError> {
        Ok(Event::from_obj(Obj::open_slot(handle)?))
    }

    /// The arena handle of an arena event (`None` for one with its own segment).
    pub fn slot_handle(&self) -> Option<SlotHandle> {
        self.obj.slot_handle()
    }

    fn from_obj(obj: Obj<EventState>) -> Self {
        Event {
            obj,
            strategy: WaitStrategy::default(),
        }
    }

    /// A clear event in a slot of this process's arena ([`crate::Arena::global`]): one fd and
    /// mapping per arena segment, not per object, and a 64-byte slot, so two hot futex words
    /// never share a cache line. Inherited by forked children (each holds the slot from the fork
    /// on); spawned children get it by serializing it. An arena lock that cannot be taken maps
    /// to `ShmError::Os { op: "arena lock", .. }`. `handle()`/`segment()` then name the whole
    /// arena segment: use `slot_handle()` or serde to reach the object, or
    /// [`Event::new_segment`] for a segment of its own.
    pub fn new() -> Result<Event, ShmError> {
        Ok(Self::from_obj(Obj::new_default(EventState::new())?))
    }

    /// A clear event in an anonymous segment of its own (what [`Event::new`] did before
    /// arenas).
    pub fn new_segment() -> Result<Event, ShmError> {
        Ok(Self::from_shm(crate::shared::create(
            None,
            EventState::new(),
        )?))
    }

    /// A clear event in `/dev/shm/multiproc.NAME`.
    pub fn create_named(name: &str) -> Result<Event, ShmError> {
        Ok(Self::from_shm(crate::shared::create(
            Some(name),
            EventState::new(),
        )?))
    }

    /// Opens a named event.
    pub fn open_named(name: &str) -> Result<Event, ShmError> {
        Ok(Self::from_shm(crate::shared::open_named(name)?))
    }

    /// Opens the event a handle names (checking kind, layout and geometry).
    pub fn open_handle(handle: &SegmentHandle) -> Result<Event, ShmError> {
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

    fn state(&self) -> &EventState {
        self.obj.get()
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.state().is_set()
    }

    /// Sets the flag; every waiter wakes.
    pub fn set(&self) {
        self.state().set()
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.state().clear()
    }

    /// Sets how this handle's `wait` and `wait_timeout` wait: `SpinThenPark` (the default: a
    /// short spin, then a futex sleep), `Park` (futex sleep at once, no spin phase) or `Spin`
    /// (busy-poll the flag).
    pub fn set_wait_strategy(&mut self, s: WaitStrategy) {
        self.strategy = s;
    }

    /// This handle's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Blocks until the flag is set (Python `wait()`, which then returns True).
    pub fn wait(&self) {
        self.state().wait_with(self.strategy, None);
    }

    /// Python `wait(timeout)`: true if the flag is set, false on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.state()
            .wait_with(self.strategy, deadline_after(timeout))
    }

    /// Waits for the flag without blocking a thread: a future that is `Ready` once the flag is
    /// set (Python's `wait()` for async code; runtime-agnostic, woken through
    /// [`crate::notify`]). Add a timeout with your runtime (`tokio::time::timeout`).
    ///
    /// Cancel safety: dropping the future loses nothing (waiting takes nothing).
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let e = multiproc_sync::Event::new().unwrap();
    /// let e2 = e.clone();
    /// std::thread::spawn(move || e2.set());
    /// e.wait_async().await;
    /// assert!(e.is_set());
    /// # });
    /// ```
    #[cfg(not(loom))]
    pub fn wait_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        let mut w = crate::notify::AsyncWait::new();
        std::future::poll_fn(move |cx| {
            let st = self.state();
            if st.is_set() {
                w.cancel();
                return std::task::Poll::Ready(());
            }
            // SAFETY: `flag` and `waiters` live in `self.shm`'s mapping, which the KeepAlive
            // keeps mapped.
            unsafe {
                w.poll_counted(cx, &st.flag, &st.waiters, self.obj.keep_alive(), || {
                    st.attempt()
                })
            }
        })
    }

    /// `wait_timeout` (None: no limit) with a strategy for this call only.
    pub fn wait_with(&self, strategy: WaitStrategy, timeout: Option<Duration>) -> bool {
        self.state()
            .wait_with(strategy, timeout.and_then(deadline_after))
    }
}
