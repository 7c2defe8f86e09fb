//! The one place atomics and `UnsafeCell` come from, so loom can swap them in under `cfg(loom)`.
//!
//! Algorithms in this crate take their atomics from here; loom models (`tests/loom_*.rs`, run with
//! `RUSTFLAGS="--cfg loom"`) then explore every interleaving on heap memory.

#[cfg(not(loom))]
pub use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// `std`'s `AtomicU64` under every cfg: for public APIs that hand out an atomic view of shared
/// memory (`RawValue::<u64>::as_atomic`), which loom cannot model and no model uses.
pub use std::sync::atomic::AtomicU64 as StdAtomicU64;
/// Process-local statics (counters and switches that are never in shared memory, so loom
/// need not model them).
pub use std::sync::atomic::{
    AtomicBool as StdAtomicBool, AtomicPtr as StdAtomicPtr, AtomicU32 as StdAtomicU32,
    AtomicUsize as StdAtomicUsize, Ordering as StdOrdering,
};

/// Spin hint (a yield under loom, so models make progress).
#[inline]
pub fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Atomic copies of plain data living in shared memory (`RawValue`, `RawArray`): every access
/// to bytes other processes may write at the same time is an atomic access, so it is a race in
/// the hardware sense only (a torn multi-word value, as in Python), never a data race in Rust's.
///
/// These use `std`'s atomics directly (through `from_ptr` on memory we do not own as Rust
/// objects); loom cannot model such accesses, and no loom model uses them.
pub(crate) mod raw {
    use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

    /// The widest chunk (8, 4, 2 or 1 bytes) that divides `T`'s size and whose alignment `T`'s
    /// alignment guarantees.
    const fn chunk<T>() -> usize {
        let size = std::mem::size_of::<T>();
        let align = std::mem::align_of::<T>();
        let mut c = 8;
        while c > 1 && (!size.is_multiple_of(c) || align < c) {
            c /= 2;
        }
        c
    }

    macro_rules! copy_chunks {
        ($at:ty, $n:expr, $src:expr, $dst:expr, load) => {{
            for i in 0..$n {
                // SAFETY: (caller) `src` is valid and aligned for `T`, whose size is a multiple
                // of the chunk and whose alignment is at least the chunk's, so chunk `i` is a
                // valid, aligned atomic location inside it; only atomics access it concurrently.
                let a = unsafe { <$at>::from_ptr($src.cast::<<$at as Chunk>::Int>().add(i)) };
                let v = a.load(Ordering::Relaxed);
                // SAFETY: `dst` is a local buffer of the same size and alignment.
                unsafe { $dst.cast::<<$at as Chunk>::Int>().add(i).write(v) };
            }
        }};
        ($at:ty, $n:expr, $src:expr, $dst:expr, store) => {{
            for i in 0..$n {
                // SAFETY: `src` is a local value of `T`; chunk `i` is inside it and aligned.
                let v = unsafe { $src.cast::<<$at as Chunk>::Int>().add(i).read() };
                // SAFETY: as in load, with `dst` the shared location.
                let a = unsafe { <$at>::from_ptr($dst.cast::<<$at as Chunk>::Int>().add(i)) };
                a.store(v, Ordering::Relaxed);
            }
        }};
    }

    trait Chunk {
        type Int;
    }
    impl Chunk for AtomicU8 {
        type Int = u8;
    }
    impl Chunk for AtomicU16 {
        type Int = u16;
    }
    impl Chunk for AtomicU32 {
        type Int = u32;
    }
    impl Chunk for AtomicU64 {
        type Int = u64;
    }

    /// Reads a `T` from shared memory with atomic loads (one, if `T` is 1, 2, 4 or 8 bytes and
    /// aligned to its size; else chunk by chunk, so a concurrent writer can tear it), followed by
    /// an Acquire fence: pairs with [`store`]'s Release fence, so a reader that sees a value also
    /// sees what the writer wrote before storing it (a flag published with `store` works).
    ///
    /// # Safety
    /// `src` must be valid for reads of `T`, aligned for `T`, and every concurrent access to
    /// those bytes must be atomic. `T` must be valid for any bit pattern.
    #[inline]
    pub(crate) unsafe fn load<T: Copy>(src: *const T) -> T {
        let mut out = std::mem::MaybeUninit::<T>::uninit();
        let dst = out.as_mut_ptr();
        let src = src.cast_mut();
        let n = std::mem::size_of::<T>() / chunk::<T>();
        match chunk::<T>() {
            8 => copy_chunks!(AtomicU64, n, src, dst, load),
            4 => copy_chunks!(AtomicU32, n, src, dst, load),
            2 => copy_chunks!(AtomicU16, n, src, dst, load),
            _ => copy_chunks!(AtomicU8, std::mem::size_of::<T>(), src, dst, load),
        }
        // Acquire: pairs with the Release fence in `store` (see above).
        fence(Ordering::Acquire);
        // SAFETY: every byte of `out` was written above; the caller guarantees any bit pattern
        // is a valid `T`.
        unsafe { out.assume_init() }
    }

    /// Writes `v` to shared memory with atomic stores after a Release fence (see [`load`]).
    ///
    /// # Safety
    /// As [`load`], for writes.
    #[inline]
    pub(crate) unsafe fn store<T: Copy>(dst: *mut T, v: T) {
        // Release: pairs with the Acquire fence in `load`.
        fence(Ordering::Release);
        let src = (&raw const v).cast_mut();
        let n = std::mem::size_of::<T>() / chunk::<T>();
        match chunk::<T>() {
            8 => copy_chunks!(AtomicU64, n, src, dst, store),
            4 => copy_chunks!(AtomicU32, n, src, dst, store),
            2 => copy_chunks!(AtomicU16, n, src, dst, store),
            _ => copy_chunks!(AtomicU8, std::mem::size_of::<T>(), src, dst, store),
        }
    }

    #[cfg(all(test, not(loom)))]
    mod tests {
        use super::*;

        #[test]
        fn copies_every_size_and_alignment() {
            #[derive(Clone, Copy, Debug, PartialEq)]
            #[repr(C)]
            struct Odd([u8; 3]);
            let mut a = 0u64;
            // SAFETY: local, aligned.
            unsafe { store(&raw mut a, 0x0102_0304_0506_0708u64) };
            // SAFETY: local, aligned, no concurrent access.
            let got = unsafe { load(&raw const a) };
            assert_eq!(got, 0x0102_0304_0506_0708);
            let mut b = [0u32; 3];
            // SAFETY: local, aligned.
            unsafe { store(&raw mut b, [1, 2, 3]) };
            // SAFETY: local, aligned, no concurrent access.
            let got = unsafe { load(&raw const b) };
            assert_eq!(got, [1, 2, 3]);
            let mut c = Odd([0; 3]);
            // SAFETY: local, aligned.
            unsafe { store(&raw mut c, Odd([7, 8, 9])) };
            // SAFETY: local, aligned, no concurrent access.
            let got = unsafe { load(&raw const c) };
            assert_eq!(got, Odd([7, 8, 9]));
            let mut d = [0u16; 5];
            // SAFETY: local, aligned.
            unsafe { store(&raw mut d, [1, 2, 3, 4, 5]) };
            // SAFETY: local, aligned, no concurrent access.
            let got = unsafe { load(&raw const d) };
            assert_eq!(got, [1, 2, 3, 4, 5]);
            assert_eq!(chunk::<u64>(), 8);
            assert_eq!(chunk::<[u32; 3]>(), 4);
            assert_eq!(chunk::<Odd>(), 1);
            assert_eq!(chunk::<f64>(), 8);
        }
    }
}
