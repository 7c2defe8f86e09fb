//! Record copies with the short cases inline. A queue of small messages copies a few bytes per
//! record in and out; a `memcpy` call for each (`__memmove_avx512_unaligned_erms`) was 13% of
//! the `Queue<u64>` loop's profile. Up to 16 bytes this copies with at most two overlapping
//! unaligned loads and stores per width, as `memcpy` implementations do inside, without the call.

use std::ptr;

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
/// As [`std::ptr::copy_nonoverlapping`]: `src` valid for reads and `dst` for writes of `len`
/// bytes, the two ranges not overlapping, and no one else writing either range meanwhile
/// (shared memory: the caller holds the slot's claim).
#[inline(always)]
pub unsafe fn copy_record(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract; every branch stays inside `src[..len]` and `dst[..len]`
    // (the two halves of each width overlap when `len` is below twice the width).
    unsafe {
        if len > 16 {
            ptr::copy_nonoverlapping(src, dst, len);
        } else if len >= 8 {
            let a = ptr::read_unaligned(src.cast::<u64>());
            let b = ptr::read_unaligned(src.add(len - 8).cast::<u64>());
            ptr::write_unaligned(dst.cast::<u64>(), a);
            ptr::write_unaligned(dst.add(len - 8).cast::<u64>(), b);
        } else if len >= 4 {
            let a = ptr::read_unaligned(src.cast::<u32>());
            let b = ptr::read_unaligned(src.add(len - 4).cast::<u32>());
            ptr::write_unaligned(dst.cast::<u32>(), a);
            ptr::write_unaligned(dst.add(len - 4).cast::<u32>(), b);
        } else if len > 0 {
            // 1-3 bytes: first, middle, last (some the same byte).
            let a = *src;
            let m = *src.add(len / 2);
            let z = *src.add(len - 1);
            *dst = a;
            *dst.add(len / 2) = m;
            *dst.add(len - 1) = z;
        }
    }
}

/// Replaces `out`'s contents with `len` bytes from `src` (reusing its allocation).
///
/// # Safety
/// As [`copy_record`] for `src`; `src` must not point into `out`.
#[inline(always)]
pub unsafe fn copy_record_into(src: *const u8, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(len);
    // SAFETY: `out` has room for `len` bytes after `reserve`; the caller vouches for `src`;
    // the bytes are initialised before the length covers them.
    unsafe {
        copy_record(src, out.as_mut_ptr(), len);
        out.set_len(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_up_to_40_copies_exactly_its_bytes() {
        let src: Vec<u8> = (1..=40).collect();
        for len in 0..=40 {
            let mut dst = vec![0u8; 48];
            // SAFETY: both buffers hold at least `len` bytes and do not overlap.
            unsafe { copy_record(src.as_ptr(), dst.as_mut_ptr(), len) };
            assert_eq!(&dst[..len], &src[..len], "len {len}");
            assert!(
                dst[len..].iter().all(|&b| b == 0),
                "len {len}: wrote past the end"
            );
            let mut out = vec![9u8; 3];
            // SAFETY: as above.
            unsafe { copy_record_into(src.as_ptr(), len, &mut out) };
            assert_eq!(out, &src[..len], "len {len}");
        }
    }
}
