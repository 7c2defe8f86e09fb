//! Semaphore and BoundedSemaphore in real segments whose bytes (count, holder slots, bound)
//! are overwritten between API calls: every call returns within its timeout.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::{BoundedSemaphore, Semaphore};

#[derive(Arbitrary, Debug)]
enum Op {
    Acquire,
    TryAcquire,
    Release,
    Guard,
    TryGuard,
    Guards(u8),
    Value,
    Reclaim,
    Scribble { at: u32, bytes: Vec<u8> },
    Reopen,
}

fuzz_target!(|input: (bool, u8, Vec<Op>)| {
    common::init();
    let (bounded, init, ops) = input;
    let init = u32::from(init % 4);
    let s = if bounded {
        BoundedSemaphore::new_segment(init).map(|b| (*b).clone())
    } else {
        Semaphore::new_segment(init)
    };
    let Ok(mut s) = s else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Acquire => {
                let _ = s.acquire_timeout(T);
            }
            Op::TryAcquire => {
                let _ = s.try_acquire();
            }
            Op::Release => {
                let _ = s.release();
            }
            Op::Guard => drop(s.acquire_guard_timeout(T)),
            Op::TryGuard => drop(s.try_acquire_guard()),
            Op::Guards(n) => {
                let mut gs = Vec::new();
                for _ in 0..n % 40 {
                    gs.push(s.try_acquire_guard());
                }
            }
            Op::Value => {
                let _ = s.get_value();
            }
            Op::Reclaim => {
                let _ = s.reclaim_dead();
            }
            Op::Scribble { at, bytes } => stale |= scribble(s.segment(), *at, bytes),
            Op::Reopen if !stale => {
                if let Ok(o) = Semaphore::open_handle(&s.handle()) {
                    s = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
