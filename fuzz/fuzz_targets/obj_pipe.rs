//! Pipe under a hostile process: both ends of a duplex pipe driven with short deadlines,
//! interleaved with arbitrary overwrites of its rings (headers included). Passes when every call
//! returns.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::T;
use libfuzzer_sys::fuzz_target;
use multiproc_channel::{Connection, Pipe, PipeOptions};


#[derive(Arbitrary, Debug)]
enum Op {
    /// Up to 64 KiB: larger than the 4 KiB ring's record, so it goes as fragments.
    Send { end: bool, len: u16, fill: u8 },
    SendBytes { end: bool, len: u16, off: u16 },
    /// Three parts sent as one message (`send_bytes_vectored_timeout`).
    SendParts { end: bool, lens: [u16; 3] },
    Recv { end: bool },
    RecvBytes { end: bool },
    RecvInto { end: bool, cap: u16, off: u8 },
    Poll { end: bool },
    Scribble { seg: u8, at: u32, bytes: Vec<u8> },
    Reopen { end: bool },
    Close { end: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    simplex: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    common::init();
    let opts = PipeOptions {
        capacity: 4096,
        max_message: 1 << 20,
    };
    let made = if input.simplex {
        Pipe::simplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts)
    } else {
        Pipe::duplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts)
    };
    let Ok((a, b)) = made else {
        return;
    };
    let mut segs = a.debug_segments();
    segs.extend(b.debug_segments());
    let mut ends: [Connection<Vec<u8>>; 2] = [a, b];
    let mut extra: Vec<Connection<Vec<u8>>> = Vec::new();
    let mut stale = false;
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Send { end, len, fill } => {
                let _ = ends[usize::from(end)].send_timeout(&vec![fill; usize::from(len)], T);
            }
            Op::SendBytes { end, len, off } => {
                let buf = vec![7u8; usize::from(len)];
                let _ = ends[usize::from(end)].send_bytes_timeout(&buf, usize::from(off), None, T);
            }
            Op::SendParts { end, lens } => {
                let parts: Vec<Vec<u8>> =
                    lens.iter().map(|&n| vec![n as u8; usize::from(n)]).collect();
                let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                let _ = ends[usize::from(end)].send_bytes_vectored_timeout(&refs, T);
            }
            Op::Recv { end } => {
                let _ = ends[usize::from(end)].recv_timeout(T);
            }
            Op::RecvBytes { end } => {
                let _ = ends[usize::from(end)].recv_bytes_timeout(T);
            }
            Op::RecvInto { end, cap, off } => {
                let mut buf = vec![0u8; usize::from(cap)];
                let _ = ends[usize::from(end)].recv_bytes_into_timeout(&mut buf, usize::from(off), T);
            }
            Op::Poll { end } => {
                let _ = ends[usize::from(end)].poll(T);
            }
            Op::Scribble { seg, at, bytes } => {
                if !segs.is_empty() {
                    let s = &segs[usize::from(seg) % segs.len()];
                    stale |= common::scribble(s, at, &bytes);
                }
            }
            // After a scribble of an init state an open waits (boundedly) for a Ready that
            // never comes: see `common::scribble`.
            Op::Reopen { .. } if stale => {}
            Op::Reopen { end } => {
                if let Ok(b) = postcard::to_allocvec(&ends[usize::from(end)])
                    && let Ok(c) = postcard::from_bytes::<Connection<Vec<u8>>>(&b)
                    && extra.len() < 4
                {
                    extra.push(c);
                }
            }
            Op::Close { end } => ends[usize::from(end)].close(),
        }
    }
});
