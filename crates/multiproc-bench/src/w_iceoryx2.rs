//! iceoryx2 as a peer on the ring workloads: its publish-subscribe service over shared memory,
//! between the same two pinned processes as multiproc's rings.
//!
//! Round trip: two `u64` services (ping, pong), each side busy-polling `receive()` (iceoryx2's
//! fastest mode, the counterpart of `rtt_8B_spin`), or sleeping in an event `Listener` that the
//! sender notifies (the counterpart of `rtt_8B_blocking`). Streams: a `[u8]` service with a
//! subscriber buffer of 1024 samples, no overflow, and `RetryUntilDelivered` back-pressure, so
//! nothing is dropped; every sample is loaned, written in full, sent, received and read in full
//! in place (the rows are labelled `iceoryx2-loan`: no copy out of shared memory).

use crate::lat::{Lat, Setup, Step, rtt_pair};
use crate::w_ring::{EXTRA, Page, RESULT, fold, run_sides, timed};
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;

/// How long a side waits for a sample before the run is reported as stalled.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);
use std::sync::atomic::Ordering;
use std::time::Instant;

fn e<T: std::fmt::Debug>(x: T) -> String {
    format!("iceoryx2: {x:?}")
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "multiproc-bench/{tag}/{}/{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Both sides call this after creating their ports, so no sample is sent before the peer exists.
fn rendezvous(pg: Page, parties: u64) {
    pg.u64(EXTRA).fetch_add(1, Ordering::AcqRel);
    while pg.u64(EXTRA).load(Ordering::Acquire) < parties {
        std::hint::spin_loop();
    }
}

fn node() -> Result<Node<ipc::Service>, String> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().create::<ipc::Service>().map_err(e)
}

/// Round trip of one u64. `block == false`: both sides busy-poll `receive()` (iceoryx2's
/// fastest mode). `block == true`: each side also opens an event service and, after sending,
/// notifies it; the waiting side sleeps in its `Listener::timed_wait` (iceoryx2's blocking wait)
/// until a sample is there.
pub fn rtt(n: u64, block: bool) -> Result<Lat, String> {
    let (ping_name, pong_name) = (unique("ping"), unique("pong"));
    let (ping_name2, pong_name2) = (ping_name.clone(), pong_name.clone());
    let setup = move |pg: Page, out: String, inp: String, leader: bool| -> Result<Step, String> {
        let node = node()?;
        let svc = |name: &str| {
            let sn: ServiceName = name.try_into().map_err(e)?;
            node.service_builder(&sn)
                .publish_subscribe::<u64>()
                .open_or_create()
                .map_err(e)
        };
        let ev = |name: &str| {
            let sn: ServiceName = format!("{name}/ev").as_str().try_into().map_err(e)?;
            node.service_builder(&sn)
                .event()
                .open_or_create()
                .map_err(e)
        };
        let (so, si) = (svc(&out)?, svc(&inp)?);
        let publisher = so.publisher_builder().create().map_err(e)?;
        let subscriber = si.subscriber_builder().create().map_err(e)?;
        let (eo, ei) = (ev(&out)?, ev(&inp)?);
        let notifier = eo.notifier_builder().create().map_err(e)?;
        let listener = ei.listener_builder().create().map_err(e)?;
        rendezvous(pg, 2);
        publisher.update_connections().map_err(e)?;
        subscriber.update_connections().map_err(e)?;
        rendezvous(pg, 4);
        let send = move |i: u64| -> Result<(), String> {
            publisher
                .loan_uninit()
                .map_err(e)?
                .write_payload(i)
                .send()
                .map_err(e)?;
            if block {
                notifier.notify().map_err(e)?;
            }
            Ok(())
        };
        let recv = move |i: u64| -> Result<(), String> {
            let t = Instant::now();
            loop {
                if t.elapsed() > STALL {
                    return Err(format!("iceoryx2: no sample {i} within {STALL:?}"));
                }
                if let Some(s) = subscriber.receive().map_err(e)? {
                    if *s.payload() != i {
                        return Err(format!("iceoryx2: got {} expected {i}", s.payload()));
                    }
                    return Ok(());
                }
                if block {
                    listener
                        .timed_wait(|_| {}, std::time::Duration::from_secs(1))
                        .map_err(e)?;
                } else {
                    std::hint::spin_loop();
                }
            }
        };
        let _keep = node;
        Ok(Box::new(move |i: u64| {
            let _ = &_keep;
            if leader {
                send(i)?;
                recv(i)
            } else {
                recv(i)?;
                send(i)
            }
        }) as Step)
    };
    let setup2 = setup;
    let ping: Setup = Box::new(move |pg| setup(pg, ping_name, pong_name, true));
    let pong: Setup = Box::new(move |pg| setup2(pg, pong_name2, ping_name2, false));
    rtt_pair(1000.min(n), n, ping, pong)
}

/// Seconds for `n` samples of `size` bytes from one process to the other.
pub fn stream(size: usize, n: u64) -> Result<f64, String> {
    let name = unique("stream");
    let name2 = name.clone();
    let service = |node: &Node<ipc::Service>, name: &str| {
        let sn: ServiceName = name.try_into().map_err(e)?;
        node.service_builder(&sn)
            .publish_subscribe::<[u8]>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(1024)
            .history_size(0)
            .open_or_create()
            .map_err(e)
    };
    let code = |r: Result<(), String>| match r {
        Ok(()) => 0,
        Err(m) => {
            eprintln!("{m}");
            3
        }
    };
    let producer = Box::new(move |pg: Page| {
        code((|| {
            let node = node()?;
            let svc = service(&node, &name)?;
            let publisher = svc
                .publisher_builder()
                .initial_max_slice_len(size)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .map_err(e)?;
            let src = vec![0x5au8; size];
            rendezvous(pg, 2);
            publisher.update_connections().map_err(e)?;
            rendezvous(pg, 4);
            for _ in 0..n {
                publisher
                    .loan_slice_uninit(size)
                    .map_err(e)?
                    .write_from_slice(&src)
                    .send()
                    .map_err(e)?;
            }
            Ok(())
        })())
    });
    let consumer = Box::new(move |pg: Page| {
        code((|| {
            let node = node()?;
            let svc = service(&node, &name2)?;
            let subscriber = svc
                .subscriber_builder()
                .buffer_size(1024)
                .create()
                .map_err(e)?;
            rendezvous(pg, 2);
            subscriber.update_connections().map_err(e)?;
            rendezvous(pg, 4);
            let t = Instant::now();
            let (mut got, mut acc) = (0u64, 0u64);
            let mut last = Instant::now();
            while got < n {
                match subscriber.receive().map_err(e)? {
                    Some(s) => {
                        acc = acc.wrapping_add(fold(s.payload()));
                        got += 1;
                        last = Instant::now();
                    }
                    None => {
                        std::hint::spin_loop();
                        if last.elapsed() > STALL {
                            return Err(format!("iceoryx2: stalled after {got} of {n} samples"));
                        }
                    }
                }
            }
            std::hint::black_box(acc);
            pg.u64(RESULT)
                .store(t.elapsed().as_nanos() as u64, Ordering::Release);
            Ok(())
        })())
    });
    let (_, pg) = run_sides(vec![(0, producer), (1, consumer)])?;
    Ok(timed(pg))
}
