//! `serve`: the worker loop of a [`RemotePool`](crate::RemotePool), run by the user's own binary.
//!
//! One task at a time per `serve` call (run several processes, or several threads each calling
//! `serve`, for more). While a task runs, a heartbeat thread resets its entry's idle time every
//! [`ServeOptions::heartbeat`] (a Lua `XCLAIM ... JUSTID` that only touches an entry this worker
//! still owns). An entry idle for longer than [`Options::claim_idle`] belongs to a dead worker: the
//! next worker to poll claims it with `XAUTOCLAIM` and runs it again, or, when its delivery count
//! says the retries are used up, answers [`TaskError::WorkerLost`](crate::TaskError::WorkerLost).

use crate::conn::{self, Endpoint, Entry, Link, Options};
use crate::pool::{GROUP, RESULTS_TTL_SECS, kind};
use crate::{ConnectError, LinkError};
use multiproc_process::registry;
use multiproc_shm::deadline::after;
use redis::Value;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connection settings; `claim_idle` is how long a running task may go without a heartbeat
    /// before its worker counts as dead (default here 5 s).
    pub options: Options,
    /// How often the running task's entry is touched (default 1 s; keep well under `claim_idle`).
    pub heartbeat: Duration,
    /// Return after this many tasks (default: never).
    pub max_tasks: Option<u64>,
    /// Return after this long without a task (default: never).
    pub idle_exit: Option<Duration>,
    /// Refuse tasks submitted by a different build (default true).
    pub check_build: bool,
    /// The most new tasks one read takes (`XREADGROUP COUNT n`, default 128). A worker reads one
    /// task at a time while tasks take 1 ms or more (so long tasks spread over the workers), and
    /// doubles its read up to `batch` while they are quicker. Tasks of a batch run one after
    /// another; all are kept alive by the heartbeat while held, a read-ahead task counts as not
    /// delivered until it starts (so a worker's death does not use up its retries), and results
    /// are posted (with their acknowledgements) in one `MULTI` when the batch is done or 2 ms
    /// after the oldest unposted result, whichever comes first.
    pub batch: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            options: Options {
                claim_idle: Duration::from_secs(5),
                ..Options::default()
            },
            heartbeat: Duration::from_secs(1),
            max_tasks: None,
            idle_exit: None,
            check_build: true,
            batch: 128,
        }
    }
}

/// What a [`serve`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Tasks run (successfully or not).
    pub tasks: u64,
    /// Tasks refused (unknown id, different build).
    pub refused: u64,
    /// Tasks answered with `WorkerLost` (retries used up).
    pub lost: u64,
}

const HEARTBEAT_LUA: &str = r#"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"#;

/// The pool's set of started tasks (`{mp:NAME}:started`, beside `{mp:NAME}:tasks`).
fn started_key(tasks_key: &str) -> String {
    format!(
        "{}started",
        tasks_key.strip_suffix("tasks").unwrap_or(tasks_key)
    )
}

/// Records that the task `id` starts now: `SADD {mp:NAME}:started id`, sent before the task runs
/// without waiting for its reply (read with the next command). The id leaves the set when its
/// result is posted (`SREM` in the same `MULTI`) or when another worker claims it. A claimer
/// thereby knows whether the dead owner had started the task: every task of a read is delivered
/// (delivery count 1), but one still waiting in a dead worker's batch was never run, so its
/// claim counts one delivery less (a first delivery, not a retry). One cheap command per task,
/// instead of resetting the delivery counts of read-ahead tasks and restoring each at its start.
fn record_start(link: &mut Link, started: &str, id: &str) {
    let mut cmd = redis::cmd("SADD");
    cmd.arg(started).arg(id);
    let deadline = after(link.ep.opts.io_timeout);
    if let Err(e) = link.send_nowait("recording a start", deadline, &cmd.get_packed_command(), 1) {
        tracing::debug!(target: "multiproc", "recording a start: {e}");
    }
}

struct Beat {
    /// Every entry this worker holds (running, waiting in its batch, or answered but not yet
    /// posted).
    held: Vec<String>,
    stop: bool,
}

/// A task's answer waiting to be posted (with the task's acknowledgement).
struct Answer {
    /// The task entry.
    id: String,
    /// `None`: a malformed entry, acknowledged without an answer.
    to: Option<(String, u64, u8, Vec<u8>)>,
}

