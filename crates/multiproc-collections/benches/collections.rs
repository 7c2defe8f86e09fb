//! Criterion benches of the collections: single-process dict get / insert / update and list
//! push+pop, and two processes (pinned to CPUs 0 and 1) doing `update(key, v - 1)` on one
//! `SharedDict` key, timed with `iter_custom`.
//!
//! Run: `cargo bench -p multiproc-collections --bench collections`

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_collections::{SharedDict, SharedList};
use multiproc_testutil::fork_pinned;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn single_process(c: &mut Criterion) {
    let d: SharedDict<String, i64> = SharedDict::new().unwrap();
    for i in 0..1000 {
        d.insert(&format!("key{i}"), &i).unwrap();
    }
    c.bench_function("dict_get", |b| {
        b.iter(|| black_box(d.get(black_box("key500")).unwrap()))
    });
    let k = "key7".to_string();
    c.bench_function("dict_insert_overwrite", |b| {
        b.iter(|| d.insert(black_box(&k), black_box(&42)).unwrap())
    });
    c.bench_function("dict_update", |b| {
        b.iter(|| {
            d.update(black_box("counter"), |v| v.unwrap_or(0) - 1)
                .unwrap()
        })
    });
    let l: SharedList<u64> = SharedList::new().unwrap();
    c.bench_function("list_push_pop", |b| {
        b.iter(|| {
            l.push(black_box(&7)).unwrap();
            black_box(l.pop().unwrap())
        })
    });
}

/// Time for `iters` updates split over two forked processes.
fn two_process_update(iters: u64) -> Duration {
    let d: SharedDict<String, i64> = SharedDict::new().unwrap();
    let per = iters.div_ceil(2);
    d.insert(&"counter".to_string(), &(2 * per as i64)).unwrap();
    let go = multiproc_sync::RawValue::new(0u32).unwrap();
    // The bench process is single-threaded (criterion without rayon).
    let children: Vec<_> = (0..2)
        .map(|cpu| {
            fork_pinned(Some(cpu), || {
                while go.load() == 0 {
                    std::hint::spin_loop();
                }
                for _ in 0..per {
                    d.update("counter", |v| v.unwrap_or(0) - 1).unwrap();
                }
                0
            })
        })
        .collect();
    let t = Instant::now();
    go.store(1);
    for child in children {
        child.join_ok();
    }
    let el = t.elapsed();
    assert_eq!(d.get("counter").unwrap(), Some(0));
    el
}

fn two_processes(c: &mut Criterion) {
    c.bench_function("dict_update_2proc", |b| b.iter_custom(two_process_update));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = single_process, two_processes
}
criterion_main!(benches);
