//! Starting a re-exec'd child: `posix_spawn("/proc/self/exe")` (a vfork-style clone in glibc,
//! safe in a multi-threaded parent) whose file actions leave the child exactly its stdio and the
//! fds it is passed, whatever the parent has open without `O_CLOEXEC` (as Python's spawn, which
//! closes every fd it does not pass):
//!
//! * `dup2(fd, fd)` for each passed fd, which clears its `FD_CLOEXEC` in the child only
//!   (glibc >= 2.29), so the child sees it at the same number;
//! * `close(n)` for every other number from 3 up to the highest passed fd (glibc ignores a close
//!   of a number that is not open, so the list needs no snapshot of the parent's fds and has no
//!   race with threads opening fds meanwhile; above 4096 such numbers the open ones are listed
//!   from `/proc/self/fd` instead);
//! * `closefrom(highest + 1)` (`posix_spawn_file_actions_addclosefrom_np`, glibc >= 2.34,
//!   `close_range` underneath).
//!
//! Children that must die with their parent (daemons, the fork server) are started from one
//! long-lived "spawner" thread, because `PR_SET_PDEATHSIG` fires when the *thread* that created
//! a process exits, and a caller's thread may be short-lived.

use crate::error::StartError;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Mutex;
use std::sync::mpsc;

/// Starts `/proc/self/exe` with this process's argv, the current environment minus multiproc's variables,
/// plus `env`, keeping `fds` open at their numbers. Returns the pid.
pub(crate) fn spawn_self(
    env: &[(OsString, OsString)],
    fds: &[i32],
) -> Result<libc::pid_t, StartError> {
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    // The child gets this process's whole argv (as Python restores `sys.argv` in a spawned
    // child), so `std::env::args()` reads the same there; it learns that it is a child from
    // `MULTIPROC_CHILD` in its environment, never from argv.
    let mut args: Vec<CString> = std::env::args_os()
        .map(|a| {
            let mut b = a.into_vec();
            b.retain(|&c| c != 0);
            CString::new(b).expect("NULs removed")
        })
        .collect();
    if args.is_empty() {
        args.push(CString::new("multiproc-child").expect("no NUL"));
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());

    let mut envs: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == OsStr::new(crate::boot::CHILD_ENV) || k == OsStr::new(crate::boot::FORKSERVER_ENV) {
            continue;
        }
        if env.iter().any(|(ek, _)| ek == &k) {
            continue;
        }
        envs.push(kv(&k, &v));
    }
    for (k, v) in env {
        envs.push(kv(k, v));
    }
    let mut envp: Vec<*const libc::c_char> = envs.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let mut fa = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    // SAFETY: fa is a valid out-pointer; init fully initializes it.
    let r = unsafe { libc::posix_spawn_file_actions_init(fa.as_mut_ptr()) };
    if r != 0 {
        return Err(os_err("posix_spawn_file_actions_init", r));
    }
    // SAFETY: initialized above.
    let mut fa = unsafe { fa.assume_init() };
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: attr is a valid out-pointer.
    let r = unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) };
    if r != 0 {
        // SAFETY: fa was initialized.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut fa) };
        return Err(os_err("posix_spawnattr_init", r));
    }
    // SAFETY: initialized above.
    let mut attr = unsafe { attr.assume_init() };
    let result = (|| {
        let keep = keep_list(fds);
        for &fd in &keep {
            // SAFETY: fa is initialized; dup2(fd, fd) clears FD_CLOEXEC in the child.
            let r = unsafe { libc::posix_spawn_file_actions_adddup2(&mut fa, fd, fd) };
            if r != 0 {
                return Err(os_err("posix_spawn_file_actions_adddup2", r));
            }
        }
        for fd in close_list(&keep)? {
            // SAFETY: fa is initialized; a close of a number that is not open is ignored.
            let r = unsafe { libc::posix_spawn_file_actions_addclose(&mut fa, fd) };
            if r != 0 {
                return Err(os_err("posix_spawn_file_actions_addclose", r));
            }
        }
        let above = keep.last().copied().unwrap_or(2).max(2) + 1;
        // SAFETY: fa is initialized.
        let r = unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut fa, above) };
        if r != 0 {
            return Err(os_err("posix_spawn_file_actions_addclosefrom_np", r));
        }
        // The child starts with an empty signal mask and default SIGPIPE, as std's Command does.
        // SAFETY: the sigset pointers are valid; attr is initialized.
        unsafe {
            let mut empty = std::mem::zeroed::<libc::sigset_t>();
            check("sigemptyset", libc::sigemptyset(&mut empty))?;
            check(
                "posix_spawnattr_setsigmask",
                libc::posix_spawnattr_setsigmask(&mut attr, &empty),
            )?;
            let mut def = std::mem::zeroed::<libc::sigset_t>();
            check("sigemptyset", libc::sigemptyset(&mut def))?;
            check("sigaddset", libc::sigaddset(&mut def, libc::SIGPIPE))?;
            check(
                "posix_spawnattr_setsigdefault",
                libc::posix_spawnattr_setsigdefault(&mut attr, &def),
            )?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(
                "posix_spawnattr_setflags",
                libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short),
            )?;
        }
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid and NUL-terminated; argv and envp end with null; the
        // CStrings outlive the call.
        let r = unsafe {
            libc::posix_spawn(
                &mut pid,
                exe.as_ptr(),
                &fa,
                &attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            )
        };
        if r != 0 {
            return Err(os_err("posix_spawn /proc/self/exe", r));
        }
        Ok(pid)
    })();
    // SAFETY: both were initialized and are destroyed once.
    unsafe {
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
    }
    result
}

