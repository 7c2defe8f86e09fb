//! Ring workloads: round trips and streams between two processes pinned to CPUs 0 and 1, and an
//! MPMC 2-producer 2-consumer run.
//!
//! Systems: `floor` (the limit: one cache line ping-ponged with pure spinning; for the blocking
//! round trip, a bare futex wake/wait hand-off; for streams, `stream_floor`, an upper bound for
//! every system), `multiproc` (the rings, batch API), `multiproc-loan` (reserve/peek in place,
//! large records), `multiproc-1by1` (one copying push/pop per record), `iceoryx2` /
//! `iceoryx2-loan` (its publish-subscribe over shared memory, see `w_iceoryx2`), and
//! `uds-postcard` (Unix stream socket, u32 length prefix + postcard payload: the
//! socket-and-serialize transport Python's multiprocessing uses, in Rust; blocking reads, or
//! non-blocking busy-polled ones for the `spin` rows).
//!
//! Round trips are recorded one by one (`crate::lat`); every stream consumer reads every
//! payload byte (`fold`).

use crate::harness::{Child, fork_pinned, wait_all};
use crate::lat::{Lat, Setup, Step, rtt_pair};
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
    pub(crate) fn new() -> Page {
        Page(
            multiproc_shm::sys::map_shared_anon(4096)
                .expect("mmap")
                .as_ptr(),
        )
    }

    /// The u64 at line `i` (each counter on its own 128-byte line; i < 32).
    pub(crate) fn u64(&self, i: usize) -> &AtomicU64 {
        assert!(i < 32);
        // SAFETY: inside the zeroed page, 8-aligned; AtomicU64 has u64's layout.
        unsafe { &*self.0.add(i * 128).cast::<AtomicU64>() }
    }

    pub(crate) fn u32(&self, i: usize) -> &AtomicU32 {
        assert!(i < 32);
        // SAFETY: as above (4-aligned u32 at the start of line i).
        unsafe { &*self.0.add(i * 128).cast::<AtomicU32>() }
    }

    pub(crate) fn free(self) {
        // SAFETY: the page mapped in `new`; callers drop every reference first.
        unsafe { multiproc_shm::sys::unmap(std::ptr::NonNull::new(self.0).expect("mapped"), 4096) };
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
    wait_all(kids, Duration::from_secs(10))?;
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
    if cfg.wants("rtt_8B_spin") {
        let w = "rtt_8B_spin";
        let n = if q { 200_000 } else { 1_000_000 };
        push_lat(
            out,
            w,
            "multiproc",
            "spin",
            rtt_ring(n, WaitStrategy::Spin),
            1.0,
        );
        push_lat(out, w, "floor", "spin", rtt_floor_spin(n), 1.0);
        push_lat(
            out,
            w,
            "iceoryx2",
            "spin",
            crate::w_iceoryx2::rtt(n, false),
            1.0,
        );
        push_lat(out, w, "uds-postcard", "spin", rtt_uds(n / 4, true), 1.0);
    }
    if cfg.wants("rtt_8B_blocking") {
        let w = "rtt_8B_blocking";
        let n = if q { 10_000 } else { 100_000 };
        push_lat(
            out,
            w,
            "multiproc",
            "block",
            rtt_ring(n, WaitStrategy::Park),
            1.0,
        );
        push_lat(out, w, "floor", "block", rtt_floor_futex(n), 1.0);
        push_lat(
            out,
            w,
            "iceoryx2",
            "block",
            crate::w_iceoryx2::rtt(n, true),
            1.0,
        );
        push_lat(out, w, "uds-postcard", "block", rtt_uds(n, false), 1.0);
    }
    let mut push = |w: &str, sys: &str, r: Result<f64, String>, unit: &str| match r {
        Ok(v) => out.push(Record::new(w, sys, v, unit)),
        Err(e) => crate::failed(w, sys, &e),
    };
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
        let mut both = |sys: &str, k: u64, r: Result<f64, String>| match r {
            Ok(s) => {
                push(w, sys, Ok(k as f64 / s), "msgs/s");
                push(w, sys, Ok((k * size as u64) as f64 / s), "B/s");
            }
            Err(e) => crate::failed(w, sys, &e),
        };
        if size <= 64 {
            both("multiproc", n, stream_ring(size, n, true));
        } else {
            both("multiproc-loan", n, stream_ring(size, n, true));
        }
        both("multiproc-1by1", n, stream_ring(size, n, false));
        both("floor", n, stream_floor(size, n));
        // iceoryx2 streams small samples far slower than the ring: cap its count so the run stays short.
        let n_ice = (if size <= 64 { n / 5 } else { n }).min(1_000_000);
        both(
            "iceoryx2-loan",
            n_ice,
            crate::w_iceoryx2::stream(size, n_ice),
        );
        let n_uds = if size <= 64 { n / 5 } else { n };
        both("uds-postcard", n_uds, stream_uds(size, n_uds));
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

/// Pushes an RTT record (figures in ns divided by `scale`: 1.0 for ns, 1e3 for us).
pub(crate) fn push_lat(
    out: &mut Vec<Record>,
    w: &str,
    sys: &str,
    mode: &str,
    r: Result<Lat, String>,
    scale: f64,
) {
    match r {
        Ok(l) => out.push(Record::lat(
            w,
            sys,
            mode,
            &l.scaled(scale),
            if scale == 1.0 { "ns" } else { "us" },
        )),
        Err(e) => crate::failed(w, &format!("{sys} ({mode})"), &e),
    }
}

fn e<T: std::fmt::Display>(x: T) -> String {
    x.to_string()
}

/// Round trip of an 8-byte record over two SPSC rings, `strategy` on both sides.
pub fn rtt_ring(n: u64, strategy: WaitStrategy) -> Result<Lat, String> {
    let ab = SpscRing::new(4096).map_err(e)?;
    let ba = SpscRing::new(4096).map_err(e)?;
    let (ab2, ba2) = (ab.clone(), ba.clone());
    let ping: Setup = Box::new(move |_pg| {
        let mut tx = ab.producer().map_err(e)?;
        let mut rx = ba.consumer().map_err(e)?;
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        Ok(Box::new(move |i: u64| {
            tx.push(&i.to_le_bytes()).map_err(e)?;
            match rx.peek() {
                Ok(g) if g.as_slice() == i.to_le_bytes() => {
                    g.release();
                    Ok(())
                }
                _ => Err("bad echo".into()),
            }
        }) as Step)
    });
    let pong: Setup = Box::new(move |_pg| {
        let mut tx = ba2.producer().map_err(e)?;
        let mut rx = ab2.consumer().map_err(e)?;
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let mut v = Vec::with_capacity(8);
        Ok(Box::new(move |_i: u64| {
            rx.pop_into(&mut v).map_err(e)?;
            tx.push(&v).map_err(e)
        }) as Step)
    });
    rtt_pair(10_000.min(n), n, ping, pong)
}

/// The spinning floor: one cache line, two processes, pure spin.
pub fn rtt_floor_spin(n: u64) -> Result<Lat, String> {
    let ping: Setup = Box::new(move |pg: Page| {
        Ok(Box::new(move |i: u64| {
            let w = pg.u64(EXTRA);
            w.store(2 * i + 1, Ordering::Release);
            while w.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
            Ok(())
        }) as Step)
    });
    let pong: Setup = Box::new(move |pg: Page| {
        Ok(Box::new(move |i: u64| {
            let w = pg.u64(EXTRA);
            while w.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            w.store(2 * i + 2, Ordering::Release);
            Ok(())
        }) as Step)
    });
    rtt_pair(10_000.min(n), n, ping, pong)
}

/// The blocking floor: a bare futex hand-off each way (wait at once, no spinning).
pub fn rtt_floor_futex(n: u64) -> Result<Lat, String> {
    fn wait_for(w: &AtomicU32, want: u32) {
        loop {
            let cur = w.load(Ordering::Acquire);
            if cur == want {
                return;
            }
            futex::wait(w, cur, Some(Duration::from_secs(1)));
        }
    }
    let ping: Setup = Box::new(move |pg: Page| {
        Ok(Box::new(move |i: u64| {
            let (w, i) = (pg.u32(EXTRA), i as u32);
            w.store(2 * i + 1, Ordering::Release);
            futex::wake(w, 1);
            wait_for(w, 2 * i + 2);
            Ok(())
        }) as Step)
    });
    let pong: Setup = Box::new(move |pg: Page| {
        Ok(Box::new(move |i: u64| {
            let (w, i) = (pg.u32(EXTRA), i as u32);
            wait_for(w, 2 * i + 1);
            w.store(2 * i + 2, Ordering::Release);
            futex::wake(w, 1);
            Ok(())
        }) as Step)
    });
    rtt_pair(1000.min(n), n, ping, pong)
}

/// A Unix socket read and written in non-blocking mode, busy-polling on `WouldBlock`: the
/// spinning mode a socket offers.
struct Polled(UnixStream);

impl Read for Polled {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                r => return r,
            }
        }
    }
}

