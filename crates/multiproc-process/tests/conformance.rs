//! Python conformance items 1-10 (python-reference.md section C, "Process"), with real
//! processes. Each test names the test of CPython's Lib/test/_test_multiprocessing.py it mirrors.
#![allow(missing_docs)]

use multiproc_process::{
    JoinError, NotRunning, Process, StartMethod, StillRunning, active_children, current_process,
    parent_process, task,
};
use multiproc_shm::{Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, TypeFingerprint};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

multiproc_process::init_before_main!();

const LONG: Duration = Duration::from_secs(30);

#[task(crate = multiproc_process)]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[task(crate = multiproc_process)]
fn whoami() -> (String, u32, bool, Option<u32>) {
    let me = current_process();
    (
        me.name,
        me.pid,
        me.daemon,
        parent_process().map(|p| p.pid()),
    )
}

/// test_process: unstarted -> not alive, exitcode None; running -> in active_children;
/// joined -> exitcode 0 and gone from active_children; the child knows its name and parent.
#[test]
fn test_process_lifecycle_and_active_children() {
    let mut p = Process::builder()
        .name("worker-x")
        .target(whoami, ())
        .unwrap();
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.pid(), None);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let (name, child_pid, daemon, parent) = p.join().unwrap();
    assert_eq!(name, "worker-x");
    assert_eq!(child_pid, pid);
    assert!(!daemon);
    assert_eq!(parent, Some(std::process::id()));
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(!active_children().iter().any(|c| c.pid == pid));

    let mut q = Process::spawn(sleep_ms, 300).unwrap();
    let qpid = q.pid().unwrap();
    assert!(q.is_alive());
    assert!(active_children().iter().any(|c| c.pid == qpid));
    assert_eq!(q.join().unwrap(), 300);
    assert!(!active_children().iter().any(|c| c.pid == qpid));
}

#[task(crate = multiproc_process)]
fn sum_list(v: Vec<i64>) -> i64 {
    v.iter().sum()
}

#[task(crate = multiproc_process)]
fn sum_three(a: i64, b: i64, c: i64) -> i64 {
    a + b + c
}

/// test_args_argument: arguments as a list or as a tuple of parameters behave the same.
#[test]
fn test_args_argument_list_or_tuple() {
    let mut a = Process::spawn(sum_list, vec![1, 2, 3]).unwrap();
    let mut b = Process::spawn(sum_three, (1, 2, 3)).unwrap();
    assert_eq!(a.join().unwrap(), 6);
    assert_eq!(b.join().unwrap(), 6);
}

#[task(crate = multiproc_process)]
fn daemon_tries_child() -> (bool, String) {
    let daemon = current_process().daemon;
    let inherited = Process::builder().target(whoami, ()).unwrap().daemon();
    let err = match Process::spawn(whoami, ()) {
        Ok(_) => "started".to_string(),
        Err(e) => format!("{e}"),
    };
    (daemon && inherited, err)
}

/// test_daemon_argument: the daemon flag is inherited from the current process; the argument
/// overrides it. (And, as in Python, a daemonic process may not start children.)
#[test]
fn test_daemon_argument_inherited_and_overridden() {
    let p = Process::builder().target(whoami, ()).unwrap();
    assert!(
        !p.daemon(),
        "main process is not a daemon: children default to non-daemon"
    );
    let p = Process::builder().daemon(true).target(whoami, ()).unwrap();
    assert!(p.daemon());
    let mut d = Process::builder()
        .daemon(true)
        .spawn(daemon_tries_child, ())
        .unwrap();
    let (daemon_and_inherited, err) = d.join().unwrap();
    assert!(daemon_and_inherited);
    assert!(err.contains("daemonic processes are not allowed"), "{err}");
}

