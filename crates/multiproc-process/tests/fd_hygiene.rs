//! What a child inherits (issue 20, item 1): spawn and fork-server children get exactly the fds
//! they are passed plus stdio; fork children inherit everything, as in Python. Its own test
//! binary: the parent's stray fds must exist before the fork server starts.
#![allow(missing_docs)]

use multiproc_process::{Process, StartMethod, task};
use multiproc_shm::{ObjectKind, Segment, SegmentHandle, SegmentSpec, TypeFingerprint};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

multiproc_process::init_before_main!();

/// Fds a careless parent leaves open without `O_CLOEXEC`, opened before any child starts.
struct StrayFds {
    /// Opened with `libc::open` (no `O_CLOEXEC`); its path, to find it in a child's fd list.
    file: i32,
    path: String,
    /// A `libc::pipe` pair (no `O_CLOEXEC`) and its `pipe:[inode]` link.
    pipe: [i32; 2],
    pipe_link: String,
    /// A second pair whose write end the EOF test closes.
    eof_pipe: [i32; 2],
}

fn stray_fds() -> &'static StrayFds {
    static S: OnceLock<StrayFds> = OnceLock::new();
    S.get_or_init(|| {
        let path = format!("/tmp/multiproc-fd-hygiene-{}", std::process::id());
        std::fs::write(&path, b"stray").unwrap();
        let c = CString::new(path.clone()).unwrap();
        // SAFETY: a NUL-terminated path; no O_CLOEXEC on purpose.
        let file = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        assert!(file >= 0);
        std::fs::remove_file(&path).unwrap();
        let mut pipe = [0; 2];
        let mut eof_pipe = [0; 2];
        // SAFETY: valid arrays of two ints; plain pipe(): no O_CLOEXEC on purpose.
        unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(eof_pipe.as_mut_ptr()), 0);
        }
        let pipe_link = link(pipe[0]);
        assert!(pipe_link.starts_with("pipe:"), "{pipe_link}");
        StrayFds {
            file,
            path,
            pipe,
            pipe_link,
            eof_pipe,
        }
    })
}

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The child's open fds and what they point to.
#[task(crate = multiproc_process)]
fn list_fds(_passed: SegmentHandle) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(|fd| (fd, link(fd)))
        .collect();
    out.sort();
    out
}

#[task(crate = multiproc_process)]
fn one() -> u8 {
    1
}

fn passed_segment() -> Segment {
    let spec = SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u64>(), 8, 8);
    Segment::create_anonymous(&spec, |ptr, len| {
        // SAFETY: the fresh payload is ours, `len` bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        Ok(())
    })
    .unwrap()
}

fn is_stray(s: &StrayFds, target: &str) -> bool {
    target.contains(&s.path) || target == s.pipe_link || target == link(s.eof_pipe[0])
}

#[test]
fn spawn_and_forkserver_children_get_exactly_their_fds_plus_stdio() {
    let s = stray_fds();
    let seg = passed_segment();
    let passed = seg.fd().as_raw_fd();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let fds = Process::builder()
            .start_method(m)
            .spawn(list_fds, seg.handle())
            .unwrap()
            .join()
            .unwrap();
        assert!(
            fds.iter()
                .any(|(fd, t)| *fd == passed && t.contains("memfd:")),
            "{m:?}: the passed fd {passed} is missing: {fds:?}"
        );
        for (fd, target) in &fds {
            assert!(
                !is_stray(s, target),
                "{m:?}: the parent's stray fd leaked into the child as {fd} -> {target}: {fds:?}"
            );
            // Besides stdio: the passed segment, the result memfd, and read_dir's own fd.
            assert!(
                *fd < 3 || target.contains("memfd:") || target.starts_with("/proc/"),
                "{m:?}: fd {fd} -> {target} was not passed: {fds:?}"
            );
        }
    }
}

#[test]
fn fork_children_inherit_every_fd_as_in_python() {
    let s = stray_fds();
    let seg = passed_segment();
    let h = seg.handle();
    let fds = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn(list_fds, h)
        .unwrap()
        .join()
        .unwrap();
    for fd in [s.file, s.pipe[0], s.pipe[1]] {
        assert!(
            fds.iter().any(|(f, t)| *f == fd && is_stray(s, t)),
            "fork: fd {fd} is not inherited: {fds:?}"
        );
    }
}

#[test]
fn a_pipe_the_parent_closes_after_the_fork_server_started_reaches_eof() {
    let s = stray_fds();
    // The server starts now (or already did), while the pipe's write end is open here.
    let mut p = Process::builder()
        .start_method(StartMethod::ForkServer)
        .spawn(one, ())
        .unwrap();
    assert_eq!(p.join().unwrap(), 1);
    // SAFETY: closing our own write end.
    unsafe { libc::close(s.eof_pipe[1]) };
    let mut pfd = libc::pollfd {
        fd: s.eof_pipe[0],
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd. (Forked children of the other tests may hold the write end for
    // the moment they run; they end within the timeout.)
    let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) };
    assert_eq!(
        ready, 1,
        "no EOF: another process (the fork server?) holds the write end"
    );
    let mut b = [0u8; 1];
    // SAFETY: one byte into b.
    let n = unsafe { libc::read(s.eof_pipe[0], b.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 0);
}
