//! Issue 16, item 8: the Pool's texts for an unregistered task (the same as `Process`'s), a lost
//! worker (no `Some(9)`) and arguments postcard refuses (named by type).
#![allow(missing_docs)]

use multiproc_pool::{Pool, PoolError, SubmitError, TaskError};
use multiproc_process::{Process, StartError};
use serde::{Serialize, Serializer};

multiproc_process::init_before_main!();

#[derive(serde::Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused on purpose"))
    }
}

#[multiproc_process::task(crate = multiproc_process)]
fn takes_unencodable(_x: Unencodable) {}

fn not_a_task(x: u64) -> u64 {
    x
}

#[test]
fn unregistered_task_has_one_text_in_process_and_pool() {
    let pool = Pool::builder().processes(1).build().unwrap();
    let pe = pool.apply(not_a_task, 1).unwrap_err();
    assert!(
        matches!(pe, PoolError::Submit(SubmitError::TaskNotRegistered(_))),
        "{pe}"
    );
    let e = Process::spawn(not_a_task, 1).unwrap_err();
    assert!(matches!(e, StartError::TaskNotRegistered(_)), "{e}");
    assert_eq!(pe.to_string(), e.to_string());
}

#[test]
fn worker_lost_says_signal_without_debug_formatting() {
    let e = TaskError::WorkerLost {
        pid: 42,
        signal: Some(9),
        exitcode: Some(-9),
    };
    assert_eq!(
        e.to_string(),
        "worker 42 was lost (killed by signal 9) while running the task"
    );
    let e = TaskError::WorkerLost {
        pid: 42,
        signal: None,
        exitcode: Some(3),
    };
    assert_eq!(
        e.to_string(),
        "worker 42 was lost (exit status 3) while running the task"
    );
}

#[test]
fn unencodable_arguments_are_named_by_type() {
    let pool = Pool::builder().processes(1).build().unwrap();
    let e = pool.apply(takes_unencodable, Unencodable).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("encoding a task argument (messages::Unencodable) with postcard failed"),
        "{s}"
    );
}
