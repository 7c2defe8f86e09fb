//! Single-process behaviour of SharedDict, SharedList, SharedLock and Manager: every operation,
//! capacity limits, compaction, handles, named objects, type checks on open.

mod common;

use common::{shm_exists, unique_name};
use multiproc_collections::{
    CollectionOptions, CreateError, Error, Manager, ReadError, SharedDict, SharedList, SharedLock,
    WriteError,
};
use multiproc_sync::{LockError, MutexError};
use std::collections::BTreeMap;

#[test]
fn dict_insert_get_remove_contains_len() {
    let d: SharedDict<String, Vec<u32>> = SharedDict::with_capacity(64).unwrap();
    assert!(d.is_empty().unwrap());
    d.insert(&"a".into(), &vec![1, 2]).unwrap();
    d.insert(&"b".into(), &vec![]).unwrap();
    assert_eq!(d.get("a").unwrap(), Some(vec![1, 2]));
    assert_eq!(d.get("zz").unwrap(), None);
    assert!(d.contains_key("b").unwrap());
    assert_eq!(d.len().unwrap(), 2);
    d.insert(&"a".into(), &vec![9]).unwrap();
    assert_eq!(d.len().unwrap(), 2);
    assert_eq!(d.get("a").unwrap(), Some(vec![9]));
    assert_eq!(d.remove("a").unwrap(), Some(vec![9]));
    assert_eq!(d.remove("a").unwrap(), None);
    assert!(!d.contains_key("a").unwrap());
    assert_eq!(d.len().unwrap(), 1);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.get("b").unwrap(), None);
    assert_eq!(d.verify().unwrap(), 0);
}

#[test]
fn dict_update_is_read_modify_write() {
    let d: SharedDict<String, i64> = SharedDict::new().unwrap();
    assert_eq!(d.update("count", |v| v.unwrap_or(300) - 1).unwrap(), 299);
    assert_eq!(d.update("count", |v| v.unwrap() - 1).unwrap(), 298);
    assert_eq!(d.get("count").unwrap(), Some(298));
}

#[test]
fn dict_snapshot_keys_values_items() {
    let d: SharedDict<u32, String> = SharedDict::with_capacity(100).unwrap();
    for i in 0..50 {
        d.insert(&i, &format!("v{i}")).unwrap();
    }
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items.len(), 50);
    assert_eq!(items[7], (7, "v7".to_string()));
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, (0..50).collect::<Vec<_>>());
    assert_eq!(d.values().unwrap().len(), 50);
}

#[test]
fn dict_get_lock_offers_every_operation() {
    let d: SharedDict<String, i64> = SharedDict::new().unwrap();
    {
        let mut g = d.get_lock().unwrap();
        g.insert(&"x".into(), &1).unwrap();
        g.update("x", |v| v.unwrap() + 1).unwrap();
        assert_eq!(g.get("x").unwrap(), Some(2));
        assert!(g.contains_key("x").unwrap());
        assert_eq!(g.len().unwrap(), 1);
        assert_eq!(g.items().unwrap(), vec![("x".to_string(), 2)]);
        // Relocking from the holding thread is refused, not a hang.
        assert!(matches!(
            d.get("x"),
            Err(ReadError::Lock(MutexError::Deadlock))
        ));
        assert!(matches!(
            d.try_get_lock(),
            Err(LockError::Failed(MutexError::WouldBlock))
                | Err(LockError::Failed(MutexError::Deadlock))
        ));
        assert_eq!(g.remove("x").unwrap(), Some(2));
    }
    assert!(d.is_empty().unwrap());
}

#[test]
fn dict_full_at_capacity_and_accepts_overwrites() {
    let d: SharedDict<u32, u32> = SharedDict::with_capacity(10).unwrap();
    for i in 0..10 {
        d.insert(&i, &i).unwrap();
    }
    assert!(matches!(
        d.insert(&10, &10),
        Err(WriteError::Full {
            what: "entries",
            capacity: 10
        })
    ));
    d.insert(&3, &33).unwrap();
    d.remove(&4).unwrap();
    d.insert(&10, &10).unwrap();
    assert_eq!(d.len().unwrap(), 10);
    assert_eq!(d.verify().unwrap(), 10);
}

