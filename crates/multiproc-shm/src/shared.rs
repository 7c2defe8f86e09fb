//! `Shared<L>`: the one typed container every multiproc object keeps its shared memory in.
//!
//! A shared object is a `#[repr(C)]` layout `L` at the start of a segment's payload, optionally
//! followed by a *tail* of raw bytes (a ring's data area, a store's slots). Everything about
//! mapping, validating and keeping that memory alive is done here, once:
//!
//! * **Layouts are declared, not cast.** `L` implements the `unsafe trait` [`SharedLayout`]: the
//!   implementor promises that `L` is made only of atomics (and `UnsafeCell`s reached under a lock
//!   or by raw copies), so that a shared reference `&L` is sound while other processes write it,
//!   and that every bit pattern is a valid `L`.
//! * **Geometry is validated once and kept locally.** On open, [`SharedLayout::validate`] reads
//!   the fields that size or index anything (capacities, slot counts, limits), checks them against
//!   the tail's real length and against limits this process knows, and returns them as
//!   [`SharedLayout::Geometry`]. Objects index with that local copy ([`Shared::geometry`]), never
//!   with a value re-read from shared memory, so a process that rewrites a geometry field later
//!   can only cause errors or lost messages, never an out-of-bounds access.
//! * **The mapping outlives every borrow.** `Shared` is a refcounted handle; a guard that must
//!   keep the memory mapped (a held robust mutex is on the thread's robust list!) holds a clone
//!   ([`Shared::keep_alive`]), so `mem::forget(guard)` followed by dropping the object leaks the
//!   mapping instead of unmapping memory the kernel still points at.
//! * **The tail is raw.** No `&[u8]`/`&mut [u8]` is formed over it: [`Shared::tail_read`] and
//!   [`Shared::tail_write`] copy with bounds checks, and hot paths that need a pointer take one
//!   from [`Shared::tail_ptr`] with offsets computed from the validated geometry.
//!
//! A heap backing ([`Shared::heap`]) gives the same view over process-local memory, for loom
//! models, proptests and fuzzing of the algorithms without a segment.
//!
//! ```
//! use multiproc_shm::{ObjectKind, Shared, SharedLayout, ShmError, TypeFingerprint};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! #[repr(C)]
//! struct Counter {
//!     hits: AtomicU64,
//!     /// Written once by the creator; validated on open.
//!     limit: AtomicU64,
//! }
//!
//! // SAFETY: only atomics; any bit pattern is a valid Counter.
//! unsafe impl SharedLayout for Counter {
//!     const KIND: ObjectKind = ObjectKind::Raw;
//!     type Geometry = u64;
//!     fn validate(&self, _tail_len: usize) -> Result<u64, ShmError> {
//!         let limit = self.limit.load(Ordering::Relaxed);
//!         if limit > 1000 {
//!             return Err(ShmError::OutOfRange { what: "limit", found: limit, limit: 1000 });
//!         }
//!         Ok(limit)
//!     }
//! }
//!
//! let fp = TypeFingerprint::of::<u64>();
//! let c = Shared::<Counter>::create(None, fp, 0, |p, _tail| {
//!     // SAFETY: `p` is valid for writes and nobody else sees it before Ready.
//!     unsafe { p.as_ptr().write(Counter { hits: AtomicU64::new(0), limit: AtomicU64::new(10) }) };
//!     Ok(())
//! })
//! .unwrap();
//! c.get().hits.fetch_add(1, Ordering::Relaxed);
//! let again = Shared::<Counter>::open_handle(&c.handle().unwrap(), fp).unwrap();
//! assert_eq!(*again.geometry(), 10);
//! assert_eq!(again.get().hits.load(Ordering::Relaxed), 1);
//! ```

use crate::error::{Result, ShmError};
use crate::header::{Expect, ObjectKind, TypeFingerprint};
use crate::segment::{DEFAULT_OPEN_TIMEOUT, Segment, SegmentHandle, SegmentSpec};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// Where a layout's tail starts: the layout's size rounded up to this (two cache lines, so the
/// tail never shares a line with the control block).
pub const TAIL_ALIGN: usize = 128;

