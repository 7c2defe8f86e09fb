//! Single-process CPU cost of the ring operations (no cross-core traffic): a quick check of
//! the per-record instruction budget. `cargo run --release -p multiproc-ring --example ring_cpu_cost`
use multiproc_ring::{MpmcRing, SpscRing};
use std::time::Instant;

fn main() {
    let ring = SpscRing::new(1 << 16).expect("ring");
    let mut tx = ring.producer().expect("producer");
    let mut rx = ring.consumer().expect("consumer");
    let recs = [[7u8; 8]; 64];
    let n = 200_000u64;
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n {
        tx.try_push_batch(&recs).expect("push");
        rx.try_pop_batch(64, |r| acc += u64::from(r[0]))
            .expect("pop");
    }
    println!(
        "spsc batch64 push+pop: {:.2} ns/record",
        t.elapsed().as_nanos() as f64 / (n * 64) as f64
    );
    let mut v = Vec::with_capacity(8);
    let t = Instant::now();
    for _ in 0..n * 8 {
        tx.try_push(&[7u8; 8]).expect("push");
        rx.try_pop_into(&mut v).expect("pop");
    }
    println!(
        "spsc 1by1 push+pop: {:.2} ns/record",
        t.elapsed().as_nanos() as f64 / (n * 8) as f64
    );
    let q = MpmcRing::new(1024, 40).expect("ring");
    let t = Instant::now();
    for _ in 0..n * 8 {
        q.try_push(&[1u8; 8]).expect("push");
        q.try_pop_into(&mut v).expect("pop");
    }
    println!(
        "mpmc push+pop: {:.2} ns/record",
        t.elapsed().as_nanos() as f64 / (n * 8) as f64
    );
    std::hint::black_box(acc);
}
