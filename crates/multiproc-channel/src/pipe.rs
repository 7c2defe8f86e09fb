//! `Pipe` and `Connection`: Python's `multiprocessing.Pipe` over two SPSC byte rings.
//!
//! A duplex pipe is two [`SpscRing`]s in memfd segments (one per direction); a simplex pipe is
//! one. Each message is one ring record `[tag][bytes]` when it fits the ring's largest record,
//! else a run of contiguous records: `FIRST [total: u64 LE][chunk]`, then `CONT [chunk]` until
//! `total` bytes arrived (one producer per ring, so fragments never interleave). A message is
//! never truncated; one larger than the pipe's `max_message` (default 64 MiB) is refused at
//! `send` with [`SendError::TooLarge`].
//!
//! Messages are encoded straight into the ring's reserved space (`reserve` -> encode ->
//! `commit_len`) and decoded from the record in place (`peek` -> decode -> `release`); only
//! messages larger than [`SMALL_RESERVE`] (or than a ring record) go through a `Vec`.
//!
//! **Binding.** An end binds to the first process that uses it (send/recv/poll): that process
//! is recorded as the ring side's owner, and the peer sees `Eof`/`Disconnected` when it dies or
//! closes the end. So the Python pattern works: create a pipe, fork (or pass an end to a spawned
//! child), and let each process use its end. Dropping a bound end in its own process closes it;
//! dropping an unbound end closes it only if no fork happened and it was never serialized since
//! it was made (a forked child may own the copy); [`Connection::close`] always closes.
//! Known limit: an end that its process never used is bound to nobody, so if that process dies
//! the peer cannot tell (it waits until its timeout); [`Connection::bind`] binds eagerly.
//!
//! ```
//! use multiproc_channel::Pipe;
//! let (mut a, mut b) = Pipe::duplex::<String>().unwrap();
//! a.send(&"ping".to_string()).unwrap();
//! assert_eq!(b.recv().unwrap(), "ping");
//! b.send_bytes(b"xxpongxx", 2, Some(4)).unwrap();
//! assert_eq!(a.recv_bytes().unwrap(), b"pong");
//! ```

use crate::codec::{Codec, Postcard, note_handle_error};
use crate::error::{ChannelError, RecvError, SendError};
use crate::facade::{AtomicU64, Ordering};
use crate::ident;
use multiproc_ring::{Consumer, PopError, Producer, PushError, RingError, SpscRing, WaitStrategy};
use multiproc_shm::{ObjectKind, SegmentHandle, Shared, SharedLayout, ShmError, TypeFingerprint};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

#[cfg(not(loom))]
mod async_impl;
#[cfg(not(loom))]
pub use async_impl::SendFuture;

const WHOLE: u8 = 0;
const FIRST: u8 = 1;
const CONT: u8 = 2;
/// Bytes reserved for encoding in place before falling back to a sized `Vec`.
pub const SMALL_RESERVE: usize = 1024;
/// Default ring capacity per direction.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
/// Default largest message.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest `max_message` this process accepts: at create, from a named pipe's control block and
/// from a deserialized handle (64 MiB). A receiver never holds more than this for one message.
pub const MAX_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

/// Pipe parameters.
#[derive(Clone, Copy, Debug)]
pub struct PipeOptions {
    /// Ring bytes per direction (power of two, >= 4096).
    pub capacity: usize,
    /// Largest message in bytes (encoded), at most [`MAX_MESSAGE_LIMIT`].
    pub max_message: usize,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            capacity: DEFAULT_CAPACITY,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// The two ends a pipe constructor returns.
pub type Ends<T, C = Postcard> = (Connection<T, C>, Connection<T, C>);

/// Makes pipes.
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A duplex pipe with the default codec (postcard): both ends send and receive.
    pub fn duplex<T>() -> Result<Ends<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::duplex_with(PipeOptions::default())
    }

    /// A simplex pipe with the default codec: `(reader, writer)`, as Python's
    /// `Pipe(duplex=False)`.
    pub fn simplex<T>() -> Result<Ends<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::simplex_with(PipeOptions::default())
    }

    /// A duplex pipe with explicit options and codec.
    pub fn duplex_with<T, C: Codec<T>>(opts: PipeOptions) -> Result<Ends<T, C>, ChannelError> {
        check(&opts)?;
        let ab = SpscRing::create(opts.capacity)?;
        let ba = SpscRing::create(opts.capacity)?;
        Ok((
            Connection::new(Some(ab.clone()), Some(ba.clone()), opts.max_message),
            Connection::new(Some(ba), Some(ab), opts.max_message),
        ))
    }

    /// A simplex pipe with explicit options and codec: `(reader, writer)`.
    pub fn simplex_with<T, C: Codec<T>>(opts: PipeOptions) -> Result<Ends<T, C>, ChannelError> {
        check(&opts)?;
        let r = SpscRing::create(opts.capacity)?;
        Ok((
            Connection::new(None, Some(r.clone()), opts.max_message),
            Connection::new(Some(r), None, opts.max_message),
        ))
    }
}

/// Magic of a named pipe's control block ("MPNPIPE1").
const NAMED_MAGIC: u64 = u64::from_le_bytes(*b"MPNPIPE1");

/// The control block of a named pipe (segment `multiproc.NAME`, kind `Pipe`): what the opener
/// needs to know. Written once in `init`, before the segment is marked Ready.
#[repr(C)]
struct NamedCtl {
    magic: AtomicU64,
    /// 1: duplex, 0: simplex (the creator reads).
    duplex: AtomicU64,
    max_message: AtomicU64,
}

/// A named pipe's validated control block, kept locally.
#[derive(Clone, Copy, Debug)]
struct NamedGeom {
    duplex: bool,
    max_message: usize,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern valid, `&NamedCtl` over shared memory
// sound), alignment 8, no Drop.
unsafe impl SharedLayout for NamedCtl {
    const KIND: ObjectKind = ObjectKind::Pipe;
    type Geometry = NamedGeom;

