//! Async sends and receives on a [`Connection`]: runtime-agnostic futures woken through the
//! per-process notifier (`multiproc_sync::notify`), so a tokio (or any) task awaits a pipe
//! without blocking a runtime thread. See `docs/async.md`.
//!
//! Each future tries the non-blocking operation first; if the ring is empty (full) it registers
//! on the ring side's park word exactly as a blocked call parks, and the peer's ordinary
//! publication wakes it. A message is taken (or written) only inside the poll that returns
//! `Ready`, so dropping a receive future loses nothing.

use super::connection::{pop_err, push_err};
use super::{CONT, Connection, FIRST, SMALL_RESERVE, WHOLE};
use crate::codec::Codec;
use crate::error::{RecvError, SendError};
use multiproc_ring::{PopError, PushError};
use multiproc_sync::notify::AsyncWait;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

impl<T, C: Codec<T>> Connection<T, C> {
    /// Receives one message without blocking a thread: the async form of
    /// [`Connection::recv`] (same errors: [`RecvError::Eof`] once the peer closed or died and
    /// everything was read).
    ///
    /// **Cancel safety:** cancel-safe. The message is taken from the ring only in the poll that
    /// returns it; dropping the future (a `select!` branch that lost, a timeout) leaves every
    /// message in the pipe, and the parts of a large message received so far stay in this end
    /// for the next receive.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// use multiproc_channel::Pipe;
    /// let (mut a, mut b) = Pipe::duplex::<String>().unwrap();
    /// std::thread::spawn(move || b.send(&"hi".to_string()).unwrap());
    /// assert_eq!(a.recv_async().await.unwrap(), "hi");
    /// # });
    /// ```
    pub fn recv_async(&mut self) -> impl Future<Output = Result<T, RecvError>> + Send + '_ {
        let mut w = AsyncWait::new();
        std::future::poll_fn(move |cx| {
            self.poll_recv_with(cx, &mut w, &mut |b| Some(C::decode(b)))
                .map(|r| r.and_then(|v| v.map_err(RecvError::from)))
        })
    }

    /// Receives one message as raw bytes without blocking a thread (the async form of
    /// [`Connection::recv_bytes`]). Cancel-safe, as [`Connection::recv_async`].
    pub fn recv_bytes_async(
        &mut self,
    ) -> impl Future<Output = Result<Vec<u8>, RecvError>> + Send + '_ {
        let mut w = AsyncWait::new();
        std::future::poll_fn(move |cx| self.poll_recv_with(cx, &mut w, &mut |b| Some(b.to_vec())))
    }

    /// One poll of an async receive: the non-blocking receive, then readiness.
    fn poll_recv_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut AsyncWait,
        f: &mut impl FnMut(&[u8]) -> Option<R>,
    ) -> Poll<Result<R, RecvError>> {
        loop {
            match self.recv_with_mode(None, true, |b| f(b)) {
                // `nowait`: nothing complete in the ring yet.
                Err(RecvError::Timeout) => {}
                r => {
                    w.cancel();
                    return Poll::Ready(r);
                }
            }
            let rx = match self.rx() {
                Ok(rx) => rx,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let Some(c) = rx.c.as_mut() else {
                return Poll::Ready(Err(RecvError::Closed));
            };
            match c.poll_readable(cx, w) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(PopError::Disconnected)) => {
                    // As the blocking receive: a half-received large message died with its
                    // sender.
                    rx.drop_partial();
                    return Poll::Ready(Err(RecvError::Eof));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(pop_err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends one message without blocking a thread: the async form of [`Connection::send`],
    /// `Pending` while the ring is full (back-pressure), same errors.
    ///
    /// **Cancel safety:** a message that fits one ring record (below
    /// [`SpscRing::max_record`](multiproc_ring::SpscRing::max_record), half the ring: 128 KiB
    /// by default) is written whole in the poll that returns `Ready`, so dropping the future
    /// before that sends nothing, and after it, everything. A larger message goes out in
    /// fragments over several polls; dropping the future after the first fragment closes this
    /// end's sending side (the peer drops the partial message and sees `Eof`), as a timed-out
    /// [`Connection::send_timeout`] does.
    pub fn send_async<'a>(&'a mut self, v: &'a T) -> SendFuture<'a, T, C>
    where
        T: Sync,
    {
        SendFuture {
            conn: self,
            value: Some(v),
            bytes: Payload::None,
            sent: 0,
            started: false,
            done: false,
            w: AsyncWait::new(),
        }
    }

    /// Sends `buf` as one message of raw bytes without blocking a thread (the async form of
    /// [`Connection::send_bytes`] for the whole buffer). Cancel safety as
    /// [`Connection::send_async`].
    pub fn send_bytes_async<'a>(&'a mut self, buf: &'a [u8]) -> SendFuture<'a, T, C> {
        SendFuture {
            conn: self,
            value: None,
            bytes: Payload::Borrowed(buf),
            sent: 0,
            started: false,
            done: false,
            w: AsyncWait::new(),
        }
    }
}

enum Payload<'a> {
    None,
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::None => &[],
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

/// The future of [`Connection::send_async`] and [`Connection::send_bytes_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, T, C> {
    conn: &'a mut Connection<T, C>,
    /// The value still to encode (`send_async` before its first poll with room).
    value: Option<&'a T>,
    /// The encoded message (large values, `send_bytes_async`).
    bytes: Payload<'a>,
    /// Bytes of `bytes` written so far (a fragmented message in progress).
    sent: usize,
    /// The first fragment of a fragmented message is in the ring.
    started: bool,
    done: bool,
    w: AsyncWait,
}

impl<T, C> std::fmt::Debug for SendFuture<'_, T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture")
            .field("sent", &self.sent)
            .field("done", &self.done)
            .finish()
    }
}

