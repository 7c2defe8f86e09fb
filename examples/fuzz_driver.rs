//! A small fuzz driver on a Pool (issue 13): the workers run inputs against a target that
//! sometimes crashes (SIGSEGV, abort) or hangs. Each crash comes back as
//! `TaskError::WorkerLost` with its signal and is saved with its input; each hang ends at the
//! pool's per-task time limit (`TaskError::TimeLimit`); the pool replaces the worker and goes
//! on. The workers merge the coverage of each run into a shared `Array<u8>` bitmap (given to
//! them by the pool's initializer). A summary ends the run.
//!
//! Python's Pool cannot do this: a worker killed by a signal hangs `map` forever, and a hung
//! task has no time limit. Run: `cargo run --release --example fuzz_driver`
//! (`FUZZ_DRIVER_KEEP=1` keeps the saved crashes and hangs).

use multiproc::{Array, Pool, TaskError};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Coverage bitmap size (edges).
const MAP: usize = 4096;
const INPUTS: usize = 240;
const ROUND: usize = 40;
const TIME_LIMIT: Duration = Duration::from_millis(200);

static COVERAGE: OnceLock<Array<u8>> = OnceLock::new();

/// The worker's initializer: keeps the shared coverage bitmap.
#[multiproc::task]
fn init_coverage(cov: Array<u8>) {
    let _ = COVERAGE.set(cov);
}

/// The target under test: a little parser with planted bugs. Records the edges it takes.
fn target(input: &[u8], edges: &mut Vec<usize>) {
    let mut h = 0usize;
    for (i, b) in input.iter().enumerate().take(8) {
        h = h.wrapping_mul(31).wrapping_add(*b as usize + i);
        edges.push(h % MAP);
    }
    match input {
        [b'S', b'E', ..] => {
            edges.push(1);
            // A planted crash, as a wild pointer write would end it (the default action: the
            // Rust runtime's own SIGSEGV handler only reports stack overflows).
            // SAFETY: plain syscalls; the second ends this worker.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
        [b'A', b'B', ..] => {
            edges.push(2);
            std::process::abort();
        }
        [b'H', b'A', ..] => {
            edges.push(3);
            // A planted hang (an infinite loop in real targets).
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        _ => edges.push(4),
    }
}

/// Runs one input; returns how many new edges it set in the shared bitmap.
#[multiproc::task]
fn run_input(input: Vec<u8>) -> u32 {
    let mut edges = Vec::new();
    target(&input, &mut edges);
    let Some(cov) = COVERAGE.get() else {
        return 0;
    };
    // A worker killed mid-update leaves at most a few coverage bits half-set: harmless here.
    let Ok((mut g, _owner_died)) = cov.get_lock_recover() else {
        return 0;
    };
    let mut new = 0;
    for e in edges {
        if g[e] == 0 {
            g[e] = 1;
            new += 1;
        }
    }
    new
}

/// xorshift64: a deterministic input generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"SEABHNXYZ";
    let mut v = seed.to_vec();
    for _ in 0..=(rng.next() % 3) {
        let letter = ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize];
        if v.is_empty() || rng.next().is_multiple_of(4) {
            v.push(letter);
        } else {
            let i = (rng.next() % v.len() as u64) as usize;
            v[i] = letter;
        }
    }
    v.truncate(16);
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let t0 = Instant::now();
    let coverage = Array::<u8>::zeroed(MAP)?;
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_coverage, coverage.clone())
        .task_timeout(TIME_LIMIT)
        .build()?;
    let out_dir =
        std::env::temp_dir().join(format!("multiproc-fuzz-driver-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir)?;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Seeds: two plain inputs and near misses of each planted bug.
    let mut corpus: Vec<Vec<u8>> = [&b"XYZ"[..], b"ZZYX", b"SXZ", b"AXZ", b"HXZ"]
        .iter()
        .map(|s| s.to_vec())
        .collect();
    let mut crashes: HashMap<i32, usize> = HashMap::new();
    let (mut hangs, mut ok, mut saved) = (0usize, 0usize, 0usize);
    // Rounds of 40 inputs in flight; inputs that found new edges join the corpus (up to 32).
    // The first round also replays one known input of each bug (a regression corpus).
    for round in 0..INPUTS / ROUND {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(ROUND);
        if round == 0 {
            batch.extend([b"SEGV".to_vec(), b"ABRT".to_vec(), b"HANG".to_vec()]);
        }
        while batch.len() < ROUND {
            let seed = &corpus[(rng.next() % corpus.len() as u64) as usize];
            batch.push(mutate(&mut rng, seed));
        }
        let pending: Vec<_> = batch
            .iter()
            .map(|input| pool.apply_async(run_input, input.clone()))
            .collect::<Result<_, _>>()?;
        for (input, r) in batch.into_iter().zip(pending) {
            let what = match r.get_timeout(Duration::from_secs(60)) {
                Ok(new) => {
                    ok += 1;
                    if new > 0 && corpus.len() < 32 {
                        corpus.push(input);
                    }
                    continue;
                }
                Err(TaskError::WorkerLost { signal, .. }) => {
                    let sig = signal.unwrap_or(0);
                    *crashes.entry(sig).or_default() += 1;
                    format!("crash-sig{sig}")
                }
                Err(TaskError::TimeLimit { .. }) => {
                    hangs += 1;
                    "hang".to_string()
                }
                Err(e) => return Err(e.into()),
            };
            std::fs::write(out_dir.join(format!("{what}-{saved:04}")), &input)?;
            saved += 1;
        }
    }
    let edges = coverage.to_vec()?.iter().filter(|b| **b != 0).count();
    pool.close();
    pool.join()?;

    let mut sigs: Vec<_> = crashes.iter().collect();
    sigs.sort();
    println!(
        "fuzz_driver: {INPUTS} inputs in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    println!("  ok runs:        {ok}");
    for (sig, n) in &sigs {
        println!("  crashes signal {sig}: {n}");
    }
    println!("  hangs (> {TIME_LIMIT:?}): {hangs}");
    println!("  workers replaced: {}", pool.replaced_workers());
    println!(
        "  coverage:       {edges} of {MAP} edges; corpus {}",
        corpus.len()
    );
    println!("  saved {saved} inputs under {}", out_dir.display());
    if std::env::var_os("FUZZ_DRIVER_KEEP").is_none() {
        std::fs::remove_dir_all(&out_dir)?;
    }
    // The planted bugs are found, and every input was answered.
    assert!(crashes.contains_key(&libc::SIGSEGV), "no SIGSEGV found");
    assert!(crashes.contains_key(&libc::SIGABRT), "no abort found");
    assert!(hangs > 0, "no hang found");
    assert_eq!(ok + saved, INPUTS);
    Ok(())
}