/// A `#[repr(C)]` layout that may live in shared memory.
///
/// # Safety
///
/// Implementors guarantee that:
/// 1. `Self` is `#[repr(C)]` and every bit pattern is a valid `Self` (another process may have
///    written any bytes, or been killed half-way through writing them);
/// 2. every field another process may write while this one holds `&Self` is an atomic, or an
///    `UnsafeCell` that is only read or written under a lock or through raw copies — so forming
///    `&Self` over live shared memory is sound;
/// 3. `align_of::<Self>()` is at most 256 (the payload's alignment);
/// 4. `Self` needs no `Drop` in a segment (a segment's memory is never dropped as `Self`; on the
///    heap backing it is dropped once, in place, when the last handle goes).
pub unsafe trait SharedLayout: Sized + Send + Sync + 'static {
    /// The kind recorded in the segment header.
    const KIND: ObjectKind;
    /// The largest tail (bytes after the layout) this process accepts on open.
    const MAX_TAIL: usize = 0;
    /// What [`validate`](SharedLayout::validate) reads out of shared memory and the object then
    /// uses locally (sizes, counts, masks). `()` for layouts with no geometry.
    type Geometry: Send + Sync + 'static;
    /// Checks every field that sizes, indexes or bounds anything, against `tail_len` (the real
    /// length of the tail) and local limits, and returns the validated values. Runs on open and on
    /// create (so both sides use the same checked geometry).
    fn validate(&self, tail_len: usize) -> Result<Self::Geometry>;
}

enum Backing {
    Segment(Segment),
    /// Held only to keep (and finally free) the memory.
    Heap(#[allow(dead_code)] HeapRegion),
}

struct Inner<L: SharedLayout> {
    backing: Backing,
    ptr: NonNull<L>,
    tail: NonNull<u8>,
    tail_len: usize,
    geometry: L::Geometry,
}

/// A typed, validated view of a shared object: the layout `L`, its tail, and its geometry.
/// Cloning is cheap (a refcount) and keeps the memory mapped.
pub struct Shared<L: SharedLayout> {
    inner: Arc<Inner<L>>,
}

impl<L: SharedLayout> Clone for Shared<L> {
    fn clone(&self) -> Self {
        Shared {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L: SharedLayout> std::fmt::Debug for Shared<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Shared");
        d.field("kind", &L::KIND)
            .field("tail_len", &self.inner.tail_len);
        if let Backing::Segment(s) = &self.inner.backing {
            d.field("segment", s);
        }
        d.finish()
    }
}

// SAFETY: `L: Sync` (trait bound) is what makes `&L` shareable between threads; the tail is raw
// memory reached only through raw copies and atomics; the backing keeps the memory alive and is
// itself Send + Sync (Segment) or owned here (HeapRegion); `Geometry` is Send + Sync.
unsafe impl<L: SharedLayout> Send for Inner<L> {}
// SAFETY: as above.
unsafe impl<L: SharedLayout> Sync for Inner<L> {}

/// The offset of the tail: `size_of::<L>()` rounded up to [`TAIL_ALIGN`].
pub const fn tail_offset<L>() -> usize {
    let s = std::mem::size_of::<L>();
    s.div_ceil(TAIL_ALIGN) * TAIL_ALIGN
}

fn expect<L: SharedLayout>(fp: TypeFingerprint) -> Expect {
    Expect::new(L::KIND, fp).min_payload_size(tail_offset::<L>() as u64)
}

impl<L: SharedLayout> Shared<L> {
    /// Creates an anonymous (memfd, `name == None`) or named segment holding an `L` and a tail of
    /// `tail_len` bytes (zeroed), and runs `init(layout, tail)` before the segment is marked
    /// Ready. `fp` is the element type recorded in the header (an opener must name the same).
    ///
    /// `init` gets a pointer valid for writing one `L` (aligned, zeroed) and the tail's first byte;
    /// nobody else can see either until it returns `Ok`. It must leave a valid `L`: after it,
    /// [`SharedLayout::validate`] runs on the result, as an opener's would.
    pub fn create(
        name: Option<&str>,
        fp: TypeFingerprint,
        tail_len: usize,
        init: impl FnOnce(NonNull<L>, NonNull<u8>) -> Result<()>,
    ) -> Result<Self> {
        const { assert!(std::mem::align_of::<L>() <= crate::header::MAX_PAYLOAD_ALIGN) };
        check_tail::<L>(tail_len)?;
        let payload = tail_offset::<L>() + tail_len;
        let spec = SegmentSpec::new(L::KIND, fp, payload, std::mem::align_of::<L>());
        let f = |p: NonNull<u8>, _len: usize| {
            // SAFETY: the payload is `payload` bytes, 256-byte aligned: room for an `L` at 0 and
            // `tail_len` bytes at `tail_offset`, both inside the mapping.
            let tail = unsafe { NonNull::new_unchecked(p.as_ptr().add(tail_offset::<L>())) };
            init(p.cast::<L>(), tail)
        };
        let seg = match name {
            Some(n) => Segment::create_named(n, &spec, f)?,
            None => Segment::create_anonymous(&spec, f)?,
        };
        Self::from_segment(seg)
    }

