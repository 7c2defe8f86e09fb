//! Dict and list across real processes: a child opens a named dict by name, a child receives a
//! handle serialized as bytes, and ports of CPython's `_TestContainers.test_dict` /
//! `test_list` (Lib/test/_test_multiprocessing.py) where the child does the writing.

mod common;

use common::{Exit, fork, unique_name};
use multiproc_collections::{Manager, SharedDict, SharedList};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn child_opens_a_named_dict_by_name_and_writes() {
    let name = unique_name("xdict");
    let d: SharedDict<String, u64> = SharedDict::create_named(&name, 64).unwrap();
    let n2 = name.clone();
    let mut child = fork(move || {
        let Ok(o) = SharedDict::<String, u64>::open_named(&n2) else {
            return 2;
        };
        for i in 0..10u64 {
            if o.insert(&format!("k{i}"), &(i * i)).is_err() {
                return 3;
            }
        }
        0
    });
    assert_eq!(child.wait_timeout(T), Exit::Code(0));
    assert_eq!(d.len().unwrap(), 10);
    assert_eq!(d.get("k9").unwrap(), Some(81));
}

#[test]
fn handle_serialized_to_bytes_reaches_a_child() {
    let l: SharedList<String> = SharedList::with_capacity(8).unwrap();
    let bytes = postcard::to_allocvec(&l).unwrap();
    let mut child = fork(move || {
        let Ok(l2) = postcard::from_bytes::<SharedList<String>>(&bytes) else {
            return 2;
        };
        i32::from(l2.push(&"from the child".to_string()).is_err())
    });
    assert_eq!(child.wait_timeout(T), Exit::Code(0));
    assert_eq!(l.to_vec().unwrap(), vec!["from the child".to_string()]);
}

/// CPython `_TestContainers.test_dict`: `d[i] = chr(i)` for i in 65..70, then
/// `d.copy() == {i: chr(i)}`, sorted keys, values, items.
#[test]
fn test_dict_port_child_fills_parent_reads() {
    let d = Manager::new().dict::<u32, char>().unwrap();
    let d2 = d.clone();
    let mut child = fork(move || {
        for i in 65..70u32 {
            if d2.insert(&i, &char::from_u32(i).unwrap()).is_err() {
                return 2;
            }
        }
        0
    });
    assert_eq!(child.wait_timeout(T), Exit::Code(0));
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, (65..70).collect::<Vec<_>>());
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, vec!['A', 'B', 'C', 'D', 'E']);
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(
        items,
        (65..70u32)
            .map(|i| (i, char::from_u32(i).unwrap()))
            .collect::<Vec<_>>()
    );
}

/// CPython `_TestContainers.test_list` (the parts with a Rust equivalent): `list(range(10))`,
/// append, indexing, item assignment, pop, insert.
#[test]
fn test_list_port_child_edits_parent_reads() {
    let a = Manager::new().list_from(0..10i64).unwrap();
    assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
    let a2 = a.clone();
    let mut child = fork(move || {
        let ok = a2.push(&10).is_ok()
            && a2.set(0, &100).is_ok()
            && a2.pop().ok() == Some(Some(10))
            && a2.insert(1, &-1).is_ok()
            && a2.remove(5).ok() == Some(4);
        i32::from(!ok)
    });
    assert_eq!(child.wait_timeout(T), Exit::Code(0));
    assert_eq!(a.to_vec().unwrap(), vec![100, -1, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(a.get(0).unwrap(), Some(100));
    assert_eq!(a.len().unwrap(), 10);
}
