//! `RemotePool`: the client side of a pool whose workers are [`serve`](crate::serve) processes on
//! any host.
//!
//! A submission is one entry on `{mp:NAME}:tasks` (group `workers`) with the fields
//! `c` (client id), `j` (job number), `t` (task id), `b` (the submitter's registry hash, the build
//! check; `0` = check the id only), `r` (retries) and `a` (postcard arguments). Workers answer on the
//! client's own stream `{mp:NAME}:res:CLIENT`: one entry per posted batch with the field `m`, the
//! answers packed (job, outcome kind, payload; see `worker::pack`; the older one-answer form `j`,
//! `k` (outcome kind), `v` is still read). A background
//! thread reads that stream (`XREAD BLOCK`) and completes the waiting results; when it finds that
//! Redis restarted (a new run id) it fails every result submitted before the restart with
//! [`TaskError::BrokerRestarted`] instead of letting it wait forever.

use crate::conn::{self, Endpoint, Link, Options};
use crate::{ConnectError, LinkError, Result, SubmitError, TaskError};
use multiproc_process::registry::{self, Task};
use multiproc_shm::deadline::after;
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) const GROUP: &str = "workers";

/// How long results streams (and named clients' generation counters) are kept after their
/// last write (seconds).
pub(crate) const RESULTS_TTL_SECS: u64 = 24 * 3600;

/// Outcome kinds on the results stream.
pub(crate) mod kind {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const UNKNOWN: u8 = 2;
    pub const BUILD: u8 = 3;
    pub const LOST: u8 = 4;
}

type Outcome = std::result::Result<Vec<u8>, TaskError>;

struct SlotInner {
    done: Mutex<Option<Outcome>>,
    cv: Condvar,
}

enum Slot {
    One(Arc<SlotInner>),
    Chan(mpsc::Sender<Outcome>),
    Call(Box<dyn FnOnce(Outcome) + Send>),
}

struct Waiting {
    slot: Slot,
    /// The Redis run id the submission went to.
    run_id: String,
}

/// The most results kept for [`RemotePool::result_of`] (the results stream's own `MAXLEN`).
const MAX_ORPHANS: usize = 100_000;

struct Shared {
    /// Lock order: `slots`, then `orphans`, then `refs`, then `trash`.
    slots: Mutex<HashMap<u64, Waiting>>,
    /// A named client: results that arrived for jobs no one waits for (submitted by an earlier
    /// incarnation of this client), kept in memory and in the stream until
    /// [`RemotePool::result_of`] takes them. Unnamed clients drop such results.
    named: bool,
    orphans: Mutex<HashMap<u64, (String, Outcome)>>,
    /// Stream ids of taken orphans, deleted by the results thread with its next `XDEL`.
    trash: Mutex<Vec<String>>,
    /// Results entries holding orphans: how many of their answers are not yet taken (an entry
    /// packs several answers; it is deleted when the last is taken).
    refs: Mutex<HashMap<String, usize>>,
    stop: Mutex<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Waiting>> {
        lock(&self.slots)
    }
    fn complete(&self, job: u64, out: Outcome) {
        let w = self.slots().remove(&job);
        if let Some(w) = w {
            complete(w.slot, out);
        }
    }
    /// Completes `job` from the results stream (entry `id`); whether the entry may be deleted.
    fn arrived(&self, job: u64, id: &str, out: Outcome) -> bool {
        let mut slots = self.slots();
        if let Some(w) = slots.remove(&job) {
            drop(slots);
            complete(w.slot, out);
            return true;
        }
        if !self.named {
            return true;
        }
        let mut orphans = lock(&self.orphans);
        if orphans.len() >= MAX_ORPHANS {
            return true;
        }
        orphans.insert(job, (id.to_string(), out));
        false
    }
}

fn complete(slot: Slot, out: Outcome) {
    match slot {
        Slot::One(s) => {
            *s.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
            s.cv.notify_all();
        }
        Slot::Chan(tx) => {
            let _ = tx.send(out);
        }
        Slot::Call(f) => {
            // A panicking callback must not end the results thread.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(out))).is_err() {
                tracing::error!(target: "multiproc", "remote pool: a callback panicked");
            }
        }
    }
}

