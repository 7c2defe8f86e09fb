//! Workloads of the collections layer: `dict_update` — N processes (2, pinned to CPUs 0 and 1)
//! each do `n` read-modify-writes `update("counter", |v| v - 1)` of one `SharedDict` key; total
//! ops/s. Python's side is `Manager().dict()` with a `Lock` around `d[key] -= 1`.

use crate::harness::{fork_pinned, wait_all};
use crate::{Config, Record, python};
use multiproc::{RawValue, SharedDict, Value};
use std::time::{Duration, Instant};

/// Processes of `dict_update` (Python's script defaults to the same 2).
const PROCS: usize = 2;

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    if cfg.wants("dict_update") {
        let n = if cfg.quick { 500_000 } else { 2_000_000 };
        match dict_update(PROCS, n) {
            Ok(v) => out.push(Record::new("dict_update", "multiproc", v, "ops/s")),
            Err(e) => crate::failed("dict_update", "multiproc", &e.to_string()),
        }
        out.extend(python::run("dict_update", cfg.quick, &[]));
    }
}

/// `procs` processes each do `n` `update(key, v - 1)`; returns total ops/s.
pub fn dict_update(procs: usize, n: u64) -> Result<f64, String> {
    let d: SharedDict<String, i64> = SharedDict::new().map_err(|e| e.to_string())?;
    let total = procs as i64 * n as i64;
    d.insert(&"counter".to_string(), &total)
        .map_err(|e| e.to_string())?;
    let go = RawValue::new(0u32).map_err(|e| e.to_string())?;
    let ready = Value::new(0u32).map_err(|e| e.to_string())?;
    let mut kids: Vec<_> = (0..procs)
        .map(|cpu| {
            let (d, go, ready) = (d.clone(), go.clone(), ready.clone());
            fork_pinned(Some(cpu), move || {
                if let Ok(mut r) = ready.get_lock() {
                    *r += 1;
                }
                while go.load() == 0 {
                    std::hint::spin_loop();
                }
                for _ in 0..n {
                    if d.update("counter", |v| v.unwrap_or(0) - 1).is_err() {
                        return 3;
                    }
                }
                0
            })
        })
        .collect();
    while ready.load().map_err(|e| e.to_string())? < procs as u32 {
        std::thread::sleep(Duration::from_micros(100));
    }
    let t = Instant::now();
    go.store(1);
    wait_all(&mut kids, Duration::from_secs(300))?;
    let secs = t.elapsed().as_secs_f64();
    let left = d
        .get("counter")
        .map_err(|e| e.to_string())?
        .unwrap_or(i64::MIN);
    if left != 0 {
        return Err(format!("lost updates: counter is {left}, expected 0"));
    }
    Ok(total as f64 / secs)
}
