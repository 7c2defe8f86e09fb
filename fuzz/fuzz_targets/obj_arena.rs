//! Arena Values/RawValues (issue 19) whose arena control block, slot records and payloads are
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
use multiproc_sync::{Arena, RawValue, SlotHandle, Value};

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
    Scribble { at: u16, bytes: Vec<u8> },
}

fuzz_target!(|ops: Vec<Op>| {
    let arena = Arena::new();
    let (Ok(v0), Ok(r0)) = (Value::new_in(&arena, 0u64), RawValue::new_in(&arena, 0u64)) else {
        return;
    };
    let segs = [v0.segment().clone(), r0.segment().clone()];
    let mut vals = vec![v0];
    let mut raws = vec![r0];
    let mut handles: Vec<SlotHandle> = Vec::new();
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
            Op::Scribble { at, bytes } => {
                // Control fields past the mutex, slot records and the first payloads.
                let seg = &segs[*at as usize % 2];
                let at = HEADER_SIZE + 16 + (*at as usize / 2) % 8192;
                seg.scribble(at, &bytes[..bytes.len().min(16)]);
            }
        }
    }
});
