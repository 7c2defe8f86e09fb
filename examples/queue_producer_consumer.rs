//! Seed 001 ("生产者消费者模型(基于队列)"): a fruit farmer process picks ten watermelons and puts
//! them on a Queue; a consumer process buys them until it gets the `None` sentinel. Also the
//! "主进程put, 子进程get" example (five ints then `None`).
//!
//! Python:
//! ```python
//! def consumer(q, name):
//!     while 1:
//!         fruits = q.get()
//!         if fruits is None: break
//!         print('%s 购买了 %s' % (name, fruits))
//! def producer(q, name, fruits):
//!     for i in range(1, 11):
//!         print('%s 采摘了 %s%s' % (name, fruits, i))
//!         q.put(fruits + str(i))
//! q = Queue()
//! c1 = Process(target=consumer, args=(q, '小明')); c1.start()
//! p1 = Process(target=producer, args=(q, '果农', '西瓜')); p1.start()
//! p1.join()
//! q.put(None)
//! ```
//! `Queue()` holds any serde type; `None` as a sentinel needs an `Option`.
//! Run: `cargo run --example queue_producer_consumer`

use multiproc::{Process, Queue};

#[multiproc::task]
fn consumer(q: Queue<Option<String>>, name: String) {
    while let Ok(Some(fruits)) = q.get() {
        println!("{name} 购买了 {fruits}");
    }
}

#[multiproc::task]
fn producer(q: Queue<Option<String>>, name: String, fruits: String) {
    for i in 1..=10 {
        println!("{name} 采摘了 {fruits}{i}");
        q.put(Some(format!("{fruits}{i}"))).expect("put");
    }
}

#[multiproc::task]
fn getter(q: Queue<Option<i32>>) {
    while let Ok(Some(ret)) = q.get() {
        println!("{ret}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let q: Queue<Option<String>> = Queue::new(1024)?;
    let mut c1 = Process::spawn(consumer, (q.clone(), "小明".to_string()))?;
    let mut p1 = Process::spawn(producer, (q.clone(), "果农".into(), "西瓜".into()))?;
    // No feeder thread: everything p1 put is in the queue when it exits, so joining it before
    // the queue is drained cannot deadlock (Python's "joining processes that use queues").
    p1.join()?;
    q.put(None)?;
    c1.join()?;

    // 主进程put, 子进程get
    let q: Queue<Option<i32>> = Queue::new(1024)?;
    let mut p = Process::spawn(getter, q.clone())?;
    for i in 0..5 {
        q.put(Some(i))?;
    }
    q.put(None)?;
    p.join()?;
    Ok(())
}
