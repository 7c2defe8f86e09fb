//! Sync workloads of the comparison bench: `event_pingpong`.
//!
//! `event_pingpong`: two processes pinned to CPUs 0 and 1 alternate on two Events, exactly as
//! `benches/python/mp_bench.py event_pingpong` does: A sets e1 and waits e2; B waits e1, clears
//! it and sets e2; A clears e2 and starts over (e1 is cleared before e2 is set, and e2 before the
//! next e1.set(), so no wake-up is lost). Reported as round trips per second.
//!
//! Self-contained (its own fork + pin helper) so it does not depend on the harness module.

use multiproc::Event;
use std::time::{Duration, Instant};

const WARMUP: u64 = 1000;
/// How long either side waits for the other before the run is declared failed.
const STALL: Duration = Duration::from_secs(30);

/// Runs the sync workloads of this area.
pub fn run(cfg: &crate::Config, out: &mut Vec<crate::Record>) {
    if cfg.only.as_deref().is_some_and(|w| w != "event_pingpong") {
        return;
    }
    let n: u64 = if cfg.quick { 20_000 } else { 200_000 };
    match event_pingpong(n) {
        Ok(v) => out.push(crate::Record {
            workload: "event_pingpong".into(),
            system: "multiproc".into(),
            value: v,
            unit: "rt/s".into(),
        }),
        Err(e) => eprintln!("event_pingpong (multiproc) failed: {e}"),
    }
    let pn = if cfg.quick { 2_000u64 } else { 20_000 };
    let pn = pn.to_string();
    out.extend(crate::python::run("event_pingpong", &["--n", pn.as_str()]));
}

/// Measures `n` round trips (after a warm-up) between this process (CPU 0) and a forked child
/// (CPU 1). Returns round trips per second.
pub fn event_pingpong(n: u64) -> Result<f64, String> {
    let e1 = Event::new().map_err(|e| e.to_string())?;
    let e2 = Event::new().map_err(|e| e.to_string())?;
    let total = WARMUP + n;
    let saved = affinity();
    let child = fork_pinned(1, || {
        for _ in 0..total {
            if !e1.wait_timeout(STALL) {
                return 1;
            }
            e1.clear();
            e2.set();
        }
        0
    })?;
    pin(0);
    let mut t0 = Instant::now();
    let mut ok = true;
    for i in 0..total {
        if i == WARMUP {
            t0 = Instant::now();
        }
        e1.set();
        if !e2.wait_timeout(STALL) {
            ok = false;
            break;
        }
        e2.clear();
    }
    let dt = t0.elapsed();
    if let Some(set) = saved {
        set_affinity(&set);
    }
    let code = child.wait(Duration::from_secs(60));
    if !ok || code != Some(0) {
        return Err(format!("child stopped answering (exit {code:?})"));
    }
    Ok(n as f64 / dt.as_secs_f64())
}

/// A forked child; killed on drop if still running.
struct Forked {
    pid: libc::pid_t,
    reaped: bool,
}

impl Forked {
    fn wait(mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Forks a child pinned to the `side`-th allowed CPU that runs `f` and `_exit`s with its result.
fn fork_pinned(side: usize, f: impl FnOnce() -> i32) -> Result<Forked, String> {
    // SAFETY: the child only pins itself, runs `f` over pre-built shared objects and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        pin(side);
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(Forked { pid, reaped: false })
}

fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size for this process (pid 0).
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: valid pointer and size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

/// Pins the caller to the `side`-th allowed CPU (as mp_bench.py's `pin`); no-op with < 2 CPUs.
fn pin(side: usize) {
    let Some(set) = affinity() else { return };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: a bit test on a valid set with an index below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.len() < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the index is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpus[side.min(cpus.len() - 1)], &mut one) };
    set_affinity(&one);
}
