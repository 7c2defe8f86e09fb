//! `wait()` with process sentinels (pidfds) mixed with connections: conformance item 53
//! (`test_wait_integer`, Rust semantics: a sentinel is any fd, ready once readable).

mod common;

use common::{Exit, fork};
use multiproc_channel::pipe::Sentinel;
use multiproc_channel::{Pipe, RecvError, Waitable, wait};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const T30: Duration = Duration::from_secs(30);

/// A pidfd for `pid` (readable once the process exits).
fn pidfd(pid: libc::pid_t) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags, and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A sentinel is not ready while its process lives (wait times out with []), and is ready once
/// it exited (wait returns its index, before the timeout); an idle connection next to it is
/// not reported.
#[test]
fn wait_returns_the_sentinel_index_once_the_process_exits() {
    let (mut go_r, mut go_w) = Pipe::simplex::<u8>().unwrap();
    let (mut idle, _idle_peer) = Pipe::duplex::<u32>().unwrap();
    let mut child = fork(move || match go_r.recv_timeout(T30) {
        Ok(_) => 0,
        Err(_) => 2,
    });
    let fd = pidfd(child.pid);
    let mut s = Sentinel::new(fd.as_fd());

    let t = Instant::now();
    let r = wait(
        &mut [&mut idle as &mut dyn Waitable, &mut s],
        Some(Duration::from_millis(200)),
    );
    assert_eq!(r, Vec::<usize>::new());
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        wait(
            &mut [&mut idle as &mut dyn Waitable, &mut s],
            Some(Duration::ZERO)
        ),
        Vec::<usize>::new()
    );

    go_w.send(&1).unwrap();
    let t = Instant::now();
    let r = wait(&mut [&mut idle as &mut dyn Waitable, &mut s], Some(T30));
    assert_eq!(r, vec![1]);
    assert!(t.elapsed() < T30);
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    // Still ready after the child was reaped; an OwnedFd and a BorrowedFd work as well.
    let mut owned = fd;
    assert_eq!(wait(&mut [&mut owned], Some(Duration::ZERO)), vec![0]);
    let mut borrowed = owned.as_fd();
    assert_eq!(wait(&mut [&mut borrowed], None), vec![0]);
}

/// test_wait_integer: several children each send a few messages then exit; the parent waits
/// on their connections and their sentinels together until every connection hit EOF and every
/// sentinel fired.
#[test]
fn wait_on_connections_and_sentinels_together_until_all_done() {
    let mut readers = Vec::new();
    let mut kids = Vec::new();
    for i in 0..3u32 {
        let (r, mut w) = Pipe::simplex::<u32>().unwrap();
        kids.push(fork(move || {
            for j in 0..5 {
                if w.send(&(i * 10 + j)).is_err() {
                    return 2;
                }
                std::thread::sleep(Duration::from_millis(u64::from(i) * 5));
            }
            0
        }));
        readers.push(r);
    }
    let fds: Vec<OwnedFd> = kids.iter().map(|k| pidfd(k.pid)).collect();
    let mut sentinels: Vec<Sentinel<'_>> = fds.iter().map(|f| Sentinel::new(f.as_fd())).collect();
    let mut got = vec![Vec::new(); 3];
    let mut conn_open = [true; 3];
    let mut sentinel_seen = [false; 3];
    let deadline = Instant::now() + T30;
    while conn_open.iter().any(|&o| o) || sentinel_seen.iter().any(|&s| !s) {
        assert!(Instant::now() < deadline, "wait loop did not finish");
        let mut objs: Vec<&mut dyn Waitable> = Vec::new();
        let mut which = Vec::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if conn_open[i] {
                objs.push(r);
                which.push((true, i));
            }
        }
        for (i, s) in sentinels.iter_mut().enumerate() {
            if !sentinel_seen[i] {
                objs.push(s);
                which.push((false, i));
            }
        }
        let ready = wait(&mut objs, Some(Duration::from_secs(5)));
        drop(objs);
        for k in ready {
            match which[k] {
                (true, i) => match readers[i].recv_timeout(T30) {
                    Ok(v) => got[i].push(v),
                    Err(RecvError::Eof) => conn_open[i] = false,
                    Err(e) => panic!("reader {i}: {e}"),
                },
                (false, i) => sentinel_seen[i] = true,
            }
        }
    }
    for (i, g) in got.iter().enumerate() {
        let want: Vec<u32> = (0..5).map(|j| i as u32 * 10 + j).collect();
        assert_eq!(g, &want);
    }
    for k in kids {
        k.join_ok();
    }
}
