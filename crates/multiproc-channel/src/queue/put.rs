//! The put path of a [`Queue`]: admission (the `maxsize` bound, with its waits), the record
//! written inline in a slot or through a side segment, and the errors of a closed queue.

use super::*;

impl<T: 'static, C: Codec<T>> Queue<T, C> {
    /// Puts `item`, waiting for room as long as needed.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_mode(item, Mode::Block(None))
    }

    /// Puts `item`, waiting at most `timeout` for room ([`PutError::Timeout`] hands it back).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_mode(item, Mode::Block(multiproc_shm::deadline::after(timeout)))
    }

    /// Puts `item` if there is room now ([`PutError::Full`] hands it back).
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_mode(item, Mode::NoWait)
    }

    pub(super) fn put_mode(&self, item: T, mode: Mode) -> Result<(), PutError<T>> {
        if self.closed {
            return Err(PutError::Closed(item));
        }
        self.check_adopted();
        // A closed ring: the exact path's push says so itself (`Disconnected`, then the same
        // `closed_put`), so only the admission path looks first.
        if !self.sh.exact && self.sh.ring.is_closed() {
            return Err(self.closed_put(item));
        }
        SCRATCH.with(|s| {
            let Ok(mut buf) = s.try_borrow_mut() else {
                // Re-entered from the item's own Serialize impl: use a fresh buffer.
                let mut b = Vec::new();
                return self.put_with(item, mode, &mut b);
            };
            self.put_with(item, mode, &mut buf)
        })
    }

    pub(super) fn put_with(
        &self,
        item: T,
        mode: Mode,
        buf: &mut Vec<u8>,
    ) -> Result<(), PutError<T>> {
        let slot = self.sh.slot_size;
        if buf.len() < slot {
            buf.resize(slot, 0);
        }
        buf[0] = INLINE;
        let mut big = None;
        let len = match C::encode_into(&item, &mut buf[1..slot]) {
            Ok(Some(n)) => n + 1,
            Ok(None) => {
                let mut v = Vec::new();
                if let Err(e) = C::encode_vec(&item, &mut v) {
                    return Err(PutError::Codec(item, e));
                }
                if v.len() > self.sh.max_message {
                    let len = v.len();
                    return Err(PutError::TooLarge {
                        item,
                        len,
                        max: self.sh.max_message,
                    });
                }
                big = Some(v);
                0
            }
            Err(e) => return Err(PutError::Codec(item, e)),
        };
        // A large message's side file is written before admission, so a producer killed
        // between taking its unit and pushing has only a few instructions to die in.
        let msg_len = big.as_ref().map_or(len.saturating_sub(1), Vec::len);
        let mut side = None;
        let rec: &[u8] = match &big {
            None => &buf[..len],
            Some(v) => match self.write_side(v) {
                Ok(seg) => {
                    buf.clear();
                    buf.push(SIDE);
                    buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    buf.extend_from_slice(seg.shm_name().unwrap_or_default().as_bytes());
                    side = Some(seg);
                    &buf[..]
                }
                Err(e) => return Err(PutError::Io(item, e.to_string())),
            },
        };
        // A side segment whose record was not pushed is nobody's: unlink it.
        let remove_side = |side: Option<Segment>| {
            if let Some(s) = side {
                s.unlink_name();
            }
        };
        if self.sh.exact {
            if self.joinable {
                // SeqCst: as below (counted before the item can be seen: a consumer's
                // `task_done` for it must find it counted). A put that fails takes it back.
                self.ctl().tasks.unfinished.fetch_add(1, Ordering::SeqCst);
            }
            // The ring is the bound and `qsize` reads it: no counter is moved.
            return match self.push_admitting(rec, mode) {
                Ok(()) => Ok(()),
                Err(e) => {
                    remove_side(side);
                    if self.joinable {
                        let _ = self.task_done_inner();
                    }
                    Err(self.push_error(item, e, msg_len))
                }
            };
        }
        if let Err(e) = self.admit(mode) {
            remove_side(side);
            return Err(match e {
                Admit::Full => PutError::Full(item),
                Admit::Timeout => PutError::Timeout(item),
                Admit::Closed => self.closed_put(item),
            });
        }
        if self.joinable {
            // SeqCst: a joiner must not see 0 while this item is on its way (same total order as
            // `task_done_inner`'s decrement and the joiner's load).
            self.ctl().tasks.unfinished.fetch_add(1, Ordering::SeqCst);
        }
        let r = match mode {
            Mode::NoWait => self.sh.ring.try_push(rec),
            Mode::Block(None) => self.sh.ring.push(rec),
            Mode::Block(Some(d)) => self
                .sh
                .ring
                .push_timeout(rec, d.saturating_duration_since(Instant::now())),
        };
        match r {
            // The side segment's name now belongs to the record: the consumer that pops it
            // unlinks it (see `read_side`). Dropping `side` here only unmaps it.
            Ok(()) => Ok(()),
            Err(e) => {
                remove_side(side);
                self.undo_put();
                Err(self.push_error(item, e, msg_len))
            }
        }
    }

    /// The `PutError` (handing `item` back) for a push that failed with `e`.
    fn push_error(&self, item: T, e: PushError, msg_len: usize) -> PutError<T> {
        match e {
            PushError::Full => PutError::Full(item),
            PushError::Timeout => PutError::Timeout(item),
            PushError::Disconnected => self.closed_put(item),
            // Cannot happen with a validated slot size (inline records fit by construction,
            // side records are at most 73 bytes); name the message.
            PushError::TooLarge { .. } => PutError::TooLarge {
                item,
                len: msg_len,
                max: self.sh.slot_size.saturating_sub(1),
            },
            PushError::Corrupted(s) => PutError::Corrupted(item, s),
            _ => PutError::Corrupted(item, "unexpected ring error"),
        }
    }

    /// The put of a queue whose ring has exactly `maxsize` slots: the push is the admission.
    /// A full ring waits per `mode` on the `WaitWord` every `get` pokes (as `admit_wait`),
    /// retrying the push; `Full`, `Timeout` and `Disconnected` (a closed ring, or no live
    /// consumer: `closed_put` tells which) as the admission would report them.
    fn push_admitting(&self, rec: &[u8], mode: Mode) -> Result<(), PushError> {
        let ring = &self.sh.ring;
        match ring.try_push(rec) {
            Err(PushError::Full) => {}
            r => return r,
        }
        let deadline = match mode {
            Mode::NoWait => {
                // Full: every consumer may be dead.
                if self.check_due() && self.peers_gone(false) {
                    return Err(PushError::Disconnected);
                }
                return Err(PushError::Full);
            }
            Mode::Block(d) => d,
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(PushError::Timeout);
        }
        self.push_wait(rec, deadline)
    }

    /// Waits per this handle's strategy until the push succeeds, the deadline passes, or the
    /// ring is closed. Between parked slices ([`PARK_MAX`]) the ring recovers slots of dead
    /// readers, and every [`peers::CHECK_EVERY`] it looks whether any consumer is alive.
    #[cold]
    fn push_wait(&self, rec: &[u8], deadline: Option<Instant>) -> Result<(), PushError> {
        let ring = &self.sh.ring;
        let mut last_check = None::<Instant>;
        let r = self.ctl().gets.wait.wait_until(
            self.strategy,
            &self.budget,
            deadline,
            PARK_MAX,
            // The condition is the push itself: a `get` frees its slot before it pokes the
            // word (the waker's half of the primitive's protocol), so a parked putter that
            // re-checks after announcing itself sees the room.
            || match ring.try_push(rec) {
                Err(PushError::Full) => None,
                r => Some(r),
            },
            || {
                self.full_slice(&mut last_check)
                    .then_some(PushError::Disconnected)
            },
        );
        match r {
            Ok(r) => r,
            Err(WaitError::TimedOut) => Err(PushError::Timeout),
            Err(WaitError::Stopped(e)) => Err(e),
        }
    }

    /// Between parked slices of a put waiting on a full queue: lets the ring recover a slot a
    /// dead reader holds, and every [`peers::CHECK_EVERY`] (reads /proc) looks whether any
    /// consumer is alive. True when none is.
    fn full_slice(&self, last_check: &mut Option<Instant>) -> bool {
        self.sh.ring.recover();
        let now = Instant::now();
        if last_check.is_none_or(|t| now.duration_since(t) >= peers::CHECK_EVERY) {
            *last_check = Some(now);
            return self.peers_gone(false);
        }
        false
    }

    /// The error of a put on a closed ring: `Closed` after `close_all`, else `Disconnected`.
    #[cold]
    pub(super) fn closed_put(&self, item: T) -> PutError<T> {
        if self.ctl().peers.reason() == CLOSED_ALL {
            PutError::Closed(item)
        } else {
            PutError::Disconnected(item)
        }
    }

    /// The error of a get on a closed, drained ring.
    #[cold]
    pub(super) fn closed_get(&self) -> GetError {
        if self.ctl().peers.reason() == CLOSED_ALL {
            GetError::Closed
        } else {
            GetError::Disconnected
        }
    }

    pub(super) fn undo_put(&self) {
        self.release_unit();
        if self.joinable {
            let _ = self.task_done_inner();
        }
    }

    /// Moves `puts` from `p` (read by the caller, who checked there is room) to `p + 1`: one
    /// admission unit taken. False when another producer moved it first (or spuriously): the
    /// caller reloads and checks again.
    #[inline]
    fn take_unit(&self, p: u32) -> bool {
        // Relaxed: `puts` only bounds how many items exist (the items themselves are published
        // by the ring's Release/Acquire on their slots); the CAS keeps concurrent producers
        // under the bound.
        self.ctl()
            .puts
            .puts
            .compare_exchange_weak(p, p.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes one admission unit (`puts - gets < maxsize`), waiting per `mode`.
    pub(super) fn admit(&self, mode: Mode) -> Result<(), Admit> {
        let c = self.ctl();
        let max = self.sh.maxsize;
        loop {
            let p = c.puts.puts.load(Ordering::Relaxed);
            let mut g = self.cached_gets.load(Ordering::Relaxed);
            if used(p, g) >= max {
                // Relaxed: `gets` only bounds how many items exist; the items themselves are
                // published by the ring's Release/Acquire on their slots.
                g = c.gets.gets.load(Ordering::Relaxed);
                self.cached_gets.store(g, Ordering::Relaxed);
            }
            if used(p, g) < max {
                if self.take_unit(p) {
                    return Ok(());
                }
                continue;
            }
            let deadline = match mode {
                Mode::NoWait => {
                    // Full: every consumer may be dead.
                    if self.check_due() && self.peers_gone(false) {
                        return Err(Admit::Closed);
                    }
                    return Err(Admit::Full);
                }
                Mode::Block(d) => d,
            };
            if self.sh.ring.is_closed() {
                return Err(Admit::Closed);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Admit::Timeout);
            }
            return self.admit_wait(deadline);
        }
    }

    /// Waits per this handle's strategy until a unit is taken, the deadline passes, or the ring
    /// is closed. Between parked slices ([`PARK_MAX`]) it lets the ring recover slots of dead
    /// readers, and every [`peers::CHECK_EVERY`] it looks whether any consumer is alive.
    #[cold]
    pub(super) fn admit_wait(&self, deadline: Option<Instant>) -> Result<(), Admit> {
        let c = self.ctl();
        let max = self.sh.maxsize;
        let mut last_check = None::<Instant>;
        let r = c.gets.wait.wait_until(
            self.strategy,
            &self.budget,
            deadline,
            PARK_MAX,
            || {
                if self.sh.ring.is_closed() {
                    return Some(Err(Admit::Closed));
                }
                loop {
                    let p = c.puts.puts.load(Ordering::Relaxed);
                    // Relaxed: ordered against the consumer's bump by the primitive's fences
                    // (see `park`); the items are published by the ring's slots.
                    let g = c.gets.gets.load(Ordering::Relaxed);
                    self.cached_gets.store(g, Ordering::Relaxed);
                    if used(p, g) >= max {
                        return None;
                    }
                    if self.take_unit(p) {
                        return Some(Ok(()));
                    }
                }
            },
            || self.full_slice(&mut last_check).then_some(Admit::Closed),
        );
        match r {
            Ok(r) => r,
            Err(WaitError::TimedOut) => Err(Admit::Timeout),
            Err(WaitError::Stopped(e)) => Err(e),
        }
    }

    /// Gives an admission unit back (after a get, or a put that failed after admission) and
    /// wakes a putter waiting for room. When the ring is the bound (`exact`) there is no unit:
    /// the get freed its slot, and only the wake-up is left.
    pub(super) fn release_unit(&self) {
        let c = &self.ctl().gets;
        if !self.sh.exact {
            // Relaxed: `gets` only bounds the item count; `wake_one`'s SeqCst fence orders this
            // bump before its load of the waiter count (the waker's half of the primitive's
            // Dekker pair with a putter parked in `admit_wait`).
            c.gets.fetch_add(1, Ordering::Relaxed);
        }
        // Exact: the get's release of its slot (the ring's Release store) is the state change
        // this wake-up publishes; the fence in `wake_one` orders it before the waiter count's
        // load, as for the bump above (the putter parked in `push_wait` re-checks by pushing).
        c.wait.wake_one();
    }
}