#[test]
fn dict_compacts_the_arena_under_many_overwrites_and_removes() {
    let d: SharedDict<u64, String> =
        SharedDict::with_options(64, CollectionOptions { bytes: Some(2048) }).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..2000u64 {
        let k = round % 37;
        if round % 5 == 0 {
            assert_eq!(d.remove(&k).unwrap(), model.remove(&k));
        } else {
            let v = "y".repeat((round % 23) as usize);
            d.insert(&k, &v).unwrap();
            model.insert(k, v);
        }
    }
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items, model.into_iter().collect::<Vec<_>>());
    d.verify().unwrap();
}

#[test]
fn dict_arena_full_is_a_clear_error_and_changes_nothing() {
    let d: SharedDict<u32, Vec<u8>> =
        SharedDict::with_options(8, CollectionOptions { bytes: Some(256) }).unwrap();
    d.insert(&1, &vec![7; 100]).unwrap();
    let e = d.insert(&2, &vec![7; 200]).unwrap_err();
    assert!(
        matches!(
            e,
            WriteError::Full { what: "arena", .. } | WriteError::TooLarge { .. }
        ),
        "{e}"
    );
    assert!(matches!(
        d.insert(&3, &vec![0; 10_000]),
        Err(WriteError::TooLarge { .. })
    ));
    assert_eq!(d.get(&1).unwrap(), Some(vec![7; 100]));
    assert_eq!(d.len().unwrap(), 1);
    d.verify().unwrap();
}

#[test]
fn dict_large_keys_and_values_round_trip() {
    let d: SharedDict<String, String> = SharedDict::with_options(
        4,
        CollectionOptions {
            bytes: Some(100_000),
        },
    )
    .unwrap();
    let k = "k".repeat(5000);
    let v = "v".repeat(20_000);
    d.insert(&k, &v).unwrap();
    assert_eq!(d.get(k.as_str()).unwrap(), Some(v));
}

#[test]
fn bad_capacity_is_an_error() {
    assert!(matches!(
        SharedDict::<u8, u8>::with_capacity(0),
        Err(CreateError::BadParameter(_))
    ));
    assert!(matches!(
        SharedList::<u8>::with_capacity(0),
        Err(CreateError::BadParameter(_))
    ));
    assert!(SharedDict::<u8, u8>::with_capacity(usize::MAX).is_err());
}

#[test]
fn list_push_pop_get_set_insert_remove() {
    let l: SharedList<String> = SharedList::with_capacity(8).unwrap();
    assert_eq!(l.pop().unwrap(), None);
    for s in ["a", "b", "c"] {
        l.push(&s.into()).unwrap();
    }
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.get(1).unwrap().as_deref(), Some("b"));
    assert_eq!(l.get(3).unwrap(), None);
    l.set(1, &"B".into()).unwrap();
    assert!(matches!(
        l.set(5, &"x".into()),
        Err(WriteError::IndexOutOfRange { index: 5, len: 3 })
    ));
    l.insert(0, &"first".into()).unwrap();
    l.insert(2, &"mid".into()).unwrap();
    l.insert(5, &"last".into()).unwrap();
    assert!(matches!(
        l.insert(9, &"x".into()),
        Err(WriteError::IndexOutOfRange { .. })
    ));
    assert_eq!(l.to_vec().unwrap(), ["first", "a", "mid", "B", "c", "last"]);
    assert_eq!(l.remove(2).unwrap(), "mid");
    assert_eq!(l.remove(4).unwrap(), "last");
    assert!(matches!(
        l.remove(4),
        Err(WriteError::IndexOutOfRange { .. })
    ));
    assert_eq!(l.pop().unwrap().as_deref(), Some("c"));
    assert_eq!(l.to_vec().unwrap(), ["first", "a", "B"]);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
}

