//! Starting and joining (or dropping) processes leaves no fd behind in the parent. Its own test
//! binary: fd counts of a process whose other tests run in parallel would be noise.
#![allow(missing_docs)]

use multiproc_process::{Process, StartMethod, task};

multiproc_process::init_before_main!();

#[task(crate = multiproc_process)]
fn one() -> u8 {
    1
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn start_join_and_drop_leave_no_fds_behind() {
    // Warm up: the fork server's socket and the spawner thread exist from here on.
    for m in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        Process::builder()
            .start_method(m)
            .spawn(one, ())
            .unwrap()
            .join()
            .unwrap();
    }
    let before = open_fds();
    for _ in 0..20 {
        for m in [
            StartMethod::Spawn,
            StartMethod::ForkServer,
            StartMethod::Fork,
        ] {
            let mut p = Process::builder().start_method(m).spawn(one, ()).unwrap();
            assert_eq!(p.join().unwrap(), 1);
            let q = Process::builder().start_method(m).spawn(one, ()).unwrap();
            drop(q);
        }
    }
    // Dropped children are reaped (and their fds closed) by active_children (a fork-server
    // child's exit code arrives from the server a moment after its exit).
    let t = std::time::Instant::now();
    while !multiproc_process::active_children().is_empty() || open_fds() != before {
        assert!(
            t.elapsed().as_secs() < 30,
            "fds: {} before, {} now",
            before,
            open_fds()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
