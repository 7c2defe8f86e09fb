//! loom model of the MPMC ring on heap memory: claims by CAS on the slot word, index helping.
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p multiproc-ring --test loom_mpmc --release`
#![cfg(loom)]

use loom::thread;
use multiproc_ring::{MpmcRing, PopError, PushError};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

fn push(q: &MpmcRing, r: &[u8]) {
    loop {
        match q.try_push(r) {
            Ok(()) => return,
            Err(PushError::Full) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn pop(q: &MpmcRing) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        match q.try_pop_into(&mut v) {
            Ok(_) => return v,
            Err(PopError::Empty) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn two_producers_one_consumer_get_every_record_once() {
    model(|| {
        let q = MpmcRing::new_heap(2, 8).unwrap();
        let hs: Vec<_> = (0..2u8)
            .map(|p| {
                let q = q.clone();
                thread::spawn(move || push(&q, &[p]))
            })
            .collect();
        let mut got = vec![pop(&q)[0], pop(&q)[0]];
        got.sort();
        assert_eq!(got, [0, 1]);
        for h in hs {
            h.join().unwrap();
        }
    });
}

#[test]
fn one_producer_two_consumers_across_a_lap() {
    model(|| {
        let q = MpmcRing::new_heap(2, 8).unwrap();
        let q1 = q.clone();
        let c = thread::spawn(move || pop(&q1)[0]);
        for i in 0..3u8 {
            push(&q, &[i]);
        }
        let a = pop(&q)[0];
        let b = pop(&q)[0];
        let c = c.join().unwrap();
        let mut got = vec![a, b, c];
        got.sort();
        assert_eq!(got, [0, 1, 2]);
    });
}

/// A capacity that is not a power of two (lap-encoded positions: 0, 1, 2, then 4, 5, ...): a
/// producer crossing the lap boundary while two consumers pop, each record taken once.
#[test]
fn one_producer_two_consumers_across_a_lap_of_three() {
    model(|| {
        let q = MpmcRing::new_heap(3, 8).unwrap();
        let q1 = q.clone();
        let c = thread::spawn(move || pop(&q1)[0]);
        for i in 0..4u8 {
            push(&q, &[i]);
        }
        let mut got = vec![pop(&q)[0], pop(&q)[0], pop(&q)[0], c.join().unwrap()];
        got.sort();
        assert_eq!(got, [0, 1, 2, 3]);
    });
}

/// A producer that pushes and then closes (a queue's last producer dropping its handle right
/// after a put): the consumer gets the record, never `Disconnected` first. Before the fix a
/// pop that loaded the empty slot, then saw the ring closed, reported `Disconnected` with the
/// record in the ring (found by `wait_strategy.rs` in multiproc-channel, 2 runs in 12).
#[test]
fn a_push_then_close_is_drained_before_disconnected() {
    model(|| {
        let q = MpmcRing::new_heap(2, 8).unwrap();
        let q1 = q.clone();
        let p = thread::spawn(move || {
            push(&q1, &[7]);
            q1.close();
        });
        let mut v = Vec::new();
        let got = loop {
            match q.try_pop_into(&mut v) {
                Ok(_) => break Some(v[0]),
                Err(PopError::Empty) => thread::yield_now(),
                Err(PopError::Disconnected) => break None,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, Some(7), "Disconnected before the record was taken");
        p.join().unwrap();
    });
}
