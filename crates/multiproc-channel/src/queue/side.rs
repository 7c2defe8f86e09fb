//! Side segments: a message too large for a ring slot is written to its own named segment
//! (`multiproc.qside-<queue id>-<pid>-<seq>`) whose name goes through the ring.

use super::Queue;
use crate::codec::Codec;
use crate::error::GetError;
use crate::facade::Ordering;
use crate::ident;
use multiproc_shm::{Expect, ObjectKind, Segment, SegmentSpec, ShmError, TypeFingerprint};
use std::time::Duration;

/// How long a consumer waits for a side segment to be Ready (its producer marked it Ready
/// before pushing its name, so only a hostile or half-made file ever makes it wait).
const SIDE_OPEN_TIMEOUT: Duration = Duration::from_millis(20);

/// Fingerprint carrier of a side segment (one large message's bytes).
struct QueueSideMessage;

impl<T: 'static, C: Codec<T>> Queue<T, C> {
    /// Writes a large message into a new named side segment
    /// (`multiproc.qside-<queue id>-<pid>-<seq>`, kind Raw, header validated like any segment),
    /// whose name outlives this handle: the consumer that pops its record unlinks it.
    pub(super) fn write_side(&self, bytes: &[u8]) -> Result<Segment, ShmError> {
        // Relaxed: only uniqueness matters (a clash is refused by O_EXCL anyway).
        let seq = self.ctl().tasks.side_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("qside-{:016x}-{}-{seq}", self.sh.id, ident::pid());
        let spec = SegmentSpec::new(
            ObjectKind::Raw,
            TypeFingerprint::of::<QueueSideMessage>(),
            bytes.len(),
            8,
        );
        let mut seg = Segment::create_named(&name, &spec, |p, len| {
            if len != bytes.len() {
                return Err(ShmError::InitFailed);
            }
            // SAFETY: the payload is `len == bytes.len()` bytes, private until Ready; `bytes`
            // is a distinct local buffer.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), len) };
            Ok(())
        })?;
        if !seg.detach_name() {
            seg.unlink_name();
            return Err(ShmError::Corrupted("side segment handle shared"));
        }
        Ok(seg)
    }
}

/// Reads (and unlinks) the side segment a popped record names. `len` was checked against this
/// process's `max_message`; the segment must be a regular shared-memory file (opened with
/// `O_NOFOLLOW|O_NONBLOCK`, so a FIFO or symlink planted under the name is refused at once), a
/// Ready segment of the side kind, with exactly `len` payload bytes.
pub(super) fn read_side(id: u64, name: &str, len: usize) -> Result<Vec<u8>, GetError> {
    let prefix = format!("multiproc.qside-{id:016x}-");
    if !name.starts_with(&prefix) {
        return Err(GetError::Corrupted("side segment name"));
    }
    let user = &name["multiproc.".len()..];
    let expect = Expect::new(ObjectKind::Raw, TypeFingerprint::of::<QueueSideMessage>())
        .payload_size(len as u64);
    let seg = Segment::open_named_timeout(user, &expect, SIDE_OPEN_TIMEOUT)
        .map_err(|e| GetError::Lost(format!("side segment {user}: {e}")))?;
    // The record was ours (popped): its segment is ours to unlink, read or not.
    seg.unlink_name();
    if seg.payload_len() != len {
        return Err(GetError::Lost(format!(
            "side segment holds {} bytes, expected {len}",
            seg.payload_len()
        )));
    }
    let mut v = Vec::with_capacity(len);
    // SAFETY: the mapping holds `payload_len() == len` payload bytes (validated against the
    // file's size on open); `v` has room for `len` bytes. A raw copy, never a reference: another
    // process may write those bytes meanwhile (a torn copy is a decode error, not UB).
    unsafe {
        std::ptr::copy_nonoverlapping(seg.payload_ptr().as_ptr(), v.as_mut_ptr(), len);
        v.set_len(len);
    }
    Ok(v)
}
