//! Process behaviour beyond the Python checklist: start methods, results, errors, fd passing,
//! daemons dying with their parent, no zombies, logging format.
#![allow(missing_docs)]

use multiproc_process::{JoinError, Process, StartError, StartMethod, task};
use multiproc_shm::{Expect, ObjectKind, Segment, SegmentHandle, SegmentSpec, TypeFingerprint};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

multiproc_process::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::ForkServer,
    StartMethod::Fork,
];

#[task(crate = multiproc_process)]
fn square(x: u64) -> u64 {
    x * x
}

#[task(crate = multiproc_process)]
fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[task(crate = multiproc_process)]
fn env_and_cwd(key: String) -> (Option<String>, String) {
    (
        std::env::var(&key).ok(),
        std::env::current_dir().unwrap().display().to_string(),
    )
}

#[test]
fn every_start_method_runs_a_registered_task_and_returns_its_value() {
    for m in METHODS {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(square, 12)
            .unwrap();
        assert_eq!(p.join().unwrap(), 144, "{m:?}");
        assert_eq!(p.exitcode(), Some(0));
        // join again gives the same value
        assert_eq!(p.join().unwrap(), 144);
    }
}

#[test]
fn results_of_many_megabytes_come_back_whole() {
    for m in METHODS {
        let n = 4 << 20;
        let mut p = Process::builder().start_method(m).spawn(big, n).unwrap();
        let v = p.join().unwrap();
        assert_eq!(v.len(), n);
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}

#[test]
fn fork_runs_closures_with_captured_state() {
    let base = 40u64;
    let mut p = Process::fork(move || base + 2).unwrap();
    assert_eq!(p.join().unwrap(), 42);
    // A closure that never returns is a `Process<()>`; another result type is written on it.
    let mut p: Process<String> = Process::fork(|| -> String { panic!("closure boom") }).unwrap();
    assert!(matches!(p.join(), Err(JoinError::Panicked { message }) if message == "closure boom"));
    assert_eq!(p.exitcode(), Some(1));
}

#[test]
fn closures_need_fork() {
    let f = |x: u64| x + 1;
    let e = Process::spawn(f, 1).unwrap_err();
    assert!(matches!(e, StartError::TaskNotRegistered(_)), "{e}");
    assert!(e.to_string().contains("#[multiproc::task]"));
    // An unregistered function with an explicit Fork method runs as a closure.
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn(f, 1)
        .unwrap();
    assert_eq!(p.join().unwrap(), 2);
    let mut c = Process::builder().closure(|| 1u8);
    c.start().unwrap();
    assert_eq!(c.join().unwrap(), 1);
}

#[test]
fn starting_twice_is_an_error() {
    let mut p = Process::new(square, 3).unwrap();
    p.start().unwrap();
    assert!(matches!(p.start(), Err(StartError::AlreadyStarted)));
    assert_eq!(p.join().unwrap(), 9);
}

#[test]
fn env_and_cwd_reach_the_child() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = Process::builder()
            .start_method(m)
            .env("MULTIPROC_TEST_VAR", "hello")
            .cwd("/tmp")
            .spawn(env_and_cwd, "MULTIPROC_TEST_VAR".to_string())
            .unwrap();
        let (v, dir) = p.join().unwrap();
        assert_eq!(v.as_deref(), Some("hello"), "{m:?}");
        assert_eq!(dir, "/tmp", "{m:?}");
    }
}

#[test]
fn a_child_of_another_build_is_refused_at_the_handshake() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let e = Process::builder()
            .start_method(m)
            .__corrupt_build_id()
            .spawn(square, 2)
            .unwrap_err();
        match e {
            StartError::Refused(msg) => assert!(msg.contains("different build"), "{msg}"),
            other => panic!("{m:?}: {other:?}"),
        }
    }
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
    // SAFETY: the payload is 8-aligned, payload_len bytes, only accessed atomically.
    unsafe {
        std::slice::from_raw_parts(
            seg.payload_ptr().as_ptr().cast::<AtomicU64>(),
            seg.payload_len() / 8,
        )
    }
}