/// test_terminate: join(0) and join with a negative-free zero timeout return at once;
/// terminate gives exitcode -SIGTERM.
#[test]
fn test_terminate_gives_minus_sigterm() {
    for method in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        let mut p = Process::builder()
            .start_method(method)
            .spawn(sleep_ms, 60_000)
            .unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(
            p.join_timeout(Duration::ZERO),
            Err(JoinError::Timeout)
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.terminate().unwrap();
        match p.join_timeout(LONG) {
            Err(JoinError::NoResult { exitcode }) => assert_eq!(exitcode, -libc::SIGTERM),
            other => panic!("{method:?}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(-libc::SIGTERM), "{method:?}");
        assert!(!p.is_alive());
    }
}

/// test_kill: kill gives exitcode -SIGKILL.
#[test]
fn test_kill_gives_minus_sigkill() {
    for method in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        let mut p = Process::builder()
            .start_method(method)
            .spawn(sleep_ms, 60_000)
            .unwrap();
        p.kill().unwrap();
        assert!(matches!(
            p.join_timeout(LONG),
            Err(JoinError::NoResult { exitcode }) if exitcode == -libc::SIGKILL
        ));
        assert_eq!(p.exitcode(), Some(-libc::SIGKILL), "{method:?}");
    }
}

/// test_sentinel: the sentinel before start is an error; it is ready after the child exits.
#[test]
fn test_sentinel_before_start_errors_and_is_ready_after_exit() {
    let mut p = Process::new(sleep_ms, 200).unwrap();
    assert!(matches!(p.sentinel(), Err(NotRunning::NotStarted)));
    p.start().unwrap();
    let fd = p.sentinel().unwrap().as_raw_fd();
    assert!(!poll(fd, 0), "not ready while running");
    assert!(poll(fd, 30_000), "ready after exit");
    assert_eq!(p.join().unwrap(), 200);
}

fn poll(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

/// test_close: close() on a live process is an error; after it ended close works, and then
/// join is an error.
#[test]
fn test_close_live_is_error_then_join_is_error() {
    let mut p = Process::spawn(sleep_ms, 60_000).unwrap();
    assert!(matches!(p.close(), Err(StillRunning)));
    p.terminate().unwrap();
    let _ = p.join();
    assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    p.close().unwrap();
    assert!(matches!(p.join(), Err(JoinError::Closed)));
    assert!(matches!(p.sentinel(), Err(NotRunning::Closed)));
    assert!(!p.is_alive());
    p.close().unwrap(); // idempotent, as in Python
}

#[task(crate = multiproc_process)]
fn exit_with(code: i32) {
    std::process::exit(code)
}

#[task(crate = multiproc_process)]
fn panics(msg: String) -> u32 {
    panic!("{msg}")
}

/// test_sys_exit: exit(1/0/8) gives exitcodes 1/0/8 (Rust's exit takes an int: Python's
/// True/False/None map to 1/0/0), and an uncaught error (a panic) gives 1 with its message.
#[test]
fn test_sys_exit_codes_and_panic() {
    for (code, want) in [(1, 1), (0, 0), (8, 8)] {
        let mut p = Process::spawn(exit_with, code).unwrap();
        assert!(matches!(p.join(), Err(JoinError::NoResult { exitcode }) if exitcode == want));
        assert_eq!(p.exitcode(), Some(want));
    }
    let mut p = Process::spawn(panics, "boom 42".to_string()).unwrap();
    match p.join() {
        Err(JoinError::Panicked { message }) => assert_eq!(message, "boom 42"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));
}

fn raw_segment(words: usize) -> Segment {
    let spec = SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u64>(), words * 8, 8);
    Segment::create_anonymous(&spec, |ptr, len| {
        // SAFETY: the fresh payload is ours, `len` bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        Ok(())
    })
    .unwrap()
}

fn words(seg: &Segment) -> &[AtomicU64] {
    // SAFETY: the payload is 8-aligned, payload_len bytes, and only accessed atomically.
    unsafe {
        std::slice::from_raw_parts(
            seg.payload_ptr().as_ptr().cast::<AtomicU64>(),
            seg.payload_len() / 8,
        )
    }
}

fn open(h: &SegmentHandle) -> Segment {
    Segment::open_handle(
        h,
        &Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u64>()),
    )
    .unwrap()
}

