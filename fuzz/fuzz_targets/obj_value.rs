//! Value and RawValue in real segments whose bytes (header included) are overwritten between
//! API calls: every call returns a value or an error within its timeout.
//! (Leaking a guard leaks the mapping by design; that is tested in
//! crates/multiproc-sync/tests/trust.rs, not here, where LeakSanitizer would flag it.)
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::{RawValue, Value};

#[derive(Arbitrary, Debug)]
enum Op {
    Lock(u64),
    TryLock(u64),
    LockTimeout(u64),
    Load,
    Store(u64),
    RawLoad,
    RawStore([u8; 12]),
    Scribble { raw: bool, at: u32, bytes: Vec<u8> },
    Reopen,
}

fuzz_target!(|ops: Vec<Op>| {
    common::init();
    let (Ok(mut v), Ok(mut r)) = (Value::new_segment([0u64; 2]), RawValue::new_segment([0u32; 3])) else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Lock(x) | Op::LockTimeout(x) => {
                if let Ok((mut g, _)) = v.get_lock_recover_timeout(T) {
                    g[0] = g[0].wrapping_add(*x);
                }
            }
            Op::TryLock(x) => {
                if let Ok(mut g) = v.try_get_lock() {
                    g[1] ^= x;
                }
            }
            Op::Load => {
                let _ = v.try_get_lock().map(|g| *g);
            }
            Op::Store(x) => {
                if let Ok(mut g) = v.get_lock_timeout(T) {
                    *g = [*x, !x];
                }
            }
            Op::RawLoad => {
                let _ = r.load();
            }
            Op::RawStore(b) => {
                r.store([
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
                ]);
            }
            Op::Scribble { raw, at, bytes } => {
                if *raw {
                    stale |= scribble(r.segment(), *at, bytes);
                } else {
                    stale |= scribble(v.segment(), *at, bytes);
                }
            }
            Op::Reopen if !stale => {
                if let Ok(o) = Value::open_handle(&v.handle()) {
                    v = o;
                }
                if let Ok(o) = RawValue::open_handle(&r.handle()) {
                    r = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
