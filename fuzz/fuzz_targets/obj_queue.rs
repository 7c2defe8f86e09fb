//! Queue under a hostile process: API calls with short deadlines, interleaved with arbitrary
//! overwrites of the queue's segments (control block and ring, headers included) and of the side
//! segments of large messages in flight. Passes when every call returns.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::T;
use libfuzzer_sys::fuzz_target;
use multiproc_channel::{Queue, QueueOptions};
use std::os::unix::fs::FileExt;


#[derive(Arbitrary, Debug)]
enum Op {
    /// `len` up to 4 KiB (`LEN_CAP`): anything over a slot goes through a side segment, anything
    /// over `MAX_MESSAGE` is refused.
    Put { h: u8, len: u16, fill: u8 },
    PutNowait { h: u8, len: u16, fill: u8 },
    Get { h: u8 },
    GetNowait { h: u8 },
    Query { h: u8 },
    Scribble { seg: u8, at: u32, bytes: Vec<u8> },
    /// Overwrites bytes of a side segment in flight (header included), if there is one.
    ScribbleSide { which: u8, at: u32, bytes: Vec<u8> },
    Reopen { h: u8 },
    Close { h: u8 },
    CloseAll { h: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    maxsize: u8,
    slot: u8,
    ops: Vec<Op>,
}

/// Message lengths are taken modulo this. Up to 64 KiB, the per-byte coverage callbacks of
/// encoding and decoding long `Vec<u8>`s were most of the run's time (~600 inputs/s); every
/// length past the largest slot (1,148 bytes) takes the same side-segment path.
const LEN_CAP: usize = 4096;
/// The queue's message limit: below `LEN_CAP`, so puts are also refused as too large.
const MAX_MESSAGE: usize = 3072;

fn side_files(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fuzz_target!(|input: Input| {
    common::init();
    common::short_ring_waits();
    let opts = QueueOptions {
        slot_size: 128 + usize::from(input.slot) * 4,
        max_message: MAX_MESSAGE,
    };
    let Ok(q) = Queue::<Vec<u8>>::with_options(1 + usize::from(input.maxsize % 8), opts) else {
        return;
    };
    let prefix = q.debug_side_prefix();
    let segs = q.debug_segments();
    let mut hs = vec![q];
    let mut stale = false;
    for op in input.ops.into_iter().take(64) {
        let n = hs.len();
        let pick = |h: u8| usize::from(h) % n;
        match op {
            Op::Put { h, len, fill } => {
                let _ = hs[pick(h)].put_timeout(vec![fill; usize::from(len) % LEN_CAP], T);
            }
            Op::PutNowait { h, len, fill } => {
                let _ = hs[pick(h)].put_nowait(vec![fill; usize::from(len) % LEN_CAP]);
            }
            Op::Get { h } => {
                let _ = hs[pick(h)].get_timeout(T);
            }
            Op::GetNowait { h } => {
                let _ = hs[pick(h)].get_nowait();
            }
            Op::Query { h } => {
                let q = &hs[pick(h)];
                let (s, m) = (q.qsize(), q.maxsize());
                assert!(s <= m, "qsize {s} > maxsize {m}");
                let _ = (q.full(), q.empty(), q.lost_records());
            }
            Op::Scribble { seg, at, bytes } => {
                let s = &segs[usize::from(seg) % segs.len()];
                stale |= common::scribble(s, at, &bytes);
            }
            Op::ScribbleSide { which, at, bytes } => {
                let files = side_files(&prefix);
                if !files.is_empty() {
                    let f = &files[usize::from(which) % files.len()];
                    if let Ok(file) = std::fs::OpenOptions::new()
                        .write(true)
                        .open(format!("/dev/shm/{f}"))
                    {
                        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                        if len > 0 {
                            let at = u64::from(at) % len;
                            let b = &bytes[..bytes.len().min(16).min((len - at) as usize)];
                            let _ = file.write_all_at(b, at);
                        }
                    }
                }
            }
            // After a scribble of an init state an open waits (boundedly) for a Ready that
            // never comes: see `common::scribble`.
            Op::Reopen { .. } if stale => {}
            Op::Reopen { h } => {
                let bytes = postcard::to_allocvec(&hs[pick(h)]);
                if let Ok(b) = bytes
                    && let Ok(q2) = postcard::from_bytes::<Queue<Vec<u8>>>(&b)
                    && hs.len() < 8
                {
                    hs.push(q2);
                }
            }
            Op::Close { h } => {
                let i = pick(h);
                hs[i].close();
            }
            Op::CloseAll { h } => hs[pick(h)].close_all(),
        }
    }
    drop(hs);
    // Side segments still in the queue when it went away: ours to remove (a real program's are
    // removed by their consumer, or by `multiproc clean` once their producer is dead).
    for f in side_files(&prefix) {
        let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
    }
});
