//! loom model of the Lock and RLock algorithms (on heap memory).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom_lock --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use multiproc_sync::lock::LockState;
use multiproc_sync::rlock::RLockState;

/// A non-atomic increment (Relaxed load + store): loses updates unless the lock excludes.
fn bump(c: &AtomicUsize) {
    let v = c.load(Ordering::Relaxed);
    c.store(v + 1, Ordering::Relaxed);
}

#[test]
fn lock_excludes_anonymous_and_guard_holders() {
    loom::model(|| {
        let l = Arc::new(LockState::new());
        let c = Arc::new(AtomicUsize::new(0));
        let (l2, c2) = (l.clone(), c.clone());
        let t = thread::spawn(move || {
            assert!(l2.acquire_anon(None));
            bump(&c2);
            l2.release().unwrap();
        });
        // Guard mode: tagged with a (fake) pid.
        assert_eq!(l.acquire_tagged(7, 7, None), Some(false));
        bump(&c);
        assert!(l.release_tagged(7));
        t.join().unwrap();
        assert_eq!(c.load(Ordering::Relaxed), 2);
        assert!(!l.is_locked());
        assert!(l.release().is_err());
    });
}

#[test]
fn lock_released_by_another_thread_hands_over() {
    loom::model(|| {
        let l = Arc::new(LockState::new());
        assert!(l.try_acquire_anon());
        let l2 = l.clone();
        let t = thread::spawn(move || l2.release().unwrap());
        assert!(l.acquire_anon(None));
        t.join().unwrap();
        assert!(l.is_locked());
    });
}

#[test]
fn rlock_excludes_and_counts_recursion() {
    loom::model(|| {
        let l = Arc::new(RLockState::new());
        let c = Arc::new(AtomicUsize::new(0));
        let (l2, c2) = (l.clone(), c.clone());
        let t = thread::spawn(move || {
            l2.acquire(2, 2, None);
            bump(&c2);
            l2.release(2).unwrap();
        });
        l.acquire(1, 1, None);
        l.acquire(1, 1, None);
        assert!(l.release(2).is_err());
        bump(&c);
        l.release(1).unwrap();
        l.release(1).unwrap();
        assert!(l.release(1).is_err());
        t.join().unwrap();
        assert_eq!(c.load(Ordering::Relaxed), 2);
    });
}
