//! Ring workloads: round trips and streams between two processes pinned to CPUs 0 and 1, and an
//! MPMC 2-producer 2-consumer run.
//!
//! Systems: `floor` (the physical limit: one cache line ping-ponged with pure spinning; for the
//! blocking round trip, a bare futex wake/wait hand-off; for big-record streams, single-process
//! memcpy bandwidth), `multiproc` (the rings, batch/zero-copy APIs), `multiproc-1by1` (one
//! copying push/pop per message), `iceoryx2` (its publish-subscribe over shared memory, see
//! `w_iceoryx2`), and `uds-postcard` (Unix stream socket, u32 length prefix +
//! postcard payload: the socket-and-serialize transport Python's multiprocessing uses, in Rust).

use crate::harness::{Child, fork_pinned};
use crate::{Config, Record};
use multiproc::sync::futex;
use multiproc::{MpmcRing, PopError, SpscRing, WaitStrategy};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// A MAP_SHARED anonymous page of counters, inherited by forked children.
#[derive(Clone, Copy)]
pub(crate) struct Page(*mut u8);

impl Page {
    fn new() -> Page {
        // SAFETY: anonymous shared mapping of 4 KiB; failure checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Page(p.cast())
    }

    /// The u64 at line `i` (each counter on its own 128-byte line; i < 32).
    pub(crate) fn u64(&self, i: usize) -> &AtomicU64 {
        assert!(i < 32);
        // SAFETY: inside the zeroed page, 8-aligned; AtomicU64 has u64's layout.
        unsafe { &*self.0.add(i * 128).cast::<AtomicU64>() }
    }

    fn u32(&self, i: usize) -> &AtomicU32 {
        assert!(i < 32);
        // SAFETY: as above (4-aligned u32 at the start of line i).
        unsafe { &*self.0.add(i * 128).cast::<AtomicU32>() }
    }

