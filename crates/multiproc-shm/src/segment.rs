//! Segments: a mapped shared-memory file with a validated [`Header`] at offset 0.
//!
//! * Named segments live in `/dev/shm/multiproc.NAME`, created with `O_CREAT|O_EXCL` and mode 0600;
//!   the creating process unlinks the name when its last handle drops (a forked child holding a
//!   copy never does: the unlink is tied to the creator's pid). A name whose creator is dead
//!   (pid + start time) is reclaimed by the next `create`.
//! * Persistent named segments ([`Segment::create_named_persistent`], or any named object made
//!   inside [`persistent`]) keep their name after the creator's handles drop and after the
//!   creator exits, as Python's `SharedMemory`: the name lives until [`unlink_name`] (or
//!   [`Segment::unlink_name`]) or `multiproc clean --persistent`. Neither the next `create` of
//!   the name nor a plain `multiproc clean` reclaims it.
//! * Anonymous segments are memfds: inherited across `fork`, passable to a spawned child as an fd,
//!   and freed by the kernel when the last fd and mapping go, so they cannot leak.
//!
//! ```
//! use multiproc_shm::{Segment, SegmentSpec, ObjectKind, TypeFingerprint, Expect};
//! let spec = SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u8>(), 64, 8);
//! let seg = Segment::create_anonymous(&spec, |_ptr, _len| Ok(())).unwrap();
//! assert_eq!(seg.payload_len(), 64);
//! ```

use crate::ProcessId;
use crate::error::{Result, ShmError};
use crate::header::{
    self, Expect, HEADER_SIZE, Header, INIT_STATE_OFFSET, MAX_PAYLOAD_ALIGN, ObjectKind,
    STATE_CREATING, STATE_FAILED, STATE_READY, TypeFingerprint,
};
use memmap2::{MmapOptions, MmapRaw};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
// The header's init word: never modelled under loom.
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every named segment in /dev/shm.
pub const NAME_PREFIX: &str = "multiproc.";
/// How long an opener waits for a creator to finish by default.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// A segment left in the Creating state this long is treated as abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(5);

/// What a new segment holds.
#[derive(Clone, Copy, Debug)]
pub struct SegmentSpec {
    /// The kind.
    pub kind: ObjectKind,
    /// The element type.
    pub fingerprint: TypeFingerprint,
    /// Payload bytes.
    pub payload_size: usize,
    /// Payload alignment (at most 256).
    pub payload_align: usize,
}

impl SegmentSpec {
    /// A spec.
    pub fn new(
        kind: ObjectKind,
        fingerprint: TypeFingerprint,
        payload_size: usize,
        payload_align: usize,
    ) -> SegmentSpec {
        SegmentSpec {
            kind,
            fingerprint,
            payload_size,
            payload_align,
        }
    }
}

/// How to reach a segment from another process: its name, or an fd number valid there, plus the
/// segment's unique id (see [`Header::segment_id`]). Opening a handle checks the id, so a handle
/// whose fd number (or name) has since been reused for another segment is refused with
/// [`ShmError::StaleHandle`] instead of silently reaching the other object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentHandle {
    /// A named segment (the user's name, without the prefix).
    Named {
        /// The user's name.
        name: String,
        /// The segment's id.
        id: u64,
    },
    /// An anonymous segment's fd, as numbered in the receiving process. Serializing it registers
    /// the fd with [`crate::fd_passing::collect_fds`], so a spawner passes it on.
    Fd {
        /// The fd number.
        #[serde(serialize_with = "crate::fd_passing::serialize_fd")]
        fd: i32,
        /// The segment's id.
        id: u64,
    },
}

impl SegmentHandle {
    /// The segment id the handle expects.
    pub fn id(&self) -> u64 {
        match self {
            SegmentHandle::Named { id, .. } | SegmentHandle::Fd { id, .. } => *id,
        }
    }
}

struct Inner {
    map: MmapRaw,
    file: File,
    name: Option<String>,
    /// Set in the creating process of a named segment: unlink on drop if still this pid.
    unlink_by: Option<u32>,
    header: Header,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let (Some(name), Some(pid)) = (&self.name, self.unlink_by)
            && pid == std::process::id()
        {
            // Only if the name still refers to our file (someone may have reclaimed it).
            if let Ok(fd) = shm_open_existing(name, libc::O_RDONLY)
                && same_inode(fd.as_fd(), self.file.as_fd())
            {
                let _ = shm_unlink(name);
            }
        }
    }
}

/// A mapped, validated segment. Cloning gives another handle to the same mapping.
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.header.object_kind())
            .field("type", &self.inner.header.type_name())
            .field("payload_size", &self.inner.header.payload_size)
            .finish()
    }
}

