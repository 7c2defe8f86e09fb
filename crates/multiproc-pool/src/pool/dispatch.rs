//! Dispatch: which worker takes which queued job (`has_room`, `take_for`), the submitter's
//! fast path (`fast_candidates`, `try_dispatch`) and each worker's sender thread.
use super::hooks::stall_sender_hook;
use super::{
    Direct, FAST_PATH_MAX, ITEM_WINDOW, Inner, JobConn, JobFds, PIPE_CAPACITY, Phase,
    RUN_AHEAD_FACTOR, State, TIE_SLACK, TIE_SLACK_SPIN, WorkerSlot,
};
use crate::result::{Sink, lock};
use crate::wire::Payload;
use std::sync::Arc;
use std::time::Duration;

/// Order of idle-worker candidates: fewest held, not over the tie slack, answered last.
type TieKey = (usize, bool, std::cmp::Reverse<u64>);

impl Inner {
    /// How many more jobs than the least-given worker the last answerer may take on ties:
    /// [`TIE_SLACK`], or [`TIE_SLACK_SPIN`] (never shared) under `Spin`.
    fn tie_slack(&self) -> u64 {
        if self.wait == multiproc_ring::WaitStrategy::Spin {
            TIE_SLACK_SPIN
        } else {
            TIE_SLACK
        }
    }

    /// Whether worker `slot` may take the job at the front of the queue (`pending` jobs
    /// queued): at once when it holds nothing, else only while the queue is long (see the
    /// module docs: idle workers pull).
    pub(super) fn has_room(&self, slot: &WorkerSlot, front_items: usize, pending: usize) -> bool {
        let h = slot.held.len();
        !slot.dead
            && slot.ready
            && (h == 0
                // One single item ahead of the running job, always: the worker does not wait
                // for the parent between items (at the end, a worker holds at most one item
                // that an idle one could run).
                || (h == 1 && front_items == 1)
                || (pending > RUN_AHEAD_FACTOR * self.processes * h
                    && slot.held_items + front_items <= ITEM_WINDOW
                    && h < ITEM_WINDOW))
    }

