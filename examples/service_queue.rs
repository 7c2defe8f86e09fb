//! The service pattern: one producer process feeds several consumer processes through a
//! `Queue`; each consumer loops `for job in rx.iter()` and ends by itself once the producer is
//! gone and the queue is drained (`GetError::Disconnected`): no sentinel, no counting. The
//! parent only joins.
//!
//! Python needs a sentinel per consumer (`q.put(None)` four times) because its queues never
//! disconnect; crossbeam users expect the loop to end when the last sender is dropped, and here
//! it does, across processes (a producer that crashes ends it too: its death is noticed).
//!
//! Run: `cargo run --example service_queue`

use multiproc::channel::{Receiver, Sender};
use multiproc::{Process, Queue};

const JOBS: u64 = 1000;
const CONSUMERS: usize = 4;

#[multiproc::task]
fn produce(tx: Sender<u64>) -> u64 {
    for job in 1..=JOBS {
        tx.put(job).expect("a consumer is still there");
    }
    JOBS
    // `tx` is dropped here: the last producer is gone, consumers drain and stop.
}

#[multiproc::task]
fn consume(rx: Receiver<u64>) -> (u64, u64) {
    let (mut n, mut sum) = (0, 0);
    for job in rx.iter() {
        let job = job.expect("a job");
        n += 1;
        sum += job;
    }
    (n, sum) // the iterator ended: Disconnected
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let q: Queue<u64> = Queue::new(64)?;
    let mut consumers = (0..CONSUMERS)
        .map(|_| Process::spawn(consume, q.receiver()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut producer = Process::spawn(produce, q.sender())?;
    // The parent neither puts nor gets: drop its handle, or it would count as a producer
    // (every full `Queue` handle is both) and the consumers would wait for it forever.
    drop(q);

    let put = producer.join()?;
    let (mut n, mut sum) = (0, 0);
    for (i, c) in consumers.iter_mut().enumerate() {
        let (cn, csum) = c.join()?;
        println!(
            "consumer {i} (pid {}) handled {cn} jobs",
            c.pid().unwrap_or(0)
        );
        n += cn;
        sum += csum;
    }
    println!("producer put {put} jobs; consumers handled {n}, sum {sum}");
    assert_eq!(n, JOBS);
    assert_eq!(sum, JOBS * (JOBS + 1) / 2);
    Ok(())
}