#[task(crate = multiproc_process)]
fn add_to_segments(a: SegmentHandle, b: SegmentHandle, k: u64) -> u64 {
    let ex = Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u64>());
    let sa = Segment::open_handle(&a, &ex).unwrap();
    let sb = Segment::open_handle(&b, &ex).unwrap();
    words(&sa)[0].fetch_add(k, Ordering::SeqCst);
    words(&sb)[1].fetch_add(k * 10, Ordering::SeqCst);
    words(&sa)[0].load(Ordering::SeqCst)
}

#[test]
fn anonymous_segments_pass_to_children_as_fd_handles() {
    let a = raw_segment(1);
    let b = raw_segment(2);
    assert!(matches!(a.handle(), SegmentHandle::Fd { .. }));
    let mut total = 0;
    for (i, m) in METHODS.into_iter().enumerate() {
        let k = i as u64 + 1;
        total += k;
        let mut p = Process::builder()
            .start_method(m)
            .spawn(add_to_segments, (a.handle(), b.handle(), k))
            .unwrap();
        assert_eq!(p.join().unwrap(), total, "{m:?}");
    }
    assert_eq!(words(&a)[0].load(Ordering::SeqCst), 6);
    assert_eq!(words(&b)[1].load(Ordering::SeqCst), 60);
}

#[task(crate = multiproc_process)]
fn fd_is_closed_in_child(fd: i32) -> bool {
    // SAFETY: F_GETFD on any integer.
    unsafe { libc::fcntl(fd, libc::F_GETFD) < 0 }
}

#[test]
fn fds_not_named_in_the_arguments_are_not_inherited() {
    let seg = raw_segment(1);
    let fd = seg.fd().as_raw_fd();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        // The fd number travels as a plain i32, not as a handle: it must not leak into the child.
        let mut p = Process::builder()
            .start_method(m)
            .spawn(fd_is_closed_in_child, fd)
            .unwrap();
        assert!(p.join().unwrap(), "{m:?}");
    }
}

#[task(crate = multiproc_process)]
fn count_forever(h: SegmentHandle) {
    let seg = Segment::open_handle(
        &h,
        &Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u64>()),
    )
    .unwrap();
    loop {
        words(&seg)[0].fetch_add(1, Ordering::SeqCst);
        if words(&seg)[0].load(Ordering::SeqCst).is_multiple_of(1024) {
            std::thread::yield_now();
        }
    }
}

#[test]
fn sigkill_while_busy_gives_no_result_never_a_hang() {
    let seg = raw_segment(1);
    for m in METHODS {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(count_forever, seg.handle())
            .unwrap();
        let t = Instant::now();
        while words(&seg)[0].load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = words(&seg)[0].load(Ordering::SeqCst);
        assert!(before > 0);
        p.kill().unwrap();
        assert!(matches!(
            p.join_timeout(Duration::from_secs(30)),
            Err(JoinError::NoResult { exitcode: -9 })
        ));
        words(&seg)[0].store(0, Ordering::SeqCst);
    }
}

#[task(crate = multiproc_process)]
fn quick() -> u32 {
    7
}

