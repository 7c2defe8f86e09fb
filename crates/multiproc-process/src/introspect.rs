//! What a process can learn about itself and its family: [`current_process`],
//! [`parent_process`] (a [`ParentProcess`] watched by identity) and [`active_children`].

use crate::state;
use crate::sys;
use multiproc_shm::ProcessId;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// What `current_process()` says about this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// "MainProcess", or the name given to this child ("Process-1", "Process-1:2", ...).
    pub name: String,
    /// The pid.
    pub pid: u32,
    /// Whether this process is a daemon.
    pub daemon: bool,
    /// Python's `_identity`: the child numbers from the main process down.
    pub identity: Vec<u32>,
}

/// This process.
pub fn current_process() -> ProcessInfo {
    state::with_current(|c| ProcessInfo {
        name: c.name.clone(),
        pid: std::process::id(),
        daemon: c.daemon,
        identity: c.identity.clone(),
    })
}

/// The process that started this one (`None` in the main process).
pub fn parent_process() -> Option<ParentProcess> {
    state::with_current(|c| c.parent).map(|id| ParentProcess { id })
}

/// A live child, as listed by [`active_children`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its pid.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// The children of this process that are still running (finished ones whose handle was dropped
/// are reaped on the way, as Python's `active_children` does).
pub fn active_children() -> Vec<ChildInfo> {
    state::live_children()
        .into_iter()
        .map(|(pid, name, daemon)| ChildInfo {
            pid: pid as u32,
            name,
            daemon,
        })
        .collect()
}

/// The parent of this process, watched by identity (pid + start time, so a reused pid is not
/// mistaken for it).
#[derive(Clone, Copy, Debug)]
pub struct ParentProcess {
    id: ProcessId,
}

impl ParentProcess {
    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.id.pid
    }

    /// Whether the parent still runs.
    pub fn is_alive(&self) -> bool {
        self.id.is_alive()
    }

    /// Waits up to `timeout` for the parent to end; returns whether it has ended.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        match sys::pidfd_open(self.id.pid as libc::pid_t) {
            Ok(fd) => {
                // The pid may have been reused between our check and the open: re-check identity.
                if !self.id.is_alive() {
                    return true;
                }
                sys::poll_readable(fd.as_fd(), Some(timeout)).unwrap_or(false) || !self.is_alive()
            }
            Err(_) => true,
        }
    }

    /// A pidfd that becomes readable when the parent ends (Python's `parent_process().sentinel`).
    pub fn sentinel(&self) -> std::io::Result<OwnedFd> {
        let fd = sys::pidfd_open(self.id.pid as libc::pid_t)?;
        if !self.id.is_alive() {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(fd)
    }
}
