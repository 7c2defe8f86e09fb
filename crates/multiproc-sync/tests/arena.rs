//! Arenas (issue 19): many small Values in one segment, with fds and mappings that depend on
//! the arenas, not the objects; cross-process locked increments; stale handles refused; one fd
//! per arena in a handle batch.
#![cfg(not(loom))]

use multiproc_shm::ShmError;
use multiproc_shm::fd_passing::collect_fds;
use multiproc_sync::{Arena, CreateError, RawValue, Value};
use multiproc_testutil::{Exit, Shared, fork};
use std::time::Duration;

/// The tests of this file run one at a time: a forked child holds every arena slot its parent
/// held at the fork (issue 19's fork rule), so one test's fork would hold another test's slots
/// and change its live counts.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn hundred_thousand_arena_values_keep_fds_and_mappings_near_constant() {
    let _serial = serial();
    // On main every Value is one memfd + one mapping: the issue measured memfd_create failing
    // at 19,995 Values. Here 100,000 RawValues and 100,000 locked Values share a few arenas.
    const N: u64 = 100_000;
    let (fd0, map0) = (fds(), maps());
    let arena = Arena::new();
    let raws: Vec<RawValue<u64>> = (0..N)
        .map(|i| RawValue::new_in(&arena, i).unwrap())
        .collect();
    let vals: Vec<Value<u64>> = (0..N)
        .map(|i| Value::new_in(&arena, i * 2).unwrap())
        .collect();
    let (fd1, map1) = (fds(), maps());
    let segs = arena.segments();
    eprintln!(
        "{N} RawValues + {N} Values: {segs} arena segments, fds {fd0} -> {fd1}, mappings {map0} -> {map1}"
    );
    // Other tests of this binary run concurrently and open a few segments of their own.
    assert!(fd1 <= fd0 + segs + 40, "fds {fd0} -> {fd1}");
    assert!(map1 <= map0 + segs + 80, "mappings {map0} -> {map1}");
    assert!(segs <= 16, "{segs} segments");
    for (i, (r, v)) in raws.iter().zip(&vals).enumerate().step_by(997) {
        assert_eq!(r.load(), i as u64);
        *v.get_lock().unwrap() += 1;
        assert_eq!(v.load().unwrap(), i as u64 * 2 + 1);
    }
    let st = arena.check().unwrap();
    assert_eq!(st.live, 2 * N);
    drop(raws);
    drop(vals);
    let st = arena.check().unwrap();
    assert_eq!(st.live, 0, "every slot freed when its last handle dropped");
}

#[test]
fn forked_children_increment_arena_values_under_their_locks() {
    let _serial = serial();
    const N: usize = 500;
    const ROUNDS: u64 = 200;
    let arena = Arena::new();
    let vals: Vec<Value<u64>> = (0..N)
        .map(|_| Value::new_in(&arena, 0u64).unwrap())
        .collect();
    let work = || {
        for _ in 0..ROUNDS {
            for v in &vals {
                *v.get_lock().unwrap() += 1;
            }
        }
    };
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            fork(|| {
                work();
                0
            })
        })
        .collect();
    work();
    for k in &mut kids {
        assert_eq!(k.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    }
    for v in &vals {
        assert_eq!(v.load().unwrap(), 3 * ROUNDS);
    }
    // Neighbours in an arena never share a cache line (64-byte slots at least).
    let (a, b) = (
        vals[0].slot_handle().unwrap(),
        vals[1].slot_handle().unwrap(),
    );
    assert_eq!(a.arena, b.arena);
    assert_ne!(a.slot, b.slot);
}

#[test]
fn a_handle_to_a_freed_slot_is_refused_as_stale() {
    let _serial = serial();
    let arena = Arena::new();
    let v = Value::new_in(&arena, 7u64).unwrap();
    let h = v.slot_handle().expect("an arena value");
    // Live: opens, and is the same memory.
    let o = Value::<u64>::open_slot(&h).unwrap();
    *o.get_lock().unwrap() = 8;
    assert_eq!(v.load().unwrap(), 8);
    drop(o);
    drop(v);
    let stale = |r: Result<Value<u64>, CreateError>| {
        matches!(r, Err(CreateError::Shm(ShmError::StaleHandle { .. })))
    };
    assert!(stale(Value::<u64>::open_slot(&h)), "freed slot refused");
    // The slot is reused (LIFO free list): the old handle is still refused.
    let w = Value::new_in(&arena, 9u64).unwrap();
    assert_eq!(w.slot_handle().unwrap().slot, h.slot, "slot reused");
    assert_ne!(w.slot_handle().unwrap().generation, h.generation);
    assert!(stale(Value::<u64>::open_slot(&h)), "reused slot refused");
    // Wrong type or kind: refused too.
    let wh = w.slot_handle().unwrap();
    assert!(Value::<i64>::open_slot(&wh).is_err());
    assert!(RawValue::<u64>::open_slot(&wh).is_err());
    // Through serde as well.
    let bytes = postcard::to_allocvec(&w).unwrap();
    drop(w);
    assert!(postcard::from_bytes::<Value<u64>>(&bytes).is_err());
}