#[test]
fn list_full_and_compaction() {
    let l: SharedList<u64> =
        SharedList::with_options(4, CollectionOptions { bytes: Some(128) }).unwrap();
    for i in 0..4 {
        l.push(&i).unwrap();
    }
    assert!(matches!(
        l.push(&9),
        Err(WriteError::Full {
            what: "entries",
            capacity: 4
        })
    ));
    assert!(matches!(
        l.insert(0, &9),
        Err(WriteError::Full {
            what: "entries",
            ..
        })
    ));
    for r in 0..500 {
        l.set(r % 4, &(r as u64)).unwrap();
    }
    assert_eq!(l.to_vec().unwrap(), vec![496, 497, 498, 499]);
}

#[test]
fn named_dict_opens_by_name_checks_types_and_unlinks() {
    let name = unique_name("dict");
    {
        let d: SharedDict<String, i64> = SharedDict::create_named(&name, 16).unwrap();
        d.insert(&"count".into(), &300).unwrap();
        let o: SharedDict<String, i64> = SharedDict::open_named(&name).unwrap();
        assert_eq!(o.get("count").unwrap(), Some(300));
        assert!(matches!(
            SharedDict::<String, u8>::open_named(&name),
            Err(CreateError::Shm(multiproc_shm::ShmError::WrongType { .. }))
        ));
        assert!(matches!(
            SharedList::<String>::open_named(&name),
            Err(CreateError::Shm(multiproc_shm::ShmError::WrongKind { .. }))
        ));
        assert!(shm_exists(&name));
    }
    assert!(!shm_exists(&name));
    assert!(matches!(
        SharedDict::<String, i64>::open_named(&name),
        Err(CreateError::Shm(multiproc_shm::ShmError::NotFound { .. }))
    ));
}

#[test]
fn named_list_and_lock() {
    let name = unique_name("list");
    let l: SharedList<u8> = SharedList::create_named(&name, 4).unwrap();
    l.push(&5).unwrap();
    assert_eq!(
        SharedList::<u8>::open_named(&name)
            .unwrap()
            .to_vec()
            .unwrap(),
        vec![5]
    );
    let lname = unique_name("lock");
    let lock = SharedLock::create_named(&lname).unwrap();
    let other = SharedLock::open_named(&lname).unwrap();
    let g = lock.lock().unwrap();
    assert!(other.try_lock().is_err());
    drop(g);
    assert!(other.try_lock().is_ok());
}

#[test]
fn handles_serialize_as_segment_handles() {
    let d: SharedDict<String, i64> = SharedDict::new().unwrap();
    d.insert(&"k".into(), &1).unwrap();
    let bytes = postcard::to_allocvec(&d).unwrap();
    let back: SharedDict<String, i64> = postcard::from_bytes(&bytes).unwrap();
    back.update("k", |v| v.unwrap() + 1).unwrap();
    assert_eq!(d.get("k").unwrap(), Some(2));
    assert!(postcard::from_bytes::<SharedDict<String, u8>>(&bytes).is_err());
    let l: SharedList<i32> = SharedList::new().unwrap();
    let back: SharedList<i32> = postcard::from_bytes(&postcard::to_allocvec(&l).unwrap()).unwrap();
    back.push(&3).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![3]);
}

#[test]
fn manager_makes_every_object() {
    let m = Manager::new();
    let d = m.dict_from([("count".to_string(), 300i64)]).unwrap();
    assert_eq!(d.get("count").unwrap(), Some(300));
    let l = m.list_from([1u8, 2, 3]).unwrap();
    assert_eq!(l.len().unwrap(), 3);
    let v = m.value(5i32).unwrap();
    assert_eq!(v.load().unwrap(), 5);
    let a = m.array(&[1.5f64, 2.5]).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![1.5, 2.5]);
    let lock = m.lock().unwrap();
    drop(lock.lock().unwrap());
    let _: SharedDict<u8, u8> = m.dict().unwrap();
    let _: SharedList<u8> = m.list().unwrap();
}

