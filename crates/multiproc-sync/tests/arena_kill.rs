//! Arenas under SIGKILL (issue 19): a child allocating and freeing in a loop is killed at random
//! moments; the arena's metadata stays consistent, the parent keeps allocating, and nothing leaks
//! beyond the killed children's own objects.
#![cfg(not(loom))]

use multiproc_sync::{Arena, RawValue, Value};
use multiproc_testutil::{Exit, Shared, fork};
use std::sync::Mutex;
use std::time::Duration;

/// The tests of this file run one at a time: a forked child holds (from the fork on) every
/// arena slot its parent holds, so another test's children would make exact live counts
/// depend on timing.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn sigkill_during_alloc_free_loops_leaves_the_arena_consistent() {
    const ROUNDS: u64 = 60;
    const HELD: usize = 32; // a child holds at most this many objects
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
        "after {ROUNDS} kills: {st:?} (check() reaped the killed children's holds); \
         {rec} lock takeovers, {replays} journal replays"
    );
    drop(mine);
    drop(keep_raw);
    drop(keep_val);
    let end = arena.check().unwrap();
    assert!(end.live <= ROUNDS * (HELD as u64 + 2));
    multiproc_sync::arena::set_test_yield(false);
}

/// Issue 19's chaos case with reclaim: children allocate, open the parent's objects and free
/// in a loop and are SIGKILLed at random moments (inside alloc, free, the hold-word updates,
/// the journal windows); after each kill `Arena::reclaim` frees exactly what the dead child
/// held, so the live count is the parent's own objects, exactly. Without per-process holders
/// (main before this change) the killed children's slots and their holds on the parent's
/// objects leaked: `live` grew by up to HELD + 2 per round, and the final drop left them.
#[test]
fn sigkilled_holders_slots_are_reclaimed_exactly() {
    const ROUNDS: u64 = 30;
    const HELD: usize = 32;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    multiproc_sync::arena::set_test_yield(true);
    let arena = Arena::new();
    let keep_raw = RawValue::new_in(&arena, 0u64).unwrap();
    let keep_val = Value::new_in(&arena, 0u64).unwrap();
    // Objects the parent shares with every child (the child opens its own handles by serde).
    let shared: Vec<Value<u64>> = (0..8)
        .map(|_| Value::new_in(&arena, 0u64).unwrap())
        .collect();
    let bytes = postcard::to_allocvec(&shared).unwrap();
    let mut mine: Vec<RawValue<u64>> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut reclaimed = 0;
    for round in 0..ROUNDS {
        let mut c = fork(|| {
            let opened: Vec<Value<u64>> = postcard::from_bytes(&bytes).unwrap();
            let mut held_r: Vec<RawValue<u64>> = Vec::with_capacity(HELD);
            let mut held_v: Vec<Value<u64>> = Vec::with_capacity(HELD);
            let mut again: Vec<Value<u64>> = Vec::new();
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
                // Open and drop handles of the parent's objects (hold-word transitions).
                if again.len() < 4 {
                    again.push(
                        postcard::from_bytes::<Vec<Value<u64>>>(&bytes)
                            .unwrap()
                            .swap_remove(0),
                    );
                } else {
                    again.clear();
                }
                *opened[(i % 8) as usize].get_lock_recover().unwrap().0 += 1;
            }
        });
        std::thread::sleep(Duration::from_micros(500 + rnd() % 3000));
        c.kill();
        reclaimed += arena.reclaim().expect("reclaim after a SIGKILL");
        let st = arena.check().expect("consistent after a SIGKILL");
        let ours = 2 + shared.len() as u64 + mine.len() as u64;
        assert_eq!(
            st.live, ours,
            "round {round}: exactly the parent's objects are live"
        );
        // The parent keeps allocating and freeing.
        for k in 0..10 {
            mine.push(RawValue::new_in(&arena, round * 100 + k + 1).unwrap());
            mine.push(RawValue::new_in(&arena, 0).unwrap());
        }
        mine.retain(|r| r.load() != 0);
    }
    let (rec, replays) = multiproc_sync::arena::recoveries();
    eprintln!(
        "{ROUNDS} kills: {reclaimed} slots reclaimed from dead children; {rec} lock takeovers, \
         {replays} journal replays"
    );
    assert!(reclaimed > 0);
    drop((mine, shared, keep_raw, keep_val));
    // The killed children held the parent's objects too (from the fork, and by serde): their
    // holds were reaped above, so the parent's drops freed everything.
    assert_eq!(arena.reclaim().unwrap(), 0);
    assert_eq!(arena.check().unwrap().live, 0, "nothing leaked");
    multiproc_sync::arena::set_test_yield(false);
}

/// Past the 48 tracked processes of a segment a process holds slots as an untracked count (the
/// hold word's high bits): here the table is filled with a live identity (pid 1), so a forked
/// child's adoption and its serde opens are untracked. The child keeps the value alive after
/// the parent drops it and uses it; it exits without dropping the parent's copy (a forked
/// child `_exit`s), and an untracked hold cannot be reaped: the slot stays live — the
/// documented limit past 48 processes (a tracked child's hold is reaped, see above).
#[test]
fn a_process_past_the_table_holds_slots_untracked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let arena = Arena::new();
    let v = Value::new_in(&arena, 7u64).unwrap(); // the parent takes table entry 0
    let bytes = postcard::to_allocvec(&v).unwrap();
    let seg = v.segment().clone();
    // Process table: the tail, after the 64-byte control block rounded up to 128 bytes.
    let table = multiproc_shm::HEADER_SIZE + 128;
    let start1: u64 = std::fs::read_to_string("/proc/1/stat")
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let init = (start1 << 22) | 1; // pid 1 with its start time: alive, never reaped
    for i in 1..multiproc_sync::arena::TRACKED_PROCS {
        seg.scribble(table + 8 * i, &init.to_le_bytes());
    }
    let flag = Shared::new();
    // The child's copy; the parent's clone goes with the closure (dropped in the parent when
    // fork returns), so after `drop(v)` below the parent holds nothing.
    let (vc, fl, b) = (v.clone(), &flag, &bytes);
    let mut c = fork(move || {
        let (v, flag, bytes) = (vc, fl, b);
        if !flag.wait_for(0, 1) {
            return 2;
        }
        // The parent dropped its handle: the child's untracked hold kept the slot.
        if v.load().unwrap() != 7 {
            return 3;
        }
        let again: Value<u64> = postcard::from_bytes(bytes).unwrap(); // an untracked open
        *again.get_lock().unwrap() += 1;
        drop(again);
        flag.set(1, v.load().unwrap());
        0
    });
    drop(v);
    assert_eq!(arena.check().unwrap().live, 1, "held by the child alone");
    flag.set(0, 1);
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    assert_eq!(flag.get(1), 8);
    assert_eq!(
        arena.reclaim().unwrap(),
        0,
        "an untracked hold is not reaped"
    );
    assert_eq!(
        arena.check().unwrap().live,
        1,
        "leaked past the table (documented)"
    );
    for i in 1..multiproc_sync::arena::TRACKED_PROCS {
        seg.scribble(table + 8 * i, &0u64.to_le_bytes());
    }
}
