//! Conformance items 22-40 of python-reference.md, ported as cross-process tests: every test
//! forks children that use the same shared objects. Each names the Python test it mirrors
//! (Lib/test/_test_multiprocessing.py). Timing checks are lower bounds with slack only.
#![cfg(not(loom))]

use multiproc_sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, ConditionError, Event, Lock,
    LockReleaseError, RLock, RLockError, Semaphore, SemaphoreError,
};
use multiproc_testutil::{Shared, at_least, fork};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

// mirrors test_lock (item 22)
#[test]
fn lock_held_by_child_fails_nonblocking_acquire_and_unheld_release_errors() {
    let lock = Lock::new().unwrap();
    let ready = Event::new().unwrap();
    let mut c = fork(|| {
        assert!(lock.acquire(true));
        ready.set();
        0 // exits still holding it: a Lock taken with acquire() has no owner
    });
    c.join_ok_within(Duration::from_secs(10));
    assert!(ready.is_set());
    assert!(!lock.acquire(false));
    assert!(!lock.try_acquire());
    // Any process may release a Lock.
    assert_eq!(lock.release(), Ok(()));
    assert_eq!(lock.release(), Err(LockReleaseError::ReleaseUnheld));
    assert!(lock.acquire(true));
    let mut c = fork(|| {
        // A child releases what the parent acquired.
        assert_eq!(lock.release(), Ok(()));
        assert_eq!(lock.release(), Err(LockReleaseError::ReleaseUnheld));
        0
    });
    c.join_ok_within(Duration::from_secs(10));
    assert!(!lock.is_locked());
}

// mirrors test_rlock (item 23)
#[test]
fn rlock_fourth_release_after_three_acquires_errors() {
    let l = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let go = Event::new().unwrap();
    let mut c = fork(|| {
        assert!(l.acquire(true));
        assert!(l.acquire(true));
        assert!(l.acquire(true));
        held.set();
        go.wait();
        l.release().unwrap();
        l.release().unwrap();
        l.release().unwrap();
        assert_eq!(l.release(), Err(RLockError::NotOwner));
        0
    });
    assert!(held.wait_timeout(Duration::from_secs(10)));
    // Owned by the child: the parent can neither take it nor release it.
    assert!(!l.acquire(false));
    assert_eq!(l.release(), Err(RLockError::NotOwner));
    go.set();
    c.join_ok_within(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(l.acquire(true));
    }
    for _ in 0..3 {
        l.release().unwrap();
    }
    assert_eq!(l.release(), Err(RLockError::NotOwner));
}

// mirrors test_semaphore (item 24)
#[test]
fn semaphore_counts_down_to_zero_and_releases_reach_four() {
    let s = Semaphore::new(2).unwrap();
    let mut c = fork(|| {
        assert!(s.acquire(true));
        0
    });
    c.join_ok_within(Duration::from_secs(10));
    assert_eq!(s.get_value(), 1);
    assert!(s.acquire(true));
    assert_eq!(s.get_value(), 0);
    assert!(!s.acquire(false));
    assert_eq!(s.get_value(), 0);
    let mut c = fork(|| {
        s.release().unwrap();
        assert!(s.get_value() >= 1);
        s.release().unwrap();
        0
    });
    c.join_ok_within(Duration::from_secs(10));
    assert_eq!(s.get_value(), 2);
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.get_value(), 4);
    // BoundedSemaphore: over-release is an error.
    let b = BoundedSemaphore::new(2).unwrap();
    assert!(b.acquire(true));
    let mut c = fork(|| {
        b.release().unwrap();
        assert_eq!(b.release(), Err(SemaphoreError::OverRelease));
        0
    });
    c.join_ok_within(Duration::from_secs(10));
    assert_eq!(b.get_value(), 2);
}

