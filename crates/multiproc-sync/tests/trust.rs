//! The trust model (issue 12) for the sync objects: safe code cannot make this process touch
//! memory it no longer maps, a geometry field rewritten by another process is refused on open
//! (and ignored by handles made before), and a corrupted lock word never makes a call with a
//! timeout hang.
#![allow(clippy::disallowed_types)]

use multiproc_shm::{HEADER_SIZE, ShmError};
use multiproc_sync::{
    Array, Barrier, BoundedSemaphore, Condition, CreateError, Event, Lock, LockError, MutexError,
    RLock, RawArray, RawValue, Semaphore, SemaphoreError, Value,
};
use multiproc_testutil::fork;
use std::time::Duration;

const MS: Duration = Duration::from_millis(5);

/// Item 1 of issue 12. On main (glibc robust mutex), a forgotten guard left the mutex on the
/// thread's robust list; after the segment was unmapped, the next robust lock of the thread wrote
/// a list pointer into whatever was mapped there next (seen: a fresh RawArray's word changed).
#[test]
fn forgotten_guard_then_dropped_object_never_writes_into_fresh_memory() {
    for round in 0..50 {
        let v = Value::new(0u64).unwrap();
        std::mem::forget(v.get_lock().unwrap());
        drop(v);
        // Own segments: the dropped array's mapping goes away (an arena keeps its mapping).
        let a = Array::<u64>::zeroed_segment(8).unwrap();
        std::mem::forget(a.get_lock().unwrap());
        drop(a);
        // Fresh objects, likely mapped where the dropped ones were.
        let fresh: Vec<RawArray<u64>> = (0..4)
            .map(|_| RawArray::zeroed_segment(64).unwrap())
            .collect();
        let fresh_v: Vec<RawValue<u64>> = (0..4).map(|_| RawValue::new(0).unwrap()).collect();
        // Lock other objects many times: each lock/unlock is where glibc used to write.
        let other = Value::new(0u64).unwrap();
        for _ in 0..200 {
            *other.get_lock().unwrap() += 1;
        }
        let other_a = Array::<u64>::zeroed(4).unwrap();
        for _ in 0..200 {
            other_a.get_lock().unwrap()[0] += 1;
        }
        for f in &fresh {
            assert!(
                f.to_vec().iter().all(|x| *x == 0),
                "round {round}: a fresh RawArray changed"
            );
        }
        for f in &fresh_v {
            assert_eq!(f.load(), 0, "round {round}: a fresh RawValue changed");
        }
    }
}

/// The leaked guard keeps the mapping (and the lock) alive: a clone made before the drop still
/// reads the memory, and another thread finds the lock taken over from a holder that is gone
/// only once that thread has exited.
#[test]
fn forgotten_guard_keeps_the_mapping_and_a_thread_exit_frees_the_lock() {
    let v = Value::new(5u32).unwrap();
    let v2 = v.clone();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(v2.get_lock().unwrap()));
    });
    drop(v2);
    // The holder thread has exited: the next locker takes the lock over.
    match v.get_lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied) => {}
        Ok(_) => panic!("expected OwnerDied"),
        Err(e) => panic!("expected OwnerDied, got {e}"),
    }
}

fn scribble_payload(seg: &multiproc_shm::Segment, at: usize, bytes: &[u8]) {
    seg.scribble(HEADER_SIZE + at, bytes);
}

#[test]
fn array_length_rewritten_is_refused_on_open_and_ignored_by_old_handles() {
    for (i, bad) in [0u64, 7, 9, 1 << 40, u64::MAX].into_iter().enumerate() {
        // Own segments: the scribbles hit each array's segment at fixed offsets.
        let a = Array::<u32>::zeroed_segment(8).unwrap();
        // LockedHead: mutex (16 bytes), then len.
        scribble_payload(a.segment(), 16, &bad.to_le_bytes());
        let e = Array::<u32>::open_handle(&a.handle()).unwrap_err();
        assert!(
            matches!(e, CreateError::Shm(ShmError::OutOfRange { .. })),
            "{i}: {e}"
        );
        assert_eq!(a.len(), 8);
        a.set(7, 1).unwrap();
        assert!(a.set(8, 1).is_err());
        assert_eq!(a.to_vec().unwrap().len(), 8);

        let r = RawArray::<u16>::zeroed_segment(8).unwrap();
        scribble_payload(r.segment(), 0, &bad.to_le_bytes());
        let e = RawArray::<u16>::open_handle(&r.handle()).unwrap_err();
        assert!(
            matches!(e, CreateError::Shm(ShmError::OutOfRange { .. })),
            "{i}: {e}"
        );
        assert_eq!(r.to_vec().len(), 8);
        assert!(r.get(8).is_none());
    }
}

