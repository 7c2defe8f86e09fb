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
//! in shared memory), the children are forked (the spawn start method arrives with the process
//! layer), and there is no `sleep(0.1)` between starts (Python needed it only to pace its
//! server). The second half does the same with `update`, which reads, modifies and writes
//! under the dict's own lock in one critical section.
//!
//! Run: `cargo run --release --example manager_counter [processes]`

use multiproc::prelude::*;
use std::time::Instant;

fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the parent is single-threaded; the child runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn join(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: valid out-pointer; waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!(
            "waitpid {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("child {pid} failed (status {status:#x})"))
    }
}

/// `func(d, lock)`: `with lock: d['count'] -= 1`.
fn func(d: &SharedDict<String, i64>, lock: &SharedLock) -> i32 {
    let Ok(_g) = lock.acquire() else { return 2 };
    let Ok(Some(count)) = d.get("count") else {
        return 3;
    };
    if d.insert(&"count".to_string(), &(count - 1)).is_err() {
        return 4;
    }
    0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(300);
    let m = Manager::new();
    let lock = m.lock()?;
    let dic = m.dict_from([("count".to_string(), n)])?;

    let t = Instant::now();
    let p_li: Vec<_> = (0..n).map(|_| fork(|| func(&dic, &lock))).collect();
    for p in p_li {
        join(p)?;
    }
    println!(
        "{{{:?}: {}}}   ({n} processes, lock + get + insert, {:?})",
        "count",
        dic.get("count")?.unwrap_or_default(),
        t.elapsed()
    );

    // The same with update(): the read-modify-write runs under the dict's own lock.
    dic.insert(&"count".to_string(), &n)?;
    let t = Instant::now();
    let p_li: Vec<_> = (0..n)
        .map(|_| fork(|| i32::from(dic.update("count", |c| c.unwrap_or(0) - 1).is_err())))
        .collect();
    for p in p_li {
        join(p)?;
    }
    println!(
        "{{{:?}: {}}}   ({n} processes, update, {:?})",
        "count",
        dic.get("count")?.unwrap_or_default(),
        t.elapsed()
    );
    Ok(())
}