struct Submit {
    link: Link,
    next_job: u64,
    /// Jobs whose `XADD` was sent by `apply_async` but whose reply is not read yet, oldest
    /// first. Every other command on `link` must [`Submit::settle`] them first.
    unconfirmed: std::collections::VecDeque<u64>,
    /// `XADD`s of `apply_async` not yet written (packed commands) and their jobs: written when
    /// [`FLUSH_AT`] wait, by the next other use of the link ([`Submit::settle`]), or by the
    /// flusher thread about [`FLUSH_DELAY`] after the first was buffered.
    buf: Vec<u8>,
    buffered: Vec<u64>,
    shared: Arc<Shared>,
}

/// The most `apply_async` submissions sent before their replies are read (then the older half
/// is read).
const MAX_UNCONFIRMED: usize = 1024;
/// `apply_async` writes its buffered submissions once this many wait...
const FLUSH_AT: usize = 64;
/// ... or they hold this many bytes.
const FLUSH_BYTES: usize = 64 * 1024;
/// How long a buffered submission waits at most for more to join it (the flusher thread).
const FLUSH_DELAY: Duration = Duration::from_micros(200);

/// Wakes the flusher thread.
struct Flusher {
    /// (armed: something is buffered, stop)
    st: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Flusher {
    fn arm(&self) {
        let mut g = lock(&self.st);
        if !g.0 {
            g.0 = true;
            self.cv.notify_one();
        }
    }
}

/// The flusher thread: writes what `apply_async` buffered, [`FLUSH_DELAY`] after it is armed.
fn flush_later(f: Arc<Flusher>, sub: std::sync::Weak<Mutex<Submit>>) {
    loop {
        {
            let mut g = lock(&f.st);
            while !g.0 && !g.1 {
                g = f.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            if g.1 {
                return;
            }
        }
        std::thread::sleep(FLUSH_DELAY);
        lock(&f.st).0 = false;
        let Some(sub) = sub.upgrade() else {
            return;
        };
        lock(&sub).write_buffered();
    }
}

impl Submit {
    /// Writes the buffered submissions (without waiting for their replies; they become
    /// unconfirmed). If the connection broke since they were buffered, or breaks now, they
    /// complete with `ConnectionLost` (a buffered submission never goes to a server it was not
    /// buffered for: no reconnection here).
    fn write_buffered(&mut self) {
        if self.buffered.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.buffered);
        let buf = std::mem::take(&mut self.buf);
        let r = if self.link.is_connected() {
            let deadline = after(self.link.ep.opts.io_timeout);
            self.link.send_nowait("submitting tasks", deadline, &buf, 0)
        } else {
            Err(LinkError::ConnectionLost {
                during: "submitting tasks",
                msg: "connection lost before the tasks were sent".into(),
            })
        };
        match r {
            Ok(()) => self.unconfirmed.extend(jobs),
            Err(e) => {
                for job in jobs {
                    self.shared.complete(job, Err(e.clone().into()));
                }
            }
        }
        // Keep the allocation for the next batch.
        self.buf = buf;
        self.buf.clear();
    }

    /// Writes the buffered submissions and reads the replies of every unconfirmed one: a
    /// submission Redis refused completes with its error; if the connection is gone, every
    /// unconfirmed one completes with `ConnectionLost` (it may or may not have been stored; a
    /// late result is dropped). Returns the first error met.
    fn settle(&mut self) -> Option<LinkError> {
        self.write_buffered();
        self.settle_to(0)
    }

    /// Reads replies of unconfirmed submissions (oldest first) until at most `keep` remain.
    fn settle_to(&mut self, keep: usize) -> Option<LinkError> {
        let mut first: Option<LinkError> = None;
        while self.unconfirmed.len() > keep {
            let Some(&job) = self.unconfirmed.front() else {
                break;
            };
            let r = match self.link.recv_reply() {
                None => Err(LinkError::ConnectionLost {
                    during: "submitting a task",
                    msg: "connection closed before the reply".into(),
                }),
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) if conn::is_conn_error(&e) => {
                    self.link.drop_con();
                    Err(LinkError::ConnectionLost {
                        during: "submitting a task",
                        msg: e.to_string(),
                    })
                }
                Some(Err(e)) => {
                    self.unconfirmed.pop_front();
                    let e = LinkError::from(e);
                    first.get_or_insert_with(|| e.clone());
                    self.shared.complete(job, Err(e.into()));
                    continue;
                }
            };
            match r {
                Ok(()) => {
                    self.unconfirmed.pop_front();
                }
                Err(e) => {
                    first.get_or_insert_with(|| e.clone());
                    for job in std::mem::take(&mut self.unconfirmed) {
                        self.shared.complete(job, Err(e.clone().into()));
                    }
                }
            }
        }
        first
    }
}

