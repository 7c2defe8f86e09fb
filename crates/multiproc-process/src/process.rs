//! `Process`: start a function in another process and manage its life, as Python's
//! `multiprocessing.Process`, with the task's return value coming back from `join`.
//!
//! ```no_run
//! use multiproc_process::Process;
//! #[multiproc_process::task(crate = multiproc_process)]
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() {
//!     multiproc_process::init();
//!     let mut p = Process::spawn(square, 7).unwrap();
//!     assert_eq!(p.join().unwrap(), 49);
//!     assert_eq!(p.exitcode(), Some(0));
//! }
//! ```
//!
//! This module holds the handle of a child (state queries, signals, `close`, `join` and
//! `join_async`, `Drop`); it is built in `builder` and started in `launch`.

use crate::boot::Outcome;
use crate::error::{CodecError, JoinError, NotRunning, StillRunning};
use crate::registry::TaskEntry;
use crate::start_method::StartMethod;
use crate::state::{self, Reap};
use crate::sys;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a forked child runs: the task, giving its encoded result or an error message.
pub(crate) type Body = Box<dyn FnOnce() -> std::result::Result<Vec<u8>, String> + Send>;

/// What an unstarted process will run: a registered task with its encoded arguments, or a
/// closure (fork only).
pub(crate) enum Target {
    Registered {
        entry: &'static TaskEntry,
        args: Vec<u8>,
        fds: Vec<RawFd>,
        /// The arguments themselves, kept alive until the child has its copies of their fds.
        _keep: Box<dyn Any + Send>,
    },
    Closure(Body),
}

/// A started child: its pid, pidfd, result memfd and how to reap it.
pub(crate) struct Running {
    pub(crate) pid: i32,
    pub(crate) pidfd: Arc<OwnedFd>,
    pub(crate) result: OwnedFd,
    pub(crate) reap: Reap,
}

/// A child process running a task whose result is an `R`.
pub struct Process<R = ()> {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) method: Option<StartMethod>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) refuse_if_threaded: Option<bool>,
    pub(crate) corrupt_build_id: bool,
    pub(crate) fail_pidfd_open: bool,
    pub(crate) identity: Vec<u32>,
    pub(crate) target: Option<Target>,
    pub(crate) run: Option<Running>,
    pub(crate) exit: Mutex<Option<i32>>,
    pub(crate) closed: bool,
    pub(crate) _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field(
                "exitcode",
                &*self.exit.lock().unwrap_or_else(|p| p.into_inner()),
            )
            .finish()
    }
}

impl<R> Process<R> {
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The pid once started.
    pub fn pid(&self) -> Option<u32> {
        self.run.as_ref().map(|r| r.pid as u32)
    }

    fn running(&self) -> Result<&Running, NotRunning> {
        if self.closed {
            return Err(NotRunning::Closed);
        }
        self.run.as_ref().ok_or(NotRunning::NotStarted)
    }

    /// Collects the exit status if the child has ended (`block`: wait for it).
    fn try_reap(&self, block: bool) -> Option<i32> {
        let mut g = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_some() {
            return *g;
        }
        let r = self.run.as_ref()?;
        let code = reap_running(r, block)?;
        *g = Some(code);
        state::unregister_child(r.pid);
        Some(code)
    }

    /// Whether the child runs (false before start and after it ended; reaps it if it ended).
    pub fn is_alive(&self) -> bool {
        self.running().is_ok() && self.try_reap(false).is_none()
    }

    /// `None` while running (or before start), else 0, the exit code, or `-signal`.
    pub fn exitcode(&self) -> Option<i32> {
        if self.closed || self.run.is_none() {
            return *self.exit.lock().unwrap_or_else(|p| p.into_inner());
        }
        self.try_reap(false)
    }

    /// Sends SIGTERM (exitcode then `-15`). No effect once the child has been reaped.
    pub fn terminate(&self) -> Result<(), NotRunning> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (exitcode then `-9`). No effect once the child has been reaped.
    pub fn kill(&self) -> Result<(), NotRunning> {
        self.signal(libc::SIGKILL)
    }

    /// Sends SIGINT (Python 3.14's `interrupt`).
    pub fn interrupt(&self) -> Result<(), NotRunning> {
        self.signal(libc::SIGINT)
    }

