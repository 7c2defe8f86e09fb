//! Arbitrary operation sequences on the SPSC and MPMC rings (heap), checked against a
//! `VecDeque` model: every accepted record comes out once, in order, byte for byte.
//! SPSC deferred publication (`push_deferred`, `commit_deferred`/`commit_len_deferred`,
//! `flush`) is modelled by a second queue: deferred records stay invisible to the consumer
//! until the producer publishes them (its `pending()` drops to 0: flush, a publishing push or
//! commit, a batch, a full ring, or the batch bound), and then come out before anything later.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use multiproc_ring::{MpmcRing, PopError, PushError, SpscRing};
use std::collections::VecDeque;

#[derive(Arbitrary, Debug)]
enum Op {
    Push(u16, u8),
    Reserve(u16, u8, Option<u16>),
    PushBatch(Vec<u8>, u8),
    Pop,
    Peek(bool),
    PopBatch(u8),
    /// `try_reserve` + `commit_deferred` (`None`) / `commit_len_deferred` (`Some`); with
    /// `push_deferred` instead when the flag is set (called only once `try_reserve` showed
    /// room, since it waits).
    Deferred(u16, u8, Option<u16>, bool),
    Flush,
}

#[derive(Arbitrary, Debug)]
struct Input {
    cap_log: u8,
    slots_log: u8,
    slot_size: u8,
    ops: Vec<Op>,
}

fn rec(len: usize, b: u8) -> Vec<u8> {
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

fuzz_target!(|input: Input| {
    let cap = 1usize << (6 + input.cap_log % 8);
    let ring = SpscRing::new_heap(cap).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let max = ring.max_record();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    // Written with deferred publication and not yet published (after `model`'s records).
    let mut deferred: VecDeque<Vec<u8>> = VecDeque::new();
    let mut v = Vec::new();
    for op in &input.ops {
        match *op {
            Op::Push(len, b) => {
                let r = rec(len as usize % (cap + 8), b);
                match tx.try_push(&r) {
                    Ok(()) => {
                        // A publishing push publishes the deferred batch before it.
                        model.extend(deferred.drain(..));
                        model.push_back(r);
                    }
                    Err(PushError::TooLarge { .. }) => assert!(r.len() > max),
                    Err(PushError::Full) => assert!(!model.is_empty() || !deferred.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Reserve(len, b, commit) => {
                let len = len as usize % (cap + 8);
                match tx.try_reserve(len) {
                    Ok(mut g) => {
                        let r = rec(len, b);
                        g.as_mut_slice().copy_from_slice(&r);
                        if let Some(n) = commit {
                            let n = (n as usize).min(len);
                            g.commit_len(n);
                            model.extend(deferred.drain(..));
                            model.push_back(r[..n].to_vec());
                        }
                    }
                    Err(PushError::TooLarge { .. }) => assert!(len > max),
                    Err(PushError::Full) => assert!(!model.is_empty() || !deferred.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Deferred(len, b, commit, push) => {
                let len = len as usize % (cap + 8);
                let r = rec(len, b);
                match tx.try_reserve(len) {
                    Ok(_) if push => {
                        // The grant was dropped unused (abandoned); `push_deferred` now finds
                        // the same room, so it does not wait.
                        tx.push_deferred(&r).unwrap();
                        deferred.push_back(r);
                    }
                    Ok(mut g) => {
                        g.as_mut_slice().copy_from_slice(&r);
                        match commit {
                            Some(n) => {
                                let n = (n as usize).min(len);
                                g.commit_len_deferred(n);
                                deferred.push_back(r[..n].to_vec());
                            }
                            None => {
                                g.commit_deferred();
                                deferred.push_back(r);
                            }
                        }
                    }
                    Err(PushError::TooLarge { .. }) => assert!(len > max),
                    Err(PushError::Full) => assert!(!model.is_empty() || !deferred.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Flush => {
                tx.flush();
                assert_eq!(tx.pending(), 0);
            }
            Op::PushBatch(ref lens, b) => {
                let recs: Vec<Vec<u8>> = lens.iter().map(|&l| rec((l as usize).min(max), b)).collect();
                match tx.try_push_batch(&recs) {
                    Ok(n) => {
                        model.extend(deferred.drain(..));
                        model.extend(recs.into_iter().take(n));
                    }
                    Err(PushError::Full) => assert!(!model.is_empty() || !deferred.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Pop => match rx.try_pop_into(&mut v) {
                Ok(_) => assert_eq!(v, model.pop_front().unwrap()),
                Err(PopError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            Op::Peek(release) => match rx.try_peek() {
                Ok(g) => {
                    assert_eq!(g.as_slice(), &model[0][..]);
                    if release {
                        g.release();
                        model.pop_front();
                    }
                }
                Err(PopError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            Op::PopBatch(n) => {
                let mut got = Vec::new();
                match rx.try_pop_batch(n as usize, |r| got.push(r.to_vec())) {
                    Ok(_) => {
                        for g in got {
                            assert_eq!(g, model.pop_front().unwrap());
                        }
                    }
                    Err(PopError::Empty) => assert!(model.is_empty() || n == 0),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // A deferred batch is published all at once (flush, a full ring, the batch bound), or
        // not at all: the producer's count is the model's, or 0 once it went out.
        if tx.pending() == 0 {
            model.extend(deferred.drain(..));
        } else {
            assert_eq!(tx.pending(), deferred.len());
        }
    }
    // Dropping the producer publishes what is still deferred; the consumer drains it all.
    drop(tx);
    model.extend(deferred.drain(..));
    loop {
        match rx.try_pop_into(&mut v) {
            Ok(_) => assert_eq!(v, model.pop_front().unwrap()),
            Err(PopError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(model.is_empty());

    // Any slot count in 2..=64 (lap-encoded positions when it is not a power of two).
    let slots = 2 + input.slots_log as usize % 63;
    let slot_size = 1 + input.slot_size as usize;
    let q = MpmcRing::new_heap(slots, slot_size).unwrap();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    for op in &input.ops {
        match *op {
            Op::Push(len, b) | Op::Reserve(len, b, _) => {
                let r = rec(len as usize % 300, b);
                match q.try_push(&r) {
                    Ok(()) => model.push_back(r),
                    Err(PushError::TooLarge { .. }) => assert!(r.len() > slot_size),
                    Err(PushError::Full) => assert_eq!(model.len(), slots),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::PushBatch(..) | Op::Deferred(..) | Op::Flush => {}
            Op::Pop | Op::Peek(_) | Op::PopBatch(_) => match q.try_pop_into(&mut v) {
                Ok(_) => assert_eq!(v, model.pop_front().unwrap()),
                Err(PopError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
        }
    }
});
