//! Behaviour of the MPMC ring within one process (threads), plus recovery of slots whose
//! claimer is dead (simulated with a reaped child's pid).

mod common;

use common::*;
use multiproc_ring::{MpmcRing, PopError, PushError, RingError, WaitStrategy};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn push_then_pop_in_fifo_order() {
    let q = MpmcRing::create(16, 40).unwrap();
    let mut v = Vec::new();
    for round in 0..10u8 {
        for i in 0..16u8 {
            q.try_push(&[round, i]).unwrap();
        }
        assert_eq!(q.try_push(b"x"), Err(PushError::Full));
        for i in 0..16u8 {
            q.try_pop_into(&mut v).unwrap();
            assert_eq!(v, [round, i]);
        }
        assert_eq!(q.try_pop_into(&mut v), Err(PopError::Empty));
    }
}

#[test]
fn record_larger_than_slot_is_refused() {
    let q = MpmcRing::new_heap(4, 8).unwrap();
    assert_eq!(
        q.try_push(&[0; 9]),
        Err(PushError::TooLarge { len: 9, max: 8 })
    );
    q.try_push(&[0; 8]).unwrap();
}

#[test]
fn close_drains_then_disconnects() {
    let q = MpmcRing::new_heap(4, 8).unwrap();
    q.try_push(b"a").unwrap();
    q.close();
    assert_eq!(q.try_push(b"b"), Err(PushError::Disconnected));
    let mut v = Vec::new();
    q.pop_into(&mut v).unwrap();
    assert_eq!(q.pop_into(&mut v), Err(PopError::Disconnected));
}

