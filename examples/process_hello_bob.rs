//! Seed 002 ("Process"): the minimal target + args example, with a name.
//!
//! Python:
//! ```python
//! def f(name): print('hello', name)
//! p = Process(target=f, args=('bob',)); p.start(); p.join()
//! ```
//! Run: `cargo run --example process_hello_bob`

use multiproc::Process;

#[multiproc::task]
fn f(name: String) {
    println!("hello {name}");
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    let mut p = Process::spawn(f, "bob".to_string())?;
    p.join()?;
    Ok(())
}
