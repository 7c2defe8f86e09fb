//! RemoteQueue conformance against a real redis-server.

mod common;

use common::{Children, RedisServer, spawn_self, wait_line};
use multiproc_redis::{ConnectError, GetError, LinkError, Options, PutError, RemoteQueue};
use std::time::{Duration, Instant};

fn opts(claim_ms: u64) -> Options {
    Options {
        claim_idle: Duration::from_millis(claim_ms),
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

/// Child role: take one entry without acking it, say which, then hang (to be SIGKILLed).
#[test]
fn zz_child_entry() {
    let Ok(role) = std::env::var("MP_QUEUE_ROLE") else {
        return;
    };
    let url = std::env::var("MP_URL").unwrap();
    let name = std::env::var("MP_NAME").unwrap();
    if role == "envauth" {
        // The URL has no password: MULTIPROC_REDIS_PASSWORD from the environment is used.
        let q: RemoteQueue<u8> = RemoteQueue::connect(&url, &name).unwrap();
        q.put(&42).unwrap();
        println!("ENVOK");
        return;
    }
    if role == "midbatch" {
        // Reads ahead 8 at a time: the first batch is drained (acknowledged on draining), then 3
        // of the second are handed out (their acknowledgement waits for the batch) and the
        // process SIGKILLs itself, well before the acknowledgement timer (claim_idle / 4).
        let o = Options {
            prefetch: 8,
            ..opts(60_000)
        };
        let q: RemoteQueue<u64> = RemoteQueue::connect_with(&url, &name, o).unwrap();
        let get = || q.get_timeout(Duration::from_secs(20)).unwrap();
        let mut got: Vec<u64> = (0..8).map(|_| get()).collect();
        got.push(get());
        let t = Instant::now(); // the acknowledgement timer counts from about here
        got.push(get());
        got.push(get());
        // Whether this process dies well before the timer (250 ms) could have sent the acks
        // of the items of the second batch (a preempted test machine may be slower).
        let in_time = t.elapsed() < Duration::from_millis(150);
        println!("GOT {got:?} {in_time}");
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        // SAFETY: raise is async-signal-safe; SIGKILL ends the process here.
        unsafe { libc::raise(libc::SIGKILL) };
        unreachable!();
    }
    assert_eq!(role, "hold");
    let q: RemoteQueue<String> = RemoteQueue::connect_with(&url, &name, opts(60_000)).unwrap();
    let d = q.get_delivery_timeout(Duration::from_secs(20)).unwrap();
    println!("HOLDING {}", d.value());
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn put_get_in_order_with_qsize() {
    let r = RedisServer::start();
    let q: RemoteQueue<(u32, String)> = RemoteQueue::connect(&r.url(), "order").unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
    assert!(q.empty().unwrap());
    for i in 0..20 {
        q.put(&(i, format!("item {i}"))).unwrap();
    }
    assert_eq!(q.qsize().unwrap(), 20);
    for i in 0..20 {
        assert_eq!(
            q.get_timeout(Duration::from_secs(5)).unwrap(),
            (i, format!("item {i}"))
        );
    }
    assert_eq!(q.qsize().unwrap(), 0);
}

#[test]
fn get_timeout_on_empty_queue_times_out() {
    let r = RedisServer::start();
    let q: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "empty").unwrap();
    let t0 = Instant::now();
    assert_eq!(
        q.get_timeout(Duration::from_millis(300)).unwrap_err(),
        GetError::Timeout
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        q.get_delivery_timeout(Duration::ZERO).unwrap_err(),
        GetError::Timeout
    );
}

#[test]
fn handles_share_one_queue_and_each_item_goes_to_one_consumer() {
    let r = RedisServer::start();
    // One entry per read: the automatic read-ahead (the default) would let `a` buffer the tail.
    let one = Options {
        prefetch: 1,
        ..Options::default()
    };
    let a: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "shared", one.clone()).unwrap();
    let b: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "shared", one).unwrap();
    assert_ne!(a.consumer_name(), b.consumer_name());
    for i in 0..10 {
        a.put(&i).unwrap();
    }
    let mut got = Vec::new();
    for i in 0..10 {
        let q = if i % 2 == 0 { &a } else { &b };
        got.push(q.get_timeout(Duration::from_secs(5)).unwrap());
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(
        b.get_timeout(Duration::from_millis(100)).unwrap_err(),
        GetError::Timeout
    );
}

#[test]
fn keys_carry_the_cluster_hash_tag() {
    let r = RedisServer::start();
    let q: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "tagged").unwrap();
    q.put(&1).unwrap();
    let mut c = redis::Client::open(r.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(keys, vec!["{mp:tagged}:q".to_string()]);
}

#[test]
fn acked_delivery_is_not_delivered_again() {
    let r = RedisServer::start();
    let q: RemoteQueue<u32> = RemoteQueue::connect_with(&r.url(), "acked", opts(100)).unwrap();
    q.put(&5).unwrap();
    let d = q.get_delivery_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(*d, 5);
    assert_eq!(q.qsize().unwrap(), 1, "unacked entries still count");
    assert_eq!(d.ack().unwrap(), 5);
    assert_eq!(q.qsize().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        q.get_delivery_timeout(Duration::from_millis(500))
            .unwrap_err(),
        GetError::Timeout
    );
}

#[test]
fn unacked_delivery_is_delivered_again_after_claim_idle() {
    let r = RedisServer::start();
    let q: RemoteQueue<u32> = RemoteQueue::connect_with(&r.url(), "unacked", opts(200)).unwrap();
    q.put(&9).unwrap();
    let first = q.get_delivery_timeout(Duration::from_secs(5)).unwrap();
    let id = first.id().to_string();
    drop(first); // neither acked nor alive any more
    let again = q.get_delivery_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(again.ack().unwrap(), 9);
}

#[test]
fn entry_held_by_a_sigkilled_consumer_is_claimed_by_a_live_one() {
    let r = RedisServer::start();
    let name = "sigkill";
    let q: RemoteQueue<String> = RemoteQueue::connect_with(&r.url(), name, opts(500)).unwrap();
    q.put(&"precious".to_string()).unwrap();
    let mut kids = Children::default();
    let i = kids.push(spawn_self(
        "zz_child_entry",
        &[
            ("MP_QUEUE_ROLE", "hold".into()),
            ("MP_URL", r.url()),
            ("MP_NAME", name.into()),
        ],
    ));
    assert_eq!(wait_line(&mut kids.0[i], "HOLDING "), "precious");
    kids.kill(i); // SIGKILL while it holds the entry unacked
    q.put(&"second".to_string()).unwrap();
    let mut got = vec![
        q.get_delivery_timeout(Duration::from_secs(10))
            .unwrap()
            .ack()
            .unwrap(),
        q.get_delivery_timeout(Duration::from_secs(10))
            .unwrap()
            .ack()
            .unwrap(),
    ];
    got.sort();
    assert_eq!(got, vec!["precious".to_string(), "second".to_string()]);
    assert_eq!(q.qsize().unwrap(), 0);
}

#[test]
fn oversized_message_is_refused_before_sending() {
    let r = RedisServer::start();
    let o = Options {
        max_message: 1024,
        ..Options::default()
    };
    let q: RemoteQueue<Vec<u8>> = RemoteQueue::connect_with(&r.url(), "big", o).unwrap();
    let e = q.put(&vec![7u8; 2000]).unwrap_err();
    assert!(matches!(e, PutError::TooLarge { max: 1024, .. }), "{e:?}");
    assert_eq!(q.qsize().unwrap(), 0);
    q.put(&vec![7u8; 1000]).unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
}

#[test]
fn unreachable_url_fails_within_its_timeout_without_showing_the_password() {
    let port = common::free_port(); // nobody listens there
    let o = Options {
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let url = format!("redis://alice:sekrit@127.0.0.1:{port}");
    let t0 = Instant::now();
    let e = RemoteQueue::<u8>::connect_with(&url, "none", o).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(e, ConnectError::Link(LinkError::Unreachable { .. })),
        "{e:?}"
    );
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("sekrit"), "{shown}");
    assert!(shown.contains("alice:***"), "{shown}");

    let e = RemoteQueue::<u8>::connect("http://127.0.0.1:1", "none").unwrap_err();
    assert!(matches!(e, ConnectError::BadUrl { .. }), "{e:?}");
}

