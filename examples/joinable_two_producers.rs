//! A `JoinableQueue` fed by two producer processes, drained by two daemon consumers, with
//! `join()` in main (Python's `JoinableQueue.join`: wait until every item put was marked done):
//!
//! ```python
//! def producer(q, name):
//!     for i in range(5): q.put(f'{name}-{i}')
//! def consumer(q, done):
//!     while True:
//!         item = q.get(); done.put(item); q.task_done()
//! q = JoinableQueue()
//! for _ in range(2): Process(target=consumer, args=(q, done), daemon=True).start()
//! ps = [Process(target=producer, args=(q, n)) for n in ('apples', 'pears')]
//! for p in ps: p.start()
//! for p in ps: p.join()
//! q.join()                       # every item was task_done()
//! ```
//!
//! `q.join()` returns once the count of unfinished items (each `put` adds one, each
//! `task_done` removes one) is zero. The producers are joined first so that all their puts are
//! counted; the consumers are daemons, stopped when `main` returns, as in Python.
//!
//! Run: `cargo run --example joinable_two_producers`

use multiproc::{JoinableQueue, Process, Queue};

#[multiproc::task]
fn producer(q: JoinableQueue<String>, name: String) {
    for i in 0..5 {
        q.put(format!("{name}-{i}")).expect("put");
    }
}

#[multiproc::task]
fn consumer(q: JoinableQueue<String>, done: Queue<String>) {
    while let Ok(item) = q.get() {
        done.put(item).expect("put");
        q.task_done().expect("task_done");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let q: JoinableQueue<String> = JoinableQueue::new(64)?;
    let done: Queue<String> = Queue::new(64)?;
    let _consumers: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .daemon(true)
                .spawn(consumer, (q.clone(), done.clone()))
        })
        .collect::<Result<_, _>>()?;
    let producers: Vec<_> = ["apples", "pears"]
        .into_iter()
        .map(|n| Process::spawn(producer, (q.clone(), n.to_string())))
        .collect::<Result<_, _>>()?;
    for mut p in producers {
        p.join()?;
    }
    q.join(); // until the consumers called task_done() for all ten items
    let mut items: Vec<String> = (0..10).map(|_| done.get()).collect::<Result<_, _>>()?;
    items.sort();
    println!("all {} items done: {items:?}", items.len());
    assert_eq!(items.len(), 10);
    Ok(())
}
