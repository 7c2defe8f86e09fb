//! Seeds 002, 003 and 004: processes hand results back through a Queue.
//!
//! Seed 002: four processes each put a random number on `output`; the parent collects them.
//! Seed 004: a sender puts "Hello from process!", a receiver gets it.
//! Seed 003: a writer puts 'A', 'B', 'C' with random pauses; a reader loops on `get` and is
//! terminated once the writer finished.
//! Run: `cargo run --example queue_results`

use multiproc::Queue;
use std::time::Duration;

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

fn random() -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (u64::from(t) ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn main() {
    // Seed 002.
    let output: Queue<f64> = Queue::new(0).expect("queue");
    let procs: Vec<_> = (0..4)
        .map(|_| {
            let output = output.clone();
            spawn(move || output.put(random()).expect("put"))
        })
        .collect();
    for p in &procs {
        join(*p); // safe: put never waits for a reader (no feeder thread to flush)
    }
    let results: Vec<f64> = procs.iter().map(|_| output.get().expect("get")).collect();
    println!("{results:?}");

    // Seed 004.
    let queue: Queue<String> = Queue::new(0).expect("queue");
    let p1 = spawn({
        let q = queue.clone();
        move || {
            println!("发送进程启动");
            q.put("Hello from process!".into()).expect("put");
            println!("发送进程结束");
        }
    });
    let p2 = spawn({
        let q = queue.clone();
        move || {
            println!("接收进程启动");
            let message = q.get().expect("get");
            println!("接收到消息: {message}");
            println!("接收进程结束");
        }
    });
    join(p1);
    join(p2);
    println!("所有进程完成");

    // Seed 003.
    let q: Queue<char> = Queue::new(0).expect("queue");
    let pw = spawn({
        let q = q.clone();
        move || {
            println!("Process to write: {}", std::process::id());
            for value in ['A', 'B', 'C'] {
                println!("Put {value} to queue...");
                q.put(value).expect("put");
                std::thread::sleep(Duration::from_secs_f64(random() * 0.2));
            }
        }
    });
    let pr = spawn({
        let q = q.clone();
        move || {
            println!("Process to read: {}", std::process::id());
            while let Ok(value) = q.get() {
                println!("Get {value} from queue.");
            }
        }
    });
    join(pw);
    std::thread::sleep(Duration::from_millis(50)); // let the reader print the last item
    // pr.terminate()
    // SAFETY: plain syscalls on our own child.
    unsafe { libc::kill(pr, libc::SIGTERM) };
    join(pr);
}
