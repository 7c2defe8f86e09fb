//! Arenas for every small kind (issue 19): Lock, RLock, Semaphore, BoundedSemaphore, Event,
//! small Array/RawArray in arena slots; serde handles carry one fd per arena; stale and
//! wrong-kind handles are refused; big arrays keep their own segment.
#![cfg(not(loom))]

use multiproc_shm::ShmError;
use multiproc_shm::fd_passing::collect_fds;
use multiproc_sync::{
    Arena, Array, BoundedSemaphore, Event, LockError, RLock, RawArray, Semaphore, SyncError,
};
use multiproc_sync::{Lock, arena::MAX_OBJECT};
use multiproc_testutil::{Exit, fork};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The tests of this file run one at a time: a forked child holds every arena slot its parent
/// held at the fork (issue 19's fork rule), so one test's fork would hold another test's slots
/// and change its live counts.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Serialize, Deserialize)]
struct Kit {
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    bsem: BoundedSemaphore,
    ev: Event,
    arr: Array<u32>,
    raw: RawArray<u64>,
}

fn kit(arena: &Arena) -> Kit {
    Kit {
        lock: Lock::new_in(arena).unwrap(),
        rlock: RLock::new_in(arena).unwrap(),
        sem: Semaphore::new_in(arena, 0).unwrap(),
        bsem: BoundedSemaphore::new_in(arena, 1).unwrap(),
        ev: Event::new_in(arena).unwrap(),
        arr: Array::from_slice_in(arena, &[1, 2, 3, 4]).unwrap(),
        raw: RawArray::zeroed_in(arena, 8).unwrap(),
    }
}

#[test]
fn every_small_kind_lives_in_an_arena_and_works_in_a_child_that_got_it_by_serde() {
    let _serial = serial();
    const N: usize = 200;
    let arena = Arena::new();
    let kits: Vec<Kit> = (0..N).map(|_| kit(&arena)).collect();
    let k = &kits[0];
    for h in [
        k.lock.slot_handle(),
        k.rlock.slot_handle(),
        k.sem.slot_handle(),
        k.bsem.slot_handle(),
        k.ev.slot_handle(),
        k.arr.slot_handle(),
        k.raw.slot_handle(),
    ] {
        assert!(h.is_some(), "in an arena slot");
    }
    assert_eq!(k.arr.to_vec().unwrap(), vec![1, 2, 3, 4]);
    // 7 objects x 200 in a handful of arena segments (one per size class used).
    assert!(arena.segments() <= 4, "{} segments", arena.segments());
    assert_eq!(arena.check().unwrap().live, 7 * N as u64);
    let (bytes, fds) = collect_fds(|| postcard::to_allocvec(&kits).unwrap());
    assert_eq!(
        fds.len(),
        arena.segments(),
        "one fd per arena segment, not per object"
    );
    // The parent holds every lock; the child (which only has the serde bytes) waits on them.
    let held: Vec<_> = kits.iter().map(|k| k.lock.lock().unwrap()).collect();
    let mut c = fork(|| {
        let got: Vec<Kit> = match postcard::from_bytes(&bytes) {
            Ok(v) => v,
            Err(_) => return 2,
        };
        for k in &got {
            if k.lock.try_acquire() {
                return 3; // held by the parent
            }
            let _r = k.rlock.lock().unwrap();
            let _r2 = k.rlock.lock().unwrap(); // reentrant
            k.arr.get_lock().unwrap()[0] += 10;
            k.raw.set(7, 77).unwrap();
            k.sem.release().unwrap();
            if !k.bsem.acquire_timeout(Duration::from_secs(5)) {
                return 4;
            }
            k.ev.set();
        }
        0
    });
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    drop(held);
    for k in &kits {
        assert!(k.ev.is_set());
        assert_eq!(k.sem.get_value(), 1);
        assert!(!k.bsem.try_acquire(), "the child took the unit");
        k.bsem.release().unwrap();
        assert!(k.bsem.release().is_err(), "bounded");
        assert_eq!(k.arr.get(0).unwrap(), 11);
        assert_eq!(k.raw.get(7), Some(77));
        assert!(k.lock.try_acquire());
        k.lock.release().unwrap();
    }
    drop(kits);
    assert_eq!(arena.check().unwrap().live, 0, "every slot freed");
}

#[test]
fn neighbouring_locks_never_share_a_cache_line() {
    let _serial = serial();
    let arena = Arena::new();
    let a = Lock::new_in(&arena).unwrap();
    let b = Lock::new_in(&arena).unwrap();
    let (ha, hb) = (a.slot_handle().unwrap(), b.slot_handle().unwrap());
    assert_eq!(ha.arena, hb.arena);
    assert_ne!(ha.slot, hb.slot);
    // Both in the 64-byte class: their slot indices are 64 bytes apart at least.
    let e = Event::new_in(&arena).unwrap();
    assert_eq!(
        e.slot_handle().unwrap().arena,
        ha.arena,
        "same 64-byte class"
    );
}

