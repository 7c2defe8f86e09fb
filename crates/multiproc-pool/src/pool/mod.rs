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
use crate::error::{
    BuildError, PoolJoinError, ReadyError, Result, SubmitError, TaskError, WorkerStartError,
};
use crate::facade::{AtomicBool, AtomicU64, Ordering};
use crate::fdpass;
use crate::result::{
    ApplySink, AsyncResult, Callbacks, IMapSink, IMapState, MapSink, Sink, Slot, lock,
};
use crate::wire::{self, JobWriter};
use crate::worker::FdArg;
use crate::worker::{WorkerArgs, pool_worker};
use multiproc_channel::{Connection, Pipe, PipeOptions, Postcard, RecvError};
use multiproc_process::registry::{self, Task};
use multiproc_process::{JoinError, Process, StartMethod};
use multiproc_ring::WaitStrategy;
use multiproc_shm::fd_passing::collect_fds;
use multiproc_sync::RawValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
/// How often a receiver with nothing to read checks that its worker still lives.
const LIVENESS_POLL: Duration = Duration::from_millis(50);
const PIPE_CAPACITY: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The task last submitted from this thread and its registry hash (see `entry_hash`).
    static LAST_TASK: std::cell::Cell<Option<(std::any::TypeId, u64)>> =
        const { std::cell::Cell::new(None) };
}

static WORKER_COUNTER: AtomicU64 = AtomicU64::new(0);
static JOB_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Test hook: thread starts of a new worker that fail on purpose (see `__fail_thread_spawns`).
#[cfg(feature = "test-hooks")]
static FAIL_THREAD_SPAWNS: crate::facade::AtomicU32 = crate::facade::AtomicU32::new(0);

/// Test hook: milliseconds the next sender thread to find work waits before taking it.
#[cfg(feature = "test-hooks")]
static STALL_NEXT_SENDER_MS: AtomicU64 = AtomicU64::new(0);

/// Test hook (feature `test-hooks`, for this crate's tests): the next sender thread that finds
/// work for its worker waits `d` before taking the job (between its check of the worker and
/// the take), once.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn __stall_next_sender(d: Duration) {
    STALL_NEXT_SENDER_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

fn stall_sender_hook() {
    #[cfg(feature = "test-hooks")]
    stall_sender_hook_armed();
}

