//! `Queue`, `JoinableQueue`, `SimpleQueue`: Python's process queues over the MPMC ring.
//!
//! A queue is two segments: a small control block (`#[repr(C)]`, built in place: the count of
//! admitted items, waiter counts, the unfinished-task count, a closed flag) and an
//! [`MpmcRing`] of fixed-size slots. Any number of producers and consumers in any processes
//! use it at once; there is no feeder thread (an item is in the shared ring when `put`
//! returns, and an encoding error surfaces at `put`, not later: pitfall B.2 of Python).
//!
//! **Bound.** `maxsize` is exact (Python's `BoundedSemaphore(maxsize)`). The ring has exactly
//! `maxsize` slots (it takes any slot count from 2), so its fullness is the bound: `put` pushes
//! (a full ring means a full queue) and `get` pops, and no counter is moved per item: a
//! producer and a consumer move only the slot's line (before, a producer facing a full queue
//! re-read a `gets` counter on every put: docs/benchmarks.md, "Queue: where the time goes").
//! Blocked putters park on a [`WaitWord`] in the control block, which every `get` pokes after
//! its pop (waiters counted, so an uncontended `get` makes no syscall); since they never park
//! on the ring's own `not_full`, the ring's pops skip that word. `qsize` is the ring's claimed
//! and not yet taken slots, clamped to `0..=maxsize`. For `maxsize == 1` (a ring has at least
//! 2 slots) `put` first takes a unit (a CAS on `puts`, allowed while `puts - gets < maxsize`; a
//! producer re-reads `gets` only when its cached copy says "full", the index caching of rtrb),
//! then pushes, and `get` bumps `gets`; `qsize` is then `puts - gets`.
//! `maxsize` is `1..=`[`MAX_MAXSIZE`]; `0` (Python's unbounded queue) is refused with an error
//! that names the limit (why: `docs/channel.md`).
//!
//! **Disconnection.** The control block also counts, per process, the producer and consumer
//! handles it holds (see `peers.rs`; handles register when made and unregister when dropped or
//! closed, never on `put`/`get`). Once no live process holds a producer handle, the ring is
//! closed: getters drain it and then get [`GetError::Disconnected`]. Once no live process holds
//! a consumer handle, putters get [`PutError::Disconnected`] with their item. A dropped or
//! closed last handle wakes blocked peers at once; a SIGKILLed one is noticed by blocked peers
//! within `peers::CHECK_EVERY` (25 ms).
//!
//! **Large messages.** A message that fits a slot (default [`DEFAULT_SLOT_SIZE`] bytes) goes
//! inline. A larger one (up to `max_message`, default and local maximum 64 MiB) is written to a
//! side segment: an ordinary named segment `multiproc.qside-<queue id>-<pid>-<seq>` (header,
//! kind, fingerprint, creator) whose name goes through the ring. The producer detaches the name
//! (its drop does not unlink it); the consumer that pops the record opens it like any segment
//! (`O_NOFOLLOW|O_NONBLOCK`, regular memory files only, size validated), unlinks it and copies
//! the message out. No handle's drop deletes side segments. So fragments of one message never
//! interleave with other producers' messages and no lock is taken.
//!
//! **Trust.** The control block is a [`Shared<QueueCtl>`](multiproc_shm::Shared): `maxsize` and
//! `max_message` are validated once (against 64 MiB) and used from a local copy; a record's
//! length is checked against the local `max_message` before anything is allocated; `qsize` is
//! clamped to `0..=maxsize`.
//!
//! **Kill safety.** A process SIGKILLed in `put` or `get` loses at most its own item: the ring
//! recovers slots claimed by dead processes. Two windows of a few instructions remain: a
//! producer killed between taking its unit and its push, or a consumer killed between its pop
//! and bumping `gets`, leaves `qsize` one too high
//! (and the queue one item smaller); a large message whose consumer dies before unlinking (or
//! whose producer dies before pushing its name) leaves its side segment until `multiproc clean`
//! reclaims it (once its producer is dead).
//!
//! ```
//! use multiproc_channel::{Queue, GetError};
//! let q: Queue<String> = Queue::new(2).unwrap();
//! q.put("a".into()).unwrap();
//! q.put_nowait("b".into()).unwrap();
//! assert!(q.full());
//! assert_eq!(q.put_nowait("c".into()).unwrap_err().into_inner(), "c");
//! assert_eq!(q.get().unwrap(), "a");
//! assert_eq!(q.get_nowait().unwrap(), "b");
//! assert_eq!(q.get_nowait(), Err(GetError::Empty));
//! ```

