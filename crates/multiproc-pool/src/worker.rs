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

use crate::facade::Ordering;
use crate::wire::{self, Cursor};
use multiproc_channel::{Connection, RecvError};
use multiproc_process::registry::{self, TaskEntry};
use multiproc_sync::RawValue;
use serde::{Deserialize, Serialize};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) jobs: Connection<Vec<u8>>,
    pub(crate) results: Connection<Vec<u8>>,
    pub(crate) started: RawValue<u64>,
    /// 0 = no limit.
    pub(crate) maxtasks: u64,
    pub(crate) initializer: Option<(u64, Vec<u8>)>,
}

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
        maxtasks,
        initializer,
    } = args;
    // Bind both ends at once, so the parent sees Eof/Disconnected if we die from here on.
    if jobs.bind().is_err() || results.bind().is_err() {
        return;
    }
    // Panics of tasks travel back as messages; do not print them in the worker.
    std::panic::set_hook(Box::new(|_| {}));
    let started_word = started.as_atomic();
    if let Some((hash, bytes)) = initializer {
        match registry::entry_by_hash(hash) {
            Some(e) => {
                if let Err((_, msg)) = run_one(e, &bytes) {
                    tracing::error!(target: "multiproc", "pool initializer failed: {msg}");
                    std::process::exit(1);
                }
            }
            None => std::process::exit(1),
        }
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
        let (Some(seq), Some(job), Some(chunk), Some(hash), Some(n)) =
            (c.u64(), c.u64(), c.u32(), c.u64(), c.u32())
        else {
            return;
        };
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
                for _ in 0..n {
                    let Some(item) = c.item() else {
                        out.truncate(20);
                        out.push(wire::TASK_ERR);
                        out.extend_from_slice(b"truncated job message");
                        break;
                    };
                    match run_one(e, item) {
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
        if results.send_bytes(&out, 0, None).is_err() {
            return;
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
