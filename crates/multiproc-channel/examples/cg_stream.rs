//! A same-process send/recv loop for instruction counts (callgrind): where the per-message
//! cost of `send_bytes` goes, next to the ring's own push/pop.
//! `valgrind --tool=callgrind target/release/examples/cg_stream MODE [ROUNDS]` with MODE one of
//! `ring`, `ring-deferred`, `pipe`, `pipe-batched`, `pipe-postcard`.

use multiproc_channel::Pipe;
use multiproc_ring::SpscRing;
use std::hint::black_box;

const BURST: u64 = 50;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "pipe".into());
    // Run twice with different round counts and divide the difference by the extra messages
    // to get a per-message count without the setup.
    let rounds: u64 = std::env::args().nth(2).map_or(2000, |s| s.parse().unwrap());
    let mut buf = [0u8; 8];
    match mode.as_str() {
        "ring" | "ring-deferred" => {
            let ring = SpscRing::new(1 << 16).unwrap();
            let mut tx = ring.producer().unwrap();
            let mut rx = ring.consumer().unwrap();
            let mut v = Vec::with_capacity(64);
            for r in 0..rounds {
                for i in 0..BURST {
                    let m = (r * BURST + i).to_le_bytes();
                    if mode == "ring" {
                        tx.push(black_box(&m)).unwrap();
                    } else {
                        tx.push_deferred(black_box(&m)).unwrap();
                    }
                }
                tx.flush();
                for _ in 0..BURST {
                    black_box(rx.pop_into(&mut v).unwrap());
                }
            }
        }
        "pipe" | "pipe-batched" => {
            let (mut r, mut w) = Pipe::simplex::<u64>().unwrap();
            for round in 0..rounds {
                for i in 0..BURST {
                    let m = (round * BURST + i).to_le_bytes();
                    if mode == "pipe" {
                        w.send_bytes(black_box(&m), 0, None).unwrap();
                    } else {
                        w.send_bytes_batched(black_box(&m), 0, None).unwrap();
                    }
                }
                w.flush().unwrap();
                for _ in 0..BURST {
                    black_box(r.recv_bytes_into(&mut buf, 0).unwrap());
                }
            }
        }
        "pipe-postcard" => {
            let (mut r, mut w) = Pipe::simplex::<u64>().unwrap();
            for round in 0..rounds {
                for i in 0..BURST {
                    w.send(black_box(&(round * BURST + i))).unwrap();
                }
                for _ in 0..BURST {
                    black_box(r.recv().unwrap());
                }
            }
        }
        m => panic!("unknown mode {m}"),
    }
}
