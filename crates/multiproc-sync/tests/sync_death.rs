//! What each primitive guarantees when a participant is killed with SIGKILL (docs/sync.md,
//! "Death"): every guarantee here is exercised with a real forked child and a real SIGKILL.
#![cfg(not(loom))]

use multiproc_sync::{
    Barrier, BarrierError, Condition, Event, Lock, LockError, MutexError, RLock, Semaphore,
};
use multiproc_testutil::{Shared, fork};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn sleep_forever() -> i32 {
    loop {
        std::thread::sleep(SEC);
    }
}

#[test]
fn lock_guard_holder_killed_is_taken_over_with_owner_died() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let mut c = fork(|| {
        let _g = lock.lock().unwrap();
        held.set();
        sleep_forever()
    });
    assert!(held.wait_timeout(10 * SEC));
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(50)),
        Err(LockError::Failed(MutexError::Timeout))
    ));
    c.kill_no_reap(); // a zombie counts as dead
    let g = match lock.lock_recover_timeout(10 * SEC) {
        Ok((g, true)) => g,
        other => panic!("expected OwnerDied, got {:?}", other.map(|(_, d)| d)),
    };
    drop(g);
    assert!(lock.lock().is_ok(), "a clean hand-over after that");
}

#[test]
fn lock_waiters_in_other_processes_reclaim_from_a_dead_holder() {
    // The holder dies while two other processes wait: exactly one takes over, then the other.
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let sh = Shared::new();
    let mut holder = fork(|| {
        let _g = lock.lock().unwrap();
        held.set();
        sleep_forever()
    });
    assert!(held.wait_timeout(10 * SEC));
    let waiter = || {
        let (_g, died) = lock.lock_recover_timeout(10 * SEC).expect("not wedged");
        sh.add(0, 1);
        if died {
            sh.add(1, 1);
        }
        0
    };
    let mut w1 = fork(waiter);
    let mut w2 = fork(waiter);
    std::thread::sleep(Duration::from_millis(30));
    holder.kill();
    w1.join_ok_within(10 * SEC);
    w2.join_ok_within(10 * SEC);
    assert_eq!(sh.get(0), 2);
    assert_eq!(sh.get(1), 1, "exactly one waiter saw owner_died");
    assert!(!lock.is_locked());
}

#[test]
fn lock_taken_with_acquire_is_not_reclaimed_when_its_taker_dies() {
    // Python semantics: an acquire()d Lock belongs to nobody, another process may release it.
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let mut c = fork(|| {
        assert!(lock.acquire(true));
        held.set();
        sleep_forever()
    });
    assert!(held.wait_timeout(10 * SEC));
    c.kill();
    assert!(!lock.acquire_timeout(Duration::from_millis(100)));
    lock.release().unwrap(); // the documented way out
    assert!(lock.try_acquire());
}

#[test]
fn rlock_owner_killed_at_depth_three_is_taken_over() {
    let l = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let mut c = fork(|| {
        for _ in 0..3 {
            assert!(l.acquire(true));
        }
        held.set();
        sleep_forever()
    });
    assert!(held.wait_timeout(10 * SEC));
    assert!(!l.acquire(false));
    c.kill();
    let g = l.lock_timeout(10 * SEC);
    assert!(
        g.as_ref().is_err_and(|e| e.is_owner_died()),
        "reclaimed with OwnerDied"
    );
    drop(g);
    // Depth was reset to 1 by the take-over: one release freed it.
    assert!(!l.is_owned());
    assert!(l.try_acquire());
    l.release().unwrap();
}

#[test]
fn semaphore_guard_holders_killed_give_their_units_back() {
    let s = Semaphore::new(3).unwrap();
    let sh = Shared::new();
    let mut kids: Vec<_> = (0..3)
        .map(|_| {
            fork(|| {
                let _g = s.acquire_guard().unwrap();
                sh.add(0, 1);
                sleep_forever()
            })
        })
        .collect();
    assert!(sh.wait_for(0, 3));
    assert_eq!(s.get_value(), 0);
    kids[0].kill();
    kids[1].kill();
    // A waiter reclaims on its own after a park tick.
    let t = Instant::now();
    let g1 = s
        .acquire_guard_timeout(10 * SEC)
        .expect("unit of a dead holder");
    assert!(t.elapsed() < 10 * SEC);
    let g2 = s.acquire_guard_timeout(10 * SEC).expect("second unit");
    assert!(
        s.try_acquire_guard().is_err(),
        "the live holder keeps its unit"
    );
    drop((g1, g2));
    kids[2].kill();
    assert_eq!(s.reclaim_dead(), 1);
    assert_eq!(s.get_value(), 3);
}

