//! Workloads of the channel layer: `pipe_rtt_small`, `pipe_stream_{8B,64B,4KiB,64KiB}`,
//! `queue_spsc_small`, `queue_mpmc_2p2c_small`, as `benches/python/mp_bench.py` runs them.
//!
//! Systems: multiproc, python-mp, and for the pipe workloads uds-postcard (a Unix stream socket
//! with u32-length-prefixed postcard frames, buffered; the functions of `w_ring`) and
//! ipc-channel (servo's crate: typed `IpcSender<u64>` for the round trip, `IpcBytesSender` for
//! streams).
//!
//! Every side runs in a forked child (two-process workloads pin to CPUs 0 and 1); a child stamps
//! `CLOCK_MONOTONIC` into shared memory, so start-up and exit are outside the timed phase.
//! `pipe_rtt_small` has `spin`, `block` and `spin-park` (multiproc's default) rows with
//! percentiles (`crate::lat`); stream receivers read every payload byte (`w_ring::fold`); the
//! queue workloads get a crossbeam-channel anchor (`w_anchor`).

use crate::harness::{fork_pinned, wait_all};
use crate::lat::{Lat, Setup, Step, rtt_pair};
use crate::w_ring::{fold, push_lat, rtt_uds};
use crate::{Config, Record, python};
use multiproc::channel::{Pipe, Queue};
use multiproc::{RawValue, WaitStrategy};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    let q = cfg.quick;
    if cfg.wants("pipe_rtt_small") {
        let w = "pipe_rtt_small";
        let n = if q { 50_000 } else { 300_000 };
        let nb = if q { 10_000 } else { 60_000 };
        push_lat(
            out,
            w,
            "multiproc",
            "spin",
            pipe_rtt_small(n, WaitStrategy::Spin),
            1e3,
        );
        push_lat(out, w, "uds-postcard", "spin", rtt_uds(n / 4, true), 1e3);
        push_lat(out, w, "ipc-channel", "spin", ipc_rtt(n / 10, true), 1e3);
        push_lat(
            out,
            w,
            "multiproc",
            "block",
            pipe_rtt_small(nb, WaitStrategy::Park),
            1e3,
        );
        push_lat(out, w, "uds-postcard", "block", rtt_uds(nb, false), 1e3);
        push_lat(out, w, "ipc-channel", "block", ipc_rtt(nb, false), 1e3);
        push_lat(
            out,
            w,
            "multiproc",
            "spin-park",
            pipe_rtt_small(n, WaitStrategy::SpinPark),
            1e3,
        );
        out.extend(
            python::run(w, q, &[])
                .into_iter()
                .map(|r| r.with_mode("block")),
        );
    }
    for (name, size, nq, nf) in [
        ("pipe_stream_8B", 8, 2_000_000, 10_000_000),
        ("pipe_stream_64B", 64, 2_000_000, 10_000_000),
        ("pipe_stream_4KiB", 4096, 200_000, 1_000_000),
        ("pipe_stream_64KiB", 65536, 20_000, 100_000),
    ] {
        if cfg.wants(name) {
            let n = if q { nq } else { nf };
            report(out, name, pipe_stream(size, n, false));
            // Opt-in batched publication (`send_bytes_batched`, then `flush`): a separate row,
            // since a killed writer can lose its unflushed batch (docs/channel.md). It is the
            // like-for-like peer of uds-postcard, whose writer batches through a 256 KiB
            // `BufWriter` (one `write` per ~20 k frames of 8 bytes); the `multiproc` row
            // publishes every message as `send_bytes` returns (Python's semantics). Both
            // readers copy each message into a reused buffer (`recv_bytes_into`; uds-postcard:
            // `read_exact` from a 256 KiB `BufReader`) and fold every byte: no allocation per
            // message on either side.
            match pipe_stream(size, n, true) {
                Ok(v) => {
                    for (value, unit) in v {
                        out.push(Record::new(name, "multiproc-batched", value, unit));
                    }
                }
                Err(e) => crate::failed(name, "multiproc-batched", &e),
            }
            match crate::w_ring::stream_floor(size, n) {
                Ok(secs) => {
                    let m = n as f64 / secs;
                    out.push(Record::new(name, "floor", m, "msgs/s"));
                    out.push(Record::new(name, "floor", m * size as f64 / 1e6, "MB/s"));
                }
                Err(e) => crate::failed(name, "floor", &e),
            }
            let n_uds = if size <= 64 { n / 5 } else { n };
            match crate::w_ring::stream_uds(size, n_uds) {
                Ok(secs) => {
                    let m = n_uds as f64 / secs;
                    out.push(Record::new(name, "uds-postcard", m, "msgs/s"));
                    out.push(Record::new(
                        name,
                        "uds-postcard",
                        m * size as f64 / 1e6,
                        "MB/s",
                    ));
                }
                Err(e) => crate::failed(name, "uds-postcard", &e),
            }
            match ipc_stream(size, n_uds) {
                Ok(v) => {
                    for (value, unit) in v {
                        out.push(Record::new(name, "ipc-channel", value, unit));
                    }
                }
                Err(e) => crate::failed(name, "ipc-channel", &e),
            }
            out.extend(python::run(name, q, &[]));
        }
    }
    if cfg.wants("queue_spsc_small") {
        let n = if q { 1_000_000 } else { 5_000_000 };
        report(
            out,
            "queue_spsc_small",
            queue_bench(1, n).map(|v| vec![(v, "msgs/s")]),
        );
        out.extend(python::run("queue_spsc_small", q, &[]));
        crate::w_anchor::crossbeam_row(out, "queue_spsc_small", 1, n);
    }
    if cfg.wants("queue_mpmc_2p2c_small") {
        let n = if q { 1_000_000 } else { 4_000_000 };
        report(
            out,
            "queue_mpmc_2p2c_small",
            queue_bench(2, n).map(|v| vec![(v, "msgs/s")]),
        );
        out.extend(python::run("queue_mpmc_2p2c_small", q, &[]));
        crate::w_anchor::crossbeam_row(out, "queue_mpmc_2p2c_small", 2, n);
    }
}

