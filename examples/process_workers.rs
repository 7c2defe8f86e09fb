//! Seed 004 ("使用Process类創建進程"): three workers that start, work, and end; the parent
//! joins them all.
//!
//! Python:
//! ```python
//! def worker(num):
//!     print(f"進程 {num} 啟動"); time.sleep(2); print(f"進程 {num} 結束")
//! for i in range(3): p = multiprocessing.Process(target=worker, args=(i,)); ...; p.start()
//! for p in processes: p.join()
//! print("所有進程完成")
//! ```
//! (The sleep is 0.5 s here instead of 2 s.) Run: `cargo run --example process_workers`

use multiproc::Process;
use std::time::Duration;

#[multiproc::task]
fn worker(num: u32) {
    println!("進程 {num} 啟動");
    std::thread::sleep(Duration::from_millis(500));
    println!("進程 {num} 結束");
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    let mut processes = Vec::new();
    for i in 0..3 {
        processes.push(Process::spawn(worker, i)?);
    }
    for p in &mut processes {
        p.join()?;
    }
    println!("所有進程完成");
    Ok(())
}