    fn signal(&self, sig: libc::c_int) -> Result<(), NotRunning> {
        let r = self.running()?;
        if self
            .exit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            // Through the pidfd: never hits a reused pid.
            sys::pidfd_signal(&r.pidfd, sig);
        }
        Ok(())
    }

    /// A pidfd that becomes readable (poll) when the child ends. Error before start.
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>, NotRunning> {
        Ok(self.running()?.pidfd.as_fd())
    }

    /// Releases the process's resources. Error while it still runs; afterwards most methods
    /// return [`NotRunning::Closed`] ([`JoinError::Closed`] from `join`).
    pub fn close(&mut self) -> Result<(), StillRunning> {
        if self.closed {
            return Ok(());
        }
        if self.run.is_some() && self.try_reap(false).is_none() {
            return Err(StillRunning);
        }
        self.run = None;
        self.target = None;
        self.closed = true;
        Ok(())
    }

    fn wait_exit(&self, timeout: Option<Duration>) -> Result<i32, JoinError> {
        let r = self.running()?;
        if let Some(code) = self.try_reap(false) {
            return Ok(code);
        }
        if !sys::poll_readable(r.pidfd.as_fd(), timeout)
            .map_err(|source| JoinError::Os { op: "poll", source })?
        {
            return Err(JoinError::Timeout);
        }
        self.try_reap(true).ok_or(JoinError::Timeout)
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Waits for the child to end and returns the task's value. A panic in the task comes back as
    /// [`JoinError::Panicked`] (exitcode 1); a child that ended without a result (killed,
    /// `exit` called) as [`JoinError::NoResult`] with its exit code.
    pub fn join(&mut self) -> Result<R, JoinError> {
        let code = self.wait_exit(None)?;
        self.result(code)
    }

    /// [`Process::join`] waiting at most `timeout`: [`JoinError::Timeout`] if the child still
    /// runs (Python's `join(timeout)` followed by a look at `exitcode`). `join_timeout(0)` never
    /// blocks.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, JoinError> {
        let code = self.wait_exit(Some(timeout))?;
        self.result(code)
    }

    /// [`Process::join`] for async code: waits for the child's end without blocking a thread,
    /// on any executor (the pidfd is watched by one shared watcher thread per process, see
    /// docs/async-pool-process.md), then returns what `join` returns: the task's value, or
    /// [`JoinError::NoResult`] with the exit code (`-9` for a SIGKILLed child), a panic as
    /// [`JoinError::Panicked`]. Cancel-safe: dropping the future leaves the process as it
    /// was (a later `join` or `join_async` still reports the end).
    ///
    /// ```no_run
    /// # use multiproc_process::Process;
    /// # #[multiproc_process::task(crate = multiproc_process)]
    /// # fn square(x: u64) -> u64 { x * x }
    /// # async fn demo() -> multiproc_process::Result<()> {
    /// let mut p = Process::spawn(square, 7)?;
    /// assert_eq!(p.join_async().await?, 49);
    /// # Ok(()) }
    /// ```
    pub async fn join_async(&mut self) -> Result<R, JoinError> {
        let code = ExitWait::new(self, None).await?;
        self.result(code)
    }

    /// [`join_async`](Process::join_async) waiting at most `timeout`: [`JoinError::Timeout`]
    /// if the child still runs (as [`join_timeout`](Process::join_timeout); the watcher thread
    /// keeps the deadline, so this needs no timer from the executor either).
    pub async fn join_timeout_async(&mut self, timeout: Duration) -> Result<R, JoinError> {
        let code = ExitWait::new(self, multiproc_shm::deadline::after(timeout)).await?;
        self.result(code)
    }

    fn result(&self, exitcode: i32) -> Result<R, JoinError> {
        let r = self.running()?;
        let bytes = sys::pread_all(r.result.as_raw_fd()).map_err(|source| JoinError::Os {
            op: "reading the result",
            source,
        })?;
        if bytes.is_empty() {
            return Err(JoinError::NoResult { exitcode });
        }
        let outcome = match postcard::from_bytes::<Outcome>(&bytes) {
            Ok(o) => o,
            // Killed while writing its result: report the death, not the torn bytes.
            Err(_) if exitcode != 0 => return Err(JoinError::NoResult { exitcode }),
            Err(e) => {
                return Err(
                    CodecError::new::<Outcome>("decoding", "the child's result record", e).into(),
                );
            }
        };
        match outcome {
            Outcome::Ok(v) => postcard::from_bytes(&v)
                .map_err(|e| CodecError::new::<R>("decoding", "the task result", e).into()),
            Outcome::Panic(message) => Err(JoinError::Panicked { message }),
            Outcome::Error(e) => Err(JoinError::TaskFailed(e)),
        }
    }
}

