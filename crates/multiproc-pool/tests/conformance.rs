//! Python's Pool conformance items 54-67 (python-reference.md section C), with real worker
//! processes (spawn start method; `init_before_main!` lets the test binary be a worker).

mod support;

use multiproc_pool::{
    BuildError, Callbacks, NotReady, Pool, PoolError, PoolJoinError, SubmitError, TaskError,
    default_chunksize,
};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

multiproc_process::init_before_main!();

const T: Duration = Duration::from_secs(30);

fn pool(n: usize) -> Pool {
    Pool::builder().processes(n).build().expect("pool")
}

/// Item 54: test_apply, test_map.
#[test]
fn apply_and_map_equal_serial_results() {
    let p = pool(2);
    assert_eq!(p.apply(sqr, 5).unwrap(), 25);
    assert_eq!(p.apply(mul, (6, 7)).unwrap(), 42);
    let serial: Vec<u64> = (0..10u64).map(|x| x * x).collect();
    assert_eq!(p.map(sqr, 0..10u64).unwrap(), serial);
    let serial: Vec<u64> = (0..100u64).map(|x| x * x).collect();
    assert_eq!(p.map_chunked(sqr, 0..100u64, 20).unwrap(), serial);
    assert_eq!(p.map_chunked(sqr, 0..100u64, 1).unwrap(), serial);
    assert_eq!(
        p.starmap(mul, (0..10u64).map(|i| (i, i + 1))).unwrap(),
        (0..10u64).map(|i| i * (i + 1)).collect::<Vec<_>>()
    );
    assert_eq!(p.map(sqr, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    let r = p.map_async(sqr, 0..1000u64).unwrap();
    assert_eq!(r.get_timeout(T).unwrap().len(), 1000);
    p.close();
    p.join().unwrap();
}

#[test]
fn default_chunksize_is_pythons_formula() {
    // divmod(len, processes * 4), plus one if there is a remainder
    assert_eq!(default_chunksize(1_000_000, 2), 125_000);
    assert_eq!(default_chunksize(10, 2), 2);
    assert_eq!(default_chunksize(9, 2), 2);
    assert_eq!(default_chunksize(8, 2), 1);
    assert_eq!(default_chunksize(1, 4), 1);
    assert_eq!(default_chunksize(0, 4), 1);
}

/// Item 55: test_map_async_callbacks: exactly one of callback / error_callback runs, once.
#[test]
fn exactly_one_callback_runs_once() {
    let p = pool(2);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let r = p
        .map_async_with(
            sqr,
            0..10u64,
            None,
            Callbacks::new()
                .on_success(move |v: &Vec<u64>| l1.lock().unwrap().push(format!("ok {}", v.len())))
                .on_error(move |e| l2.lock().unwrap().push(format!("err {e}"))),
        )
        .unwrap();
    assert_eq!(r.get_timeout(T).unwrap().len(), 10);
    assert_eq!(*log.lock().unwrap(), vec!["ok 10".to_string()]);

    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let r = p
        .apply_async_with(
            panics_on,
            (3, 3),
            Callbacks::new()
                .on_success(move |_| l1.lock().unwrap().push("ok".into()))
                .on_error(move |_| l2.lock().unwrap().push("err".into())),
        )
        .unwrap();
    assert!(matches!(
        r.get_timeout(T),
        Err(TaskError::TaskPanicked { .. })
    ));
    assert_eq!(*log.lock().unwrap(), vec!["err".to_string()]);
    assert!(!r.successful().unwrap());
    // A panicking callback does not break the pool.
    let r = p
        .apply_async_with(
            sqr,
            2,
            Callbacks::new().on_success(|_| panic!("callback bug")),
        )
        .unwrap();
    assert_eq!(r.get_timeout(T).unwrap(), 4);
    assert_eq!(p.apply(sqr, 3).unwrap(), 9);
}

/// Item 57: test_map_handle_iterable_exception: a failure of the input iterator (a panic in
/// Rust) propagates to the caller, and the pool stays usable.
#[test]
fn input_iterator_failure_propagates() {
    let p = pool(1);
    let bad = (0..10u64).map(|x| if x == 5 { panic!("iterator fails") } else { x });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.map(sqr, bad)));
    assert!(r.is_err());
    assert_eq!(p.map(sqr, 0..3u64).unwrap(), vec![0, 1, 4]);
}

