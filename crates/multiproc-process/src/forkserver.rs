//! The fork server: a clean, single-threaded copy of the program (started by re-exec on first use
//! of [`StartMethod::ForkServer`](crate::StartMethod::ForkServer)) that forks a child per request,
//! as Python's forkserver does. Forking from it is safe whatever threads the parent runs, and
//! cheaper than an exec.
//!
//! Protocol on a `SOCK_SEQPACKET` socketpair: a request carries the fds the child needs
//! (SCM_RIGHTS) and the numbers they must have in the child (the parent's numbers), plus a pipe on
//! which the server later writes the child's exit code (the child is the server's, so only the
//! server can reap it). The reply is the child's pid and a pidfd for it. The server exits when
//! its socket reaches EOF or its parent (watched through a pidfd) dies.

use crate::error::{ProcessError, Result};
use crate::sys;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The most fds one request carries (SCM_MAX_FD is 253).
pub(crate) const MAX_FDS: usize = 250;

struct Server {
    owner: u32,
    pid: i32,
    sock: OwnedFd,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// A child forked by the server.
pub(crate) struct ServerChild {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// Starts the server if needed and returns its pid.
pub(crate) fn ensure_server() -> Result<i32> {
    let me = std::process::id();
    {
        let mut g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*g {
            if s.owner == me && sys::waitpid(s.pid, false).ok() == Some(None) {
                return Ok(s.pid);
            }
            if s.owner != me {
                // Inherited through fork: the server is our parent's; forget it untouched.
                if let Some(s) = g.take() {
                    std::mem::forget(s.sock);
                }
            } else {
                *g = None;
            }
        }
    }
    // The slot is not held while the spawner thread starts the server: that thread may be
    // forking a daemon, which takes the slot's lock (see process::fork_child).
    let (ours, theirs) = socketpair()?;
    let theirs_raw = theirs.as_raw_fd();
    let spec = format!("{theirs_raw}:{me}");
    // Started from the long-lived spawner thread: see crate::spawn.
    let pid = crate::spawn::on_spawner_thread(move || {
        let env = [(crate::boot::FORKSERVER_ENV.into(), spec.into())];
        let r = crate::spawn::spawn_self(&env, &[theirs_raw]);
        drop(theirs);
        r
    })?;
    let mut g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = &*g
        && s.owner == me
    {
        // Another thread started one meanwhile: keep it; ours sees EOF, exits, and is reaped.
        let existing = s.pid;
        drop(g);
        drop(ours);
        let _ = sys::waitpid(pid, true);
        return Ok(existing);
    }
    *g = Some(Server {
        owner: me,
        pid,
        sock: ours,
    });
    drop(g);
    tracing::debug!(target: "multiproc", "fork server started (pid {pid})");
    Ok(pid)
}

/// Asks the server (whose pid must still be `server_pid`) to fork a child with `fds` placed at
/// their numbers; `status_w` receives the exit code later.
pub(crate) fn request(server_pid: i32, fds: &[RawFd], status_w: OwnedFd) -> Result<ServerChild> {
    if fds.len() + 1 > MAX_FDS {
        return Err(ProcessError::TooManyFds(fds.len(), MAX_FDS - 1));
    }
    let g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(s) = g.as_ref().filter(|s| s.pid == server_pid) else {
        return Err(ProcessError::Os {
            op: "fork server",
            source: io::Error::other("the fork server restarted during the request"),
        });
    };
    let data = postcard::to_allocvec(&fds.to_vec())?;
    let mut all: Vec<RawFd> = fds.to_vec();
    all.push(status_w.as_raw_fd());
    send_fds(s.sock.as_fd().as_raw_fd(), &data, &all).map_err(|source| ProcessError::Os {
        op: "sending a request to the fork server",
        source,
    })?;
    drop(status_w);
    let mut buf = [0u8; 16];
    let (n, mut got) =
        recv_fds(s.sock.as_raw_fd(), &mut buf, 1).map_err(|source| ProcessError::Os {
            op: "reading the fork server's reply",
            source,
        })?;
    if n < 4 {
        return Err(ProcessError::Os {
            op: "fork server",
            source: io::Error::other("the fork server closed its socket"),
        });
    }
    let pid = i32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    if pid <= 0 {
        return Err(ProcessError::Os {
            op: "fork in the fork server",
            source: io::Error::from_raw_os_error(-pid),
        });
    }
    let pidfd = got.pop().ok_or_else(|| ProcessError::Os {
        op: "fork server",
        source: io::Error::other("the reply carried no pidfd"),
    })?;
    Ok(ServerChild { pid, pidfd })
}

/// The server slot, locked (held across `fork` so the child never inherits it locked).
pub(crate) struct ServerLock(std::sync::MutexGuard<'static, Option<Server>>);

/// Locks the server slot.
pub(crate) fn lock_server() -> ServerLock {
    ServerLock(SERVER.lock().unwrap_or_else(|p| p.into_inner()))
}

impl ServerLock {
    /// In a forked child: drop our copy of the parent's server connection (the server is the
    /// parent's; a request from us would make it fork children of the parent).
    pub(crate) fn forget_in_child(&mut self) {
        if let Some(s) = self.0.take() {
            drop(s.sock);
        }
    }
}

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(ProcessError::os("socketpair"));
    }
    // SAFETY: two fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let space = cmsg_space(fds.len());
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes, enough for one cmsg with fds.len() fds.
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
    loop {
        // SAFETY: msg points to valid iov and control buffers that outlive the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(());
    }
}

/// Receives one message; returns its length (0 at EOF) and the fds it carried (taken over).
fn recv_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
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
    let n = loop {
        // SAFETY: msg points to valid buffers; MSG_CMSG_CLOEXEC marks received fds CLOEXEC.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break r as usize;
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed cmsgs within msg_controllen; the
    // CMSG_* macros walk them inside that bound.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("fds were truncated"));
    }
    Ok((n, fds))
}