    fn validate(&self, _tail_len: usize) -> Result<NamedGeom, ShmError> {
        // Relaxed: written before the creator's Release of Ready, which the opener Acquired.
        if self.magic.load(Ordering::Relaxed) != NAMED_MAGIC {
            return Err(ShmError::Corrupted("bad named pipe magic"));
        }
        let duplex = match self.duplex.load(Ordering::Relaxed) {
            0 => false,
            1 => true,
            _ => return Err(ShmError::Corrupted("bad named pipe direction")),
        };
        let max = self.max_message.load(Ordering::Relaxed);
        if max == 0 || max > MAX_MESSAGE_LIMIT as u64 {
            return Err(ShmError::OutOfRange {
                what: "named pipe max_message",
                found: max,
                limit: MAX_MESSAGE_LIMIT as u64,
            });
        }
        Ok(NamedGeom {
            duplex,
            max_message: max as usize,
        })
    }
}

/// Fingerprint carrier: a pipe of `T` with codec `C`.
struct PipeOf<T, C>(PhantomData<fn() -> (T, C)>);

/// Ring carrying creator -> opener messages.
fn c2o(name: &str) -> String {
    format!("{name}.c2o")
}

/// Ring carrying opener -> creator messages.
fn o2c(name: &str) -> String {
    format!("{name}.o2c")
}

impl Pipe {
    /// A named pipe that another, unrelated process connects to with [`Pipe::open_named`]:
    /// returns the creator's end. Duplex: both ends send and receive; simplex (`duplex =
    /// false`): the creator reads and the opener writes. The segments are
    /// `/dev/shm/multiproc.NAME` (a small control block with the type fingerprint) and
    /// `NAME.c2o` / `NAME.o2c` (the rings); they are unlinked when the creator's end drops.
    ///
    /// One opener at a time: the opener's end binds to its process at once, so a second
    /// opener gets [`RingError::AlreadyAttached`] while the first lives, and
    /// [`RingError::Closed`] once it closed (a named pipe is one connection, not a listener).
    pub fn create_named<T: 'static>(name: &str, duplex: bool) -> Result<Connection<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::create_named_with(name, duplex, PipeOptions::default())
    }

    /// [`Pipe::create_named`] with explicit options and codec.
    pub fn create_named_with<T: 'static, C: Codec<T> + 'static>(
        name: &str,
        duplex: bool,
        opts: PipeOptions,
    ) -> Result<Connection<T, C>, ChannelError> {
        check(&opts)?;
        let fp = TypeFingerprint::of::<PipeOf<T, C>>();
        let mut rings: Option<(Option<SpscRing>, SpscRing)> = None;
        let mut ring_err: Option<RingError> = None;
        // The rings are made inside the control segment's `init`: openers wait for the control
        // segment to be Ready, so they never find it without its rings, and a name clash is
        // reported on NAME itself.
        let made = Shared::<NamedCtl>::create(Some(name), fp, 0, |p, _| {
            let r = (|| {
                let out = if duplex {
                    Some(SpscRing::create_named(&c2o(name), opts.capacity)?)
                } else {
                    None
                };
                let inc = SpscRing::create_named(&o2c(name), opts.capacity)?;
                Ok::<_, RingError>((out, inc))
            })();
            match r {
                Ok(r) => rings = Some(r),
                Err(e) => {
                    ring_err = Some(e);
                    return Err(multiproc_shm::ShmError::Os {
                        op: "create the pipe's rings",
                        source: std::io::Error::other("ring creation failed"),
                    });
                }
            }
            let ctl = NamedCtl {
                magic: AtomicU64::new(NAMED_MAGIC),
                duplex: AtomicU64::new(u64::from(duplex)),
                max_message: AtomicU64::new(opts.max_message as u64),
            };
            // SAFETY: `p` is valid for writing one NamedCtl and unseen until Ready.
            unsafe { p.as_ptr().write(ctl) };
            Ok(())
        });
        let ctl = match made {
            Ok(c) => c,
            Err(e) => return Err(ring_err.map_or_else(|| e.into(), ChannelError::from)),
        };
        let Some((out, inc)) = rings else {
            return Err(ChannelError::Corrupted("named pipe rings missing"));
        };
        let mut conn = Connection::new(out, Some(inc), opts.max_message);
        conn.named = Some(ctl);
        conn.attach_all()?;
        Ok(conn)
    }

    /// Opens the other end of the named pipe `name` made by [`Pipe::create_named`] (in any
    /// process): the end is bound to the calling process at once. Fails with a type-fingerprint
    /// error ([`multiproc_shm::ShmError::WrongType`]) if the pipe carries another `T`.
    pub fn open_named<T: 'static>(name: &str) -> Result<Connection<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::open_named_with(name)
    }

    /// [`Pipe::open_named`] with an explicit codec (it must be the creator's).
    pub fn open_named_with<T: 'static, C: Codec<T> + 'static>(
        name: &str,
    ) -> Result<Connection<T, C>, ChannelError> {
        let ctl = Shared::<NamedCtl>::open_named(name, TypeFingerprint::of::<PipeOf<T, C>>())?;
        let NamedGeom {
            duplex,
            max_message: max,
        } = *ctl.geometry();
        let out = SpscRing::open_named(&o2c(name))?;
        let inc = if duplex {
            Some(SpscRing::open_named(&c2o(name))?)
        } else {
            None
        };
        let mut conn = Connection::new(Some(out), inc, max);
        conn.named = Some(ctl);
        conn.attach_all()?;
        Ok(conn)
    }
}

fn check(opts: &PipeOptions) -> Result<(), ChannelError> {
    if !opts.capacity.is_power_of_two() || opts.capacity < 4096 {
        return Err(ChannelError::InvalidParams(
            "capacity must be a power of two >= 4096",
        ));
    }
    if opts.max_message == 0 || opts.max_message > MAX_MESSAGE_LIMIT {
        return Err(ChannelError::InvalidParams(
            "max_message must be in 1..=64 MiB",
        ));
    }
    Ok(())
}

struct TxEnd {
    ring: SpscRing,
    p: Option<Producer>,
    bound_pid: u32,
    scratch: Vec<u8>,
    /// Sends since the last liveness check of the reader.
    sends: u32,
}

/// A sender checks whether the reader's process is alive (reads /proc) once per this many
/// sends; an explicitly closed reader is seen at the very next send (a flag).
const READER_CHECK_EVERY: u32 = 4096;

struct RxEnd {
    ring: SpscRing,
    c: Option<Consumer>,
    bound_pid: u32,
    /// A large message being reassembled: its announced total (`None`: none in progress).
    partial_total: Option<usize>,
    /// The fragments received so far (grows as they arrive, never reserved from the announced
    /// total).
    partial: Vec<u8>,
    /// Skipping the CONT fragments of a message whose start was lost (reported once).
    skipping: bool,
    /// A complete message taken from the ring but not delivered (`recv_bytes_into` too short).
    stash: Option<Vec<u8>>,
}

impl RxEnd {
    fn drop_partial(&mut self) {
        self.partial_total = None;
        self.partial = Vec::new();
    }
}

