//! Queue disconnection across processes (issue 16, item 1), `maxsize` limits (item 2) and queue
//! iterators (item 3).
//!
//! The first eleven tests port crossbeam-channel's array-flavour tests that expect
//! `Disconnected` (crossbeam-channel/tests/array.rs; each names the one it mirrors). Threads
//! become forked processes; crossbeam's sleeps only order the two sides, so here a small signal
//! queue orders them where the assertion depends on it. No assertion is about time.

mod common;

use common::{Exit, fork};
use multiproc_channel::queue::MAX_MAXSIZE;
use multiproc_channel::{
    ChannelError, GetError, JoinableQueue, PutError, Queue, Receiver, Sender, SimpleQueue,
};
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: a child forked by one test inherits the queues of
/// every other test running at that moment and counts as holding them until it exits (the fork
/// rule of `docs/channel.md`), which would keep another test's queue connected.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pair<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
    cap: usize,
) -> (Sender<T>, Receiver<T>) {
    Queue::<T>::new(cap).unwrap().split()
}

/// crossbeam `try_recv`: Empty, then the item, then (the producer gone) Disconnected.
#[test]
fn try_recv_empty_item_then_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<u32>(100);
    let (go_s, go_r) = pair::<u8>(4);
    assert_eq!(r.get_nowait(), Err(GetError::Empty));
    let mut child = fork(move || {
        if go_r.get_timeout(T30).is_err() || s.put(7).is_err() {
            return 2;
        }
        drop(s);
        0
    });
    go_s.put(1).unwrap();
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(r.get_timeout(T30), Ok(7));
    assert_eq!(r.get_nowait(), Err(GetError::Disconnected));
}

/// crossbeam `recv`: three items, then Disconnected once the producer is gone.
#[test]
fn recv_items_then_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<u32>(100);
    let child = fork(move || {
        for i in 7..10 {
            std::thread::sleep(ms(10));
            if s.put(i).is_err() {
                return 2;
            }
        }
        0 // exits without dropping `s`: its death is what ends the queue
    });
    assert_eq!(r.get(), Ok(7));
    assert_eq!(r.get(), Ok(8));
    assert_eq!(r.get(), Ok(9));
    assert_eq!(r.get(), Err(GetError::Disconnected));
    child.join_ok();
}

/// crossbeam `recv_timeout`: Timeout, the item, then Disconnected (not Timeout).
#[test]
fn recv_timeout_timeout_item_then_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<i32>(100);
    let (go_s, go_r) = pair::<u8>(4);
    let child = fork(move || {
        if go_r.get_timeout(T30).is_err() || s.put(7).is_err() {
            return 2;
        }
        0
    });
    assert_eq!(r.get_timeout(ms(50)), Err(GetError::Timeout));
    go_s.put(1).unwrap();
    assert_eq!(r.get_timeout(T30), Ok(7));
    assert_eq!(r.get_timeout(T30), Err(GetError::Disconnected));
    child.join_ok();
}

/// crossbeam `try_send`: Full hands the item back; once the consumer is gone, Disconnected does.
#[test]
fn try_send_full_then_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<i32>(1);
    let child = fork(move || {
        if r.get_timeout(T30) != Ok(1) || r.get_timeout(T30) != Ok(3) {
            return 2;
        }
        drop(r);
        0
    });
    assert!(s.put_nowait(1).is_ok());
    assert!(matches!(s.put_nowait(2), Err(PutError::Full(2))));
    s.put_timeout(3, T30).unwrap();
    child.join_ok();
    assert!(matches!(s.put_nowait(4), Err(PutError::Disconnected(4))));
}

