//! Issue 16, item 8: the Pool's texts for an unregistered task (the same as `Process`'s), a lost
//! worker (no `Some(9)`) and arguments postcard refuses (named by type).
#![allow(missing_docs)]

use multiproc_pool::{ArgumentsError, Pool, PoolError, SubmitError, TaskError};
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

#[multiproc_process::task(crate = multiproc_process)]
fn byte_len(x: Vec<u8>) -> usize {
    x.len()
}

/// The error and its sources, one per line (what an error reporter prints).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!("\n{c}");
        cur = c.source();
    }
    s
}

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
    let PoolError::Submit(SubmitError::Arguments(ArgumentsError::Encode { ty, .. })) = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*ty, "messages::Unencodable");
    let s = chain(&e);
    assert_eq!(
        s,
        "bad task arguments\nencoding messages::Unencodable with postcard failed\n\
         Serde Serialization Error",
    );
    // The worker is untouched: the next task runs.
    assert_eq!(pool.apply(byte_len, vec![1, 2, 3]).unwrap(), 3);
}

#[test]
fn arguments_over_the_message_limit_are_refused_with_their_length() {
    let pool = Pool::builder().processes(1).build().unwrap();
    let max = multiproc_channel::PipeOptions::default().max_message;
    let e = pool.apply_async(byte_len, vec![7u8; max]).unwrap_err();
    match e {
        SubmitError::Arguments(ArgumentsError::TooLarge { len, max: m }) => {
            assert_eq!(m, max);
            assert!(len > max, "{len} {max}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.apply(byte_len, vec![7u8; 1 << 20]).unwrap(), 1 << 20);
}