impl Segment {
    /// Creates an anonymous (memfd) segment and runs `init` on its payload before marking it Ready.
    ///
    /// `init` gets the payload pointer and length; nobody else can see the memory yet.
    pub fn create_anonymous(
        spec: &SegmentSpec,
        init: impl FnOnce(NonNull<u8>, usize) -> Result<()>,
    ) -> Result<Segment> {
        check_align(spec)?;
        let name = format!("multiproc-{}", spec.kind.name());
        let fd = crate::sys::memfd_with(&name, libc::MFD_ALLOW_SEALING).map_err(|source| {
            ShmError::Os {
                op: "memfd_create",
                source,
            }
        })?;
        Self::build(File::from(fd), None, spec, false, init)
    }

    /// Creates `/dev/shm/multiproc.NAME` exclusively (mode 0600), reclaiming a stale one whose
    /// creator is dead, and runs `init` on the payload before marking it Ready.
    ///
    /// Inside [`persistent`] this is [`Segment::create_named_persistent`].
    pub fn create_named(
        name: &str,
        spec: &SegmentSpec,
        init: impl FnOnce(NonNull<u8>, usize) -> Result<()>,
    ) -> Result<Segment> {
        let persistent = PERSISTENT_SCOPE.with(|p| p.get());
        Self::create_named_inner(name, spec, persistent, init)
    }

    /// [`Segment::create_named`] for a persistent name: it stays in /dev/shm when this process's
    /// handles drop and when it exits, until [`unlink_name`] / [`Segment::unlink_name`] or
    /// `multiproc clean --persistent` removes it. Creating the name again while it exists fails
    /// with `AlreadyExists`, whether its creator lives or not.
    pub fn create_named_persistent(
        name: &str,
        spec: &SegmentSpec,
        init: impl FnOnce(NonNull<u8>, usize) -> Result<()>,
    ) -> Result<Segment> {
        Self::create_named_inner(name, spec, true, init)
    }

