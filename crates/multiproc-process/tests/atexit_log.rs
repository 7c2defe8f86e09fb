//! Issue 16, item 1: the at-exit join of non-daemon children says, after about a second, which
//! child it is waiting for (it used to hang silently).
#![allow(missing_docs)]

use multiproc_process::{Process, task};
use multiproc_testutil::{Exit, fork};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

multiproc_process::init_before_main!();

#[task(crate = multiproc_process)]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn atexit_join_names_the_child_it_waits_for() {
    let mut fds = [0; 2];
    // SAFETY: valid out-array of two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // The child starts a process and leaves with `exit` (not testutil's `_exit`): the at-exit
    // handlers must run.
    let mut child = fork(|| {
        // SAFETY: fds from pipe() above; stderr becomes the pipe's write end.
        unsafe {
            libc::dup2(fds[1], 2);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        let code = match Process::builder().name("slowpoke").spawn(sleep_ms, 2500) {
            Ok(p) => {
                let _ = writeln!(std::io::stderr(), "started pid {}", p.pid().unwrap_or(0));
                drop(p);
                0
            }
            Err(_) => 2,
        };
        // Runs the at-exit join: it waits ~2.5 s for slowpoke, and says so after 1 s.
        std::process::exit(code)
    });
    // SAFETY: our copy of the write end, closed once.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is open and owned by nothing else in this process.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut text = String::new();
    let _ = r.read_to_string(&mut text); // EOF once the helper and slowpoke are gone
    assert_eq!(
        child.wait_timeout(Duration::from_secs(60)),
        Exit::Code(0),
        "{text}"
    );
    let child_pid = text
        .lines()
        .find_map(|l| l.strip_prefix("started pid "))
        .expect("child started")
        .trim()
        .to_string();
    assert!(
        text.contains("waiting for non-daemon child slowpoke")
            && text.contains(&format!("(pid {child_pid})")),
        "stderr was: {text}"
    );
}
