//! Passing the fds of shared objects in task arguments to a worker (`SCM_RIGHTS` over a
//! per-worker `AF_UNIX` seqpacket socket).
//!
//! An anonymous shared object (a `Queue`, `Value`, a `Pipe` end) serializes as the number of
//! an fd of the parent. The worker was started before the object existed, so that number means
//! nothing there (or, worse, names another object of the worker). So the parent collects the
//! fds while it encodes a job (`multiproc_shm::fd_passing::collect_fds`), keeps duplicates of
//! them with the job, and sends them over the worker's socket just before the job's record;
//! the worker receives them and decodes the job's arguments inside
//! `multiproc_shm::fd_passing::with_fd_map`, which maps each parent number to the fd received.

use multiproc_shm::sys;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Most fds one job may carry.
pub(crate) const MAX_FDS: usize = sys::MAX_PASSED_FDS;

/// A connected pair of seqpacket sockets (close-on-exec).
pub(crate) fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    sys::socketpair_seqpacket()
}

/// Duplicates `fds` (close-on-exec), so a job keeps them open after the caller drops its
/// objects.
pub(crate) fn dup_all(fds: &[RawFd]) -> std::io::Result<Vec<(RawFd, OwnedFd)>> {
    fds.iter()
        .map(|&fd| {
            // SAFETY: F_DUPFD_CLOEXEC on any integer is safe; an invalid fd gives EBADF.
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if d < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a fresh fd that we own.
            Ok((fd, unsafe { OwnedFd::from_raw_fd(d) }))
        })
        .collect()
}

/// Sends `fds` (at most [`MAX_FDS`]) as one message (its one byte is their count).
pub(crate) fn send_fds(sock: BorrowedFd<'_>, fds: &[RawFd]) -> std::io::Result<()> {
    sys::send_fds(sock.as_raw_fd(), &[fds.len() as u8], fds)
}

/// Receives one message of fds (close-on-exec), waiting at most `timeout`.
pub(crate) fn recv_fds(sock: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<Vec<OwnedFd>> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let r = sys::poll(std::slice::from_mut(&mut pfd), Some(timeout));
    if !matches!(r, Ok(n) if n > 0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no fds arrived with the job",
        ));
    }
    Ok(sys::recv_fds(sock.as_raw_fd(), &mut [0u8; 1], MAX_FDS + 3)?.fds)
}