    /// Opens a named segment as an `L` holding `fp`, waiting up to the default time for its
    /// creator to mark it Ready, and validates it.
    pub fn open_named(name: &str, fp: TypeFingerprint) -> Result<Self> {
        Self::open_named_timeout(name, fp, DEFAULT_OPEN_TIMEOUT)
    }

    /// [`Shared::open_named`] with a chosen wait for readiness.
    pub fn open_named_timeout(name: &str, fp: TypeFingerprint, timeout: Duration) -> Result<Self> {
        Self::from_segment(Segment::open_named_timeout(
            name,
            &expect::<L>(fp),
            timeout,
        )?)
    }

    /// Opens the segment a handle names (checking it is still the same segment), and validates it.
    pub fn open_handle(handle: &SegmentHandle, fp: TypeFingerprint) -> Result<Self> {
        Self::from_segment(Segment::open_handle(handle, &expect::<L>(fp))?)
    }

    /// [`Shared::open_handle`] with a chosen wait for readiness.
    pub fn open_handle_timeout(
        handle: &SegmentHandle,
        fp: TypeFingerprint,
        timeout: Duration,
    ) -> Result<Self> {
        Self::from_segment(Segment::open_handle_timeout(
            handle,
            &expect::<L>(fp),
            timeout,
        )?)
    }

    /// Wraps a segment that was already opened and header-validated for `L::KIND` (e.g. by
    /// `Segment::from_fd`), checking its size and running [`SharedLayout::validate`].
    pub fn from_segment(seg: Segment) -> Result<Self> {
        let h = seg.header();
        if h.kind != L::KIND as u32 {
            return Err(ShmError::WrongKind {
                found: h
                    .object_kind()
                    .map_or(format!("unknown kind #{}", h.kind), |k| {
                        k.name().to_string()
                    }),
                expected: L::KIND.name().to_string(),
            });
        }
        let len = seg.payload_len();
        let off = tail_offset::<L>();
        let Some(tail_len) = len.checked_sub(off) else {
            return Err(ShmError::SizeMismatch {
                what: "payload smaller than the object's layout",
                header: len as u64,
                expected: off as u64,
            });
        };
        check_tail::<L>(tail_len)?;
        let base = seg.payload_ptr();
        // SAFETY: `off <= len`, so the tail pointer is inside (or one past) the payload.
        let tail = unsafe { NonNull::new_unchecked(base.as_ptr().add(off)) };
        Self::finish(Backing::Segment(seg), base.cast::<L>(), tail, tail_len)
    }

