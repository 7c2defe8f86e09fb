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

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Most fds one job may carry (the kernel's `SCM_MAX_FD` is 253).
pub(crate) const MAX_FDS: usize = 250;

/// A connected pair of seqpacket sockets (close-on-exec).
pub(crate) fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both are fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `fds` (at most [`MAX_FDS`]) as one message.
pub(crate) fn send_fds(sock: BorrowedFd<'_>, fds: &[RawFd]) -> std::io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let mut byte = [fds.len() as u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut ctl = vec![0u64; cmsg_space(fds.len()).div_ceil(8)];
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(fds.len()) as _;
    // SAFETY: the control buffer holds CMSG_SPACE(n fds) bytes, so the first header and its
    // data (n fds) fit; CMSG_FIRSTHDR is non-null for a non-empty control buffer.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), fds.len());
    }
    loop {
        // SAFETY: `msg` is fully initialized and its buffers are alive.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message of fds (close-on-exec), waiting at most `timeout`.
pub(crate) fn recv_fds(sock: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<Vec<OwnedFd>> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let r = multiproc_shm::sys::poll(std::slice::from_mut(&mut pfd), Some(timeout));
    if !matches!(r, Ok(n) if n > 0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no fds arrived with the job",
        ));
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut ctl = vec![0u64; cmsg_space(MAX_FDS + 3).div_ceil(8)];
    // SAFETY: as in send_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = (ctl.len() * 8) as _;
    // SAFETY: `msg` points at live buffers of the sizes it states.
    let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR/NXTHDR walk only the control bytes it
    // reports (msg_controllen), and each SCM_RIGHTS payload holds whole fds we now own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let head = libc::CMSG_LEN(0) as usize;
                let n =
                    ((*c).cmsg_len as usize).saturating_sub(head) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    out.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}
