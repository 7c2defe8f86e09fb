//! One watcher thread per process that waits, in one `poll(2)`, for every fd a pending future
//! is waiting on (a child's pidfd, a fork server's status pipe) and wakes that future's task
//! when the fd is readable or its deadline passed. This is what makes [`Process::join_async`]
//! work on any executor (tokio, smol, a hand-written `block_on`): a future needs a [`Waker`],
//! not a reactor.
//!
//! Protocol: a future that finds its fd not ready registers `(fd, deadline, waker)` under the
//! watcher's lock and writes the watcher's eventfd, so the watcher rebuilds its `poll` set with
//! the new fd. `poll` is level-triggered, so an fd that became ready between the future's
//! check and its registration is reported at the watcher's next `poll`: no wake is lost. A
//! fired entry is removed before its waker is woken; the future's next poll checks its fd
//! again and registers again if it is still not done. A dropped future removes its entry.
//!
//! The thread starts with the first registration and exits when no entry is left, so a
//! process with no pending future has no watcher thread (and a `fork` after the last join has
//! none to lose). A child forked while registrations were pending starts a watcher of its own
//! on a fresh state: the parent's state (whose lock the parent's watcher may have held at the
//! fork) is left untouched, and its entries belong to the parent's tasks.
//!
//! [`Process::join_async`]: crate::Process::join_async

use crate::facade::{AtomicPtr, Ordering};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

struct Entry {
    id: u64,
    fd: Arc<OwnedFd>,
    deadline: Option<Instant>,
    waker: Waker,
}

struct Watcher {
    entries: Vec<Entry>,
    next_id: u64,
    /// A watcher thread runs (it clears this, under the lock, when it exits).
    running: bool,
    /// The eventfd that makes the watcher rebuild its `poll` set.
    wake: Option<Arc<OwnedFd>>,
}

/// One process's watcher state.
struct Shared {
    /// The process it belongs to (a forked child finds its parent's pid here).
    owner: u32,
    st: Mutex<Watcher>,
}

/// This process's state: a leaked `Shared`, replaced (never freed) in a forked child.
static STATE: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// This process's watcher state, made on first use (and anew in a forked child, where the
/// parent's may be locked by a thread that does not exist here).
fn shared() -> &'static Shared {
    let me = std::process::id();
    loop {
        // Acquire: pairs with the AcqRel exchange below, so the `Shared` another thread
        // published is seen initialized.
        let p = STATE.load(Ordering::Acquire);
        // SAFETY: a non-null `STATE` points to a `Shared` leaked by `Box::leak` below and never
        // freed (a forked child inherits it as mapped memory); `owner` is never written after.
        if !p.is_null() && unsafe { (*p).owner } == me {
            // SAFETY: as above; 'static since it is never freed.
            return unsafe { &*p };
        }
        let fresh = Box::into_raw(Box::new(Shared {
            owner: me,
            st: Mutex::new(Watcher {
                entries: Vec::new(),
                next_id: 0,
                running: false,
                wake: None,
            }),
        }));
        // AcqRel: publishes `fresh` (Release) and, on failure, sees the winner's (Acquire).
        match STATE.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // The old one (a parent's) is leaked on purpose: its lock may be held forever.
            // SAFETY: `fresh` was just leaked and is now published; never freed.
            Ok(_) => return unsafe { &*fresh },
            Err(_) => {
                // Another thread of this process installed one first: ours was never shared.
                // SAFETY: `fresh` came from `Box::into_raw` above and nobody else has it.
                drop(unsafe { Box::from_raw(fresh) });
            }
        }
    }
}

