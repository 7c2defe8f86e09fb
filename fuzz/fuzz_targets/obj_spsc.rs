//! The SPSC ring as an object in a real (memfd) segment, driven through its API while the fuzzer
//! overwrites any bytes of the segment (header, control block, data) between calls, as a hostile
//! process of the same user could. Every call must return (a value or an error) within its
//! deadline: no panic, no abort, no UB (ASan), no hang, no allocation past the ring's capacity.
#![no_main]

#[path = "sync_common.rs"]
mod common;

use arbitrary::Arbitrary;
use common::T;
use libfuzzer_sys::fuzz_target;
use multiproc_ring::{Consumer, Producer, SpscRing};

/// Every blocking call's deadline.

#[derive(Arbitrary, Debug)]
enum Op {
    Push(u16),
    PushTimeout(u16),
    PushBatch(Vec<u8>),
    Reserve { len: u16, commit: Option<u16> },
    Pop,
    PopTimeout,
    Peek { release: bool },
    PeekTimeout,
    PopBatch(u8),
    PopBatchTimeout(u8),
    IsEmpty,
    Disconnected,
    /// Drops and re-attaches a side (closing it first: attaching must then be refused).
    Reattach { producer: bool },
    Stats,
    Scribble { at: u32, bytes: Vec<u8> },
    Reopen,
}

#[derive(Arbitrary, Debug)]
struct Input {
    cap_log: u8,
    ops: Vec<Op>,
}

fn rec(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// Checks what the consumer handed out against the ring's local limit.
fn check_len(n: usize, max: usize) {
    assert!(n <= max, "record of {n} bytes from a ring whose max record is {max}");
}

fuzz_target!(|input: Input| {
    common::init();
    let cap = 1usize << (6 + input.cap_log % 6);
    let Ok(ring) = SpscRing::new(cap) else {
        return;
    };
    let max = ring.max_record();
    let seg = ring.segment().expect("segment ring").clone();
    let mut tx: Option<Producer> = ring.producer().ok();
    let mut rx: Option<Consumer> = ring.consumer().ok();
    let mut v = Vec::new();
    let mut stale = false;
    for op in input.ops.iter().take(64) {
        match op {
            Op::Push(len) => {
                if let Some(tx) = tx.as_mut() {
                    let _ = tx.try_push(&rec(*len as usize % (cap + 16)));
                }
            }
            Op::PushTimeout(len) => {
                if let Some(tx) = tx.as_mut() {
                    let _ = tx.push_timeout(&rec(*len as usize % (cap + 16)), T);
                }
            }
            Op::PushBatch(lens) => {
                if let Some(tx) = tx.as_mut() {
                    let recs: Vec<Vec<u8>> =
                        lens.iter().take(16).map(|l| rec(*l as usize)).collect();
                    if lens.len() % 2 == 0 {
                        let _ = tx.try_push_batch(&recs);
                    } else {
                        let _ = tx.push_batch_timeout(&recs, T);
                    }
                }
            }
            Op::Reserve { len, commit } => {
                if let Some(tx) = tx.as_mut()
                    && let Ok(mut g) = tx.reserve_timeout(*len as usize % (cap + 16), T)
                {
                    assert!(g.len() <= max);
                    g.as_mut_slice().fill(0xab);
                    match commit {
                        Some(n) => g.commit_len(*n as usize),
                        None => drop(g),
                    }
                }
            }
            Op::Pop => {
                if let Some(rx) = rx.as_mut()
                    && let Ok(n) = rx.try_pop_into(&mut v)
                {
                    check_len(n, max);
                    assert_eq!(n, v.len());
                }
            }
            Op::PopTimeout => {
                if let Some(rx) = rx.as_mut()
                    && let Ok(n) = rx.pop_into_timeout(&mut v, T)
                {
                    check_len(n, max);
                }
            }
            Op::Peek { release } => {
                if let Some(rx) = rx.as_mut()
                    && let Ok(g) = rx.try_peek()
                {
                    check_len(g.as_slice().len(), max);
                    if *release {
                        g.release();
                    }
                }
            }
            Op::PeekTimeout => {
                if let Some(rx) = rx.as_mut()
                    && let Ok(g) = rx.peek_timeout(T)
                {
                    check_len(g.len(), max);
                    g.release();
                }
            }
            Op::PopBatch(n) => {
                if let Some(rx) = rx.as_mut() {
                    let _ = rx.try_pop_batch(*n as usize % 16, |r| check_len(r.len(), max));
                }
            }
            Op::PopBatchTimeout(n) => {
                if let Some(rx) = rx.as_mut() {
                    let _ =
                        rx.pop_batch_timeout(*n as usize % 16, |r| check_len(r.len(), max), T);
                }
            }
            Op::IsEmpty => {
                if let Some(rx) = rx.as_mut() {
                    let _ = rx.is_empty();
                }
            }
            Op::Disconnected => {
                if let Some(tx) = tx.as_ref() {
                    let _ = tx.is_disconnected();
                }
                if let Some(rx) = rx.as_ref() {
                    let _ = rx.is_disconnected();
                }
            }
            Op::Reattach { producer } => {
                if *producer {
                    drop(tx.take());
                    tx = ring.producer().ok();
                } else {
                    drop(rx.take());
                    rx = ring.consumer().ok();
                }
            }
            Op::Stats => {
                let _ = multiproc_ring::spsc::stats_of(&seg);
            }
            Op::Scribble { at, bytes } => stale |= common::scribble(&seg, *at, bytes),
            // After a scribble of the init state an open waits (boundedly) for a Ready that
            // never comes: see `common::scribble`.
            Op::Reopen if stale => {}
            Op::Reopen => {
                if let Some(h) = ring.handle()
                    && let Ok(r2) = SpscRing::open_handle(&h)
                {
                    assert_eq!(r2.capacity(), ring.capacity());
                    // Attaching to a live side is refused; to a side whose owner word was
                    // scribbled it may succeed. Either way: a value or an error.
                    let _ = r2.producer().map(|mut p| p.try_push(b"x"));
                    let _ = r2.consumer().map(|mut c| c.try_pop_into(&mut v));
                }
            }
        }
    }
});
