//! The Fork start method (its own binary, one test: forking from a busy multi-threaded test
//! harness is what the process crate warns about).

mod support;

use multiproc_pool::{Pool, TaskError};
use std::time::Duration;
use support::*;

#[test]
fn fork_workers_map_apply_and_survive_a_kill() {
    let p = Pool::builder()
        .processes(2)
        .maxtasksperchild(50)
        .start_method(multiproc_process::StartMethod::Fork)
        .build()
        .unwrap();
    assert_eq!(p.map(sqr, 0..1000u64).unwrap()[999], 999 * 999);
    assert_eq!(p.apply(mul, (3, 4)).unwrap(), 12);
    let long = p.apply_async(sleep_ms, 60_000).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for pid in p.worker_pids() {
        // SAFETY: plain syscall on our own pool's workers.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(matches!(
        long.get_timeout(Duration::from_secs(60)),
        Err(TaskError::WorkerLost { .. })
    ));
    let v: Vec<u64> = (0..200u64).map(|i| p.apply(sqr, i).unwrap()).collect();
    assert_eq!(v[199], 199 * 199);
    p.close();
    p.join_timeout(Duration::from_secs(60)).unwrap();
}
