//! The child side: [`init`] (the first line of `main`) and what a started child runs.
//!
//! A spawned child finds `MULTIPROC_CHILD=<fd>` in its environment; the fd is a memfd holding the
//! bootstrap record. The child validates it (magic, version, build id, task), answers the
//! handshake on the ack pipe, takes on its identity (name, daemon, parent), runs the task under
//! `catch_unwind`, writes the outcome into the result memfd and exits: 0 on success, 1 on a panic
//! or a task error. It never returns into the program's own `main`.

use crate::boot::{
    ACK_ERR, ACK_OK, BOOT_MAGIC, BOOT_VERSION, Boot, CHILD_ENV, FORKSERVER_ENV, Outcome,
};
use crate::facade::Ordering;
use crate::state::{self, Current};
use crate::{registry, sys};
use multiproc_shm::ProcessId;
use std::io::Write;
use std::os::fd::RawFd;

/// Must be the first line of `main` in every program that starts processes.
///
/// In a process started by multiproc (spawn or forkserver) it runs the requested task and exits;
/// in the fork server it serves fork requests until the parent goes; otherwise it returns at once.
/// Call it before starting any thread: in a child it edits the environment.
///
/// ```no_run
/// multiproc_process::init(); // the first line of `main`
/// ```
pub fn init() {
    // Relaxed: only this thread's later spawns read it (and `InitMissingInChild` is advisory).
    state::INIT_CALLED.store(true, Ordering::Relaxed);
    if let Some(spec) = std::env::var_os(FORKSERVER_ENV) {
        crate::forkserver::serve(&spec.to_string_lossy());
    }
    if let Some(v) = std::env::var_os(CHILD_ENV) {
        match v.to_string_lossy().parse::<RawFd>() {
            Ok(fd) if fd >= 0 => child_main(fd, false),
            _ => {
                eprintln!("multiproc: bad {CHILD_ENV} value {v:?}");
                // SAFETY: _exit is always safe.
                unsafe { libc::_exit(2) }
            }
        }
    }
}

/// What [`init_with`] registered: run once in this process (at once in a parent, before the task
/// in a spawned or fork-server child).
type ChildInit = Box<dyn FnOnce() + Send>;
static CHILD_INIT: std::sync::Mutex<Option<ChildInit>> = std::sync::Mutex::new(None);

/// [`init`] with a per-process setup step: `setup` runs once in this process and once in every
/// child it starts by spawn or through the fork server, before the child's task (and before the
/// child's `log_to_stderr` level is applied). Put there what a child needs and cannot inherit
/// through exec: a `tracing` subscriber, a panic hook, metrics.
///
/// Children started with [`StartMethod::Fork`](crate::StartMethod::Fork) are copies of the
/// parent and already have what `setup` installed there; it does not run again in them. The
/// fork server itself never runs it (it stays a clean single-threaded copy); the children it
/// forks do. A panic in `setup` in a child fails that child like a panic in its task.
///
/// ```no_run
/// // The first line of `main`:
/// multiproc_process::init_with(|| {
///     // e.g. tracing_subscriber::fmt().with_writer(std::io::stderr).init();
/// });
/// // ... start processes; their tasks log through the same subscriber setup
/// ```
pub fn init_with(setup: impl FnOnce() + Send + 'static) {
    *CHILD_INIT.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(setup));
    // In a child (or the fork server) this never returns.
    init();
    run_child_init();
}

/// Takes and runs the hook registered by [`init_with`], if any.
fn run_child_init() {
    let hook = CHILD_INIT.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(hook) = hook {
        hook();
    }
}