    fn create_named_inner(
        name: &str,
        spec: &SegmentSpec,
        persistent: bool,
        init: impl FnOnce(NonNull<u8>, usize) -> Result<()>,
    ) -> Result<Segment> {
        check_name(name)?;
        check_align(spec)?;
        let full = format!("{NAME_PREFIX}{name}");
        let mut attempts = 0;
        let fd = loop {
            attempts += 1;
            match shm_create_excl(&full) {
                Ok(fd) => break fd,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    match reclaim_if_stale(&full)? {
                        Reclaim::Reclaimed if attempts < 4 => continue,
                        Reclaim::Busy if attempts < 4 => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Reclaim::Alive(pid)
                        | Reclaim::AliveUnknown(pid)
                        | Reclaim::Persistent(pid) => {
                            return Err(ShmError::AlreadyExists {
                                name: name.to_string(),
                                creator_pid: pid,
                            });
                        }
                        _ => {
                            return Err(ShmError::AlreadyExists {
                                name: name.to_string(),
                                creator_pid: None,
                            });
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    return Err(ShmError::PermissionDenied {
                        name: name.to_string(),
                    });
                }
                Err(source) => {
                    return Err(ShmError::Os {
                        op: "shm_open",
                        source,
                    });
                }
            }
        };
        let file = File::from(fd);
        match Self::build(file, Some(full.clone()), spec, persistent, init) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                let _ = shm_unlink(&full);
                Err(e)
            }
        }
    }

    fn build(
        file: File,
        name: Option<String>,
        spec: &SegmentSpec,
        persistent: bool,
        init: impl FnOnce(NonNull<u8>, usize) -> Result<()>,
    ) -> Result<Segment> {
        let total = (HEADER_SIZE as u64)
            .checked_add(spec.payload_size as u64)
            .filter(|t| *t <= isize::MAX as u64)
            .ok_or(ShmError::SizeMismatch {
                what: "payload size too large",
                header: spec.payload_size as u64,
                expected: isize::MAX as u64 - HEADER_SIZE as u64,
            })?;
        file.set_len(total).map_err(|source| ShmError::Os {
            op: "ftruncate",
            source,
        })?;
        if name.is_none() {
            // An anonymous segment's size is fixed for good: no holder of the fd can shrink it
            // under another process's mapping (which would SIGBUS that process) or grow it.
            // F_SEAL_SEAL: nobody can add seals later either (F_SEAL_FUTURE_WRITE would make
            // our later mappings fail). Named segments cannot be sealed: see docs/architecture.md.
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            // SAFETY: F_ADD_SEALS on an fd we own, with valid seal flags.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
                return Err(ShmError::os("fcntl(F_ADD_SEALS)"));
            }
        }
        let map = MmapOptions::new()
            .len(total as usize)
            .map_raw(&file)
            .map_err(|source| ShmError::Os { op: "mmap", source })?;
        let base = map.as_mut_ptr();
        let mut header = Header::new(
            spec.kind,
            &spec.fingerprint,
            spec.payload_size as u64,
            ProcessId::current(),
        );
        if persistent {
            header.reserved0 |= header::FLAG_PERSISTENT;
        }
        // SAFETY: the mapping is `total >= HEADER_SIZE` bytes, page aligned; Header is plain data.
        // Nobody else uses the header before it is Ready: openers only read init_state until then.
        unsafe { std::ptr::write_volatile(base.cast::<Header>(), header) };
        // SAFETY: HEADER_SIZE <= total, so the payload pointer is inside (or one past) the mapping.
        let payload = unsafe { NonNull::new_unchecked(base.add(HEADER_SIZE)) };
        let state = init_state(base);
        // A persistent name is never unlinked by a handle's drop.
        let unlink_by = name
            .as_ref()
            .filter(|_| !persistent)
            .map(|_| std::process::id());
        let result = init(payload, spec.payload_size);
        match result {
            Ok(()) => {
                // Release: pairs with the Acquire load in `wait_ready`; every header and payload
                // write above happens-before an opener's reads. Relaxed would let an opener see
                // Ready before the payload is built.
                state.store(STATE_READY, Ordering::Release);
                header.init_state = STATE_READY;
                Ok(Segment {
                    inner: Arc::new(Inner {
                        map,
                        file,
                        name,
                        unlink_by,
                        header,
                    }),
                })
            }
            Err(e) => {
                state.store(STATE_FAILED, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Opens `/dev/shm/multiproc.NAME`, waiting up to [`DEFAULT_OPEN_TIMEOUT`] for its creator to
    /// mark it Ready, and validates it against `expect`.
    pub fn open_named(name: &str, expect: &Expect) -> Result<Segment> {
        Self::open_named_timeout(name, expect, DEFAULT_OPEN_TIMEOUT)
    }

    /// [`Segment::open_named`] with a chosen wait for readiness.
    pub fn open_named_timeout(name: &str, expect: &Expect, timeout: Duration) -> Result<Segment> {
        check_name(name)?;
        let full = format!("{NAME_PREFIX}{name}");
        let fd = shm_open_existing(&full, libc::O_RDWR).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => ShmError::NotFound {
                name: name.to_string(),
            },
            Some(libc::EACCES) | Some(libc::EPERM) => ShmError::PermissionDenied {
                name: name.to_string(),
            },
            _ => ShmError::Os {
                op: "shm_open",
                source: e,
            },
        })?;
        Self::open_file(File::from(fd), Some(full), expect, timeout)
    }

    /// Opens a segment from an fd (an anonymous segment passed from a parent). The fd is taken over.
    pub fn from_fd(fd: OwnedFd, expect: &Expect) -> Result<Segment> {
        Self::from_fd_timeout(fd, expect, DEFAULT_OPEN_TIMEOUT)
    }

    /// [`Segment::from_fd`] with a chosen wait for readiness.
    pub fn from_fd_timeout(fd: OwnedFd, expect: &Expect, timeout: Duration) -> Result<Segment> {
        Self::open_file(File::from(fd), None, expect, timeout)
    }

    /// Opens the segment a [`SegmentHandle`] names and checks that it is the same segment the
    /// handle was made from ([`ShmError::StaleHandle`] otherwise). For `Fd`, the fd is
    /// duplicated, not taken.
    pub fn open_handle(handle: &SegmentHandle, expect: &Expect) -> Result<Segment> {
        Self::open_handle_timeout(handle, expect, DEFAULT_OPEN_TIMEOUT)
    }

    /// [`Segment::open_handle`] with a chosen wait for readiness (a segment whose init state was
    /// rewritten by another process is never Ready: this bounds the wait for it).
    pub fn open_handle_timeout(
        handle: &SegmentHandle,
        expect: &Expect,
        timeout: Duration,
    ) -> Result<Segment> {
        let seg = match handle {
            SegmentHandle::Named { name, .. } => Self::open_named_timeout(name, expect, timeout)?,
            SegmentHandle::Fd { fd, .. } => {
                // A pool worker maps the sender's fd numbers to the fds it received.
                let fd = crate::fd_passing::local_fd(*fd);
                // SAFETY: F_DUPFD_CLOEXEC on any integer is safe; an invalid fd gives EBADF.
                let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    return Err(ShmError::StaleHandle {
                        what: "the handle's fd is not open in this process",
                    });
                }
                // SAFETY: fcntl returned a fresh fd that we own.
                let owned = unsafe { OwnedFd::from_raw_fd(dup) };
                if !is_shm_file(owned.as_fd()) {
                    return Err(ShmError::StaleHandle {
                        what: "the handle's fd is not a shared-memory file",
                    });
                }
                Self::from_fd_timeout(owned, expect, timeout)?
            }
        };
        if seg.inner.header.segment_id != handle.id() {
            return Err(ShmError::StaleHandle {
                what: "the fd or name now refers to another segment",
            });
        }
        Ok(seg)
    }

    fn open_file(
        file: File,
        name: Option<String>,
        expect: &Expect,
        timeout: Duration,
    ) -> Result<Segment> {
        let deadline = crate::deadline::saturating_after(timeout);
        // The creator sets the size right after O_EXCL: wait (bounded) while the file is short.
        let size = loop {
            let size = file
                .metadata()
                .map_err(|source| ShmError::Os {
                    op: "fstat",
                    source,
                })?
                .len();
            if size >= HEADER_SIZE as u64 {
                break size;
            }
            if Instant::now() >= deadline {
                return Err(ShmError::Truncated {
                    actual: size,
                    needed: HEADER_SIZE as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|source| ShmError::Os { op: "mmap", source })?;
        let base = map.as_mut_ptr();
        wait_ready(base, deadline, timeout)?;
        // SAFETY: the mapping holds at least HEADER_SIZE bytes; Header is plain data (any bytes
        // are a valid value); the creator wrote it before its Release store of Ready.
        let header = unsafe { std::ptr::read_volatile(base.cast::<Header>()) };
        header::validate(&header, size, expect)?;
        // The file may have been shrunk by a hostile process after our fstat; re-check so every
        // later access through the mapping stays inside the file.
        let now = file
            .metadata()
            .map_err(|source| ShmError::Os {
                op: "fstat",
                source,
            })?
            .len();
        if now != size {
            return Err(ShmError::SizeMismatch {
                what: "file size changed while opening",
                header: size,
                expected: now,
            });
        }
        Ok(Segment {
            inner: Arc::new(Inner {
                map,
                file,
                name,
                unlink_by: None,
                header,
            }),
        })
    }

    /// Pointer to the payload (256-byte aligned).
    pub fn payload_ptr(&self) -> NonNull<u8> {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked at create/open).
        unsafe { NonNull::new_unchecked(self.inner.map.as_mut_ptr().add(HEADER_SIZE)) }
    }

    /// Payload bytes.
    pub fn payload_len(&self) -> usize {
        self.inner.header.payload_size as usize
    }

    /// A copy of the header as validated.
    pub fn header(&self) -> &Header {
        &self.inner.header
    }

    /// The full shm name (`multiproc.NAME`) of a named segment.
    pub fn shm_name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The user's name of a named segment.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref().map(|n| &n[NAME_PREFIX.len()..])
    }

    /// The segment's fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.file.as_fd()
    }

    /// How another process reaches this segment. For an anonymous segment the fd number is this
    /// process's: valid in a forked child, or in a spawned child that was given the same fd number.
    pub fn handle(&self) -> SegmentHandle {
        let id = self.inner.header.segment_id;
        match self.name() {
            Some(n) => SegmentHandle::Named {
                name: n.to_string(),
                id,
            },
            None => SegmentHandle::Fd {
                fd: self.inner.file.as_raw_fd(),
                id,
            },
        }
    }

    /// Bytes mapped: header plus payload.
    pub fn mapped_len(&self) -> usize {
        HEADER_SIZE + self.payload_len()
    }

    /// Maps every page of the segment into this process now (`MADV_POPULATE_WRITE`, Linux
    /// 5.14+), so that first touches later cost no page fault: for rings that will carry bulk
    /// data at once (the pool's pipes). Each process that maps the segment populates its own
    /// page tables. False if the kernel refused (an older kernel, a memory limit, a named
    /// segment shrunk by another process): the pages are then mapped on first touch, as
    /// without this call.
    pub fn populate(&self) -> bool {
        // SAFETY: `madvise` over exactly our own live mapping. MADV_POPULATE_WRITE faults the
        // pages in as if written, without changing a byte; it fails (EFAULT) rather than
        // raising SIGBUS for pages past the end of a shrunk file.
        unsafe {
            libc::madvise(
                self.inner.map.as_mut_ptr().cast(),
                self.inner.map.len(),
                libc::MADV_POPULATE_WRITE,
            ) == 0
        }
    }

    /// Writes `bytes` at `offset` from the segment's first byte (the header counts), clipped to the
    /// mapping, one relaxed atomic byte store at a time. It does what any process of the same user
    /// can do to a segment, so it is safe: every object must answer whatever it leaves with an
    /// error or a lost message, never UB, a hang or an abort. For fuzz targets and tests.
    #[doc(hidden)]
    pub fn scribble(&self, offset: usize, bytes: &[u8]) {
        let len = self.mapped_len();
        let base = self.inner.map.as_mut_ptr();
        for (i, b) in bytes.iter().enumerate() {
            let Some(at) = offset.checked_add(i).filter(|a| *a < len) else {
                break;
            };
            // SAFETY: `at < len`, inside the live mapping; an AtomicU8 has u8's layout and any
            // alignment; other processes' accesses to these bytes are atomics or raw copies.
            let cell = unsafe { &*base.add(at).cast::<std::sync::atomic::AtomicU8>() };
            cell.store(*b, Ordering::Relaxed);
        }
    }

    /// Whether two handles map the same segment object (same file).
    pub fn same_as(&self, other: &Segment) -> bool {
        same_inode(self.fd(), other.fd())
    }

    /// Hands a freshly created named segment's name over to other processes: dropping this handle
    /// no longer unlinks it. Someone else then unlinks it ([`Segment::unlink_name`]), or the
    /// stale-segment cleanup reclaims it once its creator is dead. Only takes effect while this is
    /// the only handle (right after `create_named`); returns whether it did.
    pub fn detach_name(&mut self) -> bool {
        match Arc::get_mut(&mut self.inner) {
            Some(i) => {
                i.unlink_by = None;
                true
            }
            None => false,
        }
    }

    /// Whether this is a persistent named segment (its header says so).
    pub fn is_persistent(&self) -> bool {
        self.inner.name.is_some() && self.inner.header.is_persistent()
    }

    /// Unlinks this named segment's name now, if the name still refers to this segment's file
    /// (it may have been reclaimed and reused). The mapping stays valid. Returns whether it did.
    pub fn unlink_name(&self) -> bool {
        let Some(name) = &self.inner.name else {
            return false;
        };
        match shm_open_existing(name, libc::O_RDONLY) {
            Ok(fd) if same_inode(fd.as_fd(), self.inner.file.as_fd()) => shm_unlink(name).is_ok(),
            _ => false,
        }
    }
}