#[test]
fn auth_from_the_url() {
    let r = RedisServer::start_with(&["--requirepass", "pw123"]);
    assert!(RemoteQueue::<u8>::connect(&r.url(), "auth").is_err());
    let url = format!("redis://:pw123@127.0.0.1:{}", r.port);
    let q: RemoteQueue<u8> = RemoteQueue::connect(&url, "auth").unwrap();
    q.put(&3).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 3);
    let bad = format!("redis://:wrong@127.0.0.1:{}", r.port);
    let e = RemoteQueue::<u8>::connect(&bad, "auth").unwrap_err();
    assert!(!format!("{e} {e:?}").contains("wrong"), "{e:?}");
}

#[test]
fn close_refuses_later_calls() {
    let r = RedisServer::start();
    let q: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "closing").unwrap();
    let q2 = q.clone();
    q.close().unwrap();
    assert_eq!(q2.put(&1).unwrap_err(), PutError::Closed);
    assert_eq!(
        q2.get_timeout(Duration::from_millis(10)).unwrap_err(),
        GetError::Closed
    );
    // The queue itself lives on for other handles.
    let other: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "closing").unwrap();
    other.put(&1).unwrap();
    assert_eq!(other.qsize().unwrap(), 1);
    other.destroy().unwrap();
}