/// crossbeam `send_timeout`: Timeout(3) while full, then, the consumer gone, `put` is
/// Disconnected(5).
#[test]
fn send_timeout_timeout_then_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<i32>(2);
    let (go_s, go_r) = pair::<u8>(4);
    let child = fork(move || {
        if go_r.get_timeout(T30).is_err() {
            return 2;
        }
        for want in [1, 2, 4] {
            if r.get_timeout(T30) != Ok(want) {
                return 3;
            }
        }
        0
    });
    s.put_timeout(1, T30).unwrap();
    s.put_timeout(2, T30).unwrap();
    assert!(matches!(
        s.put_timeout(3, ms(50)),
        Err(PutError::Timeout(3))
    ));
    go_s.put(1).unwrap();
    s.put_timeout(4, T30).unwrap();
    child.join_ok();
    assert!(matches!(s.put(5), Err(PutError::Disconnected(5))));
}

/// crossbeam `send_after_disconnect`: the consumer dropped, every kind of put hands the item
/// back as Disconnected.
#[test]
fn send_after_disconnect_every_put_is_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<i32>(100);
    s.put(1).unwrap();
    s.put(2).unwrap();
    s.put(3).unwrap();
    let child = fork(move || {
        drop(r);
        0
    });
    child.join_ok();
    assert!(matches!(s.put(4), Err(PutError::Disconnected(4))));
    assert!(matches!(s.put_nowait(5), Err(PutError::Disconnected(5))));
    assert!(matches!(
        s.put_timeout(6, ms(500)),
        Err(PutError::Disconnected(6))
    ));
}

/// crossbeam `recv_after_disconnect`: the producer dropped after three puts: three items, then
/// Disconnected.
#[test]
fn recv_after_disconnect_drains_then_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<i32>(100);
    let child = fork(move || {
        for i in 1..=3 {
            if s.put(i).is_err() {
                return 2;
            }
        }
        drop(s);
        0
    });
    child.join_ok();
    assert_eq!(r.get(), Ok(1));
    assert_eq!(r.get(), Ok(2));
    assert_eq!(r.get(), Ok(3));
    assert_eq!(r.get(), Err(GetError::Disconnected));
}

/// crossbeam `disconnect_wakes_sender`: a put blocked on a full queue returns Disconnected when
/// the consumer process drops its handle.
#[test]
fn disconnect_wakes_blocked_sender() {
    let _serial = serial();
    let (s, r) = pair::<()>(1);
    let child = fork(move || {
        std::thread::sleep(ms(100));
        drop(r);
        0
    });
    assert!(s.put(()).is_ok());
    assert!(matches!(s.put(()), Err(PutError::Disconnected(()))));
    child.join_ok();
}

/// crossbeam `disconnect_wakes_receiver`: a child blocked in `get` wakes with Disconnected when
/// the parent drops the last producer.
#[test]
fn disconnect_wakes_blocked_receiver() {
    let _serial = serial();
    let (s, r) = pair::<()>(1);
    let child = fork(move || match r.get() {
        Err(GetError::Disconnected) => 0,
        _ => 2,
    });
    std::thread::sleep(ms(100));
    drop(s);
    child.join_ok();
}

/// crossbeam `spsc`: 10,000 items in order through a 3-slot queue, then Disconnected.
#[test]
fn spsc_items_in_order_then_disconnected() {
    let _serial = serial();
    const COUNT: u32 = 10_000;
    let (s, r) = pair::<u32>(3);
    let child = fork(move || {
        for i in 0..COUNT {
            if s.put(i).is_err() {
                return 2;
            }
        }
        0
    });
    for i in 0..COUNT {
        assert_eq!(r.get(), Ok(i));
    }
    assert_eq!(r.get(), Err(GetError::Disconnected));
    child.join_ok();
}

