//! RemotePool conformance against a real redis-server, workers in separate processes (this test
//! binary run again in the worker role, as the user's binary would be on another host).

mod common;

use common::{Children, RedisServer, spawn_self};
use multiproc_process::task;
use multiproc_redis::{
    ConnectError, Error, LinkError, Options, RemotePool, ServeOptions, SubmitError, TaskError,
};
use std::time::{Duration, Instant};

#[task(crate = multiproc_process)]
fn square(x: u64) -> u64 {
    x * x
}

#[task(crate = multiproc_process)]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[task(crate = multiproc_process)]
fn boom(x: u64) -> u64 {
    if x > 0 {
        panic!("boom {x}");
    }
    x
}

/// The first run writes its pid to `path` and hangs; a later run (another worker, after the
/// first was killed) returns at once.
#[task(crate = multiproc_process)]
fn hang_first(path: String, x: u64) -> u64 {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        let _ = writeln!(f, "{}", std::process::id());
        drop(f);
        std::thread::sleep(Duration::from_secs(600));
    }
    x * x
}

/// Writes its pid to `path`, sleeps `ms`, returns `x * x`.
#[task(crate = multiproc_process)]
fn mark_then_sleep(path: String, ms: u64, x: u64) -> u64 {
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

const CLAIM_MS: u64 = 2000;

/// Worker role, or (MP_POOL_ROLE=client) a named client that submits, prints its job ids and
/// waits to be killed.
#[test]
fn zz_child_entry() {
    let Ok(role) = std::env::var("MP_POOL_ROLE") else {
        return;
    };
    let url = std::env::var("MP_URL").unwrap();
    let name = std::env::var("MP_NAME").unwrap();
    if role == "client" {
        let o = Options {
            connect_timeout: Duration::from_secs(1),
            ..Options::default()
        };
        let p = RemotePool::attach(&url, &name, "restarting", o, 1).unwrap();
        let jobs: Vec<String> = (0..20u64)
            .map(|i| p.apply_async(square, i).unwrap().job().to_string())
            .collect();
        p.flush().unwrap();
        println!("JOBS {}", jobs.join(","));
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    assert_eq!(role, "worker");
    let opts = ServeOptions {
        options: Options {
            claim_idle: Duration::from_millis(CLAIM_MS),
            connect_timeout: Duration::from_secs(1),
            ..Options::default()
        },
        heartbeat: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    println!("SERVING");
    multiproc_redis::serve(&url, &name, opts).unwrap();
}

fn workers(r: &RedisServer, name: &str, n: usize) -> Children {
    let mut kids = Children::default();
    for _ in 0..n {
        kids.push(spawn_self(
            "zz_child_entry",
            &[
                ("MP_POOL_ROLE", "worker".into()),
                ("MP_URL", r.url()),
                ("MP_NAME", name.into()),
            ],
        ));
    }
    kids
}

fn pool(r: &RedisServer, name: &str, retries: u32) -> RemotePool {
    let o = Options {
        connect_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    RemotePool::connect_with(&r.url(), name, o, retries).unwrap()
}

const LONG: Duration = Duration::from_secs(60);

fn tmp(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("mp-redis-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

/// Waits for `path` to hold a pid.
fn pid_in(path: &str) -> u32 {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(p) = s.trim().parse()
        {
            return p;
        }
        assert!(t0.elapsed() < LONG, "no task started within {LONG:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn apply_map_and_imap_unordered() {
    let r = RedisServer::start();
    let _w = workers(&r, "basic", 2);
    let p = pool(&r, "basic", 1);
    assert_eq!(p.apply(square, 7).unwrap(), 49);
    assert_eq!(p.apply(add, (2, 40)).unwrap(), 42);
    let a = p.apply_async(square, 12).unwrap();
    assert_eq!(a.get_timeout(LONG).unwrap(), 144);
    assert!(a.ready());
    let want: Vec<u64> = (0..600).map(|x| x * x).collect();
    assert_eq!(p.map(square, 0..600).unwrap(), want); // 3 pipelined chunks
    let mut got: Vec<u64> = p
        .imap_unordered(square, 0..50)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, want[..50]);
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn get_timeout_without_workers_times_out() {
    let r = RedisServer::start();
    let p = pool(&r, "idle", 1);
    let a = p.apply_async(square, 3).unwrap();
    assert_eq!(
        a.get_timeout(Duration::from_millis(200)).unwrap_err(),
        TaskError::Timeout
    );
    // A worker that comes later still runs it.
    let _w = workers(&r, "idle", 1);
    assert_eq!(a.get_timeout(LONG).unwrap(), 9);
}

#[test]
fn unknown_task_comes_back_as_an_error() {
    let r = RedisServer::start();
    let _w = workers(&r, "unknown", 1);
    let p = pool(&r, "unknown", 1);
    let e = p
        .apply_named::<u64, u64>("no::such::task(u64)->u64", &3)
        .unwrap()
        .get_timeout(LONG)
        .unwrap_err();
    assert!(
        matches!(&e, TaskError::UnknownTask { task, .. } if task == "no::such::task(u64)->u64"),
        "{e:?}"
    );
    // By name, with the right id, it runs.
    let id = multiproc_process::registry::entry_of(&square).unwrap().id;
    let v: u64 = p.apply_named(id, &5u64).unwrap().get_timeout(LONG).unwrap();
    assert_eq!(v, 25);
}

#[test]
fn a_different_build_is_refused() {
    let r = RedisServer::start();
    let _w = workers(&r, "build", 1);
    let mut p = pool(&r, "build", 1);
    p.__set_build_hash(0x1234_5678);
    let e = p.apply(square, 3).unwrap_err();
    assert!(
        matches!(e, Error::Task(TaskError::BuildMismatch { .. })),
        "{e:?}"
    );
}

#[test]
fn a_panicking_task_fails_and_the_worker_goes_on() {
    let r = RedisServer::start();
    let _w = workers(&r, "panic", 1);
    let p = pool(&r, "panic", 1);
    let e = p.apply(boom, 3).unwrap_err();
    assert!(
        matches!(&e, Error::Task(TaskError::TaskFailed { msg, .. }) if msg.contains("boom 3")),
        "{e:?}"
    );
    assert_eq!(p.apply(boom, 0).unwrap(), 0);
}

#[test]
fn oversized_arguments_are_refused_and_a_bad_url_fails_in_time() {
    let r = RedisServer::start();
    let o = Options {
        max_message: 100,
        ..Options::default()
    };
    let p = RemotePool::connect_with(&r.url(), "big", o, 1).unwrap();
    let e = p
        .apply_async(hang_first, ("x".repeat(500), 1))
        .err()
        .unwrap();
    assert!(matches!(e, SubmitError::TooLarge { .. }), "{e:?}");
    assert_eq!(p.in_flight(), 0);

    let o = Options {
        connect_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let t0 = Instant::now();
    let e = RemotePool::connect_with(&url, "none", o.clone(), 1).unwrap_err();
    assert!(
        matches!(e, ConnectError::Link(LinkError::Unreachable { .. })),
        "{e:?}"
    );
    let so = ServeOptions {
        options: o,
        ..ServeOptions::default()
    };
    let e = multiproc_redis::serve(&url, "none", so).unwrap_err();
    assert!(
        matches!(e, ConnectError::Link(LinkError::Unreachable { .. })),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
}

/// A worker SIGKILLed mid-task with retries 1: another worker claims the task and runs it again;
/// every other result arrives exactly once.
#[test]
fn worker_sigkilled_mid_task_is_retried_and_other_results_arrive_once() {
    let r = RedisServer::start();
    let mut w = workers(&r, "kill", 2);
    let p = pool(&r, "kill", 1);
    let path = tmp("kill-retry");
    let victim = p.apply_async(hang_first, (path.clone(), 11)).unwrap();
    let pid = pid_in(&path);
    let others = p.imap_unordered(square, 0..40).unwrap();
    // The hung task stays with its worker while that worker heartbeats (past claim_idle).
    std::thread::sleep(Duration::from_millis(CLAIM_MS + 1000));
    assert!(!victim.ready(), "a live worker's task was taken over");
    let i = w.0.iter().position(|c| c.id() == pid).unwrap();
    w.kill(i);
    // The survivor claims the task after claim_idle and runs it again.
    assert_eq!(victim.get_timeout(LONG).unwrap(), 121);
    let mut got: Vec<u64> = others.collect::<Result<_, _>>().unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..40).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(p.in_flight(), 0);
    let _ = std::fs::remove_file(&path);
}

/// With retries 0 the claimed task is not run again: it fails with WorkerLost.
#[test]
fn worker_sigkilled_mid_task_without_retries_is_worker_lost() {
    let r = RedisServer::start();
    let mut w = workers(&r, "lost", 2);
    let p = pool(&r, "lost", 0);
    let path = tmp("kill-lost");
    let victim = p.apply_async(hang_first, (path.clone(), 3)).unwrap();
    let pid = pid_in(&path);
    let i = w.0.iter().position(|c| c.id() == pid).unwrap();
    w.kill(i);
    let e = victim.get_timeout(LONG).unwrap_err();
    assert!(
        matches!(&e, TaskError::WorkerLost { deliveries: 2, .. }),
        "{e:?}"
    );
    // The survivor still serves.
    assert_eq!(
        p.apply_async(square, 4).unwrap().get_timeout(LONG).unwrap(),
        16
    );
    let _ = std::fs::remove_file(&path);
}

/// redis-server killed and restarted (no persistence) while a task runs: the call in flight
/// returns BrokerRestarted (no hang); a call while Redis is away fails in time; afterwards the
/// same pool and workers work again.
#[test]
fn redis_killed_and_restarted_mid_run() {
    let mut r = RedisServer::start();
    let _w = workers(&r, "restart", 1);
    let p = pool(&r, "restart", 1);
    assert_eq!(p.apply(square, 2).unwrap(), 4);
    let path = tmp("restart");
    let in_flight = p
        .apply_async(mark_then_sleep, (path.clone(), 1500, 5))
        .unwrap();
    pid_in(&path);
    r.kill();
    let t0 = Instant::now();
    // apply_async does not wait for its XADD's reply: the error comes either from the call
    // (the connection was seen broken) or from the result.
    let e: Error = match p.apply_async(square, 1) {
        Err(e) => e.into(),
        Ok(a) => a.get_timeout(Duration::from_secs(20)).unwrap_err().into(),
    };
    assert!(
        matches!(
            e,
            Error::Submit(SubmitError::Link(
                LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. }
            )) | Error::Task(TaskError::Link(
                LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. }
            ))
        ),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    r.restart();
    assert_eq!(
        in_flight.get_timeout(LONG).unwrap_err(),
        TaskError::BrokerRestarted
    );
    let t0 = Instant::now();
    let v = loop {
        match p.apply_async(square, 6) {
            Ok(a) => break a.get_timeout(LONG).unwrap(),
            Err(e) => assert!(t0.elapsed() < LONG, "{e:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v, 36);
    let _ = std::fs::remove_file(&path);
}

/// Redis killed for good while a task is in flight: `get()` (no timeout) returns an error after
/// `outage_timeout` instead of waiting forever.
#[test]
fn redis_gone_for_good_ends_get_without_timeout() {
    let mut r = RedisServer::start();
    let _w = workers(&r, "gone", 1);
    let o = Options {
        connect_timeout: Duration::from_millis(500),
        outage_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let p = RemotePool::connect_with(&r.url(), "gone", o, 1).unwrap();
    let path = tmp("gone");
    let in_flight = p
        .apply_async(mark_then_sleep, (path.clone(), 60_000, 2))
        .unwrap();
    pid_in(&path);
    r.kill();
    let e = in_flight.get().unwrap_err();
    assert!(
        matches!(
            e,
            TaskError::Link(LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. })
        ),
        "{e:?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn callbacks_get_every_result_once() {
    let r = RedisServer::start();
    let _w = workers(&r, "callbacks", 2);
    let p = pool(&r, "callbacks", 1);
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..20u64 {
        let tx = tx.clone();
        p.apply_async_callback(square, i, move |r| tx.send(r).unwrap())
            .unwrap();
    }
    let tx2 = tx.clone();
    p.apply_async_callback(boom, 1, move |r| tx2.send(r).unwrap())
        .unwrap();
    drop(tx);
    let mut ok = Vec::new();
    let mut errs = 0;
    for _ in 0..21 {
        match rx.recv_timeout(LONG).unwrap() {
            Ok(v) => ok.push(v),
            Err(TaskError::TaskFailed { .. }) => errs += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    ok.sort_unstable();
    assert_eq!(ok, (0..20).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(errs, 1);
    assert_eq!(p.in_flight(), 0);
}

/// A named client SIGKILLed after submitting (before any worker ran its tasks): a new process
/// attaching with the same client name collects every result.
#[test]
fn a_restarted_client_reattaches_and_collects_its_results() {
    let r = RedisServer::start();
    let mut kids = Children::default();
    let c = kids.push(spawn_self(
        "zz_child_entry",
        &[
            ("MP_POOL_ROLE", "client".into()),
            ("MP_URL", r.url()),
            ("MP_NAME", "reattach".into()),
        ],
    ));
    let line = common::wait_line(&mut kids.0[c], "JOBS ");
    let jobs: Vec<u64> = line.split(',').map(|j| j.parse().unwrap()).collect();
    assert_eq!(jobs.len(), 20);
    kids.kill(c);
    // The tasks run while no client is there; their results wait on the client's stream.
    let _w = workers(&r, "reattach", 2);
    let o = Options {
        connect_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let p = RemotePool::attach(&r.url(), "reattach", "restarting", o, 1).unwrap();
    for (i, job) in jobs.iter().enumerate() {
        let v: u64 = p.result_of(*job).get_timeout(LONG).unwrap();
        assert_eq!(v, (i as u64) * (i as u64));
    }
    assert!(p.orphans().is_empty());
    // This incarnation's own jobs do not collide with the earlier ones.
    let a = p.apply_async(square, 9).unwrap();
    assert!(!jobs.contains(&a.job()));
    assert_eq!(a.get_timeout(LONG).unwrap(), 81);
}

/// A worker SIGKILLed while its batch still holds tasks it has not started (retries 0): the task
/// it was running fails with WorkerLost, the ones it never started run on another worker as
/// first deliveries (not WorkerLost). (Whether a read takes several tasks depends on timing:
/// the worker's reads grow 1, 2, 4, 8... while tasks are quick, so the 7 warm-up tasks put the
/// hanging one at the head of a larger read; if the machine is too slow for that, the later
/// tasks are simply read by the second worker and the test still holds.)
#[test]
fn unstarted_batch_mates_of_a_killed_worker_run_as_first_deliveries() {
    let r = RedisServer::start();
    let p = pool(&r, "mates", 0);
    let path = tmp("mates");
    // Queued before the worker starts.
    let warm: Vec<_> = (0..7).map(|i| p.apply_async(square, i).unwrap()).collect();
    let victim = p.apply_async(hang_first, (path.clone(), 5)).unwrap();
    let mates: Vec<_> = (10..20u64)
        .map(|i| p.apply_async(square, i).unwrap())
        .collect();
    p.flush().unwrap();
    let mut w = workers(&r, "mates", 1);
    let pid = pid_in(&path);
    assert_eq!(w.0[0].id(), pid);
    for (i, res) in warm.iter().enumerate() {
        assert_eq!(res.get_timeout(LONG).unwrap(), (i * i) as u64);
    }
    w.kill(0);
    let _w2 = workers(&r, "mates", 1);
    let e = victim.get_timeout(LONG).unwrap_err();
    assert!(
        matches!(&e, TaskError::WorkerLost { deliveries: 2, .. }),
        "{e:?}"
    );
    for (i, res) in (10..20u64).zip(&mates) {
        assert_eq!(res.get_timeout(LONG).unwrap(), i * i);
    }
    assert_eq!(p.in_flight(), 0);
    let _ = std::fs::remove_file(&path);
}
