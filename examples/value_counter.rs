//! Seed 000 ("共享内存", second example): ten processes each increment a shared counter under
//! its lock; the parent prints 10.
//!
//! Python:
//! ```python
//! from multiprocessing import Value, Process
//!
//! def increment_share_state(counter):
//!     with counter.get_lock():
//!         counter.value += 1
//!
//! share_value = Value('i', 0)
//! ps = []
//! for i in range(10):
//!     p = Process(target=increment_share_state, args=(share_value,))
//!     ps.append(p)
//! for p in ps:
//!     p.start()
//! for p in ps:
//!     p.join()
//! print(share_value.value)
//! ```
//! What differs: `get_lock()` returns a guard that derefs to the value (`*g += 1`), and it is a
//! `Result`: `Err(OwnerDied)` says the previous holder died inside its critical section
//! (Python cannot tell you). `get_lock_recover()` takes such a lock anyway and says whether the
//! holder died; for a single `+=` nothing can be half-done, so the example just carries on.
//! Run: `cargo run --example value_counter [processes]` (default 10)

use multiproc::{Process, Value};

#[multiproc::task]
fn increment_share_state(counter: Value<i32>) {
    // `*counter.get_lock()? += 1` in a function returning a Result; a task panics instead.
    let (mut g, _owner_died) = counter.get_lock_recover().expect("get_lock");
    *g += 1;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let share_value = Value::new(0i32)?;
    let mut ps = Vec::new();
    for _ in 0..n {
        ps.push(Process::new(increment_share_state, share_value.clone())?);
    }
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    println!("{}", share_value.load()?);
    Ok(())
}
