//! Seed 002 ("run()"): three processes of a "subclass" whose run prints its pid.
//!
//! Python:
//! ```python
//! class MyProcess(multiprocessing.Process):
//!     def run(self): print(f"The pid of this process is {os.getpid()}")
//! processes = []
//! for i in range(3): p = MyProcess(); processes.append(p); p.start()
//! for p in processes: p.join()
//! ```
//! Run: `cargo run --example process_myprocess_pids`

use multiproc::Process;

#[multiproc::task]
fn run() {
    println!("The pid of this process is {}", std::process::id());
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(Process::spawn(run, ())?);
    }
    for p in &mut processes {
        p.join()?;
    }
    Ok(())
}