#[test]
fn timeouts_wait_at_least_the_timeout() {
    let q = MpmcRing::new_heap(2, 8).unwrap();
    let mut v = Vec::new();
    let t = Instant::now();
    assert_eq!(
        q.pop_into_timeout(&mut v, Duration::from_millis(30)),
        Err(PopError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(25));
    q.try_push(b"1").unwrap();
    q.try_push(b"2").unwrap();
    let t = Instant::now();
    assert_eq!(
        q.push_timeout(b"3", Duration::from_millis(30)),
        Err(PushError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(25));
}

#[test]
fn bad_params_are_refused() {
    assert!(matches!(
        MpmcRing::create(3, 8),
        Err(RingError::InvalidParams(_))
    ));
    assert!(matches!(
        MpmcRing::create(1, 8),
        Err(RingError::InvalidParams(_))
    ));
    assert!(matches!(
        MpmcRing::create(4, 0),
        Err(RingError::InvalidParams(_))
    ));
}

fn threads_mpmc(strategy: WaitStrategy, producers: u64, consumers: usize, per: u64) {
    let mut q = MpmcRing::new_heap(64, 32).unwrap();
    q.set_wait_strategy(strategy);
    let seen = Arc::new(
        (0..producers * per)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect::<Vec<_>>(),
    );
    let mut hs = Vec::new();
    for p in 0..producers {
        let q = q.clone();
        hs.push(std::thread::spawn(move || {
            let mut buf = [0u8; 24];
            for i in 0..per {
                make_record(&mut buf[..12 + (i % 12) as usize], p * per + i);
                q.push_timeout(&buf[..12 + (i % 12) as usize], Duration::from_secs(10))
                    .unwrap();
            }
        }));
    }
    let total = producers * per;
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut cs = Vec::new();
    for _ in 0..consumers {
        let q = q.clone();
        let seen = seen.clone();
        let count = count.clone();
        cs.push(std::thread::spawn(move || {
            let mut v = Vec::new();
            while count.load(std::sync::atomic::Ordering::Relaxed) < total {
                match q.pop_into_timeout(&mut v, Duration::from_millis(50)) {
                    Ok(_) => {
                        let seq = check_record(&v).expect("checksum");
                        assert!(
                            !seen[seq as usize].swap(true, std::sync::atomic::Ordering::Relaxed)
                        );
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(PopError::Timeout) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for h in hs.into_iter().chain(cs) {
        h.join().unwrap();
    }
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), total);
    assert_eq!(q.lost_records(), 0);
}

#[test]
fn threads_2p2c_deliver_every_record_once_spin() {
    threads_mpmc(WaitStrategy::Spin, 2, 2, 20_000);
}

#[test]
fn threads_3p2c_deliver_every_record_once_park() {
    threads_mpmc(WaitStrategy::SpinPark, 3, 2, 10_000);
}

/// A pid that is certainly dead: a child we forked and reaped.
fn dead_pid() -> u32 {
    let pid = fork_child(|| 0);
    wait_child(pid, Duration::from_secs(5)).unwrap();
    pid as u32
}

/// Writes the slot word of slot `i` (test-only corruption through the segment).
fn set_slot_word(q: &MpmcRing, i: usize, w: u64) {
    let base = q.segment().unwrap().payload_ptr().as_ptr();
    let off =
        multiproc_ring::mpmc::control_size() + i * multiproc_ring::mpmc::stride_for(q.slot_size());
    // SAFETY: test-only: slot i's word is inside our own segment, 8-aligned, no concurrent use.
    unsafe { base.add(off).cast::<u64>().write_volatile(w) };
}

#[test]
fn slot_claimed_by_dead_writer_is_recovered_as_lost() {
    let q = MpmcRing::create(4, 16).unwrap();
    let dead = dead_pid();
    // Simulate: the dead process claimed position 0 for writing and bumped the tail.
    q.try_push(b"a").unwrap(); // position 0 published
    let mut v = Vec::new();
    q.try_pop_into(&mut v).unwrap(); // head = tail = 1
    // Claim position 1 (slot 1, stamp 1) by the dead pid, then publish position 2 normally.
    set_slot_word(&q, 1, (u64::from(dead) << 32) | 1);
    q.try_push(b"b").unwrap(); // helps tail past 1, writes position 2
    // The head is stuck at the dead claim while position 2 is finished: a non-blocking pop
    // waits for the head's writer, finds it dead, recovers the slot (lost) and takes "b".
    q.try_pop_into(&mut v).unwrap();
    assert_eq!(v, b"b");
    assert_eq!(q.lost_records(), 1);
    // The ring keeps working across laps.
    for i in 0..20u8 {
        q.try_push(&[i]).unwrap();
        q.try_pop_into(&mut v).unwrap();
        assert_eq!(v, [i]);
    }
}

#[test]
fn slot_claimed_by_dead_reader_is_released() {
    let q = MpmcRing::create(2, 16).unwrap();
    let dead = dead_pid();
    q.try_push(b"a").unwrap();
    q.try_push(b"b").unwrap();
    // The dead process claimed position 0 for reading (stamp 1) and bumped the head.
    set_slot_word(&q, 0, (u64::from(dead) << 32) | 1);
    let mut v = Vec::new();
    q.try_pop_into(&mut v).unwrap(); // helps head past 0, reads "b"
    assert_eq!(v, b"b");
    assert_eq!(q.try_push(b"c"), Err(PushError::Full)); // slot 0 held by the dead reader
    q.push_timeout(b"c", Duration::from_secs(5)).unwrap();
    assert_eq!(q.lost_records(), 1);
    q.try_pop_into(&mut v).unwrap();
    assert_eq!(v, b"c");
}

#[test]
fn ring_serializes_as_its_segment_handle() {
    let name = format!("ringtest-mpmc-{}", std::process::id());
    let q = MpmcRing::create_named(&name, 8, 16).unwrap();
    let bytes = postcard::to_allocvec(&q).unwrap();
    let q2: MpmcRing = postcard::from_bytes(&bytes).unwrap();
    q.try_push(b"via handle").unwrap();
    let mut v = Vec::new();
    q2.try_pop_into(&mut v).unwrap();
    assert_eq!(v, b"via handle");
    let s = multiproc_ring::SpscRing::create(256).unwrap();
    let bytes = postcard::to_allocvec(&s).unwrap();
    let s2: multiproc_ring::SpscRing = postcard::from_bytes(&bytes).unwrap();
    assert!(s2.segment().unwrap().same_as(s.segment().unwrap()));
    drop((q, q2));
    assert!(shm_leftovers().is_empty());
}

/// The only consumer pushes a record, then try-pops: the ring holds at least its own finished
/// record, so it must never get `Empty` — even when the head slot is still being written by
/// another producer (issue 12, item 12). Other producers keep the ring about half full.
/// Returns how many of `iterations` try-pops said `Empty`.
fn own_push_then_try_pop(q: &MpmcRing, iterations: u64) -> u64 {
    let mut v = Vec::new();
    let mut empties = 0;
    for i in 0..iterations {
        loop {
            match q.try_push(&i.to_le_bytes()) {
                Ok(()) => break,
                Err(PushError::Full) => {
                    let _ = q.try_pop_into(&mut v);
                }
                Err(e) => panic!("{e}"),
            }
        }
        match q.try_pop_into(&mut v) {
            Ok(_) => {}
            Err(PopError::Empty) => empties += 1,
            Err(e) => panic!("{e}"),
        }
    }
    empties
}

/// What the other producers do: keep the ring about half full with small records.
fn background_producer(q: &MpmcRing, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if q.pending() < q.slots() as u64 / 2 {
            let _ = q.try_push(b"bg");
        } else {
            std::thread::yield_now();
        }
    }
}

#[test]
fn try_pop_after_own_push_never_says_empty_threads() {
    let q = MpmcRing::create(64, 16).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let empties = std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| background_producer(&q, &stop));
        }
        let n = own_push_then_try_pop(&q, 100_000);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        n
    });
    assert_eq!(empties, 0, "{empties} of 100000 try_pops said Empty");
}

#[test]
fn try_pop_after_own_push_never_says_empty_processes() {
    let q = MpmcRing::create(64, 16).unwrap();
    // A stop flag the children see: a MAP_SHARED anonymous page.
    // SAFETY: an anonymous shared mapping of one page; checked for failure.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: the page is zeroed, aligned and lives until the munmap below; AtomicBool has
    // u8's layout.
    let stop = unsafe { &*page.cast::<std::sync::atomic::AtomicBool>() };
    let kids: Vec<_> = (0..2)
        .map(|_| {
            fork_child(|| {
                background_producer(&q, stop);
                0
            })
        })
        .collect();
    let empties = own_push_then_try_pop(&q, 100_000);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for k in kids {
        let st = wait_child(k, Duration::from_secs(10)).expect("producer did not stop");
        assert_eq!(exit_code(st), Some(0));
    }
    // SAFETY: unmapping the page mapped above; the children are gone.
    unsafe { libc::munmap(page, 4096) };
    assert_eq!(empties, 0, "{empties} of 100000 try_pops said Empty");
}