#[test]
fn semaphore_units_stay_exact_under_random_kills() {
    // Children loop taking and returning guarded units; the parent kills them at random
    // moments. Afterwards every unit must be back: no leak, no duplicate.
    let s = Semaphore::new(2).unwrap();
    let sh = Shared::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    for round in 0..12 {
        let mut kids: Vec<_> = (0..3)
            .map(|_| {
                fork(|| {
                    loop {
                        if let Ok(g) = s.acquire_guard_timeout(5 * SEC) {
                            sh.add(0, 1);
                            std::hint::black_box(&g);
                        }
                    }
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(200 + seed % 3000));
        for k in &mut kids {
            k.kill();
        }
        s.reclaim_dead();
        assert_eq!(
            s.get_value(),
            2,
            "round {round}: units leaked or duplicated"
        );
    }
    assert!(sh.get(0) > 0);
}

#[test]
fn lock_stays_usable_under_random_kills_of_guard_holders() {
    let lock = Lock::new().unwrap();
    let sh = Shared::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    for _ in 0..10 {
        let mut kids: Vec<_> = (0..2)
            .map(|_| {
                fork(|| {
                    loop {
                        let (g, _) = lock.lock_recover().unwrap();
                        sh.add(0, 1);
                        drop(g);
                    }
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(200 + seed % 3000));
        for k in &mut kids {
            k.kill();
        }
        let g = lock.lock_timeout(10 * SEC);
        assert!(
            g.is_ok() || g.as_ref().is_err_and(|e| e.is_owner_died()),
            "lock not wedged"
        );
        drop(g);
    }
    assert!(sh.get(0) > 0);
}

#[test]
fn condition_waiter_killed_does_not_swallow_a_notify() {
    let cond = Condition::new().unwrap();
    let sh = Shared::new();
    // The first (oldest) waiter is killed while waiting; notify(1) must reach the second.
    let mut doomed = fork(|| {
        let _g = cond.lock().unwrap();
        sh.add(0, 1);
        let _ = cond.wait();
        sh.add(9, 1); // must never happen
        0
    });
    assert!(sh.wait_for(0, 1));
    std::thread::sleep(Duration::from_millis(20));
    let mut live = fork(|| {
        let _g = cond.lock().unwrap();
        sh.add(0, 1);
        cond.wait().unwrap();
        sh.add(1, 1);
        0
    });
    assert!(sh.wait_for(0, 2));
    {
        // Both are inside wait once the lock is free.
        let _g = cond.lock().unwrap();
    }
    doomed.kill();
    {
        let _g = cond.lock().unwrap();
        assert_eq!(cond.notify(1), Ok(1));
    }
    live.join_ok_within(10 * SEC);
    assert_eq!(sh.get(1), 1);
    assert_eq!(sh.get(9), 0);
}

#[test]
fn condition_rlock_holder_killed_does_not_wedge_waiters() {
    // A process dies inside `with cond:` (holding the RLock): the next one gets the lock.
    let cond = Condition::new().unwrap();
    let held = Event::new().unwrap();
    let mut c = fork(|| {
        let _g = cond.lock().unwrap();
        held.set();
        sleep_forever()
    });
    assert!(held.wait_timeout(10 * SEC));
    c.kill();
    let g = cond.lock_recover_timeout(10 * SEC);
    assert!(
        g.as_ref().is_ok_and(|(_, died)| *died),
        "not wedged: OwnerDied"
    );
    assert_eq!(cond.notify_all(), Ok(0));
}

#[test]
fn barrier_party_killed_while_waiting_breaks_it_for_the_rest() {
    let b = Barrier::new(4).unwrap();
    let sh = Shared::new();
    let mut doomed = fork(|| {
        sh.add(0, 1);
        let _ = b.wait();
        0
    });
    let waiter = || {
        sh.add(0, 1);
        let t = Instant::now();
        // No timeout: only the death detection can release us.
        let r = b.wait();
        assert_eq!(r, Err(BarrierError::Broken));
        assert!(t.elapsed() < 10 * SEC);
        0
    };
    let mut w1 = fork(waiter);
    let mut w2 = fork(waiter);
    assert!(sh.wait_for(0, 3));
    std::thread::sleep(Duration::from_millis(30));
    doomed.kill();
    w1.join_ok_within(10 * SEC);
    w2.join_ok_within(10 * SEC);
    assert!(b.broken());
    b.reset();
    assert!(!b.broken());
    // Usable again by a fresh set of parties.
    let mut kids: Vec<_> = (0..3)
        .map(|_| fork(|| i32::from(b.wait_timeout(10 * SEC).is_err())))
        .collect();
    b.wait_timeout(10 * SEC).unwrap();
    for k in &mut kids {
        k.join_ok_within(10 * SEC);
    }
}

#[test]
fn event_waiter_killed_does_not_affect_set_or_other_waiters() {
    let e = Event::new().unwrap();
    let sh = Shared::new();
    let mut doomed = fork(|| {
        sh.add(0, 1);
        e.wait();
        0
    });
    let mut live = fork(|| {
        sh.add(0, 1);
        i32::from(!e.wait_timeout(10 * SEC))
    });
    assert!(sh.wait_for(0, 2));
    std::thread::sleep(Duration::from_millis(20));
    doomed.kill();
    e.set();
    live.join_ok_within(10 * SEC);
    assert!(e.wait_timeout(Duration::ZERO));
}

#[test]
fn barrier_party_killed_while_running_the_action_breaks_it() {
    let b = Barrier::with_timeout(3, Some(20 * SEC)).unwrap();
    let sh = Shared::new();
    let shp = &sh as *const Shared as usize;
    // Only this handle has an action, and it never returns: the party running it will be the
    // one killed. The two others are already waiting when it arrives (last).
    let mut w: Vec<_> = (0..2)
        .map(|_| {
            fork(|| {
                sh.add(0, 1);
                let r = b.wait();
                i32::from(r != Err(BarrierError::Broken))
            })
        })
        .collect();
    assert!(sh.wait_for(0, 2));
    // Both must be inside `wait` before the doomed party arrives, or it would not be the last one
    // (and would not run the action): wait for the barrier's own count, not for a fixed time.
    let t0 = std::time::Instant::now();
    while b.n_waiting() < 2 {
        assert!(
            t0.elapsed() < 20 * SEC,
            "the two parties never reached wait()"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stuck = b.clone().with_action(move || {
        // SAFETY: the page outlives the forked child that runs this (it inherits the mapping).
        let sh = unsafe { &*(shp as *const Shared) };
        sh.add(1, 1);
        sleep_forever();
    });
    let mut doomed = fork(|| {
        let _ = stuck.wait();
        0
    });
    assert!(sh.wait_for(1, 1), "the action started");
    doomed.kill();
    for k in &mut w {
        k.join_ok_within(10 * SEC);
    }
    assert!(b.broken());
}

#[test]
fn semaphore_guard_table_full_is_an_error_not_a_hang() {
    let s = Semaphore::new(100).unwrap();
    let guards: Vec<_> = (0..multiproc_sync::semaphore::HOLDER_SLOTS)
        .map(|_| s.acquire_guard().unwrap())
        .collect();
    assert_eq!(
        s.acquire_guard().unwrap_err(),
        multiproc_sync::SemaphoreError::HolderTableFull
    );
    // Plain acquire still works: the table only limits guards.
    assert!(s.try_acquire());
    s.release().unwrap();
    drop(guards);
    assert_eq!(s.get_value(), 100);
}

#[test]
fn condition_notify_all_reaches_every_live_waiter_after_random_kills() {
    let cond = Condition::new().unwrap();
    let sh = Shared::new();
    let mut kids: Vec<_> = (0..6)
        .map(|_| {
            fork(|| {
                let _g = cond.lock().unwrap();
                sh.add(0, 1);
                cond.wait().unwrap();
                sh.add(1, 1);
                0
            })
        })
        .collect();
    assert!(sh.wait_for(0, 6));
    drop(cond.lock().unwrap()); // every waiter is inside wait()
    // Kill three of them (even indices).
    for k in kids.iter_mut().step_by(2) {
        k.kill();
    }
    {
        let _g = cond.lock().unwrap();
        assert_eq!(
            cond.notify(2),
            Ok(2),
            "two live waiters woken, dead ones skipped"
        );
    }
    assert!(sh.wait_for(1, 2));
    {
        let _g = cond.lock().unwrap();
        assert_eq!(cond.notify_all(), Ok(1), "exactly the one live waiter left");
    }
    for k in kids.iter_mut().skip(1).step_by(2) {
        k.join_ok_within(10 * SEC);
    }
    assert_eq!(sh.get(1), 3);
}
