//! The start methods ([`StartMethod`]) and the process-wide settings about them: the default
//! method (`set_start_method`/`get_start_method`) and the refuse-threaded-fork flag.

use crate::error::StartMethodAlreadySet;
use crate::facade::{AtomicBool, AtomicU8, Ordering};

/// How a child process is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartMethod {
    /// Re-exec `/proc/self/exe`; the child's `init()` runs the task. Safe in threaded parents.
    /// The default.
    Spawn,
    /// `fork()`: the child is a copy of the parent and may run a closure. Meant for parents that
    /// run a single thread: another thread may hold a lock (a `Mutex`, std's environment lock,
    /// a logger's) at the moment of the fork, and the child would deadlock on it. multiproc's own
    /// path in the child takes no such lock; forking a threaded parent logs a warning once per
    /// process (as Python 3.12's `DeprecationWarning`), and
    /// [`ProcessBuilder::refuse_if_threaded`](crate::ProcessBuilder::refuse_if_threaded) /
    /// [`set_refuse_fork_if_threaded`] refuse it.
    Fork,
    /// A fork server (a clean re-exec'd copy started on first use) forks each child.
    ForkServer,
}

impl StartMethod {
    /// Python's name: "spawn", "fork", "forkserver".
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
            StartMethod::ForkServer => "forkserver",
        }
    }
}

/// Sets the default start method. A second call is an error unless `force` (as in Python).
pub fn set_start_method(method: StartMethod, force: bool) -> Result<(), StartMethodAlreadySet> {
    store(method, force).map_err(StartMethodAlreadySet)
}

/// The default start method ([`StartMethod::Spawn`] unless set).
pub fn get_start_method() -> StartMethod {
    stored().unwrap_or(StartMethod::Spawn)
}

/// Makes [`StartMethod::Fork`] refuse to fork a process that runs other threads
/// ([`StartError::ThreadedFork`](crate::StartError::ThreadedFork)) instead of logging a warning,
/// for every process that does not choose with
/// [`ProcessBuilder::refuse_if_threaded`](crate::ProcessBuilder::refuse_if_threaded). Off by
/// default.
pub fn set_refuse_fork_if_threaded(refuse: bool) {
    // Relaxed: a setting read at the next fork; no data hangs on it.
    REFUSE_THREADED_FORK.store(refuse, Ordering::Relaxed);
}

static REFUSE_THREADED_FORK: AtomicBool = AtomicBool::new(false);

/// The global [`set_refuse_fork_if_threaded`] setting (what a process uses unless its builder
/// chose with [`ProcessBuilder::refuse_if_threaded`](crate::ProcessBuilder::refuse_if_threaded)).
pub(crate) fn refuse_fork_if_threaded() -> bool {
    // Relaxed: as the store in `set_refuse_fork_if_threaded`.
    REFUSE_THREADED_FORK.load(Ordering::Relaxed)
}

/// Every start method this platform has.
pub fn get_all_start_methods() -> [StartMethod; 3] {
    [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ]
}

/// The default start method chosen with `set_start_method`: 0 unset, else 1 + its index. An
/// atomic, not a lock, so a forked child never finds it held by a thread that did not survive.
static START_METHOD: AtomicU8 = AtomicU8::new(0);

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::ForkServer,
];

/// The default start method, if one was set.
fn stored() -> Option<StartMethod> {
    // Relaxed: a setting; no other data is published with it.
    match START_METHOD.load(Ordering::Relaxed) {
        0 => None,
        n => METHODS.get(n as usize - 1).copied(),
    }
}

/// Sets the default start method; without `force`, only if none is set (else the old one).
fn store(m: StartMethod, force: bool) -> Result<(), StartMethod> {
    let code = METHODS
        .iter()
        .position(|&x| x == m)
        .expect("every method listed") as u8
        + 1;
    if force {
        START_METHOD.store(code, Ordering::Relaxed);
        return Ok(());
    }
    // Relaxed: as above; the compare-exchange alone decides which caller set it first.
    match START_METHOD.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => Ok(()),
        Err(old) => Err(METHODS[old as usize - 1]),
    }
}
