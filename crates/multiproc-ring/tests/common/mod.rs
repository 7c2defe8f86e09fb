//! The ring tests' own helpers (checksummed records, leftover segments) and the shared test
//! helpers (crates/multiproc-testutil: fork, bounded waits, kill, rng, a shared counters page).
#![allow(dead_code, unused_imports)]

pub use multiproc_testutil::*;

/// FNV-1a of bytes.
pub fn fnv(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Fills `buf` with a checksummed record for sequence number `seq`: [seq u64][fnv u32][body...]
/// of total length `len` (>= 12).
pub fn make_record(buf: &mut [u8], seq: u64) {
    let len = buf.len();
    assert!(len >= 12);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[12..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let h = fnv(&buf[12..]) ^ (seq as u32);
    buf[8..12].copy_from_slice(&h.to_le_bytes());
}

/// Checks a record made by `make_record`; returns its sequence number.
pub fn check_record(buf: &[u8]) -> Option<u64> {
    if buf.len() < 12 {
        return None;
    }
    let seq = u64::from_le_bytes(buf[..8].try_into().ok()?);
    let h = u32::from_le_bytes(buf[8..12].try_into().ok()?);
    (fnv(&buf[12..]) ^ (seq as u32) == h).then_some(seq)
}

/// Whether /dev/shm holds a named multiproc segment.
pub fn shm_leftovers() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("multiproc.ringtest"))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the claim word of MPMC slot `i` (test-only corruption through the segment), as a
/// stalled, dead or hostile claimer would leave it.
pub fn set_slot_word(q: &multiproc_ring::MpmcRing, i: usize, w: u64) {
    let base = q.segment().unwrap().payload_ptr().as_ptr();
    let off =
        multiproc_ring::mpmc::control_size() + i * multiproc_ring::mpmc::stride_for(q.slot_size());
    // SAFETY: test-only: slot i's word is inside our own segment, 8-aligned, no concurrent use.
    unsafe { base.add(off).cast::<u64>().write_volatile(w) };
}

/// A 4-slot ring whose head (position 1) is claimed for writing by a live process (ourselves)
/// that never publishes, while position 2 holds a finished record `b"b"`: a pop must wait for
/// that writer, boundedly.
pub fn ring_behind_a_stalled_head_writer() -> multiproc_ring::MpmcRing {
    let q = multiproc_ring::MpmcRing::new(4, 16).unwrap();
    q.try_push(b"a").unwrap();
    let mut v = Vec::new();
    q.try_pop_into(&mut v).unwrap();
    set_slot_word(&q, 1, (u64::from(std::process::id()) << 32) | 1);
    q.try_push(b"b").unwrap();
    q
}