impl<T, C: Codec<T>> SendFuture<'_, T, C> {
    /// Waits for room for `need` bytes (one record). `Ready(Ok)`: try again now.
    fn wait_room(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<Result<(), SendError>> {
        let p = match self.conn.tx_live() {
            Ok((p, _)) => p,
            Err(e) => return Poll::Ready(Err(e)),
        };
        p.poll_writable(cx, &mut self.w, need)
            .map(|r| r.map_err(push_err))
    }

    /// Writes what fits now; `Ready(Ok)` once the whole message is out.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        loop {
            if let Some(v) = self.value {
                // The in-place path of `send`: encode straight into a reserved record.
                let p = match self.conn.tx_live() {
                    Ok((p, _)) => p,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                let room = SMALL_RESERVE.min(p.max_record());
                match p.try_reserve(room) {
                    Ok(mut g) => {
                        let buf = g.as_mut_slice();
                        buf[0] = WHOLE;
                        match C::encode_into(v, &mut buf[1..]) {
                            Ok(Some(n)) => {
                                g.commit_len(n + 1);
                                return Poll::Ready(Ok(()));
                            }
                            Ok(None) => {
                                let _ = g; // abandoned: nothing published
                                let mut bytes = Vec::new();
                                if let Err(e) = C::encode_vec(v, &mut bytes) {
                                    return Poll::Ready(Err(e.into()));
                                }
                                self.value = None;
                                self.bytes = Payload::Owned(bytes);
                            }
                            Err(e) => return Poll::Ready(Err(e.into())),
                        }
                    }
                    Err(PushError::Full) => match self.wait_room(cx, room) {
                        Poll::Ready(Ok(())) => continue,
                        r => return r,
                    },
                    Err(e) => return Poll::Ready(Err(push_err(e))),
                }
                continue;
            }
            let max_message = self.conn.max_message;
            let len = self.bytes.bytes().len();
            if len > max_message {
                return Poll::Ready(Err(SendError::TooLarge {
                    len,
                    max: max_message,
                }));
            }
            let (need, tag, from) = {
                let p = match self.conn.tx_live() {
                    Ok((p, _)) => p,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                let max_rec = p.max_record();
                if !self.started && len < max_rec {
                    (len + 1, WHOLE, 0)
                } else if !self.started {
                    ((max_rec - 9).min(len) + 9, FIRST, 0)
                } else if self.sent < len {
                    ((max_rec - 1).min(len - self.sent) + 1, CONT, self.sent)
                } else {
                    return Poll::Ready(Ok(()));
                }
            };
            let bytes = match &self.bytes {
                Payload::Owned(v) => &v[..],
                Payload::Borrowed(b) => b,
                Payload::None => &[][..],
            };
            let p = match self.conn.tx_live() {
                Ok((p, _)) => p,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match p.try_reserve(need) {
                Ok(mut g) => {
                    let b = g.as_mut_slice();
                    b[0] = tag;
                    match tag {
                        WHOLE => {
                            b[1..].copy_from_slice(bytes);
                            g.commit();
                            return Poll::Ready(Ok(()));
                        }
                        FIRST => {
                            let n = need - 9;
                            b[1..9].copy_from_slice(&(len as u64).to_le_bytes());
                            b[9..].copy_from_slice(&bytes[..n]);
                            g.commit();
                            self.started = true;
                            self.sent = n;
                        }
                        _ => {
                            let n = need - 1;
                            b[1..].copy_from_slice(&bytes[from..from + n]);
                            g.commit();
                            self.sent += n;
                        }
                    }
                    if self.sent == len {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(PushError::Full) => match self.wait_room(cx, need) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        self.abandon();
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Err(e) => {
                    self.abandon();
                    return Poll::Ready(Err(push_err(e)));
                }
            }
        }
    }

    /// Half a message is in the ring and the rest will not follow: close our sending side so
    /// the peer drops it (as the blocking send does on a timeout mid-message).
    fn abandon(&mut self) {
        if self.started
            && self.sent < self.bytes.bytes().len()
            && let Some(tx) = self.conn.tx.as_mut()
        {
            tx.p = None;
        }
    }
}

impl<T, C: Codec<T>> Future for SendFuture<'_, T, C> {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(SendError::Corrupted(
                "send future polled after completion",
            )));
        }
        let r = this.step(cx);
        if r.is_ready() {
            this.done = true;
            this.w.cancel();
        }
        r
    }
}

impl<T, C> Drop for SendFuture<'_, T, C> {
    fn drop(&mut self) {
        if !self.done
            && self.started
            && self.sent < self.bytes.bytes().len()
            && let Some(tx) = self.conn.tx.as_mut()
        {
            tx.p = None;
        }
    }
}
