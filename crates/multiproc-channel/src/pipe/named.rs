//! Named pipes: the rendezvous by name between unrelated processes ([`Pipe::create_named`] /
//! [`Pipe::open_named`]) and the small control block that describes the pipe to its opener.

use super::{Connection, MAX_MESSAGE_LIMIT, Pipe, PipeMode, PipeOptions, check};
use crate::codec::{Codec, Postcard};
use crate::error::ChannelError;
use crate::facade::{AtomicU64, Ordering};
use multiproc_ring::{RingError, SpscRing};
use multiproc_shm::{ObjectKind, Shared, SharedLayout, ShmError, TypeFingerprint};
use std::marker::PhantomData;

/// Magic of a named pipe's control block ("MPNPIPE1").
const NAMED_MAGIC: u64 = u64::from_le_bytes(*b"MPNPIPE1");

/// The control block of a named pipe (segment `multiproc.NAME`, kind `Pipe`): what the opener
/// needs to know. Written once in `init`, before the segment is marked Ready.
#[repr(C)]
pub(super) struct NamedCtl {
    magic: AtomicU64,
    /// 1: duplex, 0: simplex (the creator reads).
    duplex: AtomicU64,
    max_message: AtomicU64,
}

/// A named pipe's validated control block, kept locally.
#[derive(Clone, Copy, Debug)]
pub(super) struct NamedGeom {
    duplex: bool,
    max_message: usize,
}

// SAFETY: `#[repr(C)]`, atomics only (any bit pattern valid, `&NamedCtl` over shared memory
// sound), alignment 8, no Drop.
unsafe impl SharedLayout for NamedCtl {
    const KIND: ObjectKind = ObjectKind::Pipe;
    type Geometry = NamedGeom;

    fn validate(&self, _tail_len: usize) -> Result<NamedGeom, ShmError> {
        // Relaxed: written before the creator's Release of Ready, which the opener Acquired.
        if self.magic.load(Ordering::Relaxed) != NAMED_MAGIC {
            return Err(ShmError::Corrupted("bad named pipe magic"));
        }
        let duplex = match self.duplex.load(Ordering::Relaxed) {
            0 => false,
            1 => true,
            _ => return Err(ShmError::Corrupted("bad named pipe direction")),
        };
        let max = self.max_message.load(Ordering::Relaxed);
        if max == 0 || max > MAX_MESSAGE_LIMIT as u64 {
            return Err(ShmError::OutOfRange {
                what: "named pipe max_message",
                found: max,
                limit: MAX_MESSAGE_LIMIT as u64,
            });
        }
        Ok(NamedGeom {
            duplex,
            max_message: max as usize,
        })
    }
}

/// Fingerprint carrier: a pipe of `T` with codec `C`.
struct PipeOf<T, C>(PhantomData<fn() -> (T, C)>);

/// Ring carrying creator -> opener messages.
fn c2o(name: &str) -> String {
    format!("{name}.c2o")
}

/// Ring carrying opener -> creator messages.
fn o2c(name: &str) -> String {
    format!("{name}.o2c")
}

impl Pipe {
    /// A named pipe that another, unrelated process connects to with [`Pipe::open_named`]:
    /// returns the creator's end. [`PipeMode::Duplex`]: both ends send and receive;
    /// [`PipeMode::Simplex`]: the creator reads and the opener writes. The segments are
    /// `/dev/shm/multiproc.NAME` (a small control block with the type fingerprint) and
    /// `NAME.c2o` / `NAME.o2c` (the rings); they are unlinked when the creator's end drops.
    ///
    /// One opener at a time: the opener's end binds to its process at once, so a second
    /// opener gets [`RingError::AlreadyAttached`] while the first lives, and
    /// [`RingError::Closed`] once it closed (a named pipe is one connection, not a listener).
    pub fn create_named<T: 'static>(
        name: &str,
        mode: PipeMode,
    ) -> Result<Connection<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::create_named_with(name, mode, PipeOptions::default())
    }

    /// [`Pipe::create_named`] with explicit options and codec.
    pub fn create_named_with<T: 'static, C: Codec<T> + 'static>(
        name: &str,
        mode: PipeMode,
        opts: PipeOptions,
    ) -> Result<Connection<T, C>, ChannelError> {
        check(&opts)?;
        let duplex = mode == PipeMode::Duplex;
        let fp = TypeFingerprint::of::<PipeOf<T, C>>();
        let mut rings: Option<(Option<SpscRing>, SpscRing)> = None;
        let mut ring_err: Option<RingError> = None;
        // The rings are made inside the control segment's `init`: openers wait for the control
        // segment to be Ready, so they never find it without its rings, and a name clash is
        // reported on NAME itself.
        let made = Shared::<NamedCtl>::create(Some(name), fp, 0, |p, _| {
            let r = (|| {
                let out = if duplex {
                    Some(SpscRing::create_named(&c2o(name), opts.capacity)?)
                } else {
                    None
                };
                let inc = SpscRing::create_named(&o2c(name), opts.capacity)?;
                Ok::<_, RingError>((out, inc))
            })();
            match r {
                Ok(r) => rings = Some(r),
                Err(e) => {
                    ring_err = Some(e);
                    return Err(multiproc_shm::ShmError::Os {
                        op: "create the pipe's rings",
                        source: std::io::Error::other("ring creation failed"),
                    });
                }
            }
            let ctl = NamedCtl {
                magic: AtomicU64::new(NAMED_MAGIC),
                duplex: AtomicU64::new(u64::from(duplex)),
                max_message: AtomicU64::new(opts.max_message as u64),
            };
            // SAFETY: `p` is valid for writing one NamedCtl and unseen until Ready.
            unsafe { p.as_ptr().write(ctl) };
            Ok(())
        });
        let ctl = match made {
            Ok(c) => c,
            Err(e) => return Err(ring_err.map_or_else(|| e.into(), ChannelError::from)),
        };
        let Some((out, inc)) = rings else {
            return Err(ChannelError::Corrupted("named pipe rings missing"));
        };
        let mut conn = Connection::new(out, Some(inc), opts.max_message);
        conn.named = Some(ctl);
        conn.attach_all()?;
        Ok(conn)
    }

    /// Opens the other end of the named pipe `name` made by [`Pipe::create_named`] (in any
    /// process): the end is bound to the calling process at once. Fails with a type-fingerprint
    /// error ([`multiproc_shm::ShmError::WrongType`]) if the pipe carries another `T`.
    pub fn open_named<T: 'static>(name: &str) -> Result<Connection<T>, ChannelError>
    where
        Postcard: Codec<T>,
    {
        Self::open_named_with(name)
    }

    /// [`Pipe::open_named`] with an explicit codec (it must be the creator's).
    pub fn open_named_with<T: 'static, C: Codec<T> + 'static>(
        name: &str,
    ) -> Result<Connection<T, C>, ChannelError> {
        let ctl = Shared::<NamedCtl>::open_named(name, TypeFingerprint::of::<PipeOf<T, C>>())?;
        let NamedGeom {
            duplex,
            max_message: max,
        } = *ctl.geometry();
        let out = SpscRing::open_named(&o2c(name))?;
        let inc = if duplex {
            Some(SpscRing::open_named(&c2o(name))?)
        } else {
            None
        };
        let mut conn = Connection::new(Some(out), inc, max);
        conn.named = Some(ctl);
        conn.attach_all()?;
        Ok(conn)
    }
}
