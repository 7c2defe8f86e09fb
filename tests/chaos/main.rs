//! Chaos soak: rounds of forked producers, consumers, lock users and dict updaters, SIGKILLed at
//! random moments, with every invariant checked after each round.
//!
//! Each round builds fresh objects (named ones under `/dev/shm/multiproc.chaos-PID-ROUND-*`, so the
//! residue check can find them) and forks 16 children:
//!
//! | role | object | what it does |
//! |---|---|---|
//! | 2 producers | named `Queue<Vec<u8>>` (maxsize 16, 256-byte slots) | checksummed messages, some large (side files); confirm each `put` on the board |
//! | 2 consumers | the same queue | verify the checksum, set the message's bit in a shared bitmap (a bit already set = duplicate) |
//! | pipe writer / reader | simplex `Pipe<Vec<u8>>`, 16 KiB ring | checksummed messages, some chunked (20 KB); the reader checks the sequence has no gap |
//! | 3 value users | named `Value<[u64; 8]>` | under `get_lock`: total += 1, spin, own slot += 1; on `OwnerDied` repair a half update |
//! | 2 lock users | named `Lock` (`lock()` guards) | a pair `a`, `b` and an "inside" word on the board: mutual exclusion and the pair checked |
//! | 3 semaphore users | named `Semaphore(2)` (guards) | at most 2 live holders at once (dead holders are excluded by a `/proc` check) |
//! | 2 dict updaters | named `SharedDict<u64, u64>` | keys 0 and 1 incremented under one guard; `OwnerDied` repair of a half update |
//!
//! The parent kills 2 to 5 random children at random moments of a 60-250 ms round, then sets the
//! stop word, waits for the survivors (each with a deadline: a hang fails the test), drains the
//! queue and checks: no corrupted message, no duplicate, no gap in the pipe, lost queue messages
//! at most the number of kills, every counter consistent and within [confirmed, confirmed + kills],
//! semaphore units all back, no `/dev/shm` residue, no zombie.
//!
//! A second test soaks a `Pool` of 2 workers (spawned: the test binary is a worker through
//! `init_before_main!`) running a registered checksum task: batches of `apply_async` calls while
//! workers are SIGKILLed at random moments; every result is the right checksum or `WorkerLost`
//! (at most one per kill), none waits past its deadline, the pool works after each batch, and
//! after `close` + `join` no worker seen is left alive or a zombie.
//!
//! Budget: `MULTIPROC_CHAOS_SECS` (default 8) seconds of rounds, and `MULTIPROC_CHAOS_POOL_SECS`
//! (default 3, run alongside) for the pool soak; `MULTIPROC_CHAOS_SEED` replays a run (the seed is
//! printed). Run: `cargo test --release --test chaos -- --nocapture`.
//!
//! Layout: `board` (the shared board, the round's shape, deadlines), `messages` (checksummed
//! messages; the queue and pipe children), `locks` (the Value, Lock, Semaphore and SharedDict
//! children), `round` (one round of the soak, step by step), `checks` (the invariants checked
//! after a round), `procfs` (`/proc` and `/dev/shm` look-ups), `pool` (the pool soak), `config`
//! (the random generator, budget and seed).

#[path = "../common/mod.rs"]
mod common;

mod board;
mod checks;
mod config;
mod locks;
mod messages;
mod pool;
mod procfs;
mod round;

use config::{Rng, secs_from_env, seed_from_env};
use multiproc::Pool;
use round::{Totals, round};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[test]
fn chaos_soak_random_sigkills_break_no_invariant() {
    let secs = secs_from_env("MULTIPROC_CHAOS_SECS", 8.0);
    let seed = seed_from_env();
    eprintln!("chaos: budget {secs} s, MULTIPROC_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let mut t = Totals::default();
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while t.rounds == 0 || start.elapsed() < budget {
        round(t.rounds, &mut rng, &mut t);
    }
    eprintln!(
        "chaos: {} rounds in {:.1?}, {} kills; messages: {} queue (+{} lost to kills), {} pipe; \
         increments: {} value, {} lock, {} dict; recovered: {} OwnerDied, {} dict journal \
         replays, {} semaphore units (max {} holders at once); robust-mutex lost wake-ups \
         rescued by a retry: {}",
        t.rounds,
        start.elapsed(),
        t.kills,
        t.queue_msgs,
        t.queue_lost,
        t.pipe_msgs,
        t.value_incs,
        t.lock_incs,
        t.dict_incs,
        t.owner_died,
        t.dict_recoveries,
        t.sem_reclaimed,
        t.sem_max_holders,
        t.lost_wakeups,
    );
    assert!(t.kills > 0);
}

#[test]
fn chaos_pool_workers_sigkilled_every_task_returns_or_is_lost() {
    let secs = secs_from_env("MULTIPROC_CHAOS_POOL_SECS", 3.0);
    let seed = seed_from_env() ^ 0x9e37_79b9_7f4a_7c15;
    eprintln!("chaos pool: budget {secs} s, seed {seed}");
    let mut rng = Rng(seed | 1);
    let pool = Pool::builder().processes(2).build().expect("pool");
    let mut seen: HashSet<u32> = pool.worker_pids().into_iter().collect();
    let mut c = pool::Counts::default();
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while c.batches == 0 || start.elapsed() < budget {
        pool::batch(&pool, &mut rng, &mut seen, &mut c);
    }
    let replaced = pool::close_and_check_no_worker_left(pool, &seen);
    let pool::Counts {
        batches,
        tasks,
        ok,
        lost,
        kills,
    } = c;
    eprintln!(
        "chaos pool: {batches} batches in {:.1?}, {kills} worker kills, {replaced} workers \
         replaced; tasks: {tasks} submitted, {ok} right, {lost} WorkerLost, 0 hung; {} workers \
         seen, none left",
        start.elapsed(),
        seen.len()
    );
    assert!(kills > 0 && ok > 0);
}
