//! Issue 19 figures: creation rate, RSS, fds and mappings per object, one segment per Value
//! (`Value::new_segment`, what `Value::new` did before arenas) vs arena slots (`Value::new`,
//! the process's arena). Run in release:
//! `cargo run --release -p multiproc-sync --example arena_measure`
#![allow(missing_docs)]

use multiproc_sync::{Arena, RawValue, Value};
use std::time::Instant;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn measure<O>(what: &str, n: usize, mut make: impl FnMut(u64) -> O) {
    let (r0, f0, m0) = (rss_bytes(), fds(), maps());
    let t = Instant::now();
    let objs: Vec<O> = (0..n as u64).map(&mut make).collect();
    let dt = t.elapsed();
    let (r1, f1, m1) = (rss_bytes(), fds(), maps());
    println!(
        "| {what} | {n} | {:.0} k/s | {:.0} B | {} | {} |",
        n as f64 / dt.as_secs_f64() / 1e3,
        (r1.saturating_sub(r0)) as f64 / n as f64,
        f1 - f0,
        m1 - m0,
    );
    let t = Instant::now();
    drop(objs);
    eprintln!("  ({what}: dropped in {:?})", t.elapsed());
}

fn main() {
    println!("| object | created | rate | RSS per object | fds added | mappings added |");
    println!("|---|---|---|---|---|---|");
    measure("`Value::new_segment(u64)` (own segment)", 10_000, |i| {
        Value::new_segment(i).unwrap()
    });
    measure("`RawValue::new_segment(u64)` (own segment)", 10_000, |i| {
        RawValue::new_segment(i).unwrap()
    });
    measure("`Value::new(u64)` (the process's arena)", 1_000_000, |i| {
        Value::new(i).unwrap()
    });
    let arena = Arena::new();
    measure("`RawValue::new_in(&arena, u64)`", 1_000_000, |i| {
        RawValue::new_in(&arena, i).unwrap()
    });
    measure("`Lock::new()` (the process's arena)", 1_000_000, |_| {
        multiproc_sync::Lock::new().unwrap()
    });
    shared_bytes_per_value(1_000_000);
    uncontended_lock_interleaved();
}

/// ns per uncontended `get_lock()` + drop, a Value in its own segment and one in the arena,
/// measured in turns in one process (the bench's `lock_uncontended` rows run one after the
/// other, so the first pays for warming up).
fn uncontended_lock_interleaved() {
    fn ns_per_lock(v: &Value<u64>, n: u64) -> f64 {
        for _ in 0..10_000 {
            drop(v.get_lock());
        }
        let t = std::time::Instant::now();
        for _ in 0..n {
            let g = v.get_lock();
            std::hint::black_box(&g);
        }
        t.elapsed().as_nanos() as f64 / n as f64
    }
    let own = Value::new_segment(0u64).unwrap();
    let arena = Value::new(0u64).unwrap();
    println!();
    println!("| turn | uncontended get_lock, own segment | same, arena slot |");
    println!("|---|---|---|");
    for turn in 1..=4 {
        let a = ns_per_lock(&own, 5_000_000);
        let b = ns_per_lock(&arena, 5_000_000);
        println!("| {turn} | {a:.2} ns | {b:.2} ns |");
    }
}

/// Shared memory per `Value<u64>`: the mapped length of the arena segments (control block,
/// process table, slots with their records) over the values they hold, all segments full but
/// the last; plus the 4-byte local counter per slot that each holding process keeps.
fn shared_bytes_per_value(n: usize) {
    let arena = Arena::new();
    let vals: Vec<Value<u64>> = (0..n as u64)
        .map(|i| Value::new_in(&arena, i).unwrap())
        .collect();
    let seg_len = vals[0].segment().mapped_len();
    let segs = arena.segments();
    let st = arena.check().unwrap();
    let shared = (segs * seg_len) as f64 / n as f64;
    let full = seg_len as f64 / (st.slots as f64 / segs as f64);
    println!();
    println!(
        "shared memory per Value<u64>: {shared:.1} B ({n} values in {segs} segments of {seg_len} B; \
         a full segment: {full:.1} B per value), {:.1} B beyond the 8 data bytes; \
         + 4 B local counter per slot in each holding process = {:.1} B",
        shared - 8.0,
        shared + 4.0
    );
    drop(vals);
}