use crate::codec::{Codec, Postcard};
use crate::error::{ChannelError, GetError, PutError};
use crate::facade::{AtomicU32, AtomicU64, Ordering};
use crate::ident;
use crate::peers::{self, CLOSED_ALL, Local, NO_CONSUMERS, NO_PRODUCERS, Peers, Role};
use multiproc_ring::{CachePadded, MpmcRing, PopError, PushError};
use multiproc_shm::{Segment, Shared, ShmError, TypeFingerprint};
use multiproc_sync::park::{SpinBudget, WaitError, WaitStrategy, WaitWord};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(not(loom))]
mod async_impl;
mod ctl;
mod fork;
mod get;
mod halves;
mod handle;
mod iter;
mod joinable;
mod put;
mod side;
mod simple;

use ctl::{Config, Gets, MAGIC, Puts, QueueCtl, QueueOf, Tasks, used};
use fork::live_add;
use side::read_side;

pub(crate) use fork::{fork_child, fork_parent, fork_prepare};

pub use ctl::{QueueStats, stats_of};
pub use halves::{Receiver, Sender};
pub use iter::{IntoIter, Iter, TryIter};
pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;

const INLINE: u8 = 0;
const SIDE: u8 = 1;
/// Default slot size (largest inline message + 1 tag byte).
pub const DEFAULT_SLOT_SIZE: usize = 256;
/// Smallest slot size: a side-segment record (`[tag][len: u64][name]`, at most 73 bytes) must fit
/// a slot, or no large message could ever be sent.
pub const MIN_SLOT_SIZE: usize = 128;
/// Largest slot size this process accepts (at create, and from a ring it opens).
pub const MAX_SLOT_SIZE: usize = 1 << 20;
/// Largest `max_message` this process accepts, at create and from a queue it opens (64 MiB).
pub const MAX_MESSAGE_LIMIT: usize = crate::pipe::MAX_MESSAGE_LIMIT;
/// Largest `maxsize` (2^20 items): the ring gets exactly `maxsize` slots (2 for `maxsize` 1),
/// so every admitted item has a slot. `maxsize == 0` (Python's "unbounded") is refused; see
/// `docs/channel.md` for why.
pub const MAX_MAXSIZE: usize = 1 << 20;
/// Most ring slots.
pub const MAX_RING_SLOTS: usize = MAX_MAXSIZE;
/// The bound of a [`SimpleQueue`] made by [`SimpleQueue::new`] (Python's is unbounded).
pub const SIMPLE_QUEUE_MAXSIZE: usize = 65536;
/// Longest single futex sleep: waiters re-check (and the ring recovers dead claimers) this often.
const PARK_MAX: Duration = Duration::from_millis(10);

/// Queue parameters.
#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    /// Bytes per ring slot; messages up to `slot_size - 1` bytes go inline. When the codec
    /// bounds the encoding of `T` ([`Codec::max_len`]: primitive numbers with postcard, any
    /// type with `Plain`), the ring's slots are no larger than that needs (`max_len + 1`):
    /// e.g. a `Queue<u64>` has 11-byte slots, two per cache line.
    pub slot_size: usize,
    /// Largest message (encoded bytes).
    pub max_message: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            slot_size: DEFAULT_SLOT_SIZE,
            max_message: crate::pipe::DEFAULT_MAX_MESSAGE,
        }
    }
}

