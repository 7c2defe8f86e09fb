//! Criterion benches of the channel layer: a pipe round trip to a forked echo process, and
//! same-process send/recv and put/get costs (encode + ring + decode, no waiting).

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_channel::{Pipe, PipeOptions, Plain, Queue};
use multiproc_testutil::fork;
use std::hint::black_box;
use std::time::Duration;

fn pipe_rtt(c: &mut Criterion) {
    let (mut a, mut b) = Pipe::duplex::<u64>().unwrap();
    // The bench process is single-threaded here; the child only echoes, then `_exit`s.
    let child = fork(|| {
        loop {
            match b.recv() {
                Ok(x) if b.send(&x).is_ok() => {}
                _ => break,
            }
        }
        0
    });
    c.bench_function("pipe_rtt_u64_cross_process", |bn| {
        let mut i = 0u64;
        bn.iter(|| {
            i += 1;
            a.send(&i).unwrap();
            black_box(a.recv_timeout(Duration::from_secs(10)).unwrap());
        })
    });
    a.close();
    // It sees EOF and exits.
    child.join_ok();
}

/// A put/get round trip through two queues to a forked echo process (the child gets from `a`
/// and puts into `b`), each handle set up by `setup` (its wait strategy).
fn queue_rtt_with(c: &mut Criterion, name: &str, setup: fn(&mut Queue<u64>)) {
    let mut a: Queue<u64> = Queue::new(64).unwrap();
    let mut b: Queue<u64> = Queue::new(64).unwrap();
    setup(&mut a);
    setup(&mut b);
    // The bench process is single-threaded here; the child only echoes, then `_exit`s.
    let child = fork(|| {
        loop {
            match a.get_timeout(Duration::from_secs(30)) {
                Ok(0) | Err(_) => break,
                Ok(x) if b.put(x).is_ok() => {}
                Ok(_) => break,
            }
        }
        0
    });
    c.bench_function(name, |bn| {
        let mut i = 0u64;
        bn.iter(|| {
            i += 1;
            a.put(i).unwrap();
            black_box(b.get_timeout(Duration::from_secs(10)).unwrap());
        })
    });
    a.put(0).unwrap();
    // It sees the 0 and exits.
    child.join_ok();
}

fn queue_rtt(c: &mut Criterion) {
    use multiproc_sync::park::WaitStrategy;
    queue_rtt_with(c, "queue_rtt_u64_cross_process", |_| {});
    queue_rtt_with(c, "queue_rtt_u64_cross_process_spin", |q| {
        q.set_wait_strategy(WaitStrategy::Spin)
    });
    queue_rtt_with(c, "queue_rtt_u64_cross_process_park", |q| {
        q.set_wait_strategy(WaitStrategy::Park)
    });
}

/// One-way stream of 8-byte `send_bytes` to a forked reader (the pipe_stream_8B workload of
/// multiproc-bench): one by one, and batched (`send_bytes_batched`, one `flush` per sample).
/// The reader answers a 1-byte marker once it has read everything before it.
fn pipe_stream(c: &mut Criterion) {
    let (mut a, mut b) = Pipe::duplex::<()>().unwrap();
    // The bench process is single-threaded here; the child only reads, then `_exit`s.
    let child = fork(|| {
        let mut buf = [0u8; 8];
        loop {
            match b.recv_bytes_into(&mut buf, 0) {
                Ok(8) => {}
                Ok(1) if b.send_bytes(b"k", 0, None).is_ok() => {}
                _ => break,
            }
        }
        0
    });
    let mut g = c.benchmark_group("pipe_stream_8B");
    g.throughput(criterion::Throughput::Elements(1));
    for batched in [false, true] {
        let name = if batched {
            "send_bytes_batched"
        } else {
            "send_bytes"
        };
        g.bench_function(name, |bn| {
            bn.iter_custom(|iters| {
                let t = std::time::Instant::now();
                for i in 0..iters {
                    let m = i.to_le_bytes();
                    if batched {
                        a.send_bytes_batched(&m, 0, None).unwrap();
                    } else {
                        a.send_bytes(&m, 0, None).unwrap();
                    }
                }
                a.send_bytes(b"m", 0, None).unwrap();
                black_box(a.recv_bytes_timeout(Duration::from_secs(10)).unwrap());
                t.elapsed()
            })
        });
    }
    g.finish();
    a.close();
    // It sees EOF and exits.
    child.join_ok();
}

fn same_process(c: &mut Criterion) {
    let (mut a, mut b) = Pipe::duplex::<(u32, String)>().unwrap();
    let msg = (7u32, "a short message".to_string());
    c.bench_function("pipe_send_recv_postcard_struct", |bn| {
        bn.iter(|| {
            a.send(black_box(&msg)).unwrap();
            black_box(b.recv().unwrap());
        })
    });
    let (mut a, mut b) = Pipe::duplex_with::<[u64; 8], Plain>(PipeOptions::default()).unwrap();
    c.bench_function("pipe_send_recv_plain_64B", |bn| {
        bn.iter(|| {
            a.send(black_box(&[1u64; 8])).unwrap();
            black_box(b.recv().unwrap());
        })
    });
    let mut buf = [0u8; 4096];
    let payload = vec![3u8; 4096];
    c.bench_function("pipe_send_bytes_recv_bytes_into_4KiB", |bn| {
        bn.iter(|| {
            a.send_bytes(black_box(&payload), 0, None).unwrap();
            black_box(b.recv_bytes_into(&mut buf, 0).unwrap());
        })
    });
    let q: Queue<u64> = Queue::new(1024).unwrap();
    c.bench_function("queue_put_get_u64", |bn| {
        bn.iter(|| {
            q.put(black_box(5)).unwrap();
            black_box(q.get().unwrap());
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = pipe_rtt, pipe_stream, queue_rtt, same_process
}
criterion_main!(benches);
