//! Producer and consumer accounting of a queue: who may still put, who may still get.
//!
//! The queue's control block holds a fixed table of [`TABLE`] entries, one per *process* that
//! holds handles: its identity (`pid << 32 | low 32 bits of its start time`, one word, claimed
//! by CAS) and how many producer (`tx`) and consumer (`rx`) handles it holds. A process keeps
//! its own counts locally (under one process-wide lock) and mirrors them into its entry when a
//! handle is made, cloned, closed or dropped: never on `put`/`get`.
//!
//! "Every producer is gone" means no entry whose owner is alive counts a producer. Entries of
//! dead processes (pid + start time, as everywhere in the project) are reclaimed by whoever scans:
//! a handle dropping its last producer (or consumer) role, and a `get`/`put` that would block,
//! at most every [`CHECK_EVERY`]. The first scan that finds no live producer (consumer) closes
//! the ring with that reason, waking every blocked getter and putter at once; disconnection is
//! final, as crossbeam's.
//!
//! Handles that travel: a forked child inherits all its parent's handles, so the fork hooks lend
//! the parent's counts to the child before the fork (`lent_*` of the parent's entry: the parent
//! dropping its handles right after `fork` cannot look like the last producer leaving), and the
//! child, in its fork hook, registers its own entry with those counts (a *blanket*
//! registration) and repays the loan. The blanket lasts until the child first uses, clones or
//! drops a handle of that queue: from then on only the handles it really uses count (an
//! inherited handle the child's code cannot reach, a copy of its parent's stack, must not keep
//! the queue connected). A serialized handle is lent the same way until the process that
//! deserializes it registers (or until the serializing process dies).
//!
//! When the table is full, a process that cannot get an entry marks the queue *untracked*: from
//! then on nobody is ever reported gone on that queue (Python's behaviour: no disconnection),
//! rather than a false disconnection.

use crate::facade::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::ident;
use std::time::Duration;

/// Processes one queue can track.
pub(crate) const TABLE: usize = 128;
/// No entry.
pub(crate) const NONE: u32 = u32::MAX;
/// An entry being reclaimed (pid 0: names nobody).
const BUSY: u64 = 1;
/// How often a blocked `get`/`put` re-checks whether its peers are alive.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(25);

/// Why the ring was closed (`Peers::reason`).
pub(crate) const OPEN: u32 = 0;
/// `close_all`.
pub(crate) const CLOSED_ALL: u32 = 1;
/// Every producer is gone.
pub(crate) const NO_PRODUCERS: u32 = 2;
/// Every consumer is gone.
pub(crate) const NO_CONSUMERS: u32 = 3;

/// Which side a handle counts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Role {
    pub tx: bool,
    pub rx: bool,
}

impl Role {
    pub(crate) const BOTH: Role = Role { tx: true, rx: true };
    pub(crate) const TX: Role = Role {
        tx: true,
        rx: false,
    };
    pub(crate) const RX: Role = Role {
        tx: false,
        rx: true,
    };
    pub(crate) const NONE: Role = Role {
        tx: false,
        rx: false,
    };
    fn counts(self) -> (u32, u32) {
        (u32::from(self.tx), u32::from(self.rx))
    }
}

/// One process's registration.
#[repr(C)]
pub(crate) struct Entry {
    owner: AtomicU64,
    tx: AtomicU32,
    rx: AtomicU32,
    lent_tx: AtomicU32,
    lent_rx: AtomicU32,
}

/// The accounting part of a queue's control block.
#[repr(C)]
pub(crate) struct Peers {
    pub(crate) reason: AtomicU32,
    untracked: AtomicU32,
    table: [Entry; TABLE],
}

impl Peers {
    pub(crate) fn new() -> Peers {
        Peers {
            reason: AtomicU32::new(OPEN),
            untracked: AtomicU32::new(0),
            table: std::array::from_fn(|_| Entry {
                owner: AtomicU64::new(0),
                tx: AtomicU32::new(0),
                rx: AtomicU32::new(0),
                lent_tx: AtomicU32::new(0),
                lent_rx: AtomicU32::new(0),
            }),
        }
    }

