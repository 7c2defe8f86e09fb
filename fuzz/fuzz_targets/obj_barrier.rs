//! Barrier in a real segment whose bytes (word, parties, registrations) are overwritten between
//! API calls: every call returns within its timeout; a rewritten party count is refused on open.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::Barrier;

#[derive(Arbitrary, Debug)]
enum Op {
    Wait,
    Abort,
    Reset,
    Broken,
    NWaiting,
    Parties,
    Scribble { at: u32, bytes: Vec<u8> },
    Reopen,
}

fuzz_target!(|input: (u8, Vec<Op>)| {
    common::init();
    let (parties, ops) = input;
    let mut parties = u32::from(parties % 4) + 1;
    let Ok(mut b) = Barrier::new(parties) else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Wait => {
                if let Ok(i) = b.wait_timeout(T) {
                    assert!(i < b.parties());
                }
            }
            Op::Abort => b.abort(),
            Op::Reset => b.reset(),
            Op::Broken => {
                let _ = b.broken();
            }
            Op::NWaiting => assert!(b.n_waiting() <= b.parties()),
            Op::Parties => assert_eq!(b.parties(), parties),
            Op::Scribble { at, bytes } => stale |= scribble(b.segment(), *at, bytes),
            Op::Reopen if !stale => {
                if let Ok(o) = Barrier::open_handle(&b.handle()) {
                    assert!((1..=64).contains(&o.parties()));
                    parties = o.parties();
                    b = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