#[test]
fn redis_killed_and_restarted_mid_run_no_call_hangs() {
    let mut r = RedisServer::start();
    let o = Options {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        claim_idle: Duration::from_millis(500),
        ..Options::default()
    };
    let q: RemoteQueue<u32> = RemoteQueue::connect_with(&r.url(), "restart", o).unwrap();
    q.put(&1).unwrap();
    r.kill();
    // Redis away: put_confirmed fails (unreachable or connection lost), get_timeout returns in
    // time. (A pipelined `put` returns once queued locally: its error comes with a later call.)
    let e = q.put_confirmed(&2).unwrap_err();
    assert!(
        matches!(
            e,
            PutError::Link(LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. })
        ),
        "{e:?}"
    );
    let t0 = Instant::now();
    let e = q.get_timeout(Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(
            e,
            GetError::Link(LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. })
                | GetError::Timeout
        ),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    // A get blocked while Redis comes back completes once it is back (no persistence: the old
    // item is gone; the group is made again).
    let q2 = q.clone();
    let getter = std::thread::spawn(move || q2.get_timeout(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    r.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match q.put_confirmed(&3) {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "put after restart: {e:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(getter.join().unwrap().unwrap(), 3);
}

#[test]
fn auth_from_the_environment() {
    let r = RedisServer::start_with(&["--requirepass", "envpw"]);
    let mut kids = Children::default();
    let i = kids.push(spawn_self(
        "zz_child_entry",
        &[
            ("MP_QUEUE_ROLE", "envauth".into()),
            ("MP_URL", r.url()),
            ("MP_NAME", "envq".into()),
            ("MULTIPROC_REDIS_PASSWORD", "envpw".into()),
        ],
    ));
    wait_line(&mut kids.0[i], "ENVOK");
    let url = format!("redis://:envpw@127.0.0.1:{}", r.port);
    let q: RemoteQueue<u8> = RemoteQueue::connect(&url, "envq").unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 42);
}

fn consumers(url: &str, key: &str) -> usize {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let v: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(key)
        .arg("mpq")
        .query(&mut c)
        .unwrap();
    v.len()
}

#[test]
fn a_dropped_handle_leaves_the_group_only_when_it_holds_nothing() {
    let r = RedisServer::start();
    let key = "{mp:leave}:q";
    let a: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "leave").unwrap();
    let b: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "leave").unwrap();
    a.put(&1).unwrap();
    a.put(&2).unwrap();
    assert_eq!(a.get_timeout(Duration::from_secs(5)).unwrap(), 1);
    let held = b.get_delivery_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(consumers(&r.url(), key), 2);
    drop(a);
    assert_eq!(consumers(&r.url(), key), 1, "a held nothing: gone");
    drop(b);
    drop(held); // unacked: b's consumer keeps the entry for others to claim
    assert_eq!(consumers(&r.url(), key), 1);
}

#[test]
fn get_timeout_zero_takes_what_is_there() {
    let r = RedisServer::start();
    let q: RemoteQueue<u8> = RemoteQueue::connect(&r.url(), "zero").unwrap();
    q.put(&4).unwrap();
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 4);
    assert_eq!(
        q.get_timeout(Duration::ZERO).unwrap_err(),
        GetError::Timeout
    );
}

