//! The one system-call layer of the crates above: thin, checked wrappers over the Linux calls
//! they need (memfd, pipes, pidfd, poll, waitpid, signals), each returning `io::Result`. (The
//! futex calls live with the futex, in `multiproc_sync::futex`.)

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A CLOEXEC memfd named `name` (the name is for `/proc/PID/fd` only).
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    memfd_with(name, 0)
}

/// [`memfd`] with more `MFD_*` flags (`MFD_ALLOW_SEALING`); `MFD_CLOEXEC` is always set.
pub fn memfd_with(name: &str, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is NUL-terminated; the flags are MFD_* bits.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A CLOEXEC pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pidfd for `pid` (CLOEXEC). Only a pid that cannot be reused meanwhile (an unreaped child)
/// names the process the caller means; for others, check the identity after opening.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as RawFd;
    // pidfd_open fds are CLOEXEC already.
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` through a pidfd (errors ignored: the process may be gone).
pub fn pidfd_signal(pidfd: &OwnedFd, sig: libc::c_int) {
    // SAFETY: pidfd_send_signal(fd, sig, NULL, 0) has no memory preconditions.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Waits until `fd` is readable (or hung up) for at most `timeout` (`None`: forever).
/// Returns whether it became ready.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.and_then(crate::deadline::after);
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a short timeout still sleeps rather than spins.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: p is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(true);
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            return Ok(false);
        }
    }
}

/// `poll(2)` on `fds` for at most `timeout` (`None`: forever; rounded up to whole
/// milliseconds, so a short timeout sleeps rather than spins): how many have events. An
/// interrupted call is an `ErrorKind::Interrupted` error (callers decide whether to retry).
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms: libc::c_int = match timeout {
        None => -1,
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: fds is a valid, exclusively borrowed slice of pollfds of the length passed.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// `ppoll(2)` on `fds` for at most `timeout`, to the nanosecond (for short slices, where
/// [`poll`]'s whole milliseconds would be too coarse): how many have events. An interrupted
/// call is an `ErrorKind::Interrupted` error.
pub fn ppoll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of fds.len() pollfds; `ts` a valid
    // timespec; a null signal mask keeps the current one.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Converts a wait status to Python's exitcode convention: the code, or `-signal`.
pub fn exitcode_of(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        // Stopped/continued are not reported without WUNTRACED/WCONTINUED.
        -1
    }
}

/// Runs `f`, a libc call that returns a negative value and sets `errno` when it fails, again
/// while it fails with `EINTR` (std's `cvt_r`).
fn cvt_r<T: Copy + Default + PartialOrd>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let r = f();
        if r >= T::default() {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads from `fd` (at offset `at`, or at its file position when `None`) until `buf` is full
/// or EOF; returns the bytes read.
fn read_fill(fd: RawFd, buf: &mut [u8], at: Option<libc::off_t>) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        let (p, n) = (buf[len..].as_mut_ptr().cast(), buf.len() - len);
        let r = cvt_r(|| match at {
            // SAFETY: `p` is valid for writing `n` bytes (the rest of `buf`).
            Some(at) => unsafe { libc::pread(fd, p, n, at + len as libc::off_t) },
            // SAFETY: as above.
            None => unsafe { libc::read(fd, p, n) },
        })?;
        if r == 0 {
            break;
        }
        len += r as usize;
    }
    Ok(len)
}

/// `waitpid(pid)`; `block = false` returns `Ok(None)` while the child runs.
pub fn waitpid(pid: libc::pid_t, block: bool) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: status is a valid out-pointer.
    let r = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, flags) })?;
    Ok((r != 0).then(|| exitcode_of(status)))
}

/// Writes all of `buf` to `fd` (retrying short writes and `EINTR`).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = cvt_r(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads the whole content of a regular file (memfd) from offset 0.
pub fn pread_all(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out-pointer.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded and filled st.
    let size = unsafe { st.assume_init() }.st_size.max(0) as usize;
    let mut out = vec![0u8; size];
    let n = read_fill(fd, &mut out, Some(0))?;
    out.truncate(n);
    Ok(out)
}

/// Reads from `fd` until EOF or `limit` bytes.
pub fn read_to_end(fd: RawFd, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < limit {
        let n = read_fill(fd, &mut buf, None)?;
        out.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    Ok(out)
}

/// Sets (`on`) or clears `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on an integer fd; a bad fd gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The parent's pid.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// `prctl(PR_SET_PDEATHSIG, sig)`.
pub fn set_pdeathsig(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many threads this process runs (`num_threads` of `/proc/self/stat`). Reads into a stack
/// buffer: no allocation.
pub fn thread_count() -> io::Result<usize> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = [0u8; 1024];
    let len = read_fill(fd.as_raw_fd(), &mut buf, None)?;
    parse_num_threads(&buf[..len]).ok_or_else(|| io::Error::other("unparsable /proc/self/stat"))
}

/// Field 20 (`num_threads`) of a `/proc/<pid>/stat` line; the fields count from after the
/// command name, which may hold spaces and parentheses (so from its last `)`).
fn parse_num_threads(stat: &[u8]) -> Option<usize> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // After ") ": field 3 (state) is the first; num_threads is field 20.
    let field = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(20 - 3)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_threads_is_field_20_even_with_odd_command_names() {
        let line = b"42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 7 0 1234 5678 90";
        assert_eq!(parse_num_threads(line), Some(7));
        assert_eq!(parse_num_threads(b"42 (x"), None);
        assert!(thread_count().unwrap() >= 1);
    }
}

/// The most fds one `SCM_RIGHTS` message of ours carries (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_PASSED_FDS: usize = 250;

/// A connected pair of `AF_UNIX` seqpacket sockets (close-on-exec).
pub fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
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
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both are fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `data` and `fds` (`SCM_RIGHTS`; at most [`MAX_PASSED_FDS`]) as one message on the
/// socket `sock` (no `SIGPIPE`; `EINTR` retried).
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::from_raw_os_error(libc::ETOOMANYREFS));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let space = cmsg_space(fds.len());
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes, enough for one cmsg with fds.len() fds;
        // CMSG_FIRSTHDR is non-null for a non-empty control buffer.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points to valid iov and control buffers that outlive the call.
    cvt_r(|| unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) })?;
    Ok(())
}

/// One message received by [`recv_fds`].
#[derive(Debug)]
pub struct Received {
    /// Its length (0 at EOF).
    pub len: usize,
    /// The fds it carried (taken over, close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// Some of its fds could not be received (`MSG_CTRUNC`: the fd limit, or more than
    /// `max_fds`).
    pub truncated: bool,
}

/// Receives one message into `buf`, with up to `max_fds` fds (`EINTR` retried). An error means
/// no message was consumed.
pub fn recv_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let space = cmsg_space(max_fds);
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: zeroed msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points to valid buffers; MSG_CMSG_CLOEXEC marks received fds CLOEXEC.
    let n = cvt_r(|| unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed cmsgs within msg_controllen; the
    // CMSG_* macros walk them inside that bound, and each SCM_RIGHTS payload holds whole fds
    // we now own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Maps `len` bytes of zeroed `MAP_SHARED | MAP_ANONYMOUS` memory: forked children inherit it,
/// so parent and children see each other's writes (handshake and counter pages). Unmap with
/// [`unmap`].
pub fn map_shared_anon(len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping (no address hint, no fd); failure checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps memory from [`map_shared_anon`].
///
/// # Safety
/// `ptr` and `len` are those of one [`map_shared_anon`] mapping, not unmapped yet, and no
/// reference into it is used afterwards.
pub unsafe fn unmap(ptr: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}
