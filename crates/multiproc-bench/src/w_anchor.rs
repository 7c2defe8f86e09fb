//! Anchors: what a user would otherwise pick, so the price of going cross-process (or of a
//! robust lock) is a number.
//!
//! - `crossbeam-channel` (bounded, 8192 slots: as the multiproc `Queue::new(8192)` rows) between threads
//!   of one process, on `queue_spsc_small` and `queue_mpmc_2p2c_small`: same message type (u64),
//!   same counts, same sentinel protocol as `w_channel::queue_bench`. The threads run in a forked
//!   child (the bench parent stays single-threaded); for SPSC they are pinned to CPUs 0 and 1.
//! - `raw_sync`'s (non-robust) Mutex over a `shared_memory` segment on `value_lock_incr`: two
//!   processes pinned to CPUs 0 and 1, each doing `n` locked increments of an i64 in the segment.

use crate::harness::{fork_pinned, pin_to_cpu};
use crate::w_ring::{Page, RESULT, Side, run_sides, timed};
use crate::{Record, failed};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Pushes the crossbeam-channel row of a queue workload (`k` producers, `k` consumers).
pub fn crossbeam_row(out: &mut Vec<Record>, w: &str, k: u64, n: u64) {
    match crossbeam(k, n) {
        Ok(v) => out.push(Record::new(w, "crossbeam-threads", v, "msgs/s")),
        Err(e) => failed(w, "crossbeam-threads", &e),
    }
}

/// `k` producer threads and `k` consumer threads move `n` u64 through one bounded channel;
/// msgs/s from the start to the last consumer's sentinel.
pub fn crossbeam(k: u64, n: u64) -> Result<f64, String> {
    let run: Side = (
        0,
        Box::new(move |pg: Page| {
            // The forked child may have been pinned to CPU 0: let its threads go anywhere.
            unpin();
            let (tx, rx) = crossbeam_channel::bounded::<u64>(8192);
            let start = std::sync::Barrier::new(2 * k as usize + 1);
            let got = std::sync::atomic::AtomicU64::new(0);
            let t = std::thread::scope(|s| {
                for i in 0..k {
                    let (tx, start) = (tx.clone(), &start);
                    s.spawn(move || {
                        if k == 1 {
                            pin_to_cpu(0);
                        }
                        let share = n / k + u64::from(i < n % k);
                        start.wait();
                        for x in 0..share {
                            if tx.send(x).is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(u64::MAX);
                    });
                }
                for _ in 0..k {
                    let (rx, start, got) = (rx.clone(), &start, &got);
                    s.spawn(move || {
                        if k == 1 {
                            pin_to_cpu(1);
                        }
                        start.wait();
                        let mut c = 0;
                        while let Ok(x) = rx.recv_timeout(Duration::from_secs(60)) {
                            if x == u64::MAX {
                                break;
                            }
                            c += 1;
                        }
                        got.fetch_add(c, Ordering::Relaxed);
                    });
                }
                start.wait();
                Instant::now()
            });
            let ns = t.elapsed().as_nanos() as u64;
            if got.load(Ordering::Relaxed) != n {
                return 3;
            }
            pg.u64(RESULT).store(ns, Ordering::Release);
            0
        }),
    );
    let (_, pg) = run_sides(vec![run])?;
    Ok(n as f64 / timed(pg))
}

fn unpin() {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; affinity of this process only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..crate::harness::cpus().min(libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Pushes the raw_sync row of `value_lock_incr`.
pub fn raw_sync_row(out: &mut Vec<Record>, n: u64) {
    match raw_sync_incr(n) {
        Ok(v) => out.push(Record::new("value_lock_incr", "raw_sync-shmem", v, "ops/s")),
        Err(e) => failed("value_lock_incr", "raw_sync-shmem", &e),
    }
}

/// Two processes pinned to CPUs 0 and 1 each do `n` increments of an i64 under a `raw_sync`
/// Mutex living in a `shared_memory` segment; total ops/s.
pub fn raw_sync_incr(n: u64) -> Result<f64, String> {
    use raw_sync::locks::{LockImpl, LockInit, Mutex};
    let shmem = shared_memory::ShmemConf::new()
        .size(4096)
        .create()
        .map_err(|e| format!("shared_memory: {e}"))?;
    let base = shmem.as_ptr();
    // SAFETY: the segment is 4096 bytes, page-aligned and zeroed; the mutex is initialised at
    // its start and the counter lives in its own 8 bytes at offset 2048, inside the segment.
    let (lock, _used) =
        unsafe { Mutex::new(base, base.add(2048)) }.map_err(|e| format!("raw_sync: {e}"))?;
    let lock: Box<dyn LockImpl> = lock;
    let mut kids = Vec::new();
    let go = Page::new();
    for cpu in 0..2 {
        let lock = &*lock;
        let lock_ptr: *const dyn LockImpl = lock;
        kids.push(fork_pinned(Some(cpu), move || {
            // SAFETY: the forked child has its own copy of the Box (and the mapping of the
            // segment at the same address); the parent keeps both alive until the child ends.
            let lock = unsafe { &*lock_ptr };
            go.u64(0).fetch_add(1, Ordering::AcqRel);
            while go.u64(1).load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            for _ in 0..n {
                match lock.lock() {
                    Ok(g) => {
                        // SAFETY: the guard's pointer is the i64 at offset 2048, only touched under the lock.
                        unsafe { *(*g).cast::<i64>() += 1 };
                    }
                    Err(_) => return 3,
                }
            }
            0
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while go.u64(0).load(Ordering::Acquire) < 2 {
        if Instant::now() > deadline {
            return Err("children did not start".into());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let t = Instant::now();
    go.u64(1).store(1, Ordering::Release);
    crate::harness::wait_all(&mut kids, Duration::from_secs(300))?;
    let secs = t.elapsed().as_secs_f64();
    go.free();
    // SAFETY: every child has exited; the counter is read once, by this process only.
    let total = unsafe { base.add(2048).cast::<i64>().read_volatile() };
    if total != 2 * n as i64 {
        return Err(format!("lost increments: {total} != {}", 2 * n));
    }
    drop(lock);
    drop(shmem);
    Ok(2.0 * n as f64 / secs)
}
