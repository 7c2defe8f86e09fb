//! Arena objects (issue 19: Value, RawValue, Lock, Event, Semaphore, small Array) whose arena control block, slot records and payloads are
//! overwritten between API calls: every call returns a value or an error, never a panic or a
//! hang. (The arena mutex's own 16 bytes are left alone: a lock word naming a live holder costs
//! the arena's lock timeout, seconds, which is bounded but past libFuzzer's per-input limit.)
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T};
use libfuzzer_sys::fuzz_target;
use multiproc_shm::HEADER_SIZE;
use multiproc_sync::{Arena, Array, Event, Lock, RawValue, Semaphore, SlotHandle, Value};

#[derive(Arbitrary, Debug)]
enum Op {
    NewValue(u64),
    NewRaw(u64),
    Drop(u8),
    Lock(u8, u64),
    RawStore(u8, u64),
    Handle(u8),
    Open(u8, bool),
    Check,
    Reclaim,
    Scribble { at: u16, bytes: Vec<u8> },
    NewLock,
    NewEvent,
    NewSem(u8),
    NewArray(u8),
    Other { which: u8, i: u8 },
    OpenOther(u8),
}

fuzz_target!(|ops: Vec<Op>| {
    common::init();
    let arena = Arena::new();
    let (Ok(v0), Ok(r0)) = (Value::new_in(&arena, 0u64), RawValue::new_in(&arena, 0u64)) else {
        return;
    };
    let segs = [v0.segment().clone(), r0.segment().clone()];
    let mut vals = vec![v0];
    let mut raws = vec![r0];
    let mut handles: Vec<SlotHandle> = Vec::new();
    let mut locks: Vec<Lock> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut sems: Vec<Semaphore> = Vec::new();
    let mut arrays: Vec<Array<u32>> = Vec::new();
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::NewValue(x) => {
                if let Ok(v) = Value::new_in(&arena, *x) {
                    vals.push(v);
                }
            }
            Op::NewRaw(x) => {
                if let Ok(r) = RawValue::new_in(&arena, *x) {
                    raws.push(r);
                }
            }
            Op::Drop(i) => {
                let i = *i as usize;
                if i % 2 == 0 && !vals.is_empty() {
                    vals.swap_remove(i / 2 % vals.len());
                } else if !raws.is_empty() {
                    raws.swap_remove(i / 2 % raws.len());
                }
            }
            Op::Lock(i, x) => {
                if !vals.is_empty()
                    && let Ok((mut g, _)) =
                        vals[*i as usize % vals.len()].get_lock_recover_timeout(T)
                {
                    *g = g.wrapping_add(*x);
                }
            }
            Op::RawStore(i, x) => {
                if !raws.is_empty() {
                    raws[*i as usize % raws.len()].store(*x);
                }
            }
            Op::Handle(i) => {
                let i = *i as usize;
                let h = if i % 2 == 0 {
                    vals.get(i / 2 % vals.len().max(1)).and_then(|v| v.slot_handle())
                } else {
                    raws.get(i / 2 % raws.len().max(1)).and_then(|r| r.slot_handle())
                };
                handles.extend(h);
            }
            Op::Open(i, raw) => {
                if !handles.is_empty() {
                    let h = &handles[*i as usize % handles.len()];
                    if *raw {
                        if let Ok(r) = RawValue::<u64>::open_slot(h) {
                            raws.push(r);
                        }
                    } else if let Ok(v) = Value::<u64>::open_slot(h) {
                        vals.push(v);
                    }
                }
            }
            Op::Check => {
                let _ = arena.check();
            }
            Op::Reclaim => {
                let _ = arena.reclaim();
            }
            Op::NewLock => locks.extend(Lock::new_in(&arena).ok()),
            Op::NewEvent => events.extend(Event::new_in(&arena).ok()),
            Op::NewSem(n) => sems.extend(Semaphore::new_in(&arena, u32::from(*n)).ok()),
            Op::NewArray(n) => arrays.extend(Array::<u32>::zeroed_in(&arena, *n as usize % 40).ok()),
            Op::Other { which, i } => {
                let i = *i as usize;
                match which % 8 {
                    0 if !locks.is_empty() => drop(locks[i % locks.len()].lock_timeout(T)),
                    1 if !locks.is_empty() => {
                        let l = &locks[i % locks.len()];
                        if l.acquire_timeout(T) {
                            let _ = l.release();
                        }
                    }
                    2 if !events.is_empty() => {
                        let e = &events[i % events.len()];
                        e.set();
                        let _ = e.wait_timeout(T);
                        e.clear();
                    }
                    3 if !sems.is_empty() => {
                        let s = &sems[i % sems.len()];
                        let _ = s.release();
                        let _ = s.acquire_timeout(T);
                        drop(s.acquire_guard_timeout(T));
                    }
                    4 if !arrays.is_empty() => {
                        let a = &arrays[i % arrays.len()];
                        if let Ok((mut g, _)) = a.get_lock_recover_timeout(T)
                            && !g.is_empty()
                        {
                            let n = g.len();
                            g[i % n] += 1;
                        }
                    }
                    5 => {
                        let all = [locks.len(), events.len(), sems.len(), arrays.len()];
                        let k = i % 4;
                        if all[k] > 0 {
                            match k {
                                0 => drop(locks.swap_remove(i % all[0])),
                                1 => drop(events.swap_remove(i % all[1])),
                                2 => drop(sems.swap_remove(i % all[2])),
                                _ => drop(arrays.swap_remove(i % all[3])),
                            }
                        }
                    }
                    6 => {
                        let h = match i % 4 {
                            0 => locks.first().and_then(Lock::slot_handle),
                            1 => events.first().and_then(Event::slot_handle),
                            2 => sems.first().and_then(Semaphore::slot_handle),
                            _ => arrays.first().and_then(Array::slot_handle),
                        };
                        handles.extend(h);
                    }
                    _ => {}
                }
            }
            Op::OpenOther(i) => {
                if !handles.is_empty() {
                    let h = &handles[*i as usize % handles.len()];
                    // Any kind at any handle: a wrong kind or a stale one is an error.
                    locks.extend(Lock::open_slot(h).ok());
                    events.extend(Event::open_slot(h).ok());
                    sems.extend(Semaphore::open_slot(h).ok());
                    arrays.extend(Array::<u32>::open_slot(h).ok());
                }
            }
            Op::Scribble { at, bytes } => {
                // Control fields past the mutex, slot records and the first payloads.
                let seg = &segs[*at as usize % 2];
                let at = HEADER_SIZE + 16 + (*at as usize / 2) % 8192;
                seg.scribble(at, &bytes[..bytes.len().min(16)]);
            }
        }
    }
});
