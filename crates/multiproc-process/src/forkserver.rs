//! The fork server: a clean, single-threaded copy of the program (started by re-exec on first use
//! of [`StartMethod::ForkServer`](crate::StartMethod::ForkServer)) that forks a child per request,
//! as Python's forkserver does. Forking from it is safe whatever threads the parent runs, and
//! cheaper than an exec.
//!
//! Protocol on a `SOCK_SEQPACKET` socketpair: a request carries the fds the child needs
//! (SCM_RIGHTS) and the numbers they must have in the child (the parent's numbers), plus a pipe on
//! which the server later writes the child's exit code (the child is the server's, so only the
//! server can reap it). The reply is the child's pid and a pidfd for it, or an error code and the
//! step that failed; every request gets a reply (a request whose fds could not all be received
//! too), so a parent never waits on a server that dropped its request. The server exits when its
//! socket reaches EOF, a receive fails without consuming a request, or its parent (watched
//! through a pidfd) dies. The parent waits for a reply at most 30 s, then stops the server (a new
//! one starts on the next request).
//!
//! The server is spawned like any child, so it starts with stdio and its socket only (none of the
//! parent's stray fds); a child forked from it gets exactly the fds of its request (the server's
//! own fds are closed, anything else of the server's is marked close-on-exec).

use crate::error::{CodecError, StartError};
use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The most fds one request carries.
pub(crate) const MAX_FDS: usize = sys::MAX_PASSED_FDS;

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
pub(crate) fn ensure_server() -> Result<i32, StartError> {
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
    let (ours, theirs) = sys::socketpair_seqpacket().map_err(|source| StartError::Os {
        op: "socketpair",
        source,
    })?;
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

/// What a request asks of the server.
#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    /// The number each passed fd must have in the child (the parent's numbers).
    targets: Vec<i32>,
    /// Test hook: the server acts as if `pidfd_open` failed for this child.
    fail_pidfd_open: bool,
}

/// The step of a request that failed, sent in the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Ok = 0,
    Receive = 1,
    Decode = 2,
    Fork = 3,
    PidfdOpen = 4,
}

impl Step {
    fn op(code: u32) -> &'static str {
        match code {
            1 => "the fork server receiving a request (its fds)",
            2 => "the fork server decoding a request",
            3 => "fork in the fork server",
            4 => "pidfd_open in the fork server (the child was killed and reaped)",
            _ => "the fork server",
        }
    }
}