fn report(out: &mut Vec<Record>, name: &str, r: Result<Vec<(f64, &'static str)>, String>) {
    match r {
        Ok(v) => {
            for (value, unit) in v {
                out.push(Record::new(name, "multiproc", value, unit));
            }
        }
        Err(e) => crate::failed(name, "multiproc", &e),
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn raw(v: u64) -> Result<RawValue<u64>, String> {
    RawValue::new(v).map_err(|e| e.to_string())
}

/// Round trip of a small integer over a duplex `Pipe<u64>`, both ends with `strategy`: the
/// ping side (CPU 0) sends and waits for the echo from the pong side (CPU 1).
pub fn pipe_rtt_small(n: u64, strategy: WaitStrategy) -> Result<Lat, String> {
    let (mut a, mut b) = Pipe::duplex::<u64>().map_err(|e| e.to_string())?;
    a.set_wait_strategy(strategy);
    b.set_wait_strategy(strategy);
    let ping: Setup = Box::new(move |_pg| {
        Ok(Box::new(move |i: u64| {
            a.send(&i).map_err(|e| e.to_string())?;
            match a.recv() {
                Ok(x) if x == i => Ok(()),
                Ok(x) => Err(format!("echo {x} for {i}")),
                Err(e) => Err(e.to_string()),
            }
        }) as Step)
    });
    let pong: Setup = Box::new(move |_pg| {
        Ok(Box::new(move |_i: u64| {
            let x = b.recv().map_err(|e| e.to_string())?;
            b.send(&x).map_err(|e| e.to_string())
        }) as Step)
    });
    rtt_pair(10_000.min(n), n, ping, pong)
}

/// One-way `send_bytes` of `size` bytes from a child on CPU 1 to a child on CPU 0 (receiving
/// with `recv_bytes_into`); msgs/s and MB/s. `batched`: `send_bytes_batched` and one `flush`
/// at the end.
pub fn pipe_stream(size: usize, n: u64, batched: bool) -> Result<Vec<(f64, &'static str)>, String> {
    let (mut r, mut w) = Pipe::simplex::<u8>().map_err(|e| e.to_string())?;
    let elapsed = raw(0)?;
    let warmup = 1000;
    let sender = fork_pinned(Some(1), move || {
        let payload = vec![b'x'; size];
        for _ in 0..warmup + n {
            let r = if batched {
                w.send_bytes_batched(&payload, 0, None)
            } else {
                w.send_bytes(&payload, 0, None)
            };
            if r.is_err() {
                return 2;
            }
        }
        if w.flush().is_err() {
            return 2;
        }
        0
    });
    let e2 = elapsed.clone();
    let receiver = fork_pinned(Some(0), move || {
        let mut buf = vec![0u8; size];
        for _ in 0..warmup {
            if r.recv_bytes_into(&mut buf, 0).is_err() {
                return 2;
            }
        }
        let t0 = now_ns();
        let mut acc = 0u64;
        for _ in 0..n {
            match r.recv_bytes_into(&mut buf, 0) {
                Ok(len) if len == size => acc = acc.wrapping_add(fold(&buf)),
                _ => return 3,
            }
        }
        std::hint::black_box(acc);
        e2.store(now_ns() - t0);
        0
    });
    wait_all(&mut [receiver, sender], WAIT)?;
    let secs = elapsed.load() as f64 / 1e9;
    Ok(vec![
        (n as f64 / secs, "msgs/s"),
        (n as f64 * size as f64 / secs / 1e6, "MB/s"),
    ])
}

/// `k` producers and `k` consumers move `n` small integers through one `Queue<u64>`
/// (postcard-encoded); msgs/s from the go signal to the last consumer's sentinel. With `k == 1`
/// the two sides are pinned to CPUs 0 and 1.
pub fn queue_bench(k: u64, n: u64) -> Result<f64, String> {
    let q: Queue<u64> = Queue::new(8192).map_err(|e| e.to_string())?;
    let go = raw(0)?;
    let ready = Queue::<u8>::new(64).map_err(|e| e.to_string())?;
    let ends: Vec<RawValue<u64>> = (0..k).map(|_| raw(0)).collect::<Result<_, _>>()?;
    let counts: Vec<RawValue<u64>> = (0..k).map(|_| raw(0)).collect::<Result<_, _>>()?;
    let mut kids = Vec::new();
    for i in 0..k {
        let share = n / k + u64::from(i < n % k);
        let (q, go, ready) = (q.clone(), go.clone(), ready.clone());
        kids.push(fork_pinned((k == 1).then_some(0), move || {
            let _ = ready.put(1);
            while go.load() == 0 {
                std::hint::spin_loop();
            }
            for x in 0..share {
                if q.put(x).is_err() {
                    return 2;
                }
            }
            if q.put(u64::MAX).is_err() {
                return 3;
            }
            0
        }));
    }
    for j in 0..k as usize {
        let (q, go, ready) = (q.clone(), go.clone(), ready.clone());
        let (end, count) = (ends[j].clone(), counts[j].clone());
        kids.push(fork_pinned((k == 1).then_some(1), move || {
            let _ = ready.put(1);
            while go.load() == 0 {
                std::hint::spin_loop();
            }
            let mut got = 0;
            loop {
                match q.get() {
                    Ok(u64::MAX) => break,
                    Ok(_) => got += 1,
                    Err(_) => return 2,
                }
            }
            end.store(now_ns());
            count.store(got);
            0
        }));
    }
    for _ in 0..2 * k {
        ready.get_timeout(WAIT).map_err(|e| e.to_string())?;
    }
    let t0 = now_ns();
    go.store(1);
    wait_all(&mut kids, WAIT)?;
    let total: u64 = counts.iter().map(RawValue::load).sum();
    if total != n {
        return Err(format!("consumers got {total} messages, expected {n}"));
    }
    let end = ends.iter().map(RawValue::load).max().unwrap_or(t0);
    Ok(n as f64 / ((end - t0) as f64 / 1e9))
}

/// ipc-channel round trip of a small integer (two typed channels); `spin`: receives busy-poll
/// `try_recv`, else they block in `recv`.
pub fn ipc_rtt(n: u64, spin: bool) -> Result<Lat, String> {
    use ipc_channel::ipc::{IpcReceiver, TryRecvError};
    fn get(rx: &IpcReceiver<u64>, spin: bool) -> Result<u64, String> {
        if !spin {
            return rx.recv().map_err(|e| format!("{e:?}"));
        }
        loop {
            match rx.try_recv() {
                Ok(x) => return Ok(x),
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }
    let (to_tx, to_rx) = ipc_channel::ipc::channel::<u64>().map_err(|e| e.to_string())?;
    let (back_tx, back_rx) = ipc_channel::ipc::channel::<u64>().map_err(|e| e.to_string())?;
    let ping: Setup = Box::new(move |_pg| {
        Ok(Box::new(move |i: u64| {
            to_tx.send(i).map_err(|e| e.to_string())?;
            match get(&back_rx, spin)? {
                x if x == i => Ok(()),
                x => Err(format!("echo {x} for {i}")),
            }
        }) as Step)
    });
    let pong: Setup = Box::new(move |_pg| {
        Ok(Box::new(move |_i: u64| {
            let x = get(&to_rx, spin)?;
            back_tx.send(x).map_err(|e| e.to_string())
        }) as Step)
    });
    rtt_pair(1000.min(n), n, ping, pong)
}

/// ipc-channel one-way stream of `size`-byte messages over an `IpcBytesSender`.
pub fn ipc_stream(size: usize, n: u64) -> Result<Vec<(f64, &'static str)>, String> {
    let (tx, rx) = ipc_channel::ipc::bytes_channel().map_err(|e| e.to_string())?;
    let elapsed = raw(0)?;
    let warmup = 1000;
    let sender = fork_pinned(Some(1), move || {
        let payload = vec![b'x'; size];
        for _ in 0..warmup + n {
            if tx.send(&payload).is_err() {
                return 2;
            }
        }
        0
    });
    let e2 = elapsed.clone();
    let receiver = fork_pinned(Some(0), move || {
        for _ in 0..warmup {
            if rx.recv().is_err() {
                return 2;
            }
        }
        let t0 = now_ns();
        let mut acc = 0u64;
        for _ in 0..n {
            match rx.recv() {
                Ok(v) if v.len() == size => acc = acc.wrapping_add(fold(&v)),
                _ => return 3,
            }
        }
        std::hint::black_box(acc);
        e2.store(now_ns() - t0);
        0
    });
    wait_all(&mut [receiver, sender], WAIT)?;
    let secs = elapsed.load() as f64 / 1e9;
    Ok(vec![
        (n as f64 / secs, "msgs/s"),
        (n as f64 * size as f64 / secs / 1e6, "MB/s"),
    ])
}
