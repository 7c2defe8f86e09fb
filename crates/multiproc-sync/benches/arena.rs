//! Issue 19: creating Values in their own segment vs in an arena slot, and a locked increment
//! on each (the arena must not slow the lock down).
//! `cargo bench -p multiproc-sync --bench arena`
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_sync::{Arena, RawValue, Value};
use std::hint::black_box;
use std::time::Duration;

fn create(c: &mut Criterion) {
    let mut g = c.benchmark_group("objects_create");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("value_new_own_segment", |b| {
        b.iter(|| black_box(Value::new_segment(1u64).unwrap()))
    });
    let arena = Arena::new();
    // Keep one alive so the arena segment stays (create+drop of a slot, not of a segment).
    let _keep = Value::new_in(&arena, 0u64).unwrap();
    g.bench_function("value_new_in_arena", |b| {
        b.iter(|| black_box(Value::new_in(&arena, 1u64).unwrap()))
    });
    let _keep_raw = RawValue::new_in(&arena, 0u64).unwrap();
    g.bench_function("rawvalue_new_in_arena", |b| {
        b.iter(|| black_box(RawValue::new_in(&arena, 1u64).unwrap()))
    });
    g.finish();
}

fn lock_incr(c: &mut Criterion) {
    let own = Value::new_segment(0u64).unwrap();
    c.bench_function("value_lock_incr_own_segment", |b| {
        b.iter(|| *own.get_lock().unwrap() += 1)
    });
    let arena = Arena::new();
    let slot = Value::new_in(&arena, 0u64).unwrap();
    c.bench_function("value_lock_incr_arena", |b| {
        b.iter(|| *slot.get_lock().unwrap() += 1)
    });
}

criterion_group!(benches, create, lock_incr);
criterion_main!(benches);