impl Write for Polled {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Unix socket + postcard framing round trip of 8 bytes; `spin`: non-blocking sockets,
/// busy-polled; else blocking reads.
pub fn rtt_uds(n: u64, spin: bool) -> Result<Lat, String> {
    fn wrap(s: UnixStream, spin: bool) -> Result<Box<dyn ReadWrite>, String> {
        if spin {
            s.set_nonblocking(true).map_err(e)?;
            Ok(Box::new(Polled(s)))
        } else {
            Ok(Box::new(s))
        }
    }
    let (a, b) = UnixStream::pair().map_err(e)?;
    let ping: Setup = Box::new(move |_pg| {
        let mut a = wrap(a, spin)?;
        let (mut s, mut buf) = (Vec::new(), Vec::new());
        Ok(Box::new(move |i: u64| {
            write_frame(&mut a, &i.to_le_bytes(), &mut s).map_err(e)?;
            read_frame(&mut a, &mut buf).map_err(e)?;
            Ok(())
        }) as Step)
    });
    let pong: Setup = Box::new(move |_pg| {
        let mut b = wrap(b, spin)?;
        let (mut s, mut buf) = (Vec::new(), Vec::new());
        Ok(Box::new(move |_i: u64| {
            read_frame(&mut b, &mut buf).map_err(e)?;
            let p = postcard::from_bytes::<&[u8]>(&buf).map_err(e)?.to_vec();
            write_frame(&mut b, &p, &mut s).map_err(e)
        }) as Step)
    });
    rtt_pair(1000.min(n), n, ping, pong)
}

/// Read + Write, boxed.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

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

/// Reads one frame; returns the decoded payload's length and `fold` of every payload byte.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<(usize, u64)> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h) as usize;
    buf.resize(len, 0);
    r.read_exact(buf)?;
    let p: &[u8] = postcard::from_bytes(buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((p.len(), fold(p)))
}

/// Streams `n` records of `size` bytes from CPU 0 to CPU 1; returns seconds. `batch`: batch
/// push/pop for small records, reserve/commit + peek/release (zero-copy) for large ones; else
/// one copying push/pop per record.
pub fn stream_ring(size: usize, n: u64, batch: bool) -> Result<f64, String> {
    let cap = if size <= 64 { 1 << 16 } else { 1 << 21 };
    let ring = SpscRing::new(cap).map_err(e)?;
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
                match rx.pop_batch(usize::MAX, |r| acc = acc.wrapping_add(fold(r))) {
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
                acc = acc.wrapping_add(fold(&v));
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

/// Reads every byte (XOR of 8-byte words, then the tail bytes): the work every stream consumer
/// does on every system, so that each system reads every payload byte once.
pub(crate) fn fold(b: &[u8]) -> u64 {
    let c = b.chunks_exact(8);
    let tail = c
        .remainder()
        .iter()
        .fold(0u64, |a, &x| a.rotate_left(8) ^ u64::from(x));
    c.map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .fold(tail, |a, x| a ^ x)
}

/// The stream floor, an upper bound for every system: one pinned process times the producer's
/// least work alone (copy a `size`-byte record into one cache-hot slot) and the consumer's
/// least work alone (`fold` every byte of that slot). Two processes that overlap the two halves
/// perfectly can go no faster than the slower half, so the floor's time for `n` records is
/// `n * max(write, read)`, each the fastest per-record time seen over chunks of about 64 KiB of
/// payload (the minimum, so a preemption on a busy machine does not lower the bound); returns
/// seconds.
pub fn stream_floor(size: usize, n: u64) -> Result<f64, String> {
    let run: Side = (
        0,
        Box::new(move |pg: Page| {
            let src = vec![0x5au8; size];
            // The slot starts 2 KiB off src's page offset: with src and dst 4 KiB-aliased
            // (two back-to-back heap blocks), `rep movsb` on this AMD EPYC copies at 3 GB/s
            // instead of 50, which would put the "floor" below the systems it should bound.
            let mut buf = vec![0u8; size + 8192];
            let gap = (buf.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize) % 4096;
            let off = (2048 + 4096 - gap) % 4096;
            let dst = &mut buf[off..off + size];
            let chunk = (65_536 / size).max(1) as u64;
            let chunks = (n / chunk).clamp(3, 300);
            let (mut w, mut r) = (f64::INFINITY, f64::INFINITY);
            let mut acc = 0u64;
            for _ in 0..chunks {
                let t = Instant::now();
                for _ in 0..chunk {
                    std::hint::black_box(&mut dst[..]).copy_from_slice(std::hint::black_box(&src));
                }
                w = w.min(t.elapsed().as_nanos() as f64 / chunk as f64);
                let t = Instant::now();
                for _ in 0..chunk {
                    acc = acc.wrapping_add(fold(std::hint::black_box(&dst[..])));
                }
                r = r.min(t.elapsed().as_nanos() as f64 / chunk as f64);
            }
            std::hint::black_box(acc);
            let ns = (w.max(r) * n as f64).max(1.0) as u64;
            pg.u64(RESULT).store(ns, Ordering::Release);
            0
        }),
    );
    let (_, pg) = run_sides(vec![run])?;
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
                Ok((_, f)) => acc = acc.wrapping_add(f),
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
    let mut q = MpmcRing::new(1024, 40).map_err(e)?;
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