/// The future of a child's end: its exit code once reaped. Checks the child on each poll and,
/// while it runs, leaves its waker with the fd watcher (`crate::fdwatch`) on the pidfd; a
/// fork-server child is reaped by the server, so once the pidfd is readable the future waits
/// for the server's status pipe (as the blocking `join` reads it after the pidfd).
struct ExitWait<'a, R> {
    p: &'a mut Process<R>,
    deadline: Option<Instant>,
    reg: Option<u64>,
    /// A duplicate of the fork server's status pipe, for the watcher (made when needed).
    status: Option<Arc<OwnedFd>>,
}

impl<'a, R> ExitWait<'a, R> {
    fn new(p: &'a mut Process<R>, deadline: Option<Instant>) -> ExitWait<'a, R> {
        ExitWait {
            p,
            deadline,
            reg: None,
            status: None,
        }
    }

    fn poll_exit(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<i32, JoinError>> {
        use std::task::Poll;
        let r = self.p.running()?;
        if let Some(code) = self.p.try_reap(false) {
            return Poll::Ready(Ok(code));
        }
        let os = |op| move |source| JoinError::Os { op, source };
        let exited =
            sys::poll_readable(r.pidfd.as_fd(), Some(Duration::ZERO)).map_err(os("poll"))?;
        let fd = if !exited {
            r.pidfd.clone()
        } else {
            match &r.reap {
                // Our own child has ended: waitpid returns at once.
                Reap::Direct => {
                    return Poll::Ready(self.p.try_reap(true).ok_or(JoinError::Timeout));
                }
                // The server reaps it and then writes the status: wait for that pipe.
                Reap::Server(st) => match &self.status {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(st.try_clone().map_err(os("dup"))?);
                        self.status = Some(s.clone());
                        s
                    }
                },
            }
        };
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(JoinError::Timeout));
        }
        crate::fdwatch::register(&mut self.reg, &fd, self.deadline, cx.waker())
            .map_err(os("starting the fd watcher thread"))?;
        Poll::Pending
    }
}

impl<R> std::future::Future for ExitWait<'_, R> {
    type Output = Result<i32, JoinError>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<i32, JoinError>> {
        let this = self.get_mut();
        let r = this.poll_exit(cx);
        if r.is_ready() {
            crate::fdwatch::unregister(&mut this.reg);
        }
        r
    }
}

impl<R> Drop for ExitWait<'_, R> {
    fn drop(&mut self) {
        crate::fdwatch::unregister(&mut self.reg);
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        let Some(r) = self.run.take() else { return };
        if self
            .exit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        if let Some(_code) = reap_running(&r, false) {
            state::unregister_child(r.pid);
            return;
        }
        // Still running: the registry reaps it later (active_children, the next start, or at
        // exit, where non-daemonic children are joined and daemonic ones terminated).
        state::orphan_child(r.pid, r.reap);
    }
}

pub(crate) fn reap_running(r: &Running, block: bool) -> Option<i32> {
    match &r.reap {
        Reap::Direct => match sys::waitpid(r.pid, block) {
            Ok(c) => c,
            Err(_) => Some(-1),
        },
        Reap::Server(st) => {
            if !sys::poll_readable(st.as_fd(), if block { None } else { Some(Duration::ZERO) })
                .unwrap_or(true)
            {
                return None;
            }
            let mut b = [0u8; 4];
            // SAFETY: b is 4 valid bytes.
            let n = unsafe { libc::read(st.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
            if n == 4 {
                Some(i32::from_le_bytes(b))
            } else {
                // The server went away before reporting: fall back to the pidfd's view.
                Some(-1)
            }
        }
    }
}
