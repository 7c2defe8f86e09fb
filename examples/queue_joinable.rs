//! Seeds 000 and 001 ("JoinableQueue"): consumers call `task_done` for every item, the
//! producer side `join`s until all were processed.
//!
//! Python (seed 001, 方法二):
//! ```python
//! def consumer(q, name):
//!     while 1:
//!         fruits = q.get()
//!         print('%s 购买了 %s' % (name, fruits))
//!         q.task_done()
//! def producer(q, name, fruits):
//!     for i in range(1, 4):
//!         print('%s 采摘了 %s%s' % (name, fruits, i))
//!         q.put(fruits + str(i))
//!     q.join()
//! q = JoinableQueue()
//! c1 = Process(target=consumer, args=(q, '小白')); c1.daemon = True; c1.start()
//! c2 = Process(target=consumer, args=(q, '小黑')); c2.daemon = True; c2.start()
//! p1 = Process(target=producer, args=(q, '果农', '苹果')); p1.start()
//! p1.join()
//! ```
//! And seed 000: a worker loops `for item in iter(broker.get, None)`, the main process puts ten
//! tasks, `broker.join()`, then `broker.put(None)`.
//!
//! Python's consumers are daemons that loop forever; here too: `Process::builder().daemon(true)`,
//! and the daemons are terminated when `main` returns, as in Python.
//! Run: `cargo run --example queue_joinable`

use multiproc::{JoinableQueue, Process};

#[multiproc::task]
fn consumer(q: JoinableQueue<String>, name: String) {
    while let Ok(fruits) = q.get() {
        println!("{name} 购买了 {fruits}");
        q.task_done().expect("task_done");
    }
}

#[multiproc::task]
fn producer(q: JoinableQueue<String>, name: String, fruits: String) {
    for i in 1..=3 {
        println!("{name} 采摘了 {fruits}{i}");
        q.put(format!("{fruits}{i}")).expect("put");
    }
    q.join(); // until the consumers marked every item done
}

#[multiproc::task]
fn worker(broker: JoinableQueue<Option<i32>>) {
    while let Ok(Some(item)) = broker.get() {
        println!("Receive item {item}");
        broker.task_done().expect("task_done");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let q: JoinableQueue<String> = JoinableQueue::new(1024)?;
    for name in ["小白", "小黑"] {
        // c.daemon = True; c.start()
        Process::builder()
            .daemon(true)
            .spawn(consumer, (q.clone(), name.to_string()))?;
    }
    let mut p1 = Process::spawn(producer, (q.clone(), "果农".into(), "苹果".into()))?;
    p1.join()?;

    // Seed 000: a worker with a sentinel.
    let broker: JoinableQueue<Option<i32>> = JoinableQueue::new(1024)?;
    let mut p = Process::spawn(worker, broker.clone())?;
    for i in 0..10 {
        broker.put(Some(i))?;
    }
    broker.join();
    broker.put(None)?;
    p.join()?;
    Ok(())
}
