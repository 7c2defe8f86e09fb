//! Seed 003 (the guide's distributed-process example): a master registers a task queue and a
//! result queue with a `BaseManager` at an address with an authkey, puts ten random numbers, and
//! reads ten results with a 10 s timeout; a worker on another machine connects, squares each task
//! and puts the result. Here both queues are `RemoteQueue`s on Redis (any host that can reach it),
//! and master and worker are two invocations of this one binary.
//!
//! Python:
//! ```python
//! task_queue = queue.Queue(); result_queue = queue.Queue()
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_task_queue', callable=lambda: task_queue)
//! QueueManager.register('get_result_queue', callable=lambda: result_queue)
//! manager = QueueManager(address=('', 5000), authkey=b'abc'); manager.start()
//! task = manager.get_task_queue(); result = manager.get_result_queue()
//! for i in range(10):
//!     n = random.randint(0, 10000); print('Put task %d...' % n); task.put(n)
//! print('Try get results...')
//! for i in range(10):
//!     r = result.get(timeout=10); print('Result: %s' % r)
//! manager.shutdown(); print('master exit.')
//! # worker.py, on another machine:
//! m = QueueManager(address=(server_addr, 5000), authkey=b'abc'); m.connect()
//! task = m.get_task_queue(); result = m.get_result_queue()
//! for i in range(10):
//!     n = task.get(timeout=1); print('run task %d * %d...' % (n, n))
//!     result.put('%d * %d = %d' % (n, n, n*n))
//! ```
//! The address + authkey become a URL (`redis://:password@host:port`; `rediss://` for TLS with
//! the `tls` feature of multiproc-redis), from the argument or `REDIS_URL`.
//!
//! Run:
//! * `cargo run --features redis --example distributed_master_worker` — no URL: starts its own
//!   redis-server on a free loopback port, then the master, which starts one worker process;
//! * `... -- master redis://host:6379` on one machine and `... -- worker redis://host:6379` on
//!   others (or set `REDIS_URL`).

use multiproc::redis::{Error, GetError, RemoteQueue};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn queues(url: &str) -> Result<(RemoteQueue<u64>, RemoteQueue<String>), Error> {
    Ok((
        RemoteQueue::connect(url, "task_queue")?,
        RemoteQueue::connect(url, "result_queue")?,
    ))
}

fn master(url: &str) -> Result<(), Error> {
    let (task, result) = queues(url)?;
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..10 {
        // xorshift: random.randint(0, 10000)
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = seed % 10_001;
        println!("Put task {n}...");
        task.put(&n)?;
    }
    println!("Try get results...");
    for _ in 0..10 {
        let r = result.get_timeout(Duration::from_secs(10))?;
        println!("Result: {r}");
    }
    // manager.shutdown(): the queues leave Redis.
    task.destroy()?;
    result.destroy()?;
    println!("master exit.");
    Ok(())
}

fn worker(url: &str) -> Result<(), Error> {
    let (task, result) = queues(url)?;
    for _ in 0..10 {
        // At-least-once: the task is acknowledged only once its result is stored in Redis
        // (`put_confirmed`; a plain `put` returns once queued in this process), so a worker that
        // dies in between leaves it to another worker.
        let d = match task.get_delivery_timeout(Duration::from_secs(10)) {
            Ok(d) => d,
            Err(GetError::Timeout) => {
                println!("task queue is empty.");
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let n = *d;
        println!("run task {n} * {n}...");
        result.put_confirmed(&format!("{n} * {n} = {}", n * n))?;
        d.ack()?;
    }
    println!("worker exit.");
    Ok(())
}

/// A redis-server of our own on a free loopback port, without persistence, killed on drop.
struct OwnRedis {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
}

impl OwnRedis {
    fn start() -> Result<OwnRedis, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("mp-example-redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server (apt-get install redis-server): {e}"))?;
        let me = OwnRedis {
            child,
            dir,
            url: format!("redis://127.0.0.1:{port}"),
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not start".into())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url_arg = args
        .get(1)
        .cloned()
        .or_else(|| std::env::var("REDIS_URL").ok());
    let r = match args.first().map(String::as_str) {
        Some("master") => master(&url_arg.expect("master needs a URL (argument or REDIS_URL)")),
        Some("worker") => worker(&url_arg.expect("worker needs a URL (argument or REDIS_URL)")),
        Some(other) => {
            eprintln!("usage: distributed_master_worker [master|worker] [URL]; got {other:?}");
            std::process::exit(2);
        }
        None => {
            // Demo: a Redis of our own (unless REDIS_URL names one), one worker process, the master.
            let own = match url_arg {
                Some(_) => None,
                None => Some(OwnRedis::start().unwrap_or_else(|e| panic!("{e}"))),
            };
            let url = url_arg.unwrap_or_else(|| own.as_ref().unwrap().url.clone());
            let mut w = Command::new(std::env::current_exe().unwrap())
                .args(["worker", &url])
                .spawn()
                .expect("starting the worker");
            let r = master(&url);
            let st = w.wait().expect("waiting for the worker");
            assert!(st.success(), "worker failed: {st}");
            r
        }
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
