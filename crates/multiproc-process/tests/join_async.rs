//! `Process::join_async` / `join_timeout_async` (issue 15): a child's end awaited without
//! blocking a thread, on any executor, reported exactly as `join` reports it (value, exit code,
//! `-signal`), for every start method. No Python test mirrors these (asyncio has no Process).
#![allow(missing_docs)]

use multiproc_process::{JoinError, Process, StartMethod, task};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

multiproc_process::init_before_main!();

/// Every await is bounded: a bug fails the test instead of hanging CI.
const T: Duration = Duration::from_secs(60);

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::ForkServer,
    StartMethod::Fork,
];

#[task(crate = multiproc_process)]
fn sleep_then_square(ms: u64, x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

#[task(crate = multiproc_process)]
fn exit_with(code: i32) {
    std::process::exit(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn spawn_with(m: StartMethod, ms: u64, x: u64) -> Process<u64> {
    Process::builder()
        .start_method(m)
        .spawn(sleep_then_square, (ms, x))
        .expect("spawn")
}

/// A minimal executor (no runtime, no reactor, no timer), bounded by `T`.
fn block_on<F: std::future::IntoFuture>(f: F) -> F::Output {
    multiproc_testutil::block_on(f, T)
}

/// Waits (bounded) until the fd watcher thread has exited: it runs only while a future waits.
fn watcher_gone() -> bool {
    let deadline = Instant::now() + T;
    while multiproc_process::__fd_watcher_running() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

#[test]
fn join_async_returns_the_value_of_a_sleeping_child_for_every_start_method() {
    let rt = runtime();
    for m in METHODS {
        let mut p = spawn_with(m, 100, 12);
        let v = rt
            .block_on(async { tokio::time::timeout(T, p.join_async()).await })
            .expect("join_async hung");
        assert_eq!(v.unwrap(), 144, "{m:?}");
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
        // The blocking join agrees afterwards.
        assert_eq!(p.join().unwrap(), 144, "{m:?}");
    }
    assert!(watcher_gone(), "the watcher thread outlived its futures");
}

#[test]
fn join_async_on_a_sigkilled_child_reports_what_join_reports() {
    let rt = runtime();
    for m in METHODS {
        let mut p = spawn_with(m, 60_000, 1);
        let mut q = spawn_with(m, 60_000, 1);
        let pid = p.pid().unwrap();
        let (r, blocking) = rt.block_on(async {
            let waiter = async { tokio::time::timeout(T, p.join_async()).await };
            let killer = async {
                // The future is pending (registered with the watcher) before the kill.
                tokio::time::sleep(Duration::from_millis(30)).await;
                // SAFETY: plain syscall on our own live child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            };
            let (r, ()) = tokio::join!(waiter, killer);
            q.kill().unwrap();
            (r.expect("join_async hung after SIGKILL"), q.join())
        });
        match (r, blocking) {
            (
                Err(JoinError::NoResult { exitcode: a }),
                Err(JoinError::NoResult { exitcode: b }),
            ) => {
                assert_eq!(a, -libc::SIGKILL, "{m:?}");
                assert_eq!(a, b, "{m:?}: join_async and join agree");
            }
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
    }
}

#[test]
fn join_async_reports_an_exit_code_and_join_timeout_async_times_out() {
    let rt = runtime();
    rt.block_on(async {
        let mut p = Process::spawn(exit_with, 3).unwrap();
        match tokio::time::timeout(T, p.join_async()).await.unwrap() {
            Err(JoinError::NoResult { exitcode }) => assert_eq!(exitcode, 3),
            other => panic!("{other:?}"),
        }
        let mut p = spawn_with(StartMethod::Spawn, 60_000, 2);
        let t = Instant::now();
        let r = p.join_timeout_async(Duration::from_millis(50)).await;
        assert!(matches!(r, Err(JoinError::Timeout)), "{r:?}");
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(p.is_alive(), "a timeout leaves the child running");
        p.kill().unwrap();
        let r = tokio::time::timeout(T, p.join_async()).await.unwrap();
        assert!(matches!(r, Err(JoinError::NoResult { exitcode }) if exitcode == -libc::SIGKILL));
    });
    // Before start: the blocking join's error.
    let rt2 = runtime();
    rt2.block_on(async {
        let mut p = Process::builder().closure(|| 1u8);
        assert!(matches!(p.join_async().await, Err(JoinError::NotStarted)));
    });
}

/// Cancel safety: a `join_async` future dropped while the child runs leaves the process
/// joinable (by `join` or another `join_async`), and removes its watch.
#[test]
fn a_dropped_join_async_future_leaves_the_process_joinable() {
    let rt = runtime();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = spawn_with(m, 200, 5);
        rt.block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(20), p.join_async()).await;
            assert!(r.is_err(), "the child sleeps 200 ms");
        });
        assert!(watcher_gone(), "a dropped future left its watch behind");
        assert_eq!(
            rt.block_on(async { tokio::time::timeout(T, p.join_async()).await })
                .unwrap()
                .unwrap(),
            25
        );
        assert_eq!(p.join().unwrap(), 25);
    }
}

/// Many children awaited at once from a 2-worker runtime whose ticker keeps ticking (one
/// watcher thread waits for all of them; no runtime thread blocks).
#[test]
fn many_children_awaited_at_once_keep_the_runtime_ticking() {
    let rt = runtime();
    let (gap, sum) = rt.block_on(async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut last, mut max) = (Instant::now(), Duration::ZERO);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let now = Instant::now();
                    max = max.max(now - last);
                    last = now;
                }
                max
            })
        };
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16u64 {
            let mut p = spawn_with(StartMethod::ForkServer, 50 + 10 * (i % 5), i);
            set.spawn(async move { tokio::time::timeout(T, p.join_async()).await });
        }
        let mut sum = 0;
        while let Some(r) = set.join_next().await {
            sum += r.unwrap().expect("hung").unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (ticker.await.unwrap(), sum)
    });
    assert_eq!(sum, (0..16u64).map(|i| i * i).sum::<u64>());
    // Liveness, not speed: a blocked worker thread would stall it for the children's lives.
    assert!(gap < Duration::from_secs(5), "ticker stalled {gap:?}");
}

