//! Behaviour of the MPMC ring within one process (threads), plus recovery of slots whose
//! claimer is dead (simulated with a reaped child's pid).

mod common;

use common::*;
use multiproc_ring::{MpmcRing, PopError, PushError, RingError, WaitStrategy};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn push_then_pop_in_fifo_order() {
    let q = MpmcRing::new(16, 40).unwrap();
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
        MpmcRing::new((1 << 24) + 1, 8),
        Err(RingError::InvalidParams(_))
    ));
    assert!(matches!(
        MpmcRing::new(1, 8),
        Err(RingError::InvalidParams(_))
    ));
    assert!(matches!(
        MpmcRing::new(4, 0),
        Err(RingError::InvalidParams(_))
    ));
}

fn threads_mpmc(strategy: WaitStrategy, producers: u64, consumers: usize, per: u64) {
    threads_mpmc_slots(64, strategy, producers, consumers, per);
}

fn threads_mpmc_slots(
    slots: usize,
    strategy: WaitStrategy,
    producers: u64,
    consumers: usize,
    per: u64,
) {
    threads_mpmc_sized(slots, 32, strategy, producers, consumers, per);
}

/// Records of 12 to `min(slot_size, 23)` bytes (sequence number and checksum).
fn threads_mpmc_sized(
    slots: usize,
    slot_size: usize,
    strategy: WaitStrategy,
    producers: u64,
    consumers: usize,
    per: u64,
) {
    let extra = (slot_size.min(23) - 12) as u64 + 1;
    let mut q = MpmcRing::new_heap(slots, slot_size).unwrap();
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
                let len = 12 + (i % extra) as usize;
                make_record(&mut buf[..len], p * per + i);
                q.push_timeout(&buf[..len], Duration::from_secs(10))
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

/// Capacities that are not powers of two (lap-encoded positions) under contention: every record
/// exactly once, none lost.
#[test]
fn threads_non_power_of_two_capacities_deliver_every_record_once() {
    threads_mpmc_slots(3, WaitStrategy::Spin, 2, 2, 10_000);
    threads_mpmc_slots(5, WaitStrategy::SpinPark, 3, 2, 5_000);
    threads_mpmc_slots(100, WaitStrategy::Spin, 2, 2, 10_000);
}

/// Packed slots (a slot size of at most 16 bytes: stride 32, two slots per cache line) under
/// contention, with any capacity: every record exactly once, none lost.
#[test]
fn threads_packed_slots_deliver_every_record_once() {
    assert_eq!(multiproc_ring::mpmc::stride_for(16), 32);
    assert_eq!(multiproc_ring::mpmc::stride_for(1), 32);
    assert_eq!(multiproc_ring::mpmc::stride_for(17), 64);
    assert_eq!(multiproc_ring::mpmc::stride_for(48), 64);
    assert_eq!(multiproc_ring::mpmc::stride_for(49), 128);
    threads_mpmc_sized(64, 16, WaitStrategy::Spin, 2, 2, 20_000);
    threads_mpmc_sized(7, 12, WaitStrategy::SpinPark, 3, 2, 10_000);
    threads_mpmc_sized(2, 16, WaitStrategy::Spin, 2, 2, 5_000);
}

/// Any capacity holds exactly that many records, FIFO, over many laps; `pending` counts them
/// (against a model, random pushes and pops).
#[test]
fn any_capacity_holds_exactly_that_many_records_over_many_laps() {
    for slots in [2usize, 3, 5, 6, 7, 12, 100, 1000] {
        let q = MpmcRing::new(slots, 8).unwrap();
        assert_eq!(q.slots(), slots);
        let mut model = std::collections::VecDeque::new();
        let mut rng = Rng(slots as u64 * 0x9e37_79b9 + 1);
        let mut next = 0u64;
        let mut v = Vec::new();
        for _ in 0..(slots * 40).max(2_000) {
            if rng.below(2) == 0 {
                match q.try_push(&next.to_le_bytes()) {
                    Ok(()) => {
                        assert!(model.len() < slots, "slots {slots}: push past capacity");
                        model.push_back(next);
                        next += 1;
                    }
                    Err(PushError::Full) => {
                        assert_eq!(model.len(), slots, "slots {slots}: full too early")
                    }
                    Err(e) => panic!("slots {slots}: {e}"),
                }
            } else {
                match q.try_pop_into(&mut v) {
                    Ok(_) => {
                        let want = model.pop_front().expect("pop from an empty model");
                        assert_eq!(v, want.to_le_bytes(), "slots {slots}: order");
                    }
                    Err(PopError::Empty) => assert!(model.is_empty(), "slots {slots}"),
                    Err(e) => panic!("slots {slots}: {e}"),
                }
            }
            assert_eq!(q.pending(), model.len() as u64, "slots {slots}: pending");
        }
        assert!(
            next as usize > slots * 4,
            "slots {slots}: crossed several laps"
        );
    }
}

/// A pid that is certainly dead: a child we forked and reaped.
fn dead_pid() -> u32 {
    let mut child = fork(|| 0);
    child.try_wait_timeout(Duration::from_secs(5)).unwrap();
    child.pid as u32
}

#[test]
fn slot_claimed_by_dead_writer_is_recovered_as_lost() {
    let q = MpmcRing::new(4, 16).unwrap();
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
    let q = MpmcRing::new(2, 16).unwrap();
    let dead = dead_pid();
    q.try_push(b"a").unwrap();
    q.try_push(b"b").unwrap();
    // The dead process claimed position 0 for reading (stamp 1), wrote its claimer value
    // (pid | start time << 22) and bumped the head.
    set_slot_word(&q, 0, (u64::from(dead) << 32) | 1);
    set_slot_meta(&q, 0, u64::from(dead) | (12345 << 22));
    let mut v = Vec::new();
    q.try_pop_into(&mut v).unwrap(); // helps head past 0, reads "b"
    assert_eq!(v, b"b");
    assert_eq!(q.try_push(b"c"), Err(PushError::Full)); // slot 0 held by the dead reader
    assert_eq!(q.recover(), 1);
    // The release cleared the dead reader's claimer value: a next writer whose pid were the
    // same (reused) must not be judged by its start time before storing its own.
    assert_eq!(slot_meta(&q, 0), 0);
    q.push_timeout(b"c", Duration::from_secs(5)).unwrap();
    assert_eq!(q.lost_records(), 1);
    q.try_pop_into(&mut v).unwrap();
    assert_eq!(v, b"c");
}

/// A reader that died holding the last slot of a lap (capacity 3: positions 0, 1, 2, then 4):
/// the slot is released for the next lap's position 6, the head's CAS names position 4.
#[test]
fn dead_reader_at_a_lap_boundary_is_released_capacity_three() {
    let q = MpmcRing::new(3, 16).unwrap();
    let dead = dead_pid();
    let mut v = Vec::new();
    for r in [b"a", b"b", b"c"] {
        q.try_push(r).unwrap();
    }
    q.try_pop_into(&mut v).unwrap();
    q.try_pop_into(&mut v).unwrap();
    assert_eq!(v, b"b");
    // The dead process claimed position 2 (slot 2, full stamp 3) for reading.
    set_slot_word(&q, 2, (u64::from(dead) << 32) | 3);
    assert_eq!(q.try_pop_into(&mut v), Err(PopError::Empty));
    q.try_push(b"d").unwrap(); // position 4, slot 0
    q.try_push(b"e").unwrap(); // position 5, slot 1
    assert_eq!(q.try_push(b"f"), Err(PushError::Full)); // slot 2 held by the dead reader
    q.push_timeout(b"f", Duration::from_secs(5)).unwrap();
    assert_eq!(q.lost_records(), 1);
    for want in [b"d", b"e", b"f"] {
        q.try_pop_into(&mut v).unwrap();
        assert_eq!(v, want);
    }
    assert_eq!(q.pending(), 0);
}

/// Writes the ring's `tail` (`head`: `which = 1`) position (test-only corruption). The control
/// block is `#[repr(C)]` of 128-byte `CachePadded`s: config, tail, head.
fn set_position(q: &MpmcRing, which: usize, pos: u64) {
    let base = q.segment().unwrap().payload_ptr().as_ptr();
    // SAFETY: test-only: the word is inside our own segment, 8-aligned, no concurrent use.
    unsafe {
        base.add(128 * (1 + which))
            .cast::<u64>()
            .write_volatile(pos)
    };
}

/// A scribbled `tail` or `head` whose index part names no slot (possible only when the slot
/// count is not a power of two: capacity 3, index 3) is moved on, never used to reach a slot:
/// every call returns a value or an error, and `pending` stays within the capacity.
#[test]
fn scribbled_position_naming_no_slot_gives_errors_not_ub() {
    for which in [0, 1] {
        for pos in [3u64, 7, u64::MAX] {
            let q = MpmcRing::new(3, 16).unwrap();
            q.try_push(b"x").unwrap();
            set_position(&q, which, pos);
            assert!(q.pending() <= 3);
            let mut v = Vec::new();
            for _ in 0..8 {
                match q.try_push(b"y") {
                    Ok(()) | Err(PushError::Full) => {}
                    Err(e) => panic!("push: {e}"),
                }
                match q.try_pop_into(&mut v) {
                    Ok(_) | Err(PopError::Empty) => {}
                    Err(e) => panic!("pop: {e}"),
                }
                assert!(q.pending() <= 3);
            }
            match q.push_timeout(b"z", Duration::from_millis(20)) {
                Ok(()) | Err(PushError::Timeout) => {}
                Err(e) => panic!("push_timeout: {e}"),
            }
            match q.pop_into_timeout(&mut v, Duration::from_millis(20)) {
                Ok(_) | Err(PopError::Timeout) => {}
                Err(e) => panic!("pop_into_timeout: {e}"),
            }
            q.recover();
        }
    }
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
    let s = multiproc_ring::SpscRing::new(256).unwrap();
    let bytes = postcard::to_allocvec(&s).unwrap();
    let s2: multiproc_ring::SpscRing = postcard::from_bytes(&bytes).unwrap();
    assert!(s2.segment().unwrap().same_as(s.segment().unwrap()));
    drop((q, q2));
    assert!(shm_leftovers().is_empty());
}

/// The only consumer pushes a record, then try-pops: the ring holds at least its own finished
/// record, so it must never get `Empty` — even when the head slot is still being written by
/// another producer (issue 12, item 12). Other producers push large records all the time (so
/// they spend most of their time mid-write); the consumer drains the ring after each check,
/// so its push lands right behind their in-flight writes. Returns (how many of `ITERATIONS`
/// try-pops said `Empty`, how many background records were taken).
fn own_push_then_try_pop(q: &MpmcRing, flags: &Flags) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while flags.started.load(std::sync::atomic::Ordering::Acquire) < BG_PRODUCERS {
        assert!(
            Instant::now() < deadline,
            "background producers did not start"
        );
        std::thread::yield_now();
    }
    let mut v = Vec::new();
    let (mut empties, mut bg) = (0, 0);
    let take = |v: &Vec<u8>, bg: &mut u64| *bg += u64::from(v.len() == BG_RECORD);
    // At least ITERATIONS checks, and until enough background records went through (on a
    // loaded machine the producers may get little CPU at first), within a time limit.
    let mut i = 0u64;
    while i < ITERATIONS || (bg < MIN_BG && Instant::now() < deadline) {
        i += 1;
        loop {
            match q.try_push(&i.to_le_bytes()) {
                Ok(()) => break,
                Err(PushError::Full) => {
                    if q.try_pop_into(&mut v).is_ok() {
                        take(&v, &mut bg);
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        match q.try_pop_into(&mut v) {
            Ok(_) => take(&v, &mut bg),
            Err(PopError::Empty) => empties += 1,
            Err(e) => panic!("{e}"),
        }
        // Drain, so the next push lands right behind the producers' in-flight writes.
        for _ in 0..q.slots() {
            match q.try_pop_into(&mut v) {
                Ok(_) => take(&v, &mut bg),
                Err(_) => break,
            }
        }
    }
    flags.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("{i} checks, {empties} Empty, {bg} background records");
    (empties, bg)
}

/// Flags shared with the background producers (threads, or forked children: then it lives in
/// a MAP_SHARED page).
#[derive(Default)]
struct Flags {
    started: std::sync::atomic::AtomicU32,
    stop: std::sync::atomic::AtomicBool,
}

/// What the other producers do: push large records as fast as they can, but leave room (while
/// one of them is stalled mid-write at the head, the others must not fill the ring, or the
/// consumer's own push could never complete during the stall).
fn background_producer(q: &MpmcRing, flags: &Flags) {
    let rec = vec![7u8; BG_RECORD];
    flags
        .started
        .fetch_add(1, std::sync::atomic::Ordering::Release);
    while !flags.stop.load(std::sync::atomic::Ordering::Relaxed) {
        if q.pending() >= q.slots() as u64 / 2 || q.try_push(&rec).is_err() {
            std::thread::yield_now();
        }
    }
}

const ITERATIONS: u64 = 100_000;
const MIN_BG: u64 = 10_000;
const BG_RECORD: usize = 16 << 10;
const BG_PRODUCERS: u32 = 2;

fn check_own_push_outcome((empties, bg): (u64, u64)) {
    assert_eq!(
        empties, 0,
        "{empties} try_pops after an own push said Empty"
    );
    // The race was really run: background records went through the ring meanwhile.
    assert!(bg > 0, "no background record was taken");
}

#[test]
fn try_pop_after_own_push_never_says_empty_threads() {
    let q = MpmcRing::new(16, BG_RECORD).unwrap();
    let flags = Flags::default();
    let r = std::thread::scope(|s| {
        for _ in 0..BG_PRODUCERS {
            s.spawn(|| background_producer(&q, &flags));
        }
        own_push_then_try_pop(&q, &flags)
    });
    check_own_push_outcome(r);
}

#[test]
fn try_pop_after_own_push_never_says_empty_processes() {
    let q = MpmcRing::new(16, BG_RECORD).unwrap();
    let page = multiproc_shm::sys::map_shared_anon(4096).unwrap();
    // SAFETY: the page is zeroed (a valid all-zero Flags: atomics), aligned, and lives until
    // the unmap below.
    let flags = unsafe { &*page.as_ptr().cast::<Flags>() };
    let kids: Vec<_> = (0..BG_PRODUCERS)
        .map(|_| {
            fork(|| {
                background_producer(&q, flags);
                0
            })
        })
        .collect();
    let r = own_push_then_try_pop(&q, flags);
    for mut k in kids {
        let st = k
            .try_wait_timeout(Duration::from_secs(10))
            .expect("producer did not stop");
        assert_eq!(st, Exit::Code(0));
    }
    // SAFETY: the page mapped above; the children are gone and `flags` is not used again.
    unsafe { multiproc_shm::sys::unmap(page, 4096) };
    check_own_push_outcome(r);
}

/// Writes the `meta` word of slot `i` (in a full slot: `1 << 63 | len`; test-only corruption
/// through the segment).
fn set_slot_meta(q: &MpmcRing, i: usize, meta: u64) {
    let base = q.segment().unwrap().payload_ptr().as_ptr();
    let off = multiproc_ring::mpmc::control_size()
        + i * multiproc_ring::mpmc::stride_for(q.slot_size())
        + 8;
    // SAFETY: test-only: slot i's meta is inside our own segment, 8-aligned, no concurrent use.
    unsafe { base.add(off).cast::<u64>().write_volatile(meta) };
}

/// Reads the `meta` word of slot `i`.
fn slot_meta(q: &MpmcRing, i: usize) -> u64 {
    let base = q.segment().unwrap().payload_ptr().as_ptr();
    let off = multiproc_ring::mpmc::control_size()
        + i * multiproc_ring::mpmc::stride_for(q.slot_size())
        + 8;
    // SAFETY: test-only: slot i's meta is inside our own segment, 8-aligned, no concurrent use.
    unsafe { base.add(off).cast::<u64>().read_volatile() }
}

#[test]
fn slot_length_beyond_the_slot_size_is_corrupted_not_copied() {
    // Slot size 16 (packed, stride 32) and 40 (stride 64); a length past the slot, and a full
    // slot whose meta holds no length (a claimer value or garbage without the tag).
    for (slot_size, slot) in [(16usize, 0usize), (16, 1), (40, 0)] {
        for meta in [
            1u64 << 63 | (slot_size as u64 + 1),
            17,
            0,
            1 << 63 | u64::from(u32::MAX - 1),
        ] {
            let q = MpmcRing::new(4, slot_size).unwrap();
            for _ in 0..slot {
                q.try_push(b"x").unwrap();
            }
            q.try_push(b"abc").unwrap();
            set_slot_meta(&q, slot, meta);
            let mut v = Vec::new();
            for _ in 0..slot {
                q.try_pop_into(&mut v).unwrap();
                assert_eq!(v, b"x");
            }
            assert!(
                matches!(q.try_pop_into(&mut v), Err(PopError::Corrupted(_))),
                "slot size {slot_size}, slot {slot}, meta {meta:#x}"
            );
            // The slot was released: the ring goes on.
            q.try_push(b"d").unwrap();
            q.try_pop_into(&mut v).unwrap();
            assert_eq!(v, b"d");
        }
    }
}

#[test]
fn try_pop_behind_a_live_stalled_head_writer_gives_up() {
    // Position 1 claimed for writing by a live process (ourselves) that never publishes, while
    // position 2 is finished: try_pop waits for the writer, boundedly, then says Empty.
    let q = ring_behind_a_stalled_head_writer();
    let mut v = Vec::new();
    assert_eq!(q.try_pop_into(&mut v), Err(PopError::Empty));
    assert_eq!(
        q.pop_into_timeout(&mut v, Duration::from_millis(30)),
        Err(PopError::Timeout)
    );
    assert_eq!(q.lost_records(), 0);
}

/// `has_free_slot` says whether a push would find room, over laps of a 3-slot ring (and true
/// once closed); pops through handles that do not wake pushers (`set_wakes_pushers(false)`,
/// as a Queue's) still let a pusher parked in `push` through, since every park is bounded.
#[test]
fn has_free_slot_follows_room_and_a_parked_push_gets_through_without_wakes() {
    let mut q = MpmcRing::new(3, 8).unwrap();
    let mut v = Vec::new();
    for lap in 0..5u8 {
        for i in 0..3u8 {
            assert!(q.has_free_slot(), "lap {lap} slot {i}");
            q.try_push(&[lap, i]).unwrap();
        }
        assert!(!q.has_free_slot(), "lap {lap}: full");
        q.try_pop_into(&mut v).unwrap();
        assert_eq!(v, [lap, 0]);
        assert!(q.has_free_slot(), "lap {lap}: one taken");
        q.try_push(&[9]).unwrap();
        assert!(!q.has_free_slot());
        for _ in 0..3 {
            q.try_pop_into(&mut v).unwrap();
        }
    }
    q.set_wakes_pushers(false);
    for i in 0..3u8 {
        q.try_push(&[i]).unwrap();
    }
    let mut pusher = q.clone();
    pusher.set_wait_strategy(WaitStrategy::Park);
    let t = std::thread::spawn(move || {
        let r = pusher.push_timeout(b"late", Duration::from_secs(10));
        (r, pusher)
    });
    std::thread::sleep(Duration::from_millis(50));
    q.try_pop_into(&mut v).unwrap();
    let (r, _pusher) = t.join().unwrap();
    assert_eq!(r, Ok(()));
    for want in [&[1u8][..], &[2], b"late"] {
        q.try_pop_into(&mut v).unwrap();
        assert_eq!(v, want);
    }
    q.try_push(b"a").unwrap();
    q.try_push(b"b").unwrap();
    q.try_push(b"c").unwrap();
    assert!(!q.has_free_slot());
    q.close();
    assert!(q.has_free_slot(), "closed: a push decides (Disconnected)");
}
