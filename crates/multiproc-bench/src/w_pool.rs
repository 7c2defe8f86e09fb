//! Pool workloads (issue 7), multiproc vs Python's `multiprocessing.Pool`, both with 2 worker
//! processes:
//! * `pool_map_1M_trivial`: `map(square, 0..n)` with the default chunksize; items/s.
//! * `pool_map_chunk1`: the same with chunksize 1; items/s.
//! * `pool_apply_async`: n `apply_async(square, i)` submitted, then every result got; tasks/s.
//! * `pool_apply_rtt`: sequential `apply(square, i)`; microseconds each. With the default
//!   wait strategy (spin-park, the row compared with Python), and as rows of mode `spin`
//!   (`WaitStrategy::Spin`) and `block` (`WaitStrategy::Park`), beside `pipe_rtt_small`'s.
//! * `pool_map_heavy` / `pool_map_heavy_chunk1` (issue 13): `map` of 64 equal CPU-bound items
//!   (count the primes below n by trial division; n = 300k, 20k with `--quick`) with the
//!   default chunksize and with chunksize 1; items/s. Systems: multiproc, python-mp (the same
//!   function in Python: slow, it is Python) and rayon (`par_iter` on 2 threads: the limit a
//!   pool of processes can approach here).
//! * `pool_balance_{map,chunk1,imap,apply_async}` (issue 13): 64 such items (n at least 60k),
//!   items run per worker, max/min (1.0 is perfect; lower is better); and as system
//!   `multiproc-sleep-items` the same with 5 ms sleeps as items (equal wall time however
//!   loaded the machine is, so the figure shows the scheduling alone).
//!
//! As Python's side, each figure is taken on a pool whose workers are warmed up by a
//! `map(square, 0..200, chunksize 1)`. Workers are spawned (re-exec of this binary; its `main`
//! calls `multiproc::init()` first).

use crate::{Config, Record, python};
use multiproc::{Pool, WaitStrategy};
use std::time::Instant;

const PROCESSES: usize = 2;

/// Primes below `n`, by trial division (equal CPU cost for equal `n`), and the pid that
/// counted them.
#[multiproc::task]
fn count_primes(n: u64) -> (u64, u32) {
    (primes_below(n), std::process::id())
}

/// Out of line, so that every system (the pool's chunks of any size, rayon, the check) runs
/// the same machine code: inlined, each caller had its own copy of this loop, and their
/// speeds differed by up to 15% from one build to the next with no change to any of them
/// (code placement; session 14: `pool_map_heavy` 72-88 items/s across four commits that did
/// not touch it, `pool_map_heavy_chunk1` unchanged).
#[inline(never)]
fn primes_below(n: u64) -> u64 {
    let mut count = 0;
    for k in 2..n {
        let mut d = 2;
        let mut prime = true;
        while d * d <= k {
            if k % d == 0 {
                prime = false;
                break;
            }
            d += 1;
        }
        count += prime as u64;
    }
    count
}

const HEAVY_ITEMS: usize = 64;

/// An item of equal wall time whatever the machine's load (a 5 ms sleep), and its pid.
#[multiproc::task]
fn sleep_item(n: u64) -> (u64, u32) {
    std::thread::sleep(std::time::Duration::from_millis(5));
    (n, std::process::id())
}

fn heavy_n(quick: bool) -> u64 {
    if quick { 20_000 } else { 300_000 }
}