// mirrors _TestSemaphore.test_timeout (item 25)
#[test]
fn semaphore_zero_acquire_timeout_returns_false_after_timeout() {
    let s = Semaphore::new(0).unwrap();
    let mut c = fork(|| {
        let t = Instant::now();
        assert!(!s.acquire_timeout(100 * MS));
        assert!(at_least(t.elapsed(), 100 * MS));
        let t = Instant::now();
        assert!(!s.acquire(false));
        assert!(t.elapsed() < Duration::from_secs(1));
        0
    });
    c.join_ok_within(Duration::from_secs(10));
    // And a release by a child wakes a parent blocked with a timeout.
    let mut c = fork(|| {
        std::thread::sleep(50 * MS);
        s.release().unwrap();
        0
    });
    assert!(s.acquire_timeout(Duration::from_secs(10)));
    c.join_ok_within(Duration::from_secs(10));
}

/// Counters in the shared page used by the condition tests.
const SLEEPING: usize = 0;
const WOKEN: usize = 1;

fn cond_waiter(cond: &Condition, sh: &Shared) -> i32 {
    let _g = cond.lock().unwrap();
    sh.add(SLEEPING, 1);
    cond.wait().unwrap();
    sh.add(WOKEN, 1);
    0
}

// mirrors test_notify (item 26)
#[test]
fn notify_wakes_exactly_one_waiter_process_or_thread() {
    let cond = Condition::new().unwrap();
    let sh = Shared::new();
    let mut p1 = fork(|| cond_waiter(&cond, &sh));
    let mut p2 = fork(|| cond_waiter(&cond, &sh));
    let th = {
        let cond = cond.clone();
        let sh: &'static Shared = Box::leak(Box::new(Shared::new()));
        // The thread reports into its own page; the processes into `sh`.
        let h = std::thread::spawn(move || cond_waiter(&cond, sh));
        (h, sh)
    };
    assert!(sh.wait_for(SLEEPING, 2));
    assert!(th.1.wait_for(SLEEPING, 1));
    // Every waiter is inside wait() once it can be notified: the lock is free again.
    std::thread::sleep(50 * MS);
    assert_eq!(sh.get(WOKEN) + th.1.get(WOKEN), 0);
    let mut total = 0;
    for round in 1..=3u64 {
        {
            let _g = cond.lock().unwrap();
            assert_eq!(cond.notify(1), Ok(1));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while sh.get(WOKEN) + th.1.get(WOKEN) < round && Instant::now() < deadline {
            std::thread::sleep(MS);
        }
        std::thread::sleep(100 * MS);
        total = sh.get(WOKEN) + th.1.get(WOKEN);
        assert_eq!(total, round, "notify(1) woke exactly one");
    }
    assert_eq!(total, 3);
    p1.join_ok_within(Duration::from_secs(10));
    p2.join_ok_within(Duration::from_secs(10));
    assert_eq!(th.0.join().unwrap(), 0);
    // notify without the lock is an error.
    assert_eq!(cond.notify(1), Err(ConditionError::NotHeld));
}

// mirrors _TestCondition.test_timeout (item 29)
#[test]
fn condition_wait_timeout_without_notify_returns_false_after_timeout() {
    let cond = Condition::new().unwrap();
    let mut c = fork(|| {
        let _g = cond.lock().unwrap();
        let t = Instant::now();
        assert_eq!(cond.wait_timeout(100 * MS), Ok(false));
        assert!(at_least(t.elapsed(), 100 * MS));
        0
    });
    c.join_ok_within(Duration::from_secs(10));
}

// mirrors test_waitfor (item 30)
#[test]
fn wait_for_sees_a_shared_value_change() {
    let cond = Condition::new().unwrap();
    let sh = Shared::new();
    let mut c = fork(|| {
        let _g = cond.lock().unwrap();
        let r = cond.wait_for(|| sh.get(5) == 0, None).unwrap();
        assert!(r);
        sh.add(6, 1); // started
        let r = cond
            .wait_for(|| sh.get(5) == 4, Some(Duration::from_secs(10)))
            .unwrap();
        assert!(r);
        assert_eq!(sh.get(5), 4);
        0
    });
    assert!(sh.wait_for(6, 1));
    for _ in 0..4 {
        std::thread::sleep(10 * MS);
        let _g = cond.lock().unwrap();
        sh.add(5, 1);
        cond.notify_all().unwrap();
    }
    c.join_ok_within(Duration::from_secs(10));
}

// mirrors test_waitfor_timeout (item 31)
#[test]
fn wait_for_with_timeout_returns_false_after_timeout() {
    let cond = Condition::new().unwrap();
    let sh = Shared::new();
    let mut c = fork(|| {
        let _g = cond.lock().unwrap();
        let t = Instant::now();
        let r = cond.wait_for(|| sh.get(5) == 4, Some(100 * MS)).unwrap();
        assert!(!r);
        assert!(at_least(t.elapsed(), 100 * MS));
        0
    });
    // Notifications that do not satisfy the predicate.
    for _ in 0..3 {
        std::thread::sleep(20 * MS);
        let _g = cond.lock().unwrap();
        cond.notify_all().unwrap();
    }
    c.join_ok_within(Duration::from_secs(10));
}

// mirrors test_wait_result (item 32)
#[test]
fn wait_zero_returns_false_and_notified_wait_returns_true() {
    let cond = Condition::new().unwrap();
    let g = cond.lock().unwrap();
    assert_eq!(cond.wait_timeout(Duration::ZERO), Ok(false));
    let mut c = fork(|| {
        let _g = cond.lock().unwrap();
        cond.notify(1).unwrap();
        0
    });
    assert_eq!(cond.wait_timeout(Duration::from_secs(10)), Ok(true));
    drop(g);
    c.join_ok_within(Duration::from_secs(10));
}

// issue 14: Event's wait strategies (park-only for the bench's blocking row)
#[test]
fn event_wait_under_every_strategy_times_out_and_is_woken_by_a_child() {
    use multiproc_sync::park::WaitStrategy;
    for st in [
        WaitStrategy::Spin,
        WaitStrategy::SpinThenPark,
        WaitStrategy::Park,
    ] {
        let mut e = Event::new().unwrap();
        e.set_wait_strategy(st);
        assert_eq!(e.wait_strategy(), st);
        assert!(!e.wait_timeout(20 * MS), "{st:?}");
        assert!(!e.wait_with(st, Some(MS)), "{st:?}");
        let mut c = fork(|| {
            std::thread::sleep(50 * MS);
            e.set();
            0
        });
        assert!(e.wait_timeout(Duration::from_secs(10)), "{st:?}");
        c.join_ok_within(Duration::from_secs(10));
        e.clear();
        let mut c = fork(|| {
            std::thread::sleep(50 * MS);
            e.set();
            0
        });
        e.wait();
        assert!(e.is_set());
        c.join_ok_within(Duration::from_secs(10));
    }
}

// mirrors test_event (item 33)
#[test]
fn event_wait_times_out_then_returns_at_once_and_a_child_set_wakes_parent() {
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    let t = Instant::now();
    assert!(!e.wait_timeout(100 * MS));
    assert!(at_least(t.elapsed(), 100 * MS));
    e.set();
    assert!(e.is_set());
    let t = Instant::now();
    e.wait();
    assert!(e.wait_timeout(Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(1));
    e.clear();
    assert!(!e.is_set());
    let mut c = fork(|| {
        std::thread::sleep(50 * MS);
        e.set();
        0
    });
    assert!(e.wait_timeout(Duration::from_secs(10)));
    c.join_ok_within(Duration::from_secs(10));
}

const N: u32 = 5;

/// Every barrier in these tests has a default timeout so a bug fails the test instead of
/// hanging it.
fn barrier(n: u32) -> Barrier {
    Barrier::with_timeout(n, Some(Duration::from_secs(20))).unwrap()
}

fn run_parties(n: u32, f: impl Fn(u32) -> i32) {
    let mut kids: Vec<_> = (1..n).map(|i| fork(|| f(i))).collect();
    assert_eq!(f(0), 0);
    for k in &mut kids {
        k.join_ok_within(Duration::from_secs(10));
    }
}

// mirrors test_barrier_10 (item 34)
#[test]
fn barrier_keeps_lockstep_for_ten_rounds() {
    let b = barrier(N);
    let sh = Shared::new();
    run_parties(N, |_| {
        for i in 0..10u64 {
            b.wait().unwrap();
            assert_eq!(sh.get(0), i * u64::from(N));
            b.wait().unwrap();
            sh.add(0, 1);
        }
        0
    });
    assert_eq!(sh.get(0), 10 * u64::from(N));
}

// mirrors test_action (item 36)
#[test]
fn barrier_action_runs_once_per_round() {
    let sh = Shared::new();
    let shp = &sh as *const Shared as usize;
    let b = barrier(N).with_action(move || {
        // SAFETY: the page outlives every wait (the test joins all parties before `sh` drops,
        // and forked children have their own copy of the mapping).
        let sh = unsafe { &*(shp as *const Shared) };
        sh.add(0, 1);
    });
    run_parties(N, |_| {
        b.wait().unwrap();
        assert_eq!(sh.get(0), 1);
        b.wait().unwrap();
        assert_eq!(sh.get(0), 2);
        0
    });
    assert_eq!(sh.get(0), 2);
}

// mirrors test_abort (item 37)
#[test]
fn barrier_abort_breaks_it_for_the_other_parties() {
    let b = barrier(N);
    let sh = Shared::new();
    run_parties(N, |i| {
        if i == N / 2 {
            // This party does not arrive; it aborts once the others are waiting.
            assert!(sh.wait_for(0, u64::from(N - 1)));
            std::thread::sleep(20 * MS);
            b.abort();
            return 0;
        }
        sh.add(0, 1);
        assert_eq!(
            b.wait_timeout(Duration::from_secs(10)),
            Err(BarrierError::Broken)
        );
        sh.add(1, 1);
        0
    });
    assert_eq!(sh.get(1), u64::from(N - 1));
    assert!(b.broken());
    assert_eq!(b.wait(), Err(BarrierError::Broken));
    b.reset();
    assert!(!b.broken());
}

// mirrors test_reset (item 38, kept: reset makes waiters raise and re-arms)
#[test]
fn barrier_reset_breaks_waiters_then_rearms() {
    let b = barrier(3);
    let sh = Shared::new();
    run_parties(3, |i| {
        if i == 0 {
            assert!(sh.wait_for(0, 2));
            std::thread::sleep(20 * MS);
            b.reset();
        } else {
            sh.add(0, 1);
            assert_eq!(
                b.wait_timeout(Duration::from_secs(10)),
                Err(BarrierError::Broken)
            );
        }
        // Everyone syncs again on the re-armed barrier.
        sh.add(1, 1);
        assert!(sh.wait_for(1, 3));
        b.wait_timeout(Duration::from_secs(10)).unwrap();
        0
    });
}

// mirrors test_timeout (item 39)
#[test]
fn barrier_timeout_breaks_it_for_all_parties() {
    let b = barrier(N);
    let sh = Shared::new();
    run_parties(N, |i| {
        b.wait_timeout(Duration::from_secs(10)).unwrap();
        if i == N / 2 {
            // Arrives too late for the others' 0.2 s timeouts.
            std::thread::sleep(Duration::from_millis(600));
        }
        let t = Instant::now();
        let r = b.wait_timeout(200 * MS);
        assert!(
            matches!(r, Err(BarrierError::Broken | BarrierError::Timeout)),
            "{r:?}"
        );
        if i != N / 2 {
            assert!(at_least(t.elapsed(), 200 * MS) || r == Err(BarrierError::Broken));
        }
        sh.add(0, 1);
        0
    });
    assert_eq!(sh.get(0), u64::from(N));
    assert!(b.broken());
}

// mirrors test_default_timeout (item 39)
#[test]
fn barrier_default_timeout_breaks_it_for_all_parties() {
    let b = Barrier::with_timeout(N, Some(200 * MS)).unwrap();
    run_parties(N, |i| {
        b.wait().unwrap();
        if i == N / 2 {
            std::thread::sleep(Duration::from_millis(600));
        }
        let r = b.wait();
        assert!(
            matches!(r, Err(BarrierError::Broken | BarrierError::Timeout)),
            "{r:?}"
        );
        0
    });
    assert!(b.broken());
}

// mirrors test_thousand (item 40)
#[test]
fn barrier_five_processes_complete_a_thousand_rounds() {
    let b = barrier(N);
    let sh = Shared::new();
    run_parties(N, |i| {
        for round in 0..1000u64 {
            let idx = b.wait_timeout(Duration::from_secs(20)).unwrap();
            assert!(idx < N);
            if i == 0 {
                sh.add(0, 1);
            }
            let _ = round;
        }
        0
    });
    assert_eq!(sh.get(0), 1000);
}

// Handles cross a serialization boundary as segment handles.
#[test]
fn handles_roundtrip_through_serde() {
    let l = Lock::new().unwrap();
    let bytes = postcard::to_allocvec(&l).unwrap();
    let l2: Lock = postcard::from_bytes(&bytes).unwrap();
    assert!(l2.try_acquire());
    assert!(l.is_locked());
    let c = Condition::new().unwrap();
    let bytes = postcard::to_allocvec(&c).unwrap();
    let c2: Condition = postcard::from_bytes(&bytes).unwrap();
    let _g = c2.lock();
    assert!(!c.try_acquire() || c.release().is_ok());
    let e = Event::new().unwrap();
    let e2: Event = postcard::from_bytes(&postcard::to_allocvec(&e).unwrap()).unwrap();
    e2.set();
    assert!(e.is_set());
    let b = Barrier::new(2).unwrap();
    let b2: Barrier = postcard::from_bytes(&postcard::to_allocvec(&b).unwrap()).unwrap();
    assert_eq!(b2.parties(), 2);
    // A handle of the wrong kind is refused.
    let bad: Result<Semaphore, _> = postcard::from_bytes(&postcard::to_allocvec(&e).unwrap());
    assert!(bad.is_err());
}

#[test]
fn named_primitives_open_from_another_process() {
    let name = format!("sync2-test-{}", std::process::id());
    let e = Event::create_named(&name).unwrap();
    let mut c = fork(|| {
        let e2 = Event::open_named(&name).unwrap();
        e2.set();
        0
    });
    c.join_ok_within(Duration::from_secs(10));
    assert!(e.is_set());
    let sname = format!("{name}-sem");
    let s = BoundedSemaphore::create_named(&sname, 1).unwrap();
    let s2 = BoundedSemaphore::open_named(&sname).unwrap();
    assert!(s2.try_acquire());
    assert_eq!(s.get_value(), 0);
    assert!(Lock::open_named(&name).is_err(), "an Event is not a Lock");
    assert!(Barrier::new(0).is_err());
    assert!(Barrier::new(65).is_err());
}

#[test]
fn condition_over_a_plain_lock_works_across_processes() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let sh = Shared::new();
    let mut c = fork(|| {
        let g = cond.lock().unwrap();
        sh.add(0, 1);
        let r = cond.wait_timeout(Duration::from_secs(10));
        drop(g);
        i32::from(r != Ok(true))
    });
    assert!(sh.wait_for(0, 1));
    // Python style: acquire / notify / release.
    assert!(cond.acquire_timeout(Duration::from_secs(10)));
    assert_eq!(cond.notify(1), Ok(1));
    cond.release().unwrap();
    c.join_ok_within(Duration::from_secs(10));
    assert_eq!(cond.release(), Err(ConditionError::NotHeld));
}

#[test]
fn a_corrupted_barrier_segment_is_refused_on_open() {
    let name = format!("sync2-corrupt-{}", std::process::id());
    let b = Barrier::create_named(&name, 3, None).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/multiproc.{name}"))
            .unwrap();
        // The payload starts at 256; `parties` is the third u32 of BarrierState.
        f.seek(SeekFrom::Start(256 + 8)).unwrap();
        f.write_all(&1000u32.to_ne_bytes()).unwrap();
    }
    let r = Barrier::open_named(&name);
    assert!(r.is_err(), "parties out of range must be refused");
    drop(b);
    assert!(!std::path::Path::new(&format!("/dev/shm/multiproc.{name}")).exists());
}
