//! Criterion benches of the foundation: uncontended `get_lock`, and two processes (pinned to
//! CPUs 0 and 1) incrementing one `Value` under its lock, timed with `iter_custom`.

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc::{RawValue, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn lock_uncontended(c: &mut Criterion) {
    let v = Value::new(0u64).unwrap();
    c.bench_function("lock_uncontended", |b| {
        b.iter(|| {
            let mut g = v.get_lock().unwrap();
            *g += 1;
            black_box(&*g);
        })
    });
    let r = RawValue::new(0u64).unwrap();
    c.bench_function("rawvalue_load_store", |b| {
        b.iter(|| r.store(black_box(r.load() + 1)))
    });
}

/// Time for `iters` increments split over two forked processes.
fn two_process_incr(iters: u64) -> Duration {
    let v = Value::new(0i64).unwrap();
    let go = RawValue::new(0u32).unwrap();
    let per = iters.div_ceil(2);
    let mut pids = Vec::new();
    for cpu in 0..2 {
        let (v, go) = (v.clone(), go.clone());
        // SAFETY: the bench process is single-threaded (criterion without rayon).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            pin(cpu);
            while go.load() == 0 {
                std::hint::spin_loop();
            }
            for _ in 0..per {
                *v.get_lock().unwrap() += 1;
            }
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        pids.push(pid);
    }
    let t = Instant::now();
    go.store(1);
    for pid in pids {
        // SAFETY: reaping our own children.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    let d = t.elapsed();
    assert_eq!(v.load().unwrap(), 2 * per as i64);
    d
}

fn value_lock_incr(c: &mut Criterion) {
    let mut g = c.benchmark_group("value_lock_incr");
    g.sample_size(10);
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("2proc", |b| b.iter_custom(two_process_incr));
    g.finish();
}

criterion_group!(benches, lock_uncontended, value_lock_incr);
criterion_main!(benches);