fn reaped(pid: u32) -> bool {
    let mut st = 0;
    // SAFETY: waitpid with a valid out-pointer.
    let r = unsafe { libc::waitpid(pid as i32, &mut st, libc::WNOHANG) };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

#[test]
fn no_zombie_after_join_or_drop() {
    for m in METHODS {
        let mut p = Process::builder().start_method(m).spawn(quick, ()).unwrap();
        let pid = p.pid().unwrap();
        p.join().unwrap();
        assert!(reaped(pid), "{m:?} joined");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || reaped(pid));

        // Dropped while (probably) running: reaped by active_children / the next start.
        let p = Process::builder().start_method(m).spawn(quick, ()).unwrap();
        let pid = p.pid().unwrap();
        drop(p);
        let t = Instant::now();
        loop {
            let live = multiproc_process::active_children();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !live.iter().any(|c| c.pid == pid) && stat.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{m:?}: pid {pid} not reaped: {stat}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[derive(Clone, Copy, Debug, serde::Deserialize)]
struct PassFd(RawFd);
impl serde::Serialize for PassFd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        multiproc_shm::fd_passing::serialize_fd(&self.0, s)
    }
}

#[task(crate = multiproc_process)]
fn sleeper() {
    std::thread::sleep(Duration::from_secs(300));
}

#[task(crate = multiproc_process)]
fn start_daemon_and_report(args: (PassFd, u8)) {
    let (w, method) = args;
    let m = METHODS[method as usize];
    let d = Process::builder()
        .daemon(true)
        .start_method(m)
        .spawn(sleeper, ())
        .unwrap();
    let pid = d.pid().unwrap().to_le_bytes();
    // SAFETY: writing 4 bytes to the pipe we were given.
    unsafe { libc::write(w.0, pid.as_ptr().cast(), 4) };
    std::mem::forget(d);
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn daemons_die_with_their_parent() {
    for (i, m) in METHODS.into_iter().enumerate() {
        let mut fds = [0; 2];
        // SAFETY: valid array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds we own.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut parent =
            Process::spawn(start_daemon_and_report, (PassFd(w.as_raw_fd()), i as u8)).unwrap();
        drop(w);
        let mut b = [0u8; 4];
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 30_000) }, 1, "{m:?}");
        // SAFETY: 4 bytes into b.
        let got = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
        assert_eq!(got, 4);
        let daemon_pid = i32::from_le_bytes(b);
        // SAFETY: pidfd_open on a pid; -1 if gone.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, daemon_pid, 0) } as i32;
        assert!(pidfd >= 0, "{m:?}: daemon not running");
        // SAFETY: a fresh fd we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut alive = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut alive, 1, 0) };
        assert_eq!(ready, 0, "{m:?}: daemon died too early");
        parent.kill().unwrap();
        let _ = parent.join_timeout(Duration::from_secs(30));
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 30_000) };
        assert_eq!(ready, 1, "{m:?}: daemon outlived its parent");
    }
}

#[cfg(feature = "log-to-stderr")]
#[test]
fn log_lines_look_like_pythons() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || b2.clone())
        .event_format(multiproc_process::PythonFormat)
        .finish();
    tracing::subscriber::with_default(sub, || {
        tracing::info!("child process calling self.run()");
        tracing::warn!(x = 3, "careful");
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        out,
        "[INFO/MainProcess] child process calling self.run()\n[WARNING/MainProcess] careful x=3\n"
    );
}

#[task(crate = multiproc_process)]
fn negate_and_set(n: multiproc_sync::Value<f64>, a: multiproc_sync::Array<i32>) -> usize {
    n.store(2.5).unwrap();
    let mut g = a.get_lock().unwrap();
    for x in g.iter_mut() {
        *x = -*x;
    }
    g.len()
}

#[task(crate = multiproc_process)]
fn increment(counter: multiproc_sync::Value<i64>, times: u32) {
    for _ in 0..times {
        *counter.get_lock().unwrap() += 1;
    }
}

/// The seeds' Value/Array examples with real spawned (and forkserver, fork) children: shared
/// objects pass as task arguments (memfd handles kept open at their numbers across exec).
#[test]
fn shared_value_and_array_work_in_children_of_every_start_method() {
    for m in METHODS {
        let num = multiproc_sync::Value::new(0.0f64).unwrap();
        let arr = multiproc_sync::Array::from_slice(&(0..10).collect::<Vec<i32>>()).unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .spawn(negate_and_set, (num.clone(), arr.clone()))
            .unwrap();
        assert_eq!(p.join().unwrap(), 10);
        assert_eq!(num.load().unwrap(), 2.5);
        assert_eq!(
            arr.to_vec().unwrap(),
            (0..10).map(|x: i32| -x).collect::<Vec<_>>()
        );

        let counter = multiproc_sync::Value::new(0i64).unwrap();
        let mut ps: Vec<_> = (0..4)
            .map(|_| {
                Process::builder()
                    .start_method(m)
                    .spawn(increment, (counter.clone(), 250))
                    .unwrap()
            })
            .collect();
        for p in &mut ps {
            p.join().unwrap();
        }
        assert_eq!(counter.load().unwrap(), 1000, "{m:?}");
    }
}