/// Serves the pool `name` at `url`: takes tasks, runs them through this binary's
/// `#[multiproc::task]` registry, answers on each client's results stream. Fails at once if Redis
/// cannot be reached at the start; afterwards it reconnects with backoff for as long as it runs.
/// Returns when `max_tasks` or `idle_exit` says so.
pub fn serve(url: &str, name: &str, opts: ServeOptions) -> Result<ServeStats, ConnectError> {
    let ep = Endpoint::new(url, opts.options.clone())?;
    let mut link = Link::new(ep.clone());
    link.con(Some(Instant::now()))?;
    let key = crate::key(name, "tasks");
    conn::ensure_group(&mut link, &key, GROUP, None)?;
    let worker = crate::unique_id("w");
    tracing::info!(target: "multiproc", "remote worker {worker} serving {key} at {}", ep.shown);

    let beat = Arc::new((
        Mutex::new(Beat {
            held: Vec::new(),
            stop: false,
        }),
        Condvar::new(),
    ));
    let hb = {
        let beat = beat.clone();
        let key = key.clone();
        let worker = worker.clone();
        let every = opts.heartbeat;
        let mut hlink = Link::new(ep.clone());
        std::thread::Builder::new()
            .name("mp-redis-heartbeat".into())
            .spawn(move || heartbeat(&mut hlink, &key, &worker, every, &beat))
            .map_err(|e| ConnectError::Spawn {
                what: "heartbeat",
                msg: e.to_string(),
            })?
    };

    let r = serve_loop(&mut link, &key, &worker, &opts, &beat);
    conn::forget_consumer(&mut link, &key, GROUP, &worker);
    {
        let mut b = beat.0.lock().unwrap_or_else(|p| p.into_inner());
        b.stop = true;
        beat.1.notify_all();
    }
    let _ = hb.join();
    r
}

fn heartbeat(
    link: &mut Link,
    key: &str,
    worker: &str,
    every: Duration,
    beat: &(Mutex<Beat>, Condvar),
) {
    let mut g = beat.0.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        g = beat
            .1
            .wait_timeout(g, every)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if g.stop {
            return;
        }
        if g.held.is_empty() {
            continue;
        }
        let ids = g.held.clone();
        drop(g);
        let deadline = after(every);
        let r = link.once("heartbeat", deadline, |c| {
            redis::cmd("EVAL")
                .arg(HEARTBEAT_LUA)
                .arg(1)
                .arg(key)
                .arg(GROUP)
                .arg(worker)
                .arg(&ids)
                .query::<i64>(c)
        });
        if let Err(e) = r {
            tracing::debug!(target: "multiproc", "heartbeat: {e}");
        }
        g = beat.0.lock().unwrap_or_else(|p| p.into_inner());
    }
}

