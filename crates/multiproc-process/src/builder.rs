//! [`ProcessBuilder`] (name, daemon flag, start method, environment, ...) and the `Process`
//! constructors that go through it: `Process::builder`, `new`, `spawn` and `fork`.

use crate::error::{CodecError, StartError};
use crate::process::{Process, Target};
use crate::registry::{self, ForkReturn, Task};
use crate::start_method::StartMethod;
use crate::state;
use multiproc_shm::fd_passing::collect_fds;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Builds a [`Process`]: name, daemon flag, start method, environment, working directory.
#[derive(Clone, Debug, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    handshake_timeout: Option<Duration>,
    refuse_if_threaded: Option<bool>,
    corrupt_build_id: bool,
    fail_pidfd_open: bool,
}

/// How long a parent waits for a spawned child's handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

impl ProcessBuilder {
    /// A builder with Python's defaults (name `Process-N`, daemon inherited, default method).
    pub fn new() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// The child's name (its `current_process().name`, and the name in log lines).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon dies with its parent and may not start children. Default: this process's flag.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// The start method for this process (default:
    /// [`get_start_method`](crate::get_start_method) at `start`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Sets an environment variable in the child (spawn: in its environment from exec on;
    /// forkserver: set by the child before the task runs, over the server's environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The child's working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// How long `start` waits for a spawned child to answer (default 20 s). A child that does not
    /// answer (its `main` lacks `multiproc::init()`) is killed and `start` fails.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// With [`StartMethod::Fork`]: refuse to fork when this process runs other threads
    /// ([`StartError::ThreadedFork`]) instead of forking with a warning. Default: the global
    /// [`set_refuse_fork_if_threaded`](crate::set_refuse_fork_if_threaded) (off). multiproc's own
    /// spawner thread does not count.
    pub fn refuse_if_threaded(mut self, refuse: bool) -> Self {
        self.refuse_if_threaded = Some(refuse);
        self
    }

    /// Test hook (feature `test-hooks`, for this crate's tests): send a wrong build id so the
    /// child refuses the parent.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __corrupt_build_id(mut self) -> Self {
        self.corrupt_build_id = true;
        self
    }

    /// Test hook (feature `test-hooks`): act as if `pidfd_open` failed for the new child (in the fork server for
    /// ForkServer), after the child was created.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __fail_pidfd_open(mut self) -> Self {
        self.fail_pidfd_open = true;
        self
    }

    /// An unstarted process that will run `task(args)` (Python's `Process(target=, args=)`).
    ///
    /// The arguments are serialized now; shared objects among them are passed as handles (the
    /// fds of anonymous segments are kept open in the child at the same numbers).
    pub fn target<M, T: Task<M>>(
        self,
        task: T,
        args: T::Args,
    ) -> Result<Process<T::Output>, StartError> {
        let entry = match registry::entry_for::<T>() {
            Ok(e) => e,
            Err(e) if self.method == Some(StartMethod::Fork) => {
                let _ = e;
                return Ok(self.closure(move || task.call(args)));
            }
            Err(e) => return Err(e),
        };
        let (bytes, fds) = collect_fds(|| postcard::to_allocvec(&args));
        let bytes =
            bytes.map_err(|e| CodecError::new::<T::Args>("encoding", "the task arguments", e))?;
        if fds.len() + 3 > crate::forkserver::MAX_FDS {
            return Err(StartError::TooManyFds(
                fds.len(),
                crate::forkserver::MAX_FDS - 3,
            ));
        }
        Ok(self.build(Target::Registered {
            entry,
            args: bytes,
            fds,
            _keep: Box::new(args),
        }))
    }

    /// An unstarted process that will run a closure; it can only start with
    /// [`StartMethod::Fork`], which this sets.
    pub fn closure<R, F, O>(mut self, f: F) -> Process<R>
    where
        O: ForkReturn<R>,
        F: FnOnce() -> O + Send + 'static,
    {
        self.method = Some(StartMethod::Fork);
        self.build(Target::Closure(Box::new(move || f().encode())))
    }

    /// [`ProcessBuilder::target`] then [`Process::start`].
    pub fn spawn<M, T: Task<M>>(
        self,
        task: T,
        args: T::Args,
    ) -> Result<Process<T::Output>, StartError> {
        let mut p = self.target(task, args)?;
        p.start()?;
        Ok(p)
    }

    fn build<R>(self, target: Target) -> Process<R> {
        let (identity, default_name, inherited_daemon) = state::with_current(|c| {
            c.counter += 1;
            let mut id = c.identity.clone();
            id.push(c.counter);
            let name = format!(
                "Process-{}",
                id.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            );
            (id, name, c.daemon)
        });
        Process {
            name: self.name.unwrap_or(default_name),
            daemon: self.daemon.unwrap_or(inherited_daemon),
            method: self.method,
            env: self.env,
            cwd: self.cwd,
            handshake_timeout: self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            refuse_if_threaded: self.refuse_if_threaded,
            corrupt_build_id: self.corrupt_build_id,
            fail_pidfd_open: self.fail_pidfd_open,
            identity,
            target: Some(target),
            run: None,
            exit: Mutex::new(None),
            closed: false,
            _r: PhantomData,
        }
    }
}

impl Process<()> {
    /// A builder.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::new()
    }
}

impl<R> Process<R> {
    /// An unstarted process running `task(args)` with default settings.
    pub fn new<M, T: Task<M, Output = R>>(
        task: T,
        args: T::Args,
    ) -> Result<Process<R>, StartError> {
        registry::assert_fn_item::<T>();
        ProcessBuilder::new().target(task, args)
    }

    /// Starts `task(args)` in a new process with the default start method.
    pub fn spawn<M, T: Task<M, Output = R>>(
        task: T,
        args: T::Args,
    ) -> Result<Process<R>, StartError> {
        registry::assert_fn_item::<T>();
        ProcessBuilder::new().spawn(task, args)
    }

    /// Forks a child running the closure `f` (see [`StartMethod::Fork`] for when that is safe).
    ///
    /// The closure returns a serde type, which [`Process::join`] hands back; a closure that
    /// never returns (a worker loop, `std::process::exit`) makes a `Process<()>` without any
    /// annotation (a diverging closure with another result type is written `|| -> T { .. }`).
    ///
    /// ```
    /// use multiproc_process::Process;
    /// multiproc_process::init();
    /// let mut p = Process::fork(|| std::process::exit(3)).unwrap();
    /// let _ = p.join(); // no result: the child exited
    /// assert_eq!(p.exitcode(), Some(3));
    /// let _worker = || Process::fork(|| loop {
    ///     std::thread::park();
    /// });
    /// ```
    pub fn fork<F, O>(f: F) -> Result<Process<R>, StartError>
    where
        O: ForkReturn<R>,
        F: FnOnce() -> O + Send + 'static,
    {
        let mut p = ProcessBuilder::new().closure(f);
        p.start()?;
        Ok(p)
    }
}