#[test]
fn ten_thousand_handles_carry_one_fd_per_arena() {
    let _serial = serial();
    let arena = Arena::new();
    let vals: Vec<Value<u64>> = (0..10_000u64)
        .map(|i| Value::new_in(&arena, i).unwrap())
        .collect();
    let (bytes, fds) = collect_fds(|| postcard::to_allocvec(&vals).unwrap());
    assert_eq!(fds.len(), arena.segments(), "one fd per arena segment");
    assert!(fds.len() <= 2);
    let back: Vec<Value<u64>> = postcard::from_bytes(&bytes).unwrap();
    for (i, v) in back.iter().enumerate().step_by(101) {
        *v.get_lock().unwrap() += 1;
        assert_eq!(vals[i].load().unwrap(), i as u64 + 1);
    }
    // A forked child sees the same through its own deserialization.
    let mut c = fork(|| {
        let got: Vec<Value<u64>> = match postcard::from_bytes(&bytes) {
            Ok(v) => v,
            Err(_) => return 2,
        };
        for v in &got {
            *v.get_lock().unwrap() += 1000;
        }
        0
    });
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    assert_eq!(vals[5].load().unwrap(), 1005);
    assert_eq!(vals[101].load().unwrap(), 1102);
}

#[test]
fn a_slot_stays_alive_while_another_handle_holds_it() {
    let _serial = serial();
    let arena = Arena::new();
    let v = RawValue::new_in(&arena, 5u64).unwrap();
    let h = v.slot_handle().unwrap();
    let o = RawValue::<u64>::open_slot(&h).unwrap();
    drop(v);
    assert_eq!(o.load(), 5, "the opener's reference keeps the slot");
    assert_eq!(arena.check().unwrap().live, 1);
    drop(o);
    assert_eq!(arena.check().unwrap().live, 0);
}

/// Offset of the arena control block's fields and slot records in the segment (see arena.rs).
const CTL: usize = multiproc_shm::HEADER_SIZE;
const FREE_HEAD: usize = CTL + 24;
/// The first slot: after the 128-byte control block and the 384-byte process table.
const SLOTS: usize = CTL + 128 + 384;

#[test]
fn a_scribbled_free_list_is_reported_and_allocation_moves_on() {
    let _serial = serial();
    let arena = Arena::new();
    let v = Value::new_in(&arena, 1u64).unwrap();
    let w = Value::new_in(&arena, 2u64).unwrap();
    drop(w); // the free list now holds one slot
    v.segment().scribble(FREE_HEAD, &u32::MAX.to_le_bytes());
    assert!(arena.check().is_err(), "the corruption is reported");
    // Allocation skips the corrupted segment and carries on in a new one.
    let x = Value::new_in(&arena, 3u64).unwrap();
    assert_eq!(arena.segments(), 2);
    assert_ne!(
        x.slot_handle().unwrap().arena,
        v.slot_handle().unwrap().arena
    );
    assert_eq!(
        v.load().unwrap(),
        1,
        "the corrupted segment's objects still work"
    );
}

#[test]
fn random_scribbles_over_arena_metadata_never_panic() {
    let _serial = serial();
    let arena = Arena::new();
    let keep: Vec<RawValue<u64>> = (0..64)
        .map(|i| RawValue::new_in(&arena, i).unwrap())
        .collect();
    let handles: Vec<_> = keep.iter().map(|r| r.slot_handle().unwrap()).collect();
    let seg = keep[0].segment().clone();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2_000 {
        // Past the mutex (a lock word naming a live holder only costs the lock timeout), over
        // the control fields, or over the first 64 slots (32 B each for a RawValue<u64>: the
        // value, then the slot's record in its last 16 bytes), after the 384-byte process table.
        let at = if rnd() % 8 == 0 {
            CTL + 16 + (rnd() % 112) as usize
        } else {
            SLOTS + (rnd() % (64 * 32)) as usize
        };
        seg.scribble(at, &rnd().to_le_bytes()[..(1 + rnd() % 4) as usize]);
        if let Ok(r) = RawValue::new_in(&arena, 9u64) {
            r.store(10);
            drop(r);
        }
        let h = &handles[(rnd() % 64) as usize];
        let _ = RawValue::<u64>::open_slot(h);
        let _ = arena.check();
    }
    drop(keep);
}

