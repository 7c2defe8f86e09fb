//! Remote workloads (issue 17), multiproc-redis vs Python's `BaseManager` serving a `queue.Queue`
//! over TCP (the standard library's remote multiprocessing), both on loopback with 2 worker
//! processes, and the local multiproc Pool in the same run:
//! * `remote_apply_async`: n `apply_async(square, i)` on a `RemotePool` served by 2 `serve`
//!   processes, then every result got; tasks/s.
//! * `remote_queue_stream`: n 64-byte messages put on a `RemoteQueue`, got by 2 consumer
//!   processes; msgs/s.
//!
//! The bench starts its own redis-server (loopback, free port, no persistence); without one on
//! PATH these workloads are skipped with a message.

use crate::harness::{Child, fork_pinned, wait_all};
use crate::{Config, Record, python};
use multiproc::redis::{RemotePool, RemoteQueue, ServeOptions};
use multiproc_testutil::redis::RedisServer;
use std::time::{Duration, Instant};

const WORKERS: usize = 2;

/// The trivial task (the same as the local pool workloads').
#[multiproc::task]
fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `n` apply_async then every get on a RemotePool served by WORKERS processes; tasks/s.
fn remote_apply_async(url: &str, n: u64) -> Result<f64, String> {
    // Workers are forked before this process starts any thread (the pool's reader).
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| {
            let url = url.to_string();
            fork_pinned(None, move || {
                let opts = ServeOptions {
                    idle_exit: Some(Duration::from_secs(60)),
                    ..ServeOptions::default()
                };
                match multiproc::redis::serve(&url, "bench", opts) {
                    Ok(_) => 0,
                    Err(_) => 1,
                }
            })
        })
        .collect();
    let pool = RemotePool::connect(url, "bench").map_err(e2s)?;
    // Warm-up: every worker connected and serving.
    pool.map(square, 0..(WORKERS as u64 * 100)).map_err(e2s)?;
    let t = Instant::now();
    let pending: Vec<_> = (0..n)
        .map(|i| pool.apply_async(square, i))
        .collect::<Result<_, _>>()
        .map_err(e2s)?;
    let mut total = 0u64;
    for r in pending {
        total = total.wrapping_add(r.get_timeout(Duration::from_secs(120)).map_err(e2s)?);
    }
    let s = t.elapsed().as_secs_f64();
    let want = (0..n).fold(0u64, |a, i| a.wrapping_add(i.wrapping_mul(i)));
    drop(pool);
    for w in &mut workers {
        w.kill();
    }
    if total != want {
        return Err("wrong results".into());
    }
    Ok(n as f64 / s)
}

/// `n` 64-byte messages through a RemoteQueue to WORKERS consumer processes; msgs/s. Default:
/// one `put` per message (pipelined by the handle's writer thread) and the default automatic
/// read-ahead; `batched`: the producer uses `put_many` and the consumers read ahead 32 entries
/// (`Options::prefetch`).
fn remote_queue_stream(url: &str, n: u64, batched: bool) -> Result<f64, String> {
    let prefetch = if batched { 32 } else { 0 };
    let mut consumers: Vec<Child> = (0..WORKERS)
        .map(|_| {
            let url = url.to_string();
            fork_pinned(None, move || {
                let opts = multiproc::redis::Options {
                    prefetch,
                    ..Default::default()
                };
                let Ok(q) = RemoteQueue::<Vec<u8>>::connect_with(&url, "bench-stream", opts) else {
                    return 1;
                };
                loop {
                    match q.get_timeout(Duration::from_secs(120)) {
                        Ok(v) if v.is_empty() => return 0,
                        Ok(_) => {}
                        Err(_) => return 2,
                    }
                }
            })
        })
        .collect();
    let q = RemoteQueue::<Vec<u8>>::connect(url, "bench-stream").map_err(e2s)?;
    let msg = vec![0x5au8; 64];
    let t = Instant::now();
    if batched {
        q.put_many(std::iter::repeat_n(&msg, n as usize))
            .map_err(e2s)?;
    } else {
        for _ in 0..n {
            q.put(&msg).map_err(e2s)?;
        }
    }
    for _ in 0..WORKERS {
        q.put(&Vec::new()).map_err(e2s)?;
    }
    q.flush().map_err(e2s)?;
    wait_all(&mut consumers, Duration::from_secs(300))?;
    let s = t.elapsed().as_secs_f64();
    let left = q.qsize().map_err(e2s)?;
    q.destroy().map_err(e2s)?;
    if left != 0 {
        return Err(format!("{left} messages left"));
    }
    Ok(n as f64 / s)
}

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    let wants_apply = cfg.wants("remote_apply_async");
    let wants_stream = cfg.wants("remote_queue_stream");
    if !wants_apply && !wants_stream {
        return;
    }
    let redis = match RedisServer::try_start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("remote_*: skipped ({e})");
            return;
        }
    };
    let procs = WORKERS.to_string();
    let py = ["--processes", procs.as_str()];
    if wants_apply {
        let n = if cfg.quick { 4_000 } else { 20_000 };
        match remote_apply_async(&redis.url(), n) {
            Ok(v) => out.push(Record::new(
                "remote_apply_async",
                "multiproc-redis",
                v,
                "tasks/s",
            )),
            Err(e) => eprintln!("remote_apply_async multiproc-redis: {e}"),
        }
        match crate::w_pool::apply_async_rate(n) {
            Ok(v) => out.push(Record::new(
                "remote_apply_async",
                "multiproc-pool (local)",
                v,
                "tasks/s",
            )),
            Err(e) => eprintln!("remote_apply_async local pool: {e}"),
        }
        out.extend(python::run("remote_apply_async", cfg.quick, &py));
    }
    if wants_stream {
        let n = if cfg.quick { 10_000 } else { 50_000 };
        for (batched, system) in [
            (false, "multiproc-redis"),
            (true, "multiproc-redis (put_many, prefetch 32)"),
        ] {
            match remote_queue_stream(&redis.url(), n, batched) {
                Ok(v) => out.push(Record::new("remote_queue_stream", system, v, "msgs/s")),
                Err(e) => eprintln!("remote_queue_stream {system}: {e}"),
            }
        }
        out.extend(python::run("remote_queue_stream", cfg.quick, &py));
    }
}