/// How long to wait for the fork server's reply (it answers at once unless stopped or hung).
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks the server (whose pid must still be `server_pid`) to fork a child with `fds` placed at
/// their numbers; `status_w` receives the exit code later.
pub(crate) fn request(
    server_pid: i32,
    fds: &[RawFd],
    status_w: OwnedFd,
    fail_pidfd_open: bool,
) -> Result<ServerChild, StartError> {
    if fds.len() + 1 > MAX_FDS {
        return Err(StartError::TooManyFds(fds.len(), MAX_FDS - 1));
    }
    let mut g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(s) = g.as_ref().filter(|s| s.pid == server_pid) else {
        return Err(StartError::Os {
            op: "fork server",
            source: io::Error::other("the fork server restarted during the request"),
        });
    };
    let data = postcard::to_allocvec(&Request {
        targets: fds.to_vec(),
        fail_pidfd_open,
    })
    .map_err(|e| CodecError::new::<Request>("encoding", "the fork-server request", e))?;
    let mut all: Vec<RawFd> = fds.to_vec();
    all.push(status_w.as_raw_fd());
    let sock = s.sock.as_raw_fd();
    let reply = sys::send_fds(sock, &data, &all)
        .map_err(|source| StartError::Os {
            op: "sending a request to the fork server",
            source,
        })
        .and_then(|()| {
            drop(status_w);
            read_reply(sock)
        });
    match reply {
        Ok(child) => Ok(child),
        Err(e @ StartError::Os { op: REPLY_OP, .. }) => {
            // No usable reply: the server is gone, hung or out of step with us. Stop it (it is
            // our unreaped child, so the pid is still its) and start a new one next time.
            let pid = s.pid;
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = sys::waitpid(pid, true);
            *g = None;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

const REPLY_OP: &str = "reading the fork server's reply";

fn read_reply(sock: RawFd) -> Result<ServerChild, StartError> {
    let broken = |source: io::Error| StartError::Os {
        op: REPLY_OP,
        source,
    };
    // SAFETY: the socket outlives this call.
    let ready = sys::poll_readable(unsafe { BorrowedFd::borrow_raw(sock) }, Some(REPLY_TIMEOUT))
        .map_err(broken)?;
    if !ready {
        return Err(broken(io::Error::from_raw_os_error(libc::ETIMEDOUT)));
    }
    let mut buf = [0u8; 16];
    let got = sys::recv_fds(sock, &mut buf, 1).map_err(broken)?;
    if got.truncated || got.len < 8 {
        return Err(broken(io::Error::other(if got.len == 0 {
            "the fork server closed its socket"
        } else {
            "a malformed reply"
        })));
    }
    let code = i32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    let step = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let mut fds = got.fds;
    if step != Step::Ok as u32 || code <= 0 {
        return Err(StartError::Os {
            op: Step::op(step),
            source: io::Error::from_raw_os_error(code.checked_neg().unwrap_or(libc::EIO)),
        });
    }
    let Some(pidfd) = fds.pop() else {
        return Err(broken(io::Error::other("the reply carried no pidfd")));
    };
    Ok(ServerChild { pid: code, pidfd })
}

/// The running fork server's pid, if this process started one (a test hook).
#[cfg(feature = "test-hooks")]
pub(crate) fn server_pid() -> Option<i32> {
    let g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref()
        .filter(|s| s.owner == std::process::id())
        .map(|s| s.pid)
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
    // A child's status pipe may have lost its reader (the parent gave up on the child): the
    // write must fail with EPIPE, not kill the server. Children get the old disposition back.
    // SAFETY: signal() with a valid signal number and handler constant.
    let sigpipe = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // Computed once here, inherited by every child (which checks it against its parent's).
    let _ = crate::registry::build_id();
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
        if sys::poll(&mut pfds, None).is_err() {
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
            let reply = match sys::recv_fds(sock.as_raw_fd(), &mut buf, MAX_FDS + 1) {
                Ok(sys::Received { len: 0, .. }) => {
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(0) }
                }
                // A request whose fds did not all arrive (our fd limit): refuse it, with a
                // reply, so the parent does not wait for one.
                Ok(sys::Received {
                    truncated: true, ..
                }) => Err((Step::Receive, io::Error::from_raw_os_error(libc::EMFILE))),
                Ok(sys::Received { len, fds, .. }) => {
                    handle(&buf[..len], fds, &sock, &parent, &mut kids, sigpipe)
                }
                // Nothing was consumed and the socket is unusable: exit, so the parent sees
                // EOF instead of a reply that answers no request.
                // SAFETY: _exit is always safe.
                Err(_) => unsafe { libc::_exit(1) },
            };
            let (code, step, fd) = match reply {
                Ok((pid, pidfd)) => (pid, Step::Ok, Some(pidfd)),
                Err((step, e)) => (-e.raw_os_error().unwrap_or(libc::EIO), step, None),
            };
            let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&code.to_le_bytes());
            msg[4..].copy_from_slice(&(step as u32).to_le_bytes());
            let _ = sys::send_fds(sock.as_raw_fd(), &msg, &fds);
        } else if pfds[0].revents != 0 {
            // HUP/ERR without data: the parent closed the socket.
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(0) }
        }
    }
}

type Failure = (Step, io::Error);

