//! Failures in the start path after a child exists (issue 20, item 4): the child is killed and
//! reaped (never a zombie, never running unsupervised), and the fork server answers every
//! request. Its own test binary, tests serialized: they compare every descendant of this
//! process before and after, and change the fork server's fd limit.
#![allow(missing_docs)]

use multiproc_process::{Process, StartError, StartMethod, task};
use multiproc_shm::{ObjectKind, Segment, SegmentSpec, TypeFingerprint};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

multiproc_process::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::ForkServer,
    StartMethod::Fork,
];

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

#[task(crate = multiproc_process)]
fn quick() -> u8 {
    7
}

/// Runs long enough that a child left running would still be there when we look.
#[task(crate = multiproc_process)]
fn slow() -> u8 {
    std::thread::sleep(Duration::from_secs(30));
    1
}

#[derive(Clone, Copy, Debug, serde::Deserialize)]
struct PassFd(RawFd);
impl serde::Serialize for PassFd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        multiproc_shm::fd_passing::serialize_fd(&self.0, s)
    }
}

#[task(crate = multiproc_process)]
fn fd_is_open(fd: PassFd) -> bool {
    // SAFETY: F_GETFD on any integer.
    unsafe { libc::fcntl(fd.0, libc::F_GETFD) >= 0 }
}

/// Every process below this one (children, the fork server and its children), with its state.
fn descendants() -> BTreeMap<i32, char> {
    let mut parent_of = BTreeMap::new();
    let mut state_of = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        parent_of.insert(pid, ppid);
        state_of.insert(pid, state);
    }
    let me = std::process::id() as i32;
    let mut out = BTreeMap::new();
    for (&pid, &state) in &state_of {
        let mut p = pid;
        for _ in 0..64 {
            match parent_of.get(&p) {
                Some(&pp) if pp == me => {
                    out.insert(pid, state);
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    out
}

fn pids(d: &BTreeMap<i32, char>) -> BTreeSet<i32> {
    d.keys().copied().collect()
}

fn warm_up() {
    for m in METHODS {
        let mut p = Process::builder().start_method(m).spawn(quick, ()).unwrap();
        assert_eq!(p.join().unwrap(), 7);
    }
}

#[test]
fn a_pidfd_open_failure_after_the_child_exists_kills_and_reaps_it() {
    let _g = serial();
    warm_up();
    let before = descendants();
    for m in METHODS {
        let e = Process::builder()
            .start_method(m)
            .__fail_pidfd_open()
            .spawn(slow, ())
            .unwrap_err();
        assert!(
            matches!(&e, StartError::Os { op, .. } if op.contains("pidfd_open")),
            "{m:?}: {e:?}"
        );
        let after = descendants();
        assert_eq!(
            pids(&after),
            pids(&before),
            "{m:?}: a child was left behind (Z = zombie): {after:?}"
        );
    }
    // Starting works as before afterwards.
    warm_up();
}

/// Sets the soft fd limit of `pid`; returns the old limits.
fn set_nofile(pid: i32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading the limits into a valid out-pointer.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    restore_nofile(pid, new);
    old
}

fn restore_nofile(pid: i32, lim: libc::rlimit) {
    // SAFETY: a valid limit pointer; the process is our child, of our user.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    let e = std::io::Error::last_os_error();
    // ESRCH: the server is gone (a failed test stopped it); the assertions below say why.
    assert!(r == 0 || e.raw_os_error() == Some(libc::ESRCH), "{e}");
}

fn server_pid() -> i32 {
    warm_up();
    multiproc_process::__fork_server_pid().expect("the fork server runs")
}

#[test]
fn a_fork_server_child_that_cannot_place_its_fds_refuses_and_is_reaped() {
    let _g = serial();
    let server = server_pid();
    // An fd at a number the server's child cannot reach under a limit of 64.
    let spec = SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u64>(), 8, 8);
    let seg = Segment::create_anonymous(&spec, |ptr, len| {
        // SAFETY: the fresh payload is ours, `len` bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        Ok(())
    })
    .unwrap();
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the copy is ours.
    let high = unsafe { libc::fcntl(seg.fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 200) };
    assert!(high >= 200);
    // SAFETY: a fresh fd we own.
    let high = unsafe { OwnedFd::from_raw_fd(high) };
    let before = descendants();
    let old = set_nofile(server, 64);
    let r = Process::builder()
        .start_method(StartMethod::ForkServer)
        .spawn(fd_is_open, PassFd(high.as_raw_fd()));
    restore_nofile(server, old);
    match r {
        Err(StartError::Refused(msg)) => {
            assert!(msg.contains("F_DUPFD_CLOEXEC"), "{msg}")
        }
        other => panic!("expected a refusal naming the failed fcntl, got {other:?}"),
    }
    assert_eq!(pids(&descendants()), pids(&before));
    // With the limit back, the same start works.
    let mut p = Process::builder()
        .start_method(StartMethod::ForkServer)
        .spawn(fd_is_open, PassFd(high.as_raw_fd()))
        .unwrap();
    assert!(p.join().unwrap());
}

#[test]
fn a_request_the_fork_server_cannot_receive_gets_an_error_reply_not_a_hang() {
    let _g = serial();
    let server = server_pid();
    let before = descendants();
    // No fd can be installed in the server: the request's fds are truncated on receipt.
    let old = set_nofile(server, 3);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = Process::builder()
            .start_method(StartMethod::ForkServer)
            .spawn(quick, ())
            .map(|_| ());
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let r = rx.recv_timeout(Duration::from_secs(60));
    restore_nofile(server, old);
    let r = r.expect("no reply from the fork server: the parent is still waiting");
    let e = r.expect_err("a start without its fds cannot succeed");
    assert!(e.contains("receiving a request"), "{e}");
    assert_eq!(pids(&descendants()), pids(&before));
    // The same server goes on serving.
    let mut p = Process::builder()
        .start_method(StartMethod::ForkServer)
        .spawn(quick, ())
        .unwrap();
    assert_eq!(p.join().unwrap(), 7);
    assert_eq!(multiproc_process::__fork_server_pid(), Some(server));
}
