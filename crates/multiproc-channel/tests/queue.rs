//! Queue, JoinableQueue and SimpleQueue across processes, with conformance items 12-21 of
//! python-reference.md (each names the CPython test it mirrors).

mod common;

use common::{Exit, fork, shm_exists, unique_name};
use multiproc_channel::{
    ChannelError, GetError, JoinableQueue, Plain, PutError, Queue, QueueOptions, SimpleQueue,
    TaskDoneError,
};
use serde::{Serialize, Serializer};
use std::time::{Duration, Instant};

const T30: Duration = Duration::from_secs(30);

/// Item 12, test_put: maxsize=6: six puts fill it; put_nowait is Full at once (item handed back);
/// put_timeout(t) is Timeout after about t.
#[test]
fn put_fills_at_maxsize_nowait_full_and_timeout_waits() {
    let q: Queue<u32> = Queue::new(6).unwrap();
    assert!(q.empty() && !q.full());
    for i in 0..6 {
        if i % 2 == 0 {
            q.put(i).unwrap();
        } else {
            q.put_nowait(i).unwrap();
        }
    }
    assert!(q.full() && !q.empty());
    assert_eq!(q.qsize(), 6);
    let t = Instant::now();
    match q.put_nowait(7) {
        Err(PutError::Full(7)) => {}
        r => panic!("{r:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    match q.put_timeout(8, Duration::from_millis(200)) {
        Err(e @ PutError::Timeout(_)) => assert_eq!(e.into_inner(), 8),
        r => panic!("{r:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(150));
    // A getter in another process frees room for a blocked put.
    let q2 = q.clone();
    let mut child = fork(move || {
        std::thread::sleep(Duration::from_millis(50));
        match q2.get() {
            Ok(0) => 0,
            _ => 2,
        }
    });
    q.put(9).unwrap();
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    let got: Vec<u32> = (0..6).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, [1, 2, 3, 4, 5, 9]);
}

/// Item 13, test_get: get mirrors put with Empty and Timeout; items are FIFO across processes.
#[test]
fn get_empty_timeout_and_fifo_from_a_child() {
    let q: Queue<String> = Queue::new(64).unwrap();
    assert_eq!(q.get_nowait(), Err(GetError::Empty));
    let t = Instant::now();
    assert_eq!(
        q.get_timeout(Duration::from_millis(200)),
        Err(GetError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    let q2 = q.clone();
    let mut child = fork(move || {
        for i in 0..4 {
            if q2.put(format!("item{i}")).is_err() {
                return 2;
            }
        }
        0
    });
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(q.get().unwrap(), "item0");
    assert_eq!(q.get_timeout(T30).unwrap(), "item1");
    assert_eq!(q.get_nowait().unwrap(), "item2");
    assert_eq!(q.get().unwrap(), "item3");
    assert_eq!(q.get_nowait(), Err(GetError::Empty));
}

/// Item 14, test_fork: a forked child puts 20 items; they arrive in order (no feeder thread to flush).
#[test]
fn forked_child_puts_twenty_items_in_order() {
    let q: Queue<u64> = Queue::new(100).unwrap();
    let q2 = q.clone();
    let mut child = fork(move || {
        for i in 0..20 {
            if q2.put(i).is_err() {
                return 2;
            }
        }
        0 // exits at once: nothing buffered in this process
    });
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    let got: Vec<u64> = (0..20).map(|_| q.get_timeout(T30).unwrap()).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(q.empty());
}

/// The bound is exact for any `maxsize`, also where the ring is the bound (its slot count is
/// `maxsize` itself, lap-encoded, for 2 and up) and where it is not (`maxsize` 1): `maxsize`
/// items fit, one more is `Full`; a forked producer blocked on the full queue across many laps
/// delivers every item in order while `qsize` never passes the bound.
#[test]
fn bound_is_exact_for_any_maxsize_across_laps() {
    for maxsize in [1usize, 2, 3, 5, 6, 100] {
        let q: Queue<u64> = Queue::new(maxsize).unwrap();
        for i in 0..maxsize as u64 {
            q.put_nowait(i).unwrap();
        }
        assert!(
            matches!(q.put_nowait(99), Err(PutError::Full(99))),
            "maxsize {maxsize}"
        );
        assert_eq!(q.qsize(), maxsize);
        assert!(q.full());
        assert_eq!(q.get().unwrap(), 0);
        q.put_nowait(maxsize as u64).unwrap();
        assert!(
            matches!(q.put_nowait(99), Err(PutError::Full(_))),
            "maxsize {maxsize}"
        );
        let n = 2_000 + 7 * maxsize as u64;
        let q2 = q.clone();
        let mut child = fork(move || {
            for i in maxsize as u64 + 1..n {
                if q2.put_timeout(i, T30).is_err() {
                    return 2;
                }
            }
            0
        });
        for want in 1..n {
            assert!(q.qsize() <= maxsize, "maxsize {maxsize}");
            assert_eq!(q.get_timeout(T30).unwrap(), want, "maxsize {maxsize}");
        }
        assert_eq!(child.wait_timeout(T30), Exit::Code(0));
        assert!(q.empty());
    }
}

/// Item 15, test_qsize: 0, 1, 2, 1, 0.
#[test]
fn qsize_counts_up_and_down() {
    let q: Queue<u8> = Queue::new(64).unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(2).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
}

/// Item 16, test_timeout: get(timeout=0.2) waits at least 0.1 s.
#[test]
fn get_timeout_waits_at_least_the_timeout() {
    let q: Queue<u8> = Queue::new(1).unwrap();
    let t = Instant::now();
    assert_eq!(
        q.get_timeout(Duration::from_millis(200)),
        Err(GetError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
}

struct Unencodable;
impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot encode this"))
    }
}
impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

/// Item 17, test_queue_feeder_donot_stop_onexc: an item that cannot be encoded fails at `put`
/// (not later in a feeder), leaks no slot, and the queue keeps working.
#[test]
fn unencodable_item_fails_at_put_and_leaks_no_slot() {
    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Msg {
        Ok(u32),
        #[serde(skip_deserializing)]
        Bad(#[serde(serialize_with = "fail")] u32),
    }
    fn fail<S: Serializer>(_: &u32, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("unpicklable"))
    }
    let q: Queue<Msg> = Queue::new(1).unwrap();
    for _ in 0..3 {
        match q.put(Msg::Bad(1)) {
            Err(PutError::Codec(Msg::Bad(1), _)) => {}
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(q.qsize(), 0);
    q.put_nowait(Msg::Ok(5)).unwrap(); // maxsize 1: the failed puts took no unit
    assert_eq!(q.get().unwrap(), Msg::Ok(5));
    let u: Queue<Unencodable> = Queue::new(2).unwrap();
    assert!(matches!(u.put(Unencodable), Err(PutError::Codec(..))));
    assert!(u.empty());
}

/// Item 18, test_closed_queue_put_get_exceptions: put or get after close is Closed.
#[test]
fn put_and_get_after_close_are_errors() {
    let mut q: Queue<u32> = Queue::new(4).unwrap();
    q.put(1).unwrap();
    let other = q.clone();
    q.close();
    assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    assert_eq!(q.get(), Err(GetError::Closed));
    assert_eq!(q.get_nowait(), Err(GetError::Closed));
    // Another handle is unaffected (Python: close() concerns the calling process's handle).
    assert_eq!(other.get().unwrap(), 1);
    // close_all closes it for everyone: puts fail, gets drain then fail.
    other.put(3).unwrap();
    other.close_all();
    assert!(matches!(other.put(4), Err(PutError::Closed(4))));
    assert_eq!(other.get().unwrap(), 3);
    assert_eq!(other.get(), Err(GetError::Closed));
}

/// Item 19, test_closed_queue_empty_exceptions: `empty()` on a closed handle answers (Rust: a query
/// cannot fail) and does not panic, used or not.
#[test]
fn empty_on_closed_queue_answers() {
    let mut unused: Queue<u32> = Queue::new(64).unwrap();
    unused.close();
    assert!(unused.empty());
    let mut used: Queue<u32> = Queue::new(64).unwrap();
    used.put(1).unwrap();
    used.get().unwrap();
    used.close();
    assert!(used.empty());
}

/// Item 20, test_task_done: join returns after 10 task_done calls from 4 worker processes; one
/// more task_done is TooManyCalls.
#[test]
fn join_returns_after_task_done_from_four_workers() {
    let q: JoinableQueue<u32> = JoinableQueue::new(64).unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            fork(move || {
                loop {
                    match q.get() {
                        Ok(u32::MAX) => return 0,
                        Ok(_) => {
                            std::thread::sleep(Duration::from_millis(2));
                            if q.task_done().is_err() {
                                return 2;
                            }
                        }
                        Err(_) => return 3,
                    }
                }
            })
        })
        .collect();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    assert!(q.unfinished() > 0);
    q.join_timeout(T30).unwrap();
    assert_eq!(q.unfinished(), 0);
    assert_eq!(q.task_done(), Err(TaskDoneError::TooManyCalls));
    let t = Instant::now();
    q.put(100).unwrap();
    // Nothing else will mark it done before the workers stop: join_timeout times out.
    for _ in 0..4 {
        q.put(u32::MAX).unwrap();
    }
    for k in kids.drain(..) {
        k.join_ok();
    }
    assert!(q.join_timeout(Duration::from_millis(100)).is_err());
    assert!(t.elapsed() >= Duration::from_millis(100));
}

/// Item 21, TestSimpleQueue.test_empty: empty, then not empty, FIFO, then empty.
#[test]
fn simple_queue_empty_then_fifo_then_empty() {
    let q: SimpleQueue<u32> = SimpleQueue::new().unwrap();
    assert!(q.empty());
    let q2 = q.clone();
    let mut child = fork(move || {
        if q2.put(1).is_err() || q2.put(2).is_err() {
            return 2;
        }
        0
    });
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert!(!q.empty());
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
    assert!(q.empty());
}

/// Named queues: two handles by name; a mismatched T is refused; unlinked on the creator's drop.
#[test]
fn named_queue_opens_by_name_and_refuses_another_type() {
    let name = unique_name("q");
    let q: Queue<String> = Queue::create_named(&name, 8).unwrap();
    assert!(shm_exists(&name));
    let mut child = fork({
        let name = name.clone();
        move || {
            let Ok(q) = Queue::<String>::open_named(&name) else {
                return 2;
            };
            if q.put("from child".into()).is_err() {
                return 3;
            }
            0
        }
    });
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(q.get_timeout(T30).unwrap(), "from child");
    match Queue::<u64>::open_named(&name) {
        Err(ChannelError::Shm(e)) => assert!(e.to_string().contains("type"), "{e}"),
        r => panic!("{r:?}"),
    }
    assert!(Queue::<u64, Plain>::open_named(&name).is_err());
    drop(q);
    assert!(!shm_exists(&name));
    assert!(!shm_exists(&format!("{name}.ring")));
}

/// Large messages (side files) cross processes intact with several producers; over the max is
/// refused with the item handed back; no side file is left behind.
#[test]
fn large_messages_intact_across_producers_and_over_max_refused() {
    let q: Queue<Vec<u8>> = Queue::with_options(
        4,
        QueueOptions {
            slot_size: 128,
            max_message: 4 << 20,
        },
    )
    .unwrap();
    let kids: Vec<_> = (0..2u8)
        .map(|p| {
            let q = q.clone();
            fork(move || {
                for i in 0..6usize {
                    let n = [10, 200, 5000, 1 << 20, 100, 3 << 20][i];
                    let v: Vec<u8> = (0..n).map(|k| (k as u8) ^ p ^ (i as u8)).collect();
                    if q.put(v).is_err() {
                        return 2;
                    }
                }
                0
            })
        })
        .collect();
    let mut seen = 0;
    for _ in 0..12 {
        let v = q.get_timeout(T30).unwrap();
        let n = v.len();
        let i = [10, 200, 5000, 1 << 20, 100, 3 << 20]
            .iter()
            .position(|&x| x == n)
            .expect("a size that was sent");
        let p = (v[0] ^ i as u8) as usize;
        assert!(p < 2);
        assert!(
            v.iter()
                .enumerate()
                .all(|(k, &x)| x == (k as u8) ^ p as u8 ^ i as u8)
        );
        seen += 1;
    }
    assert_eq!(seen, 12);
    let pids: Vec<String> = kids.iter().map(|k| format!("-{}-", k.pid)).collect();
    for k in kids {
        k.join_ok();
    }
    match q.put(vec![0u8; 5 << 20]) {
        Err(PutError::TooLarge { item, .. }) => assert_eq!(item.len(), 5 << 20),
        r => panic!("{r:?}"),
    }
    let left = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("multiproc.qside-") && pids.iter().any(|p| n.contains(p.as_str()))
        })
        .collect::<Vec<_>>();
    // Only this test's producers' files: the kill test may have side files in flight.
    assert!(left.is_empty(), "side files left: {left:?}");
}

/// A queue serializes as its segments' handles.
#[test]
fn queue_serializes_as_handles() {
    let q: JoinableQueue<u32> = JoinableQueue::new(4).unwrap();
    let bytes = postcard::to_allocvec(&q).unwrap();
    let q2: JoinableQueue<u32> = postcard::from_bytes(&bytes).unwrap();
    q.put(5).unwrap();
    assert_eq!(q2.get().unwrap(), 5);
    q2.task_done().unwrap();
    q.join_timeout(T30).unwrap();
    let wrong: Result<Queue<String>, _> = postcard::from_bytes(&bytes);
    assert!(
        wrong.is_err(),
        "a queue of u32 does not open as a queue of String"
    );
}

fn checksum(v: &[u8]) -> u64 {
    v.iter()
        .fold(0u64, |s, &x| s.wrapping_mul(31).wrapping_add(u64::from(x)))
}

/// 2 producers and 2 consumers, producers and consumers SIGKILLed at random moments: nobody
/// hangs, every item got is whole (checksummed), and at most one item per killed process is
/// lost.
#[test]
fn producers_and_consumers_killed_at_random_lose_only_their_own_item() {
    for round in 0..6u64 {
        let q: Queue<Vec<u8>> = Queue::with_options(
            8,
            QueueOptions {
                slot_size: 256,
                max_message: 1 << 20,
            },
        )
        .unwrap();
        // Consumers report checksummed ids here, drained concurrently by a thread: a release
        // build moves more than the queue holds before the consumers exit (issue 12, item 10:
        // an undrained report queue blocked them in `put` forever).
        let got = Queue::<u64>::new(65536).unwrap();
        let drained = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drainer = {
            let (got, drained) = (got.clone(), drained.clone());
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                loop {
                    match got.get_timeout(Duration::from_millis(10)) {
                        Ok(id) => ids.push(id),
                        Err(_) if drained.load(std::sync::atomic::Ordering::SeqCst) => {
                            return ids;
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        let mut producers: Vec<_> = (0..2u64)
            .map(|p| {
                let q = q.clone();
                fork(move || {
                    let mut i = 0u64;
                    loop {
                        let n = if i.is_multiple_of(9) { 3000 } else { 40 };
                        let mut v: Vec<u8> = (0..n).map(|k| (k as u64 ^ i ^ p) as u8).collect();
                        v.extend_from_slice(&(p << 32 | i).to_le_bytes());
                        let s = checksum(&v);
                        v.extend_from_slice(&s.to_le_bytes());
                        if q.put(v).is_err() {
                            return 2;
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        let mut consumers: Vec<_> = (0..2)
            .map(|_| {
                let (q, got) = (q.clone(), got.clone());
                fork(move || {
                    loop {
                        match q.get() {
                            Ok(v) => {
                                let (body, s) = v.split_at(v.len() - 8);
                                if checksum(body).to_le_bytes() != s {
                                    return 5;
                                }
                                let mut id = [0u8; 8];
                                id.copy_from_slice(&body[body.len() - 8..]);
                                if got.put(u64::from_le_bytes(id)).is_err() {
                                    return 6;
                                }
                            }
                            Err(GetError::Closed) => return 0,
                            Err(_) => return 4,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + round * 7));
        // Kill one producer and one consumer mid-flight.
        producers[(round % 2) as usize].kill();
        let dead_consumer = ((round / 2) % 2) as usize;
        consumers[dead_consumer].kill();
        std::thread::sleep(Duration::from_millis(20));
        // The survivors keep going; then stop the survivor producer and drain.
        for p in producers.iter_mut() {
            p.kill();
        }
        // Drain what is left with the surviving consumer, then close for everyone.
        // (A process killed inside its put/get window may leave qsize one too high: stop
        // waiting once it no longer moves.)
        let (mut last, mut since) = (q.qsize(), Instant::now());
        while !q.empty() && since.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(1));
            if q.qsize() != last {
                (last, since) = (q.qsize(), Instant::now());
            }
        }
        q.close_all();
        for (i, c) in consumers.iter_mut().enumerate() {
            if i != dead_consumer {
                assert_eq!(c.wait_timeout(T30), Exit::Code(0), "round {round}");
            }
        }
        // Every id reported once at most (the consumers are gone: what is left is final).
        drained.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut ids = drainer.join().unwrap();
        while let Ok(id) = got.get_nowait() {
            ids.push(id);
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "round {round}: an item was delivered twice");
        assert!(n > 0, "round {round}: nothing got through");
        // Side segments of large messages whose consumer was killed between pop and unlink
        // outlive the queue by design: reclaim them as `multiproc clean` does (every producer
        // of this round is dead).
        let prefix = q.debug_side_prefix();
        multiproc_shm::clean_stale(false, |n| n.starts_with(&prefix)).unwrap();
        // One whose producer was killed while making it is still "Creating": `clean` takes it
        // once it is 5 s old; this test removes it now.
        for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // A producer stopped while waiting for room must not have wedged the queue.
        assert!(
            q.lost_records() <= 3,
            "round {round}: {} lost",
            q.lost_records()
        );
    }
}

/// Queues are shared by threads (Send + Sync); a connection end moves between threads (Send).
#[test]
fn handles_are_send_and_queues_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Queue<String>>();
    send_sync::<JoinableQueue<u8>>();
    send_sync::<SimpleQueue<u8>>();
    send::<multiproc_channel::Connection<String>>();
    let q: Queue<u64> = Queue::new(64).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let q = &q;
            s.spawn(move || {
                for i in 0..1000 {
                    q.put(t * 1000 + i).unwrap();
                }
            });
        }
        let mut sum = 0u64;
        for _ in 0..4000 {
            sum += q.get_timeout(T30).unwrap();
        }
        assert_eq!(sum, (0..4000u64).sum());
    });
}

/// The default maximum (64 MiB) goes through a pipe and a queue whole, from a child; one byte
/// more is refused up front with a clear error.
#[test]
fn default_max_message_of_64_mib_passes_and_one_more_byte_is_refused() {
    use multiproc_channel::{Pipe, RecvError, SendError};
    const MAX: usize = 64 << 20;
    // Cheap to build and compare in debug builds: a fill byte and a marker every 4 KiB.
    fn pattern(n: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; n];
        for (k, i) in (0..n).step_by(4096).enumerate() {
            v[i] = k as u8;
        }
        v
    }
    // Serialized with `serialize_bytes` (one memcpy), not element by element.
    #[derive(PartialEq, Debug)]
    struct Blob(Vec<u8>);
    impl Serialize for Blob {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> serde::Deserialize<'de> for Blob {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Blob;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                    Ok(Blob(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }
    let q: Queue<Blob> = Queue::new(2).unwrap();
    let (mut r, mut w) = Pipe::simplex::<u8>().unwrap();
    let q2 = q.clone();
    let mut child = fork(move || {
        // Postcard adds a 4-byte length prefix to a Vec: send MAX - 4 payload bytes.
        let v = pattern(MAX - 4, 0xa5);
        if q2.put(Blob(v)).is_err() {
            return 2;
        }
        let raw = pattern(MAX, 0x5a);
        if w.send_bytes(&raw, 0, None).is_err() {
            return 3;
        }
        match w.send_bytes(&vec![0; MAX + 1], 0, None) {
            Err(SendError::TooLarge { len, max }) if len == MAX + 1 && max == MAX => 0,
            _ => 4,
        }
    });
    let Blob(v) = q.get_timeout(T30).unwrap();
    assert_eq!(v.len(), MAX - 4);
    assert!(v == pattern(MAX - 4, 0xa5));
    drop(v);
    let raw = r.recv_bytes_timeout(T30).unwrap();
    assert_eq!(raw.len(), MAX);
    assert!(raw == pattern(MAX, 0x5a));
    drop(raw);
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(r.recv_bytes_timeout(T30), Err(RecvError::Eof));
    match q.put(Blob(vec![0u8; MAX])) {
        Err(PutError::TooLarge { len, max, .. }) => assert!(len > MAX && max == MAX),
        r => panic!("{r:?}"),
    }
}

/// A queue of a type whose encoding the codec bounds (primitive numbers with postcard, any type
/// with `Plain`) gets slots of just that size (two per cache line): extremes round-trip across
/// a forked child, in order, over several laps; an opener accepts the small slots; other types
/// keep the asked slot size.
#[test]
fn bounded_types_get_small_slots_and_round_trip_their_extremes() {
    fn slot_of(name: &str) -> usize {
        multiproc_ring::MpmcRing::open_named(&format!("{name}.ring"))
            .unwrap()
            .slot_size()
    }
    let name = unique_name("qsmall");
    let q: Queue<u64> = Queue::create_named(&name, 5).unwrap();
    assert_eq!(slot_of(&name), 11, "tag byte + 10-byte varint");
    let vals = [0u64, 1, 127, 128, u64::MAX, u64::MAX - 1, 1 << 63, 42];
    let q2: Queue<u64> = Queue::open_named(&name).unwrap();
    let mut child = fork(move || {
        for _ in 0..10 {
            for v in vals {
                if q2.put_timeout(v, T30).is_err() {
                    return 2;
                }
            }
        }
        0
    });
    for _ in 0..10 {
        for v in vals {
            assert_eq!(q.get_timeout(T30).unwrap(), v);
        }
    }
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    drop(q);

    let name = unique_name("qsmall");
    let q: Queue<i64> = Queue::create_named(&name, 3).unwrap();
    assert_eq!(slot_of(&name), 11);
    for v in [i64::MIN, -1, 0, i64::MAX] {
        q.put(v).unwrap();
        assert_eq!(q.get().unwrap(), v);
    }
    drop(q);

    let name = unique_name("qsmall");
    let q: Queue<[u32; 3], Plain> = Queue::create_named(&name, 4).unwrap();
    assert_eq!(slot_of(&name), 13);
    q.put([u32::MAX, 0, 7]).unwrap();
    assert_eq!(q.get().unwrap(), [u32::MAX, 0, 7]);
    drop(q);

    let name = unique_name("qsmall");
    let q: Queue<String> = Queue::create_named(&name, 4).unwrap();
    assert_eq!(slot_of(&name), QueueOptions::default().slot_size);
    drop(q);
    let name = unique_name("qsmall");
    let opts = QueueOptions {
        slot_size: 200,
        ..QueueOptions::default()
    };
    let q: Queue<(u8, u8)> = Queue::create_named_with(&name, 4, opts).unwrap();
    assert_eq!(slot_of(&name), 200);
    drop(q);
}
