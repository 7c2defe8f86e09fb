//! Helpers shared by the ring's integration tests: fork, wait with a deadline, kill, rng.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Forks; the child runs `f` and `_exit`s with its return code (101 on panic).
pub fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child only runs `f` (which touches pre-built
    // shared objects) and then `_exit`s without unwinding into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid` at most `timeout`; kills it (SIGKILL) and reaps it if it overstays.
/// Returns the raw wait status, or None on timeout.
pub fn wait_child(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 {
            return None;
        }
        if Instant::now() >= deadline {
            kill_and_reap(pid);
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGKILLs and reaps a child.
pub fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Exit code of a normally exited child.
pub fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// A small xorshift generator (tests only).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

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