/// The fds to keep (>= 3: stdio stays as it is), sorted, without duplicates.
fn keep_list(fds: &[i32]) -> Vec<i32> {
    let mut keep: Vec<i32> = fds.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// More numbers than this between 3 and the highest kept fd: close only the open ones.
const MAX_BLIND_CLOSES: usize = 4096;

/// The numbers from 3 up to the highest kept fd that the child must close.
fn close_list(keep: &[i32]) -> Result<Vec<i32>, StartError> {
    let Some(&top) = keep.last() else {
        return Ok(Vec::new());
    };
    let gaps = (top as usize).saturating_sub(2).saturating_sub(keep.len());
    if gaps <= MAX_BLIND_CLOSES {
        return Ok((3..top)
            .filter(|n| keep.binary_search(n).is_err())
            .collect());
    }
    // A parent with thousands of fds: list the open ones. (An fd another thread opens without
    // O_CLOEXEC between this listing and the spawn may then reach the child.)
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|source| StartError::Os {
        op: "listing /proc/self/fd",
        source,
    })?;
    let mut open: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&n| n >= 3 && n < top && keep.binary_search(&n).is_err())
        .collect();
    open.sort_unstable();
    Ok(open)
}

/// A libc result that is 0 on success and an errno (or -1 with errno) otherwise.
fn check(op: &'static str, r: libc::c_int) -> Result<(), StartError> {
    match r {
        0 => Ok(()),
        -1 => Err(StartError::os(op)),
        code => Err(os_err(op, code)),
    }
}

fn kv(k: &OsStr, v: &OsStr) -> CString {
    let mut b = k.as_bytes().to_vec();
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    b.retain(|&c| c != 0);
    CString::new(b).expect("NULs removed")
}

fn os_err(op: &'static str, code: i32) -> StartError {
    StartError::Os {
        op,
        source: std::io::Error::from_raw_os_error(code),
    }
}

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: Mutex<Option<(u32, mpsc::Sender<Job>)>> = Mutex::new(None);

/// Runs `f` on the long-lived spawner thread and returns its result.
pub(crate) fn on_spawner_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::sync_channel::<R>(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sender = {
        let mut g = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::process::id();
        match &*g {
            Some((pid, s)) if *pid == me => s.clone(),
            _ => {
                // Not started yet, or inherited through fork (the thread did not survive it).
                let (s, r) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("multiproc-spawner".into())
                    .spawn(move || {
                        while let Ok(job) = r.recv() {
                            job();
                        }
                    })
                    .expect("spawning the multiproc spawner thread");
                if let Some(old) = g.take() {
                    // A forked copy: its thread is gone; leak the sender rather than touch it.
                    std::mem::forget(old);
                }
                *g = Some((me, s.clone()));
                s
            }
        }
    };
    sender.send(job).expect("the spawner thread never exits");
    rx.recv().expect("the spawner thread answers every job")
}

/// Whether this process runs the spawner thread (started here, not inherited through fork).
pub(crate) fn spawner_running() -> bool {
    let g = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    matches!(&*g, Some((pid, _)) if *pid == std::process::id())
}

/// The spawner slot, locked (held across `fork` so the child never inherits it locked).
pub(crate) struct SpawnerLock(std::sync::MutexGuard<'static, Option<(u32, mpsc::Sender<Job>)>>);

/// Locks the spawner slot.
pub(crate) fn lock_spawner() -> SpawnerLock {
    SpawnerLock(SPAWNER.lock().unwrap_or_else(|p| p.into_inner()))
}

impl SpawnerLock {
    /// In a forked child: the spawner thread did not survive the fork; forget its sender
    /// without running its destructor (which could touch the dead thread's channel state).
    pub(crate) fn forget_in_child(&mut self) {
        if let Some(old) = self.0.take() {
            std::mem::forget(old);
        }
    }
}
