//! Where a Pool callback runs: in the parent (the process that called `apply_async`), on the
//! pool's result-handler thread, not in the worker that ran the task. Python's callbacks run
//! in the parent's result-handler thread too, so they may touch the parent's state, and should
//! return quickly (they hold up the handling of other results).
//!
//! ```python
//! def task(x): return os.getpid()
//! def callback(worker_pid): print(f'task ran in {worker_pid}, callback runs in {os.getpid()}')
//! with Pool(2) as pool:
//!     pool.apply_async(task, (1,), callback=callback).wait()
//! ```
//!
//! Run: `cargo run --example pool_callback_pid`

use multiproc::{Callbacks, Pool, PoolError};
use std::sync::{Arc, Mutex};

#[multiproc::task]
fn task_pid(x: u32) -> (u32, u32) {
    (x, std::process::id())
}

fn main() -> Result<(), PoolError> {
    multiproc::init();
    let main_pid = std::process::id();
    println!("main process: pid {main_pid}");
    let pool = Pool::builder().processes(2).build()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let results: Vec<_> = (0..4)
        .map(|x| {
            let seen = Arc::clone(&seen);
            pool.apply_async_with(
                task_pid,
                x,
                Callbacks::new().on_success(move |&(x, worker_pid): &(u32, u32)| {
                    let here = std::process::id();
                    let thread = std::thread::current().name().unwrap_or("?").to_string();
                    println!(
                        "task {x} ran in worker pid {worker_pid}; its callback runs in pid {here}{} on thread {thread:?}",
                        if here == main_pid { " (the main process)" } else { "" }
                    );
                    seen.lock().unwrap().push((worker_pid, here));
                }),
            )
        })
        .collect::<Result<_, _>>()?;
    for r in &results {
        r.wait();
    }
    pool.close();
    pool.join()?;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter()
            .all(|&(worker, here)| here == main_pid && worker != main_pid)
    );
    Ok(())
}
