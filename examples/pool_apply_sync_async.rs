//! Seed 001 (进程池 Pool: 同步提交 apply, 异步提交 apply_async, map): the four patterns of the
//! tutorial in one program.
//!
//! Python:
//! ```python
//! p = Pool(os.cpu_count()+1)
//! for i in range(10): ret = p.apply(func, (i,)); print('result:%s' % ret)   # 同步提交
//! p = Pool(4)
//! for i in range(10): p.apply_async(func2, (i,))                            # 异步提交
//! p.close(); p.join(); print(666)
//! p = Pool(2); ret_li = [p.apply_async(func, (i,)) for i in range(1, 11)]
//! for ret in ret_li: print(ret.get())                                       # 先提交再 get
//! for r in Pool().map(func, range(20)): print(r)                            # map
//! ```
//! (Sleeps are 0.2 s here instead of 2 s.) Run: `cargo run --example pool_apply_sync_async`

use multiproc::{Pool, PoolError};
use std::time::Duration;

#[multiproc::task]
fn func(args: u64) -> u64 {
    args * args // 子进程返回结果
}

#[multiproc::task]
fn func2(args: u64) {
    std::thread::sleep(Duration::from_millis(200));
    println!("子进程号:{},{}", std::process::id(), args);
}

fn main() -> Result<(), PoolError> {
    multiproc::init();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    // 同步提交任务, 获得返回值: one after the other, no concurrency
    let p = Pool::new(cpus + 1)?;
    for i in 0..10 {
        let ret = p.apply(func, i)?;
        println!("result:{ret}");
    }
    println!("主进程{}", std::process::id());
    drop(p);

    // 异步提交任务: close() + join() wait for all of them
    let p = Pool::new(4)?;
    for i in 0..10 {
        p.apply_async(func2, i)?;
    }
    p.close();
    p.join()?;
    println!("666");

    // submit everything first, then get each value
    let p = Pool::new(2)?;
    let ret_li: Vec<_> = (1..11)
        .map(|i| p.apply_async(func, i))
        .collect::<Result<_, _>>()?;
    for ret in ret_li {
        println!("{}", ret.get()?);
    }

    // map: the list of return values, in order
    let p = Pool::builder().build()?;
    for r in p.map(func, 0..20u64)? {
        println!("{r}");
    }
    Ok(())
}