/// Issue 16, item 4: lock errors hold no guard, so `?` takes them into `Box<dyn Error>` (and
/// the crate's `Error`); the `*_recover` calls give the guard and whether a holder died.
#[test]
fn question_mark_takes_collection_lock_errors_into_box_dyn_error() {
    fn use_all(
        d: &SharedDict<String, u32>,
        l: &SharedList<u32>,
        lock: &SharedLock,
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let g = d.get_lock()?;
        let n = g.len()?;
        drop(g);
        drop(l.get_lock()?);
        drop(lock.lock()?);
        let (g, died) = d.get_lock_recover()?;
        assert!(!died);
        drop(g);
        let (g, died) = l.get_lock_recover()?;
        assert!(!died);
        drop(g);
        let (g, died) = lock.lock_recover()?;
        assert!(!died);
        drop(g);
        Ok(n)
    }
    fn is_boxable_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_boxable_error::<Error>();
    is_boxable_error::<LockError>();
    let d = SharedDict::with_capacity(4).unwrap();
    d.insert(&"k".to_string(), &1).unwrap();
    let l = SharedList::with_capacity(4).unwrap();
    let lock = SharedLock::new().unwrap();
    assert_eq!(use_all(&d, &l, &lock).unwrap(), 1);
}

/// Issue 18: each kind of call has its own error (creation, read, change), every one converts
/// into the crate's `Error` with `?`, and the union keeps the cause reachable.
#[test]
fn errors_are_per_operation_and_convert_into_the_union() {
    let create: Result<SharedList<u8>, CreateError> = SharedList::with_capacity(0);
    assert!(matches!(create, Err(CreateError::BadParameter(_))));
    let d: SharedDict<u8, u8> = SharedDict::with_capacity(1).unwrap();
    d.insert(&1, &1).unwrap();
    let write: Result<(), WriteError> = d.insert(&2, &2);
    assert!(matches!(
        write,
        Err(WriteError::Full {
            what: "entries",
            ..
        })
    ));
    let l: SharedList<u8> = SharedList::with_capacity(2).unwrap();
    assert!(matches!(
        l.remove(0),
        Err(WriteError::IndexOutOfRange { index: 0, len: 0 })
    ));
    {
        let _g = d.get_lock().unwrap();
        let read: Result<Option<u8>, ReadError> = d.get(&1);
        assert!(matches!(read, Err(ReadError::Lock(MutexError::Deadlock))));
        // A change reads first: its lock failure is the same variant of WriteError.
        assert!(matches!(
            d.remove(&1),
            Err(WriteError::Lock(MutexError::Deadlock))
        ));
    }
    fn mixed(d: &SharedDict<u8, u8>) -> Result<usize, Error> {
        let _ = d.get(&1)?; // ReadError
        d.insert(&1, &9)?; // WriteError
        let _l: SharedList<u8> = SharedList::with_capacity(0)?; // CreateError
        Ok(0)
    }
    let e = mixed(&d).unwrap_err();
    assert!(
        matches!(e, Error::Create(CreateError::BadParameter(_))),
        "{e:?}"
    );
    assert_eq!(d.get(&1).unwrap(), Some(9));
    fn locked(d: &SharedDict<u8, u8>) -> Result<(), Error> {
        let _g = d.try_get_lock()?; // LockError
        Ok(())
    }
    let _g = d.get_lock().unwrap();
    assert!(matches!(locked(&d), Err(Error::Lock(_))));
}

/// `open_handle_timeout(h, Duration::MAX)` (a user's "forever") opens as the plain open does:
/// no panic on `Instant` overflow in the segment layer's wait for Ready.
#[test]
fn open_with_duration_max_timeout_opens() {
    let d: SharedDict<u8, u8> = SharedDict::with_capacity(4).unwrap();
    d.insert(&1, &2).unwrap();
    let o =
        SharedDict::<u8, u8>::open_handle_timeout(&d.handle(), std::time::Duration::MAX).unwrap();
    assert_eq!(o.get(&1).unwrap(), Some(2));
}