/// One end of a [`Pipe`]. `T` is the message type of `send`/`recv`; `send_bytes`/`recv_bytes`
/// carry raw bytes on the same stream.
pub struct Connection<T, C = Postcard> {
    tx: Option<TxEnd>,
    rx: Option<RxEnd>,
    readable: bool,
    writable: bool,
    closed: bool,
    max_message: usize,
    forks_at_creation: u64,
    exported: Cell<bool>,
    strategy: WaitStrategy,
    /// The control segment of a named pipe (kept so the creator unlinks it when this drops).
    named: Option<Shared<NamedCtl>>,
    _t: PhantomData<fn() -> (T, C)>,
}

impl<T, C> std::fmt::Debug for Connection<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("closed", &self.closed)
            .finish()
    }
}

use multiproc_shm::deadline::{after as deadline_after, left as remaining};

fn reserve_until(
    p: &mut Producer,
    deadline: Option<Instant>,
    n: usize,
) -> Result<multiproc_ring::WriteGrant<'_>, PushError> {
    match deadline {
        None => p.reserve(n),
        Some(d) => p.reserve_timeout(n, remaining(d)),
    }
}

/// Encodes `v` as one `WHOLE` record into `g` and commits it (deferred if `lazy`); `Ok(false)`
/// if it does not fit (the grant is dropped: nothing is published).
#[inline]
fn encode_whole<T, C: Codec<T>>(
    mut g: multiproc_ring::WriteGrant<'_>,
    v: &T,
    lazy: bool,
) -> Result<bool, SendError> {
    let buf = g.as_mut_slice();
    buf[0] = WHOLE;
    let Some(n) = C::encode_into(v, &mut buf[1..])? else {
        return Ok(false);
    };
    if lazy {
        g.commit_len_deferred(n + 1);
    } else {
        g.commit_len(n + 1);
    }
    Ok(true)
}

/// `buf[offset..offset + size]` (`size` `None`: to the end), `None` for bad bounds.
#[inline]
fn sub_slice(buf: &[u8], offset: usize, size: Option<usize>) -> Option<&[u8]> {
    let rest = buf.len().checked_sub(offset)?;
    let size = size.unwrap_or(rest);
    (size <= rest).then(|| &buf[offset..offset + size])
}

/// `dst.copy_from_slice(src)` (equal lengths), with the copy of a small message inlined as two
/// overlapping word moves instead of a `memcpy` call (about a tenth of an 8-byte message's
/// send or receive path).
#[inline]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if (8..=16).contains(&n) && dst.len() == n {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else {
        dst.copy_from_slice(src);
    }
}

fn push_err(e: PushError) -> SendError {
    match e {
        PushError::Disconnected => SendError::Disconnected,
        PushError::Timeout => SendError::Timeout,
        PushError::TooLarge { len, max } => SendError::TooLarge { len, max },
        PushError::Corrupted(s) => SendError::Corrupted(s),
        _ => SendError::Corrupted("unexpected ring error"),
    }
}

fn pop_err(e: PopError) -> RecvError {
    match e {
        PopError::Disconnected => RecvError::Eof,
        PopError::Timeout | PopError::Empty => RecvError::Timeout,
        PopError::Corrupted(s) => RecvError::Corrupted(s),
        _ => RecvError::Corrupted("unexpected ring error"),
    }
}

fn attach_err_send(e: RingError) -> SendError {
    match e {
        RingError::Closed(_) => SendError::Closed,
        RingError::AlreadyAttached { .. } => SendError::InUse,
        _ => SendError::Corrupted("cannot attach to the ring"),
    }
}

fn attach_err_recv(e: RingError) -> RecvError {
    match e {
        RingError::Closed(_) => RecvError::Closed,
        RingError::AlreadyAttached { .. } => RecvError::InUse,
        _ => RecvError::Corrupted("cannot attach to the ring"),
    }
}

impl<T, C: Codec<T>> Connection<T, C> {
    fn new(tx: Option<SpscRing>, rx: Option<SpscRing>, max_message: usize) -> Self {
        Connection {
            readable: rx.is_some(),
            writable: tx.is_some(),
            tx: tx.map(|ring| TxEnd {
                ring,
                p: None,
                bound_pid: 0,
                scratch: Vec::new(),
                sends: 0,
            }),
            rx: rx.map(|ring| RxEnd {
                ring,
                c: None,
                bound_pid: 0,
                partial_total: None,
                partial: Vec::new(),
                skipping: false,
                stash: None,
            }),
            closed: false,
            max_message,
            forks_at_creation: ident::forks(),
            exported: Cell::new(false),
            strategy: WaitStrategy::default(),
            named: None,
            _t: PhantomData,
        }
    }

    /// Sets how this end's blocking calls wait (default [`WaitStrategy::SpinPark`]; `Spin`
    /// trades a busy CPU for the lowest latency).
    pub fn set_wait_strategy(&mut self, s: WaitStrategy) {
        self.strategy = s;
        if let Some(p) = self.tx.as_mut().and_then(|t| t.p.as_mut()) {
            p.set_wait_strategy(s);
        }
        if let Some(c) = self.rx.as_mut().and_then(|r| r.c.as_mut()) {
            c.set_wait_strategy(s);
        }
    }

    /// The segments this end maps (its rings, and a named pipe's control block), for fuzz
    /// targets and tests that overwrite them as a hostile process could.
    #[doc(hidden)]
    pub fn debug_segments(&self) -> Vec<multiproc_shm::Segment> {
        let mut v = Vec::new();
        if let Some(t) = &self.tx {
            v.extend(t.ring.segment().cloned());
        }
        if let Some(r) = &self.rx {
            v.extend(r.ring.segment().cloned());
        }
        if let Some(n) = &self.named {
            v.extend(n.segment().cloned());
        }
        v
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether [`Connection::close`] was called.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Largest message this end sends or accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    #[inline]
    fn tx(&mut self) -> Result<(&mut Producer, &mut Vec<u8>), SendError> {
        self.tx_checked(false)
    }

    /// [`Connection::tx`] for a send: `Disconnected` at once if the reader closed its end
    /// (a flag on a line the send touches anyway), or, checked every [`READER_CHECK_EVERY`]
    /// sends, if its process is dead; not only once the ring is full.
    #[inline]
    fn tx_live(&mut self) -> Result<(&mut Producer, &mut Vec<u8>), SendError> {
        self.tx_checked(true)
    }

    #[inline]
    fn tx_checked(&mut self, live: bool) -> Result<(&mut Producer, &mut Vec<u8>), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        let Some(tx) = self.tx.as_mut() else {
            return Err(SendError::NotWritable);
        };
        if tx.p.is_none() {
            let mut p = tx.ring.producer().map_err(attach_err_send)?;
            p.set_wait_strategy(self.strategy);
            tx.p = Some(p);
            tx.bound_pid = ident::pid();
        }
        match tx.p.as_mut() {
            Some(p) => {
                if live {
                    if p.peer_closed() {
                        return Err(SendError::Disconnected);
                    }
                    tx.sends = tx.sends.wrapping_add(1);
                    if tx.sends % READER_CHECK_EVERY == 0 && p.is_disconnected() {
                        return Err(SendError::Disconnected);
                    }
                }
                Ok((p, &mut tx.scratch))
            }
            None => Err(SendError::Closed),
        }
    }

