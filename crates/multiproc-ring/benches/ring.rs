//! Criterion benches of the rings across two forked processes pinned to CPUs 0 and 1
//! (`iter_custom`: the parent times `iters` operations against a child that echoes or drains).
//!
//! Run: `cargo bench -p multiproc-ring --bench ring`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc_ring::{MpmcRing, SpscRing, WaitStrategy};
use multiproc_testutil::{Child, fork_pinned, pin_to_cpu};
use std::time::{Duration, Instant};

const STOP: &[u8] = &[];
const MARK: &[u8] = &[0xFF];

/// A child pinned to CPU 1 serving two rings: `echo` sends every record back; otherwise it
/// drains and answers only MARK records. An empty record stops it.
struct Peer {
    child: Child,
    tx: multiproc_ring::Producer,
    rx: multiproc_ring::Consumer,
}

impl Peer {
    fn start(cap: usize, echo: bool, strategy: WaitStrategy) -> Peer {
        let ab = SpscRing::new(cap).expect("ring");
        let ba = SpscRing::new(4096).expect("ring");
        // Criterion's main thread forks; the child only uses the rings and `_exit`s.
        let child = fork_pinned(Some(1), || {
            (|| {
                let mut rx = ab.consumer().ok()?;
                let mut tx = ba.producer().ok()?;
                rx.set_wait_strategy(strategy);
                tx.set_wait_strategy(strategy);
                loop {
                    let g = rx.peek_timeout(Duration::from_secs(60)).ok()?;
                    if g.is_empty() {
                        return Some(0);
                    }
                    if echo {
                        tx.push(g.as_slice()).ok()?;
                    } else if g.as_slice() == MARK {
                        tx.push(MARK).ok()?;
                    } else {
                        std::hint::black_box(g.as_slice().first());
                    }
                    g.release();
                }
            })()
            .unwrap_or(1)
        });
        pin_to_cpu(0);
        let mut tx = ab.producer().expect("producer");
        let mut rx = ba.consumer().expect("consumer");
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        Peer { child, tx, rx }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.tx.push_timeout(STOP, Duration::from_secs(1));
        // Killed if it does not stop within 5 s.
        let _ = self.child.wait_code(Duration::from_secs(5));
    }
}

fn rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_rtt_8B");
    for (name, s) in [("spin", WaitStrategy::Spin), ("park", WaitStrategy::Park)] {
        let mut peer = Peer::start(4096, true, s);
        let mut v = Vec::with_capacity(8);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for i in 0..iters {
                    peer.tx.push(&i.to_le_bytes()).expect("push");
                    peer.rx.pop_into(&mut v).expect("pop");
                }
                t.elapsed()
            })
        });
    }
    g.finish();
}

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_stream");
    {
        let mut peer = Peer::start(1 << 16, false, WaitStrategy::SpinPark);
        let recs = [[7u8; 8]; 64];
        g.throughput(Throughput::Elements(64));
        g.bench_function("8B_batch64", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    peer.tx.push_batch(&recs).expect("push");
                }
                peer.tx.push(MARK).expect("mark");
                let mut v = Vec::new();
                peer.rx.pop_into(&mut v).expect("ack");
                t.elapsed()
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function("8B_one_by_one", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    peer.tx.push(&[7u8; 8]).expect("push");
                }
                peer.tx.push(MARK).expect("mark");
                let mut v = Vec::new();
                peer.rx.pop_into(&mut v).expect("ack");
                t.elapsed()
            })
        });
        g.bench_function("8B_deferred", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    peer.tx.push_deferred(&[7u8; 8]).expect("push");
                }
                peer.tx.push(MARK).expect("mark");
                let mut v = Vec::new();
                peer.rx.pop_into(&mut v).expect("ack");
                t.elapsed()
            })
        });
    }
    {
        let mut peer = Peer::start(1 << 21, false, WaitStrategy::SpinPark);
        let src = vec![0x5au8; 65536];
        g.throughput(Throughput::Bytes(65536));
        g.bench_function("64KiB_reserve_commit", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let mut w = peer.tx.reserve(65536).expect("reserve");
                    w.as_mut_slice().copy_from_slice(&src);
                    w.commit();
                }
                peer.tx.push(MARK).expect("mark");
                let mut v = Vec::new();
                peer.rx.pop_into(&mut v).expect("ack");
                t.elapsed()
            })
        });
    }
    g.finish();
}

fn mpmc_local(c: &mut Criterion) {
    let q = MpmcRing::new(1024, 40).expect("ring");
    let mut v = Vec::with_capacity(40);
    c.bench_function("mpmc_push_pop_8B_one_process", |b| {
        b.iter(|| {
            q.try_push(&[1u8; 8]).expect("push");
            q.try_pop_into(&mut v).expect("pop");
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = rtt, stream, mpmc_local
}
criterion_main!(benches);
