//! Issue 13, the speed part: a chunk travels as one record each way (one trampoline call per
//! chunk in the worker), and the wait strategy set on the builder applies to every hand-off.
//! Behaviour only (no timing assertions): every strategy gives the same results, a panicking
//! item still fails its chunk, and a killed worker still fails exactly its task.

mod support;

use multiproc_pool::{Pool, PoolError, TaskError, WaitStrategy};
use std::time::{Duration, Instant};
use support::*;

multiproc_process::init_before_main!();

const T: Duration = Duration::from_secs(60);

#[multiproc_process::task(crate = multiproc_process)]
fn panic_on_7(x: u64) -> u64 {
    assert!(x != 7, "seven");
    x + 1
}

#[multiproc_process::task(crate = multiproc_process)]
fn words(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("w{i}")).collect()
}

#[multiproc_process::task(crate = multiproc_process)]
fn halve(x: f64) -> f32 {
    (x / 2.0) as f32
}

#[multiproc_process::task(crate = multiproc_process)]
fn neg_panic_on_7(x: i32) -> i64 {
    assert!(x != 7, "seven");
    -(x as i64) * 1_000_000_000_000
}

/// A `map` of primitive numbers both ways travels as slices (plain chunks, one copy per
/// chunk instead of per-item postcard): every chunk size, widths that differ each way, a
/// panicking item failing its chunk, a killed worker, results exact.
#[test]
fn a_map_of_plain_numbers_travels_as_slices_and_keeps_every_guarantee() {
    let p = Pool::builder().processes(2).retries(3).build().unwrap();
    for cs in [1usize, 2, 3, 7, 1000, 100_000] {
        let got = p.map_chunked(sqr, 0..20_011u64, cs).unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, v)| *v == (i as u64) * (i as u64)),
            "chunksize {cs}"
        );
    }
    let xs: Vec<f64> = (0..5000).map(|i| i as f64 - 2500.5).collect();
    let got = p.map(halve, xs.clone()).unwrap();
    assert_eq!(got, xs.iter().map(|x| (x / 2.0) as f32).collect::<Vec<_>>());
    let got = p.map_chunked(neg_panic_on_7, 8..2000i32, 9).unwrap();
    assert_eq!(got[0], -8_000_000_000_000);
    assert_eq!(got.len(), 1992);
    match p.map_chunked(neg_panic_on_7, 0..100i32, 5) {
        Err(PoolError::Task(TaskError::TaskPanicked { message })) => {
            assert!(message.contains("seven"))
        }
        other => panic!("expected the chunk's panic, got {other:?}"),
    }
    // The pool still works, and a worker killed during a plain map: with retries the
    // results are exact.
    let big = p.map_async(sqr, 0..2_000_000u64).unwrap();
    let pids = p.worker_pids();
    // SAFETY: plain syscall; the pid is a live worker of our own pool.
    unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGKILL) };
    let got = big.get_timeout(T).unwrap();
    assert_eq!(got.len(), 2_000_000);
    assert!(got.iter().enumerate().all(|(i, v)| *v == (i * i) as u64));
    p.close();
    p.join().unwrap();
}

#[test]
fn every_wait_strategy_gives_the_same_results() {
    for w in [
        WaitStrategy::Spin,
        WaitStrategy::SpinYield,
        WaitStrategy::SpinPark,
        WaitStrategy::Park,
    ] {
        let p = Pool::builder().processes(2).wait(w).build().unwrap();
        for i in 0..50u64 {
            assert_eq!(p.apply(sqr, i).unwrap(), i * i, "{w:?}");
        }
        let n = 100_003u64;
        let got = p.map(sqr, 0..n).unwrap();
        assert_eq!(got.len(), n as usize);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, v)| *v == (i as u64) * (i as u64))
        );
        let ws = p.map_chunked(words, [0u32, 1, 5, 300], 3).unwrap();
        assert_eq!(ws[3].len(), 300);
        assert_eq!(ws[2][4], "w4");
        let im: Vec<u64> = p
            .imap(sqr, 0..40u64, 7)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(im, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
        let r = p.apply_async(sleep_ms, 30).unwrap();
        // A 1 ms get on a 30 ms task times out, unless this thread was preempted past the
        // task's end (a loaded CI machine): then the value is the right answer, as in Python.
        let t0 = std::time::Instant::now();
        let early = r.get_timeout(Duration::from_millis(1));
        match early {
            Err(TaskError::Timeout) => assert_eq!(r.get_timeout(T).unwrap(), 30),
            Ok(30) => assert!(
                t0.elapsed() >= Duration::from_millis(25),
                "{w:?}: too early"
            ),
            other => panic!("{w:?}: {other:?}"),
        }
        p.close();
        p.join().unwrap();
    }
}

