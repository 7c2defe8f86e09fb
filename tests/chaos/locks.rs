//! The lock children: `Value` users, `Lock` users, `Semaphore` users and `SharedDict` updaters,
//! each checking its object's invariant under the guard and repairing a dead holder's half update.

use crate::board::{
    Board, CHILD_WAIT, DICT_CONF, ERR_DICT, ERR_LOCK, ERR_OTHER, ERR_SEM, ERR_VALUE, LOCK_A,
    LOCK_B, LOCK_CONF, LOCK_IN, LOST_WAKE_DICT, LOST_WAKE_VALUE, REC_DICT, REC_LOCK, REC_VALUE,
    SEM_HOLD, SEM_MAX, SEM_PID, SEM_UNITS, SEM_USERS, VAL_CONF,
};
use crate::procfs::alive;
use crate::round::Objects;
use multiproc::{LockError, MutexError, RecoverResult, SemaphoreError};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

pub fn spin(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// Waits for a robust-mutex lock (Value, SharedDict) at most [`CHILD_WAIT`], in 1 s slices.
///
/// A slice that times out although the lock can then be taken at once is a lost wake-up: glibc's
/// robust mutex wakes one waiter on unlock, and if that waiter is SIGKILLed before it takes the
/// lock, and a newcomer takes it without contention, the other sleepers are never woken (the
/// kernel's exit-time robust-list walk wakes a waiter only when the lock word is 0). A plain
/// `get_lock()` would sleep forever there; the mutex now parks in 50 ms slices, so this should
/// no longer happen. Still counted in board cell `lost`;
/// `MULTIPROC_CHAOS_STRICT=1` makes it a failure.
pub fn lock_robust<G>(
    b: &Board,
    lost: usize,
    timed: impl Fn(Duration) -> RecoverResult<G>,
) -> RecoverResult<G> {
    let start = Instant::now();
    loop {
        match timed(Duration::from_secs(1)) {
            Err(LockError::Failed(MutexError::Timeout)) => match timed(Duration::ZERO) {
                Err(LockError::Failed(MutexError::Timeout | MutexError::WouldBlock)) => {
                    if start.elapsed() >= CHILD_WAIT {
                        return Err(LockError::Failed(MutexError::Timeout));
                    }
                }
                r => {
                    b.bump(lost);
                    return r;
                }
            },
            r => return r,
        }
    }
}

pub fn value_user(o: &Objects, i: usize) -> i32 {
    while !o.board.stopped() {
        let got = lock_robust(&o.board, LOST_WAKE_VALUE, |d| {
            o.value.get_lock_recover_timeout(d)
        });
        let mut g = match got {
            Ok((g, false)) => {
                let sum = g[1..].iter().sum::<u64>();
                if g[0] != sum {
                    return o.board.fail_with(ERR_VALUE, 1, g[0], sum);
                }
                g
            }
            Ok((mut g, true)) => {
                o.board.bump(REC_VALUE);
                let sum: u64 = g[1..].iter().sum();
                if g[0] != sum && g[0] != sum + 1 {
                    return o.board.fail_with(ERR_VALUE, 2, g[0], sum);
                }
                g[0] = sum; // roll the dead holder's half update back
                g
            }
            Err(e) => {
                let code = match e {
                    LockError::OwnerDied => 7,
                    LockError::Failed(MutexError::Timeout) => 3,
                    LockError::Failed(MutexError::Deadlock) => 4,
                    LockError::Failed(MutexError::NotRecoverable) => 5,
                    LockError::Failed(MutexError::Os(n)) => 100 + n as u64,
                    _ => 6,
                };
                return o.board.fail_with(ERR_VALUE, code, 0, 0);
            }
        };
        g[0] += 1;
        spin(200);
        g[1 + i] += 1;
        drop(g);
        o.board.bump(VAL_CONF + i);
    }
    0
}

pub fn lock_user(o: &Objects, i: usize) -> i32 {
    let b = &o.board;
    let me = u64::from(std::process::id());
    while !b.stopped() {
        let g = match o.lock.lock_recover_timeout(CHILD_WAIT) {
            Ok((g, false)) => {
                if b.get(LOCK_IN) != 0 || b.get(LOCK_A) != b.get(LOCK_B) {
                    return b.fail(ERR_LOCK);
                }
                g
            }
            Ok((g, true)) => {
                b.bump(REC_LOCK);
                let (a, bb) = (b.get(LOCK_A), b.get(LOCK_B));
                if a == bb + 1 {
                    b.at(LOCK_B).store(a, SeqCst); // roll forward
                } else if a != bb {
                    return b.fail(ERR_LOCK);
                }
                b.at(LOCK_IN).store(0, SeqCst);
                g
            }
            Err(_) => return b.fail(ERR_LOCK),
        };
        b.at(LOCK_IN).store(me, SeqCst);
        b.bump(LOCK_A);
        spin(200);
        b.bump(LOCK_B);
        b.at(LOCK_IN).store(0, SeqCst);
        drop(g);
        b.bump(LOCK_CONF + i);
    }
    0
}

pub fn sem_user(o: &Objects, i: usize) -> i32 {
    let b = &o.board;
    b.at(SEM_PID + i)
        .store(u64::from(std::process::id()), SeqCst);
    while !b.stopped() {
        let g = match o.sem.acquire_guard_timeout(CHILD_WAIT) {
            Ok(g) => g,
            Err(SemaphoreError::Timeout) => return b.fail(ERR_SEM),
            Err(_) => return b.fail(ERR_OTHER),
        };
        b.at(SEM_HOLD + i).store(1, SeqCst);
        let flagged = (0..SEM_USERS).filter(|&j| b.get(SEM_HOLD + j) == 1).count();
        let holders = if flagged as u32 > SEM_UNITS {
            // Some flags may belong to killed holders whose units were given back: count the
            // live ones only.
            (0..SEM_USERS)
                .filter(|&j| j == i || (b.get(SEM_HOLD + j) == 1 && alive(b.get(SEM_PID + j))))
                .count()
        } else {
            flagged
        };
        if holders as u32 > SEM_UNITS {
            return b.fail(ERR_SEM);
        }
        b.at(SEM_MAX).fetch_max(holders as u64, SeqCst);
        spin(500);
        b.at(SEM_HOLD + i).store(0, SeqCst);
        drop(g);
    }
    0
}

pub fn dict_user(o: &Objects, i: usize) -> i32 {
    let b = &o.board;
    while !b.stopped() {
        let got = lock_robust(b, LOST_WAKE_DICT, |d| o.dict.get_lock_recover_timeout(d));
        let (mut g, died) = match got {
            Ok(r) => r,
            Err(_) => return b.fail(ERR_DICT),
        };
        let (Ok(x), Ok(y)) = (g.get(&0), g.get(&1)) else {
            return b.fail(ERR_OTHER);
        };
        let (x, y) = (x.unwrap_or(0), y.unwrap_or(0));
        if died {
            b.bump(REC_DICT);
            if x == y + 1 {
                if g.insert(&1, &x).is_err() {
                    return b.fail(ERR_OTHER);
                }
            } else if x != y {
                return b.fail(ERR_DICT);
            }
        } else if x != y {
            return b.fail(ERR_DICT);
        }
        if g.update(&0, |v| v.unwrap_or(0) + 1).is_err() {
            return b.fail(ERR_OTHER);
        }
        spin(200);
        if g.update(&1, |v| v.unwrap_or(0) + 1).is_err() {
            return b.fail(ERR_OTHER);
        }
        drop(g);
        b.bump(DICT_CONF + i);
    }
    0
}
