//! Async pool results (issue 15): `AsyncResult` as a `Future`, `map_async` awaited, `imap` as a
//! `Stream`; no runtime thread blocks; a SIGKILLed worker or a terminated pool resolves pending
//! futures with the blocking calls' errors; dropped futures lose nothing.
//!
//! No Python test mirrors these (Python's Pool has no asyncio face).

mod support;

use multiproc_pool::{Pool, PoolError, TaskError};
use multiproc_testutil::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use support::*;

multiproc_process::init_before_main!();

/// Every await in these tests is bounded: a bug fails the test instead of hanging CI.
const T: Duration = Duration::from_secs(60);

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

fn kill9(pid: u32) {
    // SAFETY: plain syscall; the pid is a live worker of our own pool.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
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

/// Largest gap between the ticks of a loop that sleeps 1 ms per tick, until `stop`.
fn max_gap_of(ticks: &AtomicU64, stop: &AtomicBool, mut tick: impl FnMut()) -> Duration {
    let mut last = Instant::now();
    let mut max = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        tick();
        let now = Instant::now();
        max = max.max(now - last);
        last = now;
        ticks.fetch_add(1, Ordering::Relaxed);
    }
    max
}

/// Issue 15's liveness test, for pool results: a 2-worker runtime, 1,000 tasks each awaiting
/// its own `apply_async` future, and a task on the same runtime that ticks every millisecond
/// throughout. A future that blocked its worker thread (as `get()` would) would stall the
/// ticker for as long as it waits. The ticker's largest gap is compared with that of an OS
/// thread ticking beside it (a control for a machine that stalls everything), not with a speed.
#[test]
fn thousand_apply_async_futures_keep_a_two_worker_runtime_ticking() {
    let pool = Arc::new(Pool::builder().processes(2).build().unwrap());
    pool.wait_ready(T).unwrap();
    let rt = runtime(2);
    let stop = Arc::new(AtomicBool::new(false));
    let (os_ticks, rt_ticks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let os_gap = {
        let (stop, ticks) = (stop.clone(), os_ticks.clone());
        std::thread::spawn(move || {
            max_gap_of(&ticks, &stop, || {
                std::thread::sleep(Duration::from_millis(1))
            })
        })
    };
    let (rt_gap, values) = rt.block_on(async {
        let ticker = {
            let (stop, ticks) = (stop.clone(), rt_ticks.clone());
            tokio::spawn(async move {
                let mut last = Instant::now();
                let mut max = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let now = Instant::now();
                    max = max.max(now - last);
                    last = now;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
                max
            })
        };
        let mut set = tokio::task::JoinSet::new();
        for i in 0..1000u64 {
            let pool = pool.clone();
            set.spawn(async move {
                // A sleeping task now and then keeps futures pending for a while.
                let r = if i % 50 == 0 {
                    pool.apply_async(sleep_ms, 20).map(|r| (r, 20))
                } else {
                    pool.apply_async(sqr, i).map(|r| (r, i * i))
                };
                let (r, want) = r.expect("apply_async");
                let got = r.await.expect("result");
                assert_eq!(got, want, "item {i}");
                i
            });
        }
        let mut seen = vec![false; 1000];
        while let Some(j) = tokio::time::timeout(T, set.join_next())
            .await
            .expect("a result future hung")
        {
            seen[j.expect("task") as usize] = true;
        }
        stop.store(true, Ordering::Relaxed);
        (ticker.await.expect("ticker"), seen)
    });
    let os_gap = os_gap.join().unwrap();
    eprintln!("largest tick gap: runtime {rt_gap:?}, OS thread {os_gap:?}");
    assert!(values.iter().all(|&s| s), "every task completed");
    assert!(rt_ticks.load(Ordering::Relaxed) > 0, "the ticker ran");
    assert!(
        rt_gap < os_gap + Duration::from_millis(200),
        "the runtime's ticker stalled {rt_gap:?} (an OS thread beside it: {os_gap:?})"
    );
    pool.close();
    pool.join().unwrap();
}

/// A worker SIGKILLed while futures wait: the one it was running resolves with the same
/// `WorkerLost` as the blocking `get`; the rest still complete.
#[test]
fn sigkilled_worker_resolves_its_pending_future_with_worker_lost() {
    let pool = Pool::builder().processes(2).build().unwrap();
    let path = format!("/tmp/multiproc-pool-async-{}-a", std::process::id());
    let _ = std::fs::remove_file(&path);
    let rt = runtime(2);
    let long = pool
        .apply_async(report_pid_then_sleep, (path.clone(), 60_000))
        .unwrap();
    let victim = wait_file(&path);
    let _ = std::fs::remove_file(&path);
    let quick: Vec<_> = (0..100u64)
        .map(|i| pool.apply_async(sqr, i).unwrap())
        .collect();
    rt.block_on(async {
        let waiter = tokio::spawn(async move { tokio::time::timeout(T, long).await });
        // Let the waiter register its waker first (the kill then lands on a pending future).
        tokio::time::sleep(Duration::from_millis(20)).await;
        kill9(victim);
        match waiter.await.unwrap().expect("hung after the kill") {
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
            let v = tokio::time::timeout(T, r).await.expect("hung").unwrap();
            assert_eq!(v, (i * i) as u64);
        }
    });
    pool.close();
    pool.join().unwrap();
}

/// `terminate()` while futures wait (queued and running): each resolves with `Terminated`.
#[test]
fn terminate_resolves_pending_futures_with_terminated() {
    let pool = Arc::new(Pool::builder().processes(1).build().unwrap());
    let rt = runtime(2);
    let rs: Vec<_> = (0..5)
        .map(|_| pool.apply_async(sleep_ms, 30_000).unwrap())
        .collect();
    let map = pool.map_async(sleep_ms, [30_000u64, 1]).unwrap();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for r in rs {
            set.spawn(async move { tokio::time::timeout(T, r).await.map(|v| v.map(drop)) });
        }
        set.spawn(async move { tokio::time::timeout(T, map).await.map(|v| v.map(drop)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let p = pool.clone();
        tokio::task::spawn_blocking(move || p.terminate())
            .await
            .unwrap();
        let mut n = 0;
        while let Some(j) = set.join_next().await {
            assert_eq!(j.unwrap().expect("hung"), Err(TaskError::Terminated));
            n += 1;
        }
        assert_eq!(n, 6);
    });
}

/// Cancel safety: `get_async`/`wait_async`/`(&r).await` futures dropped at random points
/// (after a random number of polls, or by a random timeout) leave the value for the blocking
/// `get`, which then returns it; a future that completed took it (then `get` says
/// `AlreadyTaken`). No value is lost or given twice.
#[test]
fn futures_dropped_at_random_points_leave_the_value_for_get() {
    let pool = Pool::builder().processes(2).build().unwrap();
    let rt = runtime(2);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut by_future, mut by_get) = (0, 0);
    for i in 0..300u64 {
        let r = if i % 7 == 0 {
            pool.apply_async(sleep_ms, rng.next() % 5)
                .map(|r| (r, None))
        } else {
            pool.apply_async(sqr, i).map(|r| (r, Some(i * i)))
        };
        let (r, want) = r.unwrap();
        let budget = Duration::from_micros(rng.next() % 3000);
        let taken = rt.block_on(async {
            match rng.next() % 3 {
                0 => tokio::time::timeout(budget, r.get_async()).await.ok(),
                1 => tokio::time::timeout(budget, &r).await.ok(),
                _ => {
                    let _ = tokio::time::timeout(budget, r.wait_async()).await;
                    None
                }
            }
        });
        match taken {
            Some(v) => {
                let v = v.unwrap();
                assert!(want.is_none_or(|w| w == v), "item {i}: {v}");
                assert_eq!(r.get_timeout(T), Err(TaskError::AlreadyTaken));
                by_future += 1;
            }
            None => {
                let v = r.get_timeout(T).unwrap();
                assert!(want.is_none_or(|w| w == v), "item {i}: {v}");
                by_get += 1;
            }
        }
        assert!(r.ready());
    }
    eprintln!("taken by a future: {by_future}, by get after a drop: {by_get}");
    // Both paths were exercised (the budget spans "at once" to "long after").
    assert!(by_future > 0 && by_get > 0, "{by_future} / {by_get}");
    // Polled by hand: a future dropped after returning Pending also leaves the value.
    let r = pool.apply_async(sleep_ms, 50).unwrap();
    {
        let mut f = std::pin::pin!(r.get_async());
        let waker = Waker::noop();
        assert!(
            f.as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
    }
    assert_eq!(r.get_timeout(T).unwrap(), 50);
    pool.close();
    pool.join().unwrap();
}

/// `map_async` awaited, `imap` and `imap_unordered` as streams (in a spawned task: the stream
/// is `Send`), with `next()` futures dropped at random points: every item exactly once, `imap`
/// in order.
#[test]
fn map_async_awaits_and_imap_streams_lose_nothing_when_next_is_dropped() {
    let pool = Arc::new(Pool::builder().processes(2).build().unwrap());
    let rt = runtime(2);
    rt.block_on(async {
        let v = pool.map_async(sqr, 0..1000u64).unwrap().await.unwrap();
        assert_eq!(v, (0..1000u64).map(|i| i * i).collect::<Vec<_>>());
        let map = pool.map_async(sqr, 0..10u64).unwrap();
        map.wait_async().await;
        assert_eq!(map.get_async().await.unwrap()[3], 9);

        for ordered in [true, false] {
            let pool = pool.clone();
            let got = tokio::spawn(async move {
                let mut rng = Rng(7 + ordered as u64);
                let mut it = if ordered {
                    pool.imap(sqr, 0..500u64, 7).unwrap()
                } else {
                    pool.imap_unordered(sqr, 0..500u64, 7).unwrap()
                };
                let mut got = Vec::new();
                loop {
                    let budget = Duration::from_micros(rng.next() % 400);
                    match tokio::time::timeout(budget, it.next_async()).await {
                        Err(_) => continue, // dropped mid-wait
                        Ok(None) => break,
                        Ok(Some(v)) => got.push(v.unwrap()),
                    }
                }
                got
            })
            .await
            .unwrap();
            let want: Vec<u64> = (0..500u64).map(|i| i * i).collect();
            if ordered {
                assert_eq!(got, want);
            } else {
                let mut g = got;
                g.sort_unstable();
                assert_eq!(g, want);
            }
        }
    });
    pool.close();
    pool.join().unwrap();
}

/// A failing chunk comes out of the stream as an error item, as from the iterator.
#[test]
fn imap_stream_yields_a_failed_chunk_as_an_error_item() {
    let pool = Pool::builder().processes(2).build().unwrap();
    let rt = runtime(1);
    rt.block_on(async {
        let mut it = pool.imap(panics_on, (0..10u64).map(|x| (x, 4)), 1).unwrap();
        let mut items = Vec::new();
        while let Some(v) = tokio::time::timeout(T, it.next_async()).await.unwrap() {
            items.push(v);
        }
        assert_eq!(items.len(), 10);
        assert!(matches!(
            items[4],
            Err(PoolError::Task(TaskError::TaskPanicked { .. }))
        ));
        assert_eq!(items[5], Ok(5));
    });
    pool.close();
    pool.join().unwrap();
}

/// No tokio: a hand-written `block_on` (thread park/unpark as the waker) drives the same
/// futures, so they need nothing from a runtime but a `Waker`.
#[test]
fn futures_work_on_a_minimal_executor_without_tokio() {
    fn block_on<F: std::future::IntoFuture>(f: F) -> F::Output {
        multiproc_testutil::block_on(f, T)
    }
    let pool = Pool::builder().processes(2).build().unwrap();
    for i in 0..50u64 {
        assert_eq!(block_on(pool.apply_async(sqr, i).unwrap()).unwrap(), i * i);
    }
    assert_eq!(
        block_on(pool.apply_async(sleep_ms, 30).unwrap()).unwrap(),
        30
    );
    let mut it = pool.imap_unordered(sqr, 0..100u64, 3).unwrap();
    let mut n = 0;
    while let Some(v) = block_on(it.next_async()) {
        v.unwrap();
        n += 1;
    }
    assert_eq!(n, 100);
    pool.close();
    pool.join().unwrap();
}

/// The futures are `Send` (a tokio `JoinSet` needs it) and `AsyncResult` stays `Sync`.
#[test]
fn futures_and_streams_are_send() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Sync>() {}
    let pool = Pool::builder().processes(1).build().unwrap();
    let r = pool.apply_async(sqr, 2).unwrap();
    send(&r.get_async());
    send(&r.wait_async());
    let it = pool.imap(sqr, 0..3u64, 1).unwrap();
    send(&it);
    sync::<multiproc_pool::AsyncResult<u64>>();
    drop(it);
    send(&std::future::IntoFuture::into_future(r));
    pool.close();
    pool.join().unwrap();
}
