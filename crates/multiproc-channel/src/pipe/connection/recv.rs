//! The receive path of a [`Connection`]: whole records decoded in place, large messages
//! reassembled from their fragments, `recv_bytes_into` with its stash.

use super::*;

impl<T, C: Codec<T>> Connection<T, C> {
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
        if let Some(n) = self.recv_bytes_into_ready(buf, offset) {
            return Ok(n);
        }
        self.recv_bytes_into_deadline(buf, offset, None)
    }

    /// The fast path of the receives into a buffer: a whole message already waiting that fits
    /// `buf[offset..]` is copied and released, without reading the clock; `None` otherwise.
    #[inline]
    fn recv_bytes_into_ready(&mut self, buf: &mut [u8], offset: usize) -> Option<usize> {
        if let Some(g) = self.whole_ready() {
            let body = &g.as_slice()[1..];
            if let Some(dst) = offset
                .checked_add(body.len())
                .and_then(|end| buf.get_mut(offset..end))
            {
                copy_small(dst, body);
                let n = body.len();
                g.release();
                return Some(n);
            }
        }
        None
    }

    /// [`Connection::recv_bytes_into`], waiting at most `timeout`.
    pub fn recv_bytes_into_timeout(
        &mut self,
        buf: &mut [u8],
        offset: usize,
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        if let Some(n) = self.recv_bytes_into_ready(buf, offset) {
            return Ok(n);
        }
        self.recv_bytes_into_deadline(buf, offset, deadline_after(timeout))
    }

    pub(super) fn recv_bytes_into_deadline(
        &mut self,
        buf: &mut [u8],
        offset: usize,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvError> {
        if offset > buf.len() {
            return Err(RecvError::BufferTooShort { needed: offset });
        }
        if let Some(r) = self.recv_fragments_into(buf, offset, deadline) {
            return r;
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

    /// The large-message path of [`Connection::recv_bytes_into`]: when the next record is the
    /// FIRST fragment of a message, its fragments are copied straight into `buf[offset..]`
    /// (no reassembly buffer, no second copy). If the announced total does not fit, the
    /// message stays in the ring untouched and the answer is `BufferTooShort` with the room it
    /// needs (at most `max_message`: the total is checked against it before it is reported).
    /// A WHOLE record (a small message that came while this call waited) that fits is copied
    /// and released here too. Anything but these plain cases (a stashed or half-received
    /// message, a WHOLE record that does not fit, a record that is neither, a malformed
    /// fragment, a timeout or a dead peer mid-message) returns `None`
    /// after moving what this call received into the reassembly state, so that the general
    /// path ([`Connection::recv_with`]) goes on from exactly there with its own answers.
    fn recv_fragments_into(
        &mut self,
        buf: &mut [u8],
        offset: usize,
        deadline: Option<Instant>,
    ) -> Option<Result<usize, RecvError>> {
        let max_message = self.max_message;
        let rx = self.rx().ok()?;
        if rx.stash.is_some() || rx.partial_total.is_some() {
            return None;
        }
        let c = rx.c.as_mut()?;
        let g = c.peek_deadline(deadline).ok()?;
        let (&tag, body) = g.as_slice().split_first()?;
        if tag == WHOLE {
            // A small message that came while this call waited: taken here (the general path
            // would find it again); one that does not fit is the general path's to report.
            let dst = offset
                .checked_add(body.len())
                .and_then(|end| buf.get_mut(offset..end))?;
            copy_small(dst, body);
            let n = body.len();
            g.release();
            rx.skipping = false;
            return Some(Ok(n));
        }
        if tag != FIRST {
            return None;
        }
        let (t, chunk) = body.split_first_chunk::<8>()?;
        let total = usize::try_from(u64::from_le_bytes(*t)).ok()?;
        if total > max_message || chunk.len() > total {
            return None; // the general path reports it
        }
        let Some(dst) = offset
            .checked_add(total)
            .and_then(|end| buf.get_mut(offset..end))
        else {
            // Left in the ring (the grant is dropped, not released) for the next receive.
            return Some(Err(RecvError::BufferTooShort {
                needed: offset.saturating_add(total),
            }));
        };
        dst[..chunk.len()].copy_from_slice(chunk);
        let mut got = chunk.len();
        g.release();
        rx.skipping = false;
        while got < total {
            let c = rx.c.as_mut()?;
            let next = c.peek_deadline(deadline);
            let fits = match &next {
                Ok(g) => match g.as_slice().split_first() {
                    Some((&CONT, b)) if b.len() <= total - got => Some(b.len()),
                    _ => None,
                },
                Err(_) => None,
            };
            let (Some(n), Ok(g)) = (fits, next) else {
                // Not a fitting CONT (or no record): the general path takes over from the
                // bytes received so far, as if it had received them itself.
                rx.partial.clear();
                rx.partial.extend_from_slice(&dst[..got]);
                rx.partial_total = Some(total);
                return None;
            };
            dst[got..got + n].copy_from_slice(&g.as_slice()[1..]);
            got += n;
            g.release();
        }
        Some(Ok(total))
    }

    /// Hands the next message to `f`; if `f` returns `None` the message is kept for the next
    /// receive and `BufferTooShort` is returned.
    #[inline]
    pub(super) fn recv_with<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Result<R, RecvError> {
        self.recv_with_mode(deadline, false, f)
    }

    /// [`Connection::recv_with`]; with `nowait`, an empty ring (or a large message still
    /// arriving) is `Err(Timeout)` at once (the async receives wait for readiness themselves).
    #[inline]
    pub(in crate::pipe) fn recv_with_mode<R>(
        &mut self,
        deadline: Option<Instant>,
        nowait: bool,
        f: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Result<R, RecvError> {
        let max_message = self.max_message;
        let rx = self.rx()?;
        if let Some(m) = rx.stash.take() {
            return deliver(&mut rx.stash, m, f);
        }
        let mut f = Some(f);
        loop {
            let Some(c) = rx.c.as_mut() else {
                return Err(RecvError::Closed);
            };
            let g = match deadline {
                _ if nowait => c.try_peek(),
                d => c.peek_deadline(d),
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
                return deliver(&mut rx.stash, m, f);
            }
        }
    }
}

/// Hands a whole message to the caller's `f`; when `f` refuses it (its buffer is too short), the
/// message goes to `stash` for the next receive and the answer says how long it is (Python's
/// `BufferTooShort`, without losing the message).
fn deliver<R>(
    stash: &mut Option<Vec<u8>>,
    m: Vec<u8>,
    f: impl FnOnce(&[u8]) -> Option<R>,
) -> Result<R, RecvError> {
    match f(&m) {
        Some(r) => Ok(r),
        None => {
            let needed = m.len();
            *stash = Some(m);
            Err(RecvError::BufferTooShort { needed })
        }
    }
}
