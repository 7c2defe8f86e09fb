//! The pool: workers, dispatch, death handling, and the public calls.
//!
//! Each worker has its own pair of SPSC pipes (jobs in, results out) and two threads in the
//! parent: a *sender* that takes jobs from the shared pending queue into the worker's pipe
//! and records them as *held* by that worker under their sequence number, and a *receiver*
//! that reads results, removes them from the held set and fills the caller's result. When the
//! worker ends (its result pipe reads `Eof`, or a receive timeout finds the process gone), the
//! receiver drains what the worker had sent, reaps it, and settles every job it still held:
//! the one that was running (`seq <= started`) fails with [`TaskError::WorkerLost`] (or is
//! retried when the pool has a retry policy), the ones it never started go back to the front
//! of the queue. Then it starts a replacement. No job is ever left without an owner, so no
//! `get` waits forever.
//!
//! Balance (idle workers pull): work waits in the pool's queue, not in a worker's pipe. A
//! worker takes jobs only once it said hello (it is up). A worker that holds nothing takes the
//! front job at once; one that holds a single job may take one single item ahead of it; a
//! worker that already holds `h` jobs takes one more only while the queue holds more than
//! `8 * processes * h` jobs (and at most [`ITEM_WINDOW`] items), so chunks run ahead only
//! while there is plenty for everyone, and the last `8 * processes` chunks go one at a time to
//! whichever worker is idle. A busy worker never holds a chunk that an idle one could run
//! (at most one single item), except while the queue is long enough that the idle one finds
//! work there too.
//!
//! A synchronous `apply` that sends its job itself reads the result from the worker's result
//! pipe itself (see [`Reader`]): two hand-offs, as a pipe round trip. The receiver reads only
//! while some held job's result is nobody else's to read; otherwise it sleeps on the worker's
//! pidfd and an eventfd, and takes the pipe over when the worker ends.
//!
//! A time limit (per pool or per call): the receiver notes when its worker started the job it
//! runs (the `started` word); a job that runs past its limit gets its worker killed, fails with
//! [`TaskError::TimeLimit`] (or is retried) and the worker is replaced.

mod api;
mod builder;
mod dispatch;
mod encode;
mod held;
mod hooks;
mod imap;
mod pipes;
mod supervisor;

pub use api::Pool;
pub use builder::PoolBuilder;
pub use encode::default_chunksize;
#[cfg(feature = "test-hooks")]
pub use hooks::{__fail_thread_spawns, __stall_next_sender};
pub use imap::IMap;

