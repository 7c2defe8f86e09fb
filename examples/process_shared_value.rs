//! Seed 000 ("共享内存"): Value and Array passed to a child, and ten processes incrementing a
//! shared counter under its lock.
//!
//! Python:
//! ```python
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)): a[i] = -a[i]
//! num = Value('d', 0.0); arr = Array('i', range(10))
//! p = Process(target=f, args=(num, arr)); p.start(); p.join()
//! print(num.value); print(arr[:])
//!
//! def increment_share_state(counter):
//!     with counter.get_lock(): counter.value += 1
//! share_value = Value('i', 0)
//! ps = [Process(target=increment_share_state, args=(share_value,)) for i in range(10)]
//! ...; print(share_value.value)
//! ```
//! Run: `cargo run --example process_shared_value` (prints 3.1415927, the negated array, 10)

use multiproc::{Array, Process, Value};

#[multiproc::task]
#[allow(clippy::approx_constant)] // the seed's literal, kept as written
fn f(n: Value<f64>, a: Array<i32>) {
    n.store(3.1415927).expect("lock");
    let mut g = a.get_lock().expect("lock");
    for x in g.iter_mut() {
        *x = -*x;
    }
}

#[multiproc::task]
fn increment_share_state(counter: Value<i32>) {
    let mut g = counter.get_lock().expect("lock");
    *g += 1;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    let mut p = Process::spawn(f, (num.clone(), arr.clone()))?;
    p.join()?;
    println!("{}", num.load().map_err(|e| e.to_string())?);
    println!("{:?}", arr.to_vec()?);

    let share_value = Value::new(0i32)?;
    let mut ps = Vec::new();
    for _ in 0..10 {
        ps.push(Process::new(increment_share_state, share_value.clone())?);
    }
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    println!("{}", share_value.load().map_err(|e| e.to_string())?);
    Ok(())
}
