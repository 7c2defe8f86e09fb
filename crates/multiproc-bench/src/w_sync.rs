//! Workloads of the foundation layer: `value_lock_incr` and `lock_uncontended`.

use crate::harness::{fork_pinned, wait_all};
use crate::{Config, Record, python};
use multiproc::{RawValue, Value};
use std::time::{Duration, Instant};

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    if cfg.wants("value_lock_incr") {
        let n = if cfg.quick { 1_000_000 } else { 5_000_000 };
        match value_lock_incr(n) {
            Ok(v) => out.push(Record::new("value_lock_incr", "multiproc", v, "ops/s")),
            Err(e) => crate::failed("value_lock_incr", "multiproc", &e),
        }
        // `Value::new` places the counter in an arena slot (issue 19); the same with a
        // segment of its own (what `Value::new` did before), in the same run.
        match value_lock_incr_in(n, false) {
            Ok(v) => out.push(Record::new(
                "value_lock_incr",
                "multiproc-own-segment",
                v,
                "ops/s",
            )),
            Err(e) => crate::failed("value_lock_incr", "multiproc-own-segment", &e),
        }
        crate::w_anchor::raw_sync_row(out, n);
        out.extend(python::run("value_lock_incr", cfg.quick, &[]));
    }
    if cfg.wants("lock_uncontended") {
        let n = if cfg.quick { 2_000_000 } else { 20_000_000 };
        out.push(Record::new(
            "lock_uncontended",
            "multiproc",
            lock_uncontended(n),
            "ns",
        ));
        out.push(Record::new(
            "lock_uncontended",
            "multiproc-own-segment",
            lock_uncontended_in(n, false),
            "ns",
        ));
        out.extend(python::run("lock_uncontended", cfg.quick, &[]));
    }
}

/// Two processes pinned to CPUs 0 and 1 each do `n` increments under `get_lock()`; total ops/s.
pub fn value_lock_incr(n: u64) -> Result<f64, String> {
    value_lock_incr_in(n, true)
}

/// [`value_lock_incr`] with the counter in the process's arena (`Value::new`) or in a segment
/// of its own (`Value::new_segment`).
pub fn value_lock_incr_in(n: u64, arena: bool) -> Result<f64, String> {
    let v = if arena {
        Value::new(0i64)
    } else {
        Value::new_segment(0i64)
    }
    .map_err(|e| e.to_string())?;
    let go = RawValue::new(0u32).map_err(|e| e.to_string())?;
    let ready = Value::new(0u32).map_err(|e| e.to_string())?;
    let mut kids: Vec<_> = (0..2)
        .map(|cpu| {
            let (v, go, ready) = (v.clone(), go.clone(), ready.clone());
            fork_pinned(Some(cpu), move || {
                if let Ok(mut r) = ready.get_lock() {
                    *r += 1;
                }
                while go.load() == 0 {
                    std::hint::spin_loop();
                }
                for _ in 0..n {
                    match v.get_lock() {
                        Ok(mut g) => *g += 1,
                        Err(_) => return 3,
                    }
                }
                0
            })
        })
        .collect();
    while ready.load().map_err(|e| e.to_string())? < 2 {
        std::thread::sleep(Duration::from_micros(100));
    }
    let t = Instant::now();
    go.store(1);
    wait_all(&mut kids, Duration::from_secs(300))?;
    let secs = t.elapsed().as_secs_f64();
    let total = v.load().map_err(|e| e.to_string())?;
    if total != 2 * n as i64 {
        return Err(format!("lost increments: {total} != {}", 2 * n));
    }
    Ok(2.0 * n as f64 / secs)
}

/// ns per uncontended `get_lock()` + drop in one process.
pub fn lock_uncontended(n: u64) -> f64 {
    lock_uncontended_in(n, true)
}

/// [`lock_uncontended`] with the value in the process's arena or in a segment of its own.
pub fn lock_uncontended_in(n: u64, arena: bool) -> f64 {
    let v = if arena {
        Value::new(0u64)
    } else {
        Value::new_segment(0u64)
    }
    .expect("value");
    for _ in 0..10_000 {
        drop(v.get_lock());
    }
    let t = Instant::now();
    for _ in 0..n {
        let g = v.get_lock();
        std::hint::black_box(&g);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}