fn serve_loop(
    link: &mut Link,
    key: &str,
    worker: &str,
    opts: &ServeOptions,
    beat: &(Mutex<Beat>, Condvar),
) -> Result<ServeStats, ConnectError> {
    let mut stats = ServeStats::default();
    let started_set = started_key(key);
    let lost_ms = opts.options.claim_idle.as_millis().max(1) as u64;
    let block = Duration::from_millis(500).min(opts.options.claim_idle);
    let io = opts.options.io_timeout;
    let mut cursor = "0-0".to_string();
    let mut last_task = Instant::now();
    let mut pause = Duration::from_millis(10);
    // Claims are looked for after an empty read, and at least every second while busy.
    let claim_every = Duration::from_secs(1).min(opts.options.claim_idle / 2);
    let mut last_claim: Option<Instant> = None;
    let mut idle_round = true;
    // How many new tasks the next read takes (see ServeOptions::batch).
    let mut read_ahead: u64 = 1;
    loop {
        if opts.max_tasks.is_some_and(|m| stats.tasks >= m) {
            return Ok(stats);
        }
        if opts.idle_exit.is_some_and(|d| last_task.elapsed() >= d) {
            return Ok(stats);
        }
        // A command error (not a lost connection): log, back off, go on.
        let mut fail = |e: LinkError, link: &mut Link| {
            if conn::is_nogroup(&e) {
                let _ = conn::ensure_group(link, key, GROUP, after(io));
            } else {
                tracing::warn!(target: "multiproc", "remote worker {worker}: {e}");
                std::thread::sleep(pause);
                pause = (pause * 2).min(opts.options.max_backoff);
            }
        };
        // 1. A task whose worker died.
        let due = idle_round || last_claim.is_none_or(|t| t.elapsed() >= claim_every);
        idle_round = true;
        let from = cursor.clone();
        let r = if !due {
            Ok(Value::Nil)
        } else {
            last_claim = Some(Instant::now());
            link.retry("claiming tasks", None, |c| {
                redis::cmd("XAUTOCLAIM")
                    .arg(key)
                    .arg(GROUP)
                    .arg(worker)
                    .arg(lost_ms)
                    .arg(&from)
                    .arg("COUNT")
                    .arg(1)
                    .query::<Value>(c)
            })
        };
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                fail(e, link);
                continue;
            }
        };
        let (next, claimed) = if due {
            conn::autoclaim_reply(&v)
        } else {
            (cursor.clone(), Vec::new())
        };
        cursor = next;
        let batch: Vec<(Entry, u64)> = if let Some(e) = claimed.into_iter().next() {
            let id = e.id.clone();
            // The delivery count (this claim included), and whether the last owner had started
            // the task (else this claim is not a retry). Not idempotent (SREM): sent once; on an
            // error the task counts as started (the conservative side).
            let r = link.once("reading the delivery count", None, |c| {
                redis::pipe()
                    .cmd("XPENDING")
                    .arg(key)
                    .arg(GROUP)
                    .arg(&id)
                    .arg(&id)
                    .arg(1)
                    .cmd("SREM")
                    .arg(&started_set)
                    .arg(&id)
                    .query::<(Value, i64)>(c)
            });
            let n = match r {
                Ok((v, removed)) => {
                    let n = conn::pending_count(&v).unwrap_or(2);
                    if removed == 1 {
                        n
                    } else {
                        n.saturating_sub(1).max(1)
                    }
                }
                Err(_) => 2,
            };
            vec![(e, n)]
        } else {
            // 2. New tasks.
            let count = opts
                .max_tasks
                .map_or(u64::MAX, |m| m.saturating_sub(stats.tasks))
                .clamp(1, read_ahead);
            let r = link.retry("reading tasks", None, |c| {
                c.set_read_timeout(Some(block.saturating_add(io)))?;
                let v = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(worker)
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block.as_millis().max(1) as u64)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(">")
                    .query::<Value>(c);
                c.set_read_timeout(Some(io))?;
                v
            });
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    fail(e, link);
                    continue;
                }
            };
            let got = conn::read_reply(&v);
            if got.is_empty() {
                continue;
            }
            idle_round = false;
            got.into_iter().map(|e| (e, 1)).collect()
        };
        pause = Duration::from_millis(10);
        last_task = Instant::now();
        let epoch = link.epoch;
        beat.0.lock().unwrap_or_else(|p| p.into_inner()).held =
            batch.iter().map(|(e, _)| e.id.clone()).collect();
        let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
        let mut first_answer: Option<Instant> = None;
        let n = batch.len();
        // Time spent running the tasks (not posting results: a slow round trip on a busy host
        // must not make quick tasks look slow and shrink the reads to one task).
        let mut ran = Duration::ZERO;
        for (i, (entry, deliveries)) in batch.into_iter().enumerate() {
            record_start(link, &started_set, &entry.id);
            let t0 = Instant::now();
            answers.push(handle(key, worker, opts, entry, deliveries, &mut stats));
            ran += t0.elapsed();
            let first = *first_answer.get_or_insert_with(Instant::now);
            if i + 1 == n || first.elapsed() >= Duration::from_millis(2) {
                post(link, key, worker, epoch, &answers);
                let done: std::collections::HashSet<&str> =
                    answers.iter().map(|a| a.id.as_str()).collect();
                let mut b = beat.0.lock().unwrap_or_else(|p| p.into_inner());
                b.held.retain(|h| !done.contains(h.as_str()));
                drop(b);
                answers.clear();
                first_answer = None;
            }
        }
        read_ahead = if ran < Duration::from_millis(n as u64) {
            (read_ahead * 2).min(opts.batch.max(1) as u64)
        } else {
            1
        };
    }
}

