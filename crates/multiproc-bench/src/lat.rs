//! Round-trip latency: every round trip is timed and recorded in an HDR histogram.
//!
//! The timing side reads `Instant::now()` once per round trip (the end of one round trip is the
//! start of the next), so each recorded round trip includes one clock read. The same holds for
//! every system and for the floor, so ratios stay fair; `clock_ns()` measures that cost and the
//! table header prints it.

use crate::w_ring::{Page, Side, run_sides};
use hdrhistogram::Histogram;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Latency figures of one RTT run, in ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    /// Mean round trip (total time / count).
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest round trip.
    pub max: f64,
}

/// Page lines where a timing child leaves its `Lat` (after the lines `w_ring` uses).
const LAT_LINE: usize = 8;

impl Lat {
    pub(crate) fn store(&self, pg: Page) {
        for (i, v) in [self.mean, self.p50, self.p99, self.p999, self.max]
            .into_iter()
            .enumerate()
        {
            pg.u64(LAT_LINE + i).store(v.to_bits(), Ordering::Release);
        }
    }

    pub(crate) fn load(pg: Page) -> Lat {
        let g = |i: usize| f64::from_bits(pg.u64(LAT_LINE + i).load(Ordering::Acquire));
        Lat {
            mean: g(0),
            p50: g(1),
            p99: g(2),
            p999: g(3),
            max: g(4),
        }
    }

    /// The same figures divided by `d` (ns -> us with 1e3).
    pub fn scaled(&self, d: f64) -> Lat {
        Lat {
            mean: self.mean / d,
            p50: self.p50 / d,
            p99: self.p99 / d,
            p999: self.p999 / d,
            max: self.max / d,
        }
    }
}

/// Records round trips: call `tick()` right after each one completes.
pub struct Recorder {
    h: Histogram<u64>,
    t0: Instant,
    prev: Instant,
    n: u64,
}

impl Recorder {
    /// Starts the clock.
    pub fn start() -> Recorder {
        let h = Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds");
        let t0 = Instant::now();
        Recorder {
            h,
            t0,
            prev: t0,
            n: 0,
        }
    }

    /// One round trip ended now.
    #[inline]
    pub fn tick(&mut self) {
        let now = Instant::now();
        let d = now.duration_since(self.prev).as_nanos() as u64;
        self.h.saturating_record(d.max(1));
        self.prev = now;
        self.n += 1;
    }

    /// The figures.
    pub fn finish(&self) -> Lat {
        let total = self.prev.duration_since(self.t0).as_nanos() as f64;
        Lat {
            mean: total / self.n.max(1) as f64,
            p50: self.h.value_at_quantile(0.5) as f64,
            p99: self.h.value_at_quantile(0.99) as f64,
            p999: self.h.value_at_quantile(0.999) as f64,
            max: self.h.max() as f64,
        }
    }
}

/// ns per `Instant::now()` on this machine (best of 3 runs of 100k reads).
pub fn clock_ns() -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut x = t;
            for _ in 0..100_000 {
                x = std::hint::black_box(Instant::now());
            }
            x.duration_since(t).as_nanos() as f64 / 100_000.0
        })
        .fold(f64::INFINITY, f64::min)
}

/// A per-iteration step of one side: `Ok` or why it failed.
pub type Step = Box<dyn FnMut(u64) -> Result<(), String>>;
/// Sets one side up inside its process (after fork) and returns its step.
pub type Setup = Box<dyn FnOnce(Page) -> Result<Step, String>>;

/// Runs a round-trip workload between two processes pinned to CPUs 0 and 1. `ping`'s step does
/// one whole round trip (send `i`, wait for the echo); `pong`'s step answers one. Both run
/// `warmup` untimed steps first; then `n` timed ones, each recorded.
pub fn rtt_pair(warmup: u64, n: u64, ping: Setup, pong: Setup) -> Result<Lat, String> {
    let a: Side = (
        0,
        Box::new(move |pg: Page| {
            let mut step = match ping(pg) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("ping setup: {e}");
                    return 2;
                }
            };
            for i in 0..warmup {
                if let Err(e) = step(i) {
                    eprintln!("ping: {e}");
                    return 3;
                }
            }
            let mut rec = Recorder::start();
            for i in warmup..warmup + n {
                if let Err(e) = step(i) {
                    eprintln!("ping: {e}");
                    return 3;
                }
                rec.tick();
            }
            rec.finish().store(pg);
            0
        }),
    );
    let b: Side = (
        1,
        Box::new(move |pg: Page| {
            let mut step = match pong(pg) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("pong setup: {e}");
                    return 2;
                }
            };
            for i in 0..warmup + n {
                if let Err(e) = step(i) {
                    eprintln!("pong: {e}");
                    return 3;
                }
            }
            0
        }),
    );
    let (_, pg) = run_sides(vec![a, b])?;
    let lat = Lat::load(pg);
    pg.free();
    Ok(lat)
}
