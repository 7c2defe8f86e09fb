//! The MPMC ring as an object in a real (memfd) segment, driven through its API while the fuzzer
//! overwrites any bytes of the segment (header, control block, slots) between calls, as a
//! hostile process of the same user could. Every call must return (a value or an error) within
//! its deadline: no panic, no abort, no UB (ASan), no hang, no allocation past the slot size.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::T;
use libfuzzer_sys::fuzz_target;
use multiproc_ring::MpmcRing;

/// Every blocking call's deadline.

#[derive(Arbitrary, Debug)]
enum Op {
    Push(u16),
    PushTimeout(u16),
    Pop,
    PopTimeout,
    Recover,
    Pending,
    Lost,
    Close,
    Scribble { at: u32, bytes: Vec<u8> },
    Reopen,
}

#[derive(Arbitrary, Debug)]
struct Input {
    slots_log: u8,
    slot_size: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    common::init();
    common::short_ring_waits();
    // Any slot count in 2..=32 (lap-encoded positions when it is not a power of two).
    let slots = 2 + input.slots_log as usize % 31;
    let slot_size = 1 + input.slot_size as usize % 96;
    let Ok(mut q) = MpmcRing::new(slots, slot_size) else {
        return;
    };
    let seg = q.segment().expect("segment ring").clone();
    let mut v = Vec::new();
    // A `try_pop` behind a head slot scribbled to look claimed by a live process waits for
    // that writer: here `HEAD_PATIENCE` (see `common::short_ring_waits`), not 200 ms.
    let mut stale = false;
    // Whether any byte was overwritten: a scribble of the geometry can leave another geometry
    // that fits the same mapping (slot size 5 -> 16: both have 32-byte slots), which an opener
    // rightly accepts (the creator's handle keeps its validated copy and refuses longer records
    // as `Corrupted`); only an untouched ring must reopen with the geometry it was made with.
    let mut scribbled = false;
    for op in input.ops.iter().take(common::MAX_OPS) {
        match op {
            Op::Push(len) => {
                let _ = q.try_push(&vec![7; *len as usize % (slot_size + 8)]);
            }
            Op::PushTimeout(len) => {
                let _ = q.push_timeout(&vec![7; *len as usize % (slot_size + 8)], T);
            }
            Op::Pop => {
                if let Ok(n) = q.try_pop_into(&mut v) {
                    assert!(n <= q.slot_size() && n == v.len());
                }
            }
            Op::PopTimeout => {
                if let Ok(n) = q.pop_into_timeout(&mut v, T) {
                    assert!(n <= q.slot_size() && n == v.len());
                }
            }
            Op::Recover => {
                assert!(q.recover() <= 2);
            }
            Op::Pending => assert!(q.pending() <= slots as u64),
            Op::Lost => drop(q.lost_records()),
            Op::Close => q.close(),
            Op::Scribble { at, bytes } => {
                scribbled = true;
                stale |= common::scribble(&seg, *at, bytes);
            }
            // After a scribble of the init state an open waits (boundedly) for a Ready that
            // never comes: see `common::scribble`.
            Op::Reopen if stale => {}
            Op::Reopen => {
                if let Some(h) = q.handle()
                    && let Ok(q2) = MpmcRing::open_handle(&h)
                {
                    if !scribbled {
                        assert_eq!((q2.slots(), q2.slot_size()), (slots, slot_size));
                    }
                    q = q2;
                }
            }
        }
    }
});
