//! Worker death: SIGKILL at a bad moment, in loops; terminate with a long queue; no zombie
//! left behind. Python's Pool hangs in these cases (pitfall B.1, gh-66587).

mod support;

use multiproc_pool::{Pool, PoolError, SubmitError, TaskError, WorkerStartError};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::*;

multiproc_process::init_before_main!();

const T: Duration = Duration::from_secs(60);

fn kill9(pid: u32) {
    // SAFETY: plain syscall; the pid is a live worker of our own pool.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

fn assert_gone(pids: &HashSet<u32>) {
    let (live, zombies) = children();
    for p in pids {
        assert!(!live.contains(p), "worker {p} still alive");
        assert!(!zombies.contains(p), "worker {p} is a zombie");
    }
}

/// SIGKILLs one of `p`'s workers every 15-29 ms, ten times, noting every pid seen.
fn kill_workers_ten_times(p: &Pool, seen: &mut HashSet<u32>) {
    for round in 0..10 {
        std::thread::sleep(Duration::from_millis(15 + 7 * (round % 3)));
        let pids = p.worker_pids();
        seen.extend(pids.iter().copied());
        if let Some(pid) = pids.get(round as usize % pids.len().max(1)) {
            kill9(*pid);
        }
    }
}

fn wait_file(path: &str) -> u32 {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "worker never reported");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigkilled_worker_fails_only_its_task_and_the_rest_complete() {
    let p = Pool::builder().processes(2).build().unwrap();
    let path = format!("/tmp/multiproc-pool-test-{}-a", std::process::id());
    let _ = std::fs::remove_file(&path);
    let long = p
        .apply_async(report_pid_then_sleep, (path.clone(), 60_000))
        .unwrap();
    let victim = wait_file(&path);
    let _ = std::fs::remove_file(&path);
    // work queued behind it, some of it on the victim's pipe
    let quick: Vec<_> = (0..200u64)
        .map(|i| p.apply_async(sqr, i).unwrap())
        .collect();
    let slow: Vec<_> = (0..6)
        .map(|_| p.apply_async(sleep_ms, 20).unwrap())
        .collect();
    kill9(victim);
    match long.get_timeout(T) {
        Err(TaskError::WorkerLost {
            pid,
            signal,
            exitcode,
        }) => {
            assert_eq!(pid, victim);
            assert_eq!(signal, Some(libc::SIGKILL));
            assert_eq!(exitcode, Some(-libc::SIGKILL));
        }
        other => panic!("{other:?}"),
    }
    for (i, r) in quick.into_iter().enumerate() {
        assert_eq!(r.get_timeout(T).unwrap(), (i * i) as u64);
    }
    for r in slow {
        assert_eq!(r.get_timeout(T).unwrap(), 20);
    }
    // replaced: two workers again, and they work
    let mut pids: HashSet<u32> = p.worker_pids().into_iter().collect();
    assert_eq!(p.map(sqr, 0..100u64).unwrap()[9], 81);
    assert!(p.replaced_workers() >= 1);
    pids.insert(victim);
    pids.extend(p.worker_pids());
    p.close();
    p.join_timeout(T).unwrap();
    assert_gone(&pids);
}

#[test]
fn worker_that_exits_fails_its_task_with_worker_lost() {
    let p = Pool::builder().processes(1).build().unwrap();
    match p.apply(exit_now, 3) {
        Err(PoolError::Task(TaskError::WorkerLost {
            signal, exitcode, ..
        })) => {
            assert_eq!(signal, None);
            assert_eq!(exitcode, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.apply(sqr, 12).unwrap(), 144);
}

#[test]
fn idle_worker_killed_is_replaced() {
    let p = Pool::builder().processes(2).build().unwrap();
    let before = p.worker_pids();
    for pid in &before {
        kill9(*pid);
    }
    // every call still completes (the kill may land before or after the jobs are taken)
    let deadline = Instant::now() + T;
    while p.replaced_workers() < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(p.map(sqr, 0..40u64).unwrap()[39], 39 * 39);
    let after = p.worker_pids();
    assert!(after.iter().all(|x| !before.contains(x)));
    let mut all: HashSet<u32> = before.into_iter().collect();
    all.extend(after);
    p.close();
    p.join_timeout(T).unwrap();
    assert_gone(&all);
}

/// A `map` of plain data (`u64` both ways: its chunks are sent from the caller's input, not
/// from a copy) with workers killed every few ms: a chunk lost with its worker is requeued
/// and sent again from the same input, and with a retry policy every result is right (the
/// last chunk, of one item, goes as postcard).
#[test]
fn killed_workers_plain_chunks_are_resent_from_the_input() {
    let p = Pool::builder().processes(2).retries(100).build().unwrap();
    let mut seen = HashSet::new();
    let n = 6001u64;
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| p.map_chunked(sqr_pausing, 0..n, 100));
        kill_workers_ten_times(&p, &mut seen);
        h.join().unwrap()
    });
    assert_eq!(out.unwrap(), (0..n).map(|i| i * i).collect::<Vec<_>>());
    assert!(
        p.replaced_workers() > 0,
        "no worker was killed during the map"
    );
    seen.extend(p.worker_pids());
    p.close();
    p.join_timeout(T).unwrap();
    assert_gone(&seen);
}

