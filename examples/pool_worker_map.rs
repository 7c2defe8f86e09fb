//! Seed 004 (使用Pool類創建進程池): `with Pool(processes=4) as pool: results = pool.map(worker,
//! range(5))`.
//!
//! Python:
//! ```python
//! def worker(num):
//!     print(f"進程 {num} 啟動"); time.sleep(2); print(f"進程 {num} 結束"); return num * num
//! with multiprocessing.Pool(processes=4) as pool:
//!     results = pool.map(worker, range(5))
//! print("所有進程完成"); print("結果:", results)
//! ```
//! (The sleep is 0.5 s here.) Run: `cargo run --example pool_worker_map`

use multiproc::{Pool, PoolError};
use std::time::Duration;

#[multiproc::task]
fn worker(num: u64) -> u64 {
    println!("進程 {num} 啟動");
    std::thread::sleep(Duration::from_millis(500));
    println!("進程 {num} 結束");
    num * num
}

fn main() -> Result<(), PoolError> {
    multiproc::init();
    let results = {
        let pool = Pool::new(4)?;
        pool.map(worker, 0..5u64)?
    }; // the pool is terminated here, like leaving the `with` block
    println!("所有進程完成");
    println!("結果: {results:?}");
    Ok(())
}
