//! Async queues across processes (issue 15): `get_async`/`put_async`/`join_async` on a tokio
//! runtime against forked children using the blocking API; random cancellation loses and
//! duplicates nothing; SIGKILLed peers resolve pending futures with `Disconnected`.

mod common;

use common::fork;
use multiproc_channel::{GetError, JoinableQueue, PutError, Queue, Receiver, Sender};
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);

/// One test at a time: a forked child counts as holding every queue alive at the fork.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn pair<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
    cap: usize,
) -> (Sender<T>, Receiver<T>) {
    Queue::<T>::new(cap).unwrap().split()
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// A child puts 0..N (blocking); the runtime gets them with futures dropped at random points:
/// every item arrives once, in order, then `Disconnected`.
#[test]
fn get_futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    let _serial = serial();
    const N: u64 = 10_000;
    let (s, r) = pair::<u64>(16);
    let child = fork(move || {
        for i in 0..N {
            if s.put(i).is_err() {
                return 3;
            }
            if i % 32 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(s);
        0
    });
    let (got, cancelled) = runtime().block_on(async move {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (mut next, mut cancelled) = (0u64, 0u64);
        loop {
            let d = Duration::from_micros(rng.next() % 3000);
            let r = match rng.next() % 3 {
                0 => tokio::time::timeout(d, r.get_async()).await.ok(),
                1 => tokio::select! {
                    r = r.get_async() => Some(r),
                    _ = tokio::time::sleep(d) => None,
                },
                _ => poll_once(r.get_async()).await,
            };
            match r {
                None => cancelled += 1,
                Some(Ok(v)) => {
                    assert_eq!(v, next, "lost or duplicated");
                    next += 1;
                }
                Some(Err(GetError::Disconnected)) => break,
                Some(Err(e)) => panic!("{e:?}"),
            }
        }
        (next, cancelled)
    });
    child.join_ok();
    eprintln!("{cancelled} get futures dropped mid-wait");
    assert_eq!(got, N);
}

/// The runtime puts 0..N into a small queue with futures dropped at random points (a dropped
/// put puts nothing; the value is retried); the child checks it gets each value once, in order.
#[test]
fn put_futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    let _serial = serial();
    const N: u64 = 10_000;
    let (s, r) = pair::<u64>(4);
    let child = fork(move || {
        for i in 0..N {
            match r.get_timeout(T30) {
                Ok(v) if v == i => {}
                _ => return 3,
            }
            if i % 32 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match r.get_timeout(T30) {
            Err(GetError::Disconnected) => 0,
            _ => 4,
        }
    });
    let cancelled = runtime().block_on(async move {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut cancelled = 0u64;
        for i in 0..N {
            loop {
                let d = Duration::from_micros(rng.next() % 3000);
                let r = match rng.next() % 2 {
                    0 => tokio::time::timeout(d, s.put_async(i)).await.ok(),
                    _ => poll_once(s.put_async(i)).await,
                };
                match r {
                    Some(Ok(())) => break,
                    Some(Err(e)) => panic!("{e:?}"),
                    None => cancelled += 1,
                }
            }
        }
        drop(s);
        cancelled
    });
    eprintln!("{cancelled} put futures dropped mid-wait");
    child.join_ok();
}

/// A SIGKILLed sole producer: every pending `get_async` resolves with `Disconnected` (as the
/// blocking `get`).
#[test]
fn pending_gets_resolve_with_disconnected_when_the_sole_producer_is_sigkilled() {
    let _serial = serial();
    let (s, r) = pair::<u32>(8);
    let (ready_s, ready_r) = pair::<u8>(4);
    let mut producer = fork(move || {
        if s.put(1).is_err() || ready_s.put(1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_eq!(ready_r.get_timeout(T30), Ok(1));
    runtime().block_on(async move {
        assert_eq!(r.get_async().await, Ok(1));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move { r.get_async().await }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        producer.kill();
        for t in tasks {
            let r = tokio::time::timeout(T30, t).await.unwrap().unwrap();
            assert_eq!(r, Err(GetError::Disconnected));
        }
    });
}

/// A SIGKILLed sole consumer: a `put_async` pending on a full queue resolves with
/// `Disconnected`, handing its item back.
#[test]
fn a_pending_put_resolves_with_disconnected_when_the_sole_consumer_is_sigkilled() {
    let _serial = serial();
    let (s, r) = pair::<u32>(2);
    let (ready_s, ready_r) = pair::<u8>(4);
    let mut consumer = fork(move || {
        if r.get() != Ok(0) || ready_s.put(1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    s.put(0).unwrap();
    assert_eq!(ready_r.get_timeout(T30), Ok(1));
    runtime().block_on(async move {
        let task = tokio::spawn(async move {
            for i in 1.. {
                if let Err(e) = s.put_async(i).await {
                    return e;
                }
            }
            unreachable!()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        consumer.kill();
        let e = tokio::time::timeout(T30, task).await.unwrap().unwrap();
        assert!(matches!(e, PutError::Disconnected(3)), "{e:?}");
    });
}

/// `join_async` resolves once a child has marked every item done.
#[test]
fn join_async_resolves_when_a_child_finishes_the_tasks() {
    let _serial = serial();
    let q: JoinableQueue<u32> = JoinableQueue::new(16).unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let q2 = q.clone();
    let child = fork(move || {
        for _ in 0..10 {
            if q2.get_timeout(T30).is_err() {
                return 2;
            }
            std::thread::sleep(Duration::from_millis(5));
            if q2.task_done().is_err() {
                return 3;
            }
        }
        0
    });
    runtime().block_on(async {
        tokio::time::timeout(T30, q.join_async()).await.unwrap();
        assert_eq!(q.unfinished(), 0);
    });
    child.join_ok();
}

#[test]
fn the_futures_are_send() {
    fn is_send<F: Send>(_: &F) {}
    let q: JoinableQueue<String> = JoinableQueue::new(4).unwrap();
    is_send(&q.get_async());
    is_send(&q.put_async(String::new()));
    is_send(&q.join_async());
}
