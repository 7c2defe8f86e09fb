//! Pool workloads (issue 7), multiproc vs Python's `multiprocessing.Pool`, both with 2 worker
//! processes:
//! * `pool_map_1M_trivial`: `map(square, 0..n)` with the default chunksize; items/s.
//! * `pool_map_chunk1`: the same with chunksize 1; items/s.
//! * `pool_apply_async`: n `apply_async(square, i)` submitted, then every result got; tasks/s.
//! * `pool_apply_rtt`: sequential `apply(square, i)`; microseconds each.
//!
//! As Python's side, each figure is taken on a pool whose workers are warmed up by a
//! `map(square, 0..200, chunksize 1)`. Workers are spawned (re-exec of this binary; its `main`
//! calls `multiproc::init()` first).

use crate::{Config, Record, python};
use multiproc::Pool;
use std::time::Instant;

const PROCESSES: usize = 2;

/// The trivial task.
#[multiproc::task]
fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn with_pool(f: impl FnOnce(&Pool) -> Result<f64, String>) -> Result<f64, String> {
    let pool = Pool::builder()
        .processes(PROCESSES)
        .build()
        .map_err(|e| e.to_string())?;
    pool.map_chunked(square, 0..(PROCESSES as u64 * 100), 1)
        .map_err(|e| e.to_string())?;
    let r = f(&pool);
    pool.close();
    pool.join().map_err(|e| e.to_string())?;
    r
}

fn check(out: &[u64], n: u64) -> Result<(), String> {
    if out.len() as u64 != n || out.last() != Some(&(n - 1).wrapping_mul(n - 1)) {
        return Err("wrong results".into());
    }
    Ok(())
}

/// `map` of `n` items (default chunksize if `chunksize` is None); items/s.
pub fn map_rate(n: u64, chunksize: Option<usize>) -> Result<f64, String> {
    with_pool(|pool| {
        let t = Instant::now();
        let out = match chunksize {
            Some(c) => pool.map_chunked(square, 0..n, c),
            None => pool.map(square, 0..n),
        }
        .map_err(|e| e.to_string())?;
        let s = t.elapsed().as_secs_f64();
        check(&out, n)?;
        Ok(n as f64 / s)
    })
}

/// `n` apply_async then every get; tasks/s.
pub fn apply_async_rate(n: u64) -> Result<f64, String> {
    with_pool(|pool| {
        let t = Instant::now();
        let pending: Vec<_> = (0..n)
            .map(|i| pool.apply_async(square, i))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut total = 0u64;
        for r in pending {
            total = total.wrapping_add(r.get().map_err(|e| e.to_string())?);
        }
        let s = t.elapsed().as_secs_f64();
        let want = (0..n).fold(0u64, |a, i| a.wrapping_add(i.wrapping_mul(i)));
        if total != want {
            return Err("wrong results".into());
        }
        Ok(n as f64 / s)
    })
}

/// Sequential `apply`; microseconds per round trip.
pub fn apply_rtt_us(n: u64) -> Result<f64, String> {
    with_pool(|pool| {
        let t = Instant::now();
        for i in 0..n {
            if pool.apply(square, i).map_err(|e| e.to_string())? != i.wrapping_mul(i) {
                return Err("wrong result".into());
            }
        }
        Ok(t.elapsed().as_secs_f64() / n as f64 * 1e6)
    })
}

type Measure = Box<dyn Fn() -> Result<f64, String>>;

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    let procs = PROCESSES.to_string();
    let py = ["--processes", procs.as_str()];
    let q = cfg.quick;
    let cases: [(&str, &str, Measure); 4] = [
        (
            "pool_map_1M_trivial",
            "items/s",
            Box::new(move || map_rate(if q { 200_000 } else { 1_000_000 }, None)),
        ),
        (
            "pool_map_chunk1",
            "items/s",
            Box::new(move || map_rate(if q { 10_000 } else { 50_000 }, Some(1))),
        ),
        (
            "pool_apply_async",
            "tasks/s",
            Box::new(move || apply_async_rate(if q { 10_000 } else { 50_000 })),
        ),
        (
            "pool_apply_rtt",
            "us",
            Box::new(move || apply_rtt_us(if q { 2_000 } else { 10_000 })),
        ),
    ];
    for (name, unit, f) in cases {
        if cfg.wants(name) {
            match f() {
                Ok(v) => out.push(Record::new(name, "multiproc", v, unit)),
                Err(e) => eprintln!("{name} multiproc: {e}"),
            }
            out.extend(python::run(name, cfg.quick, &py));
        }
    }
}
