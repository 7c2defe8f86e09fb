//! The worker process: a registered task (`pool_worker`) that reads jobs from its own pipe,
//! runs each item through the task registry's trampoline under `catch_unwind`, and writes one
//! result message per job to its result pipe.
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

use crate::facade::{AtomicU64, Ordering};
use crate::fdpass;
use crate::wire::{self, Cursor};
use multiproc_channel::{Connection, RecvError, SendError};
use multiproc_process::registry::{self, TaskEntry};
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
    pub(crate) initializer: Option<(u64, Vec<u8>)>,
    /// The initializer arguments' fds: (number in the encoded arguments, the fd kept open here).
    pub(crate) init_fds: Vec<(RawFd, FdArg)>,
}

/// How long a worker waits for the fds that the parent sent just before a job.
const FDS_WAIT: Duration = Duration::from_secs(10);

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs one trampoline call, classifying the failure.
fn run_one(entry: &TaskEntry, args: &[u8]) -> Result<Vec<u8>, (u8, String)> {
    match catch_unwind(AssertUnwindSafe(|| (entry.trampoline)(args))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(msg)) if msg.starts_with("encoding the task result") => Err((wire::ENCODE, msg)),
        Ok(Err(msg)) => Err((wire::TASK_ERR, msg)),
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
    // Panics of tasks travel back as messages; do not print them in the worker.
    std::panic::set_hook(Box::new(|_| {}));
    // SAFETY: `as_ptr` points at an 8-aligned u64 inside the mapping `started` keeps alive for
    // this whole function; every process touches it only through atomics.
    let started_word = unsafe { AtomicU64::from_ptr(started.as_ptr()) };
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
    let mut hello = Vec::with_capacity(25);
    hello.extend_from_slice(&[0u8; 20]);
    hello.push(wire::OK);
    hello.extend_from_slice(&0u32.to_le_bytes());
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
        let len = match jobs.recv_bytes_into(&mut inbuf, 0) {
            Ok(n) => n,
            Err(RecvError::BufferTooShort { needed }) => {
                inbuf.resize(needed, 0);
                continue;
            }
            Err(_) => return, // Eof: the pool closed our pipe (or died)
        };
        let mut c = Cursor::new(&inbuf[..len]);
        let (Some(seq), Some(job), Some(chunk), Some(hash), Some(n), Some(nfds)) =
            (c.u64(), c.u64(), c.u32(), c.u64(), c.u32(), c.u32())
        else {
            return;
        };
        // The job's fds, and the map from the parent's numbers (in the encoded arguments, in
        // the order collect_fds saw them, each as `[u32]` after the items) to ours.
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
        match entry {
            None => {
                out.push(wire::TASK_ERR);
                out.extend_from_slice(b"unknown task in the worker (different build?)");
            }
            Some(e) => {
                out.push(wire::OK);
                out.extend_from_slice(&n.to_le_bytes());
                // After the items: the parent's fd numbers, one u32 each (found by skipping the
                // items on a copy of the cursor).
                let mut map: Vec<(RawFd, RawFd)> = Vec::new();
                if nfds > 0 {
                    let mut skip = c.clone();
                    for _ in 0..n {
                        if skip.item().is_none() {
                            break;
                        }
                    }
                    for f in &fds {
                        match skip.u32() {
                            Some(from) => map.push((from as RawFd, f.as_raw_fd())),
                            None => break,
                        }
                    }
                }
                for _ in 0..n {
                    let Some(item) = c.item() else {
                        out.truncate(20);
                        out.push(wire::TASK_ERR);
                        out.extend_from_slice(b"truncated job message");
                        break;
                    };
                    // Always decode under a map (an empty one for a job without fds), so a
                    // handle's fd number never names an fd of the worker's own.
                    match with_fd_map(&map, || run_one(e, item)) {
                        Ok(v) => {
                            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                            out.extend_from_slice(&v);
                        }
                        Err((status, m)) => {
                            // As Python's mapstar: the first failure is the chunk's result.
                            out.truncate(20);
                            out.push(status);
                            out.extend_from_slice(m.as_bytes());
                            break;
                        }
                    }
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