#[cfg(doc)]
use crate::error::TaskError;
use crate::error::WorkerStartError;
use crate::facade::{AtomicBool, AtomicU64, Ordering};
use crate::result::Sink;
use crate::wire::Payload;
use multiproc_process::{Process, StartMethod};
use multiproc_ring::WaitStrategy;
use pipes::{JobPipe, Reader};
use std::collections::VecDeque;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Single items one worker may hold at once (the deepest pipelining of `apply_async`, reached
/// only while the queue is long, see the module docs).
pub const ITEM_WINDOW: usize = 256;
/// A worker holding `h` jobs takes another only while more than `RUN_AHEAD_FACTOR *
/// processes * h` jobs are queued (see the module docs).
const RUN_AHEAD_FACTOR: usize = 8;
/// How many more jobs than the least-given worker an idle worker may have been given and still
/// be preferred for being the one that answered last. When the least-given one then gets a job,
/// the counts start again from zero: a run of sequential `apply`s stays on the worker that may
/// still be spinning for `TIE_SLACK` jobs, then gives one to the other (with a slack of 2 the
/// counts stayed 2 apart and the calls alternated: a futex wake-up of a parked worker every
/// other call).
const TIE_SLACK: u64 = 64;
/// Under [`WaitStrategy::Spin`] ties are never shared: the worker that answered last keeps
/// them, and the others, idle past the worker's `SPIN_IDLE`, park (`worker::SPIN_IDLE`). A
/// shared tie would go to a parked worker and cost a futex wake-up while the caller spins.
const TIE_SLACK_SPIN: u64 = u64::MAX;
/// How often a receiver with nothing to read checks that its worker still lives.
const LIVENESS_POLL: Duration = Duration::from_millis(50);
/// Bytes of each worker's job and result rings. Both ends map every page of them when the
/// worker starts (`Connection::populate`): a ring has all its pages touched once it wrapped
/// around anyway, and the first big `map` of a fresh pool then pays no page fault per 4 KiB
/// in four places (about a fifth of its faults, measured).
const PIPE_CAPACITY: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fds of the shared objects among a job's arguments (duplicates the job keeps open).
type JobFds = Option<Arc<Vec<OwnedFd>>>;

#[derive(Clone)]
struct Job {
    chunk: u32,
    items: u32,
    payload: Arc<Payload>,
    fds: JobFds,
    sink: Arc<dyn Sink>,
    attempts: u32,
    /// The per-call time limit (else the pool's).
    limit: Option<Duration>,
    /// Its result is read by the caller waiting for it (a synchronous `apply` sent it to the
    /// worker itself), not by the worker's receiver thread. Cleared when the job is requeued.
    direct: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Running,
    Closed,
    Terminated,
}

struct WorkerSlot {
    generation: u64,
    pid: u32,
    proc: Option<Arc<Mutex<Process<()>>>>,
    /// The job pipe's write end, shared by the sender thread and submitters' fast path. A job
    /// gets its `seq` and is sent while this is held, so jobs reach the worker in `seq` order.
    conn: Option<JobConn>,
    /// The result side of the worker, read by its receiver thread or a waiting caller.
    reader: Option<Arc<Reader>>,
    held: held::Held<Job>,
    held_items: usize,
    /// Bytes of the held jobs: the fast paths send only while this stays under half the job
    /// pipe, so their sends never block (a receiver blocked on a full job pipe while its
    /// worker blocks on a full result pipe would deadlock).
    held_bytes: usize,
    next_seq: u64,
    dead: bool,
    /// The worker said it is up (its initializer ran): only then does it take jobs, so a
    /// worker still starting never holds work that a running one could do.
    ready: bool,
    /// Jobs given to this slot's workers so far (breaks ties between idle workers).
    given: u64,
    /// When this slot's worker last answered (a pool-wide result count).
    last_answer: u64,
}

type JobConn = Arc<Mutex<Option<JobPipe>>>;

/// Where a synchronous `apply`'s job went: the caller reads its result there itself.
struct Direct {
    idx: usize,
    generation: u64,
    reader: Arc<Reader>,
}

/// Largest job the submitting thread sends itself (bigger ones go through the sender thread,
/// which may block on a full pipe without blocking the caller).
const FAST_PATH_MAX: usize = 2048;

struct State {
    phase: Phase,
    pending: VecDeque<Job>,
    outstanding: usize,
    workers: Vec<WorkerSlot>,
    threads: Vec<JoinHandle<()>>,
    broken: Option<WorkerStartError>,
    replaced: u64,
    /// Results taken so far (stamps `WorkerSlot::last_answer`).
    answers: u64,
    /// Workers in a row that exited with an error before taking any job (a failing
    /// initializer): at [`MAX_FAILED_STARTS`] the pool stops replacing and fails its queue.
    failed_starts: u32,
    /// Callers in `join_timeout` waiting for the outstanding work (woken by the last result).
    joiners: usize,
}

const MAX_FAILED_STARTS: u32 = 3;

struct Inner {
    st: Mutex<State>,
    cv: Condvar,
    processes: usize,
    maxtasks: u64,
    initializer: Option<(u64, Vec<u8>)>,
    /// The initializer arguments' fds: (number in the encoded arguments, a duplicate we keep).
    init_fds: Vec<(RawFd, OwnedFd)>,
    start_method: Option<StartMethod>,
    retries: u32,
    task_timeout: Option<Duration>,
    /// Whether a per-call time limit was ever given (else receivers skip the check).
    limits_used: AtomicBool,
    /// How every hand-off waits (job pipes, result pipes, `get`).
    wait: WaitStrategy,
    /// Results read by a waiting caller rather than a receiver thread (diagnostics, tests).
    direct_reads: AtomicU64,
    /// Whether such a caller spins before it parks (under `SpinPark`).
    apply_spin: SpinGauge,
}

/// Adaptive spinning of a synchronous `apply`'s caller under [`WaitStrategy::SpinPark`]: it
/// spins (for at most [`SPIN_PAYS`], no yields) before it parks for its result only while that
/// has paid off, i.e. the results came within the spin; else it parks at once, and
/// tries spinning again every [`SPIN_PROBE_EVERY`] calls. Spinning wins on an idle machine (the
/// worker answers within the spin: no futex wake-up on either side), parking wins when the CPUs
/// are busy or the tasks are long (a spinning caller takes the CPU a worker needs: 8-33 µs round
/// trips spinning vs ~3 µs parking on the loaded 2-CPU VM, session 4). As glibc's adaptive
/// mutexes: the past decides.
pub(crate) struct SpinGauge {
    /// 0 (park at once) ..= [`SPIN_SCORE_MAX`]; a result in time adds 1, a late one takes 4.
    score: AtomicU64,
    /// Waits while the score was 0 (every [`SPIN_PROBE_EVERY`]th spins anyway).
    parked_calls: AtomicU64,
    /// Waits that spun (diagnostics, tests).
    spins: AtomicU64,
}

/// How long an adaptive caller spins for its result before it parks.
const SPIN_PAYS: Duration = Duration::from_micros(20);
const SPIN_SCORE_MAX: u64 = 16;
const SPIN_PROBE_EVERY: u64 = 64;

impl SpinGauge {
    fn new() -> SpinGauge {
        SpinGauge {
            score: AtomicU64::new(SPIN_SCORE_MAX / 2),
            parked_calls: AtomicU64::new(0),
            spins: AtomicU64::new(0),
        }
    }

    /// Whether this wait should spin first.
    fn should_spin(&self) -> bool {
        // Relaxed throughout: a heuristic; a stale value costs one wait's strategy.
        self.score.load(Ordering::Relaxed) > 0
            || self
                .parked_calls
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(SPIN_PROBE_EVERY)
    }

    /// A wait spun for at most [`SPIN_PAYS`]; `hit`: it ended within it.
    fn record(&self, hit: bool) {
        self.spins.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(if hit {
                    (s + 1).min(SPIN_SCORE_MAX)
                } else {
                    s.saturating_sub(4)
                })
            });
    }
}
