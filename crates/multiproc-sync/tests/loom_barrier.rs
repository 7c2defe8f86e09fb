//! loom model of the Barrier algorithm (arrival CAS on a packed word, generation release).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom_barrier --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use multiproc_sync::barrier::{BarrierGeometry, BarrierState};

const G: BarrierGeometry = BarrierGeometry { parties: 2 };

#[test]
fn two_parties_get_distinct_indices_and_see_each_others_writes() {
    loom::model(|| {
        let b = Arc::new(BarrierState::new(2, None));
        let x = Arc::new(AtomicUsize::new(0));
        let y = Arc::new(AtomicUsize::new(0));
        let (b2, x2, y2) = (b.clone(), x.clone(), y.clone());
        let t = thread::spawn(move || {
            x2.store(1, Ordering::Relaxed);
            let i = b2.wait(G, None, None).unwrap();
            assert_eq!(y2.load(Ordering::Relaxed), 1);
            i
        });
        y.store(1, Ordering::Relaxed);
        let i = b.wait(G, None, None).unwrap();
        assert_eq!(x.load(Ordering::Relaxed), 1);
        let j = t.join().unwrap();
        assert_eq!(i + j, 1, "indices 0 and 1");
        assert!(!b.broken());
    });
}

#[test]
fn abort_breaks_a_waiting_party() {
    loom::model(|| {
        let b = Arc::new(BarrierState::new(2, None));
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(G, None, None));
        b.abort();
        assert!(t.join().unwrap().is_err());
        assert!(b.broken());
    });
}
