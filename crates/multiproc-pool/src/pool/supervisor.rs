//! The supervisor: a worker's start (and replacement) with its two threads, its receiver thread
//! (results, time limits, its end), a caller's direct reads, and settling a dead worker's jobs.
use super::hooks::fail_thread_spawn_hook;
use super::pipes::{JobPipe, Reader, RxEnd, eventfd};
use super::{
    Direct, Inner, JobConn, LIVENESS_POLL, MAX_FAILED_STARTS, PIPE_CAPACITY, Phase, SCRATCH,
    SPIN_PAYS, State,
};
use crate::error::{TaskError, WorkerStartError};
use crate::facade::{AtomicBool, AtomicU64, Ordering};
use crate::fdpass;
use crate::result::lock;
use crate::wire;
use crate::worker::FdArg;
use crate::worker::{WorkerArgs, pool_worker};
use multiproc_channel::{Pipe, PipeOptions, Postcard, RecvError};
use multiproc_process::{JoinError, Process};
use multiproc_ring::WaitStrategy;
use multiproc_sync::RawValue;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static WORKER_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Inner {
    /// Starts the worker of slot `idx` (a new generation) and its two threads.
    pub(super) fn start_worker(
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
        // The parent's pages of both rings now (the worker maps its own at its start).
        jobs_w.populate();
        res_r.populate();
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
    pub(super) fn read_direct(&self, d: &Direct, done: &dyn Fn() -> bool, wait_a_bit: &dyn Fn()) {
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
            // Under the default `SpinPark` the caller spins before it parks only while that
            // pays off (`SpinGauge`), else it parks at once on the result ring: a caller
            // spinning and yielding for its result can take the CPU from the worker that
            // computes it (see docs/pool.md). The receiver keeps the strategy.
            // The spin is a pure spin of at most `SPIN_PAYS`, without the ring's yields (a
            // `sched_yield` beside a CPU-bound process can give it the CPU for a whole slice),
            // then a park.
            let adaptive = self.wait == WaitStrategy::SpinPark;
            let got = if adaptive {
                let mut got = Err(RecvError::Timeout);
                if self.apply_spin.should_spin() {
                    conn.set_wait_strategy(WaitStrategy::Spin);
                    got = conn.recv_bytes_into_timeout(buf, 0, SPIN_PAYS);
                    self.apply_spin
                        .record(!matches!(got, Err(RecvError::Timeout)));
                }
                if matches!(got, Err(RecvError::Timeout)) {
                    conn.set_wait_strategy(WaitStrategy::Park);
                    got = conn.recv_bytes_into_timeout(buf, 0, LIVENESS_POLL);
                }
                conn.set_wait_strategy(self.wait);
                got
            } else {
                conn.recv_bytes_into_timeout(buf, 0, LIVENESS_POLL)
            };
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
