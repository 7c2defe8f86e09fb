//! loom model of the futex-based RobustMutex (on heap memory, with fake thread ids and a fake
//! liveness check).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom_mutex --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use multiproc_sync::mutex::{LockOutcome, Locker, MutexError, RobustMutex};

/// A non-atomic increment (Relaxed load + store): loses updates unless the lock excludes.
fn bump(c: &AtomicUsize) {
    let v = c.load(Ordering::Relaxed);
    c.store(v + 1, Ordering::Relaxed);
}

const A: Locker = Locker { tid: 11, me: 111 };
const B: Locker = Locker { tid: 22, me: 222 };
const C: Locker = Locker { tid: 33, me: 333 };

fn all_alive(_: u32, _: u64) -> bool {
    true
}

#[test]
fn two_lockers_exclude_each_other_and_see_each_others_writes() {
    loom::model(|| {
        let m = Arc::new(RobustMutex::new());
        let c = Arc::new(AtomicUsize::new(0));
        let (m2, c2) = (m.clone(), c.clone());
        let t = thread::spawn(move || {
            assert_eq!(m2.lock_as(B, None, &all_alive), Ok(LockOutcome::Acquired));
            bump(&c2);
            m2.unlock_as(B);
        });
        assert_eq!(m.lock_as(A, None, &all_alive), Ok(LockOutcome::Acquired));
        bump(&c);
        m.unlock_as(A);
        t.join().unwrap();
        assert_eq!(c.load(Ordering::Relaxed), 2);
        assert!(!m.is_locked());
    });
}

#[test]
fn relock_by_the_holder_is_deadlock_and_try_lock_by_another_would_block() {
    loom::model(|| {
        let m = Arc::new(RobustMutex::new());
        assert_eq!(m.try_lock_as(A, &all_alive), Ok(LockOutcome::Acquired));
        assert_eq!(m.lock_as(A, None, &all_alive), Err(MutexError::Deadlock));
        let m2 = m.clone();
        let t = thread::spawn(move || m2.try_lock_as(B, &all_alive));
        assert_eq!(t.join().unwrap(), Err(MutexError::WouldBlock));
        m.unlock_as(A);
        // An unlock by a non-holder changes nothing.
        assert_eq!(m.try_lock_as(B, &all_alive), Ok(LockOutcome::Acquired));
        m.unlock_as(A);
        assert!(m.is_locked());
        m.unlock_as(B);
        assert!(!m.is_locked());
    });
}

#[test]
fn a_dead_holder_is_taken_over_by_exactly_one_of_two_waiters() {
    loom::model(|| {
        let m = Arc::new(RobustMutex::new());
        let c = Arc::new(AtomicUsize::new(0));
        // A takes the lock and "dies" (never unlocks); only A is dead.
        assert_eq!(m.lock_as(A, None, &all_alive), Ok(LockOutcome::Acquired));
        let a_dead = |tid: u32, _: u64| tid != A.tid;
        let (m2, c2) = (m.clone(), c.clone());
        let t = thread::spawn(move || {
            let r = m2.try_lock_as(B, &a_dead);
            if r.is_ok() {
                bump(&c2);
                m2.unlock_as(B);
            }
            r
        });
        let mine = m.try_lock_as(C, &a_dead);
        if mine.is_ok() {
            bump(&c);
            m.unlock_as(C);
        }
        let theirs = t.join().unwrap();
        // At most one took it over from A (the other saw it held by a live thread, or free
        // after the first one's unlock and took it normally).
        let both = [mine, theirs];
        let died = both
            .iter()
            .filter(|r| **r == Ok(LockOutcome::OwnerDied))
            .count();
        assert_eq!(died, 1);
        let got = both.iter().filter(|r| r.is_ok()).count();
        assert_eq!(c.load(Ordering::Relaxed), got);
        assert!(!m.is_locked());
    });
}