    fn free(self) {
        // SAFETY: unmaps the page mapped in `new`; callers drop every reference first.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

const READY: usize = 0;
const GO: usize = 1;
pub(crate) const RESULT: usize = 2;
pub(crate) const EXTRA: usize = 3;

fn ready_and_wait(pg: Page) {
    pg.u64(READY).fetch_add(1, Ordering::AcqRel);
    while pg.u64(GO).load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
}

/// Forks `sides` (each pinned to its CPU), starts them together, waits for all; returns the
/// seconds from GO to the end, and the page (for results the children left).
/// One side of a run: the CPU it is pinned to and what it does.
pub(crate) type Side = (usize, Box<dyn FnOnce(Page) -> i32>);

pub(crate) fn run_sides(sides: Vec<Side>) -> Result<(f64, Page), String> {
    let pg = Page::new();
    let n = sides.len() as u64;
    let mut kids: Vec<_> = sides
        .into_iter()
        .map(|(cpu, f)| {
            fork_pinned(Some(cpu), move || {
                ready_and_wait(pg);
                let code = f(pg);
                pg.u32(DONE).fetch_add(1, Ordering::AcqRel);
                futex::wake(pg.u32(DONE), 1);
                code
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.u64(READY).load(Ordering::Acquire) < n {
        if Instant::now() > deadline {
            return Err("children did not start".into());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let t = Instant::now();
    pg.u64(GO).store(1, Ordering::Release);
    wait_quietly(&mut kids, pg, n)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((secs, pg))
}

const DONE: usize = 4;

/// Waits for the children without disturbing them: on a 2-CPU machine a parent polling
/// `waitpid` every 200 us preempts a spinning side thousands of times a second (a 10x error on
/// a round trip), so the parent sleeps on a futex the children bump as they finish.
fn wait_quietly(kids: &mut [Child], pg: Page, n: u64) -> Result<(), String> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let done = pg.u32(DONE).load(Ordering::Acquire);
        if u64::from(done) >= n {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        futex::wait(pg.u32(DONE), done, Some(Duration::from_millis(100)));
    }
    for k in kids.iter_mut() {
        match k.wait(Duration::from_secs(10))? {
            0 => {}
            code => return Err(format!("child exited with code {code}")),
        }
    }
    Ok(())
}

/// Elapsed ns the timing child stored, as seconds.
pub(crate) fn timed(pg: Page) -> f64 {
    let ns = pg.u64(RESULT).load(Ordering::Acquire);
    pg.free();
    ns as f64 / 1e9
}

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    let q = cfg.quick;
    let mut push = |w: &str, sys: &str, r: Result<f64, String>, unit: &str| match r {
        Ok(v) => out.push(Record::new(w, sys, v, unit)),
        Err(e) => eprintln!("{w} {sys}: {e}"),
    };
    if cfg.wants("rtt_8B_spin") {
        let n = if q { 200_000 } else { 1_000_000 };
        push(
            "rtt_8B_spin",
            "multiproc",
            rtt_ring(n, WaitStrategy::Spin),
            "ns",
        );
        push("rtt_8B_spin", "floor", rtt_floor_spin(n), "ns");
        push("rtt_8B_spin", "iceoryx2", crate::w_iceoryx2::rtt(n), "ns");
    }
    if cfg.wants("rtt_8B_blocking") {
        let n = if q { 20_000 } else { 100_000 };
        push(
            "rtt_8B_blocking",
            "multiproc",
            rtt_ring(n, WaitStrategy::Park),
            "ns",
        );
        push("rtt_8B_blocking", "floor", rtt_floor_futex(n), "ns");
        push("rtt_8B_blocking", "uds-postcard", rtt_uds(n), "ns");
    }
    for (w, size, n_full) in [
        ("stream_8B", 8usize, 50_000_000u64),
        ("stream_64B", 64, 20_000_000),
        ("stream_4KiB", 4096, 1_000_000),
        ("stream_64KiB", 65536, 100_000),
    ] {
        if !cfg.wants(w) {
            continue;
        }
        let n = if q { n_full / 10 } else { n_full };
        let mut both = |sys: &str, r: Result<f64, String>| {
            let r2 = r.clone();
            push(w, sys, r.map(|s| n as f64 / s), "msgs/s");
            push(w, sys, r2.map(|s| (n * size as u64) as f64 / s), "B/s");
        };
        both("multiproc", stream_ring(size, n, true));
        if size <= 64 {
            both("multiproc-1by1", stream_ring(size, n, false));
        } else {
            both("floor", stream_memcpy(size, n));
        }
        // iceoryx2 streams small samples far slower than the ring: cap its count so the run stays short.
        let n_ice = (if size <= 64 { n / 5 } else { n }).min(1_000_000);
        let r = crate::w_iceoryx2::stream(size, n_ice);
        push(w, "iceoryx2", r.clone().map(|s| n_ice as f64 / s), "msgs/s");
        push(
            w,
            "iceoryx2",
            r.map(|s| (n_ice * size as u64) as f64 / s),
            "B/s",
        );
        let n_uds = if size <= 64 { n / 5 } else { n };
        let r = stream_uds(size, n_uds);
        push(
            w,
            "uds-postcard",
            r.clone().map(|s| n_uds as f64 / s),
            "msgs/s",
        );
        push(
            w,
            "uds-postcard",
            r.map(|s| (n_uds * size as u64) as f64 / s),
            "B/s",
        );
    }
    if cfg.wants("mpmc_2p2c_8B") {
        let n = if q { 2_000_000 } else { 10_000_000 };
        push(
            "mpmc_2p2c_8B",
            "multiproc",
            mpmc_2p2c(n, WaitStrategy::SpinPark).map(|s| n as f64 / s),
            "msgs/s",
        );
        push(
            "mpmc_2p2c_8B",
            "multiproc-spinyield",
            mpmc_2p2c(n, WaitStrategy::SpinYield).map(|s| n as f64 / s),
            "msgs/s",
        );
    }
}

fn e<T: std::fmt::Display>(x: T) -> String {
    x.to_string()
}

/// Round trip of an 8-byte record over two SPSC rings (ns per round trip).
pub fn rtt_ring(n: u64, strategy: WaitStrategy) -> Result<f64, String> {
    let ab = SpscRing::create(4096).map_err(e)?;
    let ba = SpscRing::create(4096).map_err(e)?;
    let (ab2, ba2) = (ab.clone(), ba.clone());
    let ping = Box::new(move |pg: Page| {
        let (Ok(mut tx), Ok(mut rx)) = (ab.producer(), ba.consumer()) else {
            return 2;
        };
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let t = Instant::now();
        for i in 0..n {
            if tx.push(&i.to_le_bytes()).is_err() {
                return 3;
            }
            match rx.peek() {
                Ok(g) if g.as_slice() == i.to_le_bytes() => g.release(),
                _ => return 4,
            }
        }
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let pong = Box::new(move |_pg: Page| {
        let (Ok(mut tx), Ok(mut rx)) = (ba2.producer(), ab2.consumer()) else {
            return 2;
        };
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let mut v = Vec::with_capacity(8);
        for _ in 0..n {
            if rx.pop_into(&mut v).is_err() || tx.push(&v).is_err() {
                return 3;
            }
        }
        0
    });
    let (_, pg) = run_sides(vec![(0, ping), (1, pong)])?;
    Ok(timed(pg) * 1e9 / n as f64)
}

/// The floor: one cache line, two processes, pure spin (ns per round trip).
pub fn rtt_floor_spin(n: u64) -> Result<f64, String> {
    let ping = Box::new(move |pg: Page| {
        let w = pg.u64(EXTRA);
        let t = Instant::now();
        for i in 0..n {
            w.store(2 * i + 1, Ordering::Release);
            while w.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
        }
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let pong = Box::new(move |pg: Page| {
        let w = pg.u64(EXTRA);
        for i in 0..n {
            while w.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            w.store(2 * i + 2, Ordering::Release);
        }
        0
    });
    let (_, pg) = run_sides(vec![(0, ping), (1, pong)])?;
    Ok(timed(pg) * 1e9 / n as f64)
}

/// The blocking floor: a bare futex hand-off each way (ns per round trip).
pub fn rtt_floor_futex(n: u64) -> Result<f64, String> {
    fn wait_for(w: &AtomicU32, want: u32) {
        loop {
            let cur = w.load(Ordering::Acquire);
            if cur == want {
                return;
            }
            futex::wait(w, cur, Some(Duration::from_secs(1)));
        }
    }
    let ping = Box::new(move |pg: Page| {
        let w = pg.u32(EXTRA);
        let t = Instant::now();
        for i in 0..n as u32 {
            w.store(2 * i + 1, Ordering::Release);
            futex::wake(w, 1);
            wait_for(w, 2 * i + 2);
        }
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let pong = Box::new(move |pg: Page| {
        let w = pg.u32(EXTRA);
        for i in 0..n as u32 {
            wait_for(w, 2 * i + 1);
            w.store(2 * i + 2, Ordering::Release);
            futex::wake(w, 1);
        }
        0
    });
    let (_, pg) = run_sides(vec![(0, ping), (1, pong)])?;
    Ok(timed(pg) * 1e9 / n as f64)
}

fn write_frame(w: &mut impl Write, payload: &[u8], scratch: &mut Vec<u8>) -> std::io::Result<()> {
    scratch.clear();
    scratch.extend_from_slice(&[0; 4]);
    let body = postcard::to_extend(payload, std::mem::take(scratch))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    *scratch = body;
    let len = (scratch.len() - 4) as u32;
    scratch[..4].copy_from_slice(&len.to_le_bytes());
    w.write_all(scratch)
}

/// Reads one frame; returns the decoded payload's length and first byte.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<(usize, u8)> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h) as usize;
    buf.resize(len, 0);
    r.read_exact(buf)?;
    let p: &[u8] = postcard::from_bytes(buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((p.len(), p.first().copied().unwrap_or(0)))
}

/// Unix socket + postcard framing round trip (ns).
pub fn rtt_uds(n: u64) -> Result<f64, String> {
    let (a, b) = UnixStream::pair().map_err(e)?;
    let ping = Box::new(move |pg: Page| {
        let mut a = a;
        let (mut s, mut buf) = (Vec::new(), Vec::new());
        let t = Instant::now();
        for i in 0..n {
            if write_frame(&mut a, &i.to_le_bytes(), &mut s).is_err()
                || read_frame(&mut a, &mut buf).is_err()
            {
                return 3;
            }
        }
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let pong = Box::new(move |_pg: Page| {
        let mut b = b;
        let (mut s, mut buf) = (Vec::new(), Vec::new());
        for _ in 0..n {
            if read_frame(&mut b, &mut buf).is_err() {
                return 3;
            }
            let Ok(p) = postcard::from_bytes::<&[u8]>(&buf) else {
                return 4;
            };
            let p = p.to_vec();
            if write_frame(&mut b, &p, &mut s).is_err() {
                return 3;
            }
        }
        0
    });
    let (_, pg) = run_sides(vec![(0, ping), (1, pong)])?;
    Ok(timed(pg) * 1e9 / n as f64)
}

/// Streams `n` records of `size` bytes from CPU 0 to CPU 1; returns seconds. `batch`: batch
/// push/pop for small records, reserve/commit + peek/release (zero-copy) for large ones; else
/// one copying push/pop per record.
pub fn stream_ring(size: usize, n: u64, batch: bool) -> Result<f64, String> {
    let cap = if size <= 64 { 1 << 16 } else { 1 << 21 };
    let ring = SpscRing::create(cap).map_err(e)?;
    let ring2 = ring.clone();
    let producer = Box::new(move |_pg: Page| {
        let Ok(mut tx) = ring.producer() else {
            return 2;
        };
        let src = vec![0x5au8; size];
        if batch && size <= 64 {
            let recs: Vec<&[u8]> = (0..64).map(|_| &src[..]).collect();
            let mut left = n;
            while left > 0 {
                let k = left.min(64) as usize;
                if tx.push_batch(&recs[..k]).is_err() {
                    return 3;
                }
                left -= k as u64;
            }
        } else if batch {
            for _ in 0..n {
                match tx.reserve(size) {
                    Ok(mut g) => {
                        g.as_mut_slice().copy_from_slice(&src);
                        g.commit();
                    }
                    Err(_) => return 3,
                }
            }
        } else {
            for _ in 0..n {
                if tx.push(&src).is_err() {
                    return 3;
                }
            }
        }
        0
    });
    let consumer = Box::new(move |pg: Page| {
        let Ok(mut rx) = ring2.consumer() else {
            return 2;
        };
        let mut got = 0u64;
        let mut acc = 0u64;
        let t = Instant::now();
        if batch && size <= 64 {
            while got < n {
                match rx.pop_batch(usize::MAX, |r| acc = acc.wrapping_add(u64::from(r[0]))) {
                    Ok(k) => got += k as u64,
                    Err(_) => return 3,
                }
            }
        } else if batch {
            while got < n {
                match rx.peek() {
                    Ok(g) => {
                        acc = acc.wrapping_add(fold(g.as_slice()));
                        g.release();
                        got += 1;
                    }
                    Err(_) => return 3,
                }
            }
        } else {
            let mut v = Vec::with_capacity(size);
            while got < n {
                if rx.pop_into(&mut v).is_err() {
                    return 3;
                }
                acc = acc.wrapping_add(u64::from(v[0]));
                got += 1;
            }
        }
        std::hint::black_box(acc);
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let (_, pg) = run_sides(vec![(0, producer), (1, consumer)])?;
    Ok(timed(pg))
}

/// Reads every byte (XOR of 8-byte words): what a consumer that uses the data costs at least.
fn fold(b: &[u8]) -> u64 {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .fold(0, |a, x| a ^ x)
}

/// The floor for large records: one process copying `size`-byte records into a 2 MiB buffer
/// (as the producer does) and reading them back (as the consumer does); seconds for `n`.
pub fn stream_memcpy(size: usize, n: u64) -> Result<f64, String> {
    let run = Box::new(move |pg: Page| {
        let src = vec![0x5au8; size];
        let mut dst = vec![0u8; 1 << 21];
        let slots = dst.len() / size;
        let mut acc = 0;
        let t = Instant::now();
        for i in 0..n as usize {
            let off = (i % slots) * size;
            dst[off..off + size].copy_from_slice(&src);
            acc ^= fold(std::hint::black_box(&dst[off..off + size]));
        }
        std::hint::black_box(acc);
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let (_, pg) = run_sides(vec![(0, run)])?;
    Ok(timed(pg))
}

/// Unix socket + postcard framing, buffered on both sides; seconds for `n` records.
pub fn stream_uds(size: usize, n: u64) -> Result<f64, String> {
    let (a, b) = UnixStream::pair().map_err(e)?;
    let producer = Box::new(move |_pg: Page| {
        let mut w = BufWriter::with_capacity(1 << 18, a);
        let src = vec![0x5au8; size];
        let mut s = Vec::new();
        for _ in 0..n {
            if write_frame(&mut w, &src, &mut s).is_err() {
                return 3;
            }
        }
        if w.flush().is_err() {
            return 3;
        }
        0
    });
    let consumer = Box::new(move |pg: Page| {
        let mut r = BufReader::with_capacity(1 << 18, b);
        let mut buf = Vec::new();
        let mut acc = 0u64;
        let t = Instant::now();
        for _ in 0..n {
            match read_frame(&mut r, &mut buf) {
                Ok((_, b0)) => acc = acc.wrapping_add(u64::from(b0)),
                Err(_) => return 3,
            }
        }
        std::hint::black_box(acc);
        pg.u64(RESULT)
            .store(t.elapsed().as_nanos() as u64, Ordering::Release);
        0
    });
    let (_, pg) = run_sides(vec![(0, producer), (1, consumer)])?;
    Ok(timed(pg))
}

/// Two producers and two consumers (CPUs 0,1,0,1) move `n` 8-byte records; seconds.
pub fn mpmc_2p2c(n: u64, strategy: WaitStrategy) -> Result<f64, String> {
    let mut q = MpmcRing::create(1024, 40).map_err(e)?;
    q.set_wait_strategy(strategy);
    let per = n / 2;
    let mut sides: Vec<Side> = Vec::new();
    for p in 0..2u64 {
        let q = q.clone();
        sides.push((
            p as usize,
            Box::new(move |_pg| {
                for i in 0..per {
                    if q.push(&(p << 48 | i).to_le_bytes()).is_err() {
                        return 3;
                    }
                }
                // The end-of-stream sentinel (empty record).
                if q.push(&[]).is_err() {
                    return 3;
                }
                0
            }),
        ));
    }
    for c in 0..2usize {
        let q = q.clone();
        sides.push((
            c,
            Box::new(move |pg: Page| {
                let mut v = Vec::with_capacity(40);
                let mut got = 0u64;
                loop {
                    match q.pop_into_timeout(&mut v, Duration::from_secs(30)) {
                        Ok(0) => break,
                        Ok(_) => got += 1,
                        Err(PopError::Timeout) | Err(_) => return 3,
                    }
                }
                pg.u64(RESULT).fetch_add(got, Ordering::AcqRel);
                0
            }),
        ));
    }
    let (secs, pg) = run_sides(sides)?;
    let got = pg.u64(RESULT).load(Ordering::Acquire);
    pg.free();
    if got != per * 2 {
        return Err(format!("mpmc delivered {got} of {}", per * 2));
    }
    Ok(secs)
}
