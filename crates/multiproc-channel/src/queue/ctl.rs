//! The queue's control block in shared memory (`QueueCtl`: configuration, the `puts`/`gets`
//! counters, the task count, the peer table), its validation into a local `QueueGeom`, and
//! [`stats_of`] for tools.

use super::MAX_MESSAGE_LIMIT;
use crate::error::ChannelError;
use crate::facade::{AtomicU32, AtomicU64, Ordering};
use crate::peers::Peers;
use multiproc_ring::{CachePadded, MpmcRing};
use multiproc_shm::{ObjectKind, Segment, Shared, SharedLayout, ShmError};
use multiproc_sync::park::WaitWord;
use std::marker::PhantomData;

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"MPQUEUE1");

#[repr(C)]
pub(super) struct Config {
    pub(super) magic: AtomicU64,
    pub(super) maxsize: AtomicU64,
    pub(super) max_message: AtomicU64,
    pub(super) id: AtomicU64,
}

/// Items admitted by `put` (wrapping): written by producers only, and only when the ring is not
/// the bound (`maxsize` 1).
#[repr(C)]
pub(super) struct Puts {
    pub(super) puts: AtomicU32,
}

/// Items taken by `get` (wrapping): written by consumers only, and only when the ring is not the
/// bound (`maxsize` 1); blocked putters park on `wait`, which every `get` pokes.
#[repr(C)]
pub(super) struct Gets {
    pub(super) gets: AtomicU32,
    /// Where putters waiting for room park (woken after every `get` and by disconnects).
    pub(super) wait: WaitWord,
}

#[repr(C)]
pub(super) struct Tasks {
    /// Items put on a JoinableQueue and not yet `task_done`.
    pub(super) unfinished: AtomicU32,
    /// Where joiners park (woken when `unfinished` reaches 0).
    pub(super) wait: WaitWord,
    pub(super) side_seq: AtomicU64,
}

/// The control block of a queue segment.
#[repr(C)]
pub(super) struct QueueCtl {
    pub(super) config: CachePadded<Config>,
    pub(super) puts: CachePadded<Puts>,
    pub(super) gets: CachePadded<Gets>,
    pub(super) tasks: CachePadded<Tasks>,
    /// Producer/consumer accounting (written at handle creation/drop and on blocked paths only).
    pub(super) peers: CachePadded<Peers>,
}

/// What a queue's control block says about its geometry, validated once on open (and create)
/// and then used from this local copy.
#[derive(Clone, Copy, Debug)]
pub(super) struct QueueGeom {
    pub(super) maxsize: u32,
    pub(super) max_message: usize,
    pub(super) id: u64,
}

// SAFETY: `#[repr(C)]`, made only of atomics (in `CachePadded`, itself `#[repr(C, align(128))]`),
// so any bit pattern is valid and `&QueueCtl` over memory other processes write is sound;
// alignment 128 <= 256; no Drop.
unsafe impl SharedLayout for QueueCtl {
    const KIND: ObjectKind = ObjectKind::Queue;
    type Geometry = QueueGeom;

    fn validate(&self, _tail_len: usize) -> Result<QueueGeom, ShmError> {
        // Relaxed: written before the creator's Release of Ready, which the opener Acquired.
        let c = &self.config;
        if c.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(ShmError::Corrupted("bad queue magic"));
        }
        let maxsize = c.maxsize.load(Ordering::Relaxed);
        if maxsize == 0 || maxsize > u64::from(u32::MAX / 2) {
            return Err(ShmError::OutOfRange {
                what: "queue maxsize",
                found: maxsize,
                limit: u64::from(u32::MAX / 2),
            });
        }
        let max_message = c.max_message.load(Ordering::Relaxed);
        if max_message == 0 || max_message > MAX_MESSAGE_LIMIT as u64 {
            return Err(ShmError::OutOfRange {
                what: "queue max_message",
                found: max_message,
                limit: MAX_MESSAGE_LIMIT as u64,
            });
        }
        Ok(QueueGeom {
            maxsize: maxsize as u32,
            max_message: max_message as usize,
            id: c.id.load(Ordering::Relaxed),
        })
    }
}

/// Fingerprint carrier: a queue of `T` with codec `C`.
pub(super) struct QueueOf<T, C>(PhantomData<fn() -> (T, C)>);

/// Items in the queue from a reading of `puts` and `gets` (0 if the reading of `gets` is newer
/// than the one of `puts`).
#[inline]
pub(super) fn used(puts: u32, gets: u32) -> u32 {
    let d = puts.wrapping_sub(gets);
    if d > u32::MAX / 2 { 0 } else { d }
}

/// A snapshot of a queue's counters, for tools (`multiproc ls`/`inspect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Items admitted by `put` and not yet taken by `get` (Python's `qsize()`).
    pub depth: u64,
    /// The bound (`maxsize`).
    pub maxsize: u64,
    /// Items put on a JoinableQueue and not yet `task_done`.
    pub unfinished: u64,
}

/// Reads the counters of a named queue's control block without knowing its element type.
///
/// `seg` only needs to be a segment of kind [`ObjectKind::Queue`] (its element type is not
/// checked): the payload size and the magic are checked here, and every field read is an atomic
/// integer, so a corrupted segment gives an error or a meaningless number, never UB. The depth
/// of a queue whose ring is its bound (every `maxsize` but 1) is read from the ring, which is
/// opened by name (`NAME.ring`): an anonymous queue's control segment alone gives
/// [`ChannelError::InvalidParams`].
pub fn stats_of(seg: &Segment) -> Result<QueueStats, ChannelError> {
    let sh = Shared::<QueueCtl>::from_segment(seg.clone())?;
    let ctl = sh.get();
    let maxsize = u64::from(sh.geometry().maxsize);
    let Some(name) = seg.name() else {
        return Err(ChannelError::InvalidParams(
            "an anonymous queue's ring cannot be found from its control segment",
        ));
    };
    let ring = MpmcRing::open_named(&format!("{name}.ring"))?;
    let depth = if ring.slots() as u64 == maxsize {
        ring.pending()
    } else {
        let g = ctl.gets.gets.load(Ordering::Relaxed);
        let p = ctl.puts.puts.load(Ordering::Relaxed);
        u64::from(used(p, g))
    };
    Ok(QueueStats {
        depth: depth.min(maxsize),
        maxsize,
        unfinished: u64::from(ctl.tasks.unfinished.load(Ordering::Relaxed)),
    })
}