pub(crate) struct Inner {
    ctl: Shared<QueueCtl>,
    /// This process's registration (process-local).
    local: Local,
    ring: MpmcRing,
    /// The ring has exactly `maxsize` slots (every queue made since the ring took any slot
    /// count, `maxsize >= 2`): the ring's fullness is the bound, so `put` admits by pushing
    /// (no `gets` read on its path). Otherwise (`maxsize == 1`: a ring has at least 2 slots)
    /// `put` takes a unit of `puts - gets < maxsize` first.
    exact: bool,
    /// Validated copies (never re-read from shared memory).
    maxsize: u32,
    max_message: usize,
    slot_size: usize,
    id: u64,
}

impl Inner {
    /// Items in the queue now, in `0..=maxsize` (see [`Queue::qsize`]): the ring's claimed
    /// and not yet taken slots when the ring is the bound, else `puts - gets`.
    fn depth(&self) -> u32 {
        if self.exact {
            // `pending` is at most the slot count, which is `maxsize` here.
            return (self.ring.pending() as u32).min(self.maxsize);
        }
        let c = self.ctl.get();
        // Relaxed: a snapshot (the items themselves are published by the ring's slots).
        let g = c.gets.gets.load(Ordering::Relaxed);
        let p = c.puts.puts.load(Ordering::Relaxed);
        used(p, g).min(self.maxsize)
    }

    /// Whether a put may find room now (a hint for an async putter's readiness and its
    /// passed-on wake-up; the put decides): a free slot at the ring's tail when the ring is
    /// the bound, else `puts - gets < maxsize`; true as well once the ring is closed.
    pub(super) fn has_room(&self) -> bool {
        if self.exact {
            return self.ring.has_free_slot();
        }
        self.depth() < self.maxsize || self.ring.is_closed()
    }
}

/// A process-shared FIFO queue of `T` (`Clone` gives another handle; `Serialize` sends it to
/// another process as its segments' handles).
///
/// Every `Queue` handle is both a producer and a consumer (Python's default): `get` reports
/// [`GetError::Disconnected`] once no live process holds a producer handle and the queue is
/// drained, `put` hands its item back in [`PutError::Disconnected`] once no live process holds a
/// consumer handle. For one side only, take a [`Sender`] or [`Receiver`]
/// ([`Queue::sender`], [`Queue::receiver`], [`Queue::split`]). See `docs/channel.md`.
pub struct Queue<T, C = Postcard> {
    sh: Arc<Inner>,
    /// This handle's last reading of `gets` (a process-local cache, as rtrb caches indices).
    cached_gets: AtomicU32,
    closed: bool,
    joinable: bool,
    /// The sides this handle is registered for (nothing once closed).
    role: Role,
    /// The process this handle is registered in (another one: inherited through `fork`, to be
    /// adopted on first use).
    reg_pid: AtomicU32,
    /// When a non-blocking call on this handle last scanned for live peers ([`epoch_ms`]; 0:
    /// never).
    last_check: AtomicU64,
    /// How this handle's blocking calls wait.
    strategy: WaitStrategy,
    /// This handle's adaptive spin count (process-local).
    budget: SpinBudget,
    _t: PhantomData<fn() -> (T, C)>,
}

impl<T, C> Clone for Queue<T, C> {
    fn clone(&self) -> Self {
        self.with_role(if self.closed { Role::BOTH } else { self.role })
    }
}

impl<T, C> Drop for Queue<T, C> {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl<T, C> Queue<T, C> {
    /// Another handle to the same queue, registered for `role`.
    fn with_role(&self, role: Role) -> Self {
        self.check_adopted();
        self.sh.local.adjust(&self.ctl().peers, role, true);
        Queue {
            sh: self.sh.clone(),
            cached_gets: AtomicU32::new(self.cached_gets.load(Ordering::Relaxed)),
            closed: false,
            joinable: self.joinable,
            role,
            reg_pid: AtomicU32::new(ident::pid()),
            last_check: AtomicU64::new(0),
            strategy: self.strategy,
            budget: self.budget.clone(),
            _t: PhantomData,
        }
    }

