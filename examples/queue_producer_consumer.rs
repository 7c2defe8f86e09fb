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
//! Run: `cargo run --example queue_producer_consumer`

use multiproc::Queue;

/// Runs `f` in a forked child (until multiproc-process lands, fork stands in for `Process`).
fn spawn(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the example is single-threaded; the child runs `f` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// Waits for a child (Python's `p.join()`).
fn join(pid: libc::pid_t) {
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

fn consumer(q: &Queue<Option<String>>, name: &str) {
    while let Ok(Some(fruits)) = q.get() {
        println!("{name} 购买了 {fruits}");
    }
}

fn producer(q: &Queue<Option<String>>, name: &str, fruits: &str) {
    for i in 1..=10 {
        println!("{name} 采摘了 {fruits}{i}");
        q.put(Some(format!("{fruits}{i}"))).expect("put");
    }
}

fn main() {
    let q: Queue<Option<String>> = Queue::new(0).expect("queue");
    let c1 = spawn({
        let q = q.clone();
        move || consumer(&q, "小明")
    });
    let p1 = spawn({
        let q = q.clone();
        move || producer(&q, "果农", "西瓜")
    });
    join(p1); // no feeder thread: everything p1 put is already in the queue
    q.put(None).expect("put");
    join(c1);

    // 主进程put, 子进程get
    let q: Queue<Option<i32>> = Queue::new(0).expect("queue");
    let getter = spawn({
        let q = q.clone();
        move || {
            while let Ok(Some(ret)) = q.get() {
                println!("{ret}");
            }
        }
    });
    for i in 0..5 {
        q.put(Some(i)).expect("put");
    }
    q.put(None).expect("put");
    join(getter);
}
