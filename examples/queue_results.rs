//! Seeds 002, 003 and 004: processes hand results back through a Queue.
//!
//! Seed 002: four processes each put a random number on `output`; the parent collects them.
//! Seed 004: a sender puts "Hello from process!", a receiver gets it.
//! Seed 003: a writer puts 'A', 'B', 'C' with random pauses; a reader loops on `get` and is
//! terminated once the writer finished.
//!
//! Python (seed 003):
//! ```python
//! def write(q):
//!     print('Process to write: %s' % os.getpid())
//!     for value in ['A', 'B', 'C']:
//!         print('Put %s to queue...' % value)
//!         q.put(value)
//!         time.sleep(random.random())
//! def read(q):
//!     print('Process to read: %s' % os.getpid())
//!     while True:
//!         value = q.get(True)
//!         print('Get %s from queue.' % value)
//! q = Queue()
//! pw = Process(target=write, args=(q,)); pr = Process(target=read, args=(q,))
//! pw.start(); pr.start(); pw.join(); pr.terminate()
//! ```
//! (The pauses are at most 0.2 s here.) Run: `cargo run --example queue_results`

use multiproc::{Process, Queue};
use std::time::Duration;

fn random() -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (u64::from(t) ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Seed 002: `output.put(random.random())`.
#[multiproc::task]
fn rand_num(output: Queue<f64>) {
    output.put(random()).expect("put");
}

/// Seed 004.
#[multiproc::task]
fn sender(q: Queue<String>) {
    println!("发送进程启动");
    q.put("Hello from process!".into()).expect("put");
    println!("发送进程结束");
}

/// Seed 004.
#[multiproc::task]
fn receiver(q: Queue<String>) {
    println!("接收进程启动");
    let message = q.get().expect("get");
    println!("接收到消息: {message}");
    println!("接收进程结束");
}

/// Seed 003.
#[multiproc::task]
fn write(q: Queue<char>) {
    println!("Process to write: {}", std::process::id());
    for value in ['A', 'B', 'C'] {
        println!("Put {value} to queue...");
        q.put(value).expect("put");
        std::thread::sleep(Duration::from_secs_f64(random() * 0.2));
    }
}

/// Seed 003.
#[multiproc::task]
fn read(q: Queue<char>) {
    println!("Process to read: {}", std::process::id());
    while let Ok(value) = q.get() {
        println!("Get {value} from queue.");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    // Seed 002.
    let output: Queue<f64> = Queue::new(1024)?;
    let mut processes = (0..4)
        .map(|_| Process::spawn(rand_num, output.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    for p in &mut processes {
        p.join()?; // safe before reading: put never waits for a feeder thread to flush
    }
    let results: Vec<f64> = processes
        .iter()
        .map(|_| output.get())
        .collect::<Result<_, _>>()?;
    println!("{results:?}");

    // Seed 004.
    let queue: Queue<String> = Queue::new(1024)?;
    let mut p1 = Process::spawn(sender, queue.clone())?;
    let mut p2 = Process::spawn(receiver, queue.clone())?;
    p1.join()?;
    p2.join()?;
    println!("所有进程完成");

    // Seed 003.
    let q: Queue<char> = Queue::new(1024)?;
    let mut pw = Process::spawn(write, q.clone())?;
    let mut pr = Process::spawn(read, q.clone())?;
    pw.join()?;
    // Let the reader print the last item, then pr.terminate() (SIGTERM) and reap it.
    while !q.empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    pr.terminate()?;
    let _ = pr.join(); // Err(NoResult): it was terminated
    println!("reader exitcode: {:?}", pr.exitcode()); // Some(-15), as Python's
    Ok(())
}
