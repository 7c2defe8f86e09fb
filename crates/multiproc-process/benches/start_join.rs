//! Criterion bench: start a trivial task and join it, per start method (`process_start_join`).
//! `harness = false` with our own `main`, because `init()` must run first: spawned children are
//! this bench binary.

use criterion::Criterion;
use multiproc_process::{Process, StartMethod, task};
use std::time::Duration;

#[task(crate = multiproc_process)]
fn noop() {}

fn start_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_start_join");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, m) in [
        ("spawn", StartMethod::Spawn),
        ("fork", StartMethod::Fork),
        ("forkserver", StartMethod::ForkServer),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = Process::builder().start_method(m).spawn(noop, ()).unwrap();
                p.join().unwrap();
            })
        });
    }
    // A closure under fork (no registry, no serialization).
    g.bench_function("fork_closure", |b| {
        b.iter(|| {
            let mut p = Process::fork(|| 1u8).unwrap();
            p.join().unwrap();
        })
    });
    g.finish();
}

fn main() {
    multiproc_process::init();
    let mut c = Criterion::default().configure_from_args();
    start_join(&mut c);
    c.final_summary();
}