/// A pool of remote workers reached through Redis. Cheap to share by reference across threads.
pub struct RemotePool {
    submit: Arc<Mutex<Submit>>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    flusher: Arc<Flusher>,
    flusher_thread: Option<JoinHandle<()>>,
    tasks_key: String,
    results_key: String,
    client: String,
    retries: u32,
    build_hash: u64,
    opts: Options,
}

impl std::fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePool")
            .field("tasks", &self.tasks_key)
            .field("client", &self.client)
            .finish()
    }
}

/// The result of [`RemotePool::apply_async`].
pub struct RemoteResult<R> {
    slot: Arc<SlotInner>,
    /// The pool's submission link, whose unread `XADD` replies `get` reads first (so a
    /// submission Redis refused is reported instead of waited for).
    submit: std::sync::Weak<Mutex<Submit>>,
    job: u64,
    _r: PhantomData<fn() -> R>,
}

impl<R> RemoteResult<R> {
    /// The job id (unique per client; with [`RemotePool::attach`], across its incarnations).
    pub fn job(&self) -> u64 {
        self.job
    }
}

impl<R: DeserializeOwned> RemoteResult<R> {
    /// Waits for the result with no time limit (a task no worker ever takes waits forever; a
    /// Redis restart ends the wait with [`TaskError::BrokerRestarted`]).
    pub fn get(&self) -> Result<R, TaskError> {
        self.get_deadline(None)
    }

