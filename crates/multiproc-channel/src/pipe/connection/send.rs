//! The send path of a [`Connection`]: a message encoded in place in the ring, or in
//! fragments when it is larger than the ring, with batching (`send_batched`, `flush`).

use super::*;

impl<T, C: Codec<T>> Connection<T, C> {
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

    pub(super) fn send_deadline(
        &mut self,
        v: &T,
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        self.send_lazy(v, deadline, false)
    }

    #[inline]
    pub(super) fn send_lazy(
        &mut self,
        v: &T,
        deadline: Option<Instant>,
        lazy: bool,
    ) -> Result<(), SendError> {
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
            let g = p.reserve_deadline(room, deadline).map_err(push_err)?;
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
    pub(super) fn send_small(&mut self, bytes: &[u8], lazy: bool) -> bool {
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

    pub(super) fn send_bytes_deadline(
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

    /// Sends the concatenation of `parts` as one message of raw bytes, copied from each part
    /// straight into the ring (a header and a body without first joining them in a buffer:
    /// the pool sends a job's sequence number, head and a slice of the caller's items this
    /// way). The receiver sees one message, as from [`Connection::send_bytes`] of the joined
    /// bytes; the same limit ([`SendError::TooLarge`]) and the same waiting apply.
    pub fn send_bytes_vectored(&mut self, parts: &[&[u8]]) -> Result<(), SendError> {
        let max = self.max_message;
        self.write_parts(parts, None, max, false)
    }

    /// [`Connection::send_bytes_vectored`], waiting at most `timeout` for room (a large
    /// message that timed out half-written closes this end's sending side, as
    /// [`Connection::send_bytes_timeout`]).
    pub fn send_bytes_vectored_timeout(
        &mut self,
        parts: &[&[u8]],
        timeout: Duration,
    ) -> Result<(), SendError> {
        let max = self.max_message;
        self.write_parts(parts, deadline_after(timeout), max, false)
    }

    pub(super) fn write_message(
        &mut self,
        bytes: &[u8],
        deadline: Option<Instant>,
        max_message: usize,
        lazy: bool,
    ) -> Result<(), SendError> {
        self.write_parts(&[bytes], deadline, max_message, lazy)
    }

    /// Writes the concatenation of `parts` as one message: one record if it fits, else
    /// fragments (FIRST `[total u64][bytes]`, then CONT `[bytes]`...).
    fn write_parts(
        &mut self,
        parts: &[&[u8]],
        deadline: Option<Instant>,
        max_message: usize,
        lazy: bool,
    ) -> Result<(), SendError> {
        // Overflow is impossible for slices of one address space, but saturate anyway.
        let total = parts.iter().fold(0usize, |a, p| a.saturating_add(p.len()));
        if total > max_message {
            return Err(SendError::TooLarge {
                len: total,
                max: max_message,
            });
        }
        let mut src = Parts::new(parts);
        let (p, _) = self.tx_live()?;
        let max_rec = p.max_record();
        if total < max_rec {
            let mut g = reserve_until(p, deadline, total + 1).map_err(push_err)?;
            let b = g.as_mut_slice();
            b[0] = WHOLE;
            src.fill(&mut b[1..]);
            if lazy {
                g.commit_deferred();
            } else {
                g.commit();
            }
            return Ok(());
        }
        // Fragments: FIRST [total][chunk], CONT [chunk]...
        let first = (max_rec - 9).min(total);
        let mut g = reserve_until(p, deadline, first + 9).map_err(push_err)?;
        let b = g.as_mut_slice();
        b[0] = FIRST;
        b[1..9].copy_from_slice(&(total as u64).to_le_bytes());
        src.fill(&mut b[9..]);
        g.commit();
        let mut off = first;
        while off < total {
            let n = (max_rec - 1).min(total - off);
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
            src.fill(&mut b[1..]);
            g.commit();
            off += n;
        }
        Ok(())
    }
}

/// A read cursor over the concatenation of several byte slices.
struct Parts<'a> {
    parts: &'a [&'a [u8]],
    /// Bytes of `parts[0]` already copied.
    off: usize,
}

impl<'a> Parts<'a> {
    fn new(parts: &'a [&'a [u8]]) -> Parts<'a> {
        Parts { parts, off: 0 }
    }

    /// Copies the next `dst.len()` bytes into `dst` (the caller asks for no more than remain).
    fn fill(&mut self, mut dst: &mut [u8]) {
        while !dst.is_empty() {
            let Some((first, rest)) = self.parts.split_first() else {
                debug_assert!(false, "Parts::fill past the end");
                return;
            };
            let avail = &first[self.off..];
            let n = avail.len().min(dst.len());
            let (d, tail) = dst.split_at_mut(n);
            d.copy_from_slice(&avail[..n]);
            dst = tail;
            self.off += n;
            if self.off == first.len() {
                self.parts = rest;
                self.off = 0;
            }
        }
    }
}
