//! `set_start_method` is process-global, so it gets its own test binary.
#![allow(missing_docs)]

use multiproc_process::{
    Process, StartMethod, StartMethodAlreadySet, get_all_start_methods, get_start_method,
    set_start_method, task,
};

multiproc_process::init_before_main!();

#[task(crate = multiproc_process)]
fn parent_pid_seen() -> u32 {
    // Under fork the child's parent is us; the value only proves the task ran.
    multiproc_process::parent_process()
        .map(|p| p.pid())
        .unwrap_or(0)
}

/// Python: a second `set_start_method` raises RuntimeError unless `force=True`.
#[test]
fn second_set_start_method_is_an_error_unless_forced() {
    assert_eq!(get_start_method(), StartMethod::Spawn);
    assert_eq!(get_all_start_methods().len(), 3);
    set_start_method(StartMethod::ForkServer, false).unwrap();
    assert!(matches!(
        set_start_method(StartMethod::Fork, false),
        Err(StartMethodAlreadySet(StartMethod::ForkServer))
    ));
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    let mut p = Process::spawn(parent_pid_seen, ()).unwrap();
    assert_eq!(p.join().unwrap(), std::process::id());
    set_start_method(StartMethod::Fork, true).unwrap();
    assert_eq!(get_start_method(), StartMethod::Fork);
    let mut p = Process::spawn(parent_pid_seen, ()).unwrap();
    assert_eq!(p.join().unwrap(), std::process::id());
}
