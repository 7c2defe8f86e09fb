//! The segment header at offset 0: what the segment holds, who made it, and whether it is ready.
//!
//! Layout (`#[repr(C)]`, 256 bytes, all little-endian native integers):
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | magic `u64` | `b"MPROCSHM"` |
//! | 8 | version `u32` | [`LAYOUT_VERSION`] |
//! | 12 | kind `u32` | [`ObjectKind`] |
//! | 16 | total_size `u64` | file size |
//! | 24 | payload_offset `u64` | always [`HEADER_SIZE`] |
//! | 32 | payload_size `u64` | |
//! | 40 | creator_pid `u32` | |
//! | 44 | init_state `u32` (atomic) | 0 creating, 1 ready, 2 failed |
//! | 48 | creator_start_time `u64` | `/proc/PID/stat` field 22 |
//! | 56 | type_size `u64`, type_align `u64`, type_hash `u64` | fingerprint |
//! | 80 | type_name_len `u32`, flags `u32` (field `reserved0`) | bit 0: [`FLAG_PERSISTENT`] |
//! | 88 | type_name `[u8; 96]` | truncated `type_name` |
//! | 184 | segment_id `u64` | unique per created segment: handles carry it, openers compare it |
//! | 192 | reserved | zero |
//!
//! Everything but `init_state` is written once by the creator before it stores Ready (Release);
//! readers load `init_state` with Acquire and only then copy the rest. [`validate`] is a pure
//! function over a copied header, so a hostile or corrupted segment can only produce an error.

