//! The pool soak: a `Pool` of 2 spawned workers running a registered checksum task, in batches
//! while workers are SIGKILLed at random moments.

use crate::config::Rng;
use crate::procfs::our_children;
use multiproc::{Pool, TaskError};
use std::collections::HashSet;
use std::time::Duration;

multiproc::init_before_main!();

/// Deadline of one pool result: a result not ready by then is a hang.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The checksum of `len` pseudo-random bytes from `seed` (computed by the workers and, to check
/// them, by the parent).
fn pool_checksum(seed: u64, len: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..len {
        h = (h ^ (rng.next() & 0xff)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[multiproc::task]
fn chaos_checksum(seed: u64, len: u64) -> u64 {
    pool_checksum(seed, len)
}

/// What the pool soak counted so far.
#[derive(Default)]
pub struct Counts {
    pub batches: u64,
    pub tasks: u64,
    pub ok: u64,
    pub lost: u64,
    pub kills: u64,
}

/// One batch: submit it, kill 1-2 workers while it runs, check every result (right checksum or
/// `WorkerLost`, at most one per kill), then check the pool still works. Workers met go in `seen`.
pub fn batch(pool: &Pool, rng: &mut Rng, seen: &mut HashSet<u32>, c: &mut Counts) {
    let batches = c.batches;
    // A batch of tasks of 0-40 k bytes (tens of microseconds to a few milliseconds each).
    let n = 8 + rng.below(17);
    let batch: Vec<_> = (0..n)
        .map(|_| {
            let (s, len) = (rng.next(), rng.below(40_000));
            let r = pool
                .apply_async(chaos_checksum, (s, len))
                .expect("apply_async");
            (s, len, r)
        })
        .collect();
    c.tasks += n;
    // Kill 1-2 workers at random moments while the batch runs.
    for _ in 0..1 + rng.below(2) {
        std::thread::sleep(Duration::from_micros(rng.below(15_000)));
        let pids = pool.worker_pids();
        seen.extend(&pids);
        if !pids.is_empty() {
            let victim = pids[rng.below(pids.len() as u64) as usize];
            // SAFETY: plain syscall on a live worker of our own pool.
            unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
            c.kills += 1;
        }
    }
    let mut batch_lost = 0;
    for (s, len, r) in batch {
        match r.get_timeout(POOL_WAIT) {
            Ok(v) => {
                assert_eq!(v, pool_checksum(s, len), "batch {batches}: wrong checksum");
                c.ok += 1;
            }
            Err(TaskError::WorkerLost { signal, .. }) => {
                assert_eq!(
                    signal,
                    Some(libc::SIGKILL),
                    "batch {batches}: lost to another death"
                );
                batch_lost += 1;
            }
            Err(e) => panic!("batch {batches}: task {s}/{len}: {e} (a hang if Timeout)"),
        }
    }
    c.lost += batch_lost;
    let (lost, kills) = (c.lost, c.kills);
    assert!(
        lost <= kills,
        "batch {batches}: {lost} tasks lost, only {kills} kills"
    );
    // The pool still works after the kills (replacement workers).
    let r = pool
        .apply_async(chaos_checksum, (batches, 1000))
        .expect("apply_async after kills");
    assert_eq!(
        r.get_timeout(POOL_WAIT).expect("pool works after kills"),
        pool_checksum(batches, 1000)
    );
    seen.extend(pool.worker_pids());
    c.batches += 1;
}

/// Closes and joins the pool; then no worker `seen` is alive or a zombie. Returns how many
/// workers the pool replaced.
pub fn close_and_check_no_worker_left(pool: Pool, seen: &HashSet<u32>) -> u64 {
    let replaced = pool.replaced_workers();
    pool.close();
    pool.join_timeout(POOL_WAIT).expect("pool join");
    drop(pool);
    let (live, zombies) = our_children();
    for p in seen {
        assert!(!live.contains(p), "pool worker {p} still alive after join");
        assert!(!zombies.contains(p), "pool worker {p} is a zombie");
    }
    replaced
}
