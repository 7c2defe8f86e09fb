//! Array and RawArray in real segments whose bytes (header included, the length field too)
//! are overwritten between API calls: every call returns a value or an error within its timeout,
//! and no access leaves the validated length.
//! (Leaking a guard leaks the mapping by design; that is tested in
//! crates/multiproc-sync/tests/trust.rs, not here, where LeakSanitizer would flag it.)
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::{Array, RawArray};

#[derive(Arbitrary, Debug)]
enum Op {
    Get(u16),
    Set(u16, u32),
    LockAndSum,
    ToVec,
    RawGet(u16),
    RawSet(u16, u16),
    RawCopy(u16),
    Scribble { raw: bool, at: u32, bytes: Vec<u8> },
    Reopen,
}

fuzz_target!(|input: (u8, Vec<Op>)| {
    common::init();
    let (len, ops) = input;
    let len = usize::from(len % 40);
    let (Ok(mut a), Ok(mut r)) = (
        Array::<u32>::zeroed_segment(len),
        RawArray::<u16>::zeroed_segment(len),
    ) else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Get(i) => {
                if let Ok((mut g, _)) = a.get_lock_recover_timeout(T) {
                    let _ = g.get(usize::from(*i)).copied();
                    if let Some(x) = g.get_mut(usize::from(*i)) {
                        *x = x.wrapping_add(1);
                    }
                }
            }
            Op::Set(i, x) => {
                let _ = a.get_lock_timeout(T).map(|mut g| {
                    if let Some(e) = g.get_mut(usize::from(*i)) {
                        *e = *x;
                    }
                });
            }
            Op::LockAndSum => {
                let _ = a
                    .try_get_lock()
                    .map(|g| g.iter().fold(0u32, |s, x| s.wrapping_add(*x)));
            }
            Op::ToVec => {
                if let Ok(g) = a.get_lock_timeout(T) {
                    assert_eq!(g.len(), a.len());
                }
                assert_eq!(r.to_vec().len(), r.len());
            }
            Op::RawGet(i) => {
                let _ = r.get(usize::from(*i));
            }
            Op::RawSet(i, x) => {
                let _ = r.set(usize::from(*i), *x);
            }
            Op::RawCopy(x) => {
                let v = vec![*x; r.len()];
                r.copy_from_slice(&v).unwrap();
            }
            Op::Scribble { raw, at, bytes } => {
                if *raw {
                    stale |= scribble(r.segment(), *at, bytes);
                } else {
                    stale |= scribble(a.segment(), *at, bytes);
                }
            }
            Op::Reopen if !stale => {
                if let Ok(o) = Array::open_handle(&a.handle()) {
                    a = o;
                }
                if let Ok(o) = RawArray::open_handle(&r.handle()) {
                    r = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