#[test]
fn a_panicking_item_fails_its_chunk_and_the_others_arrive() {
    let p = Pool::builder().processes(2).build().unwrap();
    // Chunk 0..5 and 10..15 succeed; the chunk holding 7 is the map's error.
    match p.map_chunked(panic_on_7, 0..15u64, 5) {
        Err(PoolError::Task(TaskError::TaskPanicked { message })) => {
            assert!(message.contains("seven"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let mut it = p.imap(panic_on_7, 0..15u64, 5).unwrap();
    let first: Vec<u64> = (0..5).map(|_| it.next().unwrap().unwrap()).collect();
    assert_eq!(first, vec![1, 2, 3, 4, 5]);
    assert!(matches!(
        it.next(),
        Some(Err(PoolError::Task(TaskError::TaskPanicked { .. })))
    ));
    assert_eq!(p.apply(panic_on_7, 8).unwrap(), 9);
    p.close();
    p.join().unwrap();
}

#[test]
fn a_spinning_pool_still_fails_exactly_the_killed_task() {
    let p = Pool::builder()
        .processes(2)
        .wait(WaitStrategy::SpinYield)
        .build()
        .unwrap();
    let path = format!("/tmp/multiproc-pool-speed-{}", std::process::id());
    let _ = std::fs::remove_file(&path);
    let long = p
        .apply_async(report_pid_then_sleep, (path.clone(), 60_000))
        .unwrap();
    let deadline = Instant::now() + T;
    let victim: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "worker never reported");
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = std::fs::remove_file(&path);
    let quick: Vec<_> = (0..100u64)
        .map(|i| p.apply_async(sqr, i).unwrap())
        .collect();
    // SAFETY: plain syscall; the pid is a live worker of our own pool.
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    match long.get_timeout(T) {
        Err(TaskError::WorkerLost { pid, signal, .. }) => {
            assert_eq!(pid, victim);
            assert_eq!(signal, Some(9));
        }
        other => panic!("{other:?}"),
    }
    for (i, r) in quick.into_iter().enumerate() {
        assert_eq!(r.get_timeout(T).unwrap(), (i * i) as u64);
    }
    p.close();
    p.join().unwrap();
}

/// Issue 13, "no parent thread per worker on the hot path": a synchronous `apply` that sends
/// its job itself reads the result from its worker's result pipe itself (two hand-offs, as a
/// pipe round trip), and keeps every guarantee: WorkerLost for exactly that call, the time
/// limit, other jobs' results (and callbacks) delivered when it reads them, several callers.
#[test]
fn a_synchronous_apply_reads_its_own_result_and_keeps_every_guarantee() {
    use multiproc_pool::Callbacks;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let p = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    p.wait_ready(T).unwrap();
    for i in 0..20u64 {
        assert_eq!(p.apply(sqr, i).unwrap(), i * i);
    }
    // On main every result is read by a receiver thread (and the counter does not exist).
    assert!(p.results_read_by_callers() > 0);
    // The worker dies while its caller reads its pipe: exactly that call fails.
    match p.apply(exit_now, 3) {
        Err(PoolError::Task(TaskError::WorkerLost { exitcode, .. })) => {
            assert_eq!(exitcode, Some(3))
        }
        other => panic!("{other:?}"),
    }
    // The time limit applies while the caller reads.
    assert!(matches!(
        p.apply(sleep_ms, 60_000),
        Err(PoolError::Task(TaskError::TimeLimit { .. }))
    ));
    // Mixed with asynchronous work and its callbacks.
    let hits = Arc::new(AtomicU64::new(0));
    let rs: Vec<_> = (0..200u64)
        .map(|i| {
            let h = hits.clone();
            p.apply_async_with(
                sqr,
                i,
                Callbacks::new().on_success(move |_| {
                    h.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap()
        })
        .collect();
    for i in 0..50u64 {
        assert_eq!(p.apply(sqr, i).unwrap(), i * i);
    }
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(r.get_timeout(T).unwrap(), (i * i) as u64);
    }
    assert_eq!(hits.load(Ordering::Relaxed), 200);
    // Several callers at once (one may find the pipe taken and wait as any caller).
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..50u64 {
                    assert_eq!(p.apply(sqr, i).unwrap(), i * i);
                }
            });
        }
    });
    p.close();
    p.join_timeout(T).unwrap();
}

