//! Sync workloads of the comparison bench: `event_pingpong`.
//!
//! `event_pingpong`: two processes pinned to CPUs 0 and 1 alternate on two Events, exactly as
//! `benches/python/mp_bench.py event_pingpong` does. A sets e1 and waits for e2. B waits for e1,
//! clears it and sets e2. A clears e2 and starts over. e1 is cleared before e2 is set, and e2 before
//! the next `e1.set()`, so no wake-up is lost. The figure is round trips per second.
//!
//! Wiring (lead-owned main.rs): `mod w_sync2;`, `w_sync2::run(&cfg, &mut results);`, and
//! `"event_pingpong"` in `WORKLOADS`.

use crate::harness::{fork_pinned, pin_to_cpu};
use crate::{Config, Record, python};
use multiproc::Event;
use std::time::{Duration, Instant};

const WARMUP: u64 = 1000;
/// How long either side waits for the other before the run is declared failed.
const STALL: Duration = Duration::from_secs(30);

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    if cfg.wants("event_pingpong") {
        let n = if cfg.quick { 20_000 } else { 200_000 };
        match event_pingpong(n) {
            Ok(v) => out.push(Record::new("event_pingpong", "multiproc", v, "rt/s")),
            Err(e) => eprintln!("event_pingpong multiproc: {e}"),
        }
        out.extend(python::run("event_pingpong", cfg.quick, &[]));
    }
}

/// `n` round trips (after a warm-up) between this process (CPU 0) and a forked child (CPU 1).
/// Returns round trips per second.
pub fn event_pingpong(n: u64) -> Result<f64, String> {
    let e1 = Event::new().map_err(|e| e.to_string())?;
    let e2 = Event::new().map_err(|e| e.to_string())?;
    let total = WARMUP + n;
    let mut child = fork_pinned(Some(1), || {
        for _ in 0..total {
            if !e1.wait_timeout(STALL) {
                return 1;
            }
            e1.clear();
            e2.set();
        }
        0
    });
    let saved = affinity();
    pin_to_cpu(0);
    let mut t0 = Instant::now();
    let mut ok = true;
    for i in 0..total {
        if i == WARMUP {
            t0 = Instant::now();
        }
        e1.set();
        if !e2.wait_timeout(STALL) {
            ok = false;
            break;
        }
        e2.clear();
    }
    let dt = t0.elapsed();
    if let Some(set) = saved {
        // SAFETY: restores this process's own affinity from a set sched_getaffinity filled.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    let code = child.wait(Duration::from_secs(60))?;
    if !ok || code != 0 {
        return Err(format!("the child stopped answering (exit {code})"));
    }
    Ok(n as f64 / dt.as_secs_f64())
}

fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer and size, for this process (pid 0).
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}
