//! The worker process: a registered task (`pool_worker`) that reads jobs from its own pipe,
//! runs each job (a chunk, one record) through the task registry's chunk trampoline under
//! `catch_unwind` (one call per chunk: the arguments decode as one sequence, the results
//! encode as one sequence straight into the result message), and writes one result message
//! per job to its result pipe.
//!
//! Before running job `seq` the worker stores `seq` in a shared `started` word (Release; the
//! parent reads it with Acquire after the worker died, so it sees the value stored before any
//! effect of the job). Jobs are sent in `seq` order and taken in that order, so when the worker
//! dies the parent knows: results that arrived are done, the job `seq == started` (if its result
//! did not arrive) was running and is lost, jobs with `seq > started` were never started and
//! are given to another worker.
//!
//! A job that carries fds (shared objects among its arguments) is preceded by one message of
//! fds on the worker's socket; its arguments are decoded with the parent's fd numbers mapped
//! to the fds received (see `fdpass.rs`). A result too large for the result pipe is answered
//! with a `TOO_LARGE` record and the worker goes on.

use crate::facade::Ordering;
use crate::fdpass;
use crate::wire::{self, Cursor};
use multiproc_channel::{Connection, RecvError, SendError};
use multiproc_process::panic_message;
use multiproc_process::registry::{self, TaskEntry, TaskFailure};
use multiproc_ring::WaitStrategy;
use multiproc_shm::fd_passing::{serialize_fd, with_fd_map};
use multiproc_sync::RawValue;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

/// An fd of the parent that the start method keeps open in the worker at the same number
/// (its serialization registers it with `collect_fds`, as shared objects' handles do).
#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) struct FdArg(#[serde(serialize_with = "serialize_fd")] pub(crate) RawFd);

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) jobs: Connection<Vec<u8>>,
    pub(crate) results: Connection<Vec<u8>>,
    pub(crate) started: RawValue<u64>,
    /// The worker's end of its fd socket.
    pub(crate) sock: FdArg,
    /// 0 = no limit.
    pub(crate) maxtasks: u64,
    /// The pool's wait strategy for both pipes ([`wait_code`]).
    pub(crate) wait: u8,
    pub(crate) initializer: Option<(u64, Vec<u8>)>,
    /// The initializer arguments' fds: (number in the encoded arguments, the fd kept open here).
    pub(crate) init_fds: Vec<(RawFd, FdArg)>,
}

/// The wait strategy as it travels to the worker.
pub(crate) fn wait_code(w: WaitStrategy) -> u8 {
    match w {
        WaitStrategy::Spin => 0,
        WaitStrategy::SpinYield => 1,
        WaitStrategy::SpinPark => 2,
        WaitStrategy::Park => 3,
    }
}

fn wait_of(code: u8) -> WaitStrategy {
    match code {
        0 => WaitStrategy::Spin,
        1 => WaitStrategy::SpinYield,
        3 => WaitStrategy::Park,
        _ => WaitStrategy::SpinPark,
    }
}

/// How long a worker waits for the fds that the parent sent just before a job.
const FDS_WAIT: Duration = Duration::from_secs(10);

/// Under [`WaitStrategy::Spin`], how long an idle worker spins for its next job before it parks
/// until one comes (it spins again after that job). Under `Spin` the pool gives an idle
/// worker's job to the one that answered last, always (`TIE_SLACK_SPIN`), so with sequential
/// calls the others get none; spinning for ever they would hold CPUs the caller and the chosen
/// worker need (2 workers and a spinning caller on 2 CPUs: round trips of 0.2-0.9 ms, a time
/// slice each, in half the runs). A pool with work flowing never idles this long.
const SPIN_IDLE: Duration = Duration::from_millis(2);

/// Receives the next job into `buf`: under `Spin` at most [`SPIN_IDLE`] of spinning, then a
/// parked wait; else as the pipe's strategy says.
fn recv_job(
    jobs: &mut Connection<Vec<u8>>,
    buf: &mut [u8],
    spin: bool,
) -> Result<usize, RecvError> {
    if !spin {
        return jobs.recv_bytes_into(buf, 0);
    }
    match jobs.recv_bytes_into_timeout(buf, 0, SPIN_IDLE) {
        Err(RecvError::Timeout) => {
            jobs.set_wait_strategy(WaitStrategy::Park);
            let r = jobs.recv_bytes_into(buf, 0);
            jobs.set_wait_strategy(WaitStrategy::Spin);
            r
        }
        r => r,
    }
}

/// Runs one trampoline call, classifying the failure.
fn run_one(entry: &TaskEntry, args: &[u8]) -> Result<Vec<u8>, (u8, String)> {
    match catch_unwind(AssertUnwindSafe(|| (entry.trampoline)(args))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(TaskFailure::Result(msg))) => Err((wire::ENCODE, msg)),
        Ok(Err(TaskFailure::Arguments(msg))) => Err((wire::TASK_ERR, msg)),
        Err(p) => Err((wire::PANIC, panic_message(&*p))),
    }
}

/// Runs a chunk through the entry's chunk trampoline, appending the results to `out`.
fn run_chunk(
    entry: &TaskEntry,
    map: &[(RawFd, RawFd)],
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), (u8, String)> {
    match catch_unwind(AssertUnwindSafe(|| {
        with_fd_map(map, || (entry.chunk_trampoline)(args, out))
    })) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(TaskFailure::Result(msg))) => Err((wire::ENCODE, msg)),
        Ok(Err(TaskFailure::Arguments(msg))) => Err((wire::TASK_ERR, msg)),
        Err(p) => Err((wire::PANIC, panic_message(&*p))),
    }
}

