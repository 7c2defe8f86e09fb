//! Workload `process_start_join`: start a trivial task in a new process and join it, one after
//! the other; processes per second, for each start method (`multiproc-spawn`, `multiproc-fork`,
//! `multiproc-forkserver`) against Python's (`python-mp-fork`, `-forkserver`, `-spawn`).
//!
//! Needs `multiproc::init()` as the first line of the bench's `main` (spawned children are the
//! bench binary itself).

use crate::{Config, Record, python};
use multiproc::{Process, StartMethod};
use std::time::Instant;

/// The trivial task.
#[multiproc::task]
fn noop() {}

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    if cfg.wants("process_start_join") {
        for (system, method, quick_n, n) in [
            ("multiproc-spawn", StartMethod::Spawn, 100, 400),
            ("multiproc-fork", StartMethod::Fork, 300, 1500),
            ("multiproc-forkserver", StartMethod::ForkServer, 300, 1500),
        ] {
            match start_join(method, if cfg.quick { quick_n } else { n }) {
                Ok(v) => out.push(Record::new("process_start_join", system, v, "procs/s")),
                Err(e) => crate::failed("process_start_join", system, &e.to_string()),
            }
        }
        out.extend(python::run("process_start_join", cfg.quick, &[]));
    }
}

/// `n` sequential start+join of [`noop`] with `method`, after one warm-up (which also starts the
/// fork server); processes per second.
pub fn start_join(method: StartMethod, n: u32) -> Result<f64, String> {
    one(method)?;
    let t = Instant::now();
    for _ in 0..n {
        one(method)?;
    }
    Ok(f64::from(n) / t.elapsed().as_secs_f64())
}

fn one(method: StartMethod) -> Result<(), String> {
    let mut p = Process::builder()
        .start_method(method)
        .spawn(noop, ())
        .map_err(|e| e.to_string())?;
    p.join().map_err(|e| e.to_string())
}