#[test]
fn get_without_timeout_returns_an_error_when_redis_stays_away() {
    let mut r = RedisServer::start();
    let o = Options {
        connect_timeout: Duration::from_millis(500),
        outage_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let q: RemoteQueue<u8> = RemoteQueue::connect_with(&r.url(), "gone", o).unwrap();
    let q2 = q.clone();
    let getter = std::thread::spawn(move || q2.get());
    std::thread::sleep(Duration::from_millis(200));
    r.kill(); // and it never comes back
    let e = getter.join().unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            GetError::Link(LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. })
        ),
        "{e:?}"
    );
}

/// `put_many` stores every item in order; a handle reading ahead (`prefetch`) hands them out in
/// order, one read per `prefetch` items, and acknowledges each as it is handed out.
#[test]
fn put_many_and_prefetch_keep_order_and_count() {
    let r = RedisServer::start();
    let o = Options {
        prefetch: 16,
        ..opts(30_000)
    };
    let q: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "many", o).unwrap();
    let items: Vec<u64> = (0..600).collect();
    q.put_many(&items).unwrap(); // 3 pipelined chunks
    assert_eq!(q.qsize().unwrap(), 600);
    let got: Vec<u64> = (0..600)
        .map(|_| q.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(got, items);
    assert_eq!(
        q.get_timeout(Duration::from_millis(50)).unwrap_err(),
        GetError::Timeout
    );
    assert_eq!(q.qsize().unwrap(), 0);
    // An oversized item refuses the whole batch before anything is sent.
    let small = Options {
        max_message: 8,
        ..opts(30_000)
    };
    let v: RemoteQueue<Vec<u8>> = RemoteQueue::connect_with(&r.url(), "many2", small).unwrap();
    let batch = [vec![1u8; 2], vec![2u8; 100]];
    assert!(matches!(
        v.put_many(&batch).unwrap_err(),
        PutError::TooLarge { .. }
    ));
    assert_eq!(v.qsize().unwrap(), 0);
}

/// Entries a handle read ahead but did not hand out within `claim_idle / 2` are not handed out
/// by it any more: once another consumer has claimed them (after `claim_idle`), every item is
/// delivered exactly once across the two.
#[test]
fn read_ahead_entries_left_too_long_are_not_handed_out_twice() {
    let r = RedisServer::start();
    let o = Options {
        prefetch: 8,
        ..opts(400)
    };
    let a: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "ahead", o.clone()).unwrap();
    let b: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "ahead", o).unwrap();
    a.put_many(&(0..8).collect::<Vec<u64>>()).unwrap();
    let mut got = vec![a.get_timeout(Duration::from_secs(5)).unwrap()]; // 7 more buffered in a
    std::thread::sleep(Duration::from_millis(600)); // past claim_idle
    let t0 = Instant::now();
    while got.len() < 8 && t0.elapsed() < Duration::from_secs(30) {
        for q in [&b, &a] {
            if let Ok(v) = q.get_timeout(Duration::from_millis(100)) {
                got.push(v);
            }
        }
    }
    // Nothing more comes, to either (past claim_idle again: no entry is left pending).
    std::thread::sleep(Duration::from_millis(600));
    for q in [&b, &a] {
        while let Ok(v) = q.get_timeout(Duration::from_millis(300)) {
            got.push(v);
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..8).collect::<Vec<u64>>());
    assert_eq!(a.qsize().unwrap(), 0);
}

/// A handle dropped with read-ahead entries gives them back: another consumer gets them at once,
/// not after `claim_idle` (30 s here).
#[test]
fn a_dropped_handle_gives_back_its_read_ahead_entries() {
    let r = RedisServer::start();
    let ahead = Options {
        prefetch: 8,
        ..opts(30_000)
    };
    let a: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "giveback", ahead).unwrap();
    let b: RemoteQueue<u64> =
        RemoteQueue::connect_with(&r.url(), "giveback", opts(30_000)).unwrap();
    a.put_many(&[1, 2, 3, 4]).unwrap();
    assert_eq!(a.get_timeout(Duration::from_secs(5)).unwrap(), 1); // 2, 3, 4 read ahead
    drop(a);
    let mut got: Vec<u64> = (0..3)
        .map(|_| b.get_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, [2, 3, 4]);
    assert_eq!(b.qsize().unwrap(), 0);
}

