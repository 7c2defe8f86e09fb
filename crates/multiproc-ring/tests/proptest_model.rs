//! Both rings against a `VecDeque` model over random operation sequences.

use multiproc_ring::{MpmcRing, PopError, PushError, SpscRing};
use proptest::prelude::*;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
enum Op {
    Push(usize, u8),
    Reserve(usize, u8, Option<usize>), // commit with optional shorter length, None = abandon
    PushBatch(Vec<usize>, u8),
    Pop,
    Peek(bool), // release?
    PopBatch(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..300, any::<u8>()).prop_map(|(l, b)| Op::Push(l, b)),
        (0usize..300, any::<u8>(), proptest::option::of(0usize..300))
            .prop_map(|(l, b, c)| Op::Reserve(l, b, c)),
        (proptest::collection::vec(0usize..100, 0..8), any::<u8>())
            .prop_map(|(v, b)| Op::PushBatch(v, b)),
        Just(Op::Pop),
        any::<bool>().prop_map(Op::Peek),
        (0usize..10).prop_map(Op::PopBatch),
    ]
}

fn rec(len: usize, b: u8) -> Vec<u8> {
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn spsc_matches_vecdeque(cap_log in 6u32..11, ops in proptest::collection::vec(op(), 1..300)) {
        let cap = 1usize << cap_log;
        let ring = SpscRing::new_heap(cap).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let max = ring.max_record();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        // Bytes in use, counting padding conservatively is hard: the model only checks that
        // accepted records come out in order and that Full happens only when the ring holds
        // at least cap/2 bytes of records (a record <= max always fits in a half-empty ring).
        let used = |m: &VecDeque<Vec<u8>>| m.iter().map(|r| (8 + r.len() + 7) & !7).sum::<usize>();
        let mut v = Vec::new();
        for op in ops {
            match op {
                Op::Push(len, b) => {
                    let r = rec(len, b);
                    match tx.try_push(&r) {
                        Ok(()) => model.push_back(r),
                        Err(PushError::TooLarge { .. }) => prop_assert!(len > max),
                        Err(PushError::Full) => prop_assert!(len <= max && used(&model) + ((8 + len + 7) & !7) + 8 + cap / 8 > cap / 2),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Reserve(len, b, commit) => match tx.try_reserve(len) {
                    Ok(mut g) => {
                        let r = rec(len, b);
                        g.as_mut_slice().copy_from_slice(&r);
                        // None: the grant is abandoned, never committed.
                        if let Some(n) = commit {
                            let n = n.min(len);
                            g.commit_len(n);
                            model.push_back(r[..n].to_vec());
                        }
                    }
                    Err(PushError::TooLarge { .. }) => prop_assert!(len > max),
                    Err(PushError::Full) => prop_assert!(used(&model) + ((8 + len + 7) & !7) + 8 + cap / 8 > cap / 2),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::PushBatch(lens, b) => {
                    let recs: Vec<Vec<u8>> = lens.iter().map(|&l| rec(l.min(max), b)).collect();
                    match tx.try_push_batch(&recs) {
                        Ok(n) => model.extend(recs.into_iter().take(n)),
                        Err(PushError::Full) => {}
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Pop => match rx.try_pop_into(&mut v) {
                    Ok(n) => {
                        let m = model.pop_front().unwrap();
                        prop_assert_eq!(n, m.len());
                        prop_assert_eq!(&v, &m);
                    }
                    Err(PopError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::Peek(release) => match rx.try_peek() {
                    Ok(g) => {
                        prop_assert_eq!(g.as_slice(), &model[0][..]);
                        if release {
                            g.release();
                            model.pop_front();
                        }
                    }
                    Err(PopError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::PopBatch(max_n) => {
                    let mut got = Vec::new();
                    match rx.try_pop_batch(max_n, |r| got.push(r.to_vec())) {
                        Ok(n) => {
                            prop_assert_eq!(n, got.len());
                            for g in got {
                                prop_assert_eq!(g, model.pop_front().unwrap());
                            }
                        }
                        Err(PopError::Empty) => prop_assert!(model.is_empty() || max_n == 0),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn mpmc_matches_vecdeque(slots_log in 1u32..6, ops in proptest::collection::vec(op(), 1..300)) {
        let slots = 1usize << slots_log;
        let q = MpmcRing::new_heap(slots, 64).unwrap();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut v = Vec::new();
        for op in ops {
            match op {
                Op::Push(len, b) | Op::Reserve(len, b, _) => {
                    let r = rec(len, b);
                    match q.try_push(&r) {
                        Ok(()) => model.push_back(r),
                        Err(PushError::TooLarge { .. }) => prop_assert!(len > 64),
                        Err(PushError::Full) => prop_assert_eq!(model.len(), slots),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::PushBatch(lens, b) => {
                    for l in lens {
                        let r = rec(l.min(64), b);
                        match q.try_push(&r) {
                            Ok(()) => model.push_back(r),
                            Err(PushError::Full) => prop_assert_eq!(model.len(), slots),
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                }
                Op::Pop | Op::Peek(_) | Op::PopBatch(_) => match q.try_pop_into(&mut v) {
                    Ok(_) => prop_assert_eq!(&v, &model.pop_front().unwrap()),
                    Err(PopError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "{e}"),
                },
            }
        }
    }
}
