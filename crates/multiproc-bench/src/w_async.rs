//! Workloads of issue 15 (async/await): a tokio service on one side of the IPC.
//!
//! * `async_rtt`: a tokio task ↔ a child process, a small message (a postcard `u64`), every
//!   round trip timed (`crate::lat`), p50/p99 reported. Mode `async`.
//! * `async_fanin`: 64 child processes send small messages (a postcard `u64` each, one send per
//!   message) to one tokio service; messages per second at the service.
//!
//! Systems:
//! * `tokio-uds-postcard`: tokio `UnixStream`s with u32-length-prefixed postcard frames (the
//!   transport a tokio user reaches for today). The child side is a blocking std socket.
//! * `multiproc-bridge`: the workaround issue 15 cites for today's multiproc: the tokio task
//!   sends on a multiproc `Pipe` (fan-in: `Queue`) and receives through a
//!   `tokio::task::spawn_blocking` thread that loops on the blocking `recv`/`get` and forwards
//!   into a `tokio::sync::mpsc` channel the task awaits.
//! * `multiproc`: the native futures (`send_async`/`recv_async`, `get_async`), woken across
//!   processes by the per-process futex_waitv notifier ([`async_rtt_native`],
//!   [`async_fanin_native`]). `async_rtt` has two multiproc rows: mode `async` parks at once on
//!   both sides (like the kernel-blocking UDS row), mode `async-spin` spins briefly first.
//!
//! The tokio side runs in a forked child (the bench parent stays single-threaded, see
//! `harness`), on a current-thread runtime, as a spawned task; its process is pinned to CPU 0,
//! the peer (`async_rtt`) or the 64 senders (`async_fanin`) to CPU 1. The children start
//! together on a futex (no spinning while 65 children start on 2 CPUs).

use crate::harness::{Child, fork_pinned, wait_all};
use crate::lat::{Lat, Recorder};
use crate::w_ring::{Page, RESULT, push_lat, timed};
use crate::{Config, Record};
use multiproc::sync::futex;
use multiproc::{Pipe, Queue, WaitStrategy};
use std::future::Future;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MODE: &str = "async";
/// Senders of `async_fanin`.
const PRODUCERS: usize = 64;
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

// Page lines of this module's runner (lines 2 = RESULT and 8.. = the `Lat` are shared with
// `w_ring`/`lat`; these are free there).
const READY: usize = 5;
const GO: usize = 6;
const DONE: usize = 7;

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    let q = cfg.quick;
    if cfg.wants("async_rtt") {
        let w = "async_rtt";
        let n = if q { 20_000 } else { 200_000 };
        push_lat(out, w, "tokio-uds-postcard", MODE, rtt_tokio_uds(n), 1e3);
        push_lat(out, w, "multiproc-bridge", MODE, rtt_bridge(n), 1e3);
        push_lat(
            out,
            w,
            "multiproc",
            MODE,
            async_rtt_native(n, WaitStrategy::Park),
            1e3,
        );
        push_lat(
            out,
            w,
            "multiproc",
            "async-spin",
            async_rtt_native(n, WaitStrategy::SpinPark),
            1e3,
        );
    }
    if cfg.wants("async_fanin") {
        let w = "async_fanin";
        let per = if q { 500 } else { 5_000 };
        let total = (PRODUCERS as u64 * per) as f64;
        for (sys, r) in [
            ("tokio-uds-postcard", fanin_tokio_uds(per)),
            ("multiproc-bridge", fanin_bridge(per)),
            ("multiproc", async_fanin_native(per)),
        ] {
            match r {
                Ok(secs) => out.push(Record::new(w, sys, total / secs, "msgs/s")),
                Err(e) => crate::failed(w, sys, &e),
            }
        }
    }
}

/// `async_rtt` with multiproc's native async calls: the tokio task `send_async`s a `u64` and
/// awaits the echo with `recv_async` (no bridge thread, no mpsc channel); the peer is a plain
/// blocking `recv`/`send` loop, as in [`rtt_bridge`]. `strategy` is set on both ends of both
/// sides: `Park` (mode `async`) sleeps at once on both sides, as the tokio-UDS row's reactor
/// and blocking peer do in the kernel; `SpinPark` (mode `async-spin`) lets `recv_async` spin
/// its short adaptive budget before it registers with the notifier, and the peer spin before
/// it parks.
pub fn async_rtt_native(n: u64, strategy: WaitStrategy) -> Result<Lat, String> {
    let warmup = warmup_of(n);
    let (mut rx_pong, mut tx_ping) = Pipe::simplex::<u64>().map_err(e)?; // ping -> pong
    let (mut rx_ping, mut tx_pong) = Pipe::simplex::<u64>().map_err(e)?; // pong -> ping
    for c in [&mut rx_pong, &mut tx_ping, &mut rx_ping, &mut tx_pong] {
        c.set_wait_strategy(strategy);
    }
    let tokio_side = move || {
        on_tokio(async move {
            let mut laps = Laps::new(warmup);
            for i in 0..warmup + n {
                tx_ping.send_async(&i).await.map_err(e)?;
                let echo = rx_ping.recv_async().await.map_err(e)?;
                if echo != i {
                    return Err(format!("echo {echo} for {i}"));
                }
                laps.lap(i);
            }
            laps.finish()
        })?
    };
    let peer = move || {
        for _ in 0..warmup + n {
            let v = rx_pong.recv().map_err(e)?;
            tx_pong.send(&v).map_err(e)?;
        }
        Ok(())
    };
    rtt_run(tokio_side, peer)
}