/// crossbeam `stress_iter`: request/response through two queues; the parent's `iter()` over
/// requests ends when the requesting child is gone (it exits without dropping anything).
#[test]
fn stress_iter_ends_when_the_requester_is_gone() {
    let _serial = serial();
    const COUNT: u32 = 1000;
    let (request_s, request_r) = pair::<()>(1);
    let (response_s, response_r) = pair::<u32>(1);
    let child = fork(move || {
        let mut count = 0;
        loop {
            for x in response_r.try_iter() {
                let Ok(x) = x else { return 2 };
                count += x;
                if count == COUNT {
                    return 0;
                }
            }
            if request_s.put(()).is_err() {
                return 3;
            }
        }
    });
    for req in request_r.iter() {
        req.unwrap();
        if response_s.put(1).is_err() {
            break;
        }
    }
    child.join_ok();
}

// ----- deaths -----

/// A SIGKILLed sole producer: a consumer child blocked in `get` wakes with Disconnected.
#[test]
fn sigkilled_sole_producer_gives_blocked_consumer_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<u32>(8);
    let (ready_s, ready_r) = pair::<u8>(4);
    let mut producer = fork(move || {
        if s.put(1).is_err() || ready_s.put(1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(ms(1000));
        }
    });
    let consumer = fork(move || {
        if r.get() != Ok(1) {
            return 2;
        }
        match r.get() {
            Err(GetError::Disconnected) => 0,
            _ => 3,
        }
    });
    assert_eq!(ready_r.get_timeout(T30), Ok(1));
    producer.kill();
    consumer.join_ok();
}

