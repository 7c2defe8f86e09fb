//! Value / Array across real processes: locked increments, a lock holder SIGKILLed mid-update,
//! and Python conformance items 41-44 (python-reference.md section C).

mod common;

use common::{Exit, fork};
use multiproc::{Array, LockError, MutexError, RawArray, RawValue, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn two_children_million_increments_each_end_at_two_million() {
    let v = Value::new(0i64).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| {
            let v = v.clone();
            fork(move || {
                for _ in 0..1_000_000 {
                    match v.get_lock() {
                        Ok(mut g) => *g += 1,
                        Err(_) => return 3,
                    }
                }
                0
            })
        })
        .collect();
    for mut k in kids {
        assert_eq!(k.wait_timeout(LONG), Exit::Code(0));
    }
    assert_eq!(v.load().unwrap(), 2_000_000);
}

#[test]
fn holder_sigkilled_mid_update_gives_owner_died_then_locking_continues() {
    let v = Value::new([0u64; 2]).unwrap();
    let ready = RawValue::new(0u32).unwrap();
    let (v2, ready2) = (v.clone(), ready.clone());
    // The child takes the lock, half-updates the pair, signals, and sleeps holding it.
    let mut child = fork(move || {
        let mut g = match v2.get_lock() {
            Ok(g) => g,
            Err(_) => return 3,
        };
        g[0] = 7;
        ready2.store(1);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    while ready.load() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        v.try_get_lock(),
        Err(LockError::Failed(MutexError::WouldBlock))
    ));
    child.kill();

    // The next locker is told, gets the guard, sees the half-update and repairs it.
    let mut g = match v.get_lock_recover_timeout(Duration::from_secs(10)) {
        Ok((g, true)) => g,
        Ok(_) => panic!("expected OwnerDied, got a plain lock"),
        Err(e) => panic!("expected OwnerDied, got {e}"),
    };
    assert_eq!(*g, [7, 0]);
    g[1] = 7;
    drop(g);

    // Normal locking continues, in this process and in others.
    assert_eq!(v.load().unwrap(), [7, 7]);
    let v3 = v.clone();
    fork(move || {
        for _ in 0..1000 {
            match v3.get_lock() {
                Ok(mut g) => g[0] += 1,
                Err(_) => return 4,
            }
        }
        0
    })
    .join_ok();
    assert_eq!(v.load().unwrap(), [1007, 7]);
}

#[test]
fn relocking_from_the_same_thread_is_an_error_not_a_hang() {
    let v = Value::new(1u32).unwrap();
    let _g = v.get_lock().unwrap();
    assert!(matches!(
        v.get_lock(),
        Err(LockError::Failed(MutexError::Deadlock))
    ));
}

#[test]
fn lock_timeout_elapses_while_another_process_holds_it() {
    let v = Value::new(0u8).unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let (v2, flag2) = (v.clone(), flag.clone());
    let mut child = fork(move || {
        let _g = v2.get_lock();
        flag2.store(1);
        while flag2.load() != 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        0
    });
    while flag.load() != 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = std::time::Instant::now();
    assert!(matches!(
        v.get_lock_timeout(Duration::from_millis(100)),
        Err(LockError::Failed(MutexError::Timeout))
    ));
    assert!(t.elapsed() >= Duration::from_millis(90));
    flag.store(2);
    assert_eq!(child.wait_timeout(LONG), Exit::Code(0));
    assert!(v.get_lock().is_ok());
}

/// Mirrors test_value / test_rawvalue: a child's writes are visible for i, d, h, q and c.
#[test]
fn child_writes_are_visible_for_each_type_code() {
    let i = Value::new(25i32).unwrap();
    let d = Value::new(1.0f64 / 3.0).unwrap();
    let h = Value::new(-(1i16 << 14)).unwrap();
    let q = Value::new(-(1i64 << 40)).unwrap();
    let c = Value::new(b'x').unwrap();
    let ri = RawValue::new(25i32).unwrap();
    let rd = RawValue::new(1.0f64 / 3.0).unwrap();
    let (i2, d2, h2, q2, c2, ri2, rd2) = (
        i.clone(),
        d.clone(),
        h.clone(),
        q.clone(),
        c.clone(),
        ri.clone(),
        rd.clone(),
    );
    fork(move || {
        let ok = i2.store(i2.load().unwrap() * 2).is_ok()
            && d2.store(d2.load().unwrap() * 2.0).is_ok()
            && h2.store(h2.load().unwrap() * 2).is_ok()
            && q2.store(q2.load().unwrap() * 2).is_ok()
            && c2.store(b'y').is_ok();
        ri2.store(ri2.load() * 2);
        rd2.store(rd2.load() * 2.0);
        if ok { 0 } else { 1 }
    })
    .join_ok();
    assert_eq!(i.load().unwrap(), 50);
    assert_eq!(d.load().unwrap(), 2.0 / 3.0);
    assert_eq!(h.load().unwrap(), i16::MIN);
    assert_eq!(q.load().unwrap(), -(1i64 << 41));
    assert_eq!(c.load().unwrap(), b'y');
    assert_eq!(ri.load(), 50);
    assert_eq!(rd.load(), 2.0 / 3.0);
}

