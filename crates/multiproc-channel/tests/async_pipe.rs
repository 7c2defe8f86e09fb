//! Async pipes across processes (issue 15): a tokio runtime awaits `Connection`s fed by forked
//! children without blocking a runtime thread; futures dropped at random points lose and
//! duplicate nothing; a SIGKILLed peer resolves pending futures with the blocking call's error.
//!
//! Children are forked before the runtime starts (forking a process that runs a runtime is
//! not something to test), and they use the blocking API.

mod common;

use common::fork;
use multiproc_channel::{Connection, Pipe, PipeOptions, Postcard, RecvError, SendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const T30: Duration = Duration::from_secs(30);

/// One test at a time: a child forked by one test would inherit (and keep bound) the pipes of
/// another.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn small() -> PipeOptions {
    PipeOptions {
        capacity: 4096,
        ..PipeOptions::default()
    }
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .unwrap()
}

/// A small deterministic generator for "random" cancellation points.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Polls `f` once, then drops it if it was not ready (a cancellation right after the future
/// registered with the notifier).
async fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// The liveness test: 2 runtime workers, 1,000 tasks each awaiting its own pipe fed by
/// one of 4 children, and a ticker task on the same runtime. The children start sending 1.5 s
/// after every future waits (the parent says when: on a loaded machine the 1,000 first polls
/// take a while): a receive that blocked its worker would stall the ticker that long.
#[test]
fn thousand_tasks_on_two_workers_receive_everything_and_the_runtime_keeps_ticking() {
    let _serial = serial();
    const PIPES: usize = 1000;
    const CHILDREN: usize = 4;
    const MSGS: u64 = 20;
    let mut readers = Vec::with_capacity(PIPES);
    let mut writers: Vec<Vec<Connection<u64>>> = (0..CHILDREN).map(|_| Vec::new()).collect();
    for i in 0..PIPES {
        let (r, w) = Pipe::simplex_with::<u64, Postcard>(small()).unwrap();
        readers.push(r);
        writers[i % CHILDREN].push(w);
    }
    // Counter 0: the parent's "every future waits" signal to the children.
    let page = common::Shared::new();
    let go = &page;
    let mut children = Vec::new();
    for (k, mut ws) in writers.into_iter().enumerate() {
        children.push(fork(move || {
            for w in ws.iter_mut() {
                if w.bind().is_err() {
                    return 2;
                }
            }
            // The parent signals within 30 s (its own bound); 60 s here, so it never races.
            if !(0..6).any(|_| go.wait_for(0, 1)) {
                return 4;
            }
            std::thread::sleep(Duration::from_millis(1500));
            for m in 0..MSGS {
                for (j, w) in ws.iter_mut().enumerate() {
                    let pipe = (j * CHILDREN + k) as u64;
                    if w.send(&(pipe * 1000 + m)).is_err() {
                        return 3;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(ws); // closes: the readers see Eof
            0
        }));
    }
    let rt = runtime(2);
    let (max_gap, threads) = rt.block_on(async move {
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let ticker = tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(1));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            while !d2.load(Ordering::Relaxed) {
                iv.tick().await;
                let now = Instant::now();
                max_gap = max_gap.max(now - last);
                last = now;
            }
            max_gap
        });
        let mut tasks = Vec::new();
        for (i, mut r) in readers.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for m in 0..MSGS {
                    let v = r.recv_async().await.unwrap();
                    assert_eq!(v, i as u64 * 1000 + m, "pipe {i}");
                }
                assert_eq!(r.recv_async().await, Err(RecvError::Eof), "pipe {i}");
            }));
        }
        // While every task waits (the children wait for `go`): a handful of notifier threads,
        // not one per future. 1,000 registrations at once need 8 (`PER_THREAD` each); a slow
        // build (ASan) re-polls armed futures every `SLICE` and never has all 1,000 armed at
        // once (6 threads seen). So: wait until the count reaches 8 or stops growing for 2 s.
        let t0 = Instant::now();
        let (mut seen, mut since) = (0, Instant::now());
        loop {
            let n = multiproc_sync::notify::threads();
            if n != seen {
                (seen, since) = (n, Instant::now());
            }
            if n >= 8 || since.elapsed() >= Duration::from_secs(2) || t0.elapsed() >= T30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let threads = multiproc_sync::notify::threads();
        go.set(0, 1);
        for t in tasks {
            tokio::time::timeout(T30, t).await.unwrap().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        (ticker.await.unwrap(), threads)
    });
    for c in children {
        c.join_ok();
    }
    eprintln!("max gap between 1 ms ticks: {max_gap:?}; notifier threads: {threads}");
    assert!(
        (1..=16).contains(&threads),
        "1,000 waiting futures took {threads} notifier threads"
    );
    // Liveness, not speed: a blocked worker would show the children's 1.5 s sleep.
    assert!(
        max_gap < Duration::from_millis(1000),
        "a runtime thread was blocked for {max_gap:?}"
    );
}