/// No tokio: a hand-written `block_on` (thread park/unpark) drives `join_async`.
#[test]
fn join_async_works_on_a_minimal_executor_without_tokio() {
    for m in METHODS {
        let mut p = spawn_with(m, 30, 9);
        assert_eq!(block_on(p.join_async()).unwrap(), 81, "{m:?}");
        let mut q = spawn_with(m, 60_000, 9);
        assert!(matches!(
            block_on(q.join_timeout_async(Duration::from_millis(20))),
            Err(JoinError::Timeout)
        ));
        q.kill().unwrap();
        assert!(block_on(q.join_async()).is_err());
    }
}

/// A child forked while a future waits here inherits the watcher's state but not its thread:
/// its own `join_async` starts a watcher of its own (and does not wait for the parent's).
#[test]
fn a_child_forked_while_a_future_waits_starts_its_own_watcher() {
    let mut long = spawn_with(StartMethod::Spawn, 60_000, 1);
    {
        let mut f = Box::pin(long.join_async());
        assert!(
            f.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        assert!(multiproc_process::__fd_watcher_running());
        let mut child = Process::fork(|| {
            let mut g = Process::builder()
                .start_method(StartMethod::Fork)
                .spawn(sleep_then_square, (20, 6))
                .expect("grandchild");
            block_on(g.join_async()).expect("grandchild's value")
        })
        .unwrap();
        assert_eq!(child.join().unwrap(), 36);
    }
    long.kill().unwrap();
    assert!(block_on(long.join_async()).is_err());
}

#[test]
fn the_join_async_future_is_send() {
    fn send<T: Send>(_: &T) {}
    let mut p = spawn_with(StartMethod::Spawn, 0, 1);
    {
        let f = p.join_async();
        send(&f);
    }
    assert_eq!(p.join().unwrap(), 1);
}

/// `Duration::MAX` as a timeout (a user's "forever") is no deadline, never a panic on
/// `Instant` overflow: for the start handshake and for `join_timeout_async`.
#[test]
fn duration_max_timeouts_mean_no_deadline() {
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .handshake_timeout(Duration::MAX)
        .spawn(sleep_then_square, (10, 7))
        .expect("spawn");
    assert_eq!(block_on(p.join_timeout_async(Duration::MAX)).unwrap(), 49);
}
