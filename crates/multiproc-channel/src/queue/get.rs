//! The get path of a [`Queue`]: the record taken from the ring (inline or from its side
//! segment), decoded, and the admission unit given back; blocking gets wake to check peers.

use super::*;

impl<T: 'static, C: Codec<T>> Queue<T, C> {
    /// Removes and returns the next item, waiting as long as needed.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_mode(Mode::Block(None))
    }

    /// Removes and returns the next item, waiting at most `timeout` ([`GetError::Timeout`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_mode(Mode::Block(multiproc_shm::deadline::after(timeout)))
    }

    /// Removes and returns the next item if there is one now ([`GetError::Empty`]).
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_mode(Mode::NoWait)
    }

    pub(super) fn get_mode(&self, mode: Mode) -> Result<T, GetError> {
        if self.closed {
            return Err(GetError::Closed);
        }
        self.check_adopted();
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut b) => self.get_with(mode, &mut b),
            Err(_) => self.get_with(mode, &mut Vec::new()),
        })
    }

    pub(super) fn get_with(&self, mode: Mode, buf: &mut Vec<u8>) -> Result<T, GetError> {
        let ring = &self.sh.ring;
        let r = match mode {
            Mode::NoWait => match ring.try_pop_into(buf) {
                // Empty: every producer may be dead (a dropped one closed the ring already).
                Err(PopError::Empty) if self.check_due() && self.peers_gone(true) => {
                    ring.try_pop_into(buf)
                }
                r => r,
            },
            Mode::Block(deadline) => match ring.try_pop_into(buf) {
                Err(PopError::Empty) => self.pop_blocking(buf, deadline),
                r => r,
            },
        };
        match r {
            Ok(_) => {}
            Err(PopError::Empty) => return Err(GetError::Empty),
            Err(PopError::Timeout) => return Err(GetError::Timeout),
            Err(PopError::Disconnected) => return Err(self.closed_get()),
            Err(PopError::Corrupted(s)) => return Err(GetError::Corrupted(s)),
            Err(_) => return Err(GetError::Corrupted("unexpected ring error")),
        }
        self.release_unit();
        match buf.split_first() {
            Some((&INLINE, body)) => C::decode(body).map_err(GetError::from),
            Some((&SIDE, body)) if body.len() > 8 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&body[..8]);
                let len = u64::from_le_bytes(l);
                if len > self.sh.max_message as u64 {
                    return Err(GetError::Corrupted("side message larger than the maximum"));
                }
                let name = std::str::from_utf8(&body[8..])
                    .map_err(|_| GetError::Corrupted("side file name"))?;
                let bytes = read_side(self.sh.id, name, len as usize)?;
                C::decode(&bytes).map_err(GetError::from)
            }
            _ => Err(GetError::Corrupted("bad record tag")),
        }
    }

    /// A blocking pop in slices of [`peers::CHECK_EVERY`]: between slices, checks whether any
    /// live process still holds a producer handle (a SIGKILLed last producer closes nothing;
    /// this is how its consumers notice). A producer that drops or closes its handle wakes
    /// the slice at once (it closes the ring).
    #[cold]
    pub(super) fn pop_blocking(
        &self,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<usize, PopError> {
        let ring = &self.sh.ring;
        loop {
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left <= peers::CHECK_EVERY {
                        return ring.pop_into_timeout_with(buf, left, self.strategy.into());
                    }
                    peers::CHECK_EVERY
                }
                None => peers::CHECK_EVERY,
            };
            match ring.pop_into_timeout_with(buf, slice, self.strategy.into()) {
                Err(PopError::Timeout) => {
                    // A closed ring is seen by the next pop (which drains it first).
                    self.peers_gone(true);
                }
                r => return r,
            }
        }
    }
}