/// `async_fanin` with the native `Queue::get_async`: the service task awaits the queue itself
/// (no bridge thread); the 64 senders `put` as in [`fanin_bridge`].
pub fn async_fanin_native(per: u64) -> Result<f64, String> {
    let q: Queue<u64> = Queue::new(4096).map_err(e)?;
    let senders: Vec<Box<dyn FnOnce() -> Result<(), String>>> = (0..PRODUCERS)
        .map(|_| {
            let q = q.clone();
            Box::new(move || {
                for i in 0..per {
                    q.put(i).map_err(|err| format!("put: {err:?}"))?;
                }
                Ok(())
            }) as Box<dyn FnOnce() -> Result<(), String>>
        })
        .collect();
    let total = PRODUCERS as u64 * per;
    let service = move || {
        on_tokio(async move {
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..total {
                sum = sum.wrapping_add(q.get_async().await.map_err(|err| format!("{err:?}"))?);
            }
            let want = PRODUCERS as u64 * (per * per.saturating_sub(1) / 2);
            if sum != want {
                return Err(format!("sum {sum}, want {want}"));
            }
            Ok(t.elapsed().as_nanos() as u64)
        })?
    };
    fanin_run(service, senders)
}

fn e<T: std::fmt::Display>(x: T) -> String {
    x.to_string()
}

/// One child of a run: its CPU and its body (exit code 0 = ok).
type Body = (usize, Box<dyn FnOnce(Page) -> i32>);

