//! Criterion benches of the uncontended paths: lock/release, guard lock, semaphore, event.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_sync::{Event, Lock, RLock, Semaphore};
use std::hint::black_box;

fn uncontended(c: &mut Criterion) {
    let lock = Lock::new().unwrap();
    c.bench_function("lock_acquire_release", |b| {
        b.iter(|| {
            black_box(lock.acquire(true));
            lock.release().unwrap();
        })
    });
    c.bench_function("lock_guard", |b| {
        b.iter(|| {
            let g = lock.lock().unwrap();
            black_box(&g);
        })
    });
    let rl = RLock::new().unwrap();
    c.bench_function("rlock_guard", |b| {
        b.iter(|| {
            let g = rl.lock().unwrap();
            black_box(&g);
        })
    });
    let sem = Semaphore::new(4).unwrap();
    c.bench_function("semaphore_acquire_release", |b| {
        b.iter(|| {
            black_box(sem.acquire(true));
            sem.release().unwrap();
        })
    });
    c.bench_function("semaphore_guard", |b| {
        b.iter(|| {
            let g = sem.acquire_guard().unwrap();
            black_box(&g);
        })
    });
    let ev = Event::new().unwrap();
    c.bench_function("event_set_wait_clear", |b| {
        b.iter(|| {
            ev.set();
            ev.wait();
            ev.clear();
        })
    });
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
