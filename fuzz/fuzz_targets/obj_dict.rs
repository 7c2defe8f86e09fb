//! SharedDict under a hostile co-tenant: between API calls the fuzzer overwrites any bytes of
//! the dict's segment (header, mutex, geometry, journal, counters, tables, arenas) and opens new
//! handles to it; every call goes through `get_lock_timeout` (a few ms) and must return a value
//! or an error — no panic, no abort, no hang, no allocation past one arena.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use multiproc_collections::{CollectionOptions, DictGuard, SharedDict};
use std::time::Duration;

const WAIT: Duration = Duration::from_micros(200);
const MAX_HANDLES: usize = 4;
const MAX_REOPENS: usize = 3;
const OPEN_WAIT: Duration = Duration::from_millis(5);

type Dict = SharedDict<u8, Vec<u8>>;

#[derive(Arbitrary, Debug)]
enum Op {
    Insert { h: u8, key: u8, len: u8 },
    Get { h: u8, key: u8 },
    Remove { h: u8, key: u8 },
    Update { h: u8, key: u8, len: u8 },
    Contains { h: u8, key: u8 },
    Len { h: u8 },
    Iter { h: u8 },
    Compact { h: u8 },
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

fn with_guard(d: &Dict, f: impl FnOnce(&mut DictGuard<'_, u8, Vec<u8>>)) {
    if let Ok((mut g, _)) = d.get_lock_recover_timeout(WAIT) {
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
    let Ok(d) = Dict::with_options(capacity, CollectionOptions { bytes: Some(bytes) }) else {
        return;
    };
    let mut reopens = 0;
    let mut handles = vec![d];
    for op in input.ops.iter().take(64) {
        let pick = |h: &u8| &handles[*h as usize % handles.len()];
        match op {
            Op::Insert { h, key, len } => with_guard(pick(h), |g| {
                let _ = g.insert(&(key % 24), &vec![*key; *len as usize % 80]);
            }),
            Op::Get { h, key } => with_guard(pick(h), |g| {
                let _ = g.get(&(key % 24));
            }),
            Op::Remove { h, key } => with_guard(pick(h), |g| {
                let _ = g.remove(&(key % 24));
            }),
            Op::Update { h, key, len } => with_guard(pick(h), |g| {
                let _ = g.update(&(key % 24), |v| {
                    let mut v = v.unwrap_or_default();
                    v.resize(*len as usize % 80, *key);
                    v
                });
            }),
            Op::Contains { h, key } => with_guard(pick(h), |g| {
                let _ = g.contains_key(&(key % 24));
            }),
            Op::Len { h } => with_guard(pick(h), |g| {
                let _ = g.len();
            }),
            Op::Iter { h } => with_guard(pick(h), |g| {
                let _ = g.items();
                let _ = g.keys();
            }),
            Op::Compact { h } => with_guard(pick(h), |g| {
                let _ = g.compact();
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
                    if let Ok(o) = Dict::open_handle_timeout(&handles[0].handle(), OPEN_WAIT) {
                        handles.push(o);
                    }
                }
            }
        }
    }
});
