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
    // `Value::new`: the process's arena (issue 19's default).
    let arena = Arena::global();
    let vals: Vec<Value<u64>> = (0..10_000u64).map(|i| Value::new(i).unwrap()).collect();
    assert!(
        vals[0].slot_handle().is_some(),
        "Value::new places it in the arena"
    );
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

#[task(crate = multiproc_process)]
fn use_every_kind(
    locks: Vec<multiproc_sync::Lock>,
    events: Vec<multiproc_sync::Event>,
    arrays: Vec<multiproc_sync::Array<u32>>,
    sems: Vec<multiproc_sync::Semaphore>,
) -> (usize, usize) {
    for l in &locks {
        let _g = l.lock().unwrap();
    }
    for a in &arrays {
        a.get_lock().unwrap()[3] += 1;
    }
    for s in &sems {
        s.release().unwrap();
    }
    for e in &events {
        e.set();
    }
    (
        locks.len() + events.len() + arrays.len() + sems.len(),
        fd_count(),
    )
}

#[test]
fn a_spawned_child_gets_ten_thousand_locks_events_arrays_and_semaphores_through_few_fds() {
    let arena = Arena::new();
    let locks: Vec<_> = (0..4_000)
        .map(|_| multiproc_sync::Lock::new_in(&arena).unwrap())
        .collect();
    let events: Vec<_> = (0..3_000)
        .map(|_| multiproc_sync::Event::new_in(&arena).unwrap())
        .collect();
    let arrays: Vec<_> = (0..2_000)
        .map(|_| multiproc_sync::Array::<u32>::zeroed_in(&arena, 8).unwrap())
        .collect();
    let sems: Vec<_> = (0..1_000)
        .map(|_| multiproc_sync::Semaphore::new_in(&arena, 0).unwrap())
        .collect();
    let mut empty = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(
            use_every_kind,
            (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        )
        .unwrap();
    let (_, base) = empty.join().unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(
            use_every_kind,
            (locks.clone(), events.clone(), arrays.clone(), sems.clone()),
        )
        .unwrap();
    let (n, fds) = p.join().unwrap();
    assert_eq!(n, 10_000);
    eprintln!(
        "child fds: {base} with no objects, {fds} with 10,000 arena objects of 4 kinds in {} \
         arena segment(s)",
        arena.segments()
    );
    assert!(
        fds <= base + 2 * arena.segments(),
        "{fds} fds in the child (baseline {base})"
    );
    assert!(events.iter().all(|e| e.is_set()));
    assert!(sems.iter().all(|s| s.get_value() == 1));
    assert!(arrays.iter().all(|a| a.get(3).unwrap() == 1));
    assert!(locks.iter().all(|l| !l.is_locked()));
}
