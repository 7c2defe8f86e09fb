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
//! Run: `cargo run --example queue_joinable`

use multiproc::JoinableQueue;

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

fn main() {
    let q: JoinableQueue<String> = JoinableQueue::new(0).expect("queue");
    let consumers: Vec<_> = ["小白", "小黑"]
        .into_iter()
        .map(|name| {
            let q = q.clone();
            spawn(move || {
                while let Ok(fruits) = q.get() {
                    println!("{name} 购买了 {fruits}");
                    q.task_done().expect("task_done");
                }
            })
        })
        .collect();
    let p1 = spawn({
        let q = q.clone();
        move || {
            for i in 1..=3 {
                println!("果农 采摘了 苹果{i}");
                q.put(format!("苹果{i}")).expect("put");
            }
            q.join(); // until both consumers marked every apple done
        }
    });
    join(p1);
    // Python ends the daemon consumers when the main process exits; here: kill them.
    for c in consumers {
        // SAFETY: plain syscalls on our own children.
        unsafe { libc::kill(c, libc::SIGKILL) };
        join(c);
    }

    // Seed 000: a worker with a sentinel.
    let broker: JoinableQueue<Option<i32>> = JoinableQueue::new(0).expect("queue");
    let p = spawn({
        let broker = broker.clone();
        move || {
            while let Ok(Some(item)) = broker.get() {
                println!("Receive item {item}");
                broker.task_done().expect("task_done");
            }
        }
    });
    for i in 0..10 {
        broker.put(Some(i)).expect("put");
    }
    broker.join();
    broker.put(None).expect("put");
    join(p);
}
