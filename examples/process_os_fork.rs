//! Seed 003 ("os.fork()" and "multiprocessing.Process"): forking, and a named child.
//!
//! Python:
//! ```python
//! print('Process(%s) start...' % os.getpid())
//! pid = os.fork()
//! if pid == 0: print('This is child process(%s), and the parent is %s' % (os.getpid(), os.getppid()))
//! else: print('This is parent process(%s), and the created child pid is %s' % (os.getpid(), pid))
//!
//! def run_proc(name): print('Run child process %s(%s).' % (name, os.getpid()))
//! p = Process(target=run_proc, args=('test',)); p.start(); p.join()
//! ```
//! `Process::fork` takes a closure (for single-threaded parents, like `os.fork`) and reaps the
//! child on join: no zombie.
//! Run: `cargo run --example process_os_fork`

use multiproc::Process;

#[multiproc::task]
fn run_proc(name: String) {
    println!("Run child process {name}({}).", std::process::id());
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    println!("Process({}) start...", std::process::id());
    let mut child = Process::fork(|| {
        let parent = multiproc::parent_process().map(|p| p.pid()).unwrap_or(0);
        println!(
            "This is child process({}), and the parent is {parent}",
            std::process::id()
        );
    })?;
    println!(
        "This is parent process({}), and the created child pid is {}",
        std::process::id(),
        child.pid().unwrap_or(0)
    );
    child.join()?;

    println!("Parent process is {}.", std::process::id());
    let mut p = Process::new(run_proc, "test".to_string())?;
    println!("Child process will start.");
    p.start()?;
    p.join()?;
    println!("Child process end.");
    Ok(())
}