/// Runs (or refuses) one task and returns its answer, not yet posted.
fn handle(
    key: &str,
    worker: &str,
    opts: &ServeOptions,
    e: Entry,
    deliveries: u64,
    stats: &mut ServeStats,
) -> Answer {
    let (Some(results), Some(job), Some(task), Some(build), Some(retries), Some(args)) = (
        e.str_field("c").map(str::to_string),
        e.u64_field("j"),
        e.str_field("t").map(str::to_string),
        e.u64_field("b"),
        e.u64_field("r"),
        e.field("a"),
    ) else {
        tracing::warn!(target: "multiproc", "remote worker {worker}: malformed task entry {} dropped", e.id);
        return Answer { id: e.id, to: None };
    };
    // Results go only to a results stream of this pool (same hash tag, same cluster slot).
    let prefix = format!("{}res:", key.strip_suffix("tasks").unwrap_or(key));
    if !results.starts_with(&prefix) {
        tracing::warn!(target: "multiproc", "remote worker {worker}: task {} names a results stream outside the pool; dropped", e.id);
        return Answer { id: e.id, to: None };
    }
    let (k, payload): (u8, Vec<u8>) = if deliveries > retries.saturating_add(1) {
        stats.lost += 1;
        (kind::LOST, format!("{deliveries}\n{task}").into_bytes())
    } else {
        match registry::TASKS.iter().find(|t| t.id == task) {
            None => {
                stats.refused += 1;
                (kind::UNKNOWN, format!("{worker}\n{task}").into_bytes())
            }
            Some(_) if opts.check_build && build != 0 && build != registry::registry_hash() => {
                stats.refused += 1;
                (kind::BUILD, format!("{worker}\n{task}").into_bytes())
            }
            Some(t) => {
                let out =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.trampoline)(args)));
                stats.tasks += 1;
                match out {
                    Ok(Ok(bytes)) => match opts.options.check_size(bytes.len(), |size, max| {
                        format!("message of {size} bytes exceeds the maximum of {max} bytes")
                    }) {
                        Ok(()) => (kind::OK, bytes),
                        Err(err) => (
                            kind::FAILED,
                            format!("{worker}\nresult: {err}").into_bytes(),
                        ),
                    },
                    Ok(Err(msg)) => (kind::FAILED, format!("{worker}\n{msg}").into_bytes()),
                    Err(p) => {
                        let msg = multiproc_process::panic_message(&*p);
                        (
                            kind::FAILED,
                            format!("{worker}\npanicked: {msg}").into_bytes(),
                        )
                    }
                }
            }
        }
    };
    Answer {
        id: e.id,
        to: Some((results, job, k, payload)),
    }
}

/// The most payload bytes packed into one results entry (a larger single answer gets its own).
const PACK_BYTES: usize = 1 << 20;

/// Packs answers as one results-entry field `m`: per answer the job (u64 LE), the kind (u8), the
/// payload length (u32 LE) and the payload. Read by the pool's results thread (`unpack`).
pub(crate) fn pack(out: &mut Vec<u8>, job: u64, k: u8, payload: &[u8]) {
    out.extend_from_slice(&job.to_le_bytes());
    out.push(k);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Posts answers and acknowledges their tasks in one `MULTI`: a result is posted exactly when
/// its task leaves the pending list. The answers for one client go as one results entry (field
/// `m`, several answers packed, about [`PACK_BYTES`] at most per entry) with one `EXPIRE`; the
/// tasks are acknowledged and deleted with one `XACK` and one `XDEL`. Retried across
/// reconnections unless Redis restarted since the tasks were read (then each client has already
/// failed those calls with BrokerRestarted and the task entries are gone).
fn post(link: &mut Link, key: &str, worker: &str, epoch: u64, answers: &[Answer]) {
    if answers.is_empty() {
        return;
    }
    // Results streams in order of first appearance, with their packed entries.
    let mut streams: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    for a in answers {
        let Some((results, job, k, payload)) = &a.to else {
            continue;
        };
        let i = match streams.iter().position(|(r, _)| r == results) {
            Some(i) => i,
            None => {
                streams.push((results, Vec::new()));
                streams.len() - 1
            }
        };
        let packs = &mut streams[i].1;
        if packs
            .last()
            .is_none_or(|p| !p.is_empty() && p.len() + payload.len() > PACK_BYTES)
        {
            packs.push(Vec::new());
        }
        let last = packs.last_mut().expect("pushed above");
        pack(last, *job, *k, payload);
    }
    let ids: Vec<&str> = answers.iter().map(|a| a.id.as_str()).collect();
    let mut p = redis::pipe();
    p.atomic();
    for (results, packs) in &streams {
        for m in packs {
            p.cmd("XADD")
                .arg(*results)
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*")
                .arg("m")
                .arg(m)
                .ignore();
        }
        p.cmd("EXPIRE").arg(*results).arg(RESULTS_TTL_SECS).ignore();
    }
    p.cmd("XACK").arg(key).arg(GROUP).arg(&ids).ignore();
    p.cmd("XDEL").arg(key).arg(&ids).ignore();
    p.cmd("SREM").arg(started_key(key)).arg(&ids).ignore();
    loop {
        if link.con(None).is_err() {
            continue;
        }
        if link.epoch != epoch {
            return;
        }
        let r = link.once("posting results", None, |c| p.query::<()>(c));
        match r {
            Ok(()) => return,
            Err(_) if link.epoch != epoch => return,
            Err(e) if e.is_disconnect() => continue,
            Err(err) => {
                tracing::warn!(target: "multiproc", "remote worker {worker}: posting results: {err}");
                return;
            }
        }
    }
}
