//! Issue 19: arena objects passed to a spawned child cost one fd per arena, not per object.
#![allow(missing_docs)]

use multiproc_process::{Process, StartMethod, task};
use multiproc_sync::{Arena, Value};

multiproc_process::init_before_main!();

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[task(crate = multiproc_process)]
fn bump_all(vals: Vec<Value<u64>>) -> (usize, usize) {
    for v in &vals {
        *v.get_lock().unwrap() += 1;
    }
    (vals.len(), fd_count())
}

#[test]
fn a_spawned_child_gets_ten_thousand_arena_values_through_one_fd_per_arena() {
    let arena = Arena::new();
    let vals: Vec<Value<u64>> = (0..10_000u64)
        .map(|i| Value::new_in(&arena, i).unwrap())
        .collect();
    let mut empty = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(bump_all, Vec::new())
        .unwrap();
    let (_, base) = empty.join().unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(bump_all, vals.clone())
        .unwrap();
    let (n, fds) = p.join().unwrap();
    assert_eq!(n, 10_000);
    eprintln!(
        "child fds: {base} with no objects, {fds} with 10,000 arena Values in {} arena(s)",
        arena.segments()
    );
    assert!(
        fds <= base + 2 * arena.segments(),
        "{fds} fds in the child (baseline {base})"
    );
    for (i, v) in vals.iter().enumerate().step_by(99) {
        assert_eq!(v.load().unwrap(), i as u64 + 1);
    }
}
