//! Wake latency of the async path: a tokio task ping-pongs a `u64` with a forked child that
//! uses the blocking API, and prints the round-trip percentiles of
//! * `async`: `send_async` + `recv_async` on a 2-worker runtime (woken through the notifier),
//! * `blocking`: the same loop with blocking `send`/`recv` on a plain thread (the floor),
//! * `bridge`: the workaround the issue measured, a `spawn_blocking` thread doing blocking
//!   `recv` and forwarding into a `tokio::sync::mpsc` channel,
//! * `tokio-uds`: a tokio `UnixStream` with length-prefixed postcard frames, the child echoing
//!   with a blocking `std` `UnixStream` (the issue's `tokio-uds-postcard` system).
//!
//! Run: `cargo run --release -p multiproc-channel --example async_rtt [-- ROUNDS]`
//! (numbers in docs/async.md).

use multiproc_channel::{Connection, Pipe};
use std::time::{Duration, Instant};

fn fork_echo(mut end: Connection<u64>) -> libc::pid_t {
    // SAFETY: the child only runs the echo loop on pre-built shared objects, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let _ = end.bind();
        while let Ok(v) = end.recv() {
            if end.send(&v).is_err() {
                break;
            }
        }
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: libc::pid_t) {
    // SAFETY: plain syscall on our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "{name:>9}: p50 {:>8.1?}  p99 {:>8.1?}  p99.9 {:>8.1?}  max {:>8.1?}  ({} round trips)",
        p(0.50),
        p(0.99),
        p(0.999),
        v[v.len() - 1],
        v.len()
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let warm = rounds / 10;
    let (mut a1, b1) = Pipe::duplex::<u64>().unwrap();
    let (mut a2, b2) = Pipe::duplex::<u64>().unwrap();
    let (mut a3, b3) = Pipe::duplex::<u64>().unwrap();
    let pids = [fork_echo(b1), fork_echo(b2), fork_echo(b3)];
    a1.bind().unwrap();
    a2.bind().unwrap();
    a3.bind().unwrap();

    // blocking floor
    let mut v = Vec::with_capacity(rounds);
    for i in 0..(warm + rounds) as u64 {
        let t = Instant::now();
        a2.send(&i).unwrap();
        assert_eq!(a2.recv().unwrap(), i);
        if i as usize >= warm {
            v.push(t.elapsed());
        }
    }
    drop(a2);
    report("blocking", v);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let v = rt.block_on(async move {
        tokio::spawn(async move {
            let mut v = Vec::with_capacity(rounds);
            for i in 0..(warm + rounds) as u64 {
                let t = Instant::now();
                a1.send_async(&i).await.unwrap();
                assert_eq!(a1.recv_async().await.unwrap(), i);
                if i as usize >= warm {
                    v.push(t.elapsed());
                }
            }
            v
        })
        .await
        .unwrap()
    });
    report("async", v);

    let v = rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(16);
        let (req_tx, req_rx) = std::sync::mpsc::channel::<u64>();
        // One blocking thread owns the connection: sends requests, forwards replies.
        let bridge = tokio::task::spawn_blocking(move || {
            while let Ok(i) = req_rx.recv() {
                a3.send(&i).unwrap();
                let r = a3.recv().unwrap();
                if tx.blocking_send(r).is_err() {
                    break;
                }
            }
        });
        let mut v = Vec::with_capacity(rounds);
        for i in 0..(warm + rounds) as u64 {
            let t = Instant::now();
            req_tx.send(i).unwrap();
            assert_eq!(rx.recv().await.unwrap(), i);
            if i as usize >= warm {
                v.push(t.elapsed());
            }
        }
        drop(req_tx);
        bridge.await.unwrap();
        v
    });
    report("bridge", v);
    for p in pids {
        reap(p);
    }

    // tokio-uds-postcard: the same ping-pong over a socketpair.
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // SAFETY: the child only runs the echo loop on its socket, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        use std::io::{Read, Write};
        drop(mine);
        let mut s = theirs;
        let mut len = [0u8; 4];
        let mut buf = [0u8; 64];
        while s.read_exact(&mut len).is_ok() {
            let n = u32::from_le_bytes(len) as usize;
            if n > buf.len() || s.read_exact(&mut buf[..n]).is_err() {
                break;
            }
            let v: u64 = postcard::from_bytes(&buf[..n]).unwrap_or(0);
            let out = postcard::to_slice(&v, &mut buf)
                .map(|b| b.len())
                .unwrap_or(0);
            let mut frame = [0u8; 68];
            frame[..4].copy_from_slice(&(out as u32).to_le_bytes());
            frame[4..4 + out].copy_from_slice(&buf[..out]);
            if s.write_all(&frame[..4 + out]).is_err() {
                break;
            }
        }
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(0) };
    }
    drop(theirs);
    mine.set_nonblocking(true).unwrap();
    let v = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::from_std(mine).unwrap();
        let mut v = Vec::with_capacity(rounds);
        let mut buf = [0u8; 64];
        for i in 0..(warm + rounds) as u64 {
            let t = Instant::now();
            let n = postcard::to_slice(&i, &mut buf[4..]).unwrap().len();
            buf[..4].copy_from_slice(&(n as u32).to_le_bytes());
            s.write_all(&buf[..4 + n]).await.unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.unwrap();
            let n = u32::from_le_bytes(len) as usize;
            s.read_exact(&mut buf[..n]).await.unwrap();
            assert_eq!(postcard::from_bytes::<u64>(&buf[..n]).unwrap(), i);
            if i as usize >= warm {
                v.push(t.elapsed());
            }
        }
        v
    });
    report("tokio-uds", v);
    reap(pid);

    // The idle cost: 1,000 receive futures pending on pipes nobody writes, for 2 s (each is
    // re-polled every 20 ms slice for the periodic dead-peer checks).
    let ends: Vec<_> = (0..1000)
        .map(|_| {
            Pipe::simplex_with::<u64, multiproc_channel::Postcard>(multiproc_channel::PipeOptions {
                capacity: 4096,
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    let cpu = || {
        // SAFETY: `ru` is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        Duration::from_micros(
            (ru.ru_utime.tv_sec * 1_000_000
                + ru.ru_utime.tv_usec
                + ru.ru_stime.tv_sec * 1_000_000
                + ru.ru_stime.tv_usec) as u64,
        )
    };
    rt.block_on(async move {
        let mut keep = Vec::new();
        let mut tasks = Vec::new();
        for (mut r, w) in ends {
            keep.push(w);
            tasks.push(tokio::spawn(async move { r.recv_async().await.map(drop) }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (c0, t0) = (cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (c1, t1) = (cpu(), Instant::now());
        println!(
            "     idle: 1000 pending recv_async futures: {:.1}% of one CPU ({} notifier threads)",
            (c1 - c0).as_secs_f64() * 100.0 / (t1 - t0).as_secs_f64(),
            multiproc_sync::notify::threads()
        );
        for t in tasks {
            t.abort();
        }
        drop(keep);
    });
}
