//! [`Connection`], one end of a pipe: its state, binding to a process, iterators, close/drop
//! and serialization. The send path is in `send.rs`, the receive path in `recv.rs`.

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

mod recv;
mod send;

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

use multiproc_shm::deadline::after as deadline_after;

fn reserve_until(
    p: &mut Producer,
    deadline: Option<Instant>,
    n: usize,
) -> Result<multiproc_ring::WriteGrant<'_>, PushError> {
    p.reserve_deadline(n, deadline)
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
    assert_eq!(dst.len(), src.len(), "copy_small: lengths differ");
    // SAFETY: two distinct slices (one `&mut`) of the same length.
    unsafe { multiproc_ring::copy::copy_record(src.as_ptr(), dst.as_mut_ptr(), src.len()) };
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

    /// Maps every page of this end's rings into this process now
    /// ([`Segment::populate`](multiproc_shm::Segment::populate)), so that the first large
    /// messages do not pay a page fault per 4 KiB of ring (a ring's pages are all touched
    /// once it has wrapped around anyway). For connections that will carry bulk data at once;
    /// each process calls it for its own end. False if the kernel refused (the pages are then
    /// mapped on first touch).
    pub fn populate(&self) -> bool {
        let mut ok = true;
        for ring in [
            self.tx.as_ref().map(|t| &t.ring),
            self.rx.as_ref().map(|r| &r.ring),
        ]
        .into_iter()
        .flatten()
        {
            // Every ring, also after a refusal (not `all`, which would stop at the first).
            if let Some(s) = ring.segment() {
                ok &= s.populate();
            }
        }
        ok
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