/// A SIGKILLed sole consumer: `put` hands its item back as Disconnected (noticed when the put
/// would block: a dead consumer closes nothing).
#[test]
fn sigkilled_sole_consumer_gives_put_disconnected() {
    let _serial = serial();
    let (s, r) = pair::<u32>(4);
    let (ready_s, ready_r) = pair::<u8>(4);
    let mut consumer = fork(move || {
        if r.get() != Ok(0) || ready_s.put(1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(ms(1000));
        }
    });
    s.put(0).unwrap();
    assert_eq!(ready_r.get_timeout(T30), Ok(1));
    consumer.kill();
    let mut handed_back = None;
    for i in 1..=5 {
        match s.put_timeout(i, T30) {
            Ok(()) => {}
            Err(PutError::Disconnected(item)) => {
                handed_back = Some(item);
                break;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(handed_back.is_some(), "a put must fail with Disconnected");
    assert!(matches!(s.put_nowait(9), Err(PutError::Disconnected(9))));
}

/// A producer that died without dropping anything: a polling consumer (`get_nowait`, which
/// scans for live producers at most every 25 ms when it finds the queue empty) ends up with
/// Disconnected, not Empty forever; `put_nowait` on a full queue whose consumer died likewise.
#[test]
fn nonblocking_calls_see_dead_peers() {
    let _serial = serial();
    let (s, r) = pair::<u32>(1);
    let child = fork(move || if s.put(1).is_ok() { 0 } else { 2 });
    child.join_ok();
    assert_eq!(r.get_timeout(T30), Ok(1));
    let mut last = r.get_nowait();
    for _ in 0..3000 {
        if last == Err(GetError::Disconnected) {
            break;
        }
        assert_eq!(last, Err(GetError::Empty));
        std::thread::sleep(ms(10));
        last = r.get_nowait();
    }
    assert_eq!(last, Err(GetError::Disconnected));

    let (s, r) = pair::<u32>(1);
    s.put(1).unwrap();
    let child = fork(move || {
        let _keep = &r;
        0
    });
    child.join_ok();
    let mut n = 0;
    let last = loop {
        n += 1;
        match s.put_nowait(2) {
            Err(PutError::Full(_)) if n < 3000 => std::thread::sleep(ms(10)),
            other => break other,
        }
    };
    assert!(matches!(last, Err(PutError::Disconnected(2))), "{last:?}");
}

/// A full table (128 processes holding the queue) makes the queue untracked: it never
/// disconnects rather than disconnecting falsely.
#[test]
fn full_peer_table_makes_the_queue_never_disconnect() {
    let _serial = serial();
    let q: Queue<u32> = Queue::new(4).unwrap();
    let r = q.receiver();
    let (ready_s, ready_r) = pair::<u8>(256);
    // Each child holds a blanket registration (its parent's handles) while it lives.
    let mut kids: Vec<_> = (0..130)
        .map(|_| {
            let ready_s = ready_s.clone();
            fork(move || {
                if ready_s.put(1).is_err() {
                    return 2;
                }
                loop {
                    std::thread::sleep(ms(1000));
                }
            })
        })
        .collect();
    for _ in 0..130 {
        assert_eq!(ready_r.get_timeout(T30), Ok(1));
    }
    let (reason, untracked) = q.debug_peers();
    assert_eq!(reason, 0);
    assert!(
        untracked,
        "130 children and their parent do not fit a table of 128"
    );
    for k in &mut kids {
        k.kill();
    }
    drop(q);
    // Every producer is gone, but the table overflowed: no disconnection, a timeout.
    assert_eq!(r.get_timeout(ms(200)), Err(GetError::Timeout));
}

// ----- how a handle counts -----

/// A parent that drops its handles right after forking a producer does not disconnect the
/// queue: the child's inherited handles count from the fork on (the fork hooks' loan).
#[test]
fn parent_dropping_right_after_fork_leaves_the_child_producer_counted() {
    let _serial = serial();
    let q: Queue<u32> = Queue::new(8).unwrap();
    let r = q.receiver();
    let s = q.sender();
    let child = fork(move || {
        std::thread::sleep(ms(100));
        if s.put(5).is_err() {
            return 2;
        }
        0
    });
    drop(q); // both parent-side producers are gone before the child has put anything
    assert_eq!(r.get_timeout(T30), Ok(5));
    assert_eq!(r.get_timeout(T30), Err(GetError::Disconnected));
    child.join_ok();
}

/// Every `Queue` handle is producer and consumer (Python's default): a consumer holding a full
/// `Queue` keeps it connected; its `receiver()` does not.
#[test]
fn full_handle_counts_as_producer_receiver_does_not() {
    let _serial = serial();
    let q: Queue<u32> = Queue::new(8).unwrap();
    let full = q.clone();
    let rx = q.receiver();
    drop(q);
    assert_eq!(rx.get_timeout(ms(50)), Err(GetError::Timeout));
    drop(full);
    assert_eq!(rx.get_timeout(T30), Err(GetError::Disconnected));
}

/// `close()` unregisters like a drop; `close_all()` stays `Closed`, not Disconnected.
#[test]
fn close_unregisters_and_close_all_is_closed() {
    let _serial = serial();
    let (mut s, r) = pair::<u32>(8);
    s.put(1).unwrap();
    s.close();
    assert_eq!(r.get(), Ok(1));
    assert_eq!(r.get(), Err(GetError::Disconnected));

    let q: Queue<u32> = Queue::new(8).unwrap();
    q.close_all();
    assert!(matches!(q.put(1), Err(PutError::Closed(1))));
    assert_eq!(q.get(), Err(GetError::Closed));
}

/// A serialized handle counts while in flight: the sender's only handle dropped after
/// serializing does not disconnect; the deserialized one then does, when dropped.
#[test]
fn serialized_sender_counts_until_deserialized_and_dropped() {
    let _serial = serial();
    let (s, r) = pair::<u32>(8);
    let bytes = postcard::to_allocvec(&s).unwrap();
    drop(s);
    assert_eq!(r.get_timeout(ms(50)), Err(GetError::Timeout));
    let child = fork(move || {
        let Ok(s2) = postcard::from_bytes::<Sender<u32>>(&bytes) else {
            return 2;
        };
        if s2.put(3).is_err() {
            return 3;
        }
        0
    });
    assert_eq!(r.get_timeout(T30), Ok(3));
    assert_eq!(r.get_timeout(T30), Err(GetError::Disconnected));
    child.join_ok();
}

/// JoinableQueue and SimpleQueue disconnect as Queue does.
#[test]
fn joinable_and_simple_queues_disconnect() {
    let _serial = serial();
    // JoinableQueue: consumers take a `receiver()` (with `task_done`), the producer joins, then
    // drops its handle and the consumers stop by themselves.
    let jq: JoinableQueue<u32> = JoinableQueue::new(8).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| {
            let rx = jq.receiver();
            fork(move || {
                for v in &rx {
                    if v.is_err() || rx.task_done().is_err() {
                        return 2;
                    }
                }
                0
            })
        })
        .collect();
    for i in 0..20 {
        jq.put(i).unwrap();
    }
    jq.join_timeout(T30).unwrap();
    assert_eq!(jq.unfinished(), 0);
    drop(jq);
    for k in kids {
        k.join_ok();
    }

    let sq: SimpleQueue<u32> = SimpleQueue::new().unwrap();
    let rx = sq.receiver();
    let child = fork(move || {
        let mut n = 0;
        for v in &rx {
            if v != Ok(n) {
                return 2;
            }
            n += 1;
        }
        if n == 3 { 0 } else { 3 }
    });
    for i in 0..3 {
        sq.put(i).unwrap();
    }
    drop(sq);
    child.join_ok();
}

// ----- item 2: maxsize -----

/// `Queue::new(0)` is refused with an error naming the limit (it meant 8192 slots before).
#[test]
fn zero_maxsize_is_refused_with_the_limit_named() {
    let _serial = serial();
    let e = Queue::<u32>::new(0).unwrap_err();
    assert!(matches!(e, ChannelError::InvalidParams(_)));
    assert!(e.to_string().contains("MAX_MAXSIZE"), "{e}");
    assert!(JoinableQueue::<u32>::new(0).is_err());
    assert!(Queue::<u32>::new(MAX_MAXSIZE + 1).is_err());
}

/// A big bound holds that many items before anyone gets (Python code that puts everything
/// first, then gets): 70,000 items, beyond the old 65,536-slot ring cap.
#[test]
fn big_maxsize_holds_that_many_items_before_any_get() {
    let _serial = serial();
    const N: u32 = 70_000;
    let q: Queue<u32> = Queue::new(N as usize).unwrap();
    for i in 0..N {
        q.put_nowait(i).unwrap();
    }
    assert!(q.full());
    assert!(matches!(q.put_nowait(N), Err(PutError::Full(_))));
    for i in 0..N {
        assert_eq!(q.get_nowait(), Ok(i));
    }
}

// ----- item 3: iterators -----

/// `for item in &rx` / `rx.iter()` across processes ends on Disconnected after draining;
/// `IntoIterator` for an owned handle too.
#[test]
fn iterators_end_on_disconnected_after_draining() {
    let _serial = serial();
    let (s, r) = pair::<u32>(4);
    let child = fork(move || {
        for i in 0..20 {
            if s.put(i).is_err() {
                return 2;
            }
        }
        0
    });
    let mut got = Vec::new();
    for v in &r {
        got.push(v.unwrap());
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    child.join_ok();

    let q: Queue<u32> = Queue::new(4).unwrap();
    let s = q.sender();
    s.put(1).unwrap();
    s.put(2).unwrap();
    drop(s);
    let rx = q.receiver();
    drop(q);
    assert_eq!(
        rx.into_iter().collect::<Result<Vec<_>, _>>().unwrap(),
        [1, 2]
    );
}

/// `try_iter` yields what is there and stops at Empty without blocking.
#[test]
fn try_iter_stops_at_empty() {
    let _serial = serial();
    let q: Queue<u32> = Queue::new(4).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let v: Vec<u32> = q.try_iter().map(Result::unwrap).collect();
    assert_eq!(v, [1, 2]);
    assert_eq!(q.try_iter().count(), 0);
    q.put(3).unwrap();
    assert_eq!((&q).into_iter().next(), Some(Ok(3)));
}
