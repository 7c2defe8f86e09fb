//! Seed 002 ("如何从子进程中得到函数返回值"): a global list is not shared between processes (each
//! child appends to its own copy); the values come back another way. Python used a Queue; in
//! multiproc the task's return value comes back from `join`.
//!
//! Python:
//! ```python
//! lis = []
//! def foo(i): lis.append(i); print("This is Process ", i, " and lis is ", lis, ...)
//! for i in range(3): p = Process(target=foo, args=(i,)); ...
//! print("The end of list_1:", lis)     # []
//! ```
//! Run: `cargo run --example process_return_values`

use multiproc::Process;
use std::sync::Mutex;

static LIS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[multiproc::task]
fn foo(i: u32) -> u32 {
    let mut lis = LIS.lock().unwrap();
    lis.push(i);
    println!(
        "This is Process {i} and lis is {:?} and lis.address is {:p}",
        *lis, &LIS
    );
    i * 10
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    let mut processes = Vec::new();
    for i in 0..3 {
        processes.push(Process::spawn(foo, i)?);
    }
    let mut results = Vec::new();
    for p in &mut processes {
        results.push(p.join()?);
    }
    println!("The end of list_1: {:?}", LIS.lock().unwrap());
    println!("results returned by the children: {results:?}");
    Ok(())
}
