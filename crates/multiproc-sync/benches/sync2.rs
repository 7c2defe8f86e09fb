//! Criterion benches of the uncontended paths: lock/release, guard lock, semaphore, event.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_sync::park::WaitStrategy;
use multiproc_sync::{Event, Lock, RLock, Semaphore};
use multiproc_testutil::fork;
use std::hint::black_box;
use std::time::{Duration, Instant};

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

/// Cross-process: one round trip on two Events with a forked child (not pinned here; the
/// pinned figure is `multiproc-bench --only event_pingpong`).
fn event_pingpong(c: &mut Criterion) {
    event_pingpong_with(c, "event_pingpong_round_trip", WaitStrategy::SpinThenPark);
    event_pingpong_with(c, "event_pingpong_round_trip_park", WaitStrategy::Park);
}

fn event_pingpong_with(c: &mut Criterion, name: &str, st: WaitStrategy) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut e1 = Event::new().unwrap();
            let mut e2 = Event::new().unwrap();
            e1.set_wait_strategy(st);
            e2.set_wait_strategy(st);
            // The child only uses the two pre-built events and `_exit`s.
            let child = fork(|| {
                for _ in 0..iters {
                    if !e1.wait_timeout(Duration::from_secs(30)) {
                        return 1;
                    }
                    e1.clear();
                    e2.set();
                }
                0
            });
            let t = Instant::now();
            for _ in 0..iters {
                e1.set();
                assert!(e2.wait_timeout(Duration::from_secs(30)), "child stopped");
                e2.clear();
            }
            let dt = t.elapsed();
            child.join_ok();
            dt
        })
    });
}

criterion_group!(benches, uncontended, event_pingpong);
criterion_main!(benches);