#[task(crate = multiproc_process)]
fn threads_then_return(h: SegmentHandle) -> u32 {
    let seg = open(&h);
    let w = words(&seg);
    std::thread::scope(|s| {
        for i in 0..2 {
            let w = &w;
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                w[i].store(i as u64 + 1, Ordering::SeqCst);
            });
        }
    });
    2
}

/// test_wait_for_threads, in Rust terms: a task returns (and its process exits) only after the
/// threads it scoped have finished, so their writes to shared memory are all visible after join.
/// (Detached std threads die with the process at exit, as they do at the end of Rust's `main`.)
#[test]
fn test_wait_for_threads_scoped() {
    let seg = raw_segment(2);
    let mut p = Process::spawn(threads_then_return, seg.handle()).unwrap();
    assert_eq!(p.join().unwrap(), 2);
    assert_eq!(words(&seg)[0].load(Ordering::SeqCst), 1);
    assert_eq!(words(&seg)[1].load(Ordering::SeqCst), 2);
}

/// An fd that serializes as its number and registers itself to be passed on to the child.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
struct PassFd(RawFd);
impl serde::Serialize for PassFd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        multiproc_shm::fd_passing::serialize_fd(&self.0, s)
    }
}

#[task(crate = multiproc_process)]
fn report_parent_status(w: PassFd) {
    let parent = parent_process().expect("a child has a parent");
    let say = |alive: bool| {
        let b = [if alive { b'A' } else { b'N' }];
        // SAFETY: writing one byte to the pipe we were given.
        unsafe { libc::write(w.0, b.as_ptr().cast(), 1) };
    };
    say(parent.is_alive());
    parent.join_timeout(Duration::from_secs(30));
    say(parent.is_alive());
}

#[task(crate = multiproc_process)]
fn create_grandchild(w: PassFd) {
    let g = Process::spawn(report_parent_status, w).unwrap();
    std::mem::forget(g);
    std::thread::sleep(Duration::from_secs(300));
}

/// test_parent_process: a grandchild sees its parent alive, then detects its death.
#[test]
fn test_parent_process_grandchild_detects_parent_death() {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut p = Process::spawn(create_grandchild, PassFd(w.as_raw_fd())).unwrap();
    drop(w);
    let mut b = [0u8; 1];
    let read1 = |b: &mut [u8; 1]| {
        assert!(
            poll(r.as_fd().as_raw_fd(), 30_000),
            "no word from the grandchild"
        );
        // SAFETY: one byte into b.
        unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) }
    };
    assert_eq!(read1(&mut b), 1);
    assert_eq!(b[0], b'A', "parent alive");
    p.terminate().unwrap();
    let _ = p.join_timeout(LONG);
    assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    assert_eq!(read1(&mut b), 1);
    assert_eq!(b[0], b'N', "parent not alive");
}

#[task(crate = multiproc_process)]
fn nested_names() -> (String, String, Option<u32>) {
    let me = current_process();
    let mut g = Process::spawn(whoami, ()).unwrap();
    let (gname, _gpid, _daemon, gparent) = g.join().unwrap();
    (me.name, gname, gparent)
}

/// Python's naming (`Process-1`, its child `Process-1:1`) and parent links through two levels.
#[test]
fn names_follow_pythons_identity_scheme() {
    let mut p = Process::spawn(nested_names, ()).unwrap();
    let pid = p.pid().unwrap();
    let (name, gname, gparent) = p.join().unwrap();
    assert!(name.starts_with("Process-"), "{name}");
    assert_eq!(gname, format!("{name}:1"));
    assert_eq!(gparent, Some(pid));
    assert_eq!(current_process().name, "MainProcess");
}
