//! Behaviour of the SPSC byte ring within one process (heap and segment rings, threads).

mod common;

use common::*;
use multiproc_ring::{PopError, PushError, RingError, SpscRing, WaitStrategy};
use std::time::{Duration, Instant};

#[test]
fn push_then_pop_returns_the_same_bytes() {
    let ring = SpscRing::new(1024).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut v = Vec::new();
    for i in 0..1000u32 {
        let rec = vec![i as u8; (i % 97) as usize];
        tx.try_push(&rec).unwrap();
        assert_eq!(rx.try_pop_into(&mut v).unwrap(), rec.len());
        assert_eq!(v, rec);
    }
    assert_eq!(rx.try_pop_into(&mut v), Err(PopError::Empty));
}

#[test]
fn reserve_commit_and_peek_release_are_zero_copy() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut g = tx.try_reserve(10).unwrap();
    g.as_mut_slice().copy_from_slice(b"0123456789");
    g.commit_len(4);
    let r = rx.try_peek().unwrap();
    assert_eq!(r.as_slice(), b"0123");
    let _ = r; // not released: still there
    let r = rx.try_peek().unwrap();
    assert_eq!(r.len(), 4);
    r.release();
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
}

#[test]
fn dropped_write_grant_publishes_nothing() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let _ = tx.try_reserve(50).unwrap(); // dropped at once, never committed
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
    tx.try_push(b"a").unwrap();
    assert_eq!(rx.try_peek().unwrap().as_slice(), b"a");
}

/// The deadline forms of the waiting calls (`peek_deadline`, `reserve_deadline`): a deadline
/// already past still hands over what is there at once (they read the clock only when they
/// must wait), and times out when there is nothing; `None` waits as long as needed.
#[test]
fn deadline_calls_take_what_is_there_and_time_out_on_nothing() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    assert_eq!(rx.peek_deadline(Some(past)).unwrap_err(), PopError::Timeout);
    let t = Instant::now();
    assert_eq!(
        rx.peek_deadline(Some(t + Duration::from_millis(30)))
            .unwrap_err(),
        PopError::Timeout
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
    let mut g = tx.reserve_deadline(3, Some(past)).unwrap();
    g.as_mut_slice().copy_from_slice(b"abc");
    g.commit();
    let r = rx.peek_deadline(Some(past)).unwrap();
    assert_eq!(r.as_slice(), b"abc");
    r.release();
    while tx.try_push(&[9; 60]).is_ok() {}
    assert_eq!(
        tx.reserve_deadline(60, Some(past)).unwrap_err(),
        PushError::Timeout
    );
    assert_eq!(rx.peek_deadline(None).unwrap().len(), 60);
}

#[test]
fn record_larger_than_max_is_a_clear_error_not_truncation() {
    let ring = SpscRing::new_heap(1024).unwrap();
    let mut tx = ring.producer().unwrap();
    let max = ring.max_record();
    assert_eq!(max, 1024 / 2 - 8);
    assert_eq!(
        tx.try_push(&vec![0; max + 1]),
        Err(PushError::TooLarge { len: max + 1, max })
    );
    tx.try_push(&vec![7; max]).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut v = Vec::new();
    assert_eq!(rx.try_pop_into(&mut v).unwrap(), max);
}

#[test]
fn max_record_always_fits_in_an_empty_ring_at_any_offset() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut v = Vec::new();
    for off in 0..40 {
        tx.try_push(&vec![1; off % 17]).unwrap();
        rx.try_pop_into(&mut v).unwrap();
        tx.try_push(&vec![2; ring.max_record()]).unwrap();
        assert_eq!(rx.try_pop_into(&mut v).unwrap(), ring.max_record());
    }
}

#[test]
fn push_on_full_ring_returns_full() {
    let ring = SpscRing::new_heap(128).unwrap();
    let mut tx = ring.producer().unwrap();
    let _rx = ring.consumer().unwrap();
    let mut n = 0;
    while tx.try_push(b"12345678").is_ok() {
        n += 1;
    }
    assert_eq!(n, 128 / 16 - 1); // one word stays free for the terminator
    assert_eq!(tx.try_push(b"x"), Err(PushError::Full));
}

#[test]
fn batch_push_and_pop_move_many_records_with_one_publish() {
    let ring = SpscRing::new_heap(4096).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let recs: Vec<[u8; 8]> = (0..1000u64).map(|i| i.to_le_bytes()).collect();
    let n = tx.try_push_batch(&recs).unwrap();
    assert_eq!(n, 4096 / 16 - 1);
    let mut got = Vec::new();
    let m = rx
        .try_pop_batch(usize::MAX, |r| {
            got.push(u64::from_le_bytes(r.try_into().unwrap()))
        })
        .unwrap();
    assert_eq!(m, n);
    assert_eq!(got, (0..n as u64).collect::<Vec<_>>());
}