    /// Whether the table overflowed (diagnostics).
    pub(crate) fn is_untracked(&self) -> bool {
        self.untracked.load(Ordering::Relaxed) != 0
    }

    /// Why the queue was closed ([`OPEN`] if it was not).
    pub(crate) fn reason(&self) -> u32 {
        // Acquire: pairs with the Release CAS in `set_reason`.
        self.reason.load(Ordering::Acquire)
    }

    /// Records why the ring is being closed (the first reason stays). Returns whether it was
    /// this call that set it.
    pub(crate) fn set_reason(&self, why: u32) -> bool {
        // Release: the reason is read after seeing the ring closed (Acquire there).
        self.reason
            .compare_exchange(OPEN, why, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether a live process holds a producer (`tx`) or consumer handle, reclaiming the
    /// entries of dead processes on the way (reads /proc: slow paths only). A full table
    /// ("untracked") answers yes.
    pub(crate) fn any_alive(&self, tx: bool) -> bool {
        // SeqCst (here and in `mirror`): a process that stores its count 0 and then scans, and
        // another that does the same, cannot both miss the other's last handle (Dekker); with
        // weaker orders both could read the other's stale count and neither would disconnect,
        // which only delays it to the next check, or both read 0 correctly.
        if self.untracked.load(Ordering::SeqCst) != 0 {
            return true;
        }
        let me = ident::word();
        for e in &self.table {
            let w = e.owner.load(Ordering::SeqCst);
            if w == 0 || w == BUSY {
                continue;
            }
            let n = if tx {
                e.tx.load(Ordering::SeqCst)
                    .saturating_add(e.lent_tx.load(Ordering::SeqCst))
            } else {
                e.rx.load(Ordering::SeqCst)
                    .saturating_add(e.lent_rx.load(Ordering::SeqCst))
            };
            if n == 0 {
                // Nothing to count: no /proc read (a dead entry is reclaimed by `claim`).
                continue;
            }
            if w == me || ident::word_alive(w) {
                return true;
            }
            reclaim(e, w);
        }
        false
    }

    /// Claims a free entry for this process (reclaiming dead ones if none is free); marks the
    /// queue untracked and returns [`NONE`] if the table is full of live processes.
    fn claim(&self) -> u32 {
        let me = ident::word();
        for pass in 0..2 {
            for (i, e) in self.table.iter().enumerate() {
                // Relaxed: counts are zeroed by the freer before it releases the entry, and a
                // scanner reading a stale count of a live entry only errs towards "alive".
                if e.owner
                    .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return i as u32;
                }
            }
            if pass == 0 {
                for e in &self.table {
                    let w = e.owner.load(Ordering::Relaxed);
                    if w != 0 && w != BUSY && w != me && !ident::word_alive(w) {
                        reclaim(e, w);
                    }
                }
            }
        }
        self.untracked.store(1, Ordering::SeqCst);
        NONE
    }

    fn entry(&self, idx: u32) -> Option<&Entry> {
        self.table.get(idx as usize)
    }
}

/// Frees a dead process's entry (one reclaimer wins the CAS).
fn reclaim(e: &Entry, w: u64) {
    if e.owner
        .compare_exchange(w, BUSY, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        e.tx.store(0, Ordering::SeqCst);
        e.rx.store(0, Ordering::SeqCst);
        e.lent_tx.store(0, Ordering::SeqCst);
        e.lent_rx.store(0, Ordering::SeqCst);
        // SeqCst: the zeroed counts are visible before the entry can be claimed again.
        e.owner.store(0, Ordering::SeqCst);
    }
}

/// A process's own view of its registration in one queue (process-local memory; changed only
/// under [`lock`]).
#[derive(Debug)]
pub(crate) struct Local {
    tx: AtomicU32,
    rx: AtomicU32,
    idx: AtomicU32,
    pid: AtomicU32,
    /// False while the counts are a forked child's blanket (its parent's, inherited).
    adopted: AtomicBool,
}

impl Local {
    pub(crate) fn new() -> Local {
        Local {
            tx: AtomicU32::new(0),
            rx: AtomicU32::new(0),
            idx: AtomicU32::new(NONE),
            pid: AtomicU32::new(0),
            adopted: AtomicBool::new(true),
        }
    }