    /// Waits at most `timeout` ([`TaskError::Timeout`]; the task may still run).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.get_deadline(after(timeout))
    }

    /// Whether the result has arrived.
    pub fn ready(&self) -> bool {
        self.slot
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<R, TaskError> {
        if !self.ready()
            && let Some(sub) = self.submit.upgrade()
        {
            let mut sub = sub.lock().unwrap_or_else(|p| p.into_inner());
            sub.settle();
        }
        let mut g = self.slot.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(out) = g.as_ref() {
                return decode_outcome(out.clone());
            }
            match deadline {
                None => g = self.slot.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(TaskError::Timeout);
                    }
                    g = self
                        .slot
                        .cv
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

fn decode_outcome<R: DeserializeOwned>(out: Outcome) -> Result<R, TaskError> {
    let bytes = out?;
    postcard::from_bytes(&bytes).map_err(|e| TaskError::Codec(format!("decoding the result: {e}")))
}

fn not_registered(e: multiproc_process::StartError) -> SubmitError {
    SubmitError::TaskNotRegistered(e.to_string())
}

/// Results of [`RemotePool::imap_unordered`] in the order they complete.
pub struct IMapUnordered<R> {
    rx: mpsc::Receiver<Outcome>,
    left: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> IMapUnordered<R> {
    /// The next result, waiting at most `timeout` (`Some(Err(Timeout))`); `None` when all came.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        if self.left == 0 {
            return None;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(out) => {
                self.left -= 1;
                Some(decode_outcome(out))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Some(Err(TaskError::Timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.left = 0;
                Some(Err(TaskError::Closed))
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for IMapUnordered<R> {
    type Item = Result<R, TaskError>;
    fn next(&mut self) -> Option<Result<R, TaskError>> {
        if self.left == 0 {
            return None;
        }
        match self.rx.recv() {
            Ok(out) => {
                self.left -= 1;
                Some(decode_outcome(out))
            }
            Err(_) => {
                self.left = 0;
                Some(Err(TaskError::Closed))
            }
        }
    }
}

impl RemotePool {
    /// Connects to the pool `name` at `url` with default options (retries 1).
    pub fn connect(url: &str, name: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, name, Options::default(), 1)
    }

    /// [`RemotePool::connect`] with options and the number of times a task whose worker died is
    /// given to another worker before it fails with [`TaskError::WorkerLost`].
    pub fn connect_with(
        url: &str,
        name: &str,
        opts: Options,
        retries: u32,
    ) -> Result<Self, ConnectError> {
        Self::open(url, name, None, opts, retries)
    }

    /// Connects as the named client `client` of the pool `name`: a client that restarts (or
    /// another process) attaching with the same name gets the results of jobs submitted by its
    /// earlier incarnations that it had not yet received, through [`RemotePool::result_of`]
    /// (job ids from [`RemoteResult::job`]) and [`RemotePool::orphans`]. Job ids never repeat
    /// across incarnations (each attach takes a new generation, `INCR`). The results stream of a
    /// named client is not deleted when the pool is dropped (it expires 24 h after the last
    /// result). `client` is 1..=64 characters of `[A-Za-z0-9_.-]`; two live processes must not
    /// attach with the same name at the same time (each would take some of the other's results).
    pub fn attach(
        url: &str,
        name: &str,
        client: &str,
        opts: Options,
        retries: u32,
    ) -> Result<Self, ConnectError> {
        let ok = !client.is_empty()
            && client.len() <= 64
            && client
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(ConnectError::BadClient {
                client: client.to_owned(),
            });
        }
        Self::open(url, name, Some(client), opts, retries)
    }

    fn open(
        url: &str,
        name: &str,
        named: Option<&str>,
        opts: Options,
        retries: u32,
    ) -> Result<Self, ConnectError> {
        let ep = Endpoint::new(url, opts.clone())?;
        let mut link = Link::new(ep.clone());
        let deadline = Some(Instant::now());
        link.con(deadline)?;
        let tasks_key = crate::key(name, "tasks");
        conn::ensure_group(&mut link, &tasks_key, GROUP, deadline)?;
        let (client, first_job) = match named {
            None => (crate::unique_id("c"), 1),
            Some(c) => {
                let gen_key = crate::key(name, &format!("gen:{c}"));
                let generation: u64 = link.once("attaching", deadline, |con| {
                    let mut p = redis::pipe();
                    p.atomic()
                        .cmd("INCR")
                        .arg(&gen_key)
                        .cmd("EXPIRE")
                        .arg(&gen_key)
                        .arg(RESULTS_TTL_SECS)
                        .ignore();
                    p.query::<(u64,)>(con).map(|(g,)| g)
                })?;
                (format!("n-{c}"), (generation & 0xff_ffff) << 40 | 1)
            }
        };
        let results_key = crate::key(name, &format!("res:{client}"));
        let shared = Arc::new(Shared {
            slots: Mutex::new(HashMap::new()),
            named: named.is_some(),
            orphans: Mutex::new(HashMap::new()),
            trash: Mutex::new(Vec::new()),
            refs: Mutex::new(HashMap::new()),
            stop: Mutex::new(false),
        });
        let reader = {
            let shared = shared.clone();
            let key = results_key.clone();
            let mut rlink = Link::new(ep);
            rlink.run_id = link.run_id.clone();
            std::thread::Builder::new()
                .name("mp-redis-results".into())
                .spawn(move || read_results(rlink, key, shared))
                .map_err(|e| ConnectError::Spawn {
                    what: "results",
                    msg: e.to_string(),
                })?
        };
        let submit = Arc::new(Mutex::new(Submit {
            link,
            next_job: first_job,
            unconfirmed: Default::default(),
            buf: Vec::new(),
            buffered: Vec::new(),
            shared: shared.clone(),
        }));
        let flusher = Arc::new(Flusher {
            st: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        let flusher_thread = {
            let f = flusher.clone();
            let sub = Arc::downgrade(&submit);
            std::thread::Builder::new()
                .name("mp-redis-submit".into())
                .spawn(move || flush_later(f, sub))
                .map_err(|e| ConnectError::Spawn {
                    what: "submit",
                    msg: e.to_string(),
                })?
        };
        Ok(RemotePool {
            submit,
            shared,
            reader: Some(reader),
            flusher,
            flusher_thread: Some(flusher_thread),
            tasks_key,
            results_key,
            client,
            retries,
            build_hash: registry::registry_hash(),
            opts,
        })
    }

    /// A named client ([`RemotePool::attach`]): the result of `job`, submitted by this client or
    /// an earlier incarnation of it. If the result has already arrived it is ready at once;
    /// otherwise it arrives as usual. A result an earlier incarnation already received is not
    /// delivered again (the `RemoteResult` then waits: use `get_timeout`).
    pub fn result_of<R: DeserializeOwned>(&self, job: u64) -> RemoteResult<R> {
        let slot = Arc::new(SlotInner {
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        // Lock order: submit before slots (as submissions take them).
        let run_id = lock(&self.submit).link.run_id.clone().unwrap_or_default();
        let mut slots = self.shared.slots();
        let orphan = lock(&self.shared.orphans).remove(&job);
        match orphan {
            Some((id, out)) => {
                *lock(&slot.done) = Some(out);
                let mut refs = lock(&self.shared.refs);
                let last = match refs.get_mut(&id) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    _ => {
                        refs.remove(&id);
                        true
                    }
                };
                drop(refs);
                if last {
                    lock(&self.shared.trash).push(id);
                }
            }
            None => {
                let w = Waiting {
                    slot: Slot::One(slot.clone()),
                    run_id,
                };
                slots.insert(job, w);
            }
        }
        RemoteResult {
            slot,
            submit: std::sync::Weak::new(),
            job,
            _r: PhantomData,
        }
    }

    /// A named client: the job ids whose results have arrived with no one waiting for them
    /// (submitted by an earlier incarnation), ascending. Take them with
    /// [`RemotePool::result_of`].
    pub fn orphans(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.shared.orphans).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Waits for the replies of every submission sent so far (`apply_async` does not wait for
    /// its `XADD`'s reply): after `Ok`, every task submitted before is stored in Redis.
    pub fn flush(&self) -> Result<(), SubmitError> {
        // A job whose submission failed has been completed with the error, too.
        match lock(&self.submit).settle() {
            None => Ok(()),
            Some(e) => Err(e.into()),
        }
    }

    /// This client's id (its results stream is `{mp:NAME}:res:ID`).
    pub fn client_id(&self) -> &str {
        &self.client
    }

    /// Test hook (feature `test-hooks`, for this crate's tests): pretend to be another build
    /// (the build check must refuse the task).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __set_build_hash(&mut self, h: u64) {
        self.build_hash = h;
    }

    /// Runs `f(args)` on a worker and waits for the result.
    pub fn apply<M, T: Task<M>>(&self, f: T, args: T::Args) -> Result<T::Output> {
        Ok(self.apply_async(f, args)?.get()?)
    }

    /// Submits `f(args)`; the result comes back through [`RemoteResult`].
    pub fn apply_async<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
    ) -> Result<RemoteResult<T::Output>, SubmitError> {
        let e = registry::entry_of(&f).map_err(not_registered)?;
        self.submit_named(e.id, self.build_hash, &args)
    }

    /// Submits `f(args)` and calls `callback` with its result (or error: `WorkerLost`,
    /// `BrokerRestarted`, ...) on the pool's results thread, like the local pool's callbacks:
    /// keep it short. Each callback is called exactly once, unless the pool is dropped first.
    pub fn apply_async_callback<M, T: Task<M>>(
        &self,
        f: T,
        args: T::Args,
        callback: impl FnOnce(Result<T::Output, TaskError>) + Send + 'static,
    ) -> Result<(), SubmitError> {
        let e = registry::entry_of(&f).map_err(not_registered)?;
        let slot = Slot::Call(Box::new(move |out: Outcome| {
            callback(decode_outcome::<T::Output>(out))
        }));
        self.submit_slot(e.id, self.build_hash, &args, slot, false)
            .map(drop)
    }

    /// Submits a task by its registry id (`module::name(ArgTypes)->Ret`) from a program that
    /// need not contain it; only the id (which spells the signature) is checked, not the build.
    pub fn apply_named<A: Serialize, R: DeserializeOwned>(
        &self,
        task_id: &str,
        args: &A,
    ) -> Result<RemoteResult<R>, SubmitError> {
        self.submit_named(task_id, 0, args)
    }

    /// `f` over every item, results in order. Stops at the first error.
    pub fn map<M, T, I>(&self, f: T, items: I) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        I: IntoIterator<Item = T::Args>,
    {
        let e = registry::entry_of(&f).map_err(not_registered)?;
        let mut pending = Vec::new();
        self.submit_batch(e.id, self.build_hash, items, || {
            let s = Arc::new(SlotInner {
                done: Mutex::new(None),
                cv: Condvar::new(),
            });
            pending.push(RemoteResult::<T::Output> {
                slot: s.clone(),
                submit: std::sync::Weak::new(),
                job: 0,
                _r: PhantomData,
            });
            Slot::One(s)
        })?;
        Ok(pending.iter().map(|r| r.get()).collect::<Result<_, _>>()?)
    }

    /// `f` over every item, results as they complete.
    pub fn imap_unordered<M, T, I>(
        &self,
        f: T,
        items: I,
    ) -> Result<IMapUnordered<T::Output>, SubmitError>
    where
        T: Task<M>,
        I: IntoIterator<Item = T::Args>,
    {
        let e = registry::entry_of(&f).map_err(not_registered)?;
        let (tx, rx) = mpsc::channel();
        let mut left = 0;
        self.submit_batch(e.id, self.build_hash, items, || {
            left += 1;
            Slot::Chan(tx.clone())
        })?;
        Ok(IMapUnordered {
            rx,
            left,
            _r: PhantomData,
        })
    }

    /// Results not yet arrived.
    pub fn in_flight(&self) -> usize {
        self.shared.slots().len()
    }

    /// Encodes one task's arguments and checks their size against `max_message`.
    fn encode<A: Serialize>(&self, args: &A) -> Result<Vec<u8>, SubmitError> {
        let bytes = postcard::to_allocvec(args).map_err(|e| SubmitError::Codec(e.to_string()))?;
        self.opts
            .check_size(bytes.len(), |size, max| SubmitError::TooLarge { size, max })?;
        Ok(bytes)
    }

    fn submit_named<A: Serialize, R>(
        &self,
        task_id: &str,
        build: u64,
        args: &A,
    ) -> Result<RemoteResult<R>, SubmitError> {
        let slot = Arc::new(SlotInner {
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        let job = self.submit_slot(task_id, build, args, Slot::One(slot.clone()), true)?;
        Ok(RemoteResult {
            slot,
            submit: Arc::downgrade(&self.submit),
            job,
            _r: PhantomData,
        })
    }

    /// Submits many tasks, pipelined (one round trip per chunk of 256). On an error the chunk
    /// that failed is forgotten (some of its tasks may still run; their results are dropped) and
    /// earlier chunks stay submitted.
    fn submit_batch<A: Serialize>(
        &self,
        task_id: &str,
        build: u64,
        items: impl IntoIterator<Item = A>,
        mut make: impl FnMut() -> Slot,
    ) -> Result<(), SubmitError> {
        const CHUNK: usize = 256;
        let encoded: Vec<Vec<u8>> = items
            .into_iter()
            .map(|a| self.encode(&a))
            .collect::<Result<_, _>>()?;
        for chunk in encoded.chunks(CHUNK) {
            let mut sub = self.submit.lock().unwrap_or_else(|p| p.into_inner());
            sub.settle();
            let deadline = after(self.opts.connect_timeout);
            sub.link.fresh(deadline)?;
            let run_id = sub.link.run_id.clone().unwrap_or_default();
            let first = sub.next_job;
            sub.next_job += chunk.len() as u64;
            {
                let mut slots = self.shared.slots();
                for i in 0..chunk.len() as u64 {
                    let w = Waiting {
                        slot: make(),
                        run_id: run_id.clone(),
                    };
                    slots.insert(first + i, w);
                }
            }
            let mut p = redis::pipe();
            for (i, bytes) in chunk.iter().enumerate() {
                p.cmd("XADD")
                    .arg(&self.tasks_key)
                    .arg("*")
                    .arg("c")
                    .arg(&self.results_key)
                    .arg("j")
                    .arg(first + i as u64)
                    .arg("t")
                    .arg(task_id)
                    .arg("b")
                    .arg(build)
                    .arg("r")
                    .arg(self.retries)
                    .arg("a")
                    .arg(bytes)
                    .ignore();
            }
            if let Err(e) = sub
                .link
                .once("submitting tasks", deadline, |c| p.query::<()>(c))
            {
                let mut slots = self.shared.slots();
                for i in 0..chunk.len() as u64 {
                    slots.remove(&(first + i));
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Submits one task. With `defer`, the `XADD` is sent without waiting for its reply (read
    /// with a later submission, at most [`MAX_UNCONFIRMED`] later, or by the result's `get`): an
    /// error Redis returns for it then completes the result instead of this call.
    fn submit_slot<A: Serialize>(
        &self,
        task_id: &str,
        build: u64,
        args: &A,
        slot: Slot,
        defer: bool,
    ) -> Result<u64, SubmitError> {
        let bytes = self.encode(args)?;
        let mut sub = self.submit.lock().unwrap_or_else(|p| p.into_inner());
        if !defer || !sub.link.recent() {
            let _ = sub.settle();
        } else if sub.unconfirmed.len() >= MAX_UNCONFIRMED {
            // The older half: their replies are most likely here already.
            let _ = sub.settle_to(MAX_UNCONFIRMED / 2);
        }
        let job = sub.next_job;
        sub.next_job += 1;
        let deadline = after(self.opts.connect_timeout);
        // Connect (and check a quiet connection) first, so the slot records the run id the task
        // goes to.
        if sub.unconfirmed.is_empty() && sub.buffered.is_empty() {
            sub.link.fresh(deadline)?;
        }
        let run_id = sub.link.run_id.clone().unwrap_or_default();
        // Registered before the XADD: a fast worker's answer must find it.
        self.shared.slots().insert(job, Waiting { slot, run_id });
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.tasks_key)
            .arg("*")
            .arg("c")
            .arg(&self.results_key)
            .arg("j")
            .arg(job)
            .arg("t")
            .arg(task_id)
            .arg("b")
            .arg(build)
            .arg("r")
            .arg(self.retries)
            .arg("a")
            .arg(&bytes);
        if defer {
            if !sub.link.is_connected() {
                // Lost since `fresh` / the last write: nothing buffered can be sent any more.
                sub.write_buffered();
                self.shared.slots().remove(&job);
                sub.settle();
                return Err(LinkError::ConnectionLost {
                    during: "submitting a task",
                    msg: "connection lost".into(),
                }
                .into());
            }
            let first = sub.buffered.is_empty();
            cmd.write_packed_command(&mut sub.buf);
            sub.buffered.push(job);
            if sub.buffered.len() >= FLUSH_AT || sub.buf.len() >= FLUSH_BYTES {
                sub.write_buffered();
            } else if first {
                self.flusher.arm();
            }
            return Ok(job);
        }
        let r = sub
            .link
            .once("submitting a task", deadline, |c| cmd.query::<Value>(c))
            .map(drop);
        if let Err(e) = r {
            self.shared.slots().remove(&job);
            // The connection is gone: earlier unconfirmed submissions fail too.
            sub.settle();
            return Err(e.into());
        }
        Ok(job)
    }
}

impl Drop for RemotePool {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        {
            lock(&self.flusher.st).1 = true;
            self.flusher.cv.notify_one();
        }
        if let Some(h) = self.flusher_thread.take() {
            let _ = h.join();
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let mut sub = self.submit.lock().unwrap_or_else(|p| p.into_inner());
        sub.settle();
        if self.shared.named {
            // A later incarnation may attach and collect what is left.
            return;
        }
        // Best effort: remove our results stream.
        let deadline = Some(Instant::now());
        let _ = sub.link.once("dropping the pool", deadline, |c| {
            redis::cmd("DEL").arg(&self.results_key).query::<()>(c)
        });
    }
}

/// The results thread: reads this client's stream and completes waiting results.
fn read_results(mut link: Link, key: String, shared: Arc<Shared>) {
    let block = Duration::from_millis(200);
    let mut last = "0-0".to_string();
    let mut epoch = link.epoch;
    let outage = link.ep.opts.outage_timeout;
    let mut down_since: Option<Instant> = None;
    loop {
        if *shared.stop.lock().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        // A short deadline per attempt, so `stop` is seen while Redis is away.
        let deadline = after(block);
        let io = link.ep.opts.io_timeout;
        let from = last.clone();
        let r = link.once("reading results", deadline, |c| {
            c.set_read_timeout(Some(block.saturating_add(io)))?;
            let v = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1024)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key)
                .arg(&from)
                .query::<Value>(c);
            c.set_read_timeout(Some(io))?;
            v
        });
        if link.epoch != epoch {
            // Redis restarted: everything submitted to the old server is gone.
            epoch = link.epoch;
            last = "0-0".into();
            lock(&shared.orphans).clear();
            lock(&shared.refs).clear();
            lock(&shared.trash).clear();
            let now_run = link.run_id.clone().unwrap_or_default();
            let lost: Vec<Waiting> = {
                let mut slots = shared.slots();
                let ids: Vec<u64> = slots
                    .iter()
                    .filter(|(_, w)| w.run_id != now_run)
                    .map(|(j, _)| *j)
                    .collect();
                ids.into_iter().filter_map(|j| slots.remove(&j)).collect()
            };
            for w in lost {
                complete(w.slot, Err(TaskError::BrokerRestarted));
            }
        }
        let v = match r {
            Ok(v) => {
                down_since = None;
                v
            }
            Err(e) => {
                let lost = e.is_disconnect();
                if lost {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= outage {
                        // Redis has been away too long: nothing in flight may wait forever.
                        let all: Vec<Waiting> = shared.slots().drain().map(|(_, w)| w).collect();
                        for w in all {
                            complete(w.slot, Err(e.clone().into()));
                        }
                    }
                }
                if !lost {
                    tracing::warn!(target: "multiproc", "remote pool results: {e}");
                    std::thread::sleep(block);
                }
                continue;
            }
        };
        let entries = conn::read_reply(&v);
        let mut ids = std::mem::take(&mut *lock(&shared.trash));
        if entries.is_empty() && ids.is_empty() {
            continue;
        }
        for e in &entries {
            last = e.id.clone();
            let answers: Vec<(u64, u8, &[u8])> = if let Some(m) = e.field("m") {
                unpack(m)
            } else if let Some(job) = e.u64_field("j") {
                let k = e.u64_field("k").unwrap_or(u64::MAX) as u8;
                vec![(job, k, e.field("v").unwrap_or_default())]
            } else {
                Vec::new()
            };
            let mut kept = 0;
            for (job, k, v) in answers {
                if !shared.arrived(job, &e.id, outcome(k, v)) {
                    kept += 1;
                }
            }
            if kept == 0 {
                ids.push(e.id.clone());
            } else {
                lock(&shared.refs).insert(e.id.clone(), kept);
            }
        }
        if ids.is_empty() {
            continue;
        }
        let deadline = after(block);
        let _ = link.once("trimming results", deadline, |c| {
            redis::cmd("XDEL").arg(&key).arg(&ids).query::<()>(c)
        });
    }
}

/// The answers packed in a results entry's `m` field (see `worker::pack`); a truncated tail is
/// ignored.
fn unpack(mut m: &[u8]) -> Vec<(u64, u8, &[u8])> {
    let mut out = Vec::new();
    while m.len() >= 13 {
        let job = u64::from_le_bytes(m[..8].try_into().expect("8 bytes"));
        let k = m[8];
        let len = u32::from_le_bytes(m[9..13].try_into().expect("4 bytes")) as usize;
        let Some(v) = m.get(13..13 + len) else {
            break;
        };
        out.push((job, k, v));
        m = &m[13 + len..];
    }
    out
}

/// One answer's outcome from its kind and payload.
fn outcome(k: u8, v: &[u8]) -> Outcome {
    let text = || String::from_utf8_lossy(v).into_owned();
    match k {
        kind::OK => Ok(v.to_vec()),
        kind::FAILED => Err(split_worker(text(), |msg, worker| TaskError::TaskFailed {
            msg,
            worker,
        })),
        kind::UNKNOWN => Err(split_worker(text(), |task, worker| {
            TaskError::UnknownTask { task, worker }
        })),
        kind::BUILD => Err(split_worker(text(), |task, worker| {
            TaskError::BuildMismatch { task, worker }
        })),
        kind::LOST => {
            let t = text();
            let (deliveries, task) = t.split_once('\n').unwrap_or(("0", &t));
            Err(TaskError::WorkerLost {
                task: task.to_string(),
                deliveries: deliveries.parse().unwrap_or(0),
            })
        }
        _ => Err(TaskError::Codec(format!("unknown result kind {k}"))),
    }
}

/// Worker messages are `worker\ntext`.
fn split_worker(s: String, f: impl FnOnce(String, String) -> TaskError) -> TaskError {
    match s.split_once('\n') {
        Some((w, t)) => f(t.to_string(), w.to_string()),
        None => f(s, String::new()),
    }
}