    fn rx(&mut self) -> Result<&mut RxEnd, RecvError> {
        if self.closed {
            return Err(RecvError::Closed);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Err(RecvError::NotReadable);
        };
        if rx.c.is_none() {
            let mut c = rx.ring.consumer().map_err(attach_err_recv)?;
            c.set_wait_strategy(self.strategy);
            rx.c = Some(c);
            rx.bound_pid = ident::pid();
        }
        Ok(rx)
    }

    /// The send fast path's producer: this end is open and bound, the reader has not closed,
    /// and no liveness check of the reader is due on this send (`None`: take the full path,
    /// [`Connection::tx_live`], which binds, reports errors and runs that check).
    #[inline]
    fn tx_fast(&mut self) -> Option<&mut Producer> {
        if self.closed {
            return None;
        }
        let tx = self.tx.as_mut()?;
        let p = tx.p.as_mut()?;
        let sends = tx.sends.wrapping_add(1);
        if sends % READER_CHECK_EVERY == 0 || p.peer_closed() {
            return None;
        }
        tx.sends = sends;
        Some(p)
    }

    /// The receive fast path: a whole message (`WHOLE` record) already published, with no
    /// stashed or half-assembled message before it (`None`: take the full path, `recv_with`,
    /// which binds, waits, reassembles fragments and reports errors).
    #[inline]
    fn whole_ready(&mut self) -> Option<multiproc_ring::ReadGrant<'_>> {
        if self.closed {
            return None;
        }
        let rx = self.rx.as_mut()?;
        if rx.stash.is_some() || rx.partial_total.is_some() {
            return None;
        }
        let g = rx.c.as_mut()?.try_peek().ok()?;
        if g.as_slice().first() != Some(&WHOLE) {
            return None;
        }
        rx.skipping = false;
        Some(g)
    }

    /// Attaches this end's ring sides to the calling process (named pipes bind at once).
    fn attach_all(&mut self) -> Result<(), RingError> {
        if let Some(tx) = self.tx.as_mut()
            && tx.p.is_none()
        {
            let mut p = tx.ring.producer()?;
            p.set_wait_strategy(self.strategy);
            tx.p = Some(p);
            tx.bound_pid = ident::pid();
        }
        if let Some(rx) = self.rx.as_mut()
            && rx.c.is_none()
        {
            let mut c = rx.ring.consumer()?;
            c.set_wait_strategy(self.strategy);
            rx.c = Some(c);
            rx.bound_pid = ident::pid();
        }
        Ok(())
    }

    /// Binds this end to the calling process now (it is otherwise bound on first use). Call
    /// it first thing in a child that may die before using its end, so the peer sees `Eof`.
    pub fn bind(&mut self) -> Result<(), RecvError> {
        if self.writable {
            self.tx().map_err(|e| match e {
                SendError::Closed => RecvError::Closed,
                SendError::InUse => RecvError::InUse,
                // Attaching fails only as `attach_err_send` maps it: keep its reason.
                SendError::Corrupted(why) => RecvError::Corrupted(why),
                _ => RecvError::Corrupted("cannot bind the sending side"),
            })?;
        }
        if self.readable {
            self.rx()?;
        }
        Ok(())
    }

    /// Sends one message, waiting for room (fails with `Disconnected` if the peer closed or
    /// died).
    #[inline]
    pub fn send(&mut self, v: &T) -> Result<(), SendError> {
        self.send_deadline(v, None)
    }

    /// Sends one message, waiting at most `timeout` for room. A large message that timed out
    /// half-written closes this end's sending side (the peer sees `Eof` after what was whole).
    pub fn send_timeout(&mut self, v: &T, timeout: Duration) -> Result<(), SendError> {
        self.send_deadline(v, deadline_after(timeout))
    }

    /// [`Connection::send`] with batched publication (opt-in): the message is written to the
    /// ring but may stay invisible to the reader until this end's next publication. See
    /// [`Connection::send_bytes_batched`] for when that happens and what it costs.
    #[inline]
    pub fn send_batched(&mut self, v: &T) -> Result<(), SendError> {
        self.send_lazy(v, None, true)
    }

    fn send_deadline(&mut self, v: &T, deadline: Option<Instant>) -> Result<(), SendError> {
        self.send_lazy(v, deadline, false)
    }

    #[inline]
    fn send_lazy(&mut self, v: &T, deadline: Option<Instant>, lazy: bool) -> Result<(), SendError> {
        let max_message = self.max_message;
        // Room already free and nothing to check first (`tx_fast`); else the full path.
        let mut in_place = true;
        if let Some(p) = self.tx_fast() {
            let room = SMALL_RESERVE.min(p.max_record());
            if let Ok(g) = p.try_reserve(room) {
                if encode_whole::<T, C>(g, v, lazy)? {
                    return Ok(());
                }
                in_place = false; // larger than SMALL_RESERVE: straight to the Vec below
            }
        }
        let (p, scratch) = self.tx_live()?;
        if in_place {
            let room = SMALL_RESERVE.min(p.max_record());
            let g = match deadline {
                None => p.reserve(room),
                Some(d) => p.reserve_timeout(room, remaining(d)),
            }
            .map_err(push_err)?;
            if encode_whole::<T, C>(g, v, lazy)? {
                return Ok(());
            }
        }
        let mut bytes = std::mem::take(scratch);
        let r = C::encode_vec(v, &mut bytes)
            .map_err(SendError::from)
            .and_then(|()| self.write_message(&bytes, deadline, max_message, lazy));
        if let Some(tx) = self.tx.as_mut()
            && bytes.capacity() <= 1 << 20
        {
            tx.scratch = bytes;
        }
        r
    }

    /// Sends `buf[offset..offset + size]` (all of the rest if `size` is `None`) as one message
    /// of raw bytes (Python's `send_bytes(buf, offset, size)`); bad bounds are
    /// [`SendError::BadRange`].
    #[inline]
    pub fn send_bytes(
        &mut self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
    ) -> Result<(), SendError> {
        if let Some(bytes) = sub_slice(buf, offset, size)
            && self.send_small(bytes, false)
        {
            return Ok(());
        }
        self.send_bytes_deadline(buf, offset, size, None)
    }

    /// Sends a message that fits one record into room already free, without waiting; `false`
    /// if it did not (nothing was written: the caller takes the full path).
    #[inline]
    fn send_small(&mut self, bytes: &[u8], lazy: bool) -> bool {
        if bytes.len() > self.max_message {
            return false;
        }
        let Some(p) = self.tx_fast() else {
            return false;
        };
        if bytes.len() >= p.max_record() {
            return false;
        }
        let Ok(mut g) = p.try_reserve(bytes.len() + 1) else {
            return false;
        };
        let (tag, body) = g.as_mut_slice().split_at_mut(1);
        tag[0] = WHOLE;
        copy_small(body, bytes);
        if lazy {
            g.commit_deferred();
        } else {
            g.commit();
        }
        true
    }

    /// [`Connection::send_bytes`], waiting at most `timeout` for room (as
    /// [`Connection::send_timeout`]: a large message that timed out half-written closes this
    /// end's sending side).
    pub fn send_bytes_timeout(
        &mut self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        self.send_bytes_deadline(buf, offset, size, deadline_after(timeout))
    }

    fn send_bytes_deadline(
        &mut self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        let bad = SendError::BadRange {
            offset,
            size,
            len: buf.len(),
        };
        if offset > buf.len() {
            return Err(bad);
        }
        let size = size.unwrap_or(buf.len() - offset);
        let Some(end) = offset.checked_add(size).filter(|&e| e <= buf.len()) else {
            return Err(bad);
        };
        let max = self.max_message;
        self.write_message(&buf[offset..end], deadline, max, false)
    }

    /// [`Connection::send_bytes`] with batched publication (opt-in; a `BufWriter` for shared
    /// memory). The message is written to the ring, but the reader may not see it until this
    /// end publishes, which it does:
    /// * after [`DEFER_MAX_RECORDS`](multiproc_ring::spsc::DEFER_MAX_RECORDS) batched messages
    ///   or an eighth of the ring's bytes,
    /// * at once when it sees the reader asleep in `recv` (checked on every batched send,
    ///   without a fence: a reader that falls asleep during the send may be missed),
    /// * when the ring is full (before waiting for room),
    /// * on [`Connection::flush`], on any non-batched send, and when the end is dropped or
    ///   closed.
    ///
    /// So a writer that goes idle must call [`Connection::flush`], or a reader blocked in `recv`
    /// waits for the writer's next publication. And if the writing process dies (SIGKILL), the
    /// messages not yet published are lost although `send_bytes_batched` returned `Ok` for
    /// them (at most one batch). `send_bytes` keeps Python's semantics: each message is visible
    /// when the call returns.
    #[inline]
    pub fn send_bytes_batched(
        &mut self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
    ) -> Result<(), SendError> {
        let Some(bytes) = sub_slice(buf, offset, size) else {
            return Err(SendError::BadRange {
                offset,
                size,
                len: buf.len(),
            });
        };
        if self.send_small(bytes, true) {
            return Ok(());
        }
        let max = self.max_message;
        self.write_message(bytes, None, max, true)
    }

    /// Publishes the messages [`Connection::send_bytes_batched`]/[`Connection::send_batched`]
    /// left pending, waking the reader if it sleeps. A no-op if none are pending or this end
    /// does not write.
    pub fn flush(&mut self) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if let Some(p) = self.tx.as_mut().and_then(|t| t.p.as_mut()) {
            p.flush();
        }
        Ok(())
    }

    fn write_message(
        &mut self,
        bytes: &[u8],
        deadline: Option<Instant>,
        max_message: usize,
        lazy: bool,
    ) -> Result<(), SendError> {
        if bytes.len() > max_message {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max: max_message,
            });
        }
        let (p, _) = self.tx_live()?;
        let max_rec = p.max_record();
        if bytes.len() < max_rec {
            let mut g = reserve_until(p, deadline, bytes.len() + 1).map_err(push_err)?;
            let b = g.as_mut_slice();
            b[0] = WHOLE;
            b[1..].copy_from_slice(bytes);
            if lazy {
                g.commit_deferred();
            } else {
                g.commit();
            }
            return Ok(());
        }
        // Fragments: FIRST [total][chunk], CONT [chunk]...
        let first = (max_rec - 9).min(bytes.len());
        let mut g = reserve_until(p, deadline, first + 9).map_err(push_err)?;
        let b = g.as_mut_slice();
        b[0] = FIRST;
        b[1..9].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        b[9..].copy_from_slice(&bytes[..first]);
        g.commit();
        let mut off = first;
        while off < bytes.len() {
            let n = (max_rec - 1).min(bytes.len() - off);
            let g = reserve_until(p, deadline, n + 1);
            let mut g = match g {
                Ok(g) => g,
                Err(e) => {
                    // Half a message is in the ring: close our side so the peer drops it.
                    if let Some(tx) = self.tx.as_mut() {
                        tx.p = None;
                    }
                    return Err(push_err(e));
                }
            };
            let b = g.as_mut_slice();
            b[0] = CONT;
            b[1..].copy_from_slice(&bytes[off..off + n]);
            g.commit();
            off += n;
        }
        Ok(())
    }

    /// Receives one message, waiting for it; [`RecvError::Eof`] once the peer closed (or died)
    /// and everything was read.
    #[inline]
    pub fn recv(&mut self) -> Result<T, RecvError> {
        if let Some(g) = self.whole_ready() {
            let r = C::decode(&g.as_slice()[1..]);
            g.release();
            return r.map_err(RecvError::from);
        }
        self.recv_with(None, |b| Some(C::decode(b)))?
            .map_err(RecvError::from)
    }

    /// Receives one message, waiting at most `timeout` ([`RecvError::Timeout`]).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_with(deadline_after(timeout), |b| Some(C::decode(b)))?
            .map_err(RecvError::from)
    }

    /// Receives one message as raw bytes.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(None, |b| Some(b.to_vec()))
    }

    /// Receives one message as raw bytes, waiting at most `timeout`.
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_with(deadline_after(timeout), |b| Some(b.to_vec()))
    }

    /// Receives one message into `buf[offset..]`, returning its length. If it does not fit,
    /// [`RecvError::BufferTooShort`] tells how many bytes are needed and the message stays in
    /// the connection for the next receive.
    #[inline]
    pub fn recv_bytes_into(&mut self, buf: &mut [u8], offset: usize) -> Result<usize, RecvError> {
        if let Some(g) = self.whole_ready() {
            let body = &g.as_slice()[1..];
            if let Some(dst) = offset
                .checked_add(body.len())
                .and_then(|end| buf.get_mut(offset..end))
            {
                copy_small(dst, body);
                let n = body.len();
                g.release();
                return Ok(n);
            }
        }
        self.recv_bytes_into_deadline(buf, offset, None)
    }

    /// [`Connection::recv_bytes_into`], waiting at most `timeout`.
    pub fn recv_bytes_into_timeout(
        &mut self,
        buf: &mut [u8],
        offset: usize,
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        self.recv_bytes_into_deadline(buf, offset, deadline_after(timeout))
    }

    fn recv_bytes_into_deadline(
        &mut self,
        buf: &mut [u8],
        offset: usize,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvError> {
        if offset > buf.len() {
            return Err(RecvError::BufferTooShort { needed: offset });
        }
        let mut needed = 0;
        let r = self.recv_with(deadline, |b| {
            needed = offset + b.len();
            let dst = buf.get_mut(offset..offset + b.len())?;
            dst.copy_from_slice(b);
            Some(b.len())
        });
        match r {
            Err(RecvError::BufferTooShort { .. }) => Err(RecvError::BufferTooShort { needed }),
            r => r,
        }
    }

    /// Hands the next message to `f`; if `f` returns `None` the message is kept for the next
    /// receive and `BufferTooShort` is returned.
    #[inline]
    fn recv_with<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Result<R, RecvError> {
        self.recv_with_mode(deadline, false, f)
    }

    /// [`Connection::recv_with`]; with `nowait`, an empty ring (or a large message still
    /// arriving) is `Err(Timeout)` at once (the async receives wait for readiness themselves).
    #[inline]
    fn recv_with_mode<R>(
        &mut self,
        deadline: Option<Instant>,
        nowait: bool,
        f: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Result<R, RecvError> {
        let max_message = self.max_message;
        let rx = self.rx()?;
        if let Some(m) = rx.stash.take() {
            return match f(&m) {
                Some(r) => Ok(r),
                None => {
                    let needed = m.len();
                    rx.stash = Some(m);
                    Err(RecvError::BufferTooShort { needed })
                }
            };
        }
        let mut f = Some(f);
        loop {
            let Some(c) = rx.c.as_mut() else {
                return Err(RecvError::Closed);
            };
            let g = match deadline {
                _ if nowait => c.try_peek(),
                None => c.peek(),
                Some(d) => c.peek_timeout(remaining(d)),
            };
            let g = match g {
                Ok(g) => g,
                Err(e) => {
                    if e == PopError::Disconnected {
                        // A half-received large message died with its sender.
                        rx.partial_total = None;
                        rx.partial = Vec::new();
                    }
                    return Err(pop_err(e));
                }
            };
            let rec = g.as_slice();
            let Some((&tag, body)) = rec.split_first() else {
                g.release();
                rx.drop_partial();
                return Err(RecvError::Corrupted("empty record"));
            };
            match tag {
                WHOLE | FIRST if rx.partial_total.is_some() => {
                    // A new message starts before the previous one was complete (its sender
                    // died mid-message and a new one took over): report the loss once, and
                    // leave this record for the next receive.
                    rx.drop_partial();
                    return Err(RecvError::Lost(
                        "a large message was cut short by its sender",
                    ));
                }
                WHOLE => {
                    rx.skipping = false;
                    let Some(f) = f.take() else {
                        return Err(RecvError::Corrupted("receiver state"));
                    };
                    return match f(body) {
                        Some(r) => {
                            g.release();
                            Ok(r)
                        }
                        None => Err(RecvError::BufferTooShort { needed: body.len() }),
                    };
                }
                FIRST => {
                    rx.skipping = false;
                    let Some((t, chunk)) = body.split_first_chunk::<8>() else {
                        g.release();
                        rx.skipping = true;
                        return Err(RecvError::Corrupted("short first fragment"));
                    };
                    let total = u64::from_le_bytes(*t);
                    if total > max_message as u64 {
                        g.release();
                        // Its CONT fragments follow: skip them without a second report.
                        rx.skipping = true;
                        return Err(RecvError::TooLarge {
                            len: usize::try_from(total).unwrap_or(usize::MAX),
                            max: max_message,
                        });
                    }
                    if (chunk.len() as u64) > total {
                        g.release();
                        rx.skipping = true;
                        return Err(RecvError::Corrupted("fragment overruns its message"));
                    }
                    rx.partial.clear();
                    rx.partial.extend_from_slice(chunk);
                    rx.partial_total = Some(total as usize);
                    g.release();
                }
                CONT => match rx.partial_total {
                    Some(total) => {
                        if rx.partial.len() + body.len() > total {
                            g.release();
                            rx.drop_partial();
                            rx.skipping = true;
                            return Err(RecvError::Corrupted("fragment overruns its message"));
                        }
                        rx.partial.extend_from_slice(body);
                        g.release();
                    }
                    None => {
                        // The rest of a message whose start this end never saw (a consumer
                        // that took over from a dead one may start mid-message): skip to the
                        // next message boundary, reporting the loss once.
                        g.release();
                        if !rx.skipping {
                            rx.skipping = true;
                            return Err(RecvError::Lost(
                                "skipped the rest of a message whose start was not received",
                            ));
                        }
                    }
                },
                _ => {
                    g.release();
                    rx.drop_partial();
                    rx.skipping = true;
                    return Err(RecvError::Corrupted("unknown record tag"));
                }
            }
            if let Some(total) = rx.partial_total
                && rx.partial.len() == total
            {
                // Complete (also a FIRST fragment carrying the whole message, even an empty one).
                rx.partial_total = None;
                let m = std::mem::take(&mut rx.partial);
                let Some(f) = f.take() else {
                    return Err(RecvError::Corrupted("receiver state"));
                };
                return match f(&m) {
                    Some(r) => Ok(r),
                    None => {
                        let needed = m.len();
                        rx.stash = Some(m);
                        Err(RecvError::BufferTooShort { needed })
                    }
                };
            }
        }
    }

    /// A blocking iterator over received messages: it ends at end of file (the peer closed or
    /// died and everything was read) or when this end is closed; other errors are yielded.
    ///
    /// ```
    /// use multiproc_channel::Pipe;
    /// let (mut a, mut b) = Pipe::duplex::<u32>().unwrap();
    /// for i in 0..3 { b.send(&i).unwrap(); }
    /// drop(b); // the peer is gone: the iterator ends after draining
    /// let got: Vec<u32> = a.iter().map(Result::unwrap).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// ```
    pub fn iter(&mut self) -> ConnIter<'_, T, C> {
        ConnIter { c: self }
    }

    /// A non-blocking iterator: yields the messages ready now, then ends.
    ///
    /// ```
    /// use multiproc_channel::Pipe;
    /// let (mut a, mut b) = Pipe::duplex::<u32>().unwrap();
    /// b.send(&7).unwrap();
    /// assert_eq!(a.try_iter().map(Result::unwrap).collect::<Vec<_>>(), [7]);
    /// assert_eq!(a.try_iter().count(), 0);
    /// ```
    pub fn try_iter(&mut self) -> ConnTryIter<'_, T, C> {
        ConnTryIter { c: self }
    }

    /// Whether a message (or end of file) is ready, waiting at most `timeout`
    /// (`Duration::ZERO`: answer at once, Python's default).
    pub fn poll(&mut self, timeout: Duration) -> Result<bool, RecvError> {
        let rx = self.rx()?;
        if rx.stash.is_some() {
            return Ok(true);
        }
        let Some(c) = rx.c.as_mut() else {
            return Err(RecvError::Closed);
        };
        let r = if timeout.is_zero() {
            c.try_peek().map(drop)
        } else {
            c.peek_timeout(timeout).map(drop)
        };
        match r {
            Ok(()) | Err(PopError::Disconnected) => Ok(true),
            Err(PopError::Empty | PopError::Timeout) => Ok(false),
            Err(e) => Err(pop_err(e)),
        }
    }

    /// Closes this end (both directions): later calls on it fail with `Closed`, and the peer
    /// reads what was sent, then `Eof`.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(tx) = self.tx.as_mut()
            && tx.p.is_none()
        {
            tx.p = tx.ring.producer().ok();
        }
        if let Some(rx) = self.rx.as_mut()
            && rx.c.is_none()
        {
            rx.c = rx.ring.consumer().ok();
        }
        // Dropping the endpoints marks both ring sides closed and wakes the peer.
        if let Some(tx) = self.tx.as_mut() {
            tx.p = None;
        }
        if let Some(rx) = self.rx.as_mut() {
            rx.c = None;
            rx.stash = None;
        }
    }
}