/// Forks every body, pinned; they start together once all are up (futex, no spinning);
/// waits for all. Returns the page the children left results in.
fn run_children(bodies: Vec<Body>) -> Result<Page, String> {
    let pg = Page::new();
    let n = bodies.len() as u32;
    let mut kids: Vec<Child> = bodies
        .into_iter()
        .map(|(cpu, f)| {
            fork_pinned(Some(cpu), move || {
                pg.u32(READY).fetch_add(1, Ordering::AcqRel);
                while pg.u32(GO).load(Ordering::Acquire) == 0 {
                    futex::wait(pg.u32(GO), 0, Some(Duration::from_millis(100)));
                }
                let code = f(pg);
                pg.u32(DONE).fetch_add(1, Ordering::AcqRel);
                futex::wake(pg.u32(DONE), 1);
                code
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.u32(READY).load(Ordering::Acquire) < n {
        if Instant::now() > deadline {
            return Err("children did not start".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    pg.u32(GO).store(1, Ordering::Release);
    futex::wake(pg.u32(GO), u32::MAX);
    // Sleep on the DONE word, not in a waitpid poll loop (which would preempt the children).
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let done = pg.u32(DONE).load(Ordering::Acquire);
        if done >= n || Instant::now() > deadline {
            break;
        }
        futex::wait(pg.u32(DONE), done, Some(Duration::from_millis(100)));
    }
    wait_all(&mut kids, Duration::from_secs(10))?;
    Ok(pg)
}

/// Runs `f` as a spawned task of a current-thread tokio runtime (in a forked child). The
/// runtime's blocking threads (a bridge blocked in `recv`) are abandoned: the child exits.
fn on_tokio<F>(f: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(e)?;
    let r = rt.block_on(async { tokio::spawn(f).await }).map_err(e);
    rt.shutdown_background();
    r
}

/// A round-trip run: the tokio side (CPU 0) returns its figures, the peer (CPU 1) answers.
fn rtt_run(
    tokio_side: impl FnOnce() -> Result<Lat, String> + 'static,
    peer: impl FnOnce() -> Result<(), String> + 'static,
) -> Result<Lat, String> {
    let a: Body = (
        0,
        Box::new(move |pg: Page| match tokio_side() {
            Ok(l) => {
                l.store(pg);
                0
            }
            Err(err) => {
                eprintln!("tokio side: {err}");
                3
            }
        }),
    );
    let b: Body = (
        1,
        Box::new(move |_pg: Page| match peer() {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("peer: {err}");
                3
            }
        }),
    );
    let pg = run_children(vec![a, b])?;
    let l = Lat::load(pg);
    pg.free();
    Ok(l)
}

/// Times round trips `warmup..warmup + n` of a loop (call `lap(i)` after round trip `i`).
struct Laps {
    warmup: u64,
    rec: Option<Recorder>,
}

impl Laps {
    fn new(warmup: u64) -> Laps {
        Laps {
            warmup,
            rec: (warmup == 0).then(Recorder::start),
        }
    }

    #[inline]
    fn lap(&mut self, i: u64) {
        match &mut self.rec {
            Some(r) => r.tick(),
            None if i + 1 == self.warmup => self.rec = Some(Recorder::start()),
            None => {}
        }
    }

    fn finish(self) -> Result<Lat, String> {
        self.rec
            .map(|r| r.finish())
            .ok_or_else(|| "no timed round trip".into())
    }
}

fn warmup_of(n: u64) -> u64 {
    1000.min(n)
}

/// A u32 length prefix and the postcard encoding of `v`, in `buf`.
fn frame(v: u64, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    *buf = postcard::to_extend(&v, std::mem::take(buf)).map_err(e)?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Reads one frame (blocking) and decodes its `u64`.
fn read_frame_blocking(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<u64, String> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).map_err(e)?;
    buf.resize(u32::from_le_bytes(h) as usize, 0);
    r.read_exact(buf).map_err(e)?;
    postcard::from_bytes(buf).map_err(e)
}

/// Reads one frame (awaiting) and decodes its `u64`.
async fn read_frame_async(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<u64, String> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).await.map_err(e)?;
    buf.resize(u32::from_le_bytes(h) as usize, 0);
    r.read_exact(buf).await.map_err(e)?;
    postcard::from_bytes(buf).map_err(e)
}

/// `async_rtt` over a tokio `UnixStream` (length-prefixed postcard); the peer echoes on a
/// blocking std socket.
pub fn rtt_tokio_uds(n: u64) -> Result<Lat, String> {
    let warmup = warmup_of(n);
    let (a, b) = StdStream::pair().map_err(e)?;
    let tokio_side = move || {
        on_tokio(async move {
            a.set_nonblocking(true).map_err(e)?;
            let s = tokio::net::UnixStream::from_std(a).map_err(e)?;
            let (rd, mut wr) = s.into_split();
            let mut rd = tokio::io::BufReader::new(rd);
            let (mut out, mut buf) = (Vec::new(), Vec::new());
            let mut laps = Laps::new(warmup);
            for i in 0..warmup + n {
                frame(i, &mut out)?;
                wr.write_all(&out).await.map_err(e)?;
                let echo = read_frame_async(&mut rd, &mut buf).await?;
                if echo != i {
                    return Err(format!("echo {echo} for {i}"));
                }
                laps.lap(i);
            }
            laps.finish()
        })?
    };
    let peer = move || {
        let mut w = b.try_clone().map_err(e)?;
        let mut r = BufReader::new(b);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        for _ in 0..warmup + n {
            let v = read_frame_blocking(&mut r, &mut buf)?;
            frame(v, &mut out)?;
            w.write_all(&out).map_err(e)?;
        }
        Ok(())
    };
    rtt_run(tokio_side, peer)
}

/// `async_rtt` over multiproc pipes with today's workaround: the task sends on one simplex
/// `Pipe`; a `spawn_blocking` thread loops on the other's blocking `recv` and forwards into a
/// `tokio::sync::mpsc` channel the task awaits. The peer is a blocking `recv`/`send` loop.
pub fn rtt_bridge(n: u64) -> Result<Lat, String> {
    let warmup = warmup_of(n);
    let (mut rx_pong, mut tx_ping) = Pipe::simplex::<u64>().map_err(e)?; // ping -> pong
    let (mut rx_ping, mut tx_pong) = Pipe::simplex::<u64>().map_err(e)?; // pong -> ping
    let tokio_side = move || {
        on_tokio(async move {
            let (fwd, mut echoes) = tokio::sync::mpsc::channel::<u64>(1024);
            let _bridge = tokio::task::spawn_blocking(move || {
                while let Ok(v) = rx_ping.recv() {
                    if fwd.blocking_send(v).is_err() {
                        break;
                    }
                }
            });
            let mut laps = Laps::new(warmup);
            for i in 0..warmup + n {
                tx_ping.send(&i).map_err(e)?;
                let echo = echoes.recv().await.ok_or("the bridge ended")?;
                if echo != i {
                    return Err(format!("echo {echo} for {i}"));
                }
                laps.lap(i);
            }
            laps.finish()
        })?
    };
    let peer = move || {
        for _ in 0..warmup + n {
            let v = rx_pong.recv().map_err(e)?;
            tx_pong.send(&v).map_err(e)?;
        }
        Ok(())
    };
    rtt_run(tokio_side, peer)
}

/// A fan-in run: the service (CPU 0) returns the ns from its start to the last message; the
/// senders (CPU 1) each run their body. Returns seconds.
fn fanin_run(
    service: impl FnOnce() -> Result<u64, String> + 'static,
    senders: Vec<Box<dyn FnOnce() -> Result<(), String>>>,
) -> Result<f64, String> {
    let mut bodies: Vec<Body> = vec![(
        0,
        Box::new(move |pg: Page| match service() {
            Ok(ns) => {
                pg.u64(RESULT).store(ns, Ordering::Release);
                0
            }
            Err(err) => {
                eprintln!("service: {err}");
                3
            }
        }),
    )];
    for s in senders {
        bodies.push((
            1,
            Box::new(move |_pg: Page| match s() {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("sender: {err}");
                    3
                }
            }),
        ));
    }
    Ok(timed(run_children(bodies)?))
}

/// `async_fanin` over tokio `UnixStream`s: one socket per sender, one task per socket in the
/// service. Senders write one frame per message (no batching: each message is a request).
pub fn fanin_tokio_uds(per: u64) -> Result<f64, String> {
    let mut service_ends = Vec::new();
    let mut senders: Vec<Box<dyn FnOnce() -> Result<(), String>>> = Vec::new();
    for _ in 0..PRODUCERS {
        let (a, b) = StdStream::pair().map_err(e)?;
        service_ends.push(a);
        senders.push(Box::new(move || {
            let mut b = b;
            let mut out = Vec::new();
            for i in 0..per {
                frame(i, &mut out)?;
                b.write_all(&out).map_err(e)?;
            }
            Ok(())
        }));
    }
    let service = move || {
        on_tokio(async move {
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for a in service_ends {
                set.spawn(async move {
                    a.set_nonblocking(true).map_err(e)?;
                    let s = tokio::net::UnixStream::from_std(a).map_err(e)?;
                    let mut r = tokio::io::BufReader::new(s);
                    let mut buf = Vec::new();
                    let mut sum = 0u64;
                    for _ in 0..per {
                        sum = sum.wrapping_add(read_frame_async(&mut r, &mut buf).await?);
                    }
                    Ok::<u64, String>(sum)
                });
            }
            let want = per * per.saturating_sub(1) / 2;
            while let Some(r) = set.join_next().await {
                let sum = r.map_err(e)??;
                if sum != want {
                    return Err(format!("sum {sum}, want {want}"));
                }
            }
            Ok(t.elapsed().as_nanos() as u64)
        })?
    };
    fanin_run(service, senders)
}

/// `async_fanin` over one multiproc `Queue` with today's workaround: a `spawn_blocking` thread
/// loops on the blocking `get` and forwards into a `tokio::sync::mpsc` channel the service task
/// awaits. Senders `put` one message at a time.
pub fn fanin_bridge(per: u64) -> Result<f64, String> {
    let q: Queue<u64> = Queue::new(4096).map_err(e)?;
    let senders: Vec<Box<dyn FnOnce() -> Result<(), String>>> = (0..PRODUCERS)
        .map(|_| {
            let q = q.clone();
            Box::new(move || {
                for i in 0..per {
                    q.put(i).map_err(|err| format!("put: {err:?}"))?;
                }
                Ok(())
            }) as Box<dyn FnOnce() -> Result<(), String>>
        })
        .collect();
    let total = PRODUCERS as u64 * per;
    let service = move || {
        on_tokio(async move {
            let t = Instant::now();
            let (fwd, mut msgs) = tokio::sync::mpsc::channel::<u64>(4096);
            let _bridge = tokio::task::spawn_blocking(move || {
                for _ in 0..total {
                    match q.get() {
                        Ok(v) => {
                            if fwd.blocking_send(v).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            });
            let mut sum = 0u64;
            for _ in 0..total {
                sum = sum.wrapping_add(msgs.recv().await.ok_or("the bridge ended")?);
            }
            let want = PRODUCERS as u64 * (per * per.saturating_sub(1) / 2);
            if sum != want {
                return Err(format!("sum {sum}, want {want}"));
            }
            Ok(t.elapsed().as_nanos() as u64)
        })?
    };
    fanin_run(service, senders)
}
