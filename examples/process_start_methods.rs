//! Seed 000 ("启动方式"): listing, reading and setting the start method.
//!
//! Python:
//! ```python
//! multiprocessing.get_all_start_methods()
//! multiprocessing.get_start_method()
//! multiprocessing.set_start_method('fork')
//! ```
//! Run: `cargo run --example process_start_methods`

use multiproc::{Process, StartMethod, get_all_start_methods, get_start_method, set_start_method};

#[multiproc::task]
fn hello(method: String) -> String {
    format!(
        "hello from pid {} started with {method}",
        std::process::id()
    )
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    let all: Vec<_> = get_all_start_methods().iter().map(|m| m.name()).collect();
    println!("all start methods: {all:?}");
    println!("default: {}", get_start_method().name());
    set_start_method(StartMethod::Fork, false)?;
    println!("now: {}", get_start_method().name());
    // A second call without force is an error, as in Python.
    if let Err(e) = set_start_method(StartMethod::Spawn, false) {
        println!("second set_start_method: {e}");
    }
    for m in get_all_start_methods() {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(hello, m.name().to_string())?;
        println!("{}", p.join()?);
    }
    Ok(())
}
