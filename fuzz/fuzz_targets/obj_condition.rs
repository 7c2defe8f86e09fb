//! Condition (over an RLock or a Lock) in real segments whose bytes — the waiter table and the
//! lock's — are overwritten between API calls: every call returns within its timeout.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::{CondLock, Condition, Lock, RLock};

#[derive(Arbitrary, Debug)]
enum Op {
    Acquire,
    Release,
    Guard,
    WaitLocked,
    Wait,
    WaitFor(bool),
    Notify(u8),
    NotifyAll,
    Scribble { lock: bool, at: u32, bytes: Vec<u8> },
    Reopen,
}

fn lock_segment(c: &Condition) -> &multiproc_shm::Segment {
    match c.lock_ref() {
        CondLock::Lock(l) => l.segment(),
        CondLock::RLock(l) => l.segment(),
    }
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    common::init();
    let (plain, ops) = input;
    let c = if plain {
        Lock::new_segment()
            .map_err(|_| ())
            .and_then(|l| Condition::with_lock(l).map_err(|_| ()))
    } else {
        // Own segments (as `Condition::new` had before arenas): the scribbles hit the lock's
        // segment at fuzzed offsets.
        RLock::new_segment()
            .map_err(|_| ())
            .and_then(|l| Condition::with_rlock(l).map_err(|_| ()))
    };
    let Ok(mut c) = c else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Acquire => {
                let _ = c.acquire_timeout(T);
            }
            Op::Release => {
                let _ = c.release();
            }
            Op::Guard => drop(c.lock_timeout(T)),
            Op::WaitLocked => {
                if let Ok(_g) = c.lock_timeout(T) {
                    let _ = c.wait_timeout(T);
                }
            }
            Op::Wait => {
                let _ = c.wait_timeout(T);
            }
            Op::WaitFor(b) => {
                if let Ok(_g) = c.lock_timeout(T) {
                    let _ = c.wait_for(|| *b, Some(T));
                }
            }
            Op::Notify(n) => {
                if let Ok(_g) = c.lock_timeout(T) {
                    let _ = c.notify(usize::from(*n));
                }
            }
            Op::NotifyAll => {
                let _ = c.notify_all();
            }
            Op::Scribble { lock, at, bytes } => {
                if *lock {
                    stale |= scribble(lock_segment(&c), *at, bytes);
                } else {
                    stale |= scribble(c.segment(), *at, bytes);
                }
            }
            Op::Reopen if !stale => {
                if let Ok(o) = Condition::open_handle(&c.handle(), c.lock_ref().clone()) {
                    c = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