    /// An `L` and a `tail_len`-byte tail on this process's heap (zeroed, 128-byte aligned), built
    /// by `init` as in [`Shared::create`]. For loom models, proptests and fuzzing of an algorithm
    /// without a segment. `L` is dropped in place when the last handle goes.
    pub fn heap(
        tail_len: usize,
        init: impl FnOnce(NonNull<L>, NonNull<u8>) -> Result<()>,
    ) -> Result<Self> {
        check_tail::<L>(tail_len)?;
        let region = HeapRegion::new::<L>(tail_offset::<L>() + tail_len);
        let base = region.ptr;
        // SAFETY: the region holds `tail_offset + tail_len` bytes.
        let tail = unsafe { NonNull::new_unchecked(base.as_ptr().add(tail_offset::<L>())) };
        let mut region = region;
        init(base.cast::<L>(), tail)?;
        region.initialized = true;
        Self::finish(Backing::Heap(region), base.cast::<L>(), tail, tail_len)
    }

    fn finish(
        backing: Backing,
        ptr: NonNull<L>,
        tail: NonNull<u8>,
        tail_len: usize,
    ) -> Result<Self> {
        // SAFETY: `ptr` is aligned (payloads are 256-aligned, heap regions 128-aligned, and
        // `align_of::<L>() <= 256` by the trait contract; heap layouts use max(align, 128)),
        // points at `size_of::<L>()` bytes kept alive by `backing`, and by the SharedLayout
        // contract any bytes there are a valid `L` that may be shared.
        let geometry = unsafe { ptr.as_ref() }.validate(tail_len)?;
        Ok(Shared {
            inner: Arc::new(Inner {
                backing,
                ptr,
                tail,
                tail_len,
                geometry,
            }),
        })
    }

    /// The shared layout.
    #[inline]
    pub fn get(&self) -> &L {
        // SAFETY: validated at open/create; the memory lives as long as `self.inner.backing`,
        // which `&self` keeps; the SharedLayout contract makes `&L` over shared memory sound.
        unsafe { self.inner.ptr.as_ref() }
    }

    /// The layout's address (for code that must pass a raw pointer, e.g. pthread calls).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<L> {
        self.inner.ptr
    }

    /// The geometry [`SharedLayout::validate`] returned when this handle was made: the values to
    /// index and size with.
    #[inline]
    pub fn geometry(&self) -> &L::Geometry {
        &self.inner.geometry
    }

    /// The tail's first byte. Offsets into it must be checked against [`Shared::tail_len`] (or
    /// computed from the validated geometry); never form a slice reference over it.
    #[inline]
    pub fn tail_ptr(&self) -> NonNull<u8> {
        self.inner.tail
    }

    /// The tail's real length (from the mapping, not from shared memory).
    #[inline]
    pub fn tail_len(&self) -> usize {
        self.inner.tail_len
    }

    /// Copies `out.len()` bytes of the tail starting at `offset` into `out`.
    /// Out of bounds is an error, never an access.
    pub fn tail_read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check_range(offset, out.len())?;
        // SAFETY: `offset + out.len() <= tail_len` (checked), so the source is inside the
        // mapping; `out` is a distinct local buffer. A raw copy, not a reference: other processes
        // may write those bytes meanwhile (the copy may then be torn, never unsound).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.inner.tail.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the tail at `offset`. Out of bounds is an error, never an access.
    pub fn tail_write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: as in `tail_read`, with the roles swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.inner.tail.as_ptr().add(offset),
                data.len(),
            )
        };
        Ok(())
    }

    /// A pointer to `len` tail bytes at `offset`, if they are inside the tail.
    #[inline]
    pub fn tail_range(&self, offset: usize, len: usize) -> Option<NonNull<u8>> {
        self.check_range(offset, len).ok()?;
        // SAFETY: in bounds (checked).
        Some(unsafe { NonNull::new_unchecked(self.inner.tail.as_ptr().add(offset)) })
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.tail_len => Ok(()),
            _ => Err(ShmError::OutOfRange {
                what: "tail offset + length",
                found: (offset as u64).saturating_add(len as u64),
                limit: self.inner.tail_len as u64,
            }),
        }
    }

    /// The segment, if this object lives in one (not on the heap backing).
    pub fn segment(&self) -> Option<&Segment> {
        match &self.inner.backing {
            Backing::Segment(s) => Some(s),
            Backing::Heap(_) => None,
        }
    }

    /// How another process reaches this object (None on the heap backing).
    pub fn handle(&self) -> Option<SegmentHandle> {
        self.segment().map(Segment::handle)
    }

    /// A clone to hold in a guard: while it lives, the memory stays mapped, even if every other
    /// handle is dropped (and forever, if the guard is leaked with `mem::forget`).
    #[inline]
    pub fn keep_alive(&self) -> KeepAlive {
        KeepAlive {
            _inner: Arc::clone(&self.inner) as Arc<dyn Send + Sync>,
        }
    }

    /// Whether two handles view the same object.
    pub fn same_as(&self, other: &Shared<L>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.ptr == other.inner.ptr
    }
}