#[task(crate = multiproc_process)]
fn multiproc_env_vars() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("MULTIPROC_CHILD") || k.starts_with("MULTIPROC_FORKSERVER"))
        .collect()
}

#[test]
fn programs_run_by_a_task_do_not_inherit_multiprocs_variables() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(multiproc_env_vars, ())
            .unwrap();
        assert_eq!(p.join().unwrap(), Vec::<String>::new(), "{m:?}");
    }
}

type Msg = (i32, Option<i32>, String);

#[task(crate = multiproc_process)]
fn send_on_pipe(mut conn: multiproc_channel::Connection<Msg>) {
    conn.send(&(42, None, "hello".to_string())).unwrap();
}

#[task(crate = multiproc_process)]
fn put_square(q: multiproc_channel::Queue<u64>, x: u64) {
    q.put(x * x).unwrap();
}

/// The seeds' Pipe and Queue examples with real spawned (forkserver, fork) children: a
/// Connection and a Queue pass to the child as handles (their rings' memfds).
#[test]
fn pipe_and_queue_work_in_children_of_every_start_method() {
    for m in METHODS {
        let (mut reader, writer) = multiproc_channel::Pipe::duplex::<Msg>().unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .spawn(send_on_pipe, writer)
            .unwrap();
        let got = reader.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(got, (42, None, "hello".to_string()), "{m:?}");
        p.join().unwrap();

        let q = multiproc_channel::Queue::<u64>::new(16).unwrap();
        let mut ps: Vec<_> = (1..=4u64)
            .map(|x| {
                Process::builder()
                    .start_method(m)
                    .spawn(put_square, (q.clone(), x))
                    .unwrap()
            })
            .collect();
        for p in &mut ps {
            p.join().unwrap();
        }
        let mut got: Vec<u64> = (0..4).map(|_| q.get().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![1, 4, 9, 16], "{m:?}");
    }
}

/// PR_SET_PDEATHSIG fires when the creating *thread* exits: daemons are therefore created by a
/// long-lived thread, and outlive the short-lived thread that asked for them.
#[test]
fn a_daemon_outlives_the_thread_that_started_it() {
    for m in METHODS {
        let p = std::thread::spawn(move || {
            Process::builder()
                .daemon(true)
                .start_method(m)
                .spawn(sleeper, ())
                .unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            p.is_alive(),
            "{m:?}: the daemon died with its creating thread"
        );
        p.kill().unwrap();
        let mut p = p;
        assert!(matches!(
            p.join_timeout(Duration::from_secs(30)),
            Err(JoinError::NoResult { exitcode: -9 })
        ));
    }
}

#[task(crate = multiproc_process)]
fn stdin_is_dev_null() -> bool {
    let mut a = std::mem::MaybeUninit::<libc::stat>::uninit();
    let mut b = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid out-pointers; the path is NUL-terminated.
    unsafe {
        libc::fstat(0, a.as_mut_ptr()) == 0
            && libc::stat(c"/dev/null".as_ptr(), b.as_mut_ptr()) == 0
            && a.assume_init().st_rdev == b.assume_init().st_rdev
    }
}

/// As Python's `_bootstrap`, a child's stdin is /dev/null under every start method.
#[test]
fn a_childs_stdin_is_dev_null() {
    for m in METHODS {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(stdin_is_dev_null, ())
            .unwrap();
        assert!(p.join().unwrap(), "{m:?}");
    }
}