#[test]
fn consumer_drains_then_sees_disconnected_after_producer_drops() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.try_push(b"last").unwrap();
    drop(tx);
    let mut v = Vec::new();
    rx.pop_into(&mut v).unwrap();
    assert_eq!(v, b"last");
    assert_eq!(rx.pop_into(&mut v), Err(PopError::Disconnected));
    assert!(matches!(
        ring.producer(),
        Err(RingError::Closed("producer"))
    ));
}

#[test]
fn producer_sees_disconnected_when_consumer_drops_while_full() {
    let ring = SpscRing::new_heap(128).unwrap();
    let mut tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    while tx.try_push(b"x").is_ok() {}
    drop(rx);
    assert_eq!(tx.push(b"x"), Err(PushError::Disconnected));
}

#[test]
fn second_live_producer_is_refused() {
    let ring = SpscRing::new_heap(256).unwrap();
    let _tx = ring.producer().unwrap();
    assert!(matches!(
        ring.producer(),
        Err(RingError::AlreadyAttached {
            side: "producer",
            ..
        })
    ));
}

#[test]
fn timeout_forms_wait_at_least_the_timeout() {
    for s in [
        WaitStrategy::Spin,
        WaitStrategy::SpinYield,
        WaitStrategy::SpinPark,
        WaitStrategy::Park,
    ] {
        let ring = SpscRing::new_heap(128).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(s);
        tx.set_wait_strategy(s);
        let t = Instant::now();
        let mut v = Vec::new();
        assert_eq!(
            rx.pop_into_timeout(&mut v, Duration::from_millis(30)),
            Err(PopError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(25));
        while tx.try_push(b"x").is_ok() {}
        let t = Instant::now();
        assert_eq!(
            tx.push_timeout(b"x", Duration::from_millis(30)),
            Err(PushError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}

fn stream_between_threads(strategy: WaitStrategy, cap: usize, n: u64) {
    let ring = SpscRing::new_heap(cap).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    let maxr = ring.max_record().min(300);
    let h = std::thread::spawn(move || {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; maxr];
        for seq in 0..n {
            let len = 12 + rng.below((maxr - 12) as u64) as usize;
            match rng.below(3) {
                0 => {
                    make_record(&mut buf[..len], seq);
                    tx.push_timeout(&buf[..len], Duration::from_secs(10))
                        .unwrap();
                }
                1 => {
                    let mut g = tx.reserve_timeout(len, Duration::from_secs(10)).unwrap();
                    make_record(g.as_mut_slice(), seq);
                    g.commit();
                }
                _ => {
                    make_record(&mut buf[..len], seq);
                    tx.push_batch(&[&buf[..len]]).unwrap();
                }
            }
        }
    });
    let mut v = Vec::new();
    let mut expect = 0;
    while expect < n {
        if expect % 2 == 0 {
            rx.pop_into_timeout(&mut v, Duration::from_secs(10))
                .unwrap();
            assert_eq!(check_record(&v), Some(expect));
            expect += 1;
        } else {
            let g = rx.peek_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(check_record(g.as_slice()), Some(expect));
            g.release();
            expect += 1;
        }
    }
    h.join().unwrap();
    assert_eq!(
        rx.pop_into_timeout(&mut v, Duration::from_secs(5)),
        Err(PopError::Disconnected)
    );
}

#[test]
fn threads_stream_checksummed_records_with_spin() {
    stream_between_threads(WaitStrategy::Spin, 1024, 20_000);
}

#[test]
fn threads_stream_checksummed_records_with_spin_yield() {
    stream_between_threads(WaitStrategy::SpinYield, 4096, 20_000);
}

#[test]
fn threads_stream_checksummed_records_with_spin_park() {
    stream_between_threads(WaitStrategy::SpinPark, 2048, 20_000);
}

#[test]
fn threads_stream_checksummed_records_with_park() {
    stream_between_threads(WaitStrategy::Park, 1024, 5_000);
}

#[test]
fn named_ring_opens_by_name_and_serializes_as_handle() {
    let name = format!("ringtest-spsc-{}", std::process::id());
    let ring = SpscRing::create_named(&name, 1024).unwrap();
    let other = SpscRing::open_named(&name).unwrap();
    assert_eq!(other.capacity(), 1024);
    let mut tx = ring.producer().unwrap();
    let mut rx = other.consumer().unwrap();
    tx.try_push(b"hi").unwrap();
    let mut v = Vec::new();
    rx.try_pop_into(&mut v).unwrap();
    assert_eq!(v, b"hi");
    assert!(matches!(
        multiproc_ring::MpmcRing::open_named(&name),
        Err(RingError::Shm(_))
    ));
    drop((tx, rx, other, ring));
    assert!(shm_leftovers().is_empty());
}

#[test]
fn bad_capacity_is_refused() {
    assert!(matches!(
        SpscRing::new(1000),
        Err(RingError::InvalidParams(_))
    ));
    assert!(matches!(
        SpscRing::new(32),
        Err(RingError::InvalidParams(_))
    ));
}

/// Writes `v` at byte `off` of the ring's control block (through the segment payload).
fn poke(ring: &SpscRing, off: usize, v: u64) {
    let p = ring.segment().unwrap().payload_ptr().as_ptr();
    // SAFETY: test-only corruption of our own segment; off is inside the control block and
    // 8-aligned; nothing else touches the ring concurrently.
    unsafe { p.add(off).cast::<u64>().write_volatile(v) };
}

#[test]
fn corrupted_indices_and_headers_give_errors_not_ub() {
    // tail at 128, head at 256 (CachePadded lines after the 128-byte config line).
    let ring = SpscRing::new(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.try_push(b"abc").unwrap();
    // A record header claiming a huge length.
    poke(
        &ring,
        multiproc_ring::spsc::control_size(),
        (0x5245_4344 << 32) | 0xFFFF_FFF0,
    );
    let mut v = Vec::new();
    assert!(matches!(
        rx.try_pop_into(&mut v),
        Err(PopError::Corrupted(_))
    ));
    drop((tx, rx));
    // A tail far from head: a re-attaching producer refuses.
    poke(&ring, 128, 1 << 40);
    assert!(matches!(
        ring.producer(),
        Err(RingError::Corrupted(_)) | Err(RingError::Closed(_))
    ));

    let ring = SpscRing::new(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.try_push(b"abc").unwrap();
    // Overwrite the record header in the data region with garbage.
    poke(
        &ring,
        multiproc_ring::spsc::control_size(),
        0xdead_beef_dead_beef,
    );
    assert!(matches!(rx.try_peek(), Err(PopError::Corrupted(_))));

    let ring = SpscRing::new(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let _rx = ring.consumer().unwrap();
    while tx.try_push(b"x").is_ok() {}
    poke(&ring, 256, u64::MAX); // head beyond tail
    assert!(matches!(tx.try_push(b"x"), Err(PushError::Corrupted(_))));

    let ring = SpscRing::new(256).unwrap();
    poke(&ring, 8, 1 << 20); // capacity larger than the segment
    assert!(matches!(
        SpscRing::from_segment(ring.segment().unwrap().clone()),
        Err(RingError::Corrupted(_))
    ));
}

#[test]
fn explicit_close_by_either_side_disconnects_the_other() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    assert!(!tx.is_disconnected());
    rx.close();
    assert!(tx.is_disconnected());
    assert!(matches!(
        ring.consumer(),
        Err(RingError::Closed("consumer"))
    ));
    while tx.try_push(b"x").is_ok() {}
    assert_eq!(tx.try_push(b"x"), Err(PushError::Disconnected));

    let ring = SpscRing::new_heap(256).unwrap();
    let tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.close();
    assert!(rx.is_disconnected());
    let mut v = Vec::new();
    assert_eq!(rx.try_pop_into(&mut v), Err(PopError::Disconnected));
}

#[test]
fn took_over_says_whether_a_dead_owner_was_replaced() {
    let ring = SpscRing::new(256).unwrap();
    let tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    assert!(!tx.took_over() && !rx.took_over());
    // A producer and a consumer in a child that is then killed: the sides are taken over.
    let ring = SpscRing::new(256).unwrap();
    let mut child = fork(|| {
        let (Ok(_tx), Ok(_rx)) = (ring.producer(), ring.consumer()) else {
            return 2;
        };
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = |ring: &SpscRing| multiproc_ring::spsc::stats_of(ring.segment().unwrap()).unwrap();
    while stats(&ring).consumer.pid == 0 || stats(&ring).producer.pid == 0 {
        assert!(Instant::now() < deadline, "child did not attach");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        ring.producer(),
        Err(RingError::AlreadyAttached {
            side: "producer",
            ..
        })
    ));
    child.kill();
    let tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    assert!(tx.took_over() && rx.took_over());
    let s = stats(&ring);
    assert!(s.producer.alive && s.consumer.alive);
    assert_eq!(s.producer.pid, std::process::id());
}

#[test]
fn corrupted_taken_position_is_refused_on_attach() {
    // `taken` is the line after the two sides: config, tail, head, producer, consumer = 5 lines.
    let ring = SpscRing::new(256).unwrap();
    poke(&ring, 5 * 128, 1 << 40);
    assert!(matches!(ring.consumer(), Err(RingError::Corrupted(_))));
    let ring = SpscRing::new(256).unwrap();
    poke(&ring, 5 * 128, 12); // not 8-aligned
    assert!(matches!(ring.consumer(), Err(RingError::Corrupted(_))));
}

#[test]
fn corrupted_owner_word_with_pid_zero_is_a_dead_owner() {
    // The producer side's owner word (line 3) rewritten to "pid 0, start time x": no one
    // alive owns it, so it can be taken over; nothing panics.
    let ring = SpscRing::new(256).unwrap();
    poke(&ring, 3 * 128, 0x1234);
    let tx = ring.producer().unwrap();
    assert!(tx.took_over());
}

/// Deferred publication: records stay invisible until the batch is published (by `flush`, by a
/// publishing push behind them, or by the batch limit), and arrive in order.
#[test]
fn deferred_records_are_published_by_flush_push_or_the_batch_limit() {
    let ring = SpscRing::new_heap(1 << 16).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut v = Vec::new();
    tx.push_deferred(b"a").unwrap();
    tx.push_deferred(b"b").unwrap();
    assert_eq!(tx.pending(), 2);
    assert_eq!(rx.try_pop_into(&mut v), Err(PopError::Empty));
    tx.flush();
    assert_eq!(tx.pending(), 0);
    for want in [b"a", b"b"] {
        rx.try_pop_into(&mut v).unwrap();
        assert_eq!(v, want);
    }
    // A publishing push behind a deferred batch publishes the whole batch, in order.
    tx.push_deferred(b"c").unwrap();
    tx.try_push(b"d").unwrap();
    for want in [b"c", b"d"] {
        rx.try_pop_into(&mut v).unwrap();
        assert_eq!(v, want);
    }
    // The batch limit.
    let lim = multiproc_ring::spsc::DEFER_MAX_RECORDS;
    for i in 0..lim - 1 {
        tx.push_deferred(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(rx.try_pop_into(&mut v), Err(PopError::Empty));
    tx.push_deferred(&(lim - 1).to_le_bytes()).unwrap();
    assert_eq!(tx.pending(), 0);
    for i in 0..lim {
        rx.try_pop_into(&mut v).unwrap();
        assert_eq!(v, i.to_le_bytes());
    }
    assert_eq!(rx.try_pop_into(&mut v), Err(PopError::Empty));
}

/// A producer that finds the ring full publishes its deferred batch before reporting `Full`
/// (else the consumer could never free the room it waits for).
#[test]
fn full_ring_publishes_the_deferred_batch() {
    let ring = SpscRing::new_heap(1024).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.try_push(&[1u8; 504]).unwrap(); // 512 bytes, published
    tx.push_deferred(&[2u8; 100]).unwrap(); // 112 bytes (< capacity / 8): deferred
    assert_eq!(tx.pending(), 1);
    assert_eq!(tx.try_reserve(400).err(), Some(PushError::Full));
    assert_eq!(tx.pending(), 0);
    let mut v = Vec::new();
    assert_eq!(rx.try_pop_into(&mut v).unwrap(), 504);
    assert_eq!(rx.try_pop_into(&mut v).unwrap(), 100);
    assert_eq!(v, [2u8; 100]);
}

/// Deferred records (with wraps) through a blocking consumer thread, flushed only now and
/// then: every record arrives once, in order.
#[test]
fn deferred_stream_across_wraps_to_a_parking_consumer() {
    let ring = SpscRing::new_heap(256).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    rx.set_wait_strategy(WaitStrategy::Park);
    let n = 20_000u32;
    let h = std::thread::spawn(move || {
        for i in 0..n {
            tx.push_deferred(&vec![i as u8; (i % 37) as usize]).unwrap();
            if i % 1000 == 999 {
                tx.flush();
            }
        }
        // Dropped: flushes.
    });
    let mut v = Vec::new();
    for i in 0..n {
        rx.pop_into_timeout(&mut v, Duration::from_secs(30))
            .unwrap();
        assert_eq!(v, vec![i as u8; (i % 37) as usize]);
    }
    assert_eq!(
        rx.pop_into_timeout(&mut v, Duration::from_secs(30)),
        Err(PopError::Disconnected)
    );
    h.join().unwrap();
}