// SAFETY: the mapping is shared memory reached only through raw pointers by the typed layers,
// which synchronize through atomics/locks in the payload; the Inner fields are immutable.
unsafe impl Send for Inner {}
// SAFETY: as above: no interior mutability outside the mapped memory.
unsafe impl Sync for Inner {}

fn init_state(base: *mut u8) -> &'static AtomicU32 {
    // SAFETY: INIT_STATE_OFFSET (44) is 4-aligned inside the page-aligned mapping, which outlives
    // every use here (callers hold the mapping). AtomicU32 has u32's layout.
    unsafe { &*base.add(INIT_STATE_OFFSET).cast::<AtomicU32>() }
}

fn wait_ready(base: *mut u8, deadline: Instant, timeout: Duration) -> Result<()> {
    let state = init_state(base);
    let mut spins = 0u32;
    loop {
        // Magic and version first: a foreign file or another layout must not be judged by a
        // state word that may live elsewhere in it. Magic 0 means the creator has not written
        // its header yet (right after O_EXCL + ftruncate).
        // SAFETY: the mapping holds at least HEADER_SIZE bytes; offsets 0 and 8 are aligned.
        let (magic, version) = unsafe {
            (
                base.cast::<u64>().read_volatile(),
                base.add(8).cast::<u32>().read_volatile(),
            )
        };
        if magic != 0 && magic != header::MAGIC {
            return Err(ShmError::BadMagic { found: magic });
        }
        if magic == header::MAGIC && version != header::LAYOUT_VERSION {
            return Err(ShmError::VersionMismatch {
                found: version,
                expected: header::LAYOUT_VERSION,
            });
        }
        // Acquire: pairs with the creator's Release store of Ready in `build`.
        match state.load(Ordering::Acquire) {
            STATE_READY if magic == header::MAGIC => return Ok(()),
            STATE_READY => {}
            STATE_FAILED => return Err(ShmError::InitFailed),
            STATE_CREATING => {}
            _ => return Err(ShmError::Corrupted("unknown init state")),
        }
        if Instant::now() >= deadline {
            return Err(ShmError::InitTimeout(timeout));
        }
        spins += 1;
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn check_align(spec: &SegmentSpec) -> Result<()> {
    if !spec.payload_align.is_power_of_two() || spec.payload_align > MAX_PAYLOAD_ALIGN {
        return Err(ShmError::AlignTooLarge(spec.payload_align));
    }
    Ok(())
}

/// Checks a user segment name: 1..=200 bytes of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(ShmError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name == "." || name == ".." {
        return bad("not a file name");
    }
    Ok(())
}

