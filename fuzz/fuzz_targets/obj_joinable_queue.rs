//! JoinableQueue under a hostile process: put/get/task_done/join with short deadlines,
//! interleaved with arbitrary overwrites of its segments (unfinished count included). Passes
//! when every call returns.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::T;
use libfuzzer_sys::fuzz_target;
use multiproc_channel::JoinableQueue;


#[derive(Arbitrary, Debug)]
enum Op {
    Put { h: u8, v: u32 },
    Get { h: u8 },
    GetNowait { h: u8 },
    TaskDone { h: u8 },
    Join { h: u8 },
    Query { h: u8 },
    Scribble { seg: u8, at: u32, bytes: Vec<u8> },
    Reopen { h: u8 },
    CloseAll { h: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    maxsize: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    common::init();
    common::short_ring_waits();
    let Ok(q) = JoinableQueue::<u32>::new(1 + usize::from(input.maxsize % 8)) else {
        return;
    };
    let segs = q.debug_segments();
    let mut hs = vec![q];
    let mut stale = false;
    for op in input.ops.into_iter().take(64) {
        let n = hs.len();
        let pick = |h: u8| usize::from(h) % n;
        match op {
            Op::Put { h, v } => {
                let _ = hs[pick(h)].put_timeout(v, T);
            }
            Op::Get { h } => {
                let _ = hs[pick(h)].get_timeout(T);
            }
            Op::GetNowait { h } => {
                let _ = hs[pick(h)].get_nowait();
            }
            Op::TaskDone { h } => {
                let _ = hs[pick(h)].task_done();
            }
            Op::Join { h } => {
                let _ = hs[pick(h)].join_timeout(T);
            }
            Op::Query { h } => {
                let q = &hs[pick(h)];
                assert!(q.qsize() <= q.maxsize());
                let _ = (q.full(), q.empty(), q.unfinished());
            }
            Op::Scribble { seg, at, bytes } => {
                let s = &segs[usize::from(seg) % segs.len()];
                stale |= common::scribble(s, at, &bytes);
            }
            // After a scribble of an init state an open waits (boundedly) for a Ready that
            // never comes: see `common::scribble`.
            Op::Reopen { .. } if stale => {}
            Op::Reopen { h } => {
                if let Ok(b) = postcard::to_allocvec(&hs[pick(h)])
                    && let Ok(q2) = postcard::from_bytes::<JoinableQueue<u32>>(&b)
                    && hs.len() < 8
                {
                    hs.push(q2);
                }
            }
            Op::CloseAll { h } => hs[pick(h)].close_all(),
        }
    }
});
