//! Callbacks, error callbacks, timeouts, and a killed worker (seed 000's warning: "如果Map出去的
//! 某个chunk出了问题导致其结果没有传回,同步调用的方式会导致主进程死等").
//!
//! Python:
//! ```python
//! pool.apply_async(square, (3,), callback=print, error_callback=print)
//! pool.apply_async(fail, (), callback=print, error_callback=lambda e: print("error:", e))
//! try: pool.apply_async(time.sleep, (5,)).get(timeout=0.1)
//! except multiprocessing.TimeoutError: print("timeout")
//! # a worker killed with SIGKILL: Python's get() waits forever
//! ```
//! Run: `cargo run --example pool_callbacks_timeouts`

use multiproc::{Callbacks, Pool, PoolError, TaskError};
use std::time::Duration;

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn fail() -> u64 {
    panic!("something went wrong")
}

#[multiproc::task]
fn sleep_then_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn main() -> Result<(), PoolError> {
    multiproc::init();
    let pool = Pool::builder().processes(2).build()?;

    let r = pool.apply_async_with(
        square,
        3,
        Callbacks::new()
            .on_success(|v| println!("callback: {v}"))
            .on_error(|e| println!("error_callback: {e}")),
    )?;
    r.wait();
    let r = pool.apply_async_with(
        fail,
        (),
        Callbacks::new()
            .on_success(|v| println!("callback: {v}"))
            .on_error(|e| println!("error_callback: {e}")),
    )?;
    println!("get: {:?}", r.get());

    let slow = pool.apply_async(sleep_then_pid, 1_000)?;
    match slow.get_timeout(Duration::from_millis(100)) {
        Err(TaskError::Timeout) => println!("timeout (the task keeps running)"),
        other => println!("{other:?}"),
    }

    pool.close();
    pool.join()?;

    // A worker killed mid-task: only that task fails, at once; the worker is replaced.
    let pool = Pool::new(1)?;
    let long = pool.apply_async(sleep_then_pid, 60_000)?;
    let queued = pool.apply_async(square, 7)?;
    std::thread::sleep(Duration::from_millis(300));
    for pid in pool.worker_pids() {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    match long.get_timeout(Duration::from_secs(30)) {
        Err(e @ TaskError::WorkerLost { .. }) => println!("long task: {e}"),
        other => println!("long task: {other:?}"),
    }
    println!(
        "queued task, run by the replacement: {:?}",
        queued.get_timeout(Duration::from_secs(30))
    );
    println!("pool still works: {}", pool.apply(square, 12)?);
    pool.close();
    pool.join()?;
    Ok(())
}