/// Runs a started child from its bootstrap fd. Never returns.
pub(crate) fn child_main(boot_fd: RawFd, from_forkserver: bool) -> ! {
    if !from_forkserver {
        // Programs this task runs (std::process::Command) must not take the variable for theirs.
        // SAFETY: `init()` runs first in `main` (or before it), while the process has one thread.
        unsafe { std::env::remove_var(CHILD_ENV) };
    }
    let bytes = sys::pread_all(boot_fd);
    // SAFETY: the boot fd was given to us; nothing else uses it.
    unsafe { libc::close(boot_fd) };
    let boot: Boot = match bytes
        .map_err(|e| e.to_string())
        .and_then(|b| postcard::from_bytes(&b).map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("multiproc: unreadable bootstrap record: {e}");
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(2) }
        }
    };
    let refuse = |msg: String| -> ! {
        let mut m = vec![ACK_ERR];
        m.extend_from_slice(msg.as_bytes());
        let _ = sys::write_all(boot.ack_fd, &m);
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(2) }
    };
    if boot.magic != BOOT_MAGIC || boot.version != BOOT_VERSION {
        refuse(format!(
            "bootstrap format {:#x} v{} is not this build's {BOOT_MAGIC:#x} v{BOOT_VERSION}",
            boot.magic, boot.version
        ));
    }
    if boot.build_id != registry::build_id() {
        refuse(format!(
            "the parent is a different build of the program (build id {:#018x}, ours {:#018x})",
            boot.build_id,
            registry::build_id()
        ));
    }
    let Some(entry) = registry::entry_by_hash(boot.task_hash).filter(|e| e.id == boot.task_id)
    else {
        refuse(format!(
            "task `{}` is not registered in this binary",
            boot.task_id
        ));
    };
    if boot.daemon {
        // Die with the parent; then close the race where it died before the prctl.
        if let Err(e) = sys::set_pdeathsig(libc::SIGKILL) {
            refuse(format!("prctl(PR_SET_PDEATHSIG) failed: {e}"));
        }
        if sys::getppid() != boot.real_parent as i32 {
            refuse("the parent died before the child started".into());
        }
    }
    if let Some(dir) = &boot.cwd
        && let Err(e) = std::env::set_current_dir(dir)
    {
        refuse(format!("cannot change directory to {dir}: {e}"));
    }
    if from_forkserver {
        for (k, v) in &boot.env {
            // SAFETY: a fork-server child is single-threaded here (forked from the
            // single-threaded server), so nothing reads the environment concurrently.
            unsafe { std::env::set_var(k, v) };
        }
    }
    // Every fd we were given must be here (a missing one would be found by the task as EBADF,
    // or worse as another file at that number); programs the task runs must not inherit them.
    for &fd in boot.passed_fds.iter().chain([&boot.result_fd]) {
        if let Err(e) = sys::set_cloexec(fd, true) {
            refuse(format!(
                "fd {fd} the parent passed is not usable in the child: {e}"
            ));
        }
    }
    if sys::write_all(boot.ack_fd, &[ACK_OK]).is_err() {
        // The parent gave up on us (its end of the ack pipe is closed): never run unsupervised.
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(2) };
    }
    // SAFETY: closing the ack fd we were given.
    unsafe { libc::close(boot.ack_fd) };
    state::set_current(Current {
        name: boot.name.clone(),
        identity: boot.identity.clone(),
        daemon: boot.daemon,
        parent: Some(ProcessId {
            pid: boot.parent_pid,
            start_time: boot.parent_start_time,
        }),
        counter: 0,
    });
    // The application's setup (`init_with`): before the task, and before our own stderr logger
    // so that a subscriber it installs wins (`log_to_stderr` never replaces one).
    let setup = std::panic::catch_unwind(run_child_init).map_err(|p| {
        format!(
            "the child setup given to init_with panicked: {}",
            panic_message(&*p)
        )
    });
    #[cfg(feature = "log-to-stderr")]
    if let Some(level) = boot.log_level.and_then(crate::log::level_from_u8) {
        let _ = crate::log::log_to_stderr(level);
    }
    #[cfg(not(feature = "log-to-stderr"))]
    let _ = boot.log_level;
    let trampoline = entry.trampoline;
    let args = boot.args;
    run_and_exit(boot.result_fd, true, move || {
        setup?;
        trampoline(&args).map_err(|e| e.to_string())
    })
}

/// Runs the task body, writes the outcome to `result_fd`, joins our own children and exits.
/// `log`: emit the start and exit lines (off in a child forked from a threaded parent, whose
/// subscriber may be locked by a thread that did not survive the fork).
pub(crate) fn run_and_exit(
    result_fd: RawFd,
    log: bool,
    body: impl FnOnce() -> Result<Vec<u8>, String>,
) -> ! {
    // As Python's `_bootstrap`: a child's stdin is /dev/null, so it never competes with its
    // parent for terminal input.
    redirect_stdin_to_null();
    if log {
        tracing::info!(target: "multiproc", "child process calling self.run()");
    }
    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(v)) => Outcome::Ok(v),
        Ok(Err(e)) => Outcome::Error(e),
        Err(p) => Outcome::Panic(panic_message(&*p)),
    };
    let code = match outcome {
        Outcome::Ok(_) => 0,
        _ => 1,
    };
    if let Ok(bytes) = postcard::to_allocvec(&outcome) {
        let _ = sys::write_all(result_fd, &bytes);
    }
    // SAFETY: closing our copy of the result fd.
    unsafe { libc::close(result_fd) };
    finish(code, log)
}

/// Joins this process's children, logs (if `log`), flushes stdio and `_exit`s.
pub(crate) fn finish(code: i32, log: bool) -> ! {
    state::shutdown_children();
    if log {
        tracing::info!(target: "multiproc", "process exiting with exitcode {code}");
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit is always safe; we flushed what we own.
    unsafe { libc::_exit(code) }
}

fn redirect_stdin_to_null() {
    // SAFETY: a NUL-terminated path; dup2 onto fd 0 and close of our temporary fd.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            if fd != 0 {
                libc::dup2(fd, 0);
                libc::close(fd);
            } else {
                // fd 0 was closed and we got it: make it survive exec like a normal stdin.
                let _ = sys::set_cloexec(0, false);
            }
        }
    }
}

/// The message of a panic payload (`panic!("..")` gives a `&str` or a `String`); other payloads
/// (`std::panic::panic_any(42)`) are named as such. Every layer that catches a task's panic
/// (a process, a pool worker, a remote worker) reports it with this.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