fn stale<T: std::fmt::Debug>(r: Result<T, impl Into<SyncError>>) -> bool {
    matches!(
        r.map_err(Into::into),
        Err(SyncError::Shm(ShmError::StaleHandle { .. }))
    )
}

#[test]
fn stale_and_wrong_kind_handles_of_every_kind_are_refused() {
    let _serial = serial();
    let arena = Arena::new();
    let k = kit(&arena);
    let lh = k.lock.slot_handle().unwrap();
    // Another kind at the same arena and slot: refused by the type tag.
    assert!(stale(RLock::open_slot(&lh)));
    assert!(stale(Event::open_slot(&lh)));
    assert!(stale(Semaphore::open_slot(&lh)));
    assert!(stale(Array::<u32>::open_slot(
        &k.raw.slot_handle().unwrap()
    )));
    assert!(stale(RawArray::<u32>::open_slot(
        &k.raw.slot_handle().unwrap()
    )));
    // Live handles open and name the same object.
    let l2 = Lock::open_slot(&lh).unwrap();
    assert!(l2.try_acquire());
    assert!(k.lock.is_locked());
    l2.release().unwrap();
    drop(l2);
    let handles = [
        k.lock.slot_handle().unwrap(),
        k.rlock.slot_handle().unwrap(),
        k.sem.slot_handle().unwrap(),
        k.ev.slot_handle().unwrap(),
        k.arr.slot_handle().unwrap(),
        k.raw.slot_handle().unwrap(),
    ];
    let bytes = postcard::to_allocvec(&k).unwrap();
    drop(k);
    assert!(stale(Lock::open_slot(&handles[0])));
    assert!(stale(RLock::open_slot(&handles[1])));
    assert!(stale(Semaphore::open_slot(&handles[2])));
    assert!(stale(Event::open_slot(&handles[3])));
    assert!(stale(Array::<u32>::open_slot(&handles[4])));
    assert!(stale(RawArray::<u64>::open_slot(&handles[5])));
    let err = postcard::from_bytes::<Kit>(&bytes).err().expect("refused");
    eprintln!("serde of a dropped kit: {err}");
    // Reused slots: still refused (new generation).
    let k2 = kit(&arena);
    let reused = [
        k2.lock.slot_handle().unwrap(),
        k2.rlock.slot_handle().unwrap(),
        k2.ev.slot_handle().unwrap(),
        k2.arr.slot_handle().unwrap(),
    ];
    assert!(
        reused.iter().any(|h| h.slot == handles[0].slot),
        "LIFO reuse"
    );
    assert!(stale(Lock::open_slot(&handles[0])));
}

#[test]
fn small_arrays_go_to_the_arena_and_big_ones_keep_their_own_segment() {
    let _serial = serial();
    let arena = Arena::new();
    // Locked head 24 B (robust mutex + length) + elements <= MAX_OBJECT (a 512-byte slot less
    // its 16-byte record); raw head 8 B.
    let locked_max = (MAX_OBJECT - 24) / 8;
    let raw_max = (MAX_OBJECT - 8) / 8;
    assert_eq!((locked_max, raw_max), (59, 61));
    assert!(Array::<u64>::fits_arena(locked_max));
    assert!(!Array::<u64>::fits_arena(locked_max + 1));
    assert!(RawArray::<u64>::fits_arena(raw_max));
    assert!(!RawArray::<u64>::fits_arena(raw_max + 1));
    let small = Array::<u64>::zeroed_in(&arena, locked_max).unwrap();
    let big = Array::<u64>::zeroed_in(&arena, locked_max + 1).unwrap();
    assert!(small.slot_handle().is_some());
    assert!(big.slot_handle().is_none(), "own segment");
    assert_eq!(small.len(), locked_max);
    assert_eq!(big.len(), locked_max + 1);
    small.set(locked_max - 1, 5).unwrap();
    assert!(small.set(locked_max, 5).is_err());
    let raw = RawArray::from_slice_in(&arena, &[7u16; 3]).unwrap();
    assert_eq!(raw.to_vec(), vec![7, 7, 7]);
    assert!(raw.slot_handle().is_some());
    // An empty array is fine too.
    let empty = RawArray::<u8>::zeroed_in(&arena, 0).unwrap();
    assert!(empty.is_empty());
    // Serde round trip of both forms.
    let back: Array<u64> = postcard::from_bytes(&postcard::to_allocvec(&small).unwrap()).unwrap();
    assert_eq!(back.get(locked_max - 1).unwrap(), 5);
    let back: Array<u64> = postcard::from_bytes(&postcard::to_allocvec(&big).unwrap()).unwrap();
    assert_eq!(back.len(), locked_max + 1);
}

