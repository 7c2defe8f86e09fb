//! Errors that `?` takes (issue 16, item 4): every public error of the crate is
//! `'static + Send + Sync + std::error::Error`, and a dead holder's lock is still reachable
//! through the `*_recover` calls.
#![cfg(not(loom))]

use multiproc_sync::{
    AccessError, ArenaError, Array, BarrierCreateError, BarrierError, Condition, ConditionError,
    CreateError, Event, Lock, LockError, LockReleaseError, MutexError, RLock, RLockError, RawArray,
    SemaphoreError, SyncError, Value,
};
use multiproc_testutil::fork;
use std::error::Error;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn is_boxable_error<E: Error + Send + Sync + 'static>() {}

#[test]
fn every_public_error_is_static_send_sync() {
    is_boxable_error::<LockError>();
    is_boxable_error::<MutexError>();
    is_boxable_error::<SyncError>();
    is_boxable_error::<BarrierError>();
    is_boxable_error::<BarrierCreateError>();
    is_boxable_error::<ConditionError>();
    is_boxable_error::<LockReleaseError>();
    is_boxable_error::<RLockError>();
    is_boxable_error::<SemaphoreError>();
    is_boxable_error::<CreateError>();
    is_boxable_error::<AccessError>();
    is_boxable_error::<ArenaError>();
}

/// Issue 18: each operation's own error, and `?` into the union. Python: `IndexError` from
/// `Array.__getitem__` (test_array's out-of-range access), `ValueError` on a slice assignment
/// of the wrong length.
#[test]
fn array_access_and_creation_have_their_own_errors_that_convert_into_sync_error() {
    let a = Array::<u32>::zeroed(2).unwrap();
    assert_eq!(
        a.get(2).unwrap_err(),
        AccessError::IndexOutOfRange { index: 2, len: 2 }
    );
    let r = RawArray::<u32>::zeroed(2).unwrap();
    assert_eq!(
        r.copy_from_slice(&[1, 2, 3]).unwrap_err(),
        AccessError::LengthMismatch { got: 3, len: 2 }
    );
    let e = Array::<u64>::zeroed(usize::MAX / 4).unwrap_err();
    assert!(
        matches!(e, CreateError::TooLarge { len, elem: 8 } if len == usize::MAX / 4),
        "{e:?}"
    );
    fn union(a: &Array<u32>) -> Result<u32, SyncError> {
        Ok(a.get(5)?)
    }
    assert!(matches!(
        union(&a).unwrap_err(),
        SyncError::Access(AccessError::IndexOutOfRange { index: 5, len: 2 })
    ));
    fn create() -> Result<Array<u64>, SyncError> {
        Ok(Array::<u64>::zeroed(usize::MAX / 4)?)
    }
    assert!(matches!(
        create().unwrap_err(),
        SyncError::Create(CreateError::TooLarge { elem: 8, .. })
    ));
}

/// The README idiom, in a function returning `Box<dyn Error>` (E0515 before: the error held a
/// guard borrowing `v`).
fn bump_all(v: &Value<i64>, a: &Array<u32>, l: &Lock, r: &RLock) -> Result<i64, Box<dyn Error>> {
    *v.get_lock()? += 1;
    a.get_lock()?[0] += 1;
    drop(l.lock()?);
    drop(r.lock()?);
    let c = Condition::new()?;
    drop(c.lock()?);
    Ok(v.load()?)
}

/// The same into `SyncError` (what a library built on this crate would return).
fn bump_sync(v: &Value<i64>) -> Result<i64, SyncError> {
    *v.get_lock()? += 1;
    Ok(*v.get_lock()?)
}

#[test]
fn question_mark_takes_lock_errors_into_box_dyn_error() {
    let v = Value::new(0i64).unwrap();
    let a = Array::<u32>::zeroed(1).unwrap();
    assert_eq!(
        bump_all(&v, &a, &Lock::new().unwrap(), &RLock::new().unwrap()).unwrap(),
        1
    );
    assert_eq!(bump_sync(&v).unwrap(), 2);
    assert_eq!(a.get(0).unwrap(), 1);
}

#[test]
fn barrier_creation_errors_convert_into_sync_error() {
    fn make() -> Result<multiproc_sync::Barrier, SyncError> {
        Ok(multiproc_sync::Barrier::new(0)?)
    }
    let e = make().unwrap_err();
    assert_eq!(e.to_string(), "parties must be 1..=64, got 0");
}

/// A child dies holding the value's lock: `get_lock()?` stops with an OwnerDied error that says
/// what to do (nothing held, so it boxes), and the lock is usable again afterwards.
#[test]
fn get_lock_of_a_dead_holder_is_an_error_that_boxes() {
    let v = Value::new(7i64).unwrap();
    let held = Event::new().unwrap();
    let mut c = fork(|| {
        let mut g = v.get_lock().unwrap();
        *g = 8; // half of an update
        held.set();
        std::mem::forget(g);
        loop {
            std::thread::sleep(SEC);
        }
    });
    assert!(held.wait_timeout(10 * SEC));
    c.kill();
    fn bump(v: &Value<i64>) -> Result<(), Box<dyn Error>> {
        *v.get_lock_timeout(10 * SEC)? += 1;
        Ok(())
    }
    let e = bump(&v).unwrap_err();
    assert_eq!(
        e.downcast_ref::<LockError>(),
        Some(&LockError::OwnerDied),
        "{e}"
    );
    assert!(e.to_string().contains("get_lock_recover"), "{e}");
    // The lock was released again: the next locker gets it normally.
    assert_eq!(*v.get_lock_timeout(SEC).unwrap(), 8);
}

/// The recovery path: `get_lock_recover` takes a dead holder's lock and says so.
#[test]
fn get_lock_recover_takes_a_dead_holders_lock_and_reports_it() {
    let v = Value::new(7i64).unwrap();
    let a = Array::<u8>::zeroed(2).unwrap();
    let held = Event::new().unwrap();
    let mut c = fork(|| {
        let mut g = v.get_lock().unwrap();
        *g = 8;
        let mut ga = a.get_lock().unwrap();
        ga[0] = 1;
        held.set();
        std::mem::forget((g, ga));
        loop {
            std::thread::sleep(SEC);
        }
    });
    assert!(held.wait_timeout(10 * SEC));
    c.kill();
    let (mut g, died) = v.get_lock_recover_timeout(10 * SEC).unwrap();
    assert!(died);
    assert_eq!(*g, 8);
    *g = 0; // repaired
    drop(g);
    let (g, died) = v.get_lock_recover().unwrap();
    assert!(!died, "a clean hand-over after the repair");
    drop(g);
    let (ga, died) = a.get_lock_recover_timeout(10 * SEC).unwrap();
    assert!(died);
    assert_eq!(&ga[..], &[1, 0]);
}
