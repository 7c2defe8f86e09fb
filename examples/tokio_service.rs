//! A small tokio service that fans each request out to a `Pool` of worker processes and
//! awaits the results, without blocking a runtime thread: `apply_async(..)?` is a future, the
//! pool's result thread wakes the task. A request is a text; the service splits it into parts,
//! sends each part to a worker (`apply_async`), awaits them all in a `JoinSet`, and merges the
//! answers. An `imap_unordered` stream and a `Process::join_async` show the other two async
//! faces.
//!
//! It stops cleanly on Ctrl-C (`tokio::signal::ctrl_c`) or after `REQUESTS` requests (default
//! 200, so that CI ends it): no new request is taken, the requests in flight finish, the pool
//! is closed and joined.
//!
//! Run: `cargo run --example tokio_service --features tokio` (`REQUESTS=0` runs until Ctrl-C).

use multiproc::{Pool, PoolError, Process};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Counts the words of one part of a request, in a worker process.
#[multiproc::task]
fn count_words(part: String) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for w in part.split_whitespace() {
        *m.entry(w.to_lowercase()).or_insert(0) += 1;
    }
    m
}

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn health_check() -> String {
    format!("worker-side check ran in pid {}", std::process::id())
}

const PARTS: usize = 4;
const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];

/// One request: split, fan out, await every part, merge.
async fn handle(pool: Arc<Pool>, id: u64, text: String) -> Result<(u64, usize), PoolError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut parts = JoinSet::new();
    for chunk in words.chunks(words.len().div_ceil(PARTS).max(1)) {
        // Submitting never blocks; the returned AsyncResult is awaited in its own task.
        let r = pool.apply_async(count_words, chunk.join(" "))?;
        parts.spawn(r.into_future());
    }
    let mut total: BTreeMap<String, u32> = BTreeMap::new();
    while let Some(part) = parts.join_next().await {
        for (w, n) in part.expect("a part's task")? {
            *total.entry(w).or_insert(0) += n;
        }
    }
    let counted: u32 = total.values().sum();
    assert_eq!(
        counted as usize,
        words.len(),
        "request {id}: every word counted"
    );
    Ok((id, total.len()))
}

/// A stand-in for the network: a client task sending `n` requests (0: forever) at a steady pace.
fn clients(n: u64) -> mpsc::Receiver<(u64, String)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut id = 0u64;
        let mut tick = tokio::time::interval(Duration::from_micros(500));
        while n == 0 || id < n {
            tick.tick().await;
            let text: Vec<&str> = (0..40 + id % 17)
                .map(|i| WORDS[((id + i * 7) % WORDS.len() as u64) as usize])
                .collect();
            if tx.send((id, text.join(" "))).await.is_err() {
                break; // the service stopped taking requests
            }
            id += 1;
        }
    });
    rx
}

async fn serve(pool: Arc<Pool>, requests: u64) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut incoming = clients(requests);
    let mut in_flight = JoinSet::new();
    let mut done = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                println!("Ctrl-C: no new requests; finishing {} in flight", in_flight.len());
                break;
            }
            req = incoming.recv() => match req {
                Some((id, text)) => {
                    in_flight.spawn(handle(pool.clone(), id, text));
                }
                None => break, // the clients are done
            },
            Some(r) = in_flight.join_next(), if !in_flight.is_empty() => {
                r??;
                done += 1;
            }
        }
    }
    drop(incoming);
    while let Some(r) = in_flight.join_next().await {
        r??;
        done += 1;
    }
    println!(
        "served {done} requests ({} parts each) in {:.2?}",
        PARTS,
        started.elapsed()
    );

    // A stream of results as they complete (imap_unordered is a futures Stream).
    let mut squares = pool.imap_unordered(square, 0..100u64, 10)?;
    let mut sum = 0;
    while let Some(v) = squares.next_async().await {
        sum += v?;
    }
    assert_eq!(sum, (0..100u64).map(|x| x * x).sum::<u64>());
    println!("imap_unordered stream: sum of squares {sum}");

    // A process of its own, awaited (the pidfd is watched; no thread blocks in waitpid).
    let mut p = Process::spawn(health_check, ())?;
    println!("{}", p.join_async().await?);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First line: the pool's workers are this program, started again.
    multiproc::init();
    let requests = std::env::var("REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let pool = Arc::new(Pool::builder().processes(2).build()?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(serve(pool.clone(), requests));
    drop(rt);
    // Clean shutdown: no new work, the workers finish and exit, nothing is left behind.
    pool.close();
    pool.join()?;
    r?;
    println!("pool closed and joined");
    Ok(())
}