fn cname(full: &str) -> CString {
    CString::new(format!("/{full}")).expect("checked name has no NUL")
}

fn shm_create_excl(full: &str) -> io::Result<OwnedFd> {
    let c = cname(full);
    // SAFETY: c is NUL-terminated; the flags and mode are valid.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: shm_open returned a fresh fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn shm_open_existing(full: &str, mode: libc::c_int) -> io::Result<OwnedFd> {
    let c = cname(full);
    // SAFETY: c is NUL-terminated; the flags are valid.
    // O_NOFOLLOW | O_NONBLOCK: a symlink or FIFO planted under our prefix must not redirect or
    // block the open; anything but a regular memory file is then refused.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            mode | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: shm_open returned a fresh fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if !is_shm_file(fd.as_fd()) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(fd)
}

pub(crate) fn shm_unlink(full: &str) -> io::Result<()> {
    let c = cname(full);
    // SAFETY: c is NUL-terminated.
    if unsafe { libc::shm_unlink(c.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn same_inode(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    match (fstat(a.as_raw_fd()), fstat(b.as_raw_fd())) {
        (Some(x), Some(y)) => x.st_ino == y.st_ino && x.st_dev == y.st_dev,
        _ => false,
    }
}

/// Whether `fd` is a regular file on a tmpfs/hugetlbfs-like memory file system (memfd, /dev/shm),
/// not a FIFO, socket, device or disk file whose open or mapping could block or mean something else.
fn is_shm_file(fd: BorrowedFd<'_>) -> bool {
    let Some(st) = fstat(fd.as_raw_fd()) else {
        return false;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return false;
    }
    let mut sfs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: sfs is a valid out-pointer for one statfs struct.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), sfs.as_mut_ptr()) } < 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it filled the struct.
    let f_type = unsafe { sfs.assume_init() }.f_type;
    const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
    const HUGETLBFS_MAGIC: libc::c_long = 0x9584_58f6;
    f_type as libc::c_long == TMPFS_MAGIC || f_type as libc::c_long == HUGETLBFS_MAGIC
}