fn handle(
    data: &[u8],
    mut fds: Vec<OwnedFd>,
    sock: &OwnedFd,
    parent: &OwnedFd,
    kids: &mut Vec<Kid>,
    sigpipe: libc::sighandler_t,
) -> std::result::Result<(i32, OwnedFd), Failure> {
    let einval = || (Step::Decode, io::Error::from_raw_os_error(libc::EINVAL));
    let req: Request = postcard::from_bytes(data).map_err(|_| einval())?;
    let targets = req.targets;
    if fds.len() != targets.len() + 1 || targets.len() < 3 {
        return Err(einval());
    }
    let status = fds.pop().expect("len checked");
    // SAFETY: the server is single-threaded, so the child may do anything after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err((Step::Fork, io::Error::last_os_error()));
    }
    if pid == 0 {
        // Child: drop the server's own fds, mark anything else of the server's close-on-exec,
        // place the received fds at their numbers, run.
        // SAFETY: closing fds this process owns (their OwnedFd copies are never dropped here:
        // child_main never returns); close_range only sets flags; signal() restores the
        // disposition the server replaced.
        unsafe {
            libc::close(sock.as_raw_fd());
            libc::close(parent.as_raw_fd());
            libc::close(status.as_raw_fd());
            for k in kids.iter() {
                libc::close(k.pidfd.as_raw_fd());
                libc::close(k.status.as_raw_fd());
            }
            libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            );
            libc::signal(libc::SIGPIPE, sigpipe);
        }
        let mut at: Vec<RawFd> = fds
            .into_iter()
            .map(std::os::fd::IntoRawFd::into_raw_fd)
            .collect();
        if let Err((op, errno)) = place_fds(&mut at, &targets) {
            // The parent waits on the ack pipe (the third fd, wherever it is now): tell it.
            let msg = format!(
                "{}the fork server's child could not place its fds: {op}: {}",
                crate::boot::ACK_ERR as char,
                io::Error::from_raw_os_error(errno)
            );
            let _ = sys::write_all(at[2], msg.as_bytes());
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(2) };
        }
        crate::child::child_main(targets[0], true);
    }
    drop(fds);
    let pidfd = if req.fail_pidfd_open {
        Err(io::Error::from_raw_os_error(libc::EMFILE))
    } else {
        sys::pidfd_open(pid)
    }
    .and_then(|pidfd| {
        let reply = pidfd.try_clone()?;
        Ok((pidfd, reply))
    });
    match pidfd {
        Ok((pidfd, reply)) => {
            kids.push(Kid { pid, pidfd, status });
            Ok((pid, reply))
        }
        Err(e) => {
            // A child nobody could watch: kill and reap it now, never leave it running.
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = sys::waitpid(pid, true);
            Err((Step::PidfdOpen, e))
        }
    }
}

/// In a forked child: moves the received fds (`at`, updated as they move) to `targets`, in two
/// phases through numbers above every number in play, so no move overwrites an fd still to be
/// moved. Returns the failing call and its errno.
fn place_fds(at: &mut [RawFd], targets: &[i32]) -> std::result::Result<(), (&'static str, i32)> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let base = targets.iter().chain(at.iter()).copied().max().unwrap_or(0) + 1;
    for fd in at.iter_mut() {
        // SAFETY: F_DUPFD_CLOEXEC on an fd we own.
        let h = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, base) };
        if h < 0 {
            return Err(("fcntl(F_DUPFD_CLOEXEC)", errno()));
        }
        // SAFETY: closing an fd we own (its copy is at h).
        unsafe { libc::close(*fd) };
        *fd = h;
    }
    for (fd, &t) in at.iter_mut().zip(targets) {
        // SAFETY: dup2 onto the number the parent chose; *fd is ours.
        if unsafe { libc::dup2(*fd, t) } < 0 {
            return Err(("dup2", errno()));
        }
        // SAFETY: closing the high copy we own.
        unsafe { libc::close(*fd) };
        *fd = t;
    }
    Ok(())
}
