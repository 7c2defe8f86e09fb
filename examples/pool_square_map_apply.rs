//! Seed 000 (Pool 的三类 API: 同步、异步、MapReduce): `map`, `apply`, `apply_async`, then
//! `map_async` with `chunksize=10` and a 2 s timeout on `get` ("比较好的调用方式是通过异步和超时控制").
//!
//! Python:
//! ```python
//! with multiprocessing.Pool(processes=cpu_cores) as pool:
//!     print(pool.map(square, range(10)))
//!     print(pool.apply(square, args=(10,)))
//!     print(pool.apply_async(square, args=(100,)).get())
//!     async_result = pool.map_async(square, range(100), chunksize=10)
//!     try: print(async_result.get(timeout=2))
//!     except multiprocessing.TimeoutError: print("Fetch result got timeout.")
//! ```
//! The seed notes that Python's map waits forever if a chunk's worker dies; multiproc's fails
//! that chunk with `TaskError::WorkerLost` instead. Run: `cargo run --example pool_square_map_apply`

use multiproc::{Pool, PoolError, TaskError};
use std::time::Duration;

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), PoolError> {
    multiproc::init();
    let cpu_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = Pool::builder().processes(cpu_cores).build()?;
    println!("{:?}", pool.map(square, 0..10u64)?);
    println!("{}", pool.apply(square, 10)?);
    println!("{}", pool.apply_async(square, 100)?.get()?);
    let async_result = pool.map_async_with(square, 0..100u64, Some(10), Default::default())?;
    match async_result.get_timeout(Duration::from_secs(2)) {
        Ok(result) => println!("{result:?}"),
        Err(TaskError::Timeout) => println!("Fetch result got timeout."),
        Err(e) => return Err(e.into()),
    }
    Ok(()) // dropping the pool terminates it, as leaving Python's `with` block
}