use crate::error::{Result, ShmError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `b"MPROCSHM"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSHM");
/// Bumped whenever any shared layout changes.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of the header; the payload starts here (so payloads are 256-byte aligned).
pub const HEADER_SIZE: usize = 256;
/// Largest payload alignment a segment guarantees.
pub const MAX_PAYLOAD_ALIGN: usize = HEADER_SIZE;
/// Bytes of the type name kept in the header (the full name is hashed).
pub const TYPE_NAME_LEN: usize = 96;
/// Byte offset of `init_state` in the header.
pub const INIT_STATE_OFFSET: usize = 44;

/// Header flag (in [`Header::reserved0`]): a persistent named segment, whose name outlives its
/// creator until someone unlinks it (`multiproc_shm::unlink_name`, `Segment::unlink_name`,
/// `multiproc clean --persistent`); the stale-segment cleanup leaves it alone.
pub const FLAG_PERSISTENT: u32 = 1;

/// `init_state`: the creator is still writing.
pub const STATE_CREATING: u32 = 0;
/// `init_state`: the object is built; openers may use it.
pub const STATE_READY: u32 = 1;
/// `init_state`: the creator failed half-way; the segment must not be used.
pub const STATE_FAILED: u32 = 2;

/// What kind of object a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ObjectKind {
    /// Untyped bytes.
    Raw = 1,
    /// `Value<T>` (with a lock).
    Value = 2,
    /// `RawValue<T>`.
    RawValue = 3,
    /// `Array<T>` (with a lock).
    Array = 4,
    /// `RawArray<T>`.
    RawArray = 5,
    /// A robust mutex on its own.
    Mutex = 6,
    /// `Lock`.
    Lock = 7,
    /// `RLock`.
    RLock = 8,
    /// `Semaphore` / `BoundedSemaphore`.
    Semaphore = 9,
    /// `Event`.
    Event = 10,
    /// `Condition`.
    Condition = 11,
    /// `Barrier`.
    Barrier = 12,
    /// SPSC byte ring.
    SpscRing = 13,
    /// MPMC ring.
    MpmcRing = 14,
    /// `Queue`, `SimpleQueue`, `JoinableQueue`.
    Queue = 15,
    /// `Pipe` / `Connection`.
    Pipe = 16,
    /// `SharedDict`.
    Dict = 17,
    /// `SharedList`.
    List = 18,
    /// Pool control block.
    Pool = 19,
}

impl ObjectKind {
    /// Every kind, for lookups.
    pub const ALL: [ObjectKind; 19] = [
        ObjectKind::Raw,
        ObjectKind::Value,
        ObjectKind::RawValue,
        ObjectKind::Array,
        ObjectKind::RawArray,
        ObjectKind::Mutex,
        ObjectKind::Lock,
        ObjectKind::RLock,
        ObjectKind::Semaphore,
        ObjectKind::Event,
        ObjectKind::Condition,
        ObjectKind::Barrier,
        ObjectKind::SpscRing,
        ObjectKind::MpmcRing,
        ObjectKind::Queue,
        ObjectKind::Pipe,
        ObjectKind::Dict,
        ObjectKind::List,
        ObjectKind::Pool,
    ];

    /// The kind with this number, if any.
    pub fn from_u32(v: u32) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| *k as u32 == v)
    }

    /// A display name.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Raw => "Raw",
            ObjectKind::Value => "Value",
            ObjectKind::RawValue => "RawValue",
            ObjectKind::Array => "Array",
            ObjectKind::RawArray => "RawArray",
            ObjectKind::Mutex => "Mutex",
            ObjectKind::Lock => "Lock",
            ObjectKind::RLock => "RLock",
            ObjectKind::Semaphore => "Semaphore",
            ObjectKind::Event => "Event",
            ObjectKind::Condition => "Condition",
            ObjectKind::Barrier => "Barrier",
            ObjectKind::SpscRing => "SpscRing",
            ObjectKind::MpmcRing => "MpmcRing",
            ObjectKind::Queue => "Queue",
            ObjectKind::Pipe => "Pipe",
            ObjectKind::Dict => "Dict",
            ObjectKind::List => "List",
            ObjectKind::Pool => "Pool",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of the element type a segment holds: name, size, align (and a hash of the full name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeFingerprint {
    /// `core::any::type_name` of the type.
    pub name: &'static str,
    /// `size_of`.
    pub size: u64,
    /// `align_of`.
    pub align: u64,
}

impl TypeFingerprint {
    /// The fingerprint of `T`.
    pub fn of<T: 'static>() -> TypeFingerprint {
        TypeFingerprint {
            name: core::any::type_name::<T>(),
            size: core::mem::size_of::<T>() as u64,
            align: core::mem::align_of::<T>() as u64,
        }
    }

    /// FNV-1a of the full name.
    pub fn hash(&self) -> u64 {
        fnv1a(self.name.as_bytes())
    }
}

/// A fresh segment id: unique across live and past segments of this machine in practice (the
/// creator's pid + start time identify the process; a per-process counter and the clock tell its
/// segments apart), never 0.
fn new_segment_id(creator: crate::ProcessId) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Relaxed: only uniqueness matters, not ordering with anything else.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut bytes = [0u8; 28];
    bytes[..4].copy_from_slice(&creator.pid.to_le_bytes());
    bytes[4..12].copy_from_slice(&creator.start_time.to_le_bytes());
    bytes[12..20].copy_from_slice(&n.to_le_bytes());
    bytes[20..28].copy_from_slice(&nanos.to_le_bytes());
    // FNV-1a then a final avalanche (splitmix64) so nearby inputs give unrelated ids.
    let mut z = fnv1a(&bytes).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.max(1)
}

/// FNV-1a, 64 bit: a stable hash (std's `DefaultHasher` is not stable across builds).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The header as plain data (a copy; the live one is in the segment).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`ObjectKind`] as u32.
    pub kind: u32,
    /// The file size.
    pub total_size: u64,
    /// [`HEADER_SIZE`].
    pub payload_offset: u64,
    /// Bytes of payload.
    pub payload_size: u64,
    /// The creator's pid.
    pub creator_pid: u32,
    /// 0 creating, 1 ready, 2 failed (atomic in the live header).
    pub init_state: u32,
    /// The creator's start time.
    pub creator_start_time: u64,
    /// Fingerprint: size.
    pub type_size: u64,
    /// Fingerprint: align.
    pub type_align: u64,
    /// Fingerprint: FNV-1a of the full name.
    pub type_hash: u64,
    /// Bytes used in `type_name`.
    pub type_name_len: u32,
    /// Flags: bit 0 is [`FLAG_PERSISTENT`]; the other bits are zero. (Named `reserved0` from
    /// before it held flags.)
    pub reserved0: u32,
    /// The (truncated) type name.
    pub type_name: [u8; TYPE_NAME_LEN],
    /// Unique per created segment (creator pid, start time, a counter and the clock, hashed):
    /// a handle carries it, so a handle whose fd number or name now names another segment is
    /// refused instead of silently reaching the other object.
    pub segment_id: u64,
    /// Zero.
    pub reserved: [u8; 64],
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(Header, init_state) == INIT_STATE_OFFSET);

impl Header {
    /// A header for a new segment (init_state = creating).
    pub fn new(
        kind: ObjectKind,
        fp: &TypeFingerprint,
        payload_size: u64,
        creator: crate::ProcessId,
    ) -> Header {
        let mut type_name = [0u8; TYPE_NAME_LEN];
        let n = fp.name.len().min(TYPE_NAME_LEN);
        type_name[..n].copy_from_slice(&fp.name.as_bytes()[..n]);
        Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: kind as u32,
            total_size: HEADER_SIZE as u64 + payload_size,
            payload_offset: HEADER_SIZE as u64,
            payload_size,
            creator_pid: creator.pid,
            init_state: STATE_CREATING,
            creator_start_time: creator.start_time,
            type_size: fp.size,
            type_align: fp.align,
            type_hash: fp.hash(),
            type_name_len: n as u32,
            reserved0: 0,
            type_name,
            segment_id: new_segment_id(creator),
            reserved: [0; 64],
        }
    }

    /// Whether the segment is persistent ([`FLAG_PERSISTENT`]).
    pub fn is_persistent(&self) -> bool {
        self.reserved0 & FLAG_PERSISTENT != 0
    }

    /// The kind, if known.
    pub fn object_kind(&self) -> Option<ObjectKind> {
        ObjectKind::from_u32(self.kind)
    }

    /// The stored type name (lossy; may be truncated).
    pub fn type_name(&self) -> String {
        let n = (self.type_name_len as usize).min(TYPE_NAME_LEN);
        String::from_utf8_lossy(&self.type_name[..n]).into_owned()
    }

    /// The creator's identity.
    pub fn creator(&self) -> crate::ProcessId {
        crate::ProcessId {
            pid: self.creator_pid,
            start_time: self.creator_start_time,
        }
    }

    fn type_desc(&self) -> String {
        format!(
            "{} (size {}, align {})",
            self.type_name(),
            self.type_size,
            self.type_align
        )
    }
}

/// What an opener expects to find.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// The object kind.
    pub kind: ObjectKind,
    /// The element type.
    pub fingerprint: TypeFingerprint,
    /// The exact payload size, when the type fixes it.
    pub payload_size: Option<u64>,
    /// The smallest acceptable payload size.
    pub min_payload_size: u64,
}

impl Expect {
    /// Expect `kind` holding `T`, with any payload of at least `min` bytes.
    pub fn new(kind: ObjectKind, fingerprint: TypeFingerprint) -> Expect {
        Expect {
            kind,
            fingerprint,
            payload_size: None,
            min_payload_size: 0,
        }
    }

    /// Also require this exact payload size.
    pub fn payload_size(mut self, size: u64) -> Expect {
        self.payload_size = Some(size);
        self.min_payload_size = size;
        self
    }

    /// Also require at least this payload size.
    pub fn min_payload_size(mut self, size: u64) -> Expect {
        self.min_payload_size = size;
        self
    }
}

/// Checks a copied header against the file size and what the opener expects.
///
/// Pure: any bytes give `Ok` or a clear error, never a panic (fuzzed in `fuzz/`).
pub fn validate(h: &Header, file_size: u64, expect: &Expect) -> Result<()> {
    if h.magic != MAGIC {
        return Err(ShmError::BadMagic { found: h.magic });
    }
    if h.version != LAYOUT_VERSION {
        return Err(ShmError::VersionMismatch {
            found: h.version,
            expected: LAYOUT_VERSION,
        });
    }
    match h.init_state {
        STATE_READY => {}
        STATE_FAILED => return Err(ShmError::InitFailed),
        STATE_CREATING => return Err(ShmError::Corrupted("segment is not initialized")),
        _ => return Err(ShmError::Corrupted("unknown init state")),
    }
    if h.total_size != file_size {
        return Err(ShmError::SizeMismatch {
            what: "total size vs file size",
            header: h.total_size,
            expected: file_size,
        });
    }
    if h.payload_offset != HEADER_SIZE as u64 {
        return Err(ShmError::Corrupted("payload offset"));
    }
    let expected_total = (HEADER_SIZE as u64).checked_add(h.payload_size);
    if expected_total != Some(h.total_size) {
        return Err(ShmError::SizeMismatch {
            what: "payload size + header vs total size",
            header: h.payload_size,
            expected: h.total_size.saturating_sub(HEADER_SIZE as u64),
        });
    }
    if h.type_name_len as usize > TYPE_NAME_LEN {
        return Err(ShmError::Corrupted("type name length"));
    }
    if h.kind != expect.kind as u32 {
        let found = match h.object_kind() {
            Some(k) => k.name().to_string(),
            None => format!("unknown kind #{}", h.kind),
        };
        return Err(ShmError::WrongKind {
            found,
            expected: expect.kind.name().to_string(),
        });
    }
    let fp = &expect.fingerprint;
    if h.type_size != fp.size || h.type_align != fp.align || h.type_hash != fp.hash() {
        return Err(ShmError::WrongType {
            found: h.type_desc(),
            expected: format!("{} (size {}, align {})", fp.name, fp.size, fp.align),
        });
    }
    if let Some(size) = expect.payload_size
        && h.payload_size != size
    {
        return Err(ShmError::SizeMismatch {
            what: "payload size",
            header: h.payload_size,
            expected: size,
        });
    }
    if h.payload_size < expect.min_payload_size {
        return Err(ShmError::SizeMismatch {
            what: "payload size (minimum)",
            header: h.payload_size,
            expected: expect.min_payload_size,
        });
    }
    Ok(())
}

/// Reads a header out of raw bytes (for tools and fuzzing). Too few bytes is `Truncated`.
pub fn header_from_bytes(bytes: &[u8]) -> Result<Header> {
    match Header::read_from_prefix(bytes) {
        Ok((h, _)) => Ok(h),
        Err(_) => Err(ShmError::Truncated {
            actual: bytes.len() as u64,
            needed: HEADER_SIZE as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessId;

    fn ready(kind: ObjectKind, fp: &TypeFingerprint, payload: u64) -> Header {
        let mut h = Header::new(kind, fp, payload, ProcessId::current());
        h.init_state = STATE_READY;
        h
    }

    #[test]
    fn valid_header_passes() {
        let fp = TypeFingerprint::of::<i64>();
        let h = ready(ObjectKind::Value, &fp, 64);
        validate(
            &h,
            256 + 64,
            &Expect::new(ObjectKind::Value, fp).payload_size(64),
        )
        .unwrap();
    }

    #[test]
    fn wrong_type_is_reported_with_both_names() {
        let h = ready(ObjectKind::Value, &TypeFingerprint::of::<i64>(), 64);
        let e = validate(
            &h,
            320,
            &Expect::new(ObjectKind::Value, TypeFingerprint::of::<f64>()),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ShmError::WrongType { .. }), "{msg}");
        assert!(msg.contains("i64") && msg.contains("f64"), "{msg}");
    }

    #[test]
    fn each_field_is_checked() {
        let fp = TypeFingerprint::of::<u32>();
        let ex = Expect::new(ObjectKind::Array, fp).min_payload_size(8);
        let good = ready(ObjectKind::Array, &fp, 16);
        let mut h = good;
        h.magic ^= 1;
        assert!(matches!(
            validate(&h, 272, &ex),
            Err(ShmError::BadMagic { .. })
        ));
        let mut h = good;
        h.version = 99;
        assert!(matches!(
            validate(&h, 272, &ex),
            Err(ShmError::VersionMismatch { .. })
        ));
        let mut h = good;
        h.kind = ObjectKind::Queue as u32;
        assert!(matches!(
            validate(&h, 272, &ex),
            Err(ShmError::WrongKind { .. })
        ));
        assert!(matches!(
            validate(&good, 300, &ex),
            Err(ShmError::SizeMismatch { .. })
        ));
        let mut h = good;
        h.init_state = STATE_FAILED;
        assert!(matches!(validate(&h, 272, &ex), Err(ShmError::InitFailed)));
        let mut h = good;
        h.payload_size = 4;
        h.total_size = 260;
        assert!(matches!(
            validate(&h, 260, &ex),
            Err(ShmError::SizeMismatch { .. })
        ));
        let mut h = good;
        h.type_name_len = 1000;
        assert!(matches!(
            validate(&h, 272, &ex),
            Err(ShmError::Corrupted(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400), size in 0u64..1000) {
            if let Ok(h) = header_from_bytes(&bytes) {
                let _ = validate(&h, size, &Expect::new(ObjectKind::Value, TypeFingerprint::of::<u8>()));
            }
        }
    }
}