#[test]
fn a_million_locked_values_fit_under_100_fds_and_1000_mappings() {
    let _serial = serial();
    // Issue 19's target: 1,000,000 Value<u64> with locks in one process under the default fd
    // limit, <= 100 fds and <= 1,000 mappings in all; locked increments exact across 2
    // processes on a sample.
    //
    // `Value::new` (the default: the process's arena). The full million in debug too: about
    // 4 s for the million on this 2-core machine under load, well under CI's 20 s budget.
    let n: u64 = 1_000_000;
    let arena = Arena::global();
    let t = std::time::Instant::now();
    let vals: Vec<Value<u64>> = (0..n).map(|i| Value::new(i).unwrap()).collect();
    eprintln!("{n} Value::new in {:?}", t.elapsed());
    assert!(vals.iter().all(|v| v.slot_handle().is_some()));
    let (f, m) = (fds(), maps());
    eprintln!(
        "{n} Values: {} arena segments, {f} fds and {m} mappings in all",
        arena.segments()
    );
    assert!(f <= 100, "{f} fds");
    assert!(m <= 1000, "{m} mappings");
    let step = (n / 100) as usize + 7;
    let sample: Vec<&Value<u64>> = vals.iter().step_by(step).collect();
    let work = || {
        for _ in 0..100 {
            for v in &sample {
                *v.get_lock().unwrap() += 1;
            }
        }
    };
    let mut c = fork(|| {
        work();
        0
    });
    work();
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    for (k, v) in sample.iter().enumerate() {
        assert_eq!(v.load().unwrap(), (k * step) as u64 + 200);
    }
}

#[test]
fn a_forked_child_dropping_inherited_handles_does_not_free_the_parents_slots() {
    let _serial = serial();
    let arena = Arena::new();
    let vals: Vec<Value<u64>> = (0..100u64)
        .map(|i| Value::new_in(&arena, i).unwrap())
        .collect();
    // The child drops the only handles it has (its copy of `vals`), as a Fork-started task
    // drops its arguments; the parent's copy stays in `held`.
    let mut held = Some(vals);
    let mut child = fork(|| {
        drop(held.take());
        0
    });
    assert_eq!(child.wait_timeout(Duration::from_secs(30)), Exit::Code(0));
    let vals = held.expect("the parent's handles");
    assert_eq!(arena.check().unwrap().live, 100, "still the parent's");
    let hs: Vec<_> = vals.iter().map(|v| v.slot_handle().unwrap()).collect();
    for h in &hs {
        Value::<u64>::open_slot(h).expect("still live");
    }
    drop(vals);
    assert_eq!(arena.check().unwrap().live, 0);
}

/// Fork semantics of the default arena (issue 19): a forked child holds every slot its parent
/// held at the fork, so the parent dropping its handle (and allocating again, which would
/// reuse a freed slot) never pulls the value from under the child — as a forked child's
/// inherited mapping kept an own segment alive. Without the fork handler's adoption the
/// parent's drop freed the slot and the next allocation reused it (checked: this test then
/// fails at the reuse assertion).
#[test]
fn a_forked_child_keeps_using_a_value_its_parent_dropped() {
    let _serial = serial();
    let arena = Arena::new();
    let v = Value::new_in(&arena, 5u64).unwrap();
    let h = v.slot_handle().unwrap();
    let flag = Shared::new();
    let mut c = fork(|| {
        if !flag.wait_for(0, 1) {
            return 2;
        }
        // The parent dropped its handle and allocated 64 values since.
        if v.load().unwrap() != 5 {
            return 3;
        }
        *v.get_lock().unwrap() += 1;
        // Still the same live object: its handle opens (generation unchanged).
        match Value::<u64>::open_slot(&h) {
            Ok(o) if o.load().unwrap() == 6 => 0,
            _ => 4,
        }
    });
    drop(v);
    let others: Vec<Value<u64>> = (0..64)
        .map(|_| Value::new_in(&arena, 99u64).unwrap())
        .collect();
    assert!(
        others
            .iter()
            .all(|o| o.slot_handle().unwrap().slot != h.slot),
        "the child's slot is not reused while it holds it"
    );
    flag.set(0, 1);
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    // The child exited holding it (a forked test child `_exit`s): reaped, then freed.
    assert_eq!(arena.check().unwrap().live, 64);
    assert!(
        Value::<u64>::open_slot(&h).is_err(),
        "freed once the child is gone"
    );
}

#[test]
fn value_new_places_values_in_the_process_arena_and_a_forked_child_gets_its_own() {
    let _serial = serial();
    let v = Value::new(1u64).unwrap();
    let r = RawValue::new(2u64).unwrap();
    let hv = v.slot_handle().expect("Value::new: an arena slot");
    assert!(r.slot_handle().is_some(), "RawValue::new: an arena slot");
    // Named values and new_segment keep a segment each.
    assert!(Value::new_segment(0u64).unwrap().slot_handle().is_none());
    // A value too big for a slot gets its own segment.
    assert!(Value::new([0u8; 1024]).unwrap().slot_handle().is_none());
    let mut c = fork(|| {
        // The child's own arena: new values land in other segments than the parent's.
        let w = Value::new(3u64).unwrap();
        let ok = w.slot_handle().unwrap().arena != hv.arena && v.load().unwrap() == 1;
        if ok { 0 } else { 1 }
    });
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
}
