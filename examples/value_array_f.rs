//! Seed 000 ("共享内存", first example): a child sets a shared `Value` and negates a shared
//! `Array`; the parent prints both.
//!
//! Python:
//! ```python
//! from multiprocessing import Process, Value, Array
//!
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! if __name__ == '__main__':
//!     num = Value('d', 0.0)
//!     arr = Array('i', range(10))
//!     p = Process(target=f, args=(num, arr))
//!     p.start()
//!     p.join()
//!     print(num.value)
//!     print(arr[:])
//! ```
//! Output (both):
//! ```text
//! 3.1415927
//! [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
//! ```
//! `Value('d', ...)` is `Value<f64>`, `Array('i', ...)` is `Array<i32>`: the type is checked when
//! the child opens the handles. As in Python, `n.value = ...`, `a[i]` and `a[i] = ...` each take
//! the object's lock once (`store`, `get`, `set`). The task returns a `Result`, which comes back
//! from `join` (an error inside the child is a value here, not a traceback on stderr).
//! Run: `cargo run --example value_array_f`

use multiproc::{Array, Process, Value};

#[multiproc::task]
#[allow(clippy::approx_constant)] // the seed's literal, kept as written
fn f(n: Value<f64>, a: Array<i32>) -> Result<(), String> {
    n.store(3.1415927).map_err(|e| e.to_string())?;
    for i in 0..a.len() {
        let x = a.get(i).map_err(|e| e.to_string())?;
        a.set(i, -x).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    let mut p = Process::new(f, (num.clone(), arr.clone()))?;
    p.start()?;
    p.join()??;
    println!("{}", num.load()?);
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