/// Item 58: test_async_timeout: get(timeout) raises TimeoutError; the result stays.
#[test]
fn get_timeout_times_out_and_result_stays() {
    let p = pool(1);
    let r = p.apply_async(sleep_ms, 600).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        r.get_timeout(Duration::from_millis(100)),
        Err(TaskError::Timeout)
    );
    assert!(t0.elapsed() >= Duration::from_millis(90));
    assert!(!r.ready());
    assert_eq!(r.successful(), Err(NotReady));
    assert!(!r.wait_timeout(Duration::from_millis(10)));
    r.wait();
    assert!(r.ready());
    assert_eq!(r.successful(), Ok(true));
    assert_eq!(r.get_timeout(T).unwrap(), 600);
    assert_eq!(r.get(), Err(TaskError::AlreadyTaken));
}

/// Item 59: test_imap: ordered, ends with None (StopIteration); imap_unordered has every item.
#[test]
fn imap_is_ordered_and_ends() {
    let p = pool(2);
    let mut it = p.imap(sqr, 0..10u64, 1).unwrap();
    for i in 0..10u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
    let v: Vec<u64> = p
        .imap(sqr, 0..1000u64, 100)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let mut u: Vec<u64> = p
        .imap_unordered(sqr, 0..1000u64, 53)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    u.sort_unstable();
    assert_eq!(u, v);
}

/// Beyond Python (gh-84291): imap consumes its input lazily, with bounded chunks in flight.
#[test]
fn imap_consumes_input_lazily() {
    let p = pool(2);
    let pulled = Arc::new(Mutex::new(0u64));
    let pc = pulled.clone();
    let input = (0..u64::MAX).inspect(move |_| *pc.lock().unwrap() += 1);
    let mut it = p.imap(sqr, input, 10).unwrap();
    for i in 0..50u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    let n = *pulled.lock().unwrap();
    // 5 chunks yielded + at most 2 * processes chunks in flight (+ one being refilled)
    assert!(n <= 50 + 5 * 10 + 10, "pulled {n}");
    // next_timeout on a slow task
    let mut it = p.imap(sleep_ms, [500u64], 1).unwrap();
    assert_eq!(
        it.next_timeout(Duration::from_millis(50)).unwrap(),
        Err(PoolError::Task(TaskError::Timeout))
    );
    assert_eq!(it.next_timeout(T).unwrap().unwrap(), 500);
    assert!(it.next().is_none());
}

/// Item 60: test_make_pool: Pool(0) raises ValueError.
#[test]
fn zero_processes_is_an_error() {
    assert_eq!(
        Pool::builder().processes(0).build().unwrap_err(),
        BuildError::InvalidProcesses
    );
    let p = pool(1);
    assert_eq!(
        p.map_chunked(sqr, 0..3u64, 0).unwrap_err(),
        PoolError::Submit(SubmitError::InvalidChunksize)
    );
    assert_eq!(p.processes(), 1);
}

/// Item 62: test_context, test_enter: after terminate (leaving `with`) or close, calls fail
/// with "Pool not running"; join on a running pool is an error.
#[test]
fn calls_after_close_or_terminate_fail() {
    let p = pool(1);
    assert_eq!(p.join(), Err(PoolJoinError::StillRunning));
    p.terminate();
    assert_eq!(
        p.apply(sqr, 1).unwrap_err(),
        PoolError::Submit(SubmitError::NotRunning)
    );
    assert_eq!(p.apply(sqr, 1).unwrap_err().to_string(), "Pool not running");
    assert!(p.map(sqr, 0..3u64).is_err());
    assert!(p.imap(sqr, 0..3u64, 1).is_err());
    p.join().unwrap();
    let p = pool(1);
    p.close();
    assert_eq!(p.apply_async(sqr, 1).unwrap_err(), SubmitError::NotRunning);
    p.join().unwrap();
    // drop = terminate: a pool dropped with work running returns and fails that work
    let p = pool(1);
    let r = p.apply_async(sleep_ms, 10_000).unwrap();
    drop(p);
    assert_eq!(r.get_timeout(T), Err(TaskError::Terminated));
}

/// Item 63: test_traceback: the remote failure keeps its type and fields (a typed error
/// value) or its message (a panic).
#[test]
fn remote_errors_keep_type_and_message() {
    let p = pool(1);
    assert_eq!(
        p.apply(typed_error, 7).unwrap(),
        Err(MyError {
            code: 7,
            reason: "because".into()
        })
    );
    match p.apply(panics_on, (4, 4)) {
        Err(PoolError::Task(TaskError::TaskPanicked { message })) => {
            assert_eq!(message, "bad value 4")
        }
        other => panic!("{other:?}"),
    }
    // the worker survived the panic
    assert_eq!(p.apply(sqr, 3).unwrap(), 9);
}

