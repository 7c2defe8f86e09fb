//! A holder SIGKILLed at random moments (dozens of times, mostly inside the critical section)
//! leaves the dict / list consistent for the next locker: every key readable, every value
//! decodes and is intact, `len` matches, and a two-key update made under one guard is seen
//! either whole or as a known half (the dead holder's sequence, reported as OwnerDied).

mod common;

use common::fork;
use multiproc_collections::{CollectionOptions, SharedDict, SharedList, WriteError};
use multiproc_sync::RawValue;
use multiproc_testutil::Rng;
use std::time::{Duration, Instant};

const KILLS: u32 = 80;

/// Ok, or a clean capacity answer (the test fills its small arenas on purpose).
fn fine<T>(r: Result<T, WriteError>) -> bool {
    matches!(r, Ok(_) | Err(WriteError::Full { .. }))
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t | 1
}

/// A value whose bytes say what they should be: len bytes, each `len as u8 ^ tag`.
fn pattern(tag: u8, len: usize) -> Vec<u8> {
    vec![(len as u8) ^ tag; len]
}

fn intact(tag: u8, v: &[u8]) -> bool {
    v.iter().all(|b| *b == (v.len() as u8) ^ tag)
}

fn wait_started(started: &RawValue<u32>, before: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while started.load() == before {
        assert!(Instant::now() < deadline, "child never started");
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[test]
fn dict_holder_sigkilled_at_random_points_leaves_a_consistent_dict() {
    // Small arena: compaction (the bulk path) runs every few dozen operations.
    let d: SharedDict<String, Vec<u8>> =
        SharedDict::with_options(64, CollectionOptions { bytes: Some(3000) }).unwrap();
    let pair: SharedDict<String, u64> = SharedDict::with_capacity(4).unwrap();
    let started = RawValue::new(0u32).unwrap();
    let mut rng = Rng(seed());
    let mut owner_died = 0;
    println!("seed {}", rng.0);
    for kill in 0..KILLS {
        let child_seed = rng.next() | 1;
        let (d2, p2, s2) = (d.clone(), pair.clone(), started.clone());
        let before = started.load();
        let mut child = fork(move || {
            let mut r = Rng(child_seed);
            s2.store(s2.load() + 1);
            loop {
                let x = r.next();
                let key = format!("k{}", x % 48);
                let tag = (x % 48) as u8;
                match (x >> 8) % 16 {
                    0..=6 => {
                        let v = pattern(tag, ((x >> 16) % 60) as usize);
                        if !fine(d2.insert(&key, &v)) {
                            return 2;
                        }
                    }
                    7..=9 => {
                        if d2.remove(key.as_str()).is_err() {
                            return 3;
                        }
                    }
                    10..=12 => {
                        let n = ((x >> 16) % 60) as usize;
                        if !fine(d2.update(key.as_str(), |_| pattern(tag, n))) {
                            return 4;
                        }
                    }
                    13 if (x >> 20).is_multiple_of(64) => {
                        if d2.clear().is_err() {
                            return 5;
                        }
                    }
                    _ => {
                        // Two updates under one guard: a death between them leaves a = b + 1.
                        let mut g = match p2.get_lock_recover() {
                            Ok((g, _)) => g,
                            Err(_) => return 6,
                        };
                        if g.update("a", |v| v.unwrap_or(0) + 1).is_err()
                            || g.update("b", |v| v.unwrap_or(0) + 1).is_err()
                        {
                            return 7;
                        }
                    }
                }
            }
        });
        wait_started(&started, before);
        std::thread::sleep(Duration::from_micros(rng.next() % 3000));
        assert_eq!(
            child.exited(),
            None,
            "kill {kill}: the child stopped on its own"
        );
        child.kill();

        // The next locker: maybe OwnerDied; the structure must be whole either way.
        let g = match d.get_lock_recover() {
            Ok((g, false)) => g,
            Ok((g, true)) => {
                owner_died += 1;
                g
            }
            Err(e) => panic!("kill {kill}: lock failed: {e}"),
        };
        let n = g.verify().unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        assert_eq!(g.len().unwrap(), n);
        let items = g.items().unwrap();
        assert_eq!(items.len(), n);
        for (k, v) in &items {
            let tag: u8 = k[1..].parse().unwrap();
            assert!(intact(tag, v), "kill {kill}: value of {k} damaged: {v:?}");
            assert_eq!(g.get(k.as_str()).unwrap().as_ref(), Some(v));
        }
        drop(g);
        let mut pg = match pair.get_lock_recover() {
            Ok((g, false)) => g,
            Ok((g, true)) => {
                owner_died += 1;
                g
            }
            Err(e) => panic!("{e}"),
        };
        pg.verify().unwrap();
        let a = pg.get("a").unwrap().unwrap_or(0);
        let b = pg.get("b").unwrap().unwrap_or(0);
        assert!(a == b || a == b + 1, "kill {kill}: a={a} b={b}");
        pg.insert(&"b".into(), &a).unwrap();
    }
    println!(
        "{KILLS} kills, {owner_died} OwnerDied, dict recoveries {}, pair recoveries {}",
        d.recoveries(),
        pair.recoveries()
    );
    assert!(owner_died > 0, "no kill landed inside a critical section");
}

#[test]
fn list_holder_sigkilled_at_random_points_leaves_a_consistent_list() {
    let l: SharedList<Vec<u8>> =
        SharedList::with_options(40, CollectionOptions { bytes: Some(1500) }).unwrap();
    let started = RawValue::new(0u32).unwrap();
    let mut rng = Rng(seed() ^ 0x5555);
    let mut owner_died = 0;
    for kill in 0..KILLS {
        let child_seed = rng.next() | 1;
        let (l2, s2) = (l.clone(), started.clone());
        let before = started.load();
        let mut child = fork(move || {
            let mut r = Rng(child_seed);
            s2.store(s2.load() + 1);
            loop {
                let x = r.next();
                let v = pattern(7, ((x >> 16) % 50) as usize);
                let len = match l2.len() {
                    Ok(n) => n,
                    Err(_) => return 2,
                };
                let i = if len == 0 {
                    0
                } else {
                    (x >> 32) as usize % len
                };
                let ok = match (x >> 8) % 10 {
                    0..=2 if len < 40 => fine(l2.push(&v)),
                    3 => fine(l2.pop()),
                    4..=5 if len > 0 => fine(l2.set(i, &v)),
                    6..=7 if len < 40 => fine(l2.insert(i, &v)),
                    8 if len > 0 => fine(l2.remove(i)),
                    9 if (x >> 20).is_multiple_of(64) => fine(l2.clear()),
                    _ => true,
                };
                if !ok {
                    return 3;
                }
            }
        });
        wait_started(&started, before);
        std::thread::sleep(Duration::from_micros(rng.next() % 3000));
        assert_eq!(
            child.exited(),
            None,
            "kill {kill}: the child stopped on its own"
        );
        child.kill();
        let g = match l.get_lock_recover() {
            Ok((g, false)) => g,
            Ok((g, true)) => {
                owner_died += 1;
                g
            }
            Err(e) => panic!("kill {kill}: {e}"),
        };
        let len = g.verify().unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        assert!(len <= 40);
        let all = g.to_vec().unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        assert_eq!(all.len(), len);
        for v in &all {
            assert!(intact(7, v), "kill {kill}: element damaged: {v:?}");
        }
    }
    println!(
        "{KILLS} kills, {owner_died} OwnerDied, recoveries {}",
        l.recoveries()
    );
    assert!(owner_died > 0, "no kill landed inside a critical section");
}