#[cfg(feature = "test-hooks")]
fn stall_sender_hook_armed() {
    // Relaxed: a test hook; nothing is published through it. A load first: no locked
    // read-modify-write per job sent when the hook is unarmed.
    if STALL_NEXT_SENDER_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let ms = STALL_NEXT_SENDER_MS.swap(0, Ordering::Relaxed);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Test hook (feature `test-hooks`, for this crate's tests): the next `n` worker starts fail
/// to start their sender thread (after the receiver thread started), as when the process runs
/// out of threads.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn __fail_thread_spawns(n: u32) {
    FAIL_THREAD_SPAWNS.store(n, Ordering::Relaxed);
}

/// Whether this thread start fails on purpose (test hook; always false without the feature).
fn fail_thread_spawn_hook() -> bool {
    #[cfg(feature = "test-hooks")]
    return FAIL_THREAD_SPAWNS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    #[cfg(not(feature = "test-hooks"))]
    false
}

/// The fds of the shared objects among a job's arguments (duplicates the job keeps open).
type JobFds = Option<Arc<Vec<OwnedFd>>>;

#[derive(Clone)]
struct Job {
    chunk: u32,
    items: u32,
    payload: Arc<Vec<u8>>,
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
    held: BTreeMap<u64, Job>,
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

/// The write side of a worker: its job pipe and its fd socket.
struct JobPipe {
    conn: Connection<Vec<u8>>,
    sock: OwnedFd,
}

impl JobPipe {
    /// Sends job `seq` (its fds first). False if the worker is gone.
    fn send(&mut self, buf: &mut Vec<u8>, seq: u64, payload: &[u8], fds: &JobFds) -> bool {
        if let Some(f) = fds {
            let raw: Vec<RawFd> = f.iter().map(|o| o.as_raw_fd()).collect();
            if fdpass::send_fds(self.sock.as_fd(), &raw).is_err() {
                return false;
            }
        }
        buf.clear();
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(payload);
        self.conn.send_bytes(buf, 0, None).is_ok()
    }
}

type JobConn = Arc<Mutex<Option<JobPipe>>>;

/// The result pipe's read end and its receive buffer.
struct RxEnd {
    conn: Connection<Vec<u8>>,
    buf: Vec<u8>,
}

/// The result side of one worker (one generation). Whoever holds `rx` reads results: the
/// worker's receiver thread while some held job's result is nobody else's to read (`need`),
/// else a caller of `apply` waiting for its own result, which reads the pipe itself (two
/// hand-offs per `apply`: caller -> worker -> caller, as a pipe round trip). An idle receiver
/// sleeps in `poll(2)` on the worker's pidfd and an eventfd (`wake`), so it notices the
/// worker's end at once and is woken when a job it must read for is sent.
struct Reader {
    rx: Mutex<RxEnd>,
    /// Held jobs whose results the receiver thread must read (not a direct caller's), plus
    /// one until the worker's hello arrived.
    need: AtomicU64,
    /// The receiver is (about to be) asleep in `poll`: a waker writes the eventfd.
    idle: AtomicBool,
    /// The receiver wants the pipe (the worker ended, or a direct reader saw its end): direct
    /// readers give it up and wait for their result as any caller does.
    takeover: AtomicBool,
    wake: OwnedFd,
    pidfd: Option<OwnedFd>,
}

impl Reader {
    fn must_read(&self) -> bool {
        // SeqCst: with `idle` (store SeqCst in `receiver`, load SeqCst in `wake`), a job
        // counted after the receiver's check is always followed by an eventfd write.
        self.need.load(Ordering::SeqCst) > 0 || self.takeover.load(Ordering::SeqCst)
    }

    /// Wakes the receiver if it sleeps (or is about to).
    fn wake(&self) {
        // SeqCst: pairs with the receiver's `idle` store and `need` re-check (see `must_read`).
        if self.idle.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Writes the eventfd (the receiver's next or current sleep ends at once).
    fn notify(&self) {
        {
            let one: u64 = 1;
            // SAFETY: `wake` is an eventfd we own; 8 valid bytes are written. A full counter
            // (EAGAIN) already wakes the reader.
            unsafe {
                libc::write(
                    self.wake.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// Counts a job the receiver must read for, waking it.
    fn add_need(&self) {
        // SeqCst: see `must_read`.
        self.need.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    fn sub_need(&self) {
        // Relaxed: only the receiver's decision to read depends on it, and a stale non-zero
        // value costs one more bounded receive.
        let _ = self
            .need
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Sleeps until woken, the worker's end, or `d`.
    fn sleep(&self, d: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid, writable pollfds (a negative fd is ignored by poll); errors and
        // EINTR only end the sleep early.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, d.as_millis().min(1000) as libc::c_int) };
        if fds[0].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: a non-blocking eventfd we own; 8 writable bytes.
            unsafe {
                libc::read(
                    self.wake.as_raw_fd(),
                    (&mut v as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd returned is ours.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Where a synchronous `apply`'s job went: the caller reads its result there itself.
struct Direct {
    idx: usize,
    generation: u64,
    reader: Arc<Reader>,
}

/// Order of idle-worker candidates: fewest held, not over the tie slack, answered last.
type TieKey = (usize, bool, std::cmp::Reverse<u64>);

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
}

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
    /// waiting worker and caller (and a result thread per worker): use it only with a core
    /// to spare for each; `SpinYield` spins then yields; `Park` sleeps at once (lowest CPU
    /// use, a futex wake-up per hand-off).
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
                    let bytes = bytes.map_err(|e| {
                        BuildError::Arguments(registry::codec_message(
                            "encoding",
                            "the initializer's arguments",
                            std::any::type_name::<T::Args>(),
                            &e,
                        ))
                    })?;
                    let fds = fdpass::dup_all(&fds).map_err(|e| {
                        BuildError::Arguments(format!("keeping the initializer's fds: {e}"))
                    })?;
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
                        held: BTreeMap::new(),
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
        });
        let pool = Pool { inner };
        for i in 0..processes {
            pool.inner.start_worker(i, false)?;
        }
        Ok(pool)
    }
}

impl Inner {
    /// Starts the worker of slot `idx` (a new generation) and its two threads.
    fn start_worker(
        self: &Arc<Inner>,
        idx: usize,
        replacing: bool,
    ) -> Result<(), WorkerStartError> {
        let opts = PipeOptions {
            capacity: PIPE_CAPACITY,
            ..PipeOptions::default()
        };
        let (jobs_r, mut jobs_w) = Pipe::simplex_with::<Vec<u8>, Postcard>(opts)
            .map_err(WorkerStartError::step("creating its job pipe"))?;
        let (mut res_r, res_w) = Pipe::simplex_with::<Vec<u8>, Postcard>(opts)
            .map_err(WorkerStartError::step("creating its result pipe"))?;
        jobs_w.set_wait_strategy(self.wait);
        res_r.set_wait_strategy(self.wait);
        let started =
            RawValue::new(0u64).map_err(WorkerStartError::step("creating its started word"))?;
        let (sock, child_sock) =
            fdpass::socketpair().map_err(WorkerStartError::step("creating its fd socket"))?;
        let args = WorkerArgs {
            jobs: jobs_r,
            results: res_w,
            started: started.clone(),
            sock: FdArg(child_sock.as_raw_fd()),
            maxtasks: self.maxtasks,
            wait: crate::worker::wait_code(self.wait),
            initializer: self.initializer.clone(),
            init_fds: self
                .init_fds
                .iter()
                .map(|(n, fd)| (*n, FdArg(fd.as_raw_fd())))
                .collect(),
        };
        let n = WORKER_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        let mut b = Process::builder()
            .name(format!("PoolWorker-{n}"))
            .daemon(true);
        if let Some(m) = self.start_method {
            b = b.start_method(m);
        }
        let p = b
            .spawn(pool_worker, args)
            .map_err(WorkerStartError::step("starting its process"))?;
        drop(child_sock);
        let pid = p.pid().unwrap_or(0);
        let wake = match eventfd() {
            Ok(w) => w,
            Err(e) => {
                let mut p = p;
                let _ = p.kill();
                let _ = p.join_timeout(Duration::from_secs(5));
                return Err(WorkerStartError::step("creating its eventfd")(e));
            }
        };
        // Without a pidfd the idle receiver still notices the end at its liveness poll.
        let pidfd = p.sentinel().ok().and_then(|f| f.try_clone_to_owned().ok());
        let reader = Arc::new(Reader {
            rx: Mutex::new(RxEnd {
                conn: res_r,
                buf: vec![0u8; 64 * 1024],
            }),
            need: AtomicU64::new(1),
            idle: AtomicBool::new(false),
            takeover: AtomicBool::new(false),
            wake,
            pidfd,
        });
        let proc = Arc::new(Mutex::new(p));
        // Join the threads of workers that ended (each replaced worker leaves two).
        let finished: Vec<JoinHandle<()>> = {
            let mut st = lock(&self.st);
            let (done, live) = std::mem::take(&mut st.threads)
                .into_iter()
                .partition(|h| h.is_finished());
            st.threads = live;
            done
        };
        for h in finished {
            let _ = h.join();
        }
        let kill_it = |proc: &Arc<Mutex<Process<()>>>| {
            let mut p = lock(proc);
            let _ = p.kill();
            let _ = p.join_timeout(Duration::from_secs(5));
        };
        let mut st = lock(&self.st);
        if st.phase == Phase::Terminated {
            drop(st);
            let mut p = lock(&proc);
            let _ = p.kill();
            let _ = p.join_timeout(Duration::from_secs(5));
            return Ok(());
        }
        let slot = &mut st.workers[idx];
        slot.generation += 1;
        let generation = slot.generation;
        slot.pid = pid;
        slot.proc = Some(proc.clone());
        let conn: JobConn = Arc::new(Mutex::new(Some(JobPipe { conn: jobs_w, sock })));
        slot.conn = Some(conn.clone());
        slot.reader = Some(reader.clone());
        slot.held.clear();
        slot.held_items = 0;
        slot.held_bytes = 0;
        slot.next_seq = 1;
        slot.dead = false;
        slot.ready = false;
        // All or nothing: the receiver first (it owns the worker's end), then the sender; if
        // either cannot start, the slot is given up (a new generation, so the receiver, if it
        // runs, settles nothing), the worker killed and reaped, and the caller retries.
        let give_up =
            |mut st: std::sync::MutexGuard<'_, State>, what: &'static str, e: std::io::Error| {
                let slot = &mut st.workers[idx];
                slot.generation += 1;
                slot.dead = true;
                slot.proc = None;
                slot.conn = None;
                slot.reader = None;
                drop(st);
                kill_it(&proc);
                WorkerStartError::step(what)(e)
            };
        let me = self.clone();
        let (p2, started2) = (proc.clone(), started.clone());
        let h_recv = match std::thread::Builder::new()
            .name(format!("pool-recv-{idx}"))
            .spawn(move || me.receiver(idx, generation, reader, started2, p2, pid))
        {
            Ok(h) => h,
            Err(e) => return Err(give_up(st, "starting its receiver thread", e)),
        };
        st.threads.push(h_recv);
        let me = self.clone();
        let spawned = if fail_thread_spawn_hook() {
            Err(std::io::Error::other("test hook: thread start fails"))
        } else {
            std::thread::Builder::new()
                .name(format!("pool-send-{idx}"))
                .spawn(move || me.sender(idx, generation, conn))
        };
        match spawned {
            Ok(h) => st.threads.push(h),
            Err(e) => return Err(give_up(st, "starting its sender thread", e)),
        }
        if replacing {
            st.replaced += 1;
        }
        drop(started);
        self.cv.notify_all();
        Ok(())
    }

    /// Whether worker `slot` may take the job at the front of the queue (`pending` jobs
    /// queued): at once when it holds nothing, else only while the queue is long (see the
    /// module docs: idle workers pull).
    fn has_room(&self, slot: &WorkerSlot, front_items: usize, pending: usize) -> bool {
        let h = slot.held.len();
        !slot.dead
            && slot.ready
            && (h == 0
                // One single item ahead of the running job, always: the worker does not wait
                // for the parent between items (at the end, a worker holds at most one item
                // that an idle one could run).
                || (h == 1 && front_items == 1)
                || (pending > RUN_AHEAD_FACTOR * self.processes * h
                    && slot.held_items + front_items <= ITEM_WINDOW
                    && h < ITEM_WINDOW))
    }

    /// Under the worker's connection lock: takes the front job for worker `idx` (if it has
    /// room), giving it the next `seq` and recording it as held. If the job's sink is `own`
    /// (the submitter of a synchronous `apply` sends its own job), its result is left to the
    /// caller to read (`Job::direct`); else the worker's receiver is told to read it.
    fn take_for(
        &self,
        st: &mut State,
        idx: usize,
        own: Option<&Arc<dyn Sink>>,
    ) -> Option<(u64, Arc<Vec<u8>>, JobFds)> {
        let front_items = st.pending.front()?.items as usize;
        if st.phase == Phase::Terminated
            || !self.has_room(&st.workers[idx], front_items, st.pending.len())
        {
            return None;
        }
        let mut job = st.pending.pop_front()?;
        let slot = &mut st.workers[idx];
        job.direct = own.is_some_and(|o| Arc::ptr_eq(o, &job.sink));
        if !job.direct
            && let Some(r) = &slot.reader
        {
            r.add_need();
        }
        let seq = slot.next_seq;
        slot.next_seq += 1;
        slot.given += 1;
        let before = slot.given - 1;
        let max_others = st
            .workers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != idx)
            .map(|(_, w)| w.given)
            .max()
            .unwrap_or(0);
        if max_others > before.saturating_add(TIE_SLACK) {
            // The least-given worker got one: the tie counts start again (see TIE_SLACK).
            for w in &mut st.workers {
                w.given = 0;
            }
        }
        let slot = &mut st.workers[idx];
        slot.held_items += front_items;
        slot.held_bytes += job.payload.len() + 64;
        let payload = job.payload.clone();
        let fds = job.fds.clone();
        slot.held.insert(seq, job);
        Some((seq, payload, fds))
    }

    /// Workers with room for the front job, least loaded first (empty if the front job is
    /// too big for the submitter's fast path).
    fn fast_candidates(&self, st: &State) -> Vec<(usize, JobConn)> {
        let Some(front) = st.pending.front() else {
            return Vec::new();
        };
        // Jobs with fds go through the sender thread: their `sendmsg` may block on a full
        // socket, which must never block a receiver (its worker may wait on it).
        if front.payload.len() > FAST_PATH_MAX || front.fds.is_some() {
            return Vec::new();
        }
        // Least loaded first; among equals, the worker that answered last (it may still be
        // spinning on its ring: no futex wake-up), unless it was given more than
        // `TIE_SLACK` jobs over the least-given one (so that idle workers share ties instead
        // of one taking them all).
        let min_given = st.workers.iter().map(|w| w.given).min().unwrap_or(0);
        let mut c: Vec<(TieKey, usize, JobConn)> = st
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| self.has_room(w, front.items as usize, st.pending.len()))
            .filter(|(_, w)| w.held_bytes + front.payload.len() + 64 <= PIPE_CAPACITY / 2)
            .filter_map(|(i, w)| {
                let over = w.given > min_given + TIE_SLACK;
                let key = (w.held.len(), over, std::cmp::Reverse(w.last_answer));
                w.conn.clone().map(|c| (key, i, c))
            })
            .collect();
        c.sort_by_key(|x| x.0);
        c.into_iter().map(|(_, i, c)| (i, c)).collect()
    }

    /// Worker `idx`'s connection if it may take the front job on the fast path (the
    /// conditions of [`fast_candidates`](Self::fast_candidates), for one worker).
    fn fast_conn_of(&self, st: &State, idx: usize) -> Option<JobConn> {
        let front = st.pending.front()?;
        let w = &st.workers[idx];
        (front.payload.len() <= FAST_PATH_MAX
            && front.fds.is_none()
            && self.has_room(w, front.items as usize, st.pending.len())
            && w.held_bytes + front.payload.len() + 64 <= PIPE_CAPACITY / 2)
            .then(|| w.conn.clone())
            .flatten()
    }

    /// The submitter's fast path: send the front job to a worker with room straight from the
    /// calling thread (no hand-off to a sender thread). Returns false if it could not; with
    /// `own`, also where the job went if it was the caller's own (see `take_for`).
    fn try_dispatch(
        &self,
        candidates: Vec<(usize, JobConn)>,
        buf: &mut Vec<u8>,
        own: Option<&Arc<dyn Sink>>,
    ) -> (bool, Option<Direct>) {
        for (idx, conn) in candidates {
            let Ok(mut g) = conn.try_lock() else {
                continue;
            };
            let Some(jobs) = g.as_mut() else {
                continue;
            };
            let (taken, direct) = {
                let mut st = lock(&self.st);
                if st.workers[idx]
                    .conn
                    .as_ref()
                    .is_none_or(|c| !Arc::ptr_eq(c, &conn))
                {
                    continue;
                }
                let taken = self.take_for(&mut st, idx, own);
                let w = &st.workers[idx];
                let direct = match (&taken, &w.reader) {
                    (Some((seq, ..)), Some(r)) if w.held.get(seq).is_some_and(|j| j.direct) => {
                        Some(Direct {
                            idx,
                            generation: w.generation,
                            reader: r.clone(),
                        })
                    }
                    _ => None,
                };
                (taken, direct)
            };
            let Some((seq, payload, fds)) = taken else {
                continue;
            };
            // A failed send means the worker died: its receiver settles the job.
            let _ = jobs.send(buf, seq, &payload, &fds);
            return (true, direct);
        }
        (false, None)
    }

    fn sender(&self, idx: usize, generation: u64, conn: JobConn) {
        let mut buf = Vec::new();
        loop {
            // Wait (without the connection lock) until there is work this worker may take.
            {
                let mut st = lock(&self.st);
                loop {
                    let phase = st.phase;
                    let slot = &st.workers[idx];
                    if slot.generation != generation || slot.dead || phase == Phase::Terminated {
                        return;
                    }
                    let front_items = st.pending.front().map(|j| j.items as usize);
                    if let Some(n) = front_items {
                        if self.has_room(slot, n, st.pending.len()) {
                            break;
                        }
                    } else if phase == Phase::Closed {
                        drop(st);
                        // The worker reads Eof after its last job and exits.
                        if let Some(mut c) = lock(&conn).take() {
                            c.conn.close();
                        }
                        return;
                    }
                    st = self
                        .cv
                        .wait_timeout(st, Duration::from_millis(200))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            stall_sender_hook();
            let mut g = lock(&conn);
            let Some(jobs) = g.as_mut() else {
                return;
            };
            let taken = {
                let mut st = lock(&self.st);
                // The pool lock was dropped since the check above: if this worker ended and was
                // replaced meanwhile, its slot now belongs to the replacement, and a job taken
                // for that slot here would be sent down this (dead) worker's pipe, never to run,
                // while the replacement's sequence numbers skip it: the job was later failed
                // with a spurious `WorkerLost` (or, without maxtasksperchild, waited for
                // forever). Only this generation's slot may take work through this pipe.
                let slot = &st.workers[idx];
                if slot.generation != generation || slot.dead {
                    return;
                }
                self.take_for(&mut st, idx, None)
            };
            let Some((seq, payload, fds)) = taken else {
                continue;
            };
            if !jobs.send(&mut buf, seq, &payload, &fds) {
                // The worker is gone; its receiver settles what it held.
                return;
            }
            drop(g);
            if buf.capacity() > 1 << 22 {
                buf = Vec::new();
            }
        }
    }

    /// The worker's result thread: reads results while some held job's result is nobody
    /// else's to read, else sleeps on the worker's pidfd and its wake-up eventfd; at each
    /// 50 ms without news it checks the worker's time limit and liveness. When the worker
    /// ends it takes the pipe over (direct readers give it up), drains it and settles.
    fn receiver(
        self: &Arc<Inner>,
        idx: usize,
        generation: u64,
        reader: Arc<Reader>,
        started: RawValue<u64>,
        proc: Arc<Mutex<Process<()>>>,
        pid: u32,
    ) {
        let mut draining = false;
        let started_word = started.as_atomic();
        // The job the worker was last seen running, and since when (for the time limit).
        let mut running: (u64, Instant) = (0, Instant::now());
        let mut timed_out: Option<(u64, Duration)> = None;
        // Whether the worker is gone; else checks its time limit.
        let mut gone = |me: &Inner| -> bool {
            if !lock(&proc).is_alive() {
                return true;
            }
            if timed_out.is_none() {
                // Relaxed: only a hint of progress; the settling reads it with Acquire after
                // the worker is reaped.
                let seq = started_word.load(Ordering::Relaxed);
                if seq != running.0 {
                    running = (seq, Instant::now());
                } else if let Some(limit) = me.limit_of(idx, generation, seq)
                    && running.1.elapsed() >= limit
                {
                    timed_out = Some((seq, limit));
                    let _ = lock(&proc).kill();
                }
            }
            false
        };
        loop {
            if !draining && !reader.must_read() {
                // SeqCst: see `Reader::must_read`.
                reader.idle.store(true, Ordering::SeqCst);
                if !reader.must_read() {
                    reader.sleep(LIVENESS_POLL);
                }
                reader.idle.store(false, Ordering::Relaxed);
                if gone(self) {
                    draining = true;
                    reader.takeover.store(true, Ordering::SeqCst);
                }
                continue;
            }
            let mut g = lock(&reader.rx);
            let RxEnd { conn, buf } = &mut *g;
            let wait = if draining {
                Duration::ZERO
            } else {
                LIVENESS_POLL
            };
            match conn.recv_bytes_into_timeout(buf, 0, wait) {
                Ok(n) => {
                    self.on_result(idx, generation, &buf[..n]);
                    // Shrink only after a message was taken: shrinking right after growing
                    // for a big one would ask for it again, forever.
                    if buf.len() > 1 << 24 {
                        *buf = vec![0u8; 64 * 1024];
                    }
                }
                Err(RecvError::BufferTooShort { needed }) => buf.resize(needed, 0),
                Err(RecvError::Timeout) if draining => break,
                Err(RecvError::Timeout) => {
                    drop(g);
                    // Gone: read what it wrote before dying, then settle the rest.
                    if gone(self) {
                        draining = true;
                        reader.takeover.store(true, Ordering::SeqCst);
                    }
                }
                Err(_) => break,
            }
        }
        reader.takeover.store(true, Ordering::SeqCst);
        self.on_worker_end(idx, generation, &started, &proc, pid, timed_out);
    }

    /// A synchronous `apply`'s caller reads its worker's result pipe itself until `done`
    /// (results of other jobs it reads are delivered as the receiver would, their callbacks
    /// run on this thread). It gives up, and waits as any caller, when the worker ends (the
    /// receiver takes the pipe over and settles) or while the receiver reads.
    fn read_direct(&self, d: &Direct, done: &dyn Fn() -> bool, wait_a_bit: &dyn Fn()) {
        loop {
            // SeqCst: pairs with the receiver's store before it takes the pipe.
            if done() || d.reader.takeover.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut g) = d.reader.rx.try_lock() else {
                // The receiver reads (other jobs' results, ours with them): wait for ours a
                // little, then look again (it stops reading once it has nothing to read).
                wait_a_bit();
                continue;
            };
            let RxEnd { conn, buf } = &mut *g;
            // Under the default `SpinPark` the caller parks at once on the result ring: a
            // caller spinning and yielding for its result took the CPU from the worker that
            // computes it (on the 2-CPU VM under load, apply round trips of 8-33 µs spinning,
            // ~3 µs parking; see docs/pool.md, session 4). The receiver keeps the strategy.
            let parks = self.wait == WaitStrategy::SpinPark;
            if parks {
                conn.set_wait_strategy(WaitStrategy::Park);
            }
            let got = conn.recv_bytes_into_timeout(buf, 0, LIVENESS_POLL);
            if parks {
                conn.set_wait_strategy(self.wait);
            }
            match got {
                Ok(n) => {
                    // Relaxed: a counter for diagnostics.
                    self.direct_reads.fetch_add(1, Ordering::Relaxed);
                    self.on_result(d.idx, d.generation, &buf[..n]);
                    if buf.len() > 1 << 24 {
                        *buf = vec![0u8; 64 * 1024];
                    }
                }
                Err(RecvError::BufferTooShort { needed }) => buf.resize(needed, 0),
                Err(RecvError::Timeout) => {}
                Err(_) => {
                    // The worker ended: the receiver drains and settles.
                    d.reader.takeover.store(true, Ordering::SeqCst);
                    drop(g);
                    d.reader.notify();
                    return;
                }
            }
        }
    }

    /// The time limit of job `seq` of worker `idx` if it still holds it unfinished.
    fn limit_of(&self, idx: usize, generation: u64, seq: u64) -> Option<Duration> {
        if seq == 0 || (self.task_timeout.is_none() && !self.has_limits()) {
            return None;
        }
        let st = lock(&self.st);
        let slot = &st.workers[idx];
        if slot.generation != generation {
            return None;
        }
        let job = slot.held.get(&seq)?;
        job.limit.or(self.task_timeout)
    }

    fn has_limits(&self) -> bool {
        self.limits_used.load(Ordering::Relaxed)
    }

    fn on_result(&self, idx: usize, generation: u64, msg: &[u8]) {
        let Some(h) = wire::parse_result(msg) else {
            return;
        };
        if h.seq == 0 {
            // The worker's hello: it is up and takes jobs from now on.
            let mut st = lock(&self.st);
            let slot = &mut st.workers[idx];
            if slot.generation == generation && !slot.ready {
                slot.ready = true;
                if let Some(r) = &slot.reader {
                    r.sub_need();
                }
            }
            self.cv.notify_all();
            return;
        }
        let job = {
            let mut st = lock(&self.st);
            let slot = &mut st.workers[idx];
            if slot.generation != generation {
                return;
            }
            let Some(job) = slot.held.remove(&h.seq) else {
                return;
            };
            if !job.direct
                && let Some(r) = &slot.reader
            {
                r.sub_need();
            }
            slot.held_items -= job.items as usize;
            slot.held_bytes -= job.payload.len() + 64;
            st.answers += 1;
            let a = st.answers;
            st.workers[idx].last_answer = a;
            st.outstanding -= 1;
            st.failed_starts = 0;
            // The worker has room now: send it the next small queued job from this thread
            // (it cannot block: small jobs within the window fit the job pipe), else wake the
            // sender threads, but only if there is queued work or a joiner may wait for the
            // last result (a wake-up per result costs context switches on a busy machine).
            // (A joiner waiting for the last result polls every 20 ms too; waking it here
            // only when one waits spares every `apply` a wake-up of each sender thread.)
            let mut wake = st.outstanding == 0 && st.joiners > 0;
            // The job to send this worker next, from this thread, once the pool lock is
            // dropped (under its connection lock, taken with `try_lock` while the pool lock
            // is held: the lock order is connection, then pool). Before: the candidates were
            // collected into a `Vec` and the pool lock taken twice more per result.
            let mut conn = None;
            let mut next = None;
            if !st.pending.is_empty() {
                match self.fast_conn_of(&st, idx) {
                    Some(c) => conn = Some(c),
                    None => {
                        // Wake the senders only if this worker may take the front job (too
                        // big for the fast path, or carrying fds): a result changes no other
                        // worker's room, and a wake-up of every sender per result costs
                        // context switches.
                        let front = st.pending.front().map_or(0, |j| j.items as usize);
                        wake |= self.has_room(&st.workers[idx], front, st.pending.len());
                    }
                }
            }
            let mut guard = conn.as_ref().and_then(|c| c.try_lock().ok());
            if conn.is_some() {
                if guard.as_ref().is_some_and(|g| g.is_some()) {
                    next = self.take_for(&mut st, idx, None);
                }
                // Not sent (the sender thread holds the pipe): it takes the job.
                wake |= next.is_none();
            }
            if wake {
                self.cv.notify_all();
            }
            drop(st);
            if let (Some(g), Some((seq, payload, fds))) = (guard.as_mut(), next)
                && let Some(jobs) = g.as_mut()
            {
                // A failed send means the worker died: its receiver settles the job.
                SCRATCH.with(|b| jobs.send(&mut b.borrow_mut(), seq, &payload, &fds));
            }
            drop(guard);
            job
        };
        let text = || String::from_utf8_lossy(h.body).into_owned();
        let res = match h.status {
            wire::OK => Ok(h.body),
            wire::PANIC => Err(TaskError::TaskPanicked { message: text() }),
            wire::ENCODE => Err(TaskError::Encoding { message: text() }),
            wire::TOO_LARGE => {
                let mut c = wire::Cursor::new(h.body);
                let len = c.u64().unwrap_or(0) as usize;
                let max = c.u64().unwrap_or(0) as usize;
                Err(TaskError::ResultTooLarge { len, max })
            }
            _ => Err(TaskError::Task(text())),
        };
        job.sink.deliver(job.chunk, res);
    }

    fn on_worker_end(
        self: &Arc<Inner>,
        idx: usize,
        generation: u64,
        started: &RawValue<u64>,
        proc: &Arc<Mutex<Process<()>>>,
        pid: u32,
        timed_out: Option<(u64, Duration)>,
    ) {
        let exitcode = {
            let mut p = lock(proc);
            if let Err(JoinError::Timeout) = p.join_timeout(Duration::from_secs(2)) {
                let _ = p.kill();
                let _ = p.join_timeout(Duration::from_secs(10));
            }
            p.exitcode()
        };
        let started_word = started.as_atomic();
        // Acquire: pairs with the worker's Release store before it runs job `seq` (see worker.rs).
        let started_seq = started_word.load(Ordering::Acquire);
        let signal = exitcode.filter(|c| *c < 0).map(|c| -c);
        let mut failed = Vec::new();
        let replace = {
            let mut st = lock(&self.st);
            let phase = st.phase;
            let slot = &mut st.workers[idx];
            if slot.generation != generation {
                return;
            }
            slot.dead = true;
            slot.proc = None;
            slot.conn = None;
            slot.reader = None;
            slot.held_items = 0;
            slot.held_bytes = 0;
            let held = std::mem::take(&mut slot.held);
            let mut requeue = Vec::new();
            for (seq, mut job) in held {
                // Whoever takes it next reads its result through its receiver (a direct
                // reader waits on the result as any caller does once the worker ended).
                job.direct = false;
                if phase == Phase::Terminated {
                    failed.push((job, TaskError::Terminated));
                } else if let Some((t, limit)) = timed_out
                    && t == seq
                {
                    if job.attempts < self.retries {
                        job.attempts += 1;
                        requeue.push(job);
                    } else {
                        failed.push((job, TaskError::TimeLimit { pid, limit }));
                    }
                } else if seq <= started_seq {
                    if job.attempts < self.retries {
                        job.attempts += 1;
                        requeue.push(job);
                    } else {
                        failed.push((
                            job,
                            TaskError::WorkerLost {
                                pid,
                                signal,
                                exitcode,
                            },
                        ));
                    }
                } else {
                    requeue.push(job);
                }
            }
            for job in requeue.into_iter().rev() {
                st.pending.push_front(job);
            }
            st.outstanding -= failed.len();
            if started_seq == 0 && exitcode.is_some_and(|c| c > 0) {
                st.failed_starts += 1;
            }
            let mut replace =
                phase == Phase::Running || (phase == Phase::Closed && !st.pending.is_empty());
            if replace && st.failed_starts >= MAX_FAILED_STARTS {
                // A worker that cannot even start (its initializer fails) would be replaced
                // forever while the queue waits: fail the queue and stop instead.
                let e = WorkerStartError {
                    what: format!(
                        "{} workers in a row exited (code {exitcode:?}) before taking a job; \
                         does the initializer fail?",
                        st.failed_starts
                    ),
                    source: None,
                };
                st.broken = Some(e.clone());
                let p = std::mem::take(&mut st.pending);
                st.outstanding -= p.len();
                failed.extend(p.into_iter().map(|j| (j, TaskError::Start(e.clone()))));
                replace = false;
            }
            self.cv.notify_all();
            replace
        };
        if exitcode != Some(0) {
            tracing::debug!(target: "multiproc", "pool worker {pid} ended with {exitcode:?}");
        }
        for (job, e) in failed {
            job.sink.deliver(job.chunk, Err(e));
        }
        if replace {
            self.replace_worker(idx);
        }
    }

    fn replace_worker(self: &Arc<Inner>, idx: usize) {
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            match self.start_worker(idx, true) {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or(WorkerStartError {
            what: "unknown".into(),
            source: None,
        });
        tracing::error!(target: "multiproc", "cannot replace a pool worker: {e}");
        // Without any live worker, nothing would run the queue: fail it rather than hang.
        let pending = {
            let mut st = lock(&self.st);
            if st.workers.iter().any(|w| !w.dead) {
                return;
            }
            st.broken = Some(e.clone());
            let p = std::mem::take(&mut st.pending);
            st.outstanding -= p.len();
            self.cv.notify_all();
            p
        };
        for job in pending {
            job.sink
                .deliver(job.chunk, Err(TaskError::Start(e.clone())));
        }
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Dropping a pool terminates it (Python's `with Pool() as p:` calls `terminate()`), unless it
/// was already closed and joined.
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.inner.processes)
            .finish()
    }
}

/// Python's default `map` chunksize: `ceil(len / (4 * processes))`, at least 1.
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    let d = 4 * processes.max(1);
    len.div_ceil(d).max(1)
}

/// Encodes a chunk's items as one record in one pass (collecting the fds of shared objects among them) and
/// checks it against the pipe's message limit. Returns the payload, its item count, its fds.
fn encode_job<A: Serialize>(
    job: u64,
    chunk: u32,
    hash: u64,
    cap: usize,
    items: &[A],
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    let w = JobWriter::new(job, chunk, hash, cap);
    encode_into(w, items)
}

/// [`encode_job`] for a `map` chunk: as a *plain chunk* (one slice copy, see
/// `registry::plain_width`) when the task's argument and result are primitive numbers and
/// the chunk has more than one item (a one-item chunk keeps postcard's shorter single form).
fn encode_map_job<A: Serialize + 'static>(
    job: u64,
    chunk: u32,
    hash: u64,
    plain_out: Option<usize>,
    items: &[A],
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    if let Some(wo) = plain_out
        && items.len() > 1
    {
        let mut w = JobWriter::new(
            job,
            chunk,
            hash,
            registry::PLAIN_HEAD + std::mem::size_of_val(items),
        );
        if w.push_plain(items, wo) {
            return finish_job(w, Vec::new(), None);
        }
    }
    let w = JobWriter::new(job, chunk, hash, items.len() * 8);
    encode_into(w, items)
}

fn encode_into<A: Serialize>(
    mut w: JobWriter,
    items: &[A],
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    let (r, fds) = collect_fds(|| w.push_all(items));
    r.map_err(SubmitError::Arguments)?;
    if fds.len() > fdpass::MAX_FDS {
        return Err(SubmitError::Arguments(format!(
            "the arguments hold {} fds of shared objects; at most {} per job",
            fds.len(),
            fdpass::MAX_FDS
        )));
    }
    let owned = if fds.is_empty() {
        None
    } else {
        let v = fdpass::dup_all(&fds).map_err(|e| {
            SubmitError::Arguments(format!("keeping the fds of the shared objects: {e}"))
        })?;
        Some(Arc::new(v.into_iter().map(|(_, o)| o).collect()))
    };
    finish_job(w, fds, owned)
}

/// Appends the fds' numbers, closes the record and checks it against the message limit.
fn finish_job(
    mut w: JobWriter,
    fds: Vec<RawFd>,
    owned: JobFds,
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    let n = w.len();
    w.push_fds(&fds);
    let payload = w.finish(fds.len());
    let max = PipeOptions::default().max_message;
    if payload.len() + 8 > max {
        return Err(SubmitError::Arguments(format!(
            "the encoded arguments ({} bytes) exceed the maximum message of {max} bytes",
            payload.len() + 8
        )));
    }
    Ok((payload, n, owned))
}

fn entry_hash<M, T: Task<M>>(f: &T) -> Result<u64, SubmitError> {
    // A capturing closure or a fn pointer is refused when the program is built.
    registry::assert_fn_item::<T>();
    // The last task submitted from this thread (a run of `apply_async`s pays the registry's
    // search and the id's hash once: ~2% of a trivial `apply_async`'s profile before).
    let id = std::any::TypeId::of::<T>();
    if let Some(h) = LAST_TASK.with(|c| c.get().filter(|(t, _)| *t == id).map(|(_, h)| h)) {
        return Ok(h);
    }
    let h = registry::entry_of(f)
        .map(|e| e.hash())
        .map_err(|_| SubmitError::TaskNotRegistered(std::any::type_name::<T>()))?;
    LAST_TASK.with(|c| c.set(Some((id, h))));
    Ok(h)
}

impl Pool {
    /// A builder.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// `Pool::builder().processes(n).build()`.
    pub fn new(processes: usize) -> Result<Pool, BuildError> {
        Self::builder().processes(processes).build()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// The pids of the live workers (for tests and diagnostics).
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.inner.st)
            .workers
            .iter()
            .filter(|w| !w.dead)
            .map(|w| w.pid)
            .collect()
    }

    /// Waits until every worker is up (started, its initializer run) and taking jobs, at most
    /// `timeout` ([`ReadyError::Timeout`]). Not needed for correctness: work waits in the pool
    /// until a worker is up. Benches and balance tests use it so that a worker still starting
    /// does not look slow.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), ReadyError> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.st);
        while !st.workers.iter().all(|w| w.ready && !w.dead) {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadyError::Timeout);
            }
            if st.phase == Phase::Terminated {
                return Err(ReadyError::NotRunning);
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(20)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// How many workers were replaced so far (death, time limit or `maxtasksperchild`). A
    /// worker counts once its replacement started, which is after the task it failed was
    /// settled.
    pub fn replaced_workers(&self) -> u64 {
        lock(&self.inner.st).replaced
    }

    #[doc(hidden)]
    /// Results read by the caller waiting for them (a synchronous `apply` reads its worker's
    /// result pipe itself) rather than by a receiver thread. For tests and diagnostics.
    pub fn results_read_by_callers(&self) -> u64 {
        // Relaxed: a counter.
        self.inner.direct_reads.load(Ordering::Relaxed)
    }

    fn new_job_id(&self) -> u64 {
        JOB_COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn submit(&self, jobs: Vec<Job>) -> Result<(), SubmitError> {
        self.submit_own(jobs, None).map(drop)
    }

    /// [`submit`](Self::submit); with `own` (the sink of a synchronous `apply`'s one job),
    /// also where that job went if this thread sent it to a worker itself.
    fn submit_own(
        &self,
        jobs: Vec<Job>,
        own: Option<&Arc<dyn Sink>>,
    ) -> Result<Option<Direct>, SubmitError> {
        let mut st = lock(&self.inner.st);
        if st.phase != Phase::Running {
            return Err(SubmitError::NotRunning);
        }
        if let Some(e) = &st.broken {
            return Err(SubmitError::Start(e.clone()));
        }
        let single = jobs.len() == 1 && st.pending.is_empty();
        st.outstanding += jobs.len();
        st.pending.extend(jobs);
        if single {
            let candidates = self.inner.fast_candidates(&st);
            drop(st);
            if !candidates.is_empty() {
                let (sent, direct) = SCRATCH.with(|b| {
                    self.inner
                        .try_dispatch(candidates, &mut b.borrow_mut(), own)
                });
                if sent {
                    return Ok(direct);
                }
            }
        } else {
            // Wake the sender threads only if one of them may take the front job now: while
            // every worker is full (a long run of `apply_async`), the results' receivers hand
            // out the queue (`on_result`), and a `notify_all` per submit woke both senders
            // only to find no room (two futex wake-ups and context switches per task).
            let front = st.pending.front().map_or(0, |j| j.items as usize);
            let n = st.pending.len();
            let room = st.workers.iter().any(|w| self.inner.has_room(w, front, n));
            drop(st);
            if !room {
                return Ok(None);
            }
        }
        self.inner.cv.notify_all();
        Ok(None)
    }

    fn check_running(&self) -> Result<(), SubmitError> {
        if lock(&self.inner.st).phase != Phase::Running {
            return Err(SubmitError::NotRunning);
        }
        Ok(())
    }

    /// Runs `f(args)` in a worker and waits for the result (Python's `apply`).
    pub fn apply<M, T: Task<M>>(&self, f: T, args: T::Args) -> Result<T::Output>
    where
        T::Output: Send + 'static,
    {
        let (r, direct) = self.apply_job(f, args, Callbacks::new(), None, true)?;
        if let Some(d) = direct {
            let slot = &r.slot;
            self.inner.read_direct(&d, &|| slot.is_done(), &|| {
                let _ = r.wait_timeout(Duration::from_millis(1));
            });
        }
        Ok(r.get()?)
    }

    /// Starts `f(args)` in a worker (Python's `apply_async`).
    pub fn apply_async<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        self.apply_async_with(f, args, Callbacks::new())
    }

    /// [`apply_async`](Pool::apply_async) with `callback`/`error_callback`.
    pub fn apply_async_with<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        self.apply_impl(f, args, callbacks, None)
    }

    /// [`apply_async`](Pool::apply_async) with a time limit for this call (over the pool's
    /// [`task_timeout`](PoolBuilder::task_timeout)): past it the worker is killed and
    /// replaced, and the result is [`TaskError::TimeLimit`].
    pub fn apply_async_limited<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        limit: Duration,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        self.inner.limits_used.store(true, Ordering::Relaxed);
        self.apply_impl(f, args, Callbacks::new(), Some(limit))
    }

    fn apply_impl<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
        limit: Option<Duration>,
    ) -> Result<AsyncResult<T::Output>, SubmitError>
    where
        T::Output: Send + 'static,
    {
        Ok(self.apply_job(f, args, callbacks, limit, false)?.0)
    }

    /// Submits one `apply` job; with `direct`, the caller will wait for it, so if it sends
    /// the job itself it also learns where to read the result (see `Inner::read_direct`).
    fn apply_job<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
        limit: Option<Duration>,
        direct: bool,
    ) -> Result<(AsyncResult<T::Output>, Option<Direct>), SubmitError>
    where
        T::Output: Send + 'static,
    {
        let hash = entry_hash(&f)?;
        let job = self.new_job_id();
        let (payload, _, fds) = encode_job(job, 0, hash, 16, std::slice::from_ref(&args))?;
        let slot = Slot::with_wait(callbacks, self.inner.wait);
        let sink: Arc<dyn Sink> = Arc::new(ApplySink { slot: slot.clone() });
        let own = direct.then(|| sink.clone());
        let d = self.submit_own(
            vec![Job {
                chunk: 0,
                items: 1,
                payload: Arc::new(payload),
                fds,
                sink,
                attempts: 0,
                limit,
                direct: false,
            }],
            own.as_ref(),
        )?;
        Ok((AsyncResult { slot }, d))
    }

    /// `f` over every item, in order (Python's `map`; default chunksize as Python's). Items
    /// are `f`'s arguments: one value for a one-argument task, a tuple for several (so this is
    /// also `starmap`).
    pub fn map<M, T, I>(&self, f: T, items: I) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        Ok(self
            .map_async_with(f, items, None, Callbacks::new())?
            .get()?)
    }

    /// [`map`](Pool::map) with an explicit chunksize (0 is [`SubmitError::InvalidChunksize`]).
    pub fn map_chunked<M, T, I>(&self, f: T, items: I, chunksize: usize) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        Ok(self
            .map_async_with(f, items, Some(chunksize), Callbacks::new())?
            .get()?)
    }

    /// Python's `map_async` (default chunksize).
    pub fn map_async<M, T, I>(
        &self,
        f: T,
        items: I,
    ) -> Result<AsyncResult<Vec<T::Output>>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        self.map_async_with(f, items, None, Callbacks::new())
    }

    /// Python's `map_async(f, items, chunksize, callback, error_callback)`. The result is
    /// ready after every chunk ran; if any failed, it is the error of the first failing chunk.
    pub fn map_async_with<M, T, I>(
        &self,
        f: T,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> Result<AsyncResult<Vec<T::Output>>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        if chunksize == Some(0) {
            return Err(SubmitError::InvalidChunksize);
        }
        self.check_running()?;
        let hash = entry_hash(&f)?;
        // As Python: an input without a length is made a list first.
        let items: Vec<T::Args> = items.into_iter().collect();
        let cs = chunksize.unwrap_or_else(|| default_chunksize(items.len(), self.inner.processes));
        let nchunks = items.len().div_ceil(cs);
        let slot = Slot::with_wait(callbacks, self.inner.wait);
        if nchunks == 0 {
            slot.set(Ok(Vec::new()));
            return Ok(AsyncResult { slot });
        }
        let job = self.new_job_id();
        let sink: Arc<dyn Sink> = Arc::new(MapSink::<T::Output>::new(
            nchunks,
            cs,
            items.len(),
            slot.clone(),
        ));
        // Submit chunks as they are encoded (the workers start on the first at once), in
        // batches so the pool lock is not taken per chunk.
        let mut batch = Vec::new();
        // Primitive numbers both ways: chunks travel as slices (see `encode_map_job`).
        let plain_out = registry::plain_width_static::<T::Args>()
            .and(registry::plain_width_static::<T::Output>());
        for (i, chunk) in items.chunks(cs).enumerate() {
            let (payload, n, fds) = encode_map_job(job, i as u32, hash, plain_out, chunk)?;
            batch.push(Job {
                chunk: i as u32,
                items: n,
                payload: Arc::new(payload),
                fds,
                sink: sink.clone(),
                attempts: 0,
                limit: None,
                direct: false,
            });
            if batch.len() >= 16 || i < 4 {
                self.submit(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.submit(batch)?;
        }
        Ok(AsyncResult { slot })
    }

    /// Python's `starmap`: `f(*args)` for every tuple. The same as [`map`](Pool::map) (a
    /// multi-argument task takes its arguments as a tuple).
    pub fn starmap<M, T, I>(&self, f: T, items: I) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        self.map(f, items)
    }

    /// Python's `starmap_async`.
    pub fn starmap_async<M, T, I>(
        &self,
        f: T,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> Result<AsyncResult<Vec<T::Output>>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
    {
        self.map_async_with(f, items, chunksize, callbacks)
    }

    /// Python's `imap`: results in order, lazily. The input is consumed as results are taken,
    /// with at most `2 * processes` chunks in flight (Python's imap drains the input at once).
    /// Default chunksize 1, as Python's. The [`IMap`] is an `Iterator` and, for async code, a
    /// [`Stream`](futures_core::Stream) ([`IMap::next_async`]); the input iterator must be
    /// `Send` so that the stream can live in a spawned task.
    pub fn imap<'a, M, T, I>(
        &'a self,
        f: T,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'a, T::Args, T::Output>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'a,
    {
        self.imap_impl(f, items, chunksize, true)
    }

    /// Python's `imap_unordered`: results in completion order (by chunk), lazily.
    pub fn imap_unordered<'a, M, T, I>(
        &'a self,
        f: T,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'a, T::Args, T::Output>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'a,
    {
        self.imap_impl(f, items, chunksize, false)
    }

    fn imap_impl<'a, M, T, I>(
        &'a self,
        f: T,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<'a, T::Args, T::Output>, SubmitError>
    where
        T: Task<M>,
        T::Output: Send + 'static,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'a,
    {
        if chunksize == 0 {
            return Err(SubmitError::InvalidChunksize);
        }
        self.check_running()?;
        let hash = entry_hash(&f)?;
        Ok(IMap {
            pool: self,
            input: Box::new(items.into_iter()),
            hash,
            job: self.new_job_id(),
            chunksize,
            sink: Arc::new(IMapSink::new()),
            next_submit: 0,
            next_yield: 0,
            buffered: VecDeque::new(),
            exhausted: false,
            in_flight: 0,
            max_in_flight: 2 * self.inner.processes.max(1),
            ordered,
        })
    }

    /// Python's `close()`: no new work; the workers exit once the queued work is done.
    pub fn close(&self) {
        let mut st = lock(&self.inner.st);
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
        }
        self.inner.cv.notify_all();
    }

    /// Python's `terminate()`: stops at once. Queued and running tasks fail with
    /// [`TaskError::Terminated`]; workers are killed (SIGKILL) and reaped.
    pub fn terminate(&self) {
        let (pending, procs) = {
            let mut st = lock(&self.inner.st);
            st.phase = Phase::Terminated;
            let pending = std::mem::take(&mut st.pending);
            st.outstanding -= pending.len();
            let procs: Vec<_> = st.workers.iter().filter_map(|w| w.proc.clone()).collect();
            self.inner.cv.notify_all();
            (pending, procs)
        };
        for job in pending {
            job.sink.deliver(job.chunk, Err(TaskError::Terminated));
        }
        for p in procs {
            let _ = lock(&p).kill();
        }
        self.join_threads();
    }

    /// Python's `join()`: waits for the workers to exit; [`PoolJoinError::StillRunning`] unless
    /// `close()` or `terminate()` was called.
    pub fn join(&self) -> Result<(), PoolJoinError> {
        if lock(&self.inner.st).phase == Phase::Running {
            return Err(PoolJoinError::StillRunning);
        }
        self.join_threads();
        Ok(())
    }

    /// [`join`](Pool::join) waiting at most `timeout` for the queued work
    /// ([`PoolJoinError::Timeout`] if it is not done; the pool keeps going).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolJoinError> {
        let deadline = Instant::now() + timeout;
        {
            let mut st = lock(&self.inner.st);
            if st.phase == Phase::Running {
                return Err(PoolJoinError::StillRunning);
            }
            while st.outstanding > 0 || st.workers.iter().any(|w| !w.dead) {
                let now = Instant::now();
                if now >= deadline {
                    return Err(PoolJoinError::Timeout);
                }
                st.joiners += 1;
                st = self
                    .inner
                    .cv
                    .wait_timeout(st, (deadline - now).min(Duration::from_millis(20)))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.joiners -= 1;
            }
        }
        self.join_threads();
        Ok(())
    }

    fn join_threads(&self) {
        loop {
            let hs = std::mem::take(&mut lock(&self.inner.st).threads);
            if hs.is_empty() {
                break;
            }
            for h in hs {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let done = {
            let st = lock(&self.inner.st);
            st.threads.is_empty() && st.workers.iter().all(|w| w.dead)
        };
        if !done {
            self.terminate();
        }
    }
}

/// The iterator of [`Pool::imap`] / [`Pool::imap_unordered`]: yields each result (or the error
/// of its chunk, once per chunk).
pub struct IMap<'a, A, R> {
    pool: &'a Pool,
    input: Box<dyn Iterator<Item = A> + Send + 'a>,
    hash: u64,
    job: u64,
    chunksize: usize,
    sink: Arc<IMapSink<R>>,
    next_submit: u32,
    next_yield: u32,
    buffered: VecDeque<R>,
    exhausted: bool,
    in_flight: usize,
    max_in_flight: usize,
    ordered: bool,
}

impl<A, R> std::fmt::Debug for IMap<'_, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<A: Serialize, R: DeserializeOwned + Send + 'static> IMap<'_, A, R> {
    fn refill(&mut self) -> Result<(), SubmitError> {
        while !self.exhausted && self.in_flight < self.max_in_flight {
            let mut chunk = Vec::with_capacity(self.chunksize.min(1024));
            for _ in 0..self.chunksize {
                match self.input.next() {
                    Some(a) => chunk.push(a),
                    None => {
                        self.exhausted = true;
                        break;
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
            let (payload, n, fds) = encode_job(
                self.job,
                self.next_submit,
                self.hash,
                self.chunksize * 8,
                &chunk,
            )?;
            let sink: Arc<dyn Sink> = self.sink.clone();
            self.pool.submit(vec![Job {
                chunk: self.next_submit,
                items: n,
                payload: Arc::new(payload),
                fds,
                sink,
                attempts: 0,
                limit: None,
                direct: false,
            }])?;
            self.next_submit += 1;
            self.in_flight += 1;
        }
        Ok(())
    }

    /// The next result, waiting at most `timeout` (`Some(Err(Timeout))`; the iterator keeps
    /// its place). Python's `IMapIterator.next(timeout)`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_deadline(Some(Instant::now() + timeout))
    }

    fn next_deadline(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        loop {
            if let Some(v) = self.buffered.pop_front() {
                return Some(Ok(v));
            }
            if let Err(e) = self.refill() {
                self.exhausted = true;
                return Some(Err(e.into()));
            }
            if self.in_flight == 0 {
                return None;
            }
            let sink = self.sink.clone();
            let mut g = lock(&sink.st);
            let chunk = loop {
                if let Some(c) = self.take_chunk(&mut g) {
                    break c;
                }
                g = match deadline {
                    None => sink.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Some(Err(TaskError::Timeout.into()));
                        }
                        sink.cv
                            .wait_timeout(g, d - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
            };
            drop(g);
            if let Some(r) = self.accept(chunk) {
                return Some(r);
            }
        }
    }

    /// Removes the next chunk to yield from the arrived ones, if it arrived (in order for
    /// `imap`, any for `imap_unordered`).
    fn take_chunk(&mut self, st: &mut IMapState<R>) -> Option<Result<Vec<R>, TaskError>> {
        let key = if self.ordered {
            st.chunks
                .contains_key(&self.next_yield)
                .then_some(self.next_yield)
        } else {
            st.chunks.keys().next().copied()
        };
        let chunk = st.chunks.remove(&key?)?;
        self.next_yield += 1;
        self.in_flight -= 1;
        Some(chunk)
    }

    /// Takes a chunk in: submits more input, buffers its values; `Some(Err)` for a failed chunk.
    fn accept(&mut self, chunk: Result<Vec<R>, TaskError>) -> Option<Result<R>> {
        let _ = self.refill();
        match chunk {
            Ok(v) => {
                self.buffered.extend(v);
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    /// The stream's poll: as [`Iterator::next`], but `Pending` (the result thread wakes the
    /// task when a chunk arrives) instead of blocking.
    fn poll_next_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        loop {
            if let Some(v) = self.buffered.pop_front() {
                return Poll::Ready(Some(Ok(v)));
            }
            if let Err(e) = self.refill() {
                self.exhausted = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            if self.in_flight == 0 {
                return Poll::Ready(None);
            }
            let sink = self.sink.clone();
            let mut g = lock(&sink.st);
            let Some(chunk) = self.take_chunk(&mut g) else {
                // Under the lock `deliver` inserts under: a chunk arriving after the check
                // above finds this waker.
                match &mut g.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            };
            g.waker = None;
            drop(g);
            if let Some(r) = self.accept(chunk) {
                return Poll::Ready(Some(r));
            }
        }
    }

    /// The next result, awaited (the async [`Iterator::next`]; the same as `StreamExt::next`
    /// on the [`Stream`](futures_core::Stream) this also is). Cancel-safe: a result moves out
    /// only in the poll that returns it, so dropping the future loses nothing.
    pub fn next_async(&mut self) -> impl Future<Output = Option<Result<R>>> + '_ {
        std::future::poll_fn(move |cx| self.poll_next_item(cx))
    }
}

impl<A: Serialize, R: DeserializeOwned + Send + 'static> Iterator for IMap<'_, A, R> {
    type Item = Result<R>;
    fn next(&mut self) -> Option<Result<R>> {
        self.next_deadline(None)
    }
}

// The stream is polled through `&mut` and never pinned in place (no self-references).
impl<A, R> Unpin for IMap<'_, A, R> {}

/// `imap`/`imap_unordered` as a [`Stream`](futures_core::Stream) of results: the same items as
/// the iterator, awaited without blocking a thread (the pool's result thread wakes the task).
/// Cancel-safe: dropping a `next()` future loses no result.
impl<A: Serialize, R: DeserializeOwned + Send + 'static> futures_core::Stream for IMap<'_, A, R> {
    type Item = Result<R>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        self.get_mut().poll_next_item(cx)
    }
}