    /// Counts a handle of `role` that this process inherited and now uses for the first time:
    /// the first such handle of a queue replaces the blanket registration of a forked child.
    pub(crate) fn adopt(&self, peers: &Peers, role: Role) {
        let g = lock();
        let idx = self.ensure(peers, &g);
        if !self.adopted.swap(true, Ordering::Relaxed) {
            self.tx.store(0, Ordering::Relaxed);
            self.rx.store(0, Ordering::Relaxed);
        }
        let (t, r) = role.counts();
        self.tx.store(
            self.tx.load(Ordering::Relaxed).saturating_add(t),
            Ordering::Relaxed,
        );
        self.rx.store(
            self.rx.load(Ordering::Relaxed).saturating_add(r),
            Ordering::Relaxed,
        );
        self.mirror(peers, idx);
    }

    /// This process's entry, claimed if needed (called under the lock).
    fn ensure(&self, peers: &Peers, _g: &Guard) -> u32 {
        let me = ident::pid();
        if self.pid.load(Ordering::Relaxed) != me {
            // First use, or inherited through a fork the hook did not see: the inherited
            // counts are not ours.
            self.pid.store(me, Ordering::Relaxed);
            self.tx.store(0, Ordering::Relaxed);
            self.rx.store(0, Ordering::Relaxed);
            self.adopted.store(true, Ordering::Relaxed);
            self.idx.store(peers.claim(), Ordering::Relaxed);
        }
        self.idx.load(Ordering::Relaxed)
    }

    fn mirror(&self, peers: &Peers, idx: u32) {
        if let Some(e) = peers.entry(idx) {
            e.tx.store(self.tx.load(Ordering::Relaxed), Ordering::SeqCst);
            e.rx.store(self.rx.load(Ordering::Relaxed), Ordering::SeqCst);
        }
    }

    /// Adds (`add`) or removes a handle of `role`. Returns, for a removal, which sides this
    /// process no longer holds at all (the caller then checks whether anyone does).
    pub(crate) fn adjust(&self, peers: &Peers, role: Role, add: bool) -> Role {
        let g = lock();
        let idx = self.ensure(peers, &g);
        let (t, r) = role.counts();
        let (nt, nr) = if add {
            (
                self.tx.load(Ordering::Relaxed).saturating_add(t),
                self.rx.load(Ordering::Relaxed).saturating_add(r),
            )
        } else {
            (
                self.tx.load(Ordering::Relaxed).saturating_sub(t),
                self.rx.load(Ordering::Relaxed).saturating_sub(r),
            )
        };
        self.tx.store(nt, Ordering::Relaxed);
        self.rx.store(nr, Ordering::Relaxed);
        self.mirror(peers, idx);
        drop(g);
        if add {
            Role::NONE
        } else {
            Role {
                tx: role.tx && nt == 0,
                rx: role.rx && nr == 0,
            }
        }
    }

    /// Lends one handle of `role` to whoever deserializes it; returns the loan to name in the
    /// serialized handle (`None` if this process has no entry).
    pub(crate) fn lend(&self, peers: &Peers, role: Role) -> Option<(u32, u64)> {
        let g = lock();
        let idx = self.ensure(peers, &g);
        let e = peers.entry(idx)?;
        let (t, r) = role.counts();
        e.lent_tx.fetch_add(t, Ordering::SeqCst);
        e.lent_rx.fetch_add(r, Ordering::SeqCst);
        Some((idx, ident::word()))
    }

