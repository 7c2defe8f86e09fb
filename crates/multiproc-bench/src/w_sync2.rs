//! Sync workloads of the comparison bench: `event_pingpong`.
//!
//! `event_pingpong`: two processes pinned to CPUs 0 and 1 alternate on two Events, exactly as
//! `benches/python/mp_bench.py event_pingpong` does. A sets e1 and waits for e2. B waits for e1,
//! clears it and sets e2. A clears e2 and starts over. e1 is cleared before e2 is set, and e2 before
//! the next `e1.set()`, so no wake-up is lost. The figure is µs per round trip, with
//! percentiles; a `spin` row (busy-polled `is_set()`) and a `block` row (`wait_timeout`).

use crate::lat::{Lat, Setup, Step, rtt_pair};
use crate::w_ring::push_lat;
use crate::{Config, Record, python};
use multiproc::Event;
use std::time::{Duration, Instant};

const WARMUP: u64 = 1000;
/// How long either side waits for the other before the run is declared failed.
const STALL: Duration = Duration::from_secs(30);

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    if cfg.wants("event_pingpong") {
        let w = "event_pingpong";
        let n = if cfg.quick { 20_000 } else { 200_000 };
        push_lat(out, w, "multiproc", "spin", event_pingpong(n, true), 1e3);
        push_lat(out, w, "multiproc", "block", event_pingpong(n, false), 1e3);
        out.extend(
            python::run(w, cfg.quick, &[])
                .into_iter()
                .map(|r| r.with_mode("block")),
        );
    }
}

/// `n` round trips (after a warm-up) between two processes pinned to CPUs 0 and 1. `spin`: both
/// sides busy-poll `is_set()`; else both block in `wait_timeout` in park-only mode
/// (`WaitStrategy::Park`: a futex sleep at once, no spin phase, like the blocking peers).
pub fn event_pingpong(n: u64, spin: bool) -> Result<Lat, String> {
    let mut e1 = Event::new().map_err(|e| e.to_string())?;
    let mut e2 = Event::new().map_err(|e| e.to_string())?;
    if !spin {
        e1.set_wait_strategy(multiproc::sync::park::WaitStrategy::Park);
        e2.set_wait_strategy(multiproc::sync::park::WaitStrategy::Park);
    }
    fn wait(e: &Event, spin: bool) -> Result<(), String> {
        if spin {
            let t = Instant::now();
            while !e.is_set() {
                std::hint::spin_loop();
                if t.elapsed() > STALL {
                    return Err("peer stopped answering".into());
                }
            }
            Ok(())
        } else if e.wait_timeout(STALL) {
            Ok(())
        } else {
            Err("peer stopped answering".into())
        }
    }
    let (f1, f2) = (e1.clone(), e2.clone());
    let ping: Setup = Box::new(move |_pg| {
        Ok(Box::new(move |_i: u64| {
            e1.set();
            wait(&e2, spin)?;
            e2.clear();
            Ok(())
        }) as Step)
    });
    let pong: Setup = Box::new(move |_pg| {
        Ok(Box::new(move |_i: u64| {
            wait(&f1, spin)?;
            f1.clear();
            f2.set();
            Ok(())
        }) as Step)
    });
    rtt_pair(WARMUP, n, ping, pong)
}