#[test]
fn barrier_parties_rewritten_is_refused_on_open_and_ignored_by_old_handles() {
    for bad in [0u32, 65, u32::MAX] {
        let b = Barrier::new(2).unwrap();
        // BarrierState: word, waiters, parties.
        scribble_payload(b.segment(), 8, &bad.to_le_bytes());
        let e = Barrier::open_handle(&b.handle()).unwrap_err();
        assert!(matches!(e, ShmError::OutOfRange { .. }), "{e}");
        assert_eq!(b.parties(), 2);
        assert!(b.n_waiting() <= 2);
        assert!(b.wait_timeout(MS).is_err());
    }
}

#[test]
fn semaphore_bound_rewritten_does_not_change_an_open_handle() {
    let s = BoundedSemaphore::new_segment(1).unwrap();
    // SemState: state u64, seq, waiters, bound, bounded.
    scribble_payload(s.segment(), 16, &1000u32.to_le_bytes());
    assert_eq!(s.release(), Err(SemaphoreError::OverRelease));
}

/// Writes `bytes` over the first `len` payload bytes of a segment, then checks every call with
/// a timeout returns, in a child watched by a 10 s limit (a hang fails the test).
fn each_call_returns(prep: impl Fn(u32) + Send, calls: impl Fn() + Send) {
    let mut c = fork(|| {
        for pattern in [
            0xFFFF_FFFFu32,
            1,
            0x8000_0000,
            0x003F_FFFF,
            std::process::id(),
        ] {
            prep(pattern);
            calls();
        }
        0
    });
    c.join_ok_within(Duration::from_secs(10));
}

#[test]
fn corrupted_lock_words_never_hang_a_call_with_a_timeout() {
    // Own segments: the scribbles below hit each object's segment at fixed offsets.
    let v = Value::new_segment(0u64).unwrap();
    let a = Array::<u8>::zeroed_segment(4).unwrap();
    let l = Lock::new_segment().unwrap();
    let r = RLock::new_segment().unwrap();
    let s = Semaphore::new_segment(1).unwrap();
    let e = Event::new_segment().unwrap();
    let c = Condition::with_rlock(RLock::new_segment().unwrap()).unwrap();
    let b = Barrier::new(3).unwrap();
    each_call_returns(
        |p| {
            let w = p.to_le_bytes();
            for seg in [
                v.segment(),
                a.segment(),
                l.segment(),
                r.segment(),
                s.segment(),
                e.segment(),
                c.segment(),
                b.segment(),
            ] {
                for off in (0..64).step_by(4) {
                    scribble_payload(seg, off, &w);
                }
            }
        },
        || {
            drop(v.get_lock_timeout(MS));
            drop(v.try_get_lock());
            drop(a.get_lock_timeout(MS));
            drop(l.lock_timeout(MS));
            let _ = l.acquire_timeout(MS);
            let _ = l.release();
            drop(r.lock_timeout(MS));
            let _ = r.acquire_timeout(MS);
            let _ = r.release();
            let _ = s.acquire_timeout(MS);
            drop(s.acquire_guard_timeout(MS));
            let _ = s.release();
            let _ = e.wait_timeout(MS);
            e.clear();
            if let Ok(_g) = c.lock_timeout(MS) {
                let _ = c.wait_timeout(MS);
                let _ = c.notify_all();
            }
            let _ = b.wait_timeout(MS);
            b.reset();
        },
    );
}

#[test]
fn a_lock_word_naming_a_dead_thread_is_taken_over() {
    let v = Value::new_segment(3u32).unwrap();
    // A thread id that surely is not alive (above any pid_max is not possible: use a thread
    // that has exited).
    // SAFETY: gettid has no preconditions.
    let tid = std::thread::spawn(|| unsafe { libc::gettid() } as u32)
        .join()
        .unwrap();
    scribble_payload(v.segment(), 0, &tid.to_le_bytes());
    match v.get_lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied) => {}
        Ok(_) => panic!("expected OwnerDied"),
        Err(e) => panic!("expected OwnerDied, got {e}"),
    }
    // A word naming a live thread of another process (pid 1) is a held lock: timeout, no hang.
    let w = Value::new_segment(0u8).unwrap();
    scribble_payload(w.segment(), 0, &1u32.to_le_bytes());
    assert!(matches!(
        w.get_lock_timeout(MS),
        Err(LockError::Failed(MutexError::Timeout))
    ));
    assert!(matches!(
        w.try_get_lock(),
        Err(LockError::Failed(MutexError::WouldBlock))
    ));
}

/// A process that takes a condition's lock while we wait and never gives it back delays a timed
/// wait by at most the grace, and the error says the lock is not held. Before, the re-acquire
/// had no deadline and `wait_timeout` hung forever.
#[test]
fn condition_wait_timeout_returns_when_another_process_keeps_the_lock() {
    let c = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let g = c.lock().unwrap();
    let (c2, f2) = (c.clone(), flag.clone());
    let mut child = fork(move || {
        let _g = c2.lock();
        f2.store(1);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_eq!(
        c.wait_timeout(Duration::from_millis(50)),
        Err(multiproc_sync::condition::ConditionError::LockNotReacquired)
    );
    assert_eq!(flag.load(), 1);
    drop(g);
    child.kill();
}