/// The seals of an fd (0 when it cannot have any).
pub fn seals_of(fd: BorrowedFd<'_>) -> i32 {
    // SAFETY: F_GET_SEALS on any fd is safe; a file without seal support gives EINVAL.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    r.max(0)
}

fn fstat(fd: RawFd) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out-pointer for one stat struct.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled the struct.
    Some(unsafe { st.assume_init() })
}

/// The state of an existing named segment, as judged by its header and creator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staleness {
    /// The creator (pid + start time) is alive.
    Alive(u32),
    /// The creator is dead: the segment can be reclaimed.
    CreatorDead(u32),
    /// Never finished its header and is older than a few seconds: abandoned.
    Abandoned,
    /// Still being created (young, not Ready yet).
    Creating,
    /// Not a multiproc header (or unreadable); left alone.
    Foreign,
}

/// Judges a named segment's file (by the full shm name, `multiproc.NAME`).
pub fn staleness_of(full: &str) -> io::Result<Staleness> {
    let fd = shm_open_existing(full, libc::O_RDONLY)?;
    Ok(staleness_fd(fd.as_fd()))
}

fn staleness_fd(fd: BorrowedFd<'_>) -> Staleness {
    let Some(st) = fstat(fd.as_raw_fd()) else {
        return Staleness::Foreign;
    };
    let age = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        Duration::from_secs(now.saturating_sub(st.st_mtime).max(0) as u64)
    };
    let mut buf = [0u8; HEADER_SIZE];
    // SAFETY: buf is a valid buffer of HEADER_SIZE bytes; pread on a bad fd just fails.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), HEADER_SIZE, 0) };
    if n < HEADER_SIZE as isize {
        return if age > ABANDONED_AFTER {
            Staleness::Abandoned
        } else {
            Staleness::Creating
        };
    }
    let Ok(h) = header::header_from_bytes(&buf) else {
        return Staleness::Foreign;
    };
    if h.magic != header::MAGIC {
        return if h.magic == 0 && age > ABANDONED_AFTER {
            Staleness::Abandoned
        } else if h.magic == 0 {
            Staleness::Creating
        } else {
            Staleness::Foreign
        };
    }
    if h.creator().is_alive() {
        return Staleness::Alive(h.creator_pid);
    }
    Staleness::CreatorDead(h.creator_pid)
}

enum Reclaim {
    Reclaimed,
    Busy,
    Alive(Option<u32>),
    AliveUnknown(Option<u32>),
    /// A persistent segment: not reclaimed (its creator may be dead).
    Persistent(Option<u32>),
}

/// Unlinks the named segment if its creator is dead, guarding against two reclaimers with an
/// exclusive `flock` on the inspected file and an inode check before the unlink.
fn reclaim_if_stale(full: &str) -> Result<Reclaim> {
    reclaim(full, false)
}

/// [`reclaim_if_stale`], also taking a persistent segment whose creator is dead when
/// `persistent_too`.
fn reclaim(full: &str, persistent_too: bool) -> Result<Reclaim> {
    let fd = match shm_open_existing(full, libc::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Reclaim::Reclaimed),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            return Err(ShmError::PermissionDenied {
                name: full[NAME_PREFIX.len()..].to_string(),
            });
        }
        Err(source) => {
            return Err(ShmError::Os {
                op: "shm_open",
                source,
            });
        }
    };
    match staleness_fd(fd.as_fd()) {
        Staleness::Alive(pid) => return Ok(Reclaim::Alive(Some(pid))),
        Staleness::Foreign => return Ok(Reclaim::AliveUnknown(None)),
        Staleness::Creating => return Ok(Reclaim::Busy),
        Staleness::CreatorDead(pid) => {
            if !persistent_too && persistent_fd(fd.as_fd()) {
                return Ok(Reclaim::Persistent(Some(pid)));
            }
        }
        Staleness::Abandoned => {}
    }
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        return Ok(Reclaim::Busy);
    }
    // Still the same file under that name? Then it is ours to unlink.
    if let Ok(now) = shm_open_existing(full, libc::O_RDONLY)
        && same_inode(now.as_fd(), fd.as_fd())
    {
        let _ = shm_unlink(full);
    }
    Ok(Reclaim::Reclaimed)
}

