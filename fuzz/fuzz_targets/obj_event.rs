//! Event in a real segment whose bytes are overwritten between API calls: every call returns
//! within its timeout.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{MAX_OPS, T, scribble};
use libfuzzer_sys::fuzz_target;
use multiproc_sync::Event;

#[derive(Arbitrary, Debug)]
enum Op {
    Set,
    Clear,
    IsSet,
    Wait,
    Scribble { at: u32, bytes: Vec<u8> },
    Reopen,
}

fuzz_target!(|ops: Vec<Op>| {
    common::init();
    let Ok(mut e) = Event::new_segment() else {
        return;
    };
    let mut stale = false;
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::Set => e.set(),
            Op::Clear => e.clear(),
            Op::IsSet => {
                let _ = e.is_set();
            }
            Op::Wait => {
                let _ = e.wait_timeout(T);
            }
            Op::Scribble { at, bytes } => stale |= scribble(e.segment(), *at, bytes),
            Op::Reopen if !stale => {
                if let Ok(o) = Event::open_handle(&e.handle()) {
                    e = o;
                }
            }
            Op::Reopen => {}
        }
    }
});