/// A synchronous `apply` under `maxtasksperchild(1)` (every worker exits after its task, is
/// noticed at once by its pidfd and replaced) and under `terminate` from another thread.
#[test]
fn synchronous_applies_survive_maxtasksperchild_and_terminate() {
    let p = Pool::builder()
        .processes(2)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    for i in 0..60u64 {
        assert_eq!(p.apply(sqr, i).unwrap(), i * i);
    }
    assert!(p.replaced_workers() >= 30, "{}", p.replaced_workers());
    let p = Pool::new(1).unwrap();
    p.wait_ready(T).unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| p.apply(sleep_ms, 60_000));
        std::thread::sleep(Duration::from_millis(300));
        p.terminate();
        assert!(matches!(
            h.join().unwrap(),
            Err(PoolError::Task(TaskError::Terminated))
        ));
    });
}

#[multiproc_process::task(crate = multiproc_process)]
fn whose(x: u64) -> (u64, u32) {
    (x, std::process::id())
}

/// The state letter of `/proc/PID/stat` ('R' running, 'S' sleeping, ...).
fn proc_state(pid: u32) -> Option<u8> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name's closing parenthesis.
    s.rsplit_once(") ")
        .and_then(|(_, rest)| rest.bytes().next())
}

/// Under `Spin` sequential calls stay on the worker that answered last (ties are never handed
/// to another worker, which would have to be woken), and an idle worker stops spinning after
/// a moment: it parks (state `S`) instead of holding a CPU for ever. Before, every 65th call went
/// to the other worker, and an idle worker under `Spin` was always running (state `R`).
#[test]
fn spin_keeps_sequential_calls_on_one_worker_and_idle_workers_park() {
    let p = Pool::builder()
        .processes(2)
        .wait(WaitStrategy::Spin)
        .build()
        .unwrap();
    p.wait_ready(T).unwrap();
    // Warm both up, as a user's first map would.
    assert_eq!(p.map_chunked(sqr, 0..64u64, 1).unwrap().len(), 64);
    let mut pids = std::collections::HashSet::new();
    for i in 0..300u64 {
        let (x, pid) = p.apply(whose, i).unwrap();
        assert_eq!(x, i);
        pids.insert(pid);
    }
    assert_eq!(
        pids.len(),
        1,
        "sequential calls under Spin moved between workers"
    );
    // Both workers idle now: each parks within a few slices of SPIN_IDLE (2 ms).
    for pid in p.worker_pids() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if proc_state(pid) == Some(b'S') {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "idle worker {pid} under Spin still running after 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // A parked worker still takes the next call (woken by the job's publication).
    assert_eq!(p.apply(sqr, 9).unwrap(), 81);
    p.close();
    p.join_timeout(T).unwrap();
}

/// Under the default `SpinPark` a synchronous `apply`'s caller spins before it parks only while
/// that pays off (adaptive): with tasks of 2 ms every spin is late, so after two calls the
/// caller parks at once, trying a spin again only every 64th call.
#[test]
fn apply_caller_stops_spinning_when_results_come_late() {
    let p = Pool::new(2).unwrap();
    for _ in 0..40 {
        assert_eq!(p.apply(sleep_ms, 2).unwrap(), 2);
    }
    assert!(
        p.results_read_by_callers() >= 30,
        "only {} results were read by the caller",
        p.results_read_by_callers()
    );
    let spins = p.caller_spins();
    assert!(
        (1..=4).contains(&spins),
        "the caller spun in {spins} of 40 waits"
    );
    p.close();
    p.join_timeout(Duration::from_secs(60)).unwrap();
}
