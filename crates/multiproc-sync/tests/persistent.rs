//! Persistent named objects (issue 16, item 7): the name lives until `unlink()` (or
//! `multiproc clean --persistent`), not until the creating handle drops or its process exits,
//! as Python's `SharedMemory`.
#![allow(missing_docs)]

use multiproc_sync::{Array, CreateError, Lock, Value};
use multiproc_testutil::{fork, shm_exists, unique_name};
use std::sync::Mutex;
use std::time::Duration;

/// One test at a time: a forked child allocates, so no other test thread may hold the
/// allocator's lock at the fork.
static SERIAL: Mutex<()> = Mutex::new(());

/// A forked child creates a persistent named Value, drops its handle and exits; the parent
/// still finds the name, reads the value, and the name goes only when the parent unlinks it.
#[test]
fn a_persistent_named_value_outlives_its_creator_until_unlinked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = unique_name("persist-value");
    let n2 = name.clone();
    let mut child = fork(move || match Value::create_named_persistent(&n2, 42u64) {
        Ok(v) => {
            drop(v); // a plain named value would unlink its name here
            0
        }
        Err(_) => 3,
    });
    assert_eq!(
        child.wait_timeout(Duration::from_secs(30)),
        multiproc_testutil::Exit::Code(0)
    );
    assert!(shm_exists(&name), "the name went with its creator");
    // Neither the next create of the name nor a plain clean reclaims it (its creator is dead).
    assert!(matches!(
        Value::create_named(&name, 0u64),
        Err(CreateError::Shm(
            multiproc_shm::ShmError::AlreadyExists { .. }
        ))
    ));
    let full = format!("{}{name}", multiproc_shm::NAME_PREFIX);
    assert!(
        multiproc_shm::clean_stale(false, |n| n == full)
            .unwrap()
            .is_empty()
    );
    assert!(multiproc_shm::is_persistent_named(&full));
    // `multiproc clean --persistent` would take it (dry run here).
    assert_eq!(
        multiproc_shm::clean_stale_with(true, true, |n| n == full).unwrap(),
        vec![full.clone()]
    );

    let v = Value::<u64>::open_named(&name).unwrap();
    assert_eq!(v.load().unwrap(), 42);
    assert!(v.segment().is_persistent());
    assert!(v.unlink());
    assert!(!shm_exists(&name), "unlink left the name");
    assert!(Value::<u64>::open_named(&name).is_err());
    // The open handle still works after the unlink.
    assert_eq!(v.load().unwrap(), 42);
    assert!(!multiproc_shm::unlink_name(&name).unwrap(), "already gone");
}

/// A non-persistent named value still goes with its creating handle (unchanged behaviour).
#[test]
fn a_plain_named_value_goes_with_its_creating_handle() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = unique_name("plain-value");
    let v = Value::create_named(&name, 1u32).unwrap();
    assert!(!v.segment().is_persistent());
    drop(v);
    assert!(!shm_exists(&name));
}

/// Any named object made inside `multiproc_shm::persistent` is persistent; `unlink_name` removes
/// it by name.
#[test]
fn the_persistent_scope_makes_any_named_object_persistent() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lock_name = unique_name("persist-lock");
    let arr_name = unique_name("persist-array");
    let lock = multiproc_shm::persistent(|| Lock::create_named(&lock_name)).unwrap();
    let arr = Array::<i32>::create_named_persistent(&arr_name, &[1, 2, 3]).unwrap();
    drop(lock);
    drop(arr);
    assert!(shm_exists(&lock_name));
    assert!(shm_exists(&arr_name));
    // Outside the scope, named objects are plain again.
    let plain = unique_name("plain-lock");
    drop(Lock::create_named(&plain).unwrap());
    assert!(!shm_exists(&plain));

    let arr = Array::<i32>::open_named(&arr_name).unwrap();
    assert_eq!(arr.to_vec().unwrap(), vec![1, 2, 3]);
    assert!(arr.unlink());
    assert!(multiproc_shm::unlink_name(&lock_name).unwrap());
    assert!(!shm_exists(&lock_name));
    assert!(!shm_exists(&arr_name));
}
