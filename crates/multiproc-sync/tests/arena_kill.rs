//! Arenas under SIGKILL (issue 19): a child allocating and freeing in a loop is killed at random
//! moments; the arena's metadata stays consistent, the parent keeps allocating, and nothing leaks
//! beyond the killed children's own objects.
#![cfg(not(loom))]

mod common;

use common::fork;
use multiproc_sync::{Arena, RawValue, Value};
use std::time::Duration;

#[test]
fn sigkill_during_alloc_free_loops_leaves_the_arena_consistent() {
    const ROUNDS: u64 = 60;
    const HELD: usize = 32; // a child holds at most this many objects
    multiproc_sync::arena::set_test_yield(true);
    let arena = Arena::new();
    // The segments the children use exist before they fork (a child's new segments would be
    // its own): one per class used.
    let keep_raw = RawValue::new_in(&arena, 0u64).unwrap();
    let keep_val = Value::new_in(&arena, 0u64).unwrap();
    let mut mine = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..ROUNDS {
        let mut c = fork(|| {
            let mut held_r: Vec<RawValue<u64>> = Vec::with_capacity(HELD);
            let mut held_v: Vec<Value<u64>> = Vec::with_capacity(HELD);
            let mut i = 0u64;
            loop {
                i += 1;
                if held_r.len() < HELD / 2 {
                    held_r.push(RawValue::new_in(&arena, i).unwrap());
                } else {
                    held_r.swap_remove((i % held_r.len() as u64) as usize);
                }
                if held_v.len() < HELD / 2 {
                    held_v.push(Value::new_in(&arena, i).unwrap());
                } else {
                    held_v.swap_remove((i % held_v.len() as u64) as usize);
                }
            }
        });
        std::thread::sleep(Duration::from_micros(rnd() % 3000));
        c.kill();
        let st = arena.check().expect("consistent after a SIGKILL");
        // Parent keeps allocating and freeing.
        for k in 0..10 {
            mine.push(RawValue::new_in(&arena, round * 100 + k + 1).unwrap());
            mine.push(RawValue::new_in(&arena, 0).unwrap());
        }
        mine.retain(|r| r.load() != 0);
        let ours = 2 + mine.len() as u64;
        assert!(
            st.live <= ours + (round + 1) * (HELD as u64 + 2),
            "round {round}: {} live, beyond the children's objects",
            st.live
        );
    }
    for (i, r) in mine.iter().enumerate() {
        assert_eq!((r.load() - 1) / 100, i as u64 / 10);
    }
    let st = arena.check().unwrap();
    let (rec, replays) = multiproc_sync::arena::recoveries();
    eprintln!(
        "after {ROUNDS} kills: {st:?} (live beyond ours: the killed children's objects); \
         {rec} lock takeovers, {replays} journal replays"
    );
    drop(mine);
    drop(keep_raw);
    drop(keep_val);
    let end = arena.check().unwrap();
    assert!(end.live <= ROUNDS * (HELD as u64 + 2));
    multiproc_sync::arena::set_test_yield(false);
}
