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

use crate::harness::{fork_pinned, wait_all};
use crate::{Config, Record, python};
use multiproc::channel::{Pipe, Queue};
use multiproc::{RawValue, WaitStrategy};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// Runs this module's workloads.
pub fn run(cfg: &Config, out: &mut Vec<Record>) {
    let q = cfg.quick;
    if cfg.wants("pipe_rtt_small") {
        let n = if q { 50_000 } else { 300_000 };
        report(
            out,
            "pipe_rtt_small",
            pipe_rtt_small(n, WaitStrategy::default()).map(|us| vec![(us, "us")]),
        );
        if std::env::var_os("MULTIPROC_BENCH_SPIN").is_some() {
            report(
                out,
                "pipe_rtt_small",
                pipe_rtt_small(n, WaitStrategy::Spin).map(|us| vec![(us, "us (spin)")]),
            );
        }
        match crate::w_ring::rtt_uds(n / 5) {
            Ok(ns) => out.push(Record::new(
                "pipe_rtt_small",
                "uds-postcard",
                ns / 1e3,
                "us",
            )),
            Err(e) => eprintln!("pipe_rtt_small uds-postcard: {e}"),
        }
        match ipc_rtt(n / 5) {
            Ok(us) => out.push(Record::new("pipe_rtt_small", "ipc-channel", us, "us")),
            Err(e) => eprintln!("pipe_rtt_small ipc-channel: {e}"),
        }
        out.extend(python::run("pipe_rtt_small", q, &[]));
    }
    for (name, size, nq, nf) in [
        ("pipe_stream_8B", 8, 2_000_000, 10_000_000),
        ("pipe_stream_64B", 64, 2_000_000, 10_000_000),
        ("pipe_stream_4KiB", 4096, 200_000, 1_000_000),
        ("pipe_stream_64KiB", 65536, 20_000, 100_000),
    ] {
        if cfg.wants(name) {
            let n = if q { nq } else { nf };
            report(out, name, pipe_stream(size, n));
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
                Err(e) => eprintln!("{name} uds-postcard: {e}"),
            }
            match ipc_stream(size, n_uds) {
                Ok(v) => {
                    for (value, unit) in v {
                        out.push(Record::new(name, "ipc-channel", value, unit));
                    }
                }
                Err(e) => eprintln!("{name} ipc-channel: {e}"),
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
    }
    if cfg.wants("queue_mpmc_2p2c_small") {
        let n = if q { 1_000_000 } else { 4_000_000 };
        report(
            out,
            "queue_mpmc_2p2c_small",
            queue_bench(2, n).map(|v| vec![(v, "msgs/s")]),
        );
        out.extend(python::run("queue_mpmc_2p2c_small", q, &[]));
    }
}

fn report(out: &mut Vec<Record>, name: &str, r: Result<Vec<(f64, &'static str)>, String>) {
    match r {
        Ok(v) => {
            for (value, unit) in v {
                out.push(Record::new(name, "multiproc", value, unit));
            }
        }
        Err(e) => eprintln!("{name} multiproc: {e}"),
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

/// µs per round trip of a small integer: a child on CPU 0 sends and waits for the echo from a
/// child on CPU 1.
pub fn pipe_rtt_small(n: u64, strategy: WaitStrategy) -> Result<f64, String> {
    let (mut a, mut b) = Pipe::duplex::<u64>().map_err(|e| e.to_string())?;
    a.set_wait_strategy(strategy);
    b.set_wait_strategy(strategy);
    let elapsed = raw(0)?;
    let warmup = 10_000;
    let echo = fork_pinned(Some(1), move || {
        loop {
            match b.recv() {
                Ok(u64::MAX) => return 0,
                Ok(x) => {
                    if b.send(&x).is_err() {
                        return 2;
                    }
                }
                Err(_) => return 3,
            }
        }
    });
    let e2 = elapsed.clone();
    let driver = fork_pinned(Some(0), move || {
        let mut t0 = 0;
        for i in 0..warmup + n {
            if i == warmup {
                t0 = now_ns();
            }
            if a.send(&i).is_err() {
                return 2;
            }
            match a.recv() {
                Ok(x) if x == i => {}
                _ => return 3,
            }
        }
        e2.store(now_ns() - t0);
        if a.send(&u64::MAX).is_err() {
            return 4;
        }
        0
    });
    wait_all(&mut [driver, echo], WAIT)?;
    Ok(elapsed.load() as f64 / n as f64 / 1e3)
}

/// One-way `send_bytes` of `size` bytes from a child on CPU 1 to a child on CPU 0 (receiving
/// with `recv_bytes_into`); msgs/s and MB/s.
pub fn pipe_stream(size: usize, n: u64) -> Result<Vec<(f64, &'static str)>, String> {
    let (mut r, mut w) = Pipe::simplex::<u8>().map_err(|e| e.to_string())?;
    let elapsed = raw(0)?;
    let warmup = 1000;
    let sender = fork_pinned(Some(1), move || {
        let payload = vec![b'x'; size];
        for _ in 0..warmup + n {
            if w.send_bytes(&payload, 0, None).is_err() {
                return 2;
            }
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
        for _ in 0..n {
            match r.recv_bytes_into(&mut buf, 0) {
                Ok(len) if len == size => {}
                _ => return 3,
            }
        }
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
    let q: Queue<u64> = Queue::new(0).map_err(|e| e.to_string())?;
    let go = raw(0)?;
    let ready = Queue::<u8>::new(0).map_err(|e| e.to_string())?;
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

/// ipc-channel round trip of a small integer (two typed channels), µs.
pub fn ipc_rtt(n: u64) -> Result<f64, String> {
    let (to_tx, to_rx) = ipc_channel::ipc::channel::<u64>().map_err(|e| e.to_string())?;
    let (back_tx, back_rx) = ipc_channel::ipc::channel::<u64>().map_err(|e| e.to_string())?;
    let elapsed = raw(0)?;
    let warmup = 1000;
    let echo = fork_pinned(Some(1), move || {
        loop {
            match to_rx.recv() {
                Ok(u64::MAX) => return 0,
                Ok(x) => {
                    if back_tx.send(x).is_err() {
                        return 2;
                    }
                }
                Err(_) => return 3,
            }
        }
    });
    let e2 = elapsed.clone();
    let driver = fork_pinned(Some(0), move || {
        let mut t0 = 0;
        for i in 0..warmup + n {
            if i == warmup {
                t0 = now_ns();
            }
            if to_tx.send(i).is_err() {
                return 2;
            }
            match back_rx.recv() {
                Ok(x) if x == i => {}
                _ => return 3,
            }
        }
        e2.store(now_ns() - t0);
        if to_tx.send(u64::MAX).is_err() {
            return 4;
        }
        0
    });
    wait_all(&mut [driver, echo], WAIT)?;
    Ok(elapsed.load() as f64 / n as f64 / 1e3)
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
        for _ in 0..n {
            match rx.recv() {
                Ok(v) if v.len() == size => {}
                _ => return 3,
            }
        }
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
