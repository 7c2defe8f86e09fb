//! SharedList under a hostile co-tenant: between API calls the fuzzer overwrites any bytes of
//! the list's segment (header, mutex, geometry, journal, counters, index tables, arenas) and
//! opens new handles to it; every call goes through `get_lock_timeout` (a few ms) and must return
//! a value or an error — no panic, no abort, no hang, no allocation past one arena.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use multiproc_collections::{CollectionOptions, ListGuard, SharedList};
use std::time::Duration;

const WAIT: Duration = Duration::from_micros(200);
const MAX_HANDLES: usize = 4;
const MAX_REOPENS: usize = 3;
const OPEN_WAIT: Duration = Duration::from_millis(5);

type List = SharedList<Vec<u8>>;

#[derive(Arbitrary, Debug)]
enum Op {
    Append { h: u8, len: u8 },
    Get { h: u8, index: u8 },
    Set { h: u8, index: u8, len: u8 },
    Insert { h: u8, index: u8, len: u8 },
    Remove { h: u8, index: u8 },
    Pop { h: u8 },
    Len { h: u8 },
    ToVec { h: u8 },
    Clear { h: u8 },
    Verify { h: u8 },
    Scribble { at: u16, bytes: Vec<u8> },
    Reopen,
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: u8,
    bytes: u16,
    ops: Vec<Op>,
}

/// Small indices, and 255 as `usize::MAX` (the far end of what a caller may pass).
fn index(i: u8) -> usize {
    if i == u8::MAX { usize::MAX } else { i as usize % 40 }
}

fn with_guard(l: &List, f: impl FnOnce(&mut ListGuard<'_, Vec<u8>>)) {
    if let Ok((mut g, _)) = l.get_lock_recover_timeout(WAIT) {
        f(&mut g);
    }
}

/// With `MULTIPROC_FUZZ_SPARE_MUTEX=1`, scribbles that would touch the robust mutex (the first
/// bytes of the payload) are skipped: glibc's pthread mutex aborts on some corrupted kinds (see
/// fuzz/regressions/obj_dict/glibc-mutex-*), which is multiproc-sync's to fix; this lets a run
/// look past it at the collection itself. Off by default.
fn spares_mutex(seg: &multiproc_shm::Segment, at: usize, len: usize) -> bool {
    static SPARE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*SPARE.get_or_init(|| std::env::var_os("MULTIPROC_FUZZ_SPARE_MUTEX").is_some()) {
        return false;
    }
    let start = seg.mapped_len() - seg.payload_len();
    let end = start + std::mem::size_of::<multiproc_sync::RobustMutex>();
    at < end && at + len > start
}

fuzz_target!(|input: Input| {
    let capacity = 1 + input.capacity as usize % 32;
    let bytes = input.bytes as usize % 2048;
    let Ok(l) = List::with_options(capacity, CollectionOptions { bytes: Some(bytes) }) else {
        return;
    };
    let mut reopens = 0;
    let mut handles = vec![l];
    for op in input.ops.iter().take(64) {
        let pick = |h: &u8| &handles[*h as usize % handles.len()];
        match op {
            Op::Append { h, len } => with_guard(pick(h), |g| {
                let _ = g.push(&vec![*len; *len as usize % 80]);
            }),
            Op::Get { h, index: i } => with_guard(pick(h), |g| {
                let _ = g.get(index(*i));
            }),
            Op::Set { h, index: i, len } => with_guard(pick(h), |g| {
                let _ = g.set(index(*i), &vec![*len; *len as usize % 80]);
            }),
            Op::Insert { h, index: i, len } => with_guard(pick(h), |g| {
                let _ = g.insert(index(*i), &vec![*len; *len as usize % 80]);
            }),
            Op::Remove { h, index: i } => with_guard(pick(h), |g| {
                let _ = g.remove(index(*i));
            }),
            Op::Pop { h } => with_guard(pick(h), |g| {
                let _ = g.pop();
            }),
            Op::Len { h } => with_guard(pick(h), |g| {
                let _ = g.len();
            }),
            Op::ToVec { h } => with_guard(pick(h), |g| {
                let _ = g.to_vec();
            }),
            Op::Clear { h } => with_guard(pick(h), |g| {
                let _ = g.clear();
            }),
            Op::Verify { h } => with_guard(pick(h), |g| {
                let _ = g.verify();
            }),
            Op::Scribble { at, bytes } => {
                let seg = handles[0].segment();
                let at = *at as usize % seg.mapped_len();
                let bytes = &bytes[..bytes.len().min(16)];
                if !spares_mutex(seg, at, bytes.len()) {
                    seg.scribble(at, bytes);
                }
            }
            Op::Reopen => {
                // Attempts, not successes, are capped: an open of a segment whose init state
                // was scribbled waits (boundedly, OPEN_WAIT) for a Ready that never comes.
                reopens += 1;
                if reopens <= MAX_REOPENS && handles.len() < MAX_HANDLES {
                    if let Ok(o) = List::open_handle_timeout(&handles[0].handle(), OPEN_WAIT) {
                        handles.push(o);
                    }
                }
            }
        }
    }
});