/// Mirrors test_getobj_getlock: lock=True objects have a working lock, a held lock excludes
/// others; lock=False (`RawValue`/`RawArray`) objects have none (no `get_lock` method at all, a
/// compile-time fact) and still share their data.
#[test]
fn locked_objects_have_a_lock_and_raw_objects_share_without_one() {
    let v = Value::new(5i32).unwrap();
    let a = Array::<i32>::zeroed(3).unwrap();
    {
        let _gv = v.get_lock().unwrap();
        let _ga = a.get_lock().unwrap();
        let (v2, a2) = (v.clone(), a.clone());
        fork(move || {
            let held = v2.try_get_lock().is_err() && a2.try_get_lock().is_err();
            if held { 0 } else { 1 }
        })
        .join_ok();
    }
    let rv = RawValue::new(1u64).unwrap();
    let ra = RawArray::<u64>::zeroed(2).unwrap();
    let (rv2, ra2) = (rv.clone(), ra.clone());
    fork(move || {
        rv2.store(9);
        if ra2.set(1, 8).is_err() {
            return 1;
        }
        0
    })
    .join_ok();
    assert_eq!((rv.load(), ra.to_vec()), (9, vec![0, 8]));
}

/// Mirrors test_array: indexing and slices work across processes.
#[test]
fn array_indexing_and_slices_work_across_processes() {
    let seq = [681i32, -35, 67, 12, -13, 5, 0, 3, -5, 7];
    let a = Array::from_slice(&seq).unwrap();
    assert_eq!(a.len(), seq.len());
    assert_eq!(a.get(3).unwrap(), 12);
    assert_eq!(a.get_lock().unwrap()[2..5], seq[2..5]);
    let a2 = a.clone();
    fork(move || {
        let Ok(mut g) = a2.get_lock() else { return 1 };
        for x in g.iter_mut() {
            *x *= 2;
        }
        g[0..2].copy_from_slice(&[1, 2]);
        0
    })
    .join_ok();
    let mut want: Vec<i32> = seq.iter().map(|x| x * 2).collect();
    want[0] = 1;
    want[1] = 2;
    assert_eq!(a.to_vec().unwrap(), want);
    assert!(matches!(
        a.get(10),
        Err(multiproc::AccessError::IndexOutOfRange { index: 10, len: 10 })
    ));
    assert!(a.set(11, 0).is_err());
}

/// Mirrors test_array_from_size: `Array('i', 10)` is zeroed.
#[test]
fn array_from_size_is_zeroed() {
    let a = Array::<i32>::zeroed(10).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![0; 10]);
    let r = RawArray::<f64>::zeroed(10).unwrap();
    assert_eq!(r.to_vec(), vec![0.0; 10]);
    assert!(Array::<u8>::zeroed(0).unwrap().is_empty());
}

#[test]
fn handles_serialize_and_reopen_the_same_memory() {
    let v = Value::new(3u32).unwrap();
    let a = Array::<u16>::from_slice(&[1, 2, 3]).unwrap();
    let bytes = postcard::to_allocvec(&(v.clone(), a.clone())).unwrap();
    let (v2, a2): (Value<u32>, Array<u16>) = postcard::from_bytes(&bytes).unwrap();
    v2.store(4).unwrap();
    a2.set(0, 9).unwrap();
    assert_eq!(v.load().unwrap(), 4);
    assert_eq!(a.to_vec().unwrap(), vec![9, 2, 3]);
    // The type travels with the handle: a Value<u32> cannot come back as a Value<f32>.
    let vb = postcard::to_allocvec(&v).unwrap();
    assert!(postcard::from_bytes::<Value<f32>>(&vb).is_err());
    assert!(postcard::from_bytes::<Array<u32>>(&vb).is_err());
}

#[test]
fn named_value_is_shared_by_name_and_unlinked_when_its_creator_drops_it() {
    let name = common::unique_name("named-value");
    let v = Value::create_named(&name, 10i64).unwrap();
    let name2 = name.clone();
    fork(move || match Value::<i64>::open_named(&name2) {
        Ok(o) => {
            if o.store(11).is_ok() {
                0
            } else {
                1
            }
        }
        Err(_) => 2,
    })
    .join_ok();
    assert_eq!(v.load().unwrap(), 11);
    assert!(common::shm_exists(&name));
    drop(v);
    assert!(!common::shm_exists(&name), "segment left in /dev/shm");
}
