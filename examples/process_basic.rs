//! Seed 000 ("多进程"): a Process with a target function, and a "subclass" of Process with its
//! own state and `run`. In Rust the "subclass" is a serde struct whose `run` is called by a task.
//!
//! Python:
//! ```python
//! def worker(): print("Current process pid is {}".format(os.getpid()))
//! class MyProcess(multiprocessing.Process):
//!     def __init__(self, address): super().__init__(); self.address = address
//!     def run(self): print("Current process pid is {}, address {}".format(os.getpid(), self.address))
//! p1 = multiprocessing.Process(target=worker); p1.start()
//! p2 = MyProcess(address='beijing'); p2.start(); p1.join(); p2.join()
//! ```
//! Run: `cargo run --example process_basic`

use multiproc::Process;
use serde::{Deserialize, Serialize};

#[multiproc::task]
fn worker() {
    println!("Current process pid is {}", std::process::id());
}

#[derive(Serialize, Deserialize)]
struct MyProcess {
    address: String,
}

impl MyProcess {
    fn run(&self) {
        println!(
            "Current process pid is {}, address {}",
            std::process::id(),
            self.address
        );
    }
}

#[multiproc::task]
fn run_my_process(p: MyProcess) {
    p.run()
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    println!("Main process pid is {}", std::process::id());
    let mut p1 = Process::spawn(worker, ())?;
    let mut p2 = Process::spawn(
        run_my_process,
        MyProcess {
            address: "beijing".into(),
        },
    )?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
