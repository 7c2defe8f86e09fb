//! Seed 000 ("日志"): `log_to_stderr(DEBUG)` and a worker; lines look like Python's
//! `[INFO/Process-1] child process calling self.run()`.
//!
//! Python:
//! ```python
//! def worker(): print("Child Process done.")
//! multiprocessing.log_to_stderr(logging.DEBUG)
//! p = multiprocessing.Process(target=worker); p.start(); p.join()
//! ```
//! Run: `cargo run --example process_logging`

use multiproc::Process;
use multiproc::process::Level;

#[multiproc::task]
fn worker() {
    println!("Child Process done.");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    multiproc::log_to_stderr(Level::DEBUG)?;
    let mut p = Process::spawn(worker, ())?;
    p.join()?;
    Ok(())
}
