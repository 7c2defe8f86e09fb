//! Arbitrary bytes as a segment: opening must give a segment or a clear error, never a panic,
//! a hang, or an out-of-bounds read. Runs both the pure validator and the real open path
//! (the bytes written into a memfd, opened with `Segment::from_fd_timeout`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproc_shm::header::{header_from_bytes, validate};
use multiproc_shm::{Expect, ObjectKind, Segment, TypeFingerprint};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

fuzz_target!(|input: (u8, u64, Vec<u8>)| {
    let (kind_sel, size, bytes) = input;
    let kind = ObjectKind::ALL[kind_sel as usize % ObjectKind::ALL.len()];
    let expect = Expect::new(kind, TypeFingerprint::of::<u64>()).min_payload_size(size % 4096);
    if let Ok(h) = header_from_bytes(&bytes) {
        let _ = validate(&h, size, &expect);
        let _ = validate(&h, bytes.len() as u64, &expect);
    }
    // SAFETY: memfd_create with a static name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return;
    }
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    if f.write_all(&bytes).is_err() {
        return;
    }
    if let Ok(seg) = Segment::from_fd_timeout(f.into(), &expect, Duration::ZERO) {
        // A segment that opened must be internally consistent.
        assert_eq!(seg.payload_len() as u64 + 256, bytes.len() as u64);
    }
});
