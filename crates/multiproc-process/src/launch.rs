//! Starting a child: [`Process::start`] and its two paths, fork (`fork_child`, with the
//! threaded-parent check) and exec or fork server (the bootstrap record and the handshake).

use crate::boot::{ACK_ERR, ACK_OK, BOOT_MAGIC, BOOT_VERSION, Boot, CHILD_ENV};
use crate::error::{CodecError, StartError};
use crate::facade::Ordering;
use crate::introspect::current_process;
use crate::process::{Body, Process, Running, Target, reap_running};
use crate::registry::{self, TaskEntry};
use crate::start_method::{self, StartMethod, get_start_method};
use crate::state::{self, ChildRec, Reap};
use crate::sys;
use multiproc_shm::ProcessId;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl<R> Process<R> {
    /// Starts the child. Starting twice is an error, as is starting from a daemonic process.
    pub fn start(&mut self) -> Result<(), StartError> {
        if self.closed {
            return Err(StartError::Closed);
        }
        if self.run.is_some() || self.target.is_none() {
            return Err(StartError::AlreadyStarted);
        }
        if state::started_without_init() {
            return Err(StartError::InitMissingInChild);
        }
        if current_process().daemon {
            return Err(StartError::DaemonCannotHaveChildren);
        }
        let method = self.method.unwrap_or_else(get_start_method);
        if method != StartMethod::Fork && matches!(self.target, Some(Target::Closure(_))) {
            return Err(StartError::ClosureNeedsFork);
        }
        // Reap finished children whose handles were dropped.
        let _ = state::live_children();
        let result = sys::memfd("multiproc-result").map_err(|source| StartError::Os {
            op: "memfd_create",
            source,
        })?;
        let target = self.target.take().expect("checked above");
        let running = match (method, target) {
            (StartMethod::Fork, target) => self.start_fork(target, result)?,
            (
                method,
                Target::Registered {
                    entry,
                    args,
                    fds,
                    _keep,
                },
            ) => {
                let r = self.start_exec(method, entry, &args, &fds, result);
                drop(_keep);
                r?
            }
            (_, Target::Closure(_)) => unreachable!("checked above"),
        };
        state::register_child(ChildRec {
            pid: running.pid,
            name: self.name.clone(),
            daemon: self.daemon,
            owner: std::process::id(),
            pidfd: running.pidfd.clone(),
            orphan: None,
        });
        tracing::debug!(target: "multiproc", "started {} (pid {}) with {}", self.name, running.pid, method.name());
        self.run = Some(running);
        Ok(())
    }

    fn start_fork(&self, target: Target, result: OwnedFd) -> Result<Running, StartError> {
        let body: Body = match target {
            Target::Registered {
                entry, args, _keep, ..
            } => Box::new(move || {
                let _keep = _keep;
                (entry.trampoline)(&args).map_err(|e| e.to_string())
            }),
            Target::Closure(f) => f,
        };
        let (name, identity, daemon) = (self.name.clone(), self.identity.clone(), self.daemon);
        let result_fd = result.as_raw_fd();
        let threads = other_threads();
        if threads > 0 {
            let refuse = self
                .refuse_if_threaded
                .unwrap_or_else(start_method::refuse_fork_if_threaded);
            if refuse {
                return Err(StartError::ThreadedFork {
                    threads: threads + 1,
                });
            }
            warn_threaded_fork_once(threads + 1);
        }
        let quiet = threads > 0;
        // A daemon is forked from the long-lived spawner thread, so PR_SET_PDEATHSIG (which
        // fires when the creating *thread* exits) means "when the parent process dies".
        let pid = if daemon {
            crate::spawn::on_spawner_thread(move || {
                fork_child(name, identity, daemon, result_fd, quiet, body)
            })
        } else {
            fork_child(name, identity, daemon, result_fd, quiet, body)
        }
        .map_err(|source| StartError::Os { op: "fork", source })?;
        let pidfd = watch(pid, self.fail_pidfd_open)?;
        Ok(Running {
            pid,
            pidfd: Arc::new(pidfd),
            result,
            reap: Reap::Direct,
        })
    }

    fn start_exec(
        &self,
        method: StartMethod,
        entry: &'static TaskEntry,
        args: &[u8],
        fds: &[RawFd],
        result: OwnedFd,
    ) -> Result<Running, StartError> {
        let os = |op| move |source| StartError::Os { op, source };
        let (ack_r, ack_w) = sys::pipe().map_err(os("pipe"))?;
        let boot_fd = sys::memfd("multiproc-boot").map_err(os("memfd_create"))?;
        let me = me();
        let server = match method {
            StartMethod::ForkServer => Some(crate::forkserver::ensure_server()?),
            _ => None,
        };
        let boot = Boot {
            magic: BOOT_MAGIC,
            version: BOOT_VERSION,
            build_id: registry::build_id() ^ if self.corrupt_build_id { 1 } else { 0 },
            task_hash: entry.hash(),
            task_id: entry.id.to_string(),
            args: args.to_vec(),
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent_pid: me.pid,
            parent_start_time: me.start_time,
            real_parent: server.map(|p| p as u32).unwrap_or(me.pid),
            result_fd: result.as_raw_fd(),
            ack_fd: ack_w.as_raw_fd(),
            passed_fds: fds.to_vec(),
            cwd: self.cwd.as_ref().map(|p| p.to_string_lossy().into_owned()),
            env: if server.is_some() {
                self.env.clone()
            } else {
                Vec::new()
            },
            log_level: crate::log::current_level(),
        };
        let encoded = postcard::to_allocvec(&boot)
            .map_err(|e| CodecError::new::<Boot>("encoding", "the bootstrap record", e))?;
        sys::write_all(boot_fd.as_raw_fd(), &encoded).map_err(os("writing the bootstrap"))?;
        let mut pass = vec![boot_fd.as_raw_fd(), result.as_raw_fd(), ack_w.as_raw_fd()];
        pass.extend_from_slice(fds);
        let (pid, pidfd, reap) = match server {
            None => {
                let mut env: Vec<(OsString, OsString)> =
                    self.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
                env.push((CHILD_ENV.into(), boot_fd.as_raw_fd().to_string().into()));
                let pid = if self.daemon {
                    let pass = pass.clone();
                    crate::spawn::on_spawner_thread(move || crate::spawn::spawn_self(&env, &pass))?
                } else {
                    crate::spawn::spawn_self(&env, &pass)?
                };
                let pidfd = watch(pid, self.fail_pidfd_open)?;
                (pid, pidfd, Reap::Direct)
            }
            Some(server_pid) => {
                let (st_r, st_w) = sys::pipe().map_err(os("pipe"))?;
                let c = crate::forkserver::request(server_pid, &pass, st_w, self.fail_pidfd_open)?;
                (c.pid, c.pidfd, Reap::Server(st_r))
            }
        };
        drop(ack_w);
        drop(boot_fd);
        let running = Running {
            pid,
            pidfd: Arc::new(pidfd),
            result,
            reap,
        };
        if let Err(e) = self.handshake(&running, ack_r) {
            sys::pidfd_signal(&running.pidfd, libc::SIGKILL);
            let _ = reap_running(&running, true);
            return Err(e);
        }
        Ok(running)
    }

    fn handshake(&self, r: &Running, ack: OwnedFd) -> Result<(), StartError> {
        let deadline = multiproc_shm::deadline::saturating_after(self.handshake_timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = [
                libc::pollfd {
                    fd: ack.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: r.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            match sys::poll(&mut p, Some(left)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StartError::Os { op: "poll", source }),
            }
            if p[0].revents != 0 {
                let mut buf = vec![0u8; 8192];
                // SAFETY: buf is valid for its length.
                let got =
                    unsafe { libc::read(ack.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if got > 0 {
                    buf.truncate(got as usize);
                    return match buf[0] {
                        ACK_OK => Ok(()),
                        ACK_ERR => Err(StartError::Refused(
                            String::from_utf8_lossy(&buf[1..]).into_owned(),
                        )),
                        _ => Err(StartError::Refused("garbled handshake".into())),
                    };
                }
                if got == 0 {
                    let code = reap_running(r, true);
                    return Err(StartError::HandshakeEof { exitcode: code });
                }
                continue;
            }
            if p[1].revents != 0 {
                // Exited: a last look at the pipe (the ack may have raced the exit).
                if sys::poll_readable(ack.as_fd(), Some(Duration::ZERO)).unwrap_or(false) {
                    continue;
                }
                let code = reap_running(r, true);
                return Err(StartError::HandshakeEof { exitcode: code });
            }
            if Instant::now() >= deadline {
                return Err(StartError::InitNotCalled(self.handshake_timeout));
            }
        }
    }
}

/// A pidfd for our new child `pid`; if that fails, the child is killed and reaped (nobody could
/// watch it) and the start fails. `fail` is the test hook of
/// `ProcessBuilder::__fail_pidfd_open` (feature `test-hooks`).
fn watch(pid: i32, fail: bool) -> Result<OwnedFd, StartError> {
    // Our unreaped child: its pid cannot be reused before we wait for it.
    let r = if fail {
        Err(std::io::Error::from_raw_os_error(libc::EMFILE))
    } else {
        sys::pidfd_open(pid)
    };
    r.map_err(|source| {
        // SAFETY: kill and waitpid on our own unreaped child (the pid is still its).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = sys::waitpid(pid, true);
        StartError::Os {
            op: "pidfd_open (the child was killed and reaped)",
            source,
        }
    })
}

/// How many threads besides the caller this process runs (multiproc's spawner thread, which
/// holds no lock a forked child needs, does not count). 0 if unknown.
fn other_threads() -> usize {
    let total = sys::thread_count().unwrap_or(1);
    let ours = usize::from(crate::spawn::spawner_running());
    total.saturating_sub(1 + ours)
}

/// Python 3.12 warns (DeprecationWarning) when `os.fork()` runs in a threaded process; so do we,
/// once per process.
fn warn_threaded_fork_once(threads: usize) {
    static WARNED_IN: crate::facade::AtomicU32 = crate::facade::AtomicU32::new(0);
    let me = std::process::id();
    // Relaxed: only decides who logs; a forked child (another pid) warns for itself.
    if WARNED_IN.swap(me, Ordering::Relaxed) != me {
        tracing::warn!(
            target: "multiproc",
            "this process (pid {me}) runs {threads} threads; forking it may deadlock the child \
             if another thread holds a lock the child needs (use StartMethod::Spawn or \
             ForkServer, or refuse with ProcessBuilder::refuse_if_threaded)"
        );
    }
}

/// Forks a child that takes on its identity and runs `body`; returns its pid (in the parent).
///
/// Between the fork and `body` the child takes no lock another thread may have held (every lock
/// of ours is held by this thread across the fork), reads no environment variable, allocates and
/// frees nothing, and (`quiet`: the parent runs other threads) logs nothing, since a subscriber's
/// writer may be locked by another thread.
fn fork_child(
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    result_fd: RawFd,
    quiet: bool,
    body: Body,
) -> std::io::Result<i32> {
    let me = me();
    let new_current = state::Current {
        name,
        identity,
        daemon,
        parent: Some(me),
        counter: 0,
    };
    // Once-initialised state the child may need, settled here so the child never waits on an
    // initialisation another thread was running at the moment of the fork.
    let _ = registry::build_id();
    let _ = state::started_without_init();
    state::ensure_atexit();
    // Every lock of ours that the child uses is taken by this thread across the fork, so
    // the child never inherits one held by another thread (the stdio locks are reentrant
    // and owned by this thread, so the child's prints do not deadlock either). The order
    // (server, spawner, current, children) is the one every other path nests them in.
    let mut server_lock = crate::forkserver::lock_server();
    let mut spawner_lock = crate::spawn::lock_spawner();
    let mut current_lock = state::lock_current();
    let children_lock = state::lock_children();
    let stdout_lock = std::io::stdout().lock();
    let stderr_lock = std::io::stderr().lock();
    // SAFETY: fork has no memory preconditions; the child only fixes up our state through
    // the guards it holds (no allocation, no other lock), runs the body and then `_exit`s.
    let pid = unsafe { libc::fork() };
    let fork_err = (pid < 0).then(std::io::Error::last_os_error);
    if pid == 0 {
        // The parent's identity is leaked, not freed: no allocator call before the body.
        std::mem::forget(current_lock.replace(new_current));
        // The parent's children stay listed (owned by the parent's pid, which every reader of
        // the list filters on), so nothing is freed here.
        server_lock.forget_in_child();
        spawner_lock.forget_in_child();
        drop((stderr_lock, stdout_lock, children_lock, current_lock));
        drop((spawner_lock, server_lock));
        if daemon {
            if let Err(e) = sys::set_pdeathsig(libc::SIGKILL) {
                crate::child::run_and_exit(result_fd, !quiet, move || {
                    Err(format!("prctl(PR_SET_PDEATHSIG) failed in a daemon: {e}"))
                });
            }
            if sys::getppid() != me.pid as i32 {
                // SAFETY: _exit is always safe.
                unsafe { libc::_exit(1) };
            }
        }
        crate::child::run_and_exit(result_fd, !quiet, body);
    }
    drop((stderr_lock, stdout_lock, children_lock, current_lock));
    drop((spawner_lock, server_lock));
    if let Some(e) = fork_err {
        return Err(e);
    }
    drop(body);
    Ok(pid)
}

/// This process's identity (multiproc-shm's cache, cleared in a forked child).
fn me() -> ProcessId {
    ProcessId::current()
}