/// Receive futures dropped at random points (timeouts of 0-50 µs, and `select!` against a
/// timer) lose and duplicate nothing: the stream arrives complete and in order.
#[test]
fn recv_futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    let _serial = serial();
    const N: u64 = 20_000;
    let (mut r, mut w) = Pipe::simplex_with::<u64, Postcard>(small()).unwrap();
    let child = fork(move || {
        if w.bind().is_err() {
            return 2;
        }
        for i in 0..N {
            if w.send(&i).is_err() {
                return 3;
            }
            if i % 32 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        0
    });
    let rt = runtime(2);
    let (got, cancelled) = rt.block_on(async move {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut next = 0u64;
        let mut cancelled = 0u64;
        loop {
            let d = Duration::from_micros(rng.next() % 3000);
            let r = match rng.next() % 3 {
                0 => tokio::time::timeout(d, r.recv_async()).await.ok(),
                1 => tokio::select! {
                    r = r.recv_async() => Some(r),
                    _ = tokio::time::sleep(d) => None,
                },
                _ => poll_once(r.recv_async()).await,
            };
            match r {
                None => cancelled += 1,
                Some(Ok(v)) => {
                    assert_eq!(v, next, "lost or duplicated");
                    next += 1;
                }
                Some(Err(RecvError::Eof)) => break,
                Some(Err(e)) => panic!("{e:?}"),
            }
        }
        (next, cancelled)
    });
    child.join_ok();
    eprintln!("{cancelled} receive futures dropped mid-wait");
    assert_eq!(got, N);
}

/// Send futures dropped at random points: each value is retried until a send returns `Ok`;
/// the child checks that it gets every value exactly once, in order.
#[test]
fn send_futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    let _serial = serial();
    const N: u64 = 20_000;
    let (mut r, mut w) = Pipe::simplex_with::<u64, Postcard>(small()).unwrap();
    let child = fork(move || {
        if r.bind().is_err() {
            return 2;
        }
        for i in 0..N {
            match r.recv() {
                Ok(v) if v == i => {}
                _ => return 3,
            }
            if i % 32 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match r.recv() {
            Err(RecvError::Eof) => 0,
            _ => 4,
        }
    });
    let rt = runtime(2);
    let cancelled = rt.block_on(async move {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut cancelled = 0u64;
        for i in 0..N {
            loop {
                let d = Duration::from_micros(rng.next() % 3000);
                let r = match rng.next() % 2 {
                    0 => tokio::time::timeout(d, w.send_async(&i)).await.ok(),
                    _ => poll_once(w.send_async(&i)).await,
                };
                match r {
                    Some(Ok(())) => break,
                    Some(Err(e)) => panic!("{e:?}"),
                    None => cancelled += 1,
                }
            }
        }
        w.close();
        cancelled
    });
    eprintln!("{cancelled} send futures dropped mid-wait");
    child.join_ok();
}

/// A SIGKILLed writer: every pending receive resolves with `Eof` (as the blocking `recv`).
#[test]
fn pending_receives_resolve_with_eof_when_the_writer_is_sigkilled() {
    let _serial = serial();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..3 {
        let (r, w) = Pipe::simplex_with::<u64, Postcard>(small()).unwrap();
        readers.push(r);
        writers.push(w);
    }
    let (mut ready_r, mut ready_w) = Pipe::simplex::<u8>().unwrap();
    let mut child = fork(move || {
        for w in writers.iter_mut() {
            if w.bind().is_err() || w.send(&1).is_err() {
                return 2;
            }
        }
        if ready_w.send(&1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_eq!(ready_r.recv_timeout(T30), Ok(1));
    let rt = runtime(2);
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for mut r in readers {
            tasks.push(tokio::spawn(async move {
                assert_eq!(r.recv_async().await, Ok(1));
                // Pending until the writer dies.
                r.recv_async().await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        child.kill();
        for t in tasks {
            let r = tokio::time::timeout(T30, t).await.unwrap().unwrap();
            assert_eq!(r, Err(RecvError::Eof));
        }
    });
}

/// A SIGKILLed reader: a send pending on a full ring resolves with `Disconnected` (as the
/// blocking `send`).
#[test]
fn a_pending_send_resolves_with_disconnected_when_the_reader_is_sigkilled() {
    let _serial = serial();
    let (mut r, mut w) = Pipe::simplex_with::<u64, Postcard>(small()).unwrap();
    let (mut ready_r, mut ready_w) = Pipe::simplex::<u8>().unwrap();
    let mut child = fork(move || {
        if r.bind().is_err() || ready_w.send(&1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_eq!(ready_r.recv_timeout(T30), Ok(1));
    let rt = runtime(2);
    rt.block_on(async move {
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                match w.send_async(&i).await {
                    Ok(()) => i += 1,
                    Err(e) => return (i, e),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        child.kill();
        let (sent, e) = tokio::time::timeout(T30, task).await.unwrap().unwrap();
        assert!(sent > 0);
        assert_eq!(e, SendError::Disconnected);
    });
}

/// Large messages (fragmented over several records) arrive whole through `recv_bytes_async`
/// and `send_bytes_async`.
#[test]
fn large_messages_cross_in_fragments_both_ways() {
    let _serial = serial();
    let (mut a, mut b) = Pipe::duplex_with::<u64, Postcard>(small()).unwrap();
    let child = fork(move || {
        if b.bind().is_err() {
            return 2;
        }
        // Echo three messages back.
        for _ in 0..3 {
            match b.recv_bytes() {
                Ok(m) => {
                    if b.send_bytes(&m, 0, None).is_err() {
                        return 3;
                    }
                }
                Err(_) => return 4,
            }
        }
        0
    });
    let rt = runtime(2);
    rt.block_on(async move {
        for len in [10usize, 5000, 100_000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            a.send_bytes_async(&msg).await.unwrap();
            let back = tokio::time::timeout(T30, a.recv_bytes_async())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back, msg);
        }
    });
    child.join_ok();
}

/// The futures are `Send` (so `tokio::spawn` takes them).
#[test]
fn the_futures_are_send() {
    fn is_send<F: Send>(_: &F) {}
    let (mut a, _b) = Pipe::duplex::<String>().unwrap();
    is_send(&a.recv_async());
    is_send(&a.recv_bytes_async());
    let s = String::new();
    is_send(&a.send_async(&s));
    is_send(&a.send_bytes_async(b"x"));
}
