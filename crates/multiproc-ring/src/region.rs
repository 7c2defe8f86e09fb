//! Where a ring's memory lives: a shared-memory [`Segment`] or a heap allocation (tests, loom,
//! fuzzing). Either way the ring sees one raw region: control block, then data.

use multiproc_shm::Segment;
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

/// A zeroed, 128-byte aligned heap region.
pub(crate) struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
    drop_ctrl: unsafe fn(*mut u8),
}

impl HeapRegion {
    /// Allocates `len` zeroed bytes; `drop_ctrl` runs on the pointer before freeing (drops the
    /// control block built in place).
    pub(crate) fn new(len: usize, drop_ctrl: unsafe fn(*mut u8)) -> HeapRegion {
        let layout = Layout::from_size_align(len.max(128), 128).expect("region layout");
        // SAFETY: layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HeapRegion {
            ptr,
            layout,
            drop_ctrl,
        }
    }

    /// The region's first byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: the control block was built in place at `ptr` by the ring's init and is
        // dropped exactly once here; then the allocation made in `new` is freed with its layout.
        unsafe {
            (self.drop_ctrl)(self.ptr.as_ptr());
            std::alloc::dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

// SAFETY: the region is raw memory reached through atomics by the ring algorithms.
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}

/// Keeps a ring's memory mapped while a handle lives.
#[derive(Clone)]
pub(crate) enum Backing {
    Segment(Segment),
    Heap(Arc<HeapRegion>),
}

impl Backing {
    pub(crate) fn base(&self) -> NonNull<u8> {
        match self {
            Backing::Segment(s) => s.payload_ptr(),
            Backing::Heap(h) => h.ptr,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Backing::Segment(s) => s.payload_len(),
            Backing::Heap(h) => h.layout.size(),
        }
    }

    pub(crate) fn segment(&self) -> Option<&Segment> {
        match self {
            Backing::Segment(s) => Some(s),
            Backing::Heap(_) => None,
        }
    }
}
