//! Deterministic crash-point sweep (feature `failpoints`): for every n, a child runs a fixed
//! sequence of operations and SIGKILLs itself at the n-th crash point of the update protocol
//! (between two specific stores of a journaled commit, of its replay, or of a compaction /
//! rebuild). The next locker must see OwnerDied and a structure equal to the state before or
//! after the operation in flight — never anything in between — and it must keep working.

mod common;

use common::{Exit, fork};
use multiproc_collections::{CollectionOptions, SharedDict, SharedList, arm_crash_point};
use multiproc_sync::RawValue;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Insert(u32, Vec<u8>),
    Remove(u32),
    Update(u32, usize),
    Clear,
}

fn ops() -> Vec<Op> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..150)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 12) as u32;
            match (x >> 8) % 10 {
                _ if i == 100 => Op::Clear,
                0..=4 => Op::Insert(k, vec![k as u8; ((x >> 16) % 40) as usize]),
                5..=6 => Op::Remove(k),
                _ => Op::Update(k, ((x >> 16) % 30) as usize),
            }
        })
        .collect()
}

fn apply(d: &SharedDict<u32, Vec<u8>>, op: &Op) {
    // Full answers are part of the deterministic behaviour (small arena), not failures.
    let _ = match op {
        Op::Insert(k, v) => d.insert(k, v).map(|_| ()),
        Op::Remove(k) => d.remove(k).map(|_| ()),
        Op::Update(k, n) => d
            .update(k, |old| {
                let mut v = old.unwrap_or_default();
                v.resize(*n, *k as u8);
                v
            })
            .map(|_| ()),
        Op::Clear => d.clear(),
    };
}

fn dict() -> SharedDict<u32, Vec<u8>> {
    SharedDict::with_options(16, CollectionOptions { bytes: Some(400) }).unwrap()
}

fn snapshot(items: Vec<(u32, Vec<u8>)>) -> Vec<(u32, Vec<u8>)> {
    let mut items = items;
    items.sort();
    items
}

#[test]
fn dict_survives_a_kill_at_every_crash_point() {
    let ops = ops();
    // The states after each prefix, from an uninterrupted run.
    let model = dict();
    let mut states = vec![snapshot(model.items().unwrap())];
    for op in &ops {
        apply(&model, op);
        states.push(snapshot(model.items().unwrap()));
    }
    let mut points = 0u64;
    for n in 1.. {
        let d = dict();
        let progress = RawValue::new(0u64).unwrap();
        let (d2, p2, ops2) = (d.clone(), progress.clone(), ops.clone());
        let mut child = fork(move || {
            arm_crash_point(n);
            for (i, op) in ops2.iter().enumerate() {
                p2.store(i as u64);
                apply(&d2, op);
            }
            0
        });
        match child.wait_timeout(Duration::from_secs(30)) {
            Exit::Code(0) => break,
            Exit::Signal(libc::SIGKILL) => {}
            other => panic!("crash point {n}: child ended with {other:?}"),
        }
        points = n;
        let i = progress.load() as usize;
        let g = match d.get_lock_recover() {
            Ok((g, true)) => g,
            Ok(_) => panic!("crash point {n}: no OwnerDied (every crash point is under the lock)"),
            Err(e) => panic!("crash point {n}: {e}"),
        };
        g.verify()
            .unwrap_or_else(|e| panic!("crash point {n} in op {i} {:?}: {e}", ops[i]));
        let got = snapshot(g.items().unwrap());
        assert!(
            got == states[i] || got == states[i + 1],
            "crash point {n} in op {i} {:?}: state is neither before nor after it\n got {got:?}\n before {:?}\n after {:?}",
            ops[i],
            states[i],
            states[i + 1]
        );
        drop(g);
        // And it keeps working.
        d.insert(&999, &vec![1, 2, 3]).ok();
        d.verify().unwrap();
    }
    println!("dict: {points} crash points checked");
    assert!(points > 300, "too few crash points: {points}");
}

#[test]
fn list_survives_a_kill_at_every_crash_point() {
    let mk =
        || SharedList::<Vec<u8>>::with_options(12, CollectionOptions { bytes: Some(300) }).unwrap();
    let run = |l: &SharedList<Vec<u8>>, i: usize| {
        let v = vec![i as u8; i % 37];
        let len = l.len().unwrap_or(0);
        let _ = match i % 7 {
            0 | 1 => l.push(&v),
            2 => l.pop().map(|_| ()),
            3 if len > 0 => l.set(i % len, &v),
            4 => l.insert(i % (len + 1), &v),
            5 if len > 0 => l.remove(i % len).map(|_| ()),
            6 if i % 50 == 6 => l.clear(),
            _ => Ok(()),
        };
    };
    const OPS: usize = 150;
    let model = mk();
    let mut states = vec![model.to_vec().unwrap()];
    for i in 0..OPS {
        run(&model, i);
        states.push(model.to_vec().unwrap());
    }
    let mut points = 0;
    for n in 1.. {
        let l = mk();
        let progress = RawValue::new(0u64).unwrap();
        let (l2, p2) = (l.clone(), progress.clone());
        let mut child = fork(move || {
            arm_crash_point(n);
            for i in 0..OPS {
                p2.store(i as u64);
                run(&l2, i);
            }
            0
        });
        match child.wait_timeout(Duration::from_secs(30)) {
            Exit::Code(0) => break,
            Exit::Signal(libc::SIGKILL) => {}
            other => panic!("crash point {n}: child ended with {other:?}"),
        }
        points = n;
        let i = progress.load() as usize;
        let g = match l.get_lock_recover() {
            Ok((g, true)) => g,
            Ok(_) => panic!("crash point {n}: no OwnerDied"),
            Err(e) => panic!("crash point {n}: {e}"),
        };
        g.verify()
            .unwrap_or_else(|e| panic!("crash point {n} in op {i}: {e}"));
        let got = g
            .to_vec()
            .unwrap_or_else(|e| panic!("crash point {n} in op {i}: {e}"));
        assert!(
            got == states[i] || got == states[i + 1],
            "crash point {n} in op {i}: neither before nor after\n got {got:?}\n before {:?}\n after {:?}",
            states[i],
            states[i + 1]
        );
        drop(g);
        l.push(&vec![5; 5]).ok();
        l.verify().unwrap();
    }
    println!("list: {points} crash points checked");
    assert!(points > 300, "too few crash points: {points}");
}