struct Kid {
    pid: i32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's main loop (runs in the re-exec'd server process; never returns).
pub(crate) fn serve(spec: &str) -> ! {
    // Children forked from here, and programs they run, must not see the variable.
    // SAFETY: the server runs `init()` first in `main`, while it has one thread.
    unsafe { std::env::remove_var(crate::boot::FORKSERVER_ENV) };
    let mut parts = spec.split(':');
    let sock: RawFd = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
    let ppid: i32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
    if sock < 0 || ppid <= 0 || sys::getppid() != ppid {
        // SAFETY: _exit never returns and is always safe.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the parent passed us this fd at this number; we own it from now on.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let _ = sys::set_cloexec(sock.as_raw_fd(), true);
    let Ok(parent) = sys::pidfd_open(ppid) else {
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    };
    crate::state::set_current(crate::state::Current {
        name: "ForkServer".into(),
        identity: Vec::new(),
        daemon: true,
        parent: multiproc_shm::ProcessId::of(ppid as u32),
        counter: 0,
    });
    let mut kids: Vec<Kid> = Vec::new();
    loop {
        let mut pfds = vec![
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: parent.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        for k in &kids {
            pfds.push(libc::pollfd {
                fd: k.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array of pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if r < 0 {
            continue; // EINTR
        }
        if pfds[1].revents != 0 {
            // The parent died.
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(0) };
        }
        // Reap finished children and report their exit codes.
        let done: Vec<usize> = pfds[2..]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect();
        for &i in done.iter().rev() {
            let k = kids.swap_remove(i);
            let code = sys::waitpid(k.pid, true).ok().flatten().unwrap_or(-1);
            let _ = sys::write_all(k.status.as_raw_fd(), &code.to_le_bytes());
        }
        if pfds[0].revents & libc::POLLIN != 0 {
            let mut buf = [0u8; 4096];
            match recv_fds(sock.as_raw_fd(), &mut buf, MAX_FDS + 1) {
                Ok((0, _)) => {
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(0) }
                }
                Ok((n, fds)) => {
                    let reply = handle(&buf[..n], fds, &sock, &parent, &mut kids);
                    let (code, fd) = match reply {
                        Ok((pid, pidfd)) => (pid, Some(pidfd)),
                        Err(e) => (-e.raw_os_error().unwrap_or(libc::EIO), None),
                    };
                    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
                    let _ = send_fds(sock.as_raw_fd(), &code.to_le_bytes(), &fds);
                }
                Err(_) => {}
            }
        } else if pfds[0].revents != 0 {
            // HUP/ERR without data: the parent closed the socket.
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(0) }
        }
    }
}

fn handle(
    data: &[u8],
    mut fds: Vec<OwnedFd>,
    sock: &OwnedFd,
    parent: &OwnedFd,
    kids: &mut Vec<Kid>,
) -> io::Result<(i32, OwnedFd)> {
    let targets: Vec<i32> =
        postcard::from_bytes(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if fds.len() != targets.len() + 1 || targets.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let status = fds.pop().expect("len checked");
    // SAFETY: the server is single-threaded, so the child may do anything after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // Child: drop the server's own fds, place the received fds at their numbers, run.
        // SAFETY: closing fds this process owns; their OwnedFd copies are forgotten below.
        unsafe {
            libc::close(sock.as_raw_fd());
            libc::close(parent.as_raw_fd());
            libc::close(status.as_raw_fd());
            for k in kids.iter() {
                libc::close(k.pidfd.as_raw_fd());
                libc::close(k.status.as_raw_fd());
            }
        }
        let raw: Vec<RawFd> = fds
            .into_iter()
            .map(std::os::fd::IntoRawFd::into_raw_fd)
            .collect();
        let base = targets.iter().chain(raw.iter()).copied().max().unwrap_or(0) + 1;
        let mut high = Vec::with_capacity(raw.len());
        for &fd in &raw {
            // SAFETY: F_DUPFD on an fd we own.
            let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base) };
            // SAFETY: closing an fd we own.
            unsafe { libc::close(fd) };
            high.push(h);
        }
        for (&h, &t) in high.iter().zip(&targets) {
            // SAFETY: dup2 onto the target number the parent chose; h is ours.
            unsafe {
                libc::dup2(h, t);
                libc::close(h);
            }
        }
        crate::child::child_main(targets[0], true);
    }
    drop(fds);
    let pidfd = sys::pidfd_open(pid)?;
    let reply = pidfd.try_clone()?;
    kids.push(Kid { pid, pidfd, status });
    Ok((pid, reply))
}
