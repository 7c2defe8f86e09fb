//! A program whose `main` does not call `multiproc::init()`: starting a spawned child must fail
//! with a clear error, never hang. This test binary deliberately has no `init_before_main!()`,
//! so a spawned child runs libtest's `main` (these same tests) instead of the task.
#![allow(missing_docs)]

use multiproc_process::{Process, StartError, task};
use std::time::Duration;

#[task(crate = multiproc_process)]
fn square(x: u64) -> u64 {
    x * x
}

/// In the (init-less) child: behave as the parent asked through `NO_INIT_MODE`.
fn if_child_behave() {
    if std::env::var_os("MULTIPROC_CHILD").is_none() {
        return;
    }
    // Starting a process from a child that skipped init() is refused at once (no fork bomb).
    let refused = matches!(
        Process::spawn(square, 2),
        Err(StartError::InitMissingInChild)
    );
    match std::env::var("NO_INIT_MODE").as_deref() {
        Ok("hang") => std::thread::sleep(Duration::from_secs(300)),
        _ => std::process::exit(if refused { 0 } else { 3 }),
    }
}

#[test]
fn child_main_without_init_that_exits_is_a_handshake_error() {
    if_child_behave();
    let e = Process::builder()
        .env("NO_INIT_MODE", "exit")
        .spawn(square, 3)
        .unwrap_err();
    match e {
        StartError::HandshakeEof { exitcode } => assert_eq!(exitcode, Some(0)),
        other => panic!("{other:?}"),
    }
    assert!(e_msg().contains("multiproc::init()"));
}

fn e_msg() -> String {
    StartError::HandshakeEof { exitcode: None }.to_string()
}

#[test]
fn child_main_without_init_that_runs_on_times_out_and_is_killed() {
    if_child_behave();
    let t = std::time::Instant::now();
    let e = Process::builder()
        .env("NO_INIT_MODE", "hang")
        .handshake_timeout(Duration::from_secs(2))
        .spawn(square, 3)
        .unwrap_err();
    assert!(matches!(e, StartError::InitNotCalled(_)), "{e:?}");
    assert!(e.to_string().contains("multiproc::init()"));
    assert!(t.elapsed() >= Duration::from_millis(1900));
    assert!(multiproc_process::active_children().is_empty());
}