/// Blocking iterator over a [`Connection`]'s messages ([`Connection::iter`]).
pub struct ConnIter<'a, T, C = Postcard> {
    c: &'a mut Connection<T, C>,
}

impl<T, C: Codec<T>> Iterator for ConnIter<'_, T, C> {
    type Item = Result<T, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.c.recv() {
            Err(RecvError::Eof | RecvError::Closed) => None,
            r => Some(r),
        }
    }
}

/// Non-blocking iterator over a [`Connection`]'s messages ([`Connection::try_iter`]).
pub struct ConnTryIter<'a, T, C = Postcard> {
    c: &'a mut Connection<T, C>,
}

impl<T, C: Codec<T>> Iterator for ConnTryIter<'_, T, C> {
    type Item = Result<T, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.c.poll(Duration::ZERO) {
            Ok(true) => {}
            Ok(false) | Err(RecvError::Eof | RecvError::Closed) => return None,
            Err(e) => return Some(Err(e)),
        }
        match self.c.recv() {
            Err(RecvError::Eof | RecvError::Closed) => None,
            r => Some(r),
        }
    }
}

/// Owning blocking iterator over a [`Connection`] (`IntoIterator`).
pub struct ConnIntoIter<T, C = Postcard> {
    c: Connection<T, C>,
}

