//! [`PoolBuilder`]: the pool's settings, and `build`, which makes the pool's state and
//! starts its workers.
use super::{Inner, Phase, Pool, State, WorkerSlot};
#[cfg(doc)]
use crate::error::TaskError;
use crate::error::{ArgumentsError, BuildError, Result};
use crate::facade::{AtomicBool, AtomicU64};
use crate::fdpass;
use multiproc_process::StartMethod;
use multiproc_process::registry::{self, Task};
use multiproc_ring::WaitStrategy;
use multiproc_shm::fd_passing::collect_fds;
use std::collections::VecDeque;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

type Initializer = (u64, Vec<u8>, Vec<(RawFd, OwnedFd)>);

/// Builds a [`Pool`] (Python's `Pool(processes, initializer, initargs, maxtasksperchild)`).
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    maxtasks: Option<usize>,
    initializer: Option<Result<Initializer, BuildError>>,
    start_method: Option<StartMethod>,
    retries: u32,
    task_timeout: Option<Duration>,
    wait: Option<WaitStrategy>,
}

impl PoolBuilder {
    /// How the hand-offs wait: the worker for its next job, the parent for results, and
    /// `get`/`wait` for the value (default [`WaitStrategy::SpinPark`]: spin briefly, yield,
    /// then sleep). `Spin` gives the lowest `apply` round trip but keeps a CPU busy per
    /// waiting caller and per worker with work flowing (an idle worker parks after 2 ms, and
    /// sequential calls stay on the worker that answered last): use it only with a core to
    /// spare for each; `SpinYield` spins then yields; `Park` sleeps at once (lowest CPU use,
    /// a futex wake-up per hand-off).
    pub fn wait(mut self, strategy: WaitStrategy) -> Self {
        self.wait = Some(strategy);
        self
    }

    /// Number of worker processes (default: the CPU count; 0 is [`BuildError::InvalidProcesses`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A worker exits after this many tasks (a map chunk counts as one) and is replaced
    /// (0 is [`BuildError::InvalidMaxTasks`]; default: no limit).
    pub fn maxtasksperchild(mut self, m: usize) -> Self {
        self.maxtasks = Some(m);
        self
    }

    /// A task each worker runs once when it starts (Python's `initializer`, `initargs`).
    /// Shared objects among the arguments reach every worker, replacements included.
    pub fn initializer<M, T: Task<M>>(mut self, f: T, args: T::Args) -> Self {
        self.initializer = Some(
            registry::entry_of(&f)
                .map_err(|_| BuildError::TaskNotRegistered(std::any::type_name::<T>()))
                .and_then(|e| {
                    let (bytes, fds) = collect_fds(|| postcard::to_allocvec(&args));
                    let bytes = bytes
                        .map_err(|e| BuildError::Arguments(ArgumentsError::encode::<T::Args>(e)))?;
                    let fds = fdpass::dup_all(&fds)
                        .map_err(|e| BuildError::Arguments(ArgumentsError::keep_fds(e)))?;
                    Ok((e.hash(), bytes, fds))
                }),
        );
        self
    }

    /// A time limit for every task (a map chunk counts as one): a task still running after it
    /// fails with [`TaskError::TimeLimit`] (or is retried, see [`retries`](Self::retries)),
    /// and its worker is killed (SIGKILL) and replaced. Python's Pool has none: a hung or
    /// frozen worker blocks `map` forever. Checked every 50 ms.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// The start method of the workers (default: the global one, see
    /// `multiproc::set_start_method`).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.start_method = Some(m);
        self
    }

    /// Retry policy: a job whose worker died while running it is run again up to `n` times
    /// before it fails with [`TaskError::WorkerLost`] (default 0).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, BuildError> {
        let processes = match self.processes {
            Some(0) => return Err(BuildError::InvalidProcesses),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let maxtasks = match self.maxtasks {
            Some(0) => return Err(BuildError::InvalidMaxTasks),
            Some(m) => m as u64,
            None => 0,
        };
        let (initializer, init_fds) = match self.initializer.transpose()? {
            Some((h, b, fds)) => (Some((h, b)), fds),
            None => (None, Vec::new()),
        };
        let inner = Arc::new(Inner {
            st: Mutex::new(State {
                phase: Phase::Running,
                pending: VecDeque::new(),
                outstanding: 0,
                workers: (0..processes)
                    .map(|_| WorkerSlot {
                        generation: 0,
                        pid: 0,
                        proc: None,
                        conn: None,
                        reader: None,
                        held: Default::default(),
                        held_items: 0,
                        held_bytes: 0,
                        next_seq: 1,
                        dead: true,
                        ready: false,
                        given: 0,
                        last_answer: 0,
                    })
                    .collect(),
                threads: Vec::new(),
                broken: None,
                replaced: 0,
                answers: 0,
                failed_starts: 0,
                joiners: 0,
            }),
            cv: Condvar::new(),
            processes,
            maxtasks,
            initializer,
            init_fds,
            start_method: self.start_method,
            retries: self.retries,
            task_timeout: self.task_timeout,
            limits_used: AtomicBool::new(false),
            wait: self.wait.unwrap_or_default(),
            direct_reads: AtomicU64::new(0),
            apply_spin: super::SpinGauge::new(),
        });
        let pool = Pool { inner };
        for i in 0..processes {
            pool.inner.start_worker(i, false)?;
        }
        Ok(pool)
    }
}
