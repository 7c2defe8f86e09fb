//! How a call becomes jobs: the default chunksize, a chunk's items (and the fds of the shared
//! objects among them) encoded as one job record, and the task's registry hash.
use super::JobFds;
use crate::error::{ArgumentsError, SubmitError};
use crate::fdpass;
use crate::wire::{JobWriter, Payload, PlainBytes, PlainItems};
use multiproc_channel::PipeOptions;
use multiproc_process::registry::{self, Task};
use multiproc_shm::fd_passing::collect_fds;
use serde::Serialize;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

thread_local! {
    /// The task last submitted from this thread and its registry hash (see `entry_hash`).
    static LAST_TASK: std::cell::Cell<Option<(std::any::TypeId, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// Python's default `map` chunksize: `ceil(len / (4 * processes))`, at least 1.
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    let d = 4 * processes.max(1);
    len.div_ceil(d).max(1)
}

/// Encodes a chunk's items as one record in one pass (collecting the fds of shared objects among them) and
/// checks it against the pipe's message limit. Returns the payload, its item count, its fds.
pub(super) fn encode_job<A: Serialize>(
    job: u64,
    chunk: u32,
    hash: u64,
    cap: usize,
    items: &[A],
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    let w = JobWriter::new(job, chunk, hash, cap);
    encode_into(w, items)
}

/// A plain `map` chunk (primitive numbers both ways, more than one item): the job's head,
/// and its items' bytes borrowed from `items[range]` (see `wire::Payload`: sent from there
/// straight into the worker's pipe). Returns the payload and its item count.
pub(super) fn encode_plain_map_job<A: 'static>(
    job: u64,
    chunk: u32,
    hash: u64,
    out_width: usize,
    items: &Arc<PlainItems<A>>,
    range: Range<usize>,
) -> Result<(Payload, u32), SubmitError> {
    let n = range.len();
    let width = registry::plain_width_static::<A>().unwrap_or(0);
    let body_len = n.saturating_mul(width);
    let mut w = JobWriter::new(job, chunk, hash, registry::PLAIN_HEAD);
    if !w.push_plain_head::<A>(n, out_width) {
        // More items than a chunk's u32 count holds: far past the message limit.
        return Err(SubmitError::Arguments(ArgumentsError::TooLarge {
            len: body_len,
            max: PipeOptions::default().max_message,
        }));
    }
    let (head, count, _) = finish_job(w, Vec::new(), None, body_len)?;
    let bytes: Arc<dyn PlainBytes> = items.clone();
    let body = Some((bytes, range.start * width..range.end * width));
    Ok((Payload { head, body }, count))
}

fn encode_into<A: Serialize>(
    mut w: JobWriter,
    items: &[A],
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    let (r, fds) = collect_fds(|| w.push_all(items));
    r.map_err(SubmitError::Arguments)?;
    if fds.len() > fdpass::MAX_FDS {
        return Err(SubmitError::Arguments(ArgumentsError::TooManyFds {
            count: fds.len(),
            max: fdpass::MAX_FDS,
        }));
    }
    let owned = if fds.is_empty() {
        None
    } else {
        let v = fdpass::dup_all(&fds)
            .map_err(|e| SubmitError::Arguments(ArgumentsError::keep_fds(e)))?;
        Some(Arc::new(v.into_iter().map(|(_, o)| o).collect()))
    };
    finish_job(w, fds, owned, 0)
}

/// Appends the fds' numbers, closes the record and checks it against the message limit.
/// `body` bytes follow the record's head on the wire (a plain chunk's items, see
/// [`encode_plain_map_job`]).
fn finish_job(
    mut w: JobWriter,
    fds: Vec<RawFd>,
    owned: JobFds,
    body: usize,
) -> Result<(Vec<u8>, u32, JobFds), SubmitError> {
    let n = w.len();
    w.push_fds(&fds);
    let payload = w.finish(fds.len());
    let max = PipeOptions::default().max_message;
    let len = payload.len().saturating_add(body).saturating_add(8);
    if len > max {
        return Err(SubmitError::Arguments(ArgumentsError::TooLarge {
            len,
            max,
        }));
    }
    Ok((payload, n, owned))
}

pub(super) fn entry_hash<M, T: Task<M>>(f: &T) -> Result<u64, SubmitError> {
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
