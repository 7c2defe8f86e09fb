//! loom model of the SPSC ring on heap memory: every interleaving of a producer and a consumer
//! (index caching, wrap markers, publication order, the park/wake handshake).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-ring --test loom_spsc --release`
#![cfg(loom)]

use loom::thread;
use multiproc_ring::{PopError, PushError, SpscRing, WaitStrategy};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

#[test]
fn records_arrive_in_order_across_a_wrap() {
    model(|| {
        // 64 bytes: records of 20 bytes take 32; the third wraps.
        let ring = SpscRing::new_heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let h = thread::spawn(move || {
            for i in 0..3u8 {
                loop {
                    match tx.try_push(&[i; 20]) {
                        Ok(()) => break,
                        Err(PushError::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        let mut v = Vec::new();
        for i in 0..3u8 {
            loop {
                match rx.try_pop_into(&mut v) {
                    Ok(_) => break,
                    Err(PopError::Empty) => thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(v, [i; 20]);
        }
        h.join().unwrap();
    });
}

#[test]
fn blocking_pop_with_park_is_woken_and_sees_close() {
    model(|| {
        let ring = SpscRing::new_heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(WaitStrategy::Park);
        let h = thread::spawn(move || {
            tx.try_push(b"a").unwrap();
            drop(tx); // close
        });
        let mut v = Vec::new();
        rx.pop_into(&mut v).unwrap();
        assert_eq!(v, b"a");
        assert_eq!(rx.pop_into(&mut v), Err(PopError::Disconnected));
        h.join().unwrap();
    });
}

/// Deferred publication against the consumer's park path: the producer defers two records
/// (publishing only if it sees a sleeper), then flushes; a parking consumer must get both, in
/// order, and never sleep past the flush (the flush's fence pairs with the park's fence).
#[test]
fn deferred_records_reach_a_parking_consumer_after_flush() {
    model(|| {
        let ring = SpscRing::new_heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(WaitStrategy::Park);
        let h = thread::spawn(move || {
            tx.push_deferred(b"a").unwrap();
            tx.push_deferred(b"b").unwrap();
            tx.flush();
            tx
        });
        let mut v = Vec::new();
        rx.pop_into(&mut v).unwrap();
        assert_eq!(v, b"a");
        rx.pop_into(&mut v).unwrap();
        assert_eq!(v, b"b");
        drop(h.join().unwrap());
    });
}

/// Flush on drop: a deferred record is published before the side closes, so the consumer sees
/// it, then `Disconnected`.
#[test]
fn deferred_record_is_flushed_on_drop() {
    model(|| {
        let ring = SpscRing::new_heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(WaitStrategy::Park);
        let h = thread::spawn(move || {
            tx.push_deferred(b"z").unwrap();
            drop(tx);
        });
        let mut v = Vec::new();
        rx.pop_into(&mut v).unwrap();
        assert_eq!(v, b"z");
        assert_eq!(rx.pop_into(&mut v), Err(PopError::Disconnected));
        h.join().unwrap();
    });
}
