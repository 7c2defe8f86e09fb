//! loom model of the waiting primitive (`park::WaitWord`): no lost wake-up.
//!
//! Under `cfg(loom)` the futex is a loom Mutex + Condvar with no timeout, so a waiter that
//! sleeps through the only wake-up it will ever get deadlocks the model, which loom reports.
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom_park --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use multiproc_sync::park::{SpinBudget, WaitStrategy, WaitWord};
use std::time::Duration;

const SLICE: Duration = Duration::from_millis(10);

/// Explores with at most 3 preemptions (three threads, a mutex and a condvar per park: the
/// unbounded space does not finish in CI time). Store buffering is explored regardless.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Two waiters wait for a flag; one waker sets it and calls `wake_all`.
#[test]
fn two_waiters_one_waker_wake_all() {
    model(|| {
        let w = Arc::new(WaitWord::new());
        let flag = Arc::new(AtomicU32::new(0));
        let mut hs = Vec::new();
        for s in [WaitStrategy::Park, WaitStrategy::SpinThenPark] {
            let (w, flag) = (w.clone(), flag.clone());
            hs.push(thread::spawn(move || {
                let r = w.wait_until(
                    s,
                    &SpinBudget::new(),
                    None,
                    SLICE,
                    // Acquire: pairs with the waker's Release store.
                    || (flag.load(Ordering::Acquire) != 0).then_some(()),
                    || None::<()>,
                );
                assert!(r.is_ok());
            }));
        }
        flag.store(1, Ordering::Release);
        w.wake_all();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(w.waiters(), 0);
    });
}

/// Two waiters each take one unit (a CAS); one waker adds the units one at a time, each followed
/// by `wake_one`: every unit reaches a waiter (no wake-up is spent on nobody while a waiter
/// sleeps).
#[test]
fn two_waiters_one_waker_wake_one_per_unit() {
    model(|| {
        let w = Arc::new(WaitWord::new());
        let units = Arc::new(AtomicU32::new(0));
        let mut hs = Vec::new();
        for _ in 0..2 {
            let (w, units) = (w.clone(), units.clone());
            hs.push(thread::spawn(move || {
                let take = || {
                    // AcqRel/Acquire: the units carry no data; the CAS keeps the count exact.
                    units
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .ok()
                        .map(|_| ())
                };
                let r = w.wait_until(
                    WaitStrategy::Park,
                    &SpinBudget::new(),
                    None,
                    SLICE,
                    take,
                    || None::<()>,
                );
                assert!(r.is_ok());
            }));
        }
        for _ in 0..2 {
            units.fetch_add(1, Ordering::Release);
            w.wake_one();
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(units.load(Ordering::Relaxed), 0);
    });
}