/// `put` is pipelined (it returns once the item is queued locally): dropping the handle right
/// after stores everything, in order.
#[test]
fn put_then_drop_delivers_everything() {
    let r = RedisServer::start();
    let q: RemoteQueue<u64> = RemoteQueue::connect(&r.url(), "dropflush").unwrap();
    for i in 0..3000 {
        q.put(&i).unwrap();
    }
    drop(q);
    let c: RemoteQueue<u64> = RemoteQueue::connect(&r.url(), "dropflush").unwrap();
    assert_eq!(c.qsize().unwrap(), 3000);
    let got: Vec<u64> = (0..3000)
        .map(|_| c.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(got, (0..3000).collect::<Vec<u64>>());
    assert_eq!(
        c.get_timeout(Duration::from_millis(50)).unwrap_err(),
        GetError::Timeout
    );
}

/// `flush` waits until what was put is stored; with Redis killed it returns an error within its
/// bound (`2 * connect_timeout + io_timeout` without progress), not never.
#[test]
fn flush_with_redis_killed_returns_an_error_within_its_timeout() {
    let mut r = RedisServer::start();
    let o = Options {
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let q: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), "flushgone", o).unwrap();
    for i in 0..100 {
        q.put(&i).unwrap();
    }
    q.flush().unwrap();
    assert_eq!(q.qsize().unwrap(), 100);
    r.kill();
    let mut queued = 0;
    for i in 0..100 {
        // Each either queued (Ok) or refused with the writer's error: both are fine here.
        if q.put(&i).is_ok() {
            queued += 1;
        }
    }
    let t0 = Instant::now();
    let e = q.flush();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "flush took {took:?}");
    if queued > 0 {
        let e = e.unwrap_err();
        assert!(
            matches!(
                e,
                PutError::Link(LinkError::Unreachable { .. } | LinkError::ConnectionLost { .. })
                    | PutError::Timeout
            ),
            "{e:?}"
        );
    }
    // Drop does not hang either (a bounded flush).
    let t0 = Instant::now();
    drop(q);
    assert!(t0.elapsed() < Duration::from_secs(4));
}