    /// Frees this process's entry when its last handle of the queue is gone (keeps it while it
    /// has loans outstanding: a handle in flight to another process still counts).
    pub(crate) fn release(&self, peers: &Peers) {
        let _g = lock();
        if self.pid.load(Ordering::Relaxed) != ident::pid() {
            return;
        }
        self.tx.store(0, Ordering::Relaxed);
        self.rx.store(0, Ordering::Relaxed);
        let idx = self.idx.swap(NONE, Ordering::Relaxed);
        let Some(e) = peers.entry(idx) else { return };
        e.tx.store(0, Ordering::SeqCst);
        e.rx.store(0, Ordering::SeqCst);
        let me = ident::word();
        if e.lent_tx.load(Ordering::SeqCst) == 0 && e.lent_rx.load(Ordering::SeqCst) == 0 {
            let _ = e
                .owner
                .compare_exchange(me, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    /// In a forked parent, before the fork: lends this process's counts to the child.
    pub(crate) fn before_fork(&self, peers: &Peers) {
        if self.pid.load(Ordering::Relaxed) != ident::pid() {
            return;
        }
        if let Some(e) = peers.entry(self.idx.load(Ordering::Relaxed)) {
            e.lent_tx
                .fetch_add(self.tx.load(Ordering::Relaxed), Ordering::SeqCst);
            e.lent_rx
                .fetch_add(self.rx.load(Ordering::Relaxed), Ordering::SeqCst);
        }
    }

    /// In the forked child: registers its own entry with the inherited counts, then takes the
    /// parent's loan back. Allocation-free (a forked child of a threaded parent).
    pub(crate) fn in_child(&self, peers: &Peers, parent_pid: u32) {
        let (t, r) = (
            self.tx.load(Ordering::Relaxed),
            self.rx.load(Ordering::Relaxed),
        );
        let parent_idx = self.idx.load(Ordering::Relaxed);
        let had_parent = self.pid.load(Ordering::Relaxed) == parent_pid;
        let me = ident::pid();
        self.pid.store(me, Ordering::Relaxed);
        self.adopted.store(false, Ordering::Relaxed);
        let idx = peers.claim();
        self.idx.store(idx, Ordering::Relaxed);
        self.mirror(peers, idx);
        if had_parent && let Some(e) = peers.entry(parent_idx) {
            sub_sat(&e.lent_tx, t);
            sub_sat(&e.lent_rx, r);
        }
    }
}

/// Returns a loan made by [`Local::lend`] (by `owner`, at table index `idx`), if that process
/// still owns the entry.
pub(crate) fn repay(peers: &Peers, idx: u32, owner: u64, role: Role) {
    let Some(e) = peers.entry(idx) else { return };
    if e.owner.load(Ordering::SeqCst) != owner {
        return;
    }
    let (t, r) = role.counts();
    sub_sat(&e.lent_tx, t);
    sub_sat(&e.lent_rx, r);
}

fn sub_sat(a: &AtomicU32, n: u32) {
    if n == 0 {
        return;
    }
    let mut cur = a.load(Ordering::SeqCst);
    for _ in 0..1000 {
        match a.compare_exchange_weak(
            cur,
            cur.saturating_sub(n),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

// ----- the process-wide lock over every queue's local registration -----

static LOCK: AtomicBool = AtomicBool::new(false);

/// Holds the process-wide registration lock.
pub(crate) struct Guard(());

impl Guard {
    /// The guard of a lock taken earlier and `forget`-ed (by the fork hooks).
    pub(crate) fn assume_held() -> Guard {
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Release: pairs with the Acquire in `lock`.
        LOCK.store(false, Ordering::Release);
    }
}

/// Takes the process-wide registration lock (held for a few atomic stores; also held across
/// `fork` by the fork hooks, so a child never inherits a half-made registration).
pub(crate) fn lock() -> Guard {
    let mut spins = 0u32;
    // Acquire: pairs with the Release in `Guard::drop`.
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins = spins.wrapping_add(1);
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    Guard(())
}