#[multiproc_process::task(crate = multiproc_process)]
pub(crate) fn pool_worker(args: WorkerArgs) {
    let WorkerArgs {
        mut jobs,
        mut results,
        started,
        sock,
        maxtasks,
        wait,
        initializer,
        init_fds,
    } = args;
    if sock.0 < 0 {
        return;
    }
    // SAFETY: the start method kept the parent's socket end open at this number for us; nothing
    // else in this process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(sock.0) };
    // Bind both ends at once, so the parent sees Eof/Disconnected if we die from here on.
    if jobs.bind().is_err() || results.bind().is_err() {
        return;
    }
    jobs.set_wait_strategy(wait_of(wait));
    results.set_wait_strategy(wait_of(wait));
    // Our pages of both rings now, while the pool starts, not as page faults in the first
    // big `map` (see `PIPE_CAPACITY`).
    jobs.populate();
    results.populate();
    let spin = wait_of(wait) == WaitStrategy::Spin;
    // Panics of tasks travel back as messages; do not print them in the worker.
    std::panic::set_hook(Box::new(|_| {}));
    let started_word = started.as_atomic();
    if let Some((hash, bytes)) = initializer {
        match registry::entry_by_hash(hash) {
            Some(e) => {
                let map: Vec<(RawFd, RawFd)> = init_fds.iter().map(|(a, b)| (*a, b.0)).collect();
                if let Err((_, msg)) = with_fd_map(&map, || run_one(e, &bytes)) {
                    tracing::error!(target: "multiproc", "pool initializer failed: {msg}");
                    std::process::exit(1);
                }
            }
            None => std::process::exit(1),
        }
    }
    // Hello (seq 0): the parent gives us jobs only from now on.
    let mut hello = Vec::with_capacity(22);
    hello.extend_from_slice(&[0u8; 20]);
    hello.push(wire::OK);
    hello.push(0); // an empty sequence
    if results.send_bytes(&hello, 0, None).is_err() {
        return;
    }
    let mut done = 0u64;
    let mut cached: Option<&'static TaskEntry> = None;
    let mut out = Vec::with_capacity(4096);
    // One receive buffer for the worker's life (a fresh multi-MiB Vec per chunk costs page
    // faults).
    let mut inbuf = vec![0u8; 64 * 1024];
    loop {
        let len = match recv_job(&mut jobs, &mut inbuf, spin) {
            Ok(n) => n,
            Err(RecvError::BufferTooShort { needed }) => {
                inbuf.resize(needed, 0);
                continue;
            }
            Err(_) => return, // Eof: the pool closed our pipe (or died)
        };
        let mut c = Cursor::new(&inbuf[..len]);
        let (Some(seq), Some(job), Some(chunk), Some(hash), Some(_n), Some(nfds), Some(args_len)) = (
            c.u64(),
            c.u64(),
            c.u32(),
            c.u64(),
            c.u32(),
            c.u32(),
            c.u32(),
        ) else {
            return;
        };
        // The job's fds, and the map from the parent's numbers (in the encoded arguments, in
        // the order collect_fds saw them, each as `[u32]` after the arguments) to ours.
        let mut fds: Vec<OwnedFd> = Vec::new();
        if nfds > 0 {
            match fdpass::recv_fds(sock.as_fd(), FDS_WAIT) {
                Ok(v) => fds = v,
                Err(_) => return,
            }
        }
        // Release: pairs with the parent's Acquire load after our death; a weaker store could
        // become visible after effects of the job, making a started job look unstarted.
        started_word.store(seq, Ordering::Release);
        out.clear();
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&job.to_le_bytes());
        out.extend_from_slice(&chunk.to_le_bytes());
        let entry = match cached {
            Some(e) if e.hash() == hash => Some(e),
            _ => {
                cached = registry::entry_by_hash(hash);
                cached
            }
        };
        match (entry, c.take(args_len as usize)) {
            (None, _) => {
                out.push(wire::TASK_ERR);
                out.extend_from_slice(b"unknown task in the worker (different build?)");
            }
            (Some(_), None) => {
                out.push(wire::TASK_ERR);
                out.extend_from_slice(b"truncated job message");
            }
            (Some(e), Some(args)) => {
                let mut map: Vec<(RawFd, RawFd)> = Vec::new();
                for f in &fds {
                    match c.u32() {
                        Some(from) => map.push((from as RawFd, f.as_raw_fd())),
                        None => break,
                    }
                }
                out.push(wire::OK);
                // The whole chunk in one trampoline call, always under a map (an empty one
                // for a job without fds, so a handle's fd number never names an fd of the
                // worker's own). As Python's mapstar: the first failure is the chunk's result.
                if let Err((status, m)) = run_chunk(e, &map, args, &mut out) {
                    out.truncate(20);
                    out.push(status);
                    out.extend_from_slice(m.as_bytes());
                }
            }
        }
        drop(fds);
        match results.send_bytes(&out, 0, None) {
            Ok(()) => {}
            Err(SendError::TooLarge { len, max }) => {
                out.truncate(20);
                out.push(wire::TOO_LARGE);
                out.extend_from_slice(&(len as u64).to_le_bytes());
                out.extend_from_slice(&(max as u64).to_le_bytes());
                if results.send_bytes(&out, 0, None).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
        if out.capacity() > 1 << 22 {
            out = Vec::with_capacity(4096);
        }
        done += 1;
        if maxtasks != 0 && done >= maxtasks {
            return;
        }
    }
}
