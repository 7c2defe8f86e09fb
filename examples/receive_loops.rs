//! Two ways a receive loop ends, as in Python's guides:
//!
//! ```python
//! def producer(conn):                      # Pipe: the reader stops on EOFError
//!     for i in range(5): conn.send(i)
//!     conn.close()
//! reader, writer = Pipe(duplex=False)
//! Process(target=producer, args=(writer,)).start(); writer.close()
//! while True:
//!     try: print(reader.recv())
//!     except EOFError: break
//!
//! def worker(q, out):                      # Queue: each consumer stops on a None sentinel
//!     for item in iter(q.get, None): out.put(item * item)
//! for _ in range(2): q.put(None)           # one sentinel per consumer
//! ```
//!
//! * A [`Connection`] reports `RecvError::Eof` once the other end is closed (or its process
//!   died) and everything it sent was read: the loop ends by itself.
//! * A `Queue<Option<T>>` carries `None` as an end-of-work sentinel: the producer puts one per
//!   consumer after the work, each consumer stops at the first it gets.
//!
//! Run: `cargo run --example receive_loops`

use multiproc::{Connection, Pipe, Process, Queue, RecvError};

#[multiproc::task]
fn producer(mut conn: Connection<u32>) {
    for i in 0..5 {
        conn.send(&i).expect("send");
    }
    conn.close(); // the reader's next recv after the last message is Eof
}

#[multiproc::task]
fn worker(q: Queue<Option<u64>>, out: Queue<(u32, u64)>) -> usize {
    let mut done = 0;
    // `for item in iter(q.get, None)`: stop at the sentinel.
    while let Ok(Some(item)) = q.get() {
        out.put((std::process::id(), item * item)).expect("put");
        done += 1;
    }
    done
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();

    // 1. A pipe read until EOF.
    let (mut reader, writer) = Pipe::simplex::<u32>()?;
    let mut p = Process::spawn(producer, writer)?; // the parent keeps no copy of the writer
    let mut got = Vec::new();
    loop {
        match reader.recv() {
            Ok(v) => got.push(v),
            Err(RecvError::Eof) => break, // Python's EOFError
            Err(e) => return Err(e.into()),
        }
    }
    p.join()?;
    println!("pipe: received {got:?}, then EOF");
    assert_eq!(got, vec![0, 1, 2, 3, 4]);

    // 2. A queue read until a None sentinel, one per consumer.
    let consumers = 2;
    let q: Queue<Option<u64>> = Queue::new(64)?;
    let out: Queue<(u32, u64)> = Queue::new(64)?;
    let workers: Vec<_> = (0..consumers)
        .map(|_| Process::spawn(worker, (q.clone(), out.clone())))
        .collect::<Result<_, _>>()?;
    for i in 1..=10 {
        q.put(Some(i))?;
    }
    for _ in 0..consumers {
        q.put(None)?; // one sentinel per consumer
    }
    let mut handled = 0;
    for mut w in workers {
        handled += w.join()?;
    }
    let mut squares: Vec<u64> = (0..handled)
        .map(|_| out.get().map(|(_, s)| s))
        .collect::<Result<_, _>>()?;
    squares.sort_unstable();
    println!(
        "queue: {handled} items squared by {consumers} workers, each stopped at its None: {squares:?}"
    );
    assert_eq!(squares, (1..=10u64).map(|i| i * i).collect::<Vec<_>>());
    Ok(())
}