impl<T, C: Codec<T>> Iterator for ConnIntoIter<T, C> {
    type Item = Result<T, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.c.iter().next()
    }
}

impl<T, C: Codec<T>> IntoIterator for Connection<T, C> {
    type Item = Result<T, RecvError>;
    type IntoIter = ConnIntoIter<T, C>;
    fn into_iter(self) -> ConnIntoIter<T, C> {
        ConnIntoIter { c: self }
    }
}

impl<'a, T, C: Codec<T>> IntoIterator for &'a mut Connection<T, C> {
    type Item = Result<T, RecvError>;
    type IntoIter = ConnIter<'a, T, C>;
    fn into_iter(self) -> ConnIter<'a, T, C> {
        self.iter()
    }
}

impl<T, C> Drop for Connection<T, C> {
    fn drop(&mut self) {
        let me = ident::pid();
        let private = !self.exported.get() && ident::forks() == self.forks_at_creation;
        if let Some(tx) = self.tx.as_mut() {
            match tx.p.take() {
                // Bound here: dropping closes the side.
                Some(p) if tx.bound_pid == me => drop(p),
                // Inherited through fork from the process that bound it: not ours to close.
                Some(p) => std::mem::forget(p),
                None if private && !self.closed => {
                    if let Ok(p) = tx.ring.producer() {
                        drop(p);
                    }
                }
                None => {}
            }
        }
        if let Some(rx) = self.rx.as_mut() {
            match rx.c.take() {
                Some(c) if rx.bound_pid == me => drop(c),
                Some(c) => std::mem::forget(c),
                None if private && !self.closed => {
                    if let Ok(c) = rx.ring.consumer() {
                        drop(c);
                    }
                }
                None => {}
            }
        }
    }
}

