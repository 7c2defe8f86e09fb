//! Lock and RLock in real segments whose bytes are overwritten between API calls: every call
//! returns within its timeout (a corrupted word is an error, a take-over or a timeout).
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::{Lock, RLock};

#[derive(Arbitrary, Debug)]
enum Op {
    Acquire,
    TryAcquire,
    Release,
    Guard,
    TryGuard,
    IsLocked,
    RAcquire,
    RTryAcquire,
    RRelease,
    RGuard,
    RNested(u8),
    RIsOwned,
    Scribble { rlock: bool, at: u32, bytes: Vec<u8> },
    Reopen,
}

fuzz_target!(|ops: Vec<Op>| {
    common::init();
    let (Ok(mut l), Ok(mut r)) = (Lock::new_segment(), RLock::new_segment()) else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Acquire => {
                let _ = l.acquire_timeout(T);
            }
            Op::TryAcquire => {
                let _ = l.try_acquire();
            }
            Op::Release => {
                let _ = l.release();
            }
            Op::Guard => drop(l.lock_timeout(T)),
            Op::TryGuard => drop(l.try_lock()),
            Op::IsLocked => {
                let _ = l.is_locked();
            }
            Op::RAcquire => {
                let _ = r.acquire_timeout(T);
            }
            Op::RTryAcquire => {
                let _ = r.try_acquire();
            }
            Op::RRelease => {
                let _ = r.release();
            }
            Op::RGuard => drop(r.lock_timeout(T)),
            Op::RNested(n) => {
                let mut gs = Vec::new();
                for _ in 0..n % 4 {
                    gs.push(r.lock_timeout(T));
                }
            }
            Op::RIsOwned => {
                let _ = r.is_owned();
            }
            Op::Scribble { rlock, at, bytes } => {
                if *rlock {
                    stale |= scribble(r.segment(), *at, bytes);
                } else {
                    stale |= scribble(l.segment(), *at, bytes);
                }
            }
            Op::Reopen if !stale => {
                if let Ok(o) = Lock::open_handle(&l.handle()) {
                    l = o;
                }
                if let Ok(o) = RLock::open_handle(&r.handle()) {
                    r = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
