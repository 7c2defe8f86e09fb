//! The seed's Manager example as a test (seed 001: `with lock: d['count'] -= 1` in many
//! processes; the Python version uses 300 processes, this one 50 for speed): the counter ends
//! at exactly zero, with the separate lock and with `update`.

mod common;

use common::{Exit, fork};
use multiproc_collections::Manager;
use std::time::Duration;

const PROCS: i64 = 50;

#[test]
fn fifty_processes_decrement_a_dict_counter_under_a_lock_to_zero() {
    let m = Manager::new();
    let lock = m.lock().unwrap();
    let d = m.dict_from([("count".to_string(), PROCS)]).unwrap();
    let kids: Vec<_> = (0..PROCS)
        .map(|_| {
            let (d, lock) = (d.clone(), lock.clone());
            fork(move || {
                let Ok(_g) = lock.lock() else { return 2 };
                let Ok(Some(c)) = d.get("count") else {
                    return 3;
                };
                i32::from(d.insert(&"count".to_string(), &(c - 1)).is_err())
            })
        })
        .collect();
    for mut k in kids {
        assert_eq!(k.wait_timeout(Duration::from_secs(60)), Exit::Code(0));
    }
    assert_eq!(d.get("count").unwrap(), Some(0));
    assert_eq!(d.items().unwrap(), vec![("count".to_string(), 0)]);
}

#[test]
fn fifty_processes_decrement_with_update_to_zero_and_append_to_a_list() {
    let m = Manager::new();
    let d = m.dict_from([("count".to_string(), PROCS * 100)]).unwrap();
    let l = m.list::<u32>().unwrap();
    let kids: Vec<_> = (0..PROCS)
        .map(|i| {
            let (d, l) = (d.clone(), l.clone());
            fork(move || {
                for _ in 0..100 {
                    if d.update("count", |c| c.unwrap_or(0) - 1).is_err() {
                        return 2;
                    }
                }
                i32::from(l.push(&(i as u32)).is_err())
            })
        })
        .collect();
    for mut k in kids {
        assert_eq!(k.wait_timeout(Duration::from_secs(60)), Exit::Code(0));
    }
    assert_eq!(d.get("count").unwrap(), Some(0));
    let mut got = l.to_vec().unwrap();
    got.sort();
    assert_eq!(got, (0..PROCS as u32).collect::<Vec<_>>());
}
