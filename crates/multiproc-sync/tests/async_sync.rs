//! `Event::wait_async` and `Semaphore::acquire_async` across processes (issue 15): tokio tasks
//! wait without blocking a runtime thread, and forked children using the blocking API wake
//! them.

use multiproc_sync::{Event, Lock, LockError, Semaphore};
use multiproc_testutil::fork;
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Ten tasks wait on an event that a child sets after a while: all resolve.
#[test]
fn tasks_waiting_on_an_event_wake_when_a_child_sets_it() {
    let e = Event::new().unwrap();
    let go = Event::new().unwrap();
    let (e2, go2) = (e.clone(), go.clone());
    let mut child = fork(move || {
        if !go2.wait_timeout(T30) {
            return 2;
        }
        std::thread::sleep(Duration::from_millis(20));
        e2.set();
        0
    });
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move { e.wait_async().await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        go.set();
        for t in tasks {
            tokio::time::timeout(T30, t).await.unwrap().unwrap();
        }
    });
    child.join_ok_within(Duration::from_secs(10));
}

/// Five tasks acquire a semaphore of value 0 that a child releases five times: each takes one
/// unit, and none is left or lost.
#[test]
fn tasks_acquire_units_a_child_releases() {
    let s = Semaphore::new(0).unwrap();
    let s2 = s.clone();
    let mut child = fork(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            if s2.release().is_err() {
                return 2;
            }
        }
        0
    });
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.acquire_async().await }));
        }
        for t in tasks {
            tokio::time::timeout(T30, t).await.unwrap().unwrap();
        }
    });
    child.join_ok_within(Duration::from_secs(10));
    assert_eq!(s.get_value(), 0);
}

/// A cancelled acquire takes nothing: with one unit and many acquires dropped at once, the
/// unit is still there for a later acquire.
#[test]
fn a_dropped_acquire_takes_no_unit() {
    let s = Semaphore::new(0).unwrap();
    runtime().block_on(async {
        for _ in 0..100 {
            assert!(
                tokio::time::timeout(Duration::from_micros(100), s.acquire_async())
                    .await
                    .is_err()
            );
        }
        s.release().unwrap();
        tokio::time::timeout(T30, s.acquire_async()).await.unwrap();
    });
    assert_eq!(s.get_value(), 0);
}

/// `lock_async` waits for a child's guard, and reports a holder SIGKILLed with the lock as
/// `OwnerDied` (as the blocking `lock`); the guard is held across an `.await`.
#[test]
fn lock_async_waits_for_a_child_and_reports_a_dead_holder() {
    let l = Lock::new().unwrap();
    let ready = Event::new().unwrap();
    let (l2, r2) = (l.clone(), ready.clone());
    let mut child = fork(move || {
        let g = l2.lock().unwrap();
        r2.set();
        std::thread::sleep(Duration::from_millis(50));
        drop(g);
        0
    });
    assert!(ready.wait_timeout(T30));
    runtime().block_on(async {
        let g = tokio::time::timeout(T30, l.lock_async())
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(g);
    });
    child.join_ok_within(Duration::from_secs(10));
    // A holder that dies with the lock.
    ready.clear();
    let (l2, r2) = (l.clone(), ready.clone());
    let mut holder = fork(move || {
        let g = l2.lock().unwrap();
        r2.set();
        std::mem::forget(g);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert!(ready.wait_timeout(T30));
    runtime().block_on(async {
        let task = {
            let l = l.clone();
            tokio::spawn(async move { l.lock_async().await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        holder.kill();
        let r = tokio::time::timeout(T30, task).await.unwrap().unwrap();
        assert!(matches!(r, Err(LockError::OwnerDied)), "{r:?}");
        // Taken over and released: free again.
        l.acquire_async().await;
        l.release().unwrap();
    });
}