    /// Sets how this handle's blocking calls (`put`, `get`, `join` and their timeout variants)
    /// wait: [`WaitStrategy::SpinThenPark`] (the default: an adaptive spin, then a futex sleep),
    /// `Spin` (busy-poll: lowest latency, burns a CPU) or `Park` (sleep at once: kindest to an
    /// oversubscribed machine). Takes the ring's `WaitStrategy` too. Clones inherit it. Timeouts,
    /// disconnect detection and close wake-ups behave the same under every strategy.
    pub fn set_wait_strategy(&mut self, s: impl Into<WaitStrategy>) {
        self.strategy = s.into();
    }

    /// This handle's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Registers a handle inherited through `fork` on its first use in this process (two
    /// process-local loads on the fast path).
    #[inline]
    fn check_adopted(&self) {
        let me = ident::pid();
        if self.reg_pid.load(Ordering::Relaxed) != me {
            self.adopt_slow(me);
        }
    }

    #[cold]
    fn adopt_slow(&self, me: u32) {
        self.sh.local.adopt(&self.ctl().peers, self.role);
        self.reg_pid.store(me, Ordering::Relaxed);
    }

    fn ctl(&self) -> &QueueCtl {
        self.sh.ctl.get()
    }

    /// Drops this handle's registration; if it was this process's last producer (consumer),
    /// checks whether any live process still holds one, and disconnects the queue if not.
    fn unregister(&mut self) {
        if self.role == Role::NONE {
            return;
        }
        self.check_adopted();
        let role = std::mem::replace(&mut self.role, Role::NONE);
        let peers = &self.ctl().peers;
        let gone = self.sh.local.adjust(peers, role, false);
        if gone.tx && !peers.any_alive(true) {
            self.disconnect(NO_PRODUCERS);
        } else if gone.rx && !peers.any_alive(false) {
            self.disconnect(NO_CONSUMERS);
        }
    }

    /// Closes the ring for `why` (the first reason stays) and wakes every blocked getter and
    /// putter.
    fn disconnect(&self, why: u32) {
        self.ctl().peers.set_reason(why);
        self.sh.ring.close();
        self.ctl().gets.wait.wake_all();
    }

    /// Whether a non-blocking call that found the queue empty (full) may scan for live peers
    /// now: at most once per [`peers::CHECK_EVERY`] per handle, so polling stays cheap.
    #[cold]
    fn check_due(&self) -> bool {
        let now = epoch_ms();
        let last = self.last_check.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < peers::CHECK_EVERY.as_millis() as u64 {
            return false;
        }
        self.last_check.store(now, Ordering::Relaxed);
        true
    }

    /// Checks (reading /proc) whether any live process still holds a producer (`tx`) or
    /// consumer handle; disconnects if none does. Returns whether the queue is now closed.
    #[cold]
    fn peers_gone(&self, tx: bool) -> bool {
        let peers = &self.ctl().peers;
        if !peers.any_alive(tx) {
            self.disconnect(if tx { NO_PRODUCERS } else { NO_CONSUMERS });
        }
        self.sh.ring.is_closed()
    }
}

/// Milliseconds since this process first asked, plus 1 (so 0 means "never").
fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl<T, C> std::fmt::Debug for Queue<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.sh.maxsize)
            .field("slots", &self.sh.ring.slots())
            .finish()
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The ring's slot size for the `slot_size` asked for: no more than the longest encoding of `T`
/// needs (plus the tag byte) when the codec bounds it ([`Codec::max_len`]; every message then
/// goes inline, so the slot need not hold a side record), else what was asked.
fn slot_size_for<T, C: Codec<T>>(asked: usize) -> usize {
    match C::max_len() {
        Some(m) if m < asked => (m + 1).min(asked),
        _ => asked,
    }
}