/// An error Redis answers to a pipelined `XADD` is not lost: the next `put` (or `flush`) returns
/// it, once; later puts work again when Redis does.
#[test]
fn put_errors_surface_on_a_later_call() {
    let r = RedisServer::start();
    let q: RemoteQueue<u64> = RemoteQueue::connect(&r.url(), "puterr").unwrap();
    let mut c = redis::Client::open(r.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // The stream replaced by a string: every XADD is answered WRONGTYPE.
    redis::cmd("DEL")
        .arg("{mp:puterr}:q")
        .query::<()>(&mut c)
        .unwrap();
    redis::cmd("SET")
        .arg("{mp:puterr}:q")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap();
    q.put(&1).unwrap(); // queued: the error comes later
    let e = q.flush().unwrap_err();
    assert!(
        matches!(&e, PutError::Link(l) if l.is_code("WRONGTYPE")),
        "{e:?}"
    );
    q.flush().unwrap(); // reported once

    // Surfacing on the next put.
    q.put(&2).unwrap();
    let t0 = Instant::now();
    let e = loop {
        match q.put(&3) {
            Err(e) => break e,
            Ok(()) => assert!(t0.elapsed() < Duration::from_secs(10), "no error"),
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        matches!(&e, PutError::Link(l) if l.is_code("WRONGTYPE")),
        "{e:?}"
    );
    let _ = q.flush();

    // put_confirmed reports its own error at once; close reports a pending one.
    assert!(matches!(
        q.put_confirmed(&4).unwrap_err(),
        PutError::Link(LinkError::Redis { .. })
    ));
    q.put(&5).unwrap();
    assert!(matches!(
        q.close().unwrap_err(),
        PutError::Link(LinkError::Redis { .. })
    ));

    // With the key back as a stream, a new handle works.
    redis::cmd("DEL")
        .arg("{mp:puterr}:q")
        .query::<()>(&mut c)
        .unwrap();
    let q: RemoteQueue<u64> = RemoteQueue::connect(&r.url(), "puterr").unwrap();
    q.put(&6).unwrap();
    q.flush().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 6);
}

/// Batched acknowledgements: a consumer SIGKILLed mid-batch has the items of that batch
/// (handed out but not yet acknowledged, and still buffered) delivered to another consumer after
/// `claim_idle`; the items of its earlier, drained batch were acknowledged and do not come back.
#[test]
fn a_consumer_killed_mid_batch_has_its_unacked_entries_redelivered_and_acked_ones_not() {
    let r = RedisServer::start();
    let name = "midbatch";
    let q: RemoteQueue<u64> = RemoteQueue::connect_with(&r.url(), name, opts(500)).unwrap();
    for i in 0..16 {
        q.put(&i).unwrap();
    }
    q.flush().unwrap();
    let mut kids = Children::default();
    let i = kids.push(spawn_self(
        "zz_child_entry",
        &[
            ("MP_QUEUE_ROLE", "midbatch".into()),
            ("MP_URL", r.url()),
            ("MP_NAME", name.into()),
        ],
    ));
    let line = wait_line(&mut kids.0[i], "GOT ");
    let (list, in_time) = line.rsplit_once(' ').unwrap();
    assert_eq!(list, format!("{:?}", (0..11).collect::<Vec<u64>>()));
    let st = kids.0[i].wait().unwrap();
    assert!(!st.success(), "the child killed itself: {st:?}");
    assert_eq!(q.qsize().unwrap(), 8, "the first batch was acknowledged");
    let mut got = Vec::new();
    while let Ok(v) = q.get_timeout(Duration::from_secs(3)) {
        got.push(v);
    }
    got.sort_unstable();
    if in_time == "true" {
        assert_eq!(got, (8..16).collect::<Vec<u64>>());
    } else {
        // Slow machine: the timer may have acknowledged 8, 9, 10 before the kill.
        assert!(
            got == (8..16).collect::<Vec<u64>>() || got == (11..16).collect::<Vec<u64>>(),
            "{got:?}"
        );
    }
    q.flush().unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
}

/// The automatic read-ahead (the default): one consumer gets everything in order; two
/// consumers draining one stream get every item exactly once, each in increasing order.
#[test]
fn auto_read_ahead_keeps_order_and_delivers_exactly_once() {
    let r = RedisServer::start();
    let p: RemoteQueue<u64> = RemoteQueue::connect(&r.url(), "auto").unwrap();
    let c: RemoteQueue<u64> = RemoteQueue::connect(&r.url(), "auto").unwrap();
    for i in 0..2000 {
        p.put(&i).unwrap();
    }
    let got: Vec<u64> = (0..2000)
        .map(|_| c.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(got, (0..2000).collect::<Vec<u64>>());
    drop(c);

    const N: u64 = 6000;
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let url = r.url();
            std::thread::spawn(move || {
                let q: RemoteQueue<u64> = RemoteQueue::connect(&url, "auto").unwrap();
                let mut mine = Vec::new();
                loop {
                    match q.get_timeout(Duration::from_secs(10)).unwrap() {
                        u64::MAX => return mine,
                        v => mine.push(v),
                    }
                }
            })
        })
        .collect();
    for i in 0..N {
        p.put(&i).unwrap();
    }
    p.put(&u64::MAX).unwrap();
    p.put(&u64::MAX).unwrap();
    p.flush().unwrap();
    let mut all = Vec::new();
    for h in consumers {
        let mine = h.join().unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "order per consumer");
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<u64>>());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.qsize().unwrap(), 0, "every item acknowledged");
}

/// `Duration::MAX` (a user's "forever") as a call's timeout or as an `Options` timeout is no
/// deadline, never a panic on `Instant` overflow.
#[test]
fn duration_max_timeouts_mean_no_deadline() {
    let r = RedisServer::start();
    let o = Options {
        io_timeout: Duration::MAX,
        outage_timeout: Duration::MAX,
        ..Options::default()
    };
    let q: RemoteQueue<u8> = RemoteQueue::connect_with(&r.url(), "forever", o).unwrap();
    q.put(&4).unwrap();
    q.flush().unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 4);
    q.put(&5).unwrap();
    let d = q.get_delivery_timeout(Duration::MAX).unwrap();
    assert_eq!(d.ack().unwrap(), 5);
    assert_eq!(q.qsize().unwrap(), 0);
}