/// Kills a worker every few ms while a map runs; with a retry policy the map completes with
/// every result right.
#[test]
fn repeated_kills_with_retries_complete_the_map() {
    let p = Pool::builder().processes(2).retries(100).build().unwrap();
    let mut seen = HashSet::new();
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| p.map_chunked(mul, (0..400u64).map(|i| (i, 3)), 1));
        let slow = s.spawn(|| p.map_chunked(sleep_ms, vec![2u64; 200], 1));
        kill_workers_ten_times(&p, &mut seen);
        assert_eq!(slow.join().unwrap().unwrap(), vec![2u64; 200]);
        h.join().unwrap()
    });
    assert_eq!(out.unwrap(), (0..400u64).map(|i| i * 3).collect::<Vec<_>>());
    seen.extend(p.worker_pids());
    p.close();
    p.join_timeout(T).unwrap();
    assert_gone(&seen);
}

/// Without retries: every result arrives; each is right or WorkerLost; nothing hangs.
#[test]
fn repeated_kills_never_leave_a_result_hanging() {
    let p = Pool::builder().processes(2).build().unwrap();
    let mut seen = HashSet::new();
    let rs: Vec<_> = (0..300u64)
        .map(|_| p.apply_async(sleep_ms, 3).unwrap())
        .collect();
    let mut kills = 0;
    for round in 0..8u64 {
        std::thread::sleep(Duration::from_millis(10 + 5 * (round % 4)));
        let pids = p.worker_pids();
        seen.extend(pids.iter().copied());
        if let Some(pid) = pids.get(round as usize % pids.len().max(1)) {
            kill9(*pid);
            kills += 1;
        }
    }
    let mut lost = 0;
    for r in rs {
        match r.get_timeout(T) {
            Ok(3) => {}
            Err(TaskError::WorkerLost { .. }) => lost += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(lost <= kills, "{lost} lost for {kills} kills");
    seen.extend(p.worker_pids());
    p.terminate();
    assert_gone(&seen);
}

/// terminate() with 10,000 queued tasks returns promptly; every result is ready.
#[test]
fn terminate_with_10000_pending_tasks_returns() {
    let p = Pool::builder().processes(2).build().unwrap();
    let pids: HashSet<u32> = p.worker_pids().into_iter().collect();
    let rs: Vec<_> = (0..10_000)
        .map(|_| p.apply_async(sleep_ms, 5).unwrap())
        .collect();
    p.terminate();
    let mut terminated = 0;
    for r in &rs {
        assert!(r.ready());
        match r.get_timeout(Duration::ZERO) {
            Ok(5) => {}
            Err(TaskError::Terminated) => terminated += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(terminated > 9_000);
    p.join().unwrap();
    assert_gone(&pids);
}

/// Python respawns workers whose initializer raises forever, and `get()` hangs; here calls
/// fail once workers keep dying before taking any job.
#[test]
fn failing_initializer_fails_calls_instead_of_hanging() {
    let p = Pool::builder()
        .processes(1)
        .initializer(failing_init, ())
        .build()
        .unwrap();
    let r = p.apply_async(sqr, 2);
    match r.map(|r| r.get_timeout(T)) {
        Ok(Err(TaskError::Start(WorkerStartError { what, source })))
        | Err(SubmitError::Start(WorkerStartError { what, source })) => {
            assert!(what.contains("initializer"), "{what}");
            // The pool gave up by itself: no step failed with an error of its own.
            assert!(source.is_none(), "{source:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        p.apply(sqr, 2),
        Err(PoolError::Submit(SubmitError::Start(_)))
    ));
    p.terminate();
}