fn lock() -> MutexGuard<'static, Watcher> {
    shared().st.lock().unwrap_or_else(|p| p.into_inner())
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with valid flags; the fd returned is ours.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn notify(wake: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: an eventfd we own; 8 valid bytes. A full counter (EAGAIN) still wakes the poller.
    unsafe {
        libc::write(
            wake.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
}

fn drain(wake: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: a non-blocking eventfd we own; 8 writable bytes.
    unsafe {
        libc::read(
            wake.as_raw_fd(),
            (&mut v as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
}

/// Leaves `waker` to be woken once `fd` is readable (or hung up, or in error) or at
/// `deadline`. `reg` is the caller's registration: `None` the first time (set here), then the
/// same value on later polls (the entry's waker, fd and deadline are refreshed; an entry that
/// already fired is made again).
pub(crate) fn register(
    reg: &mut Option<u64>,
    fd: &Arc<OwnedFd>,
    deadline: Option<Instant>,
    waker: &Waker,
) -> io::Result<()> {
    let mut w = lock();
    let wake = match &w.wake {
        Some(e) => e.clone(),
        None => {
            let e = Arc::new(eventfd()?);
            w.wake = Some(e.clone());
            e
        }
    };
    let existing = reg.and_then(|id| w.entries.iter_mut().find(|e| e.id == id));
    let changed = match existing {
        Some(e) => {
            if !e.waker.will_wake(waker) {
                e.waker.clone_from(waker);
            }
            let changed = !Arc::ptr_eq(&e.fd, fd) || e.deadline != deadline;
            e.fd = fd.clone();
            e.deadline = deadline;
            changed
        }
        None => {
            let id = w.next_id;
            w.next_id += 1;
            w.entries.push(Entry {
                id,
                fd: fd.clone(),
                deadline,
                waker: waker.clone(),
            });
            *reg = Some(id);
            true
        }
    };
    if !w.running {
        let t = std::thread::Builder::new()
            .name("multiproc-fdwatch".into())
            .spawn({
                let wake = wake.clone();
                move || run(wake)
            });
        if let Err(e) = t {
            let id = *reg;
            w.entries.retain(|e| Some(e.id) != id);
            *reg = None;
            return Err(e);
        }
        w.running = true;
    } else if changed {
        notify(&wake);
    }
    Ok(())
}

/// Removes the caller's entry (a dropped or finished future).
pub(crate) fn unregister(reg: &mut Option<u64>) {
    let Some(id) = reg.take() else { return };
    let mut w = lock();
    let before = w.entries.len();
    w.entries.retain(|e| e.id != id);
    if w.entries.len() != before
        && let Some(wake) = &w.wake
    {
        // The watcher rebuilds its set (and exits if it is empty).
        notify(wake);
    }
}

/// The watcher thread.
fn run(wake: Arc<OwnedFd>) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut polled: Vec<(u64, Arc<OwnedFd>)> = Vec::new();
    loop {
        let timeout = {
            let mut w = lock();
            if w.entries.is_empty() {
                w.running = false;
                return;
            }
            polled.clear();
            // The Arcs keep every polled fd open until the poll returned.
            polled.extend(w.entries.iter().map(|e| (e.id, e.fd.clone())));
            let now = Instant::now();
            w.entries
                .iter()
                .filter_map(|e| e.deadline)
                .min()
                .map(|d| d.saturating_duration_since(now))
        };
        fds.clear();
        fds.push(libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(polled.iter().map(|(_, fd)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // The fds are kept open by `wake` and `polled`; EINTR and errors only end this round
        // early (the loop re-polls).
        let r = crate::sys::poll(&mut fds, timeout);
        if r.as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::Interrupted)
        {
            // ENOMEM and the like: retry without spinning (deadlines are checked below).
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if fds[0].revents != 0 {
            drain(&wake);
        }
        let ready: Vec<u64> = polled
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| p.revents != 0)
            .map(|((id, _), _)| *id)
            .collect();
        let fired: Vec<Waker> = {
            let mut w = lock();
            let now = Instant::now();
            let mut fired = Vec::new();
            w.entries.retain_mut(|e| {
                let fire = ready.contains(&e.id) || e.deadline.is_some_and(|d| d <= now);
                if fire {
                    fired.push(e.waker.clone());
                }
                !fire
            });
            fired
        };
        for waker in fired {
            waker.wake();
        }
    }
}

/// Whether a watcher thread runs in this process (tests).
#[cfg(feature = "test-hooks")]
pub(crate) fn __watcher_running() -> bool {
    lock().running
}
