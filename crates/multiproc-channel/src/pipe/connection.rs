//! [`Connection`], one end of a pipe: binding to a process, the send path (in place, or in
//! fragments), the receive path (reassembly), iterators, close/drop and serialization.

use super::named::NamedCtl;
use super::{CONT, FIRST, MAX_MESSAGE_LIMIT, SMALL_RESERVE, WHOLE};
use crate::codec::{Codec, Postcard, note_handle_error};
use crate::error::{RecvError, SendError};
use crate::ident;
use multiproc_ring::{Consumer, PopError, Producer, PushError, RingError, SpscRing, WaitStrategy};
use multiproc_shm::{SegmentHandle, Shared};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

pub(super) struct TxEnd {
    ring: SpscRing,
    pub(super) p: Option<Producer>,
    bound_pid: u32,
    scratch: Vec<u8>,
    /// Sends since the last liveness check of the reader.
    sends: u32,
}

/// A sender checks whether the reader's process is alive (reads /proc) once per this many
/// sends; an explicitly closed reader is seen at the very next send (a flag).
const READER_CHECK_EVERY: u32 = 4096;

pub(super) struct RxEnd {
    ring: SpscRing,
    pub(super) c: Option<Consumer>,
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
    pub(super) fn drop_partial(&mut self) {
        self.partial_total = None;
        self.partial = Vec::new();
    }
}

/// One end of a [`Pipe`]. `T` is the message type of `send`/`recv`; `send_bytes`/`recv_bytes`
/// carry raw bytes on the same stream.
///
/// [`Pipe`]: super::Pipe
pub struct Connection<T, C = Postcard> {
    pub(super) tx: Option<TxEnd>,
    pub(super) rx: Option<RxEnd>,
    readable: bool,
    writable: bool,
    closed: bool,
    pub(super) max_message: usize,
    forks_at_creation: u64,
    exported: Cell<bool>,
    strategy: WaitStrategy,
    /// The control segment of a named pipe (kept so the creator unlinks it when this drops).
    pub(super) named: Option<Shared<NamedCtl>>,
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

pub(super) fn push_err(e: PushError) -> SendError {
    match e {
        PushError::Disconnected => SendError::Disconnected,
        PushError::Timeout => SendError::Timeout,
        PushError::TooLarge { len, max } => SendError::TooLarge { len, max },
        PushError::Corrupted(s) => SendError::Corrupted(s),
        _ => SendError::Corrupted("unexpected ring error"),
    }
}

pub(super) fn pop_err(e: PopError) -> RecvError {
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
    pub(super) fn new(tx: Option<SpscRing>, rx: Option<SpscRing>, max_message: usize) -> Self {
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
    pub(super) fn tx_live(&mut self) -> Result<(&mut Producer, &mut Vec<u8>), SendError> {
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

    pub(super) fn rx(&mut self) -> Result<&mut RxEnd, RecvError> {
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
    pub(super) fn attach_all(&mut self) -> Result<(), RingError> {
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
    pub(super) fn recv_with_mode<R>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipe::{Pipe, PipeOptions};

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
