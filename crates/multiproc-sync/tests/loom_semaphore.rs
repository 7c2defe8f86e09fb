//! loom model of the Semaphore algorithm (count + holder bitmap in one word, eventcount wake).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom_semaphore --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use multiproc_sync::semaphore::SemState;

fn bump(c: &AtomicUsize) {
    let v = c.load(Ordering::Relaxed);
    c.store(v + 1, Ordering::Relaxed);
}

#[test]
fn binary_semaphore_excludes_anonymous_and_guarded_takers() {
    loom::model(|| {
        let s = Arc::new(SemState::new(1, true));
        let c = Arc::new(AtomicUsize::new(0));
        let (s2, c2) = (s.clone(), c.clone());
        let t = thread::spawn(move || {
            assert!(s2.acquire(None));
            bump(&c2);
            s2.release(s2.geometry()).unwrap();
        });
        let slot = s.acquire_guarded(5, None, true).unwrap();
        bump(&c);
        s.release_guarded(slot, s.geometry());
        t.join().unwrap();
        assert_eq!(c.load(Ordering::Relaxed), 2);
        assert_eq!(s.value(), 1);
        assert!(s.release(s.geometry()).is_err(), "bounded: over-release");
    });
}

#[test]
fn release_from_another_thread_wakes_a_blocked_acquirer() {
    loom::model(|| {
        let s = Arc::new(SemState::new(0, false));
        let s2 = s.clone();
        let t = thread::spawn(move || s2.release(s2.geometry()).unwrap());
        assert!(s.acquire(None));
        t.join().unwrap();
        assert_eq!(s.value(), 0);
    });
}
