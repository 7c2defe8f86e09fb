//! Manager's queue/event/semaphore/barrier makers produce working cross-process objects
//! (Python's `m.Queue()`, `m.Event()`, `m.Semaphore()`, `m.Barrier()`).

mod common;

use multiproc_collections::Manager;
use std::time::Duration;

#[test]
fn manager_queue_event_semaphore_and_barrier_work_across_processes() {
    let m = Manager::new();
    let q = m.queue::<(u32, String)>(8).unwrap();
    let done = m.event().unwrap();
    let sem = m.semaphore(1).unwrap();
    let barrier = m.barrier(2).unwrap();
    let jq = m.joinable_queue::<u64>(4).unwrap();
    let (q2, done2, sem2, barrier2, jq2) = (
        q.clone(),
        done.clone(),
        sem.clone(),
        barrier.clone(),
        jq.clone(),
    );
    let child = common::fork(move || {
        if barrier2.wait_timeout(Duration::from_secs(10)).is_err() {
            return 1;
        }
        if !sem2.acquire_timeout(Duration::from_secs(10)) {
            return 2;
        }
        for i in 0..5 {
            if q2.put((i, format!("item {i}"))).is_err() {
                return 3;
            }
        }
        sem2.release().ok();
        let Ok(x) = jq2.get_timeout(Duration::from_secs(10)) else {
            return 4;
        };
        if x != 42 || jq2.task_done().is_err() {
            return 5;
        }
        done2.set();
        0
    });
    barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    let got: Vec<(u32, String)> = (0..5)
        .map(|_| q.get_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(
        got,
        (0..5).map(|i| (i, format!("item {i}"))).collect::<Vec<_>>()
    );
    jq.put(42).unwrap();
    jq.join_timeout(Duration::from_secs(10)).unwrap();
    assert!(done.wait_timeout(Duration::from_secs(10)));
    child.join_ok();
    assert!(
        sem.acquire_timeout(Duration::from_secs(1)),
        "the child gave its unit back"
    );
}