    /// Under the worker's connection lock: takes the front job for worker `idx` (if it has
    /// room), giving it the next `seq` and recording it as held. If the job's sink is `own`
    /// (the submitter of a synchronous `apply` sends its own job), its result is left to the
    /// caller to read (`Job::direct`); else the worker's receiver is told to read it.
    pub(super) fn take_for(
        &self,
        st: &mut State,
        idx: usize,
        own: Option<&Arc<dyn Sink>>,
    ) -> Option<(u64, Arc<Payload>, JobFds)> {
        let front_items = st.pending.front()?.items as usize;
        if st.phase == Phase::Terminated
            || !self.has_room(&st.workers[idx], front_items, st.pending.len())
        {
            return None;
        }
        let mut job = st.pending.pop_front()?;
        let slot = &mut st.workers[idx];
        job.direct = own.is_some_and(|o| Arc::ptr_eq(o, &job.sink));
        if !job.direct
            && let Some(r) = &slot.reader
        {
            r.add_need();
        }
        let seq = slot.next_seq;
        slot.next_seq += 1;
        slot.given += 1;
        let before = slot.given - 1;
        let max_others = st
            .workers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != idx)
            .map(|(_, w)| w.given)
            .max()
            .unwrap_or(0);
        if max_others > before.saturating_add(self.tie_slack()) {
            // The least-given worker got one: the tie counts start again (see TIE_SLACK).
            for w in &mut st.workers {
                w.given = 0;
            }
        }
        let slot = &mut st.workers[idx];
        slot.held_items += front_items;
        slot.held_bytes += job.payload.len() + 64;
        let payload = job.payload.clone();
        let fds = job.fds.clone();
        slot.held.insert(seq, job);
        Some((seq, payload, fds))
    }

    /// Workers with room for the front job, least loaded first (empty if the front job is
    /// too big for the submitter's fast path).
    pub(super) fn fast_candidates(&self, st: &State) -> Vec<(usize, JobConn)> {
        let Some(front) = st.pending.front() else {
            return Vec::new();
        };
        // Jobs with fds go through the sender thread: their `sendmsg` may block on a full
        // socket, which must never block a receiver (its worker may wait on it).
        if front.payload.len() > FAST_PATH_MAX || front.fds.is_some() {
            return Vec::new();
        }
        // Least loaded first; among equals, the worker that answered last (it may still be
        // spinning on its ring: no futex wake-up), unless it was given more than
        // `tie_slack()` jobs over the least-given one (so that idle workers share ties instead
        // of one taking them all).
        let min_given = st.workers.iter().map(|w| w.given).min().unwrap_or(0);
        let mut c: Vec<(TieKey, usize, JobConn)> = st
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| self.has_room(w, front.items as usize, st.pending.len()))
            .filter(|(_, w)| w.held_bytes + front.payload.len() + 64 <= PIPE_CAPACITY / 2)
            .filter_map(|(i, w)| {
                let over = w.given > min_given.saturating_add(self.tie_slack());
                let key = (w.held.len(), over, std::cmp::Reverse(w.last_answer));
                w.conn.clone().map(|c| (key, i, c))
            })
            .collect();
        c.sort_by_key(|x| x.0);
        c.into_iter().map(|(_, i, c)| (i, c)).collect()
    }

    /// Worker `idx`'s connection if it may take the front job on the fast path (the
    /// conditions of [`fast_candidates`](Self::fast_candidates), for one worker).
    pub(super) fn fast_conn_of(&self, st: &State, idx: usize) -> Option<JobConn> {
        let front = st.pending.front()?;
        let w = &st.workers[idx];
        (front.payload.len() <= FAST_PATH_MAX
            && front.fds.is_none()
            && self.has_room(w, front.items as usize, st.pending.len())
            && w.held_bytes + front.payload.len() + 64 <= PIPE_CAPACITY / 2)
            .then(|| w.conn.clone())
            .flatten()
    }

    /// The submitter's fast path: send the front job to a worker with room straight from the
    /// calling thread (no hand-off to a sender thread). Returns false if it could not; with
    /// `own`, also where the job went if it was the caller's own (see `take_for`).
    pub(super) fn try_dispatch(
        &self,
        candidates: Vec<(usize, JobConn)>,
        buf: &mut Vec<u8>,
        own: Option<&Arc<dyn Sink>>,
    ) -> (bool, Option<Direct>) {
        for (idx, conn) in candidates {
            let Ok(mut g) = conn.try_lock() else {
                continue;
            };
            let Some(jobs) = g.as_mut() else {
                continue;
            };
            let (taken, direct) = {
                let mut st = lock(&self.st);
                if st.workers[idx]
                    .conn
                    .as_ref()
                    .is_none_or(|c| !Arc::ptr_eq(c, &conn))
                {
                    continue;
                }
                let taken = self.take_for(&mut st, idx, own);
                let w = &st.workers[idx];
                let direct = match (&taken, &w.reader) {
                    (Some((seq, ..)), Some(r)) if w.held.get(seq).is_some_and(|j| j.direct) => {
                        Some(Direct {
                            idx,
                            generation: w.generation,
                            reader: r.clone(),
                        })
                    }
                    _ => None,
                };
                (taken, direct)
            };
            let Some((seq, payload, fds)) = taken else {
                continue;
            };
            // A failed send means the worker died: its receiver settles the job.
            let _ = jobs.send(buf, seq, &payload, &fds);
            return (true, direct);
        }
        (false, None)
    }

    pub(super) fn sender(&self, idx: usize, generation: u64, conn: JobConn) {
        let mut buf = Vec::new();
        loop {
            // Wait (without the connection lock) until there is work this worker may take.
            {
                let mut st = lock(&self.st);
                loop {
                    let phase = st.phase;
                    let slot = &st.workers[idx];
                    if slot.generation != generation || slot.dead || phase == Phase::Terminated {
                        return;
                    }
                    let front_items = st.pending.front().map(|j| j.items as usize);
                    if let Some(n) = front_items {
                        if self.has_room(slot, n, st.pending.len()) {
                            break;
                        }
                    } else if phase == Phase::Closed {
                        drop(st);
                        // The worker reads Eof after its last job and exits.
                        if let Some(mut c) = lock(&conn).take() {
                            c.conn.close();
                        }
                        return;
                    }
                    st = self
                        .cv
                        .wait_timeout(st, Duration::from_millis(200))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            stall_sender_hook();
            let mut g = lock(&conn);
            let Some(jobs) = g.as_mut() else {
                return;
            };
            let taken = {
                let mut st = lock(&self.st);
                // The pool lock was dropped since the check above: if this worker ended and was
                // replaced meanwhile, its slot now belongs to the replacement, and a job taken
                // for that slot here would be sent down this (dead) worker's pipe, never to run,
                // while the replacement's sequence numbers skip it: the job was later failed
                // with a spurious `WorkerLost` (or, without maxtasksperchild, waited for
                // forever). Only this generation's slot may take work through this pipe.
                let slot = &st.workers[idx];
                if slot.generation != generation || slot.dead {
                    return;
                }
                self.take_for(&mut st, idx, None)
            };
            let Some((seq, payload, fds)) = taken else {
                continue;
            };
            if !jobs.send(&mut buf, seq, &payload, &fds) {
                // The worker is gone; its receiver settles what it held.
                return;
            }
            drop(g);
            if buf.capacity() > 1 << 22 {
                buf = Vec::new();
            }
        }
    }
}
