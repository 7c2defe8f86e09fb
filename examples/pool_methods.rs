//! Seed 002 (multiprocessing.pool.Pool(processes=None, maxtasksperchild=None)): apply,
//! apply_async with wait/ready/successful/get, map, map_async, starmap, and maxtasksperchild.
//!
//! Python:
//! ```python
//! def func(msg):
//!     print('msg0: ', msg); time.sleep(1); print('msg1: ', msg); return 'func_return: %s' % msg
//! pool = multiprocessing.Pool(processes=3)
//! results = [pool.apply(func, ('hello world %d' % i,)) for i in range(3)]      # 阻塞
//! results = [pool.apply_async(func, ('hello world %d' % i,)) for i in range(3)] # 不阻塞
//! for i in results: i.wait()
//! for i in results:
//!     if i.ready() and i.successful(): print(i.get())
//! return_data = pool.map(func, [1, 2, 4])
//! result = pool.map_async(func, [1, 2, 4]); print('ready: ', result.ready()); result.wait()
//! pool.starmap(...)   # 多参数
//! Pool(processes, maxtasksperchild=1)   # 每个进程完成一个 task 就退出, 由新进程替代
//! ```
//! (Sleeps are 0.2 s here.) Run: `cargo run --example pool_methods`

use multiproc::{Pool, PoolError};
use std::time::Duration;

#[multiproc::task]
fn func(msg: String) -> String {
    println!("msg0:  {msg}");
    std::thread::sleep(Duration::from_millis(200));
    println!("msg1:  {msg}");
    format!("func_return: {msg}")
}

#[multiproc::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[multiproc::task]
fn worker_pid(_task: u32) -> u32 {
    std::process::id()
}

fn main() -> Result<(), PoolError> {
    multiproc::init();

    println!("\n--------apply------------");
    let pool = Pool::new(3)?;
    let mut results = Vec::new();
    for i in 0..3 {
        results.push(pool.apply(func, format!("hello world {i}"))?);
    }
    println!("apply: 阻塞");
    pool.close();
    pool.join()?;
    println!("{results:?}");

    println!("\n--------apply_async------------");
    let pool = Pool::new(3)?;
    let results: Vec<_> = (0..3)
        .map(|i| pool.apply_async(func, format!("hello world {i}")))
        .collect::<Result<_, _>>()?;
    println!("apply_async: 不阻塞");
    for r in &results {
        r.wait();
    }
    for r in &results {
        if r.ready() && r.successful()? {
            println!("{}", r.get()?);
        }
    }
    pool.close();
    pool.join()?;

    println!("\n--------map------------");
    let pool = Pool::new(3)?;
    let return_data = pool.map(func, ["1", "2", "4"].map(String::from))?;
    println!("阻塞");
    println!("{return_data:?}");

    println!("\n--------map_async------------");
    let result = pool.map_async(func, ["1", "2", "4"].map(String::from))?;
    println!("ready:  {}", result.ready());
    println!("不阻塞");
    result.wait();
    if result.ready() && result.successful()? {
        println!("{:?}", result.get()?);
    }

    println!("\n--------starmap------------");
    println!("{:?}", pool.starmap(add, [(1, 2), (3, 4), (5, 6)])?);

    println!("\n--------maxtasksperchild=1------------");
    let pool = Pool::builder().processes(2).maxtasksperchild(1).build()?;
    let pids = pool.map_chunked(worker_pid, 0..6u32, 1)?;
    println!("6 tasks ran in {} different processes: {pids:?}", {
        let mut p = pids.clone();
        p.sort_unstable();
        p.dedup();
        p.len()
    });
    pool.close();
    pool.join()?;
    Ok(())
}
