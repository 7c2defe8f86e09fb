//! Seed 004 ("多進程出現僵尸進程如何處理"): a finished child that nobody waits for is a zombie;
//! Python's answer is a SIGCHLD handler calling waitpid. multiproc reaps every child itself: on
//! `join`, on `is_alive`/`exitcode`, and for handles dropped while the child ran, on the next
//! `active_children()` or start, and at exit.
//! Run: `cargo run --example process_zombies`

use multiproc::{Process, active_children};
use std::time::Duration;

#[multiproc::task]
fn short(i: u32) -> u32 {
    i
}

fn state_of(pid: u32) -> String {
    // Field 3 of /proc/PID/stat: R, S, Z (zombie)...; gone when reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim().chars().next().unwrap_or('?').to_string())
        })
        .unwrap_or_else(|| "reaped".into())
}

fn main() -> Result<(), multiproc::ProcessError> {
    multiproc::init();
    let p = Process::spawn(short, 1)?;
    let pid = p.pid().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "finished child {pid}, not joined yet: state {}",
        state_of(pid)
    );
    println!("exitcode {:?} (reaped by this look)", p.exitcode());
    println!("child {pid} now: {}", state_of(pid));

    // Handles dropped while their children still run are reaped later, never left as zombies.
    let pids: Vec<u32> = (0..5)
        .map(|i| Process::spawn(short, i).map(|p| p.pid().unwrap_or(0)))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(300));
    println!("active children: {}", active_children().len());
    for pid in pids {
        println!("dropped child {pid}: {}", state_of(pid));
    }
    Ok(())
}
