//! The Manager example of the Python tutorial (seed 001, "数据共享"), ported:
//!
//! ```python
//! def func(d, lock):
//!     with lock:
//!         d['count'] -= 1
//!
//! if __name__ == '__main__':
//!     lock = Lock()
//!     with Manager() as m:
//!         dic = m.dict({'count': 300})
//!         p_li = []
//!         for i in range(300):
//!             p = Process(target=func, args=(dic, lock))
//!             p.start()
//!             time.sleep(0.1)
//!             p_li.append(p)
//!         for p in p_li:
//!             p.join()
//!         print(dic)
//! ```
//!
//! 300 processes each decrement a shared counter in a dict under a lock; the parent prints
//! `{"count": 0}`. Differences from Python: there is no manager server process (the dict lives
//! in shared memory), and there is no `sleep(0.1)` between starts (Python needed it only to pace
//! its server). The first half starts the children as Python does: `Process::spawn` of a
//! registered task, with the dict and the lock as its arguments (they travel as handles). The
//! second half forks closures (`Process::fork`) that use `update`, which reads, modifies and
//! writes under the dict's own lock in one critical section.
//!
//! Run: `cargo run --release --example manager_counter [processes]`

use multiproc::prelude::*;
use std::time::Instant;

/// `func(d, lock)`: `with lock: d['count'] -= 1`.
#[multiproc::task]
fn func(d: SharedDict<String, i64>, lock: SharedLock) -> Result<(), String> {
    let _g = lock.lock().map_err(|e| e.to_string())?;
    let count = d
        .get("count")
        .map_err(|e| e.to_string())?
        .ok_or("no count")?;
    d.insert(&"count".to_string(), &(count - 1))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let n: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(300);
    let m = Manager::new();
    let lock = m.lock()?;
    let dic = m.dict_from([("count".to_string(), n)])?;

    let t = Instant::now();
    let mut p_li = Vec::new();
    for _ in 0..n {
        p_li.push(Process::spawn(func, (dic.clone(), lock.clone()))?);
    }
    for mut p in p_li {
        p.join()??;
    }
    println!(
        "{{{:?}: {}}}   ({n} spawned processes, lock + get + insert, {:?})",
        "count",
        dic.get("count")?.unwrap_or_default(),
        t.elapsed()
    );

    // The same with update() in forked closures: the read-modify-write runs under the dict's
    // own lock.
    dic.insert(&"count".to_string(), &n)?;
    let t = Instant::now();
    let mut p_li = Vec::new();
    for _ in 0..n {
        let d = dic.clone();
        p_li.push(Process::fork(move || {
            d.update("count", |c| c.unwrap_or(0) - 1)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?);
    }
    for mut p in p_li {
        p.join()??;
    }
    println!(
        "{{{:?}: {}}}   ({n} forked processes, update, {:?})",
        "count",
        dic.get("count")?.unwrap_or_default(),
        t.elapsed()
    );
    Ok(())
}