/// Item 64: test_map_no_failfast: a failing map reports only after all its chunks ran.
#[test]
fn failing_map_waits_for_all_chunks() {
    let p = pool(2);
    let t0 = Instant::now();
    let r = p.map_chunked(fail_first_sleep_rest, (0..6u64).map(|x| (x, 200)), 1);
    assert!(
        matches!(r, Err(PoolError::Task(TaskError::TaskPanicked { ref message })) if message == "first fails")
    );
    // 5 items of 200 ms on 2 workers: at least 3 rounds minus slack
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // first error by chunk order, whatever the arrival order
    let r = p.map_chunked(panics_on, (0..20u64).map(|x| (x, x % 7 + 100 * (x / 7))), 1);
    assert!(
        matches!(r, Err(PoolError::Task(TaskError::TaskPanicked { ref message })) if message == "bad value 0")
    );
}

/// Item 65: test_unpickleable_result: a result that cannot be encoded is an error (Python's
/// MaybeEncodingError) and the worker survives.
#[test]
fn unencodable_result_is_an_error_and_worker_survives() {
    let p = pool(1);
    let before = p.apply(pid_of_worker, ()).unwrap();
    for _ in 0..3 {
        match p.apply(unencodable, ()) {
            Err(PoolError::Task(TaskError::Encoding { message })) => {
                assert!(message.starts_with("encoding the task result"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(p.apply(pid_of_worker, ()).unwrap(), before);
    assert_eq!(p.replaced_workers(), 0);
}

/// Item 66: test_pool_worker_lifetime: maxtasksperchild replaces workers; results complete.
#[test]
fn maxtasksperchild_replaces_workers() {
    let p = Pool::builder()
        .processes(3)
        .maxtasksperchild(10)
        .build()
        .unwrap();
    let origin = p.worker_pids();
    assert_eq!(origin.len(), 3);
    let rs: Vec<_> = (0..100u64)
        .map(|i| p.apply_async(sqr, i).unwrap())
        .collect();
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(r.get_timeout(T).unwrap(), (i * i) as u64);
    }
    // each worker ran at most 10 tasks: 100 tasks needed >= 10 workers over time
    let pids: std::collections::HashSet<u32> = (0..30)
        .map(|_| p.apply(pid_of_worker, ()).unwrap())
        .collect();
    assert!(p.replaced_workers() >= 7, "{}", p.replaced_workers());
    assert!(pids.iter().any(|x| !origin.contains(x)));
    p.close();
    p.join().unwrap();
    let (live, zombies) = children();
    for pid in pids {
        assert!(!live.contains(&pid) && !zombies.contains(&pid));
    }
}

/// Item 66: test_pool_worker_lifetime_early_close: close right after submitting; join waits
/// for the work and exits cleanly.
#[test]
fn maxtasksperchild_early_close_joins_cleanly() {
    let p = Pool::builder()
        .processes(1)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let rs: Vec<_> = (0..6u64)
        .map(|i| p.apply_async(sleep_ms, 20 + i).unwrap())
        .collect();
    p.close();
    p.join_timeout(T).unwrap();
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), 20 + i as u64);
    }
}

/// Item 67: test_pool_maxtasksperchild_invalid.
#[test]
fn invalid_maxtasksperchild_is_an_error() {
    assert_eq!(
        Pool::builder()
            .processes(1)
            .maxtasksperchild(0)
            .build()
            .unwrap_err(),
        BuildError::InvalidMaxTasks
    );
}

/// Python's `initializer`/`initargs`.
#[test]
fn initializer_runs_in_each_worker() {
    let p = Pool::builder()
        .processes(2)
        .initializer(init_env, "hello".to_string())
        .build()
        .unwrap();
    for _ in 0..4 {
        assert_eq!(p.apply(read_env, ()).unwrap(), "hello");
    }
}

/// Other start methods work too (ForkServer; Fork is used by the kill tests' own binary).
#[test]
fn forkserver_workers() {
    let p = Pool::builder()
        .processes(2)
        .start_method(multiproc_process::StartMethod::ForkServer)
        .build()
        .unwrap();
    assert_eq!(p.map(sqr, 0..50u64).unwrap()[7], 49);
}

/// A timeout too large for `Instant` (`Duration::MAX`, a user's "forever") waits as long as
/// needed, as the call without a timeout does: never a panic ("overflow when adding duration to
/// instant") — every timed call of the pool.
#[test]
fn duration_max_timeouts_mean_no_deadline() {
    let p = pool(1);
    p.wait_ready(Duration::MAX).unwrap();
    let r = p.apply_async(sleep_ms, 20).unwrap();
    assert!(r.wait_timeout(Duration::MAX));
    assert_eq!(r.get_timeout(Duration::MAX).unwrap(), 20);
    let mut it = p.imap(sqr, 0..3u64, 1).unwrap();
    assert_eq!(it.next_timeout(Duration::MAX), Some(Ok(0)));
    drop(it);
    p.close();
    p.join_timeout(Duration::MAX).unwrap();
}
