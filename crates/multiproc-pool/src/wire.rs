//! The bytes between the pool and its workers (little-endian, bounds-checked on read).
//!
//! A chunk is one record each way. Job (parent -> worker):
//! `[seq u64][job u64][chunk u32][task hash u64][n u32][nfds u32][args_len u32]`, then
//! `args_len` bytes: the postcard encoding of the chunk's `n` arguments as one sequence
//! (written in one pass straight into the message buffer), or for a `map` of plain data
//! (primitive numbers both ways) a *plain chunk*: `registry::PLAIN_MAGIC` (ten `0xFF`, which
//! no postcard sequence starts with), `[args width u8][result width u8][n u32]` and the `n`
//! arguments' native bytes (one slice copy), then `nfds` × `[u32]`: the
//! parent's numbers of the fds that travel over the worker's socket just before the job (see
//! `fdpass.rs`). The worker runs the whole chunk through the task registry's chunk trampoline
//! (one call per chunk). Result (worker -> parent): `[seq u64][job u64][chunk u32][status u8]`,
//! then for `OK` the postcard encoding of the chunk's results as one sequence (what a
//! `Vec<R>` decodes from; for a plain chunk, a plain chunk of the results), for `TOO_LARGE` `[len u64][max u64]`, else the error message
//! (UTF-8). `seq 0` with `OK` is the worker's hello (it is up). `seq` is the worker's own
//! sequence number of the job (see `worker.rs`: the worker publishes the `seq` it is running,
//! which tells the parent, when the worker dies, which job was running and which were never
//! started).

use crate::error::ArgumentsError;
use multiproc_process::registry::{self, postcard_append};
use serde::Serialize;
use std::ops::Range;
use std::sync::Arc;

pub(crate) const OK: u8 = 0;
pub(crate) const PANIC: u8 = 1;
pub(crate) const ENCODE: u8 = 2;
pub(crate) const TASK_ERR: u8 = 3;
pub(crate) const TOO_LARGE: u8 = 4;

/// Job header length after `seq`.
pub(crate) const JOB_HEAD: usize = 8 + 4 + 8 + 4 + 4 + 4;

/// A job's bytes after its `seq`: `head`, then for a plain `map` chunk its items' bytes,
/// borrowed from the call's input ([`PlainItems`]) until they are copied into the worker's
/// pipe (no copy of the chunk in between; a requeued job is sent from the same input).
pub(crate) struct Payload {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Option<(Arc<dyn PlainBytes>, Range<usize>)>,
}

impl Payload {
    /// A payload that is all `head`.
    pub(crate) fn bytes(head: Vec<u8>) -> Payload {
        Payload { head, body: None }
    }

    /// The bytes after `head` (empty if none).
    pub(crate) fn body(&self) -> &[u8] {
        self.body
            .as_ref()
            .and_then(|(b, r)| b.bytes().get(r.clone()))
            .unwrap_or(&[])
    }

    /// Bytes on the wire after `seq`.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, |(_, r)| r.len())
    }
}

/// Items whose bytes a job borrows (see [`Payload`]).
pub(crate) trait PlainBytes: Send + Sync {
    /// The items as the native bytes a plain chunk carries.
    fn bytes(&self) -> &[u8];
}

/// A `map`'s input of primitive numbers (see `registry::plain_width_static`), shared by its
/// jobs: each sends its chunk's bytes straight from here.
pub(crate) struct PlainItems<A>(Vec<A>);

impl<A: 'static> PlainItems<A> {
    /// `Err(v)` (given back) unless `A` is a primitive number.
    pub(crate) fn new(v: Vec<A>) -> Result<PlainItems<A>, Vec<A>> {
        if registry::plain_width_static::<A>().is_some() {
            Ok(PlainItems(v))
        } else {
            Err(v)
        }
    }

    pub(crate) fn items(&self) -> &[A] {
        &self.0
    }
}

// SAFETY: a `PlainItems<A>` exists only for a primitive number `A` (checked by `TypeId` in
// `new`), and every primitive number is `Send` and `Sync`.
unsafe impl<A> Send for PlainItems<A> {}
// SAFETY: as for `Send` above.
unsafe impl<A> Sync for PlainItems<A> {}

impl<A: 'static> PlainBytes for PlainItems<A> {
    fn bytes(&self) -> &[u8] {
        registry::plain_bytes(&self.0).unwrap_or(&[])
    }
}

/// Builds a job payload (everything after `seq`) from a chunk of items.
pub(crate) struct JobWriter {
    buf: Vec<u8>,
    n: u32,
}

impl JobWriter {
    pub(crate) fn new(job: u64, chunk: u32, task: u64, cap: usize) -> JobWriter {
        let mut buf = Vec::with_capacity(JOB_HEAD + cap);
        buf.extend_from_slice(&job.to_le_bytes());
        buf.extend_from_slice(&chunk.to_le_bytes());
        buf.extend_from_slice(&task.to_le_bytes());
        buf.extend_from_slice(&[0u8; 12]);
        JobWriter { buf, n: 0 }
    }

    /// Encodes the chunk's arguments as one postcard sequence, in one pass, straight into
    /// the message (no per-item buffer or length prefix).
    pub(crate) fn push_all<A: Serialize>(&mut self, items: &[A]) -> Result<(), ArgumentsError> {
        let start = self.buf.len();
        postcard_append(items, &mut self.buf).map_err(ArgumentsError::encode::<A>)?;
        let len = self.buf.len() - start;
        self.n = items.len() as u32;
        self.buf[28..32].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }

    /// Writes the head of a plain chunk of `n` `A`s with `out_width`-byte results, whose
    /// items' bytes the caller sends after this record's head (see [`Payload`]). False if
    /// `A` is not plain.
    pub(crate) fn push_plain_head<A: 'static>(&mut self, n: usize, out_width: usize) -> bool {
        let (Some(head), Some(w)) = (
            registry::plain_head::<A>(n, out_width),
            registry::plain_width_static::<A>(),
        ) else {
            return false;
        };
        let Ok(len) = u32::try_from(head.len() + n * w) else {
            return false;
        };
        self.buf.extend_from_slice(&head);
        self.n = n as u32;
        self.buf[28..32].copy_from_slice(&len.to_le_bytes());
        true
    }

    pub(crate) fn push_fds(&mut self, fds: &[std::os::fd::RawFd]) {
        for fd in fds {
            self.buf.extend_from_slice(&(*fd as u32).to_le_bytes());
        }
    }

    pub(crate) fn len(&self) -> u32 {
        self.n
    }

    /// The finished payload; `nfds` fds go with it.
    pub(crate) fn finish(mut self, nfds: usize) -> Vec<u8> {
        self.buf[20..24].copy_from_slice(&self.n.to_le_bytes());
        self.buf[24..28].copy_from_slice(&(nfds as u32).to_le_bytes());
        self.buf
    }
}

/// A bounds-checked reader.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b
    }
}

/// A decoded result header.
pub(crate) struct ResultHead<'a> {
    pub(crate) seq: u64,
    pub(crate) status: u8,
    /// For OK: the postcard sequence of the results; otherwise the message.
    pub(crate) body: &'a [u8],
}

pub(crate) fn parse_result(b: &[u8]) -> Option<ResultHead<'_>> {
    let mut c = Cursor::new(b);
    let seq = c.u64()?;
    let _job = c.u64()?;
    let _chunk = c.u32()?;
    let status = c.u8()?;
    Some(ResultHead {
        seq,
        status,
        body: c.rest(),
    })
}