/// What a connection serializes as: its rings' handles.
#[derive(Serialize, Deserialize)]
struct ConnHandle {
    tx: Option<SegmentHandle>,
    rx: Option<SegmentHandle>,
    max_message: u64,
}

impl<T, C: Codec<T>> Serialize for Connection<T, C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if self.closed {
            return Err(S::Error::custom("a closed connection cannot be sent"));
        }
        let h = |r: &SpscRing| {
            r.handle()
                .ok_or_else(|| S::Error::custom("a heap ring cannot be sent"))
        };
        let tx = match &self.tx {
            Some(t) => Some(h(&t.ring)?),
            None => None,
        };
        let rx = match &self.rx {
            Some(r) => Some(h(&r.ring)?),
            None => None,
        };
        self.exported.set(true);
        ConnHandle {
            tx,
            rx,
            max_message: self.max_message as u64,
        }
        .serialize(s)
    }
}

impl<'de, T, C: Codec<T>> Deserialize<'de> for Connection<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let h = ConnHandle::deserialize(d)?;
        // postcard drops a custom error's text: keep it where the codec reports it.
        let fail = |e: String| D::Error::custom(note_handle_error(format!("pipe handle: {e}")));
        let open = |h: Option<SegmentHandle>| match h {
            Some(h) => SpscRing::open_handle(&h)
                .map(Some)
                .map_err(|e| fail(e.to_string())),
            None => Ok(None),
        };
        let tx = open(h.tx)?;
        let rx = open(h.rx)?;
        let max = usize::try_from(h.max_message)
            .ok()
            .filter(|m| (1..=MAX_MESSAGE_LIMIT).contains(m))
            .ok_or_else(|| fail(format!("max_message {} out of range", h.max_message)))?;
        let c = Connection::new(tx, rx, max);
        // Another process may hold the original: never close on drop unless bound here.
        c.exported.set(true);
        Ok(c)
    }
}