/// A ready pool (every worker up and warm).
fn ready_pool() -> Result<Pool, String> {
    let pool = Pool::builder()
        .processes(PROCESSES)
        .build()
        .map_err(|e| e.to_string())?;
    pool.wait_ready(std::time::Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    pool.map_chunked(square, 0..(PROCESSES as u64 * 100), 1)
        .map_err(|e| e.to_string())?;
    Ok(pool)
}

/// `map` of 64 heavy items; items/s.
pub fn heavy_rate(n: u64, chunksize: Option<usize>) -> Result<f64, String> {
    let pool = ready_pool()?;
    let items = std::iter::repeat_n(n, HEAVY_ITEMS);
    let t = Instant::now();
    let out = match chunksize {
        Some(c) => pool.map_chunked(count_primes, items, c),
        None => pool.map(count_primes, items),
    }
    .map_err(|e| e.to_string())?;
    let s = t.elapsed().as_secs_f64();
    let want = primes_below(n);
    if out.len() != HEAVY_ITEMS || out.iter().any(|(c, _)| *c != want) {
        return Err("wrong results".into());
    }
    pool.close();
    pool.join().map_err(|e| e.to_string())?;
    Ok(HEAVY_ITEMS as f64 / s)
}

/// The same 64 items on rayon (2 threads); items/s.
pub fn heavy_rate_rayon(n: u64, chunk1: bool) -> Result<f64, String> {
    use rayon::prelude::*;
    let tp = rayon::ThreadPoolBuilder::new()
        .num_threads(PROCESSES)
        .build()
        .map_err(|e| e.to_string())?;
    let items = vec![n; HEAVY_ITEMS];
    let want = primes_below(n);
    let t = Instant::now();
    let out: Vec<u64> = tp.install(|| {
        if chunk1 {
            items
                .par_iter()
                .with_max_len(1)
                .map(|&n| primes_below(n))
                .collect()
        } else {
            items.par_iter().map(|&n| primes_below(n)).collect()
        }
    });
    let s = t.elapsed().as_secs_f64();
    if out.iter().any(|c| *c != want) {
        return Err("wrong results".into());
    }
    Ok(HEAVY_ITEMS as f64 / s)
}

fn max_min(pids: impl IntoIterator<Item = u32>) -> f64 {
    let mut per = std::collections::HashMap::<u32, usize>::new();
    for p in pids {
        *per.entry(p).or_default() += 1;
    }
    if per.len() < PROCESSES {
        return f64::INFINITY;
    }
    let max = per.values().copied().max().unwrap_or(0) as f64;
    let min = per.values().copied().min().unwrap_or(1) as f64;
    max / min
}

/// Items per worker, max/min, for each call kind on 64 items (`count_primes(n)`, or a 5 ms
/// sleep when `sleep`).
pub fn balance(n: u64, sleep: bool) -> Result<[(&'static str, f64); 4], String> {
    if sleep {
        balance_of(sleep_item, n)
    } else {
        balance_of(count_primes, n)
    }
}

fn balance_of<M, T>(task: T, n: u64) -> Result<[(&'static str, f64); 4], String>
where
    T: multiproc::process::Task<M, Args = u64, Output = (u64, u32)>,
{
    let pool = ready_pool()?;
    let e = |e: multiproc::PoolError| e.to_string();
    let e2 = |e: multiproc::SubmitError| e.to_string();
    let e3 = |e: multiproc::TaskError| e.to_string();
    let items = || std::iter::repeat_n(n, HEAVY_ITEMS);
    let map = pool.map(task, items()).map_err(e)?;
    let chunk1 = pool.map_chunked(task, items(), 1).map_err(e)?;
    let imap: Vec<(u64, u32)> = pool
        .imap(task, items(), 1)
        .map_err(e2)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let pending: Vec<_> = items()
        .map(|n| pool.apply_async(task, n))
        .collect::<Result<_, _>>()
        .map_err(e2)?;
    let apply: Vec<(u64, u32)> = pending
        .into_iter()
        .map(|r| r.get())
        .collect::<Result<_, _>>()
        .map_err(e3)?;
    pool.close();
    pool.join().map_err(|e| e.to_string())?;
    let r = |v: &[(u64, u32)]| max_min(v.iter().map(|x| x.1));
    Ok([
        ("pool_balance_map", r(&map)),
        ("pool_balance_chunk1", r(&chunk1)),
        ("pool_balance_imap", r(&imap)),
        ("pool_balance_apply_async", r(&apply)),
    ])
}

/// The trivial task.
#[multiproc::task]
fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn with_pool(f: impl FnOnce(&Pool) -> Result<f64, String>) -> Result<f64, String> {
    with_pool_waiting(WaitStrategy::SpinPark, f)
}

/// [`with_pool`] for a pool whose hand-offs wait as `wait` says.
fn with_pool_waiting(
    wait: WaitStrategy,
    f: impl FnOnce(&Pool) -> Result<f64, String>,
) -> Result<f64, String> {
    let pool = Pool::builder()
        .processes(PROCESSES)
        .wait(wait)
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
    apply_rtt_us_waiting(n, WaitStrategy::SpinPark)
}

/// [`apply_rtt_us`] on a pool built with `.wait(wait)`.
pub fn apply_rtt_us_waiting(n: u64, wait: WaitStrategy) -> Result<f64, String> {
    with_pool_waiting(wait, |pool| {
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
    if cfg.wants("pool_apply_rtt") {
        // The same round trip in the pipe's other wait modes (rows beside `pipe_rtt_small`'s
        // `spin` and `block`; the row without a mode above is the default, spin-park). Under
        // `Spin` the caller and the worker it talks to spin (an idle worker parks after 2 ms):
        // fewer calls (milliseconds each when the spinners outnumber the idle CPUs).
        for (mode, wait, n) in [
            ("spin", WaitStrategy::Spin, if q { 200 } else { 1_000 }),
            ("block", WaitStrategy::Park, if q { 2_000 } else { 10_000 }),
        ] {
            match apply_rtt_us_waiting(n, wait) {
                Ok(v) => {
                    out.push(Record::new("pool_apply_rtt", "multiproc", v, "us").with_mode(mode))
                }
                Err(e) => eprintln!("pool_apply_rtt ({mode}) multiproc: {e}"),
            }
        }
    }
    let n = heavy_n(q);
    for (name, chunk1) in [("pool_map_heavy", false), ("pool_map_heavy_chunk1", true)] {
        if !cfg.wants(name) {
            continue;
        }
        match heavy_rate(n, chunk1.then_some(1)) {
            Ok(v) => out.push(Record::new(name, "multiproc", v, "items/s")),
            Err(e) => eprintln!("{name} multiproc: {e}"),
        }
        match heavy_rate_rayon(n, chunk1) {
            Ok(v) => out.push(Record::new(name, "rayon", v, "items/s")),
            Err(e) => eprintln!("{name} rayon: {e}"),
        }
        out.extend(python::run(name, cfg.quick, &py));
    }
    if cfg.wants("pool_balance_map") {
        // Items of a few ms even with --quick: with 1 ms items the figure measures how soon
        // the parent's threads get a CPU on a loaded 2-CPU machine, not the scheduling.
        for (sleep, system) in [(false, "multiproc"), (true, "multiproc-sleep-items")] {
            match balance(n.max(60_000), sleep) {
                Ok(rs) => {
                    for (name, v) in rs {
                        out.push(Record::new(name, system, v, "max/min"));
                    }
                }
                Err(e) => eprintln!("pool_balance {system}: {e}"),
            }
        }
    }
}