/// Whether an opener accepts a ring's slot size: in `MIN_SLOT_SIZE..=MAX_SLOT_SIZE` (a side
/// record fits), or smaller but holding every encoding of `T` when the codec bounds it.
fn slot_size_ok<T, C: Codec<T>>(slot: usize) -> bool {
    (MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&slot)
        || C::max_len().is_some_and(|m| (m + 1..MIN_SLOT_SIZE).contains(&slot))
}

/// The ring's slot count for `maxsize`: exactly `maxsize` (the ring takes any count from 2).
fn ring_geometry(maxsize: usize) -> usize {
    maxsize.clamp(2, MAX_RING_SLOTS)
}

fn new_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    t ^ (u64::from(ident::pid()) << 40) ^ SEQ.fetch_add(1, Ordering::Relaxed).rotate_left(20)
}

impl<T: 'static, C: Codec<T>> Queue<T, C> {
    fn build(
        name: Option<&str>,
        maxsize: usize,
        opts: QueueOptions,
        joinable: bool,
    ) -> Result<Self, ChannelError> {
        if maxsize == 0 {
            return Err(ChannelError::InvalidParams(
                "maxsize 0 (unbounded) is not supported: give a bound, \
                 up to multiproc_channel::queue::MAX_MAXSIZE (1048576)",
            ));
        }
        if maxsize > MAX_MAXSIZE {
            return Err(ChannelError::InvalidParams(
                "maxsize above multiproc_channel::queue::MAX_MAXSIZE (1048576)",
            ));
        }
        if !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&opts.slot_size) {
            return Err(ChannelError::InvalidParams(
                "slot_size must be in 128..=1 MiB (a side-segment record must fit a slot)",
            ));
        }
        if opts.max_message == 0 || opts.max_message > MAX_MESSAGE_LIMIT {
            return Err(ChannelError::InvalidParams(
                "max_message must be in 1..=64 MiB",
            ));
        }
        let slots = ring_geometry(maxsize);
        let slot_size = slot_size_for::<T, C>(opts.slot_size);
        let bound = maxsize;
        let id = new_id();
        let fp = TypeFingerprint::of::<QueueOf<T, C>>();
        let init = |p: std::ptr::NonNull<QueueCtl>, _| {
            let ctl = QueueCtl {
                config: CachePadded(Config {
                    magic: AtomicU64::new(MAGIC),
                    maxsize: AtomicU64::new(bound as u64),
                    max_message: AtomicU64::new(opts.max_message as u64),
                    id: AtomicU64::new(id),
                }),
                puts: CachePadded(Puts {
                    puts: AtomicU32::new(0),
                }),
                gets: CachePadded(Gets {
                    gets: AtomicU32::new(0),
                    wait: WaitWord::new(),
                }),
                tasks: CachePadded(Tasks {
                    unfinished: AtomicU32::new(0),
                    wait: WaitWord::new(),
                    side_seq: AtomicU64::new(0),
                }),
                peers: CachePadded(Peers::new()),
            };
            // SAFETY: `p` is valid for writing one QueueCtl (aligned, zeroed) and unseen
            // until the segment is Ready.
            unsafe { p.as_ptr().write(ctl) };
            Ok(())
        };
        let (ctl, ring) = match name {
            Some(n) => {
                let ctl = Shared::<QueueCtl>::create(Some(n), fp, 0, init)?;
                let ring = MpmcRing::create_named(&format!("{n}.ring"), slots, slot_size)?;
                (ctl, ring)
            }
            None => (
                Shared::<QueueCtl>::create(None, fp, 0, init)?,
                MpmcRing::new(slots, slot_size)?,
            ),
        };
        Self::from_parts(ctl, ring, joinable, Role::BOTH)
    }

    fn from_parts(
        ctl: Shared<QueueCtl>,
        ring: MpmcRing,
        joinable: bool,
        role: Role,
    ) -> Result<Self, ChannelError> {
        let g = *ctl.geometry();
        let slot_size = ring.slot_size();
        if !slot_size_ok::<T, C>(slot_size) {
            return Err(ChannelError::Shm(ShmError::OutOfRange {
                what: "queue ring slot size",
                found: slot_size as u64,
                limit: MAX_SLOT_SIZE as u64,
            }));
        }
        let exact = ring.slots() == g.maxsize as usize;
        let mut ring = ring;
        // Exact: putters wait on the admission word next to `gets` (every get pokes it), never
        // on the ring's own `not_full`, so pops need not look for waiters there.
        ring.set_wakes_pushers(!exact);
        let sh = Arc::new(Inner {
            ctl,
            local: Local::new(),
            ring,
            exact,
            maxsize: g.maxsize,
            max_message: g.max_message,
            slot_size,
            id: g.id,
        });
        live_add(Arc::as_ptr(&sh));
        sh.local.adjust(&sh.ctl.get().peers, role, true);
        Ok(Queue {
            sh,
            cached_gets: AtomicU32::new(0),
            closed: false,
            joinable,
            role,
            reg_pid: AtomicU32::new(ident::pid()),
            last_check: AtomicU64::new(0),
            strategy: WaitStrategy::default(),
            budget: SpinBudget::new(),
            _t: PhantomData,
        })
    }

    /// A queue holding at most `maxsize` items (`1..=`[`MAX_MAXSIZE`]; `0` is refused with
    /// [`ChannelError::InvalidParams`]: this queue is never unbounded), in anonymous segments:
    /// forked children inherit it; spawned ones get it by serializing.
    pub fn new(maxsize: usize) -> Result<Self, ChannelError> {
        Self::build(None, maxsize, QueueOptions::default(), false)
    }

    /// [`Queue::new`] with options.
    pub fn with_options(maxsize: usize, opts: QueueOptions) -> Result<Self, ChannelError> {
        Self::build(None, maxsize, opts, false)
    }

    /// A named queue (`/dev/shm/multiproc.NAME` and `NAME.ring`) that unrelated processes open
    /// with [`Queue::open_named`]; unlinked when this handle (and its clones) drop.
    pub fn create_named(name: &str, maxsize: usize) -> Result<Self, ChannelError> {
        Self::build(Some(name), maxsize, QueueOptions::default(), false)
    }

    /// [`Queue::create_named`] with options.
    pub fn create_named_with(
        name: &str,
        maxsize: usize,
        opts: QueueOptions,
    ) -> Result<Self, ChannelError> {
        Self::build(Some(name), maxsize, opts, false)
    }

    /// Opens a named queue; fails with a fingerprint error if it holds another `T` (or codec).
    pub fn open_named(name: &str) -> Result<Self, ChannelError> {
        let ctl = Shared::<QueueCtl>::open_named(name, TypeFingerprint::of::<QueueOf<T, C>>())?;
        let ring = MpmcRing::open_named(&format!("{name}.ring"))?;
        Self::from_parts(ctl, ring, false, Role::BOTH)
    }

    /// The bound (`maxsize`).
    pub fn maxsize(&self) -> usize {
        self.sh.maxsize as usize
    }

    /// Items in the queue (admitted by `put`, not yet taken by `get`): a snapshot, always in
    /// `0..=maxsize`. It is read from the ring's positions (or, for `maxsize` 1, from the
    /// admission counters) at slightly different moments while other processes move them, so
    /// the difference is clamped to the bound.
    pub fn qsize(&self) -> usize {
        self.sh.depth() as usize
    }

    /// Whether the queue holds no item (the same snapshot as `qsize() == 0`).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items (the same snapshot as `qsize() == maxsize`).
    pub fn full(&self) -> bool {
        self.qsize() == self.sh.maxsize as usize
    }

    /// Closes this handle: its later `put`/`get` fail with `Closed` (Python's `close()`), and it
    /// no longer counts as a producer or consumer: if it was the last live producer, getters
    /// drain the queue and then get [`GetError::Disconnected`]; if the last consumer, putters get
    /// [`PutError::Disconnected`]. Other handles are not otherwise affected.
    pub fn close(&mut self) {
        self.closed = true;
        self.unregister();
    }

    /// Closes the queue for everyone: puts fail with `Closed`; gets drain, then fail with it.
    pub fn close_all(&self) {
        self.disconnect(CLOSED_ALL);
    }

    /// A producer-only handle: it counts as a producer, not as a consumer.
    pub fn sender(&self) -> Sender<T, C> {
        Sender(self.with_role(Role::TX))
    }

    /// A consumer-only handle: it counts as a consumer, not as a producer.
    pub fn receiver(&self) -> Receiver<T, C> {
        Receiver(self.with_role(Role::RX))
    }

    /// Splits this handle into a producer-only and a consumer-only one (crossbeam's shape).
    pub fn split(self) -> (Sender<T, C>, Receiver<T, C>) {
        (self.sender(), self.receiver())
    }

    /// Whether every producer (`Disconnected` for getters) or every consumer is gone, or the
    /// queue was closed with [`Queue::close_all`].
    pub fn is_disconnected(&self) -> bool {
        self.sh.ring.is_closed()
    }

    /// A blocking iterator over received items: it ends when the queue is disconnected (every
    /// producer gone and the queue drained) or closed; other errors are yielded.
    ///
    /// ```
    /// use multiproc_channel::Queue;
    /// let (tx, rx) = Queue::<u32>::new(8).unwrap().split();
    /// for i in 0..3 { tx.put(i).unwrap(); }
    /// drop(tx); // the last producer: the iterator ends after draining
    /// let got: Vec<u32> = rx.iter().map(Result::unwrap).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T, C> {
        Iter { q: self }
    }

    /// A non-blocking iterator: yields what is in the queue now, then ends (on `Empty`,
    /// `Disconnected` or `Closed`).
    ///
    /// ```
    /// use multiproc_channel::Queue;
    /// let q: Queue<u32> = Queue::new(8).unwrap();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert_eq!(q.try_iter().map(Result::unwrap).collect::<Vec<_>>(), [1, 2]);
    /// assert_eq!(q.try_iter().count(), 0);
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T, C> {
        TryIter { q: self }
    }

    /// The segments this handle maps (control block, ring), for fuzz targets and tests that
    /// overwrite them as a hostile process could ([`Segment::scribble`]).
    #[doc(hidden)]
    pub fn debug_segments(&self) -> Vec<Segment> {
        let mut v: Vec<Segment> = self.sh.ctl.segment().cloned().into_iter().collect();
        v.extend(self.sh.ring.segment().cloned());
        v
    }

    /// The accounting state, for tests: (why the queue is closed: 0 open, 1 `close_all`, 2 no
    /// producers, 3 no consumers; whether the peer table overflowed).
    #[doc(hidden)]
    pub fn debug_peers(&self) -> (u32, bool) {
        let p = &self.ctl().peers;
        (p.reason(), p.is_untracked())
    }

    /// The `/dev/shm` name prefix of this queue's side segments (`multiproc.qside-<id>-`), for
    /// fuzz targets and tests.
    #[doc(hidden)]
    pub fn debug_side_prefix(&self) -> String {
        format!("multiproc.qside-{:016x}-", self.sh.id)
    }

    /// Records lost because a process died mid-put or mid-get (from the ring).
    pub fn lost_records(&self) -> u64 {
        self.sh.ring.lost_records()
    }
}

#[derive(Clone, Copy)]
enum Mode {
    NoWait,
    Block(Option<Instant>),
}

enum Admit {
    Full,
    Timeout,
    Closed,
}
