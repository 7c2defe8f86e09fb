//! Issue 13: the pool's reproduced bugs (each test failed on main before its fix) and the
//! balance property (idle workers pull).

mod support;

use multiproc_channel::{Pipe, Queue};
use multiproc_pool::{Pool, TaskError};
use multiproc_process::StartMethod;
use multiproc_sync::Value;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

multiproc_process::init_before_main!();

const T: Duration = Duration::from_secs(60);
const MIB: usize = 1024 * 1024;

/// The tests of this file run one at a time (some start 1,500 workers, and the balance test
/// wants the CPUs for its two workers).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[multiproc_process::task(crate = multiproc_process)]
fn big_result(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

/// Item 1: a 17 MiB result used to loop forever in the parent (grow, then shrink, the receive
/// buffer), and close/join never returned.
#[test]
fn result_between_16_and_64_mib_arrives_and_join_returns() {
    let _serial = serial();
    let p = Pool::new(1).unwrap();
    let r = p.apply_async(big_result, 17 * MIB).unwrap();
    let v = r.get_timeout(T).expect("17 MiB result");
    assert_eq!(v.len(), 17 * MIB);
    assert!(v.iter().all(|b| *b == 7));
    // and the pool still answers
    assert_eq!(p.apply(sqr, 4).unwrap(), 16);
    p.close();
    p.join_timeout(T).unwrap();
}

/// Item 2: a result over the 64 MiB message limit used to come back as
/// `WorkerLost { exitcode: Some(0) }` (the worker exited). It is the task's error now, and the
/// worker is kept.
#[test]
fn result_over_message_limit_is_the_tasks_error_and_the_worker_stays() {
    let _serial = serial();
    let p = Pool::new(1).unwrap();
    let before = p.worker_pids();
    match p.apply_async(big_result, 65 * MIB).unwrap().get_timeout(T) {
        Err(TaskError::ResultTooLarge { len, max }) => assert!(len > max, "{len} {max}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    assert_eq!(p.apply(sqr, 5).unwrap(), 25);
    assert_eq!(p.worker_pids(), before);
    assert_eq!(p.replaced_workers(), 0);
    p.close();
    p.join_timeout(T).unwrap();
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Item 3: every replaced worker left two unjoined threads (their stacks stay mapped): with
/// maxtasksperchild=1 a pool died after ~16,000 tasks. Now the old threads are reaped as
/// workers are replaced.
#[test]
fn replacing_workers_does_not_accumulate_threads_or_mappings() {
    let _serial = serial();
    let p = Pool::builder()
        .processes(2)
        .maxtasksperchild(1)
        .start_method(StartMethod::ForkServer)
        .build()
        .unwrap();
    assert_eq!(p.map_chunked(sqr, 0..100u64, 1).unwrap()[9], 81);
    let (maps0, threads0) = (mappings(), threads());
    let n = 1500u64;
    let out = p.map_chunked(sqr, 0..n, 1).unwrap();
    assert_eq!(out[(n - 1) as usize], (n - 1) * (n - 1));
    assert!(p.replaced_workers() >= 1500);
    let (maps1, threads1) = (mappings(), threads());
    // Before the fix: +4 mappings per replacement (~6,000 here).
    assert!(maps1 < maps0 + 200, "mappings grew from {maps0} to {maps1}");
    assert!(
        threads1 < threads0 + 16,
        "threads grew from {threads0} to {threads1}"
    );
    p.close();
    p.join_timeout(T).unwrap();
}

/// Item 4: a worker whose sender thread started but whose receiver thread did not was left
/// alive with nobody reading it. Starting a worker is all-or-nothing now: the failed start is
/// retried and no worker is left behind.
#[test]
fn a_worker_whose_threads_fail_to_start_is_not_left_behind() {
    let _serial = serial();
    let p = Pool::builder()
        .processes(1)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    assert_eq!(p.apply(sqr, 2).unwrap(), 4);
    // The replacement's receiver thread fails to start once.
    multiproc_pool::__fail_thread_spawns(1);
    for i in 0..4u64 {
        assert_eq!(
            p.apply_async(sqr, i).unwrap().get_timeout(T).unwrap(),
            i * i
        );
    }
    p.close();
    p.join_timeout(T).unwrap();
}

/// Issue 18: a `Start` error names the step that failed and carries that step's error as its
/// source, once: an error report walking `source()` does not print the cause twice.
#[test]
fn a_failed_start_step_is_named_and_its_error_is_the_source() {
    let _serial = serial();
    // The first worker's sender thread fails to start, and `build` starts workers without
    // retrying.
    multiproc_pool::__fail_thread_spawns(1);
    let e = match Pool::builder().processes(1).build() {
        Err(e) => e,
        Ok(_) => panic!("the build succeeded though its worker's thread failed to start"),
    };
    assert_eq!(
        e.to_string(),
        "starting a worker: starting its sender thread"
    );
    let src = std::error::Error::source(&e).expect("the step's error");
    assert_eq!(src.to_string(), "test hook: thread start fails");
    assert!(!e.to_string().contains(&src.to_string()));
}

#[multiproc_process::task(crate = multiproc_process)]
fn put_into(q: Queue<u64>, v: u64) -> u64 {
    q.put(v).map_err(|e| format!("{e:?}")).unwrap();
    v
}

#[multiproc_process::task(crate = multiproc_process)]
fn add_to(v: Value<i64>, n: i64) -> i64 {
    let mut g = v.get_lock().unwrap();
    *g += n;
    *g
}

#[multiproc_process::task(crate = multiproc_process)]
fn send_on(mut c: multiproc_channel::Connection<u64>, v: u64) -> u64 {
    c.send(&v).unwrap();
    v
}

#[multiproc_process::task(crate = multiproc_process)]
fn init_put(q: Queue<u64>) {
    q.put(std::process::id() as u64).unwrap();
}

/// Item 5: shared objects as task and initializer arguments (spawn start method): their fds
/// travel with the job, so the worker opens the same objects (before: a Serde error, or a
/// handle that named the worker's own pipe).
#[test]
fn shared_objects_as_task_and_initializer_arguments_reach_the_same_objects() {
    let _serial = serial();
    let init_q: Queue<u64> = Queue::new(16).unwrap();
    let p = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Spawn)
        .initializer(init_put, init_q.clone())
        .build()
        .unwrap();
    // Objects made after the workers started.
    let q: Queue<u64> = Queue::new(64).unwrap();
    let v = Value::new(0i64).unwrap();
    let (a, mut b) = Pipe::duplex::<u64>().unwrap();
    for i in 0..10u64 {
        assert_eq!(p.apply(put_into, (q.clone(), i)).unwrap(), i);
    }
    let mut got: Vec<u64> = (0..10).map(|_| q.get_timeout(T).unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    let outs = p
        .map_chunked(add_to, (0..20).map(|_| (v.clone(), 1i64)), 3)
        .unwrap();
    assert_eq!(outs.len(), 20);
    assert_eq!(*v.get_lock().unwrap(), 20);
    assert_eq!(p.apply(send_on, (a, 42)).unwrap(), 42);
    assert_eq!(b.recv_timeout(T).unwrap(), 42);
    // the initializer ran in each worker, on the queue made before the pool
    let pids: Vec<u64> = (0..2).map(|_| init_q.get_timeout(T).unwrap()).collect();
    let workers: Vec<u64> = p.worker_pids().into_iter().map(u64::from).collect();
    for pid in pids {
        assert!(workers.contains(&pid), "{pid} not in {workers:?}");
    }
    p.close();
    p.join_timeout(T).unwrap();
}

/// Item 6: a per-task time limit: a task that runs past it fails with `TimeLimit`, its worker
/// is killed and replaced, and the pool goes on (before: a hung or frozen task blocked `map`
/// forever).
#[test]
fn a_task_past_its_time_limit_fails_and_its_worker_is_replaced() {
    let _serial = serial();
    let p = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let stuck = p.apply_async(sleep_ms, 600_000).unwrap();
    let quick: Vec<_> = (0..50u64).map(|i| p.apply_async(sqr, i).unwrap()).collect();
    match stuck.get_timeout(T) {
        Err(TaskError::TimeLimit { limit, .. }) => assert_eq!(limit, Duration::from_millis(500)),
        other => panic!("{other:?}"),
    }
    for (i, r) in quick.into_iter().enumerate() {
        assert_eq!(r.get_timeout(T).unwrap(), (i * i) as u64);
    }
    // (the failed task is settled first, then the worker replaced)
    let deadline = std::time::Instant::now() + T;
    while p.replaced_workers() < 1 {
        assert!(std::time::Instant::now() < deadline, "never replaced");
        std::thread::sleep(Duration::from_millis(5));
    }
    // a frozen worker too
    let path = format!("/tmp/multiproc-pool-issue13-{}", std::process::id());
    let _ = std::fs::remove_file(&path);
    let frozen = p
        .apply_async(report_pid_then_sleep, (path.clone(), 100))
        .unwrap();
    let pid = loop {
        if let Ok(s) = std::fs::read_to_string(&path)
            && let Ok(pid) = s.trim().parse::<i32>()
        {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = std::fs::remove_file(&path);
    // SAFETY: plain syscall on our own worker.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert!(matches!(
        frozen.get_timeout(T),
        Err(TaskError::TimeLimit { .. })
    ));
    // per call: a shorter limit than the pool's
    let r = p
        .apply_async_limited(sleep_ms, 600_000, Duration::from_millis(100))
        .unwrap();
    assert!(matches!(r.get_timeout(T), Err(TaskError::TimeLimit { .. })));
    assert_eq!(p.map(sqr, 0..10u64).unwrap()[3], 9);
    p.close();
    p.join_timeout(T).unwrap();
}

/// An item of equal cost in wall time, whatever the machine's load (a CPU-bound item's cost
/// depends on how much CPU other processes leave each worker; the bench measures those).
#[multiproc_process::task(crate = multiproc_process)]
fn sleep_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn ratio(pids: impl IntoIterator<Item = u32>) -> f64 {
    let mut per: HashMap<u32, usize> = HashMap::new();
    for p in pids {
        *per.entry(p).or_default() += 1;
    }
    if per.len() < 2 {
        return f64::INFINITY;
    }
    let max = *per.values().max().unwrap() as f64;
    let min = *per.values().min().unwrap() as f64;
    max / min
}

/// Balance (issue 13, "idle workers pull"): 64 equal items on two workers are split evenly by
/// every call (before: map 16/48, map_chunked(1) 62/2).
#[test]
fn equal_items_are_balanced_across_workers_by_every_call() {
    let _serial = serial();
    let n: u64 = 10;
    let p = Pool::new(2).unwrap();
    // Both workers up first (a worker still starting is not a slow one).
    p.wait_ready(T).unwrap();
    let items = || std::iter::repeat_n(n, 64);
    let check = |what: &str, pids: Vec<u32>| {
        assert_eq!(pids.len(), 64);
        let r = ratio(pids);
        assert!(r <= 1.25, "{what}: items per worker max/min = {r}");
    };
    let m = p.map(sleep_pid, items()).unwrap();
    check("map", m);
    let m = p.map_chunked(sleep_pid, items(), 1).unwrap();
    check("map_chunked(1)", m);
    let m: Vec<_> = p
        .imap(sleep_pid, items(), 1)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    check("imap", m);
    let rs: Vec<_> = items()
        .map(|n| p.apply_async(sleep_pid, n).unwrap())
        .collect();
    check(
        "apply_async",
        rs.into_iter().map(|r| r.get_timeout(T).unwrap()).collect(),
    );
    p.close();
    p.join_timeout(T).unwrap();
}

#[multiproc_process::task(crate = multiproc_process)]
fn slow_len(v: Vec<u8>) -> usize {
    std::thread::sleep(Duration::from_millis(10));
    v.len()
}

/// A sender thread that found work for its worker, then (the pool lock dropped) saw that
/// worker die and be replaced before it took the job, took it for the *replacement's* slot
/// (next sequence number, counted as held there) but sent it down the dead worker's pipe: the
/// job never ran, and the replacement's numbers skipped it. With maxtasksperchild 1 the
/// replacement's end then failed it as `WorkerLost { exitcode: Some(0) }` (1 run in ~90 of
/// `replacing_workers_...` above, beside a build); here, with no task limit, its result was
/// waited for forever. The hooks hold the old sender in exactly that window while the worker
/// is killed, and the replacement's sender out of the way until the old one has looked.
#[test]
fn a_sender_stalled_while_its_worker_is_replaced_sends_nothing_for_the_replacement() {
    let _serial = serial();
    let p = Pool::new(1).unwrap();
    // Payloads over the submitters' fast-path size: only a sender thread sends them.
    assert_eq!(p.apply(slow_len, vec![0u8; 4096]).unwrap(), 4096);
    let dead = p.worker_pids()[0];
    multiproc_pool::__stall_next_sender(Duration::from_millis(1000));
    let r = p.apply_async(slow_len, vec![1u8; 5000]).unwrap();
    // The sender is in its stall now, holding no job.
    std::thread::sleep(Duration::from_millis(150));
    // The replacement's sender waits until well after the old one woke.
    multiproc_pool::__stall_next_sender(Duration::from_millis(2500));
    // SAFETY: kill(2) on a pid of our pool's worker (a child of this process, not reaped yet).
    assert_eq!(unsafe { libc::kill(dead as i32, libc::SIGKILL) }, 0);
    assert_eq!(r.get_timeout(Duration::from_secs(10)).unwrap(), 5000);
    assert_ne!(p.worker_pids()[0], dead);
    p.close();
    p.join_timeout(T).unwrap();
}

/// A `map` of plain data whose chunks are larger than the job ring (2 MB chunks of `u64`
/// through 1 MiB rings: each job is sent in fragments, straight from the caller's input) and
/// chunks of every size down to one item: every result is right and in order.
#[test]
fn plain_map_with_chunks_larger_than_the_ring_is_exact() {
    let p = Pool::new(2).unwrap();
    let n = 1_000_003u64;
    let want: Vec<u64> = (0..n).map(|x| x * x).collect();
    assert_eq!(p.map_chunked(sqr, 0..n, 250_000).unwrap(), want);
    assert_eq!(p.map(sqr, 0..n).unwrap(), want);
    for (len, cs) in [(1u64, 1), (2, 1), (3, 2), (17, 4), (1000, 999)] {
        let w: Vec<u64> = (0..len).map(|x| x * x).collect();
        assert_eq!(
            p.map_chunked(sqr, 0..len, cs).unwrap(),
            w,
            "{len} items by {cs}"
        );
    }
    p.close();
    p.join_timeout(T).unwrap();
}
