//! Criterion benches of the pool (2 spawned workers): `apply` round trip, a batch of
//! `apply_async`, `map` of 10,000 items with the default chunksize and with chunksize 1, `map`
//! of 1,000,000 trivial items (default chunksize), and the `apply` round trip of pools built
//! with each wait strategy (`apply_rtt_<strategy>`).
//!
//! `cargo bench -p multiproc-pool --bench pool`

use criterion::{Criterion, Throughput};
use multiproc_pool::{Pool, WaitStrategy};
use std::time::Duration;

#[multiproc_process::task(crate = multiproc_process)]
fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn pool_benches(c: &mut Criterion) {
    let pool = Pool::builder().processes(2).build().expect("pool");
    pool.map_chunked(square, 0..200u64, 1).expect("warm-up");
    let mut g = c.benchmark_group("pool");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("apply_rtt", |b| {
        b.iter(|| pool.apply(square, 7).expect("apply"))
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("apply_async_1000", |b| {
        b.iter(|| {
            let rs: Vec<_> = (0..1000u64)
                .map(|i| pool.apply_async(square, i).expect("submit"))
                .collect();
            for r in rs {
                r.get().expect("get");
            }
        })
    });
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("map_10k_default_chunksize", |b| {
        b.iter(|| pool.map(square, 0..10_000u64).expect("map"))
    });
    g.bench_function("map_10k_chunksize_1", |b| {
        b.iter(|| pool.map_chunked(square, 0..10_000u64, 1).expect("map"))
    });
    g.throughput(Throughput::Elements(1_000_000));
    g.sample_size(10);
    g.bench_function("map_1M_trivial", |b| {
        b.iter(|| pool.map(square, 0..1_000_000u64).expect("map"))
    });
    g.finish();
    pool.close();
    pool.join().expect("join");
    let mut g = c.benchmark_group("pool");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (name, w) in [
        ("apply_rtt_spin", WaitStrategy::Spin),
        ("apply_rtt_spin_yield", WaitStrategy::SpinYield),
        ("apply_rtt_spin_park", WaitStrategy::SpinPark),
        ("apply_rtt_park", WaitStrategy::Park),
    ] {
        let pool = Pool::builder().processes(2).wait(w).build().expect("pool");
        pool.wait_ready(Duration::from_secs(30)).expect("ready");
        pool.map_chunked(square, 0..200u64, 1).expect("warm-up");
        g.bench_function(name, |b| b.iter(|| pool.apply(square, 7).expect("apply")));
        pool.close();
        pool.join().expect("join");
    }
    g.finish();
}

fn main() {
    multiproc_process::init();
    let mut c = Criterion::default().configure_from_args();
    pool_benches(&mut c);
    c.final_summary();
}
