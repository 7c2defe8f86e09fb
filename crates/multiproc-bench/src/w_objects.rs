//! `objects_create` (issue 19): shared Values created per second and memory per Value, in the
//! process's arena (`Value::new`) and one segment each (`Value::new_segment`), against Python's `mp.Value` / `mp.RawValue` in the same run.
//!
//! Each row creates `n` objects, keeps them all alive, and reports the creation rate
//! (`objs/s`) and the growth of this process's resident set per object (`B/obj`: shared pages
//! touched + the handles), measured from `/proc/self/statm` around the loop. The objects are
//! created in a fresh child process so earlier workloads' memory does not blur the RSS figure.

use crate::harness::{fork_pinned, wait_all};
use crate::{Config, Record, python};
use multiproc::{RawValue, Value};
use std::time::{Duration, Instant};

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    if !cfg.wants("objects_create") {
        return;
    }
    // One segment (one fd) per Value: the default fd limit (20,000 here) caps this row.
    let own_n = if cfg.quick { 5_000 } else { 10_000 };
    let arena_n = if cfg.quick { 200_000 } else { 1_000_000 };
    // The `Value::new` rows first: the table's ratio column compares the other rows to them.
    let rows: [(&str, u64, Kind); 4] = [
        ("multiproc-Value", arena_n, Kind::ValueArena),
        ("multiproc-RawValue", arena_n, Kind::RawArena),
        ("multiproc-Value-own-segment", own_n, Kind::ValueOwn),
        ("multiproc-RawValue-own-segment", own_n, Kind::RawOwn),
    ];
    for (system, n, kind) in rows {
        match in_child(kind, n) {
            Ok((rate, bytes)) => {
                out.push(Record::new("objects_create", system, rate, "objs/s"));
                out.push(Record::new("objects_create", system, bytes, "B/obj"));
            }
            Err(e) => crate::failed("objects_create", system, &e),
        }
    }
    out.extend(python::run("objects_create", cfg.quick, &[]));
}

#[derive(Clone, Copy)]
enum Kind {
    ValueOwn,
    RawOwn,
    ValueArena,
    RawArena,
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Creates `n` objects of `kind` in a forked child; returns (objects/s, RSS bytes per object).
fn in_child(kind: Kind, n: u64) -> Result<(f64, f64), String> {
    let res = RawValue::new([0u64; 2]).map_err(|e| e.to_string())?;
    let r2 = res.clone();
    let mut kids = vec![fork_pinned(Some(0), move || {
        let (rss0, t) = (rss_bytes(), Instant::now());
        let ok = match kind {
            Kind::ValueOwn => keep((0..n).map(Value::new_segment), n),
            Kind::RawOwn => keep((0..n).map(RawValue::new_segment), n),
            // `Value::new`: the process's arena (the child's own, fresh after the fork).
            Kind::ValueArena => keep((0..n).map(Value::new), n),
            Kind::RawArena => keep((0..n).map(RawValue::new), n),
        };
        let secs = t.elapsed().as_secs_f64();
        let Some(held) = ok else { return 3 };
        let per = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
        r2.store([(n as f64 / secs).to_bits(), per.to_bits()]);
        drop(held);
        0
    })];
    wait_all(&mut kids, Duration::from_secs(300))?;
    let [rate, per] = res.load();
    Ok((f64::from_bits(rate), f64::from_bits(per)))
}

/// Collects every object (kept alive until the caller drops the box); `None` on an error.
fn keep<T: 'static, E>(
    it: impl Iterator<Item = Result<T, E>>,
    n: u64,
) -> Option<Box<dyn std::any::Any>> {
    let mut v = Vec::with_capacity(n as usize);
    for x in it {
        v.push(x.ok()?);
    }
    Some(Box::new(v))
}