#[test]
fn an_arena_array_length_scribbled_past_its_slot_is_refused_on_open() {
    let _serial = serial();
    let arena = Arena::new();
    let a = RawArray::<u64>::zeroed_in(&arena, 4).unwrap();
    let h = a.slot_handle().unwrap();
    // The head's length is the first u64 of the slot: write a length past the slot.
    // SAFETY: the length word is an atomic u64 at the start of the slot; stored atomically.
    unsafe {
        let len = &*(a
            .as_ptr()
            .cast::<u8>()
            .sub(8)
            .cast::<std::sync::atomic::AtomicU64>());
        len.store(1 << 40, std::sync::atomic::Ordering::Relaxed);
    }
    let r = RawArray::<u64>::open_slot(&h);
    assert!(
        matches!(
            r,
            Err(multiproc_sync::CreateError::Shm(
                ShmError::OutOfRange { .. }
            ))
        ),
        "{r:?}"
    );
    // The handle made before keeps its local length.
    assert_eq!(a.len(), 4);
}

#[test]
fn a_killed_holder_of_an_arena_lock_is_taken_over() {
    let _serial = serial();
    let arena = Arena::new();
    let lock = Lock::new_in(&arena).unwrap();
    let r = RLock::new_in(&arena).unwrap();
    let mut c = fork(|| {
        std::mem::forget(lock.lock().unwrap());
        std::mem::forget(r.lock().unwrap());
        // SAFETY: dies holding both, as a SIGKILL would.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(c.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    assert!(matches!(
        lock.lock_timeout(Duration::from_secs(10)),
        Err(LockError::OwnerDied)
    ));
    assert!(lock.lock().is_ok());
    let (_g, died) = r.lock_recover_timeout(Duration::from_secs(10)).unwrap();
    assert!(died);
}

#[test]
fn default_constructors_place_small_kinds_in_the_process_arena() {
    let _serial = serial();
    let k = Kit {
        lock: Lock::new().unwrap(),
        rlock: RLock::new().unwrap(),
        sem: Semaphore::new(2).unwrap(),
        bsem: BoundedSemaphore::new(1).unwrap(),
        ev: Event::new().unwrap(),
        arr: Array::from_slice(&[1, 2, 3]).unwrap(),
        raw: RawArray::zeroed(4).unwrap(),
    };
    assert!(k.lock.slot_handle().is_some());
    assert!(k.rlock.slot_handle().is_some());
    assert!(k.sem.slot_handle().is_some());
    assert!(k.bsem.slot_handle().is_some());
    assert!(k.ev.slot_handle().is_some());
    assert!(k.arr.slot_handle().is_some());
    assert!(k.raw.slot_handle().is_some());
    // All in one arena segment per class: the lock's and the event's are the same segment.
    assert_eq!(
        k.lock.slot_handle().unwrap().arena,
        k.ev.slot_handle().unwrap().arena
    );
    // The `_segment` constructors keep one segment per object.
    assert!(Lock::new_segment().unwrap().slot_handle().is_none());
    assert!(RLock::new_segment().unwrap().slot_handle().is_none());
    assert!(Semaphore::new_segment(1).unwrap().slot_handle().is_none());
    assert!(
        BoundedSemaphore::new_segment(1)
            .unwrap()
            .slot_handle()
            .is_none()
    );
    assert!(Event::new_segment().unwrap().slot_handle().is_none());
    assert!(
        Array::<u8>::zeroed_segment(4)
            .unwrap()
            .slot_handle()
            .is_none()
    );
    assert!(
        RawArray::<u8>::from_slice_segment(&[1])
            .unwrap()
            .slot_handle()
            .is_none()
    );
    // An array too big for the largest class falls back to its own segment.
    let big = Array::<u64>::zeroed(MAX_OBJECT / 8).unwrap();
    assert!(big.slot_handle().is_none());
    // They work, and in a forked child (which holds their slots from the fork on).
    assert!(k.lock.acquire(true));
    k.lock.release().unwrap();
    let mut child = fork(|| {
        let ok = k.lock.acquire_timeout(Duration::from_secs(5))
            && k.sem.acquire_timeout(Duration::from_secs(5));
        k.arr.set(0, 7).unwrap();
        k.raw.set(3, 9).unwrap();
        k.ev.set();
        k.lock.release().unwrap();
        i32::from(!ok)
    });
    assert_eq!(child.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    assert!(k.ev.is_set());
    assert_eq!(k.arr.get(0).unwrap(), 7);
    assert_eq!(k.raw.get(3), Some(9));
    assert!(k.sem.acquire_timeout(Duration::from_millis(1)));
    assert!(!k.sem.acquire_timeout(Duration::from_millis(1)));
    // Serde of the default kinds: arena slot handles, opened in this process again.
    let back: Kit = postcard::from_bytes(&postcard::to_allocvec(&k).unwrap()).unwrap();
    assert_eq!(back.arr.get(0).unwrap(), 7);
    assert!(back.ev.is_set());
}