/// Every named multiproc segment in /dev/shm, by full name, with its staleness.
pub fn list_named() -> io::Result<Vec<(String, Staleness)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(user) = name.strip_prefix(NAME_PREFIX) {
            if check_name(user).is_err() {
                continue;
            }
            let st = staleness_of(&name).unwrap_or(Staleness::Foreign);
            out.push((name, st));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Unlinks every named multiproc segment whose creator is dead (or that was abandoned half-made),
/// except persistent ones. Returns the names removed (or that would be, with `dry_run`).
/// Only names for which `filter` (given the full name) returns true are considered.
pub fn clean_stale(dry_run: bool, filter: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
    clean_stale_with(dry_run, false, filter)
}

/// [`clean_stale`]; with `persistent_too`, persistent segments whose creator is dead are removed
/// as well (`multiproc clean --persistent`).
pub fn clean_stale_with(
    dry_run: bool,
    persistent_too: bool,
    filter: impl Fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, st) in list_named()? {
        if !filter(&name) {
            continue;
        }
        if matches!(st, Staleness::CreatorDead(_) | Staleness::Abandoned) {
            if !persistent_too && is_persistent_named(&name) {
                continue;
            }
            if !dry_run {
                match reclaim(&name, persistent_too) {
                    Ok(Reclaim::Reclaimed) => {}
                    _ => continue,
                }
            }
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Whether the named segment (full name, `multiproc.NAME`) is persistent (false when it cannot
/// be read).
pub fn is_persistent_named(full: &str) -> bool {
    shm_open_existing(full, libc::O_RDONLY)
        .map(|fd| persistent_fd(fd.as_fd()))
        .unwrap_or(false)
}

/// Whether the file's header carries [`header::FLAG_PERSISTENT`] (with the multiproc magic).
fn persistent_fd(fd: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; HEADER_SIZE];
    // SAFETY: buf is a valid buffer of HEADER_SIZE bytes; pread on a bad fd just fails.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), HEADER_SIZE, 0) };
    if n < HEADER_SIZE as isize {
        return false;
    }
    header::header_from_bytes(&buf).is_ok_and(|h| h.magic == header::MAGIC && h.is_persistent())
}

/// Removes the name `/dev/shm/multiproc.NAME` (`name` without the prefix), persistent or not,
/// whoever created it: Python's `SharedMemory.unlink()`. Processes that have it mapped keep
/// their mapping; new opens fail with `NotFound`. Returns whether a name was removed (`false`
/// when there was none).
pub fn unlink_name(name: &str) -> Result<bool> {
    check_name(name)?;
    match shm_unlink(&format!("{NAME_PREFIX}{name}")) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(ShmError::PermissionDenied {
            name: name.to_string(),
        }),
        Err(source) => Err(ShmError::Os {
            op: "shm_unlink",
            source,
        }),
    }
}

thread_local! {
    /// Set inside [`persistent`].
    static PERSISTENT_SCOPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every named segment this thread creates in it made persistent (as by
/// [`Segment::create_named_persistent`]): the way to make any named object persistent, e.g.
/// `persistent(|| Lock::create_named("jobs.lock"))`. Objects built from several segments
/// (a named `Queue`, `Pipe` or `Condition`) get every one of them persistent; remove them all
/// with `multiproc clean --persistent`, or each by name with [`unlink_name`]. Keep the closure
/// to the creation: every named segment made in it is persistent, including ones an operation
/// makes on the side (a large `Queue::put` stores its message in a named side segment).
pub fn persistent<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PERSISTENT_SCOPE.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PERSISTENT_SCOPE.with(|p| p.replace(true)));
    f()
}

/// Reads the raw header of a named segment without validating kind or type (for tools).
pub fn read_header_named(name: &str) -> Result<Header> {
    check_name(name)?;
    let full = format!("{NAME_PREFIX}{name}");
    let fd = shm_open_existing(&full, libc::O_RDONLY).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => ShmError::NotFound {
            name: name.to_string(),
        },
        Some(libc::EACCES) => ShmError::PermissionDenied {
            name: name.to_string(),
        },
        _ => ShmError::Os {
            op: "shm_open",
            source: e,
        },
    })?;
    let mut buf = [0u8; HEADER_SIZE];
    // SAFETY: buf is HEADER_SIZE bytes.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), HEADER_SIZE, 0) };
    if n < 0 {
        return Err(ShmError::os("pread"));
    }
    header::header_from_bytes(&buf[..n as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("ok-name_1.x").is_ok());
        for bad in ["", "a/b", "..", "sp ace", &"x".repeat(201)] {
            assert!(
                matches!(check_name(bad), Err(ShmError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn creating_state_is_never_seen_as_ready() {
        assert_eq!(STATE_CREATING, 0);
    }
}

#[cfg(test)]
mod seal_tests {
    use super::*;

    fn spec() -> SegmentSpec {
        SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u8>(), 4096, 8)
    }

    #[test]
    fn populate_maps_every_page_into_this_process() {
        // This process's resident KiB of the mapping (its page tables), from smaps.
        fn rss_kib(seg: &Segment) -> u64 {
            let start = format!("{:x}-", seg.inner.map.as_ptr() as usize);
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
            assert!(lines.next().is_some(), "mapping not in smaps");
            let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
            rss.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        let big = SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u8>(), 256 * 1024, 8);
        let seg = Segment::create_anonymous(&big, |_, _| Ok(())).unwrap();
        let before = rss_kib(&seg);
        assert!(before < 256, "{before} KiB mapped before any touch");
        assert!(seg.populate(), "MADV_POPULATE_WRITE refused");
        let after = rss_kib(&seg);
        assert!(after >= 256 + 4, "{after} KiB mapped after populate");
        // Nothing written: the payload is still zeros.
        // SAFETY: the payload is ours and `payload_len` bytes long; nobody else maps it.
        let payload =
            unsafe { std::slice::from_raw_parts(seg.payload_ptr().as_ptr(), seg.payload_len()) };
        assert!(payload.iter().all(|&b| b == 0));
    }

    #[test]
    fn anonymous_segments_cannot_be_shrunk_or_grown() {
        let seg = Segment::create_anonymous(&spec(), |_, _| Ok(())).unwrap();
        let seals = seals_of(seg.fd());
        assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
        assert_ne!(seals & libc::F_SEAL_GROW, 0);
        // SAFETY: ftruncate on an fd we hold; it must fail with EPERM.
        let r = unsafe { libc::ftruncate(seg.fd().as_raw_fd(), 0) };
        assert_eq!(r, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        // SAFETY: as above.
        let r = unsafe { libc::ftruncate(seg.fd().as_raw_fd(), 1 << 20) };
        assert_eq!(r, -1);
    }

    #[test]
    fn a_recreated_name_makes_old_handles_stale() {
        let name = format!("seal-test-{}", std::process::id());
        let a = Segment::create_named(&name, &spec(), |_, _| Ok(())).unwrap();
        let h = a.handle();
        drop(a);
        let b = Segment::create_named(&name, &spec(), |_, _| Ok(())).unwrap();
        let ex = Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u8>());
        let e = Segment::open_handle(&h, &ex).unwrap_err();
        assert!(matches!(e, ShmError::StaleHandle { .. }), "{e}");
        Segment::open_handle(&b.handle(), &ex).unwrap();
    }

    #[test]
    fn a_detached_name_outlives_its_creator_handle_until_unlinked() {
        let name = format!("detach-test-{}", std::process::id());
        let mut a = Segment::create_named(&name, &spec(), |_, _| Ok(())).unwrap();
        assert!(a.detach_name());
        drop(a);
        let ex = Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u8>());
        let b = Segment::open_named(&name, &ex).unwrap();
        assert!(b.unlink_name());
        assert!(!b.unlink_name(), "already gone");
        assert!(matches!(
            Segment::open_named(&name, &ex),
            Err(ShmError::NotFound { .. })
        ));
        // A clone exists: detaching refuses (the clone would still unlink on drop).
        let mut c = Segment::create_named(&name, &spec(), |_, _| Ok(())).unwrap();
        let c2 = c.clone();
        assert!(!c.detach_name());
        drop((c, c2));
        assert!(matches!(
            Segment::open_named(&name, &ex),
            Err(ShmError::NotFound { .. })
        ));
    }

    #[test]
    fn an_fd_handle_to_a_non_memory_file_is_refused() {
        let f = File::open("/proc/self/stat").unwrap();
        let h = SegmentHandle::Fd {
            fd: f.as_raw_fd(),
            id: 1,
        };
        let ex = Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u8>());
        let e = Segment::open_handle(&h, &ex).unwrap_err();
        assert!(matches!(e, ShmError::StaleHandle { .. }), "{e}");
    }

    #[test]
    fn a_fifo_under_our_prefix_does_not_block_open() {
        let name = format!("fifo-test-{}", std::process::id());
        let path = CString::new(format!("/dev/shm/{NAME_PREFIX}{name}")).unwrap();
        // SAFETY: path is NUL-terminated.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let ex = Expect::new(ObjectKind::Raw, TypeFingerprint::of::<u8>());
        let r = Segment::open_named_timeout(&name, &ex, Duration::from_millis(100));
        // SAFETY: path is NUL-terminated.
        unsafe { libc::unlink(path.as_ptr()) };
        assert!(r.is_err());
    }
}