/// Keeps a shared object's memory mapped (see [`Shared::keep_alive`]).
pub struct KeepAlive {
    _inner: Arc<dyn Send + Sync>,
}

impl KeepAlive {
    /// Keeps whatever `owner` holds alive (an arena object's slot reference, which keeps its
    /// arena segment mapped).
    pub fn new(owner: Arc<dyn Send + Sync>) -> KeepAlive {
        KeepAlive { _inner: owner }
    }
}

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeepAlive")
    }
}

fn check_tail<L: SharedLayout>(tail_len: usize) -> Result<()> {
    if tail_len > L::MAX_TAIL {
        return Err(ShmError::OutOfRange {
            what: "tail length",
            found: tail_len as u64,
            limit: L::MAX_TAIL as u64,
        });
    }
    Ok(())
}

/// A zeroed heap region standing in for a segment's payload.
struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Drops the `L` built in place (loom atomics need their drop), once `initialized`.
    drop_layout: unsafe fn(*mut u8),
    initialized: bool,
}

impl HeapRegion {
    fn new<L>(len: usize) -> HeapRegion {
        let align = std::mem::align_of::<L>().max(TAIL_ALIGN);
        let layout = Layout::from_size_align(len.max(TAIL_ALIGN), align).expect("region layout");
        // SAFETY: layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        /// # Safety
        /// `p` points at a valid, initialized `L` that is never used again.
        unsafe fn drop_as<L>(p: *mut u8) {
            // SAFETY: the caller's contract.
            unsafe { std::ptr::drop_in_place(p.cast::<L>()) }
        }
        HeapRegion {
            ptr,
            layout,
            drop_layout: drop_as::<L>,
            initialized: false,
        }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: `initialized` is set only after `init` built the `L` in place; it is dropped
        // exactly once here, then the allocation made in `new` is freed with its layout.
        unsafe {
            if self.initialized {
                (self.drop_layout)(self.ptr.as_ptr());
            }
            std::alloc::dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    #[repr(C)]
    struct Ring {
        cap: AtomicU64,
        head: AtomicU64,
    }

    // SAFETY: atomics only; any bits are a valid Ring.
    unsafe impl SharedLayout for Ring {
        const KIND: ObjectKind = ObjectKind::Raw;
        const MAX_TAIL: usize = 1 << 20;
        type Geometry = usize;
        fn validate(&self, tail_len: usize) -> Result<usize> {
            let cap = self.cap.load(Ordering::Relaxed);
            if cap as usize != tail_len || !cap.is_power_of_two() {
                return Err(ShmError::OutOfRange {
                    what: "ring capacity",
                    found: cap,
                    limit: tail_len as u64,
                });
            }
            Ok(cap as usize)
        }
    }

    fn fp() -> TypeFingerprint {
        TypeFingerprint::of::<u8>()
    }

    fn make(cap: u64) -> Result<Shared<Ring>> {
        Shared::<Ring>::create(None, fp(), cap as usize, |p, _| {
            // SAFETY: p is valid for one Ring and unseen.
            unsafe {
                p.as_ptr().write(Ring {
                    cap: AtomicU64::new(cap),
                    head: AtomicU64::new(0),
                })
            };
            Ok(())
        })
    }

    #[test]
    fn create_validates_and_open_sees_the_same_geometry() {
        let r = make(64).unwrap();
        assert_eq!(*r.geometry(), 64);
        r.tail_write(60, &[1, 2, 3, 4]).unwrap();
        let o = Shared::<Ring>::open_handle(&r.handle().unwrap(), fp()).unwrap();
        let mut b = [0u8; 4];
        o.tail_read(60, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(o.tail_read(61, &mut b).is_err());
        assert!(o.tail_write(usize::MAX, &b).is_err());
        assert!(o.tail_range(64, 1).is_none());
        assert!(o.tail_range(64, 0).is_some());
    }

    #[test]
    fn corrupted_geometry_is_refused_on_open() {
        let r = make(64).unwrap();
        r.get().cap.store(65, Ordering::Relaxed);
        let e = Shared::<Ring>::open_handle(&r.handle().unwrap(), fp()).unwrap_err();
        assert!(matches!(e, ShmError::OutOfRange { .. }), "{e}");
        // The handle made before keeps its validated copy.
        assert_eq!(*r.geometry(), 64);
    }

    #[test]
    fn bad_init_is_refused_at_create() {
        let e = Shared::<Ring>::create(None, fp(), 64, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, ShmError::OutOfRange { .. }), "{e}");
    }

    #[test]
    fn tail_over_the_local_limit_is_refused() {
        let e = make(1 << 21).unwrap_err();
        assert!(matches!(e, ShmError::OutOfRange { .. }), "{e}");
    }

    #[test]
    fn wrong_type_is_refused() {
        let r = make(64).unwrap();
        let e = Shared::<Ring>::open_handle(&r.handle().unwrap(), TypeFingerprint::of::<u16>())
            .unwrap_err();
        assert!(matches!(e, ShmError::WrongType { .. }), "{e}");
    }

    #[test]
    fn keep_alive_outlives_every_handle() {
        let r = make(64).unwrap();
        let p = r.get() as *const Ring;
        let k = r.keep_alive();
        drop(r);
        // SAFETY: the KeepAlive holds the mapping; p points into it.
        assert_eq!(unsafe { &*p }.cap.load(Ordering::Relaxed), 64);
        drop(k);
    }

    #[test]
    fn a_stale_fd_handle_is_refused_not_aliased() {
        let a = make(64).unwrap();
        let h = a.handle().unwrap();
        drop(a);
        // The fd number is free again: the next segment very likely reuses it.
        let b = make(64).unwrap();
        let hb = b.handle().unwrap();
        assert_ne!(h.id(), hb.id());
        let e = Shared::<Ring>::open_handle(&h, fp()).unwrap_err();
        assert!(matches!(e, ShmError::StaleHandle { .. }), "{e}");
        Shared::<Ring>::open_handle(&hb, fp()).unwrap();
    }

    #[test]
    fn heap_backing_drops_the_layout_once() {
        static DROPS: AtomicU32 = AtomicU32::new(0);
        #[repr(C)]
        struct D(AtomicU32);
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        // SAFETY: one atomic; any bits valid.
        unsafe impl SharedLayout for D {
            const KIND: ObjectKind = ObjectKind::Raw;
            type Geometry = ();
            fn validate(&self, _: usize) -> Result<()> {
                Ok(())
            }
        }
        let h = Shared::<D>::heap(0, |p, _| {
            // SAFETY: p is valid for one D.
            unsafe { p.as_ptr().write(D(AtomicU32::new(5))) };
            Ok(())
        })
        .unwrap();
        let h2 = h.clone();
        drop(h);
        assert_eq!(h2.get().0.load(Ordering::SeqCst), 5);
        drop(h2);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        assert!(Shared::<D>::heap(0, |_, _| Err(ShmError::InitFailed)).is_err());
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }
}