/// Something [`wait`] can poll: connections and file descriptors (process sentinels).
pub trait Waitable {
    /// Whether a receive would not block now (a message, end of file, or an error to report).
    fn ready(&mut self) -> bool;

    /// A file descriptor that becomes readable when this object is ready, if there is one:
    /// [`wait`] sleeps in `poll(2)` on these, so a sentinel wakes it at once.
    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl<T, C: Codec<T>> Waitable for Connection<T, C> {
    fn ready(&mut self) -> bool {
        self.poll(Duration::ZERO).unwrap_or(true)
    }
}

impl<W: Waitable + ?Sized> Waitable for &mut W {
    fn ready(&mut self) -> bool {
        (**self).ready()
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).readiness_fd()
    }
}

/// A file descriptor [`wait`] treats as ready once it is readable (or hung up, or in error),
/// as Python's `connection.wait` treats an integer: typically a process sentinel, the pidfd of
/// `multiproc::Process::sentinel()` (readable once the process exits), or an eventfd, a pipe,
/// a socket. `BorrowedFd` and `OwnedFd` are `Waitable` too; `Sentinel` is `Copy` and names the
/// intent.
#[derive(Clone, Copy, Debug)]
pub struct Sentinel<'a>(BorrowedFd<'a>);

impl<'a> Sentinel<'a> {
    /// Wraps `fd`.
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        Sentinel(fd)
    }

    /// The file descriptor.
    pub fn fd(&self) -> BorrowedFd<'a> {
        self.0
    }
}

impl<'a> From<BorrowedFd<'a>> for Sentinel<'a> {
    fn from(fd: BorrowedFd<'a>) -> Self {
        Sentinel(fd)
    }
}

/// Whether `fd` is readable now (`poll(2)` with a zero timeout). An invalid descriptor counts
/// as ready (an error the caller sees when it uses it), as a failing `Connection::poll` does.
fn fd_ready(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid, writable pollfd; a zero timeout never blocks.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r >= 0 {
            return r > 0 && p.revents != 0;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true;
        }
    }
}

impl Waitable for Sentinel<'_> {
    fn ready(&mut self) -> bool {
        fd_ready(self.0)
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0)
    }
}

impl Waitable for BorrowedFd<'_> {
    fn ready(&mut self) -> bool {
        fd_ready(self.as_fd())
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Waitable for OwnedFd {
    fn ready(&mut self) -> bool {
        fd_ready(self.as_fd())
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// Sleeps up to `d`, waking early if one of `fds` becomes readable (`ppoll(2)`); a plain sleep
/// when there is none.
fn sleep_or_fd(fds: &mut [libc::pollfd], d: Duration) {
    if fds.is_empty() {
        std::thread::sleep(d);
        return;
    }
    let ts = libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, writable array of fds.len() pollfds; `ts` a valid timespec; a
    // null signal mask keeps the current one. EINTR or errors just end the sleep early.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// Waits until at least one of `objs` is ready or `timeout` passes (`None`: no limit); returns
/// the indices of the ready ones (empty on timeout), as Python's
/// `multiprocessing.connection.wait`. Objects may be connections and file descriptors
/// ([`Sentinel`], `BorrowedFd`, `OwnedFd`) mixed, through `&mut dyn Waitable`:
///
/// ```no_run
/// use multiproc_channel::{Pipe, Waitable, pipe::Sentinel, wait};
/// # fn f(pidfd: std::os::fd::BorrowedFd<'_>) {
/// let (mut a, _b) = Pipe::duplex::<u32>().unwrap();
/// let mut s = Sentinel::new(pidfd);
/// let ready = wait(&mut [&mut a as &mut dyn Waitable, &mut s], None);
/// # }
/// ```
///
/// Polling, not a futex: each connection sleeps on its own ring's futex word, and there is no
/// word shared by several rings. The loop polls every object, spins briefly, then yields, then
/// sleeps with an exponential backoff from 20 µs up to 1 ms, so a message waits at most ~1 ms
/// to be noticed once the waiter is asleep, and an idle waiter costs ~1000 wake-ups a second.
/// The sleeps are `ppoll(2)` on the file descriptors among `objs`, so a sentinel wakes the
/// waiter at once.
pub fn wait<W: Waitable>(objs: &mut [W], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.and_then(deadline_after);
    let mut round: u32 = 0;
    let mut sleep = Duration::from_micros(20);
    let mut fds: Option<Vec<libc::pollfd>> = None;
    loop {
        let ready: Vec<usize> = objs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, o)| o.ready().then_some(i))
            .collect();
        if !ready.is_empty() || objs.is_empty() {
            return ready;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return ready;
        }
        round += 1;
        if round < 64 {
            std::hint::spin_loop();
        } else if round < 80 {
            std::thread::yield_now();
        } else {
            let s = match deadline {
                Some(d) => sleep.min(remaining(d)),
                None => sleep,
            };
            let fds = fds.get_or_insert_with(|| {
                objs.iter()
                    .filter_map(|o| o.readiness_fd())
                    .map(|fd| libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect()
            });
            sleep_or_fd(fds, s);
            sleep = (sleep * 2).min(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 5 (pipe part): a FIRST fragment announcing 64 MiB makes the receiver hold
    /// what arrived, not a 64 MiB reservation (on main: `reserve_exact(total)`).
    #[test]
    fn first_fragment_total_is_not_reserved_up_front() {
        let opts = PipeOptions {
            capacity: 4096,
            max_message: MAX_MESSAGE_LIMIT,
        };
        let (a, mut b) = Pipe::duplex_with::<Vec<u8>, Postcard>(opts).unwrap();
        let ring = a.tx.as_ref().unwrap().ring.clone();
        let mut p = ring.producer().unwrap();
        let mut first = vec![FIRST];
        first.extend_from_slice(&(MAX_MESSAGE_LIMIT as u64).to_le_bytes());
        first.extend_from_slice(&[1, 2, 3]);
        p.push(&first).unwrap();
        assert_eq!(
            b.recv_bytes_timeout(Duration::from_millis(20)),
            Err(RecvError::Timeout)
        );
        let rx = b.rx.as_ref().unwrap();
        assert_eq!(rx.partial, [1, 2, 3]);
        assert!(rx.partial.capacity() < 1 << 20, "{}", rx.partial.capacity());
    }
}
