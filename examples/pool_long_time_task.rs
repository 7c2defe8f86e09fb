//! Seed 003 (廖雪峰: 多进程 / Pool): nine `long_time_task`s on a pool of five, each reporting how
//! long it ran; close + join wait for all of them.
//!
//! Python:
//! ```python
//! def long_time_task(name):
//!     print('Run task %s (%s)...' % (name, os.getpid()))
//!     start = time.time(); time.sleep(random.random() * 3); end = time.time()
//!     print('Task %s runs %0.2f seconds.' % (name, (end - start)))
//! p = Pool(5)
//! for i in range(9): p.apply_async(long_time_task, args=(i,))
//! print('Waiting for all subprocesses done...'); p.close(); p.join(); print('All subprocesses done.')
//! ```
//! (Sleeps are up to 0.5 s here.) Run: `cargo run --example pool_long_time_task`

use multiproc::{Pool, PoolError};
use std::time::{Duration, Instant};

#[multiproc::task]
fn long_time_task(name: u32) {
    println!("Run task {name} ({})...", std::process::id());
    let start = Instant::now();
    // a cheap pseudo-random duration, as random.random() * 3
    let ms = (u64::from(name) * 7919 + u64::from(std::process::id())) % 500;
    std::thread::sleep(Duration::from_millis(ms));
    println!(
        "Task {name} runs {:.2} seconds.",
        start.elapsed().as_secs_f64()
    );
}

fn main() -> Result<(), PoolError> {
    multiproc::init();
    println!("Parent process {}.", std::process::id());
    let p = Pool::new(5)?;
    for i in 0..9 {
        p.apply_async(long_time_task, i)?;
    }
    println!("Waiting for all subprocesses done...");
    p.close();
    p.join()?;
    println!("All subprocesses done.");
    Ok(())
}
