//! [`wait`]: Python's `multiprocessing.connection.wait` over connections and file descriptors
//! (the [`Waitable`] trait, [`Sentinel`]), polling with backoff and `ppoll(2)` sleeps.

use super::Connection;
use crate::codec::Codec;
use multiproc_shm::deadline::{after as deadline_after, left as remaining};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Something [`wait`] can poll: connections and file descriptors (process sentinels).
pub trait Waitable {
    /// Whether a receive would not block now (a message, end of file, or an error to report).
    fn ready(&mut self) -> bool;

    /// A file descriptor that becomes readable when this object is ready, if there is one:
    /// [`wait`] sleeps in `poll(2)` on these, so a sentinel wakes it at once.
    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl<T, C: Codec<T>> Waitable for Connection<T, C> {
    fn ready(&mut self) -> bool {
        self.poll(Duration::ZERO).unwrap_or(true)
    }
}

impl<W: Waitable + ?Sized> Waitable for &mut W {
    fn ready(&mut self) -> bool {
        (**self).ready()
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).readiness_fd()
    }
}

/// A file descriptor [`wait`] treats as ready once it is readable (or hung up, or in error),
/// as Python's `connection.wait` treats an integer: typically a process sentinel, the pidfd of
/// `multiproc::Process::sentinel()` (readable once the process exits), or an eventfd, a pipe,
/// a socket. `BorrowedFd` and `OwnedFd` are `Waitable` too; `Sentinel` is `Copy` and names the
/// intent.
#[derive(Clone, Copy, Debug)]
pub struct Sentinel<'a>(BorrowedFd<'a>);

impl<'a> Sentinel<'a> {
    /// Wraps `fd`.
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        Sentinel(fd)
    }

    /// The file descriptor.
    pub fn fd(&self) -> BorrowedFd<'a> {
        self.0
    }
}

impl<'a> From<BorrowedFd<'a>> for Sentinel<'a> {
    fn from(fd: BorrowedFd<'a>) -> Self {
        Sentinel(fd)
    }
}

/// Whether `fd` is readable now (`poll(2)` with a zero timeout). An invalid descriptor counts
/// as ready (an error the caller sees when it uses it), as a failing `Connection::poll` does.
fn fd_ready(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        match multiproc_shm::sys::poll(std::slice::from_mut(&mut p), Some(Duration::ZERO)) {
            Ok(r) => return r > 0 && p.revents != 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

impl Waitable for Sentinel<'_> {
    fn ready(&mut self) -> bool {
        fd_ready(self.0)
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0)
    }
}

impl Waitable for BorrowedFd<'_> {
    fn ready(&mut self) -> bool {
        fd_ready(self.as_fd())
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Waitable for OwnedFd {
    fn ready(&mut self) -> bool {
        fd_ready(self.as_fd())
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// Sleeps up to `d`, waking early if one of `fds` becomes readable (`ppoll(2)`); a plain sleep
/// when there is none.
fn sleep_or_fd(fds: &mut [libc::pollfd], d: Duration) {
    if fds.is_empty() {
        std::thread::sleep(d);
        return;
    }
    // EINTR or errors just end the sleep early.
    let _ = multiproc_shm::sys::ppoll(fds, d);
}

/// Waits until at least one of `objs` is ready or `timeout` passes (`None`: no limit); returns
/// the indices of the ready ones (empty on timeout), as Python's
/// `multiprocessing.connection.wait`. Objects may be connections and file descriptors
/// ([`Sentinel`], `BorrowedFd`, `OwnedFd`) mixed, through `&mut dyn Waitable`:
///
/// ```no_run
/// use multiproc_channel::{Pipe, Waitable, pipe::Sentinel, wait};
/// # fn f(pidfd: std::os::fd::BorrowedFd<'_>) {
/// let (mut a, _b) = Pipe::duplex::<u32>().unwrap();
/// let mut s = Sentinel::new(pidfd);
/// let ready = wait(&mut [&mut a as &mut dyn Waitable, &mut s], None);
/// # }
/// ```
///
/// Polling, not a futex: each connection sleeps on its own ring's futex word, and there is no
/// word shared by several rings. The loop polls every object, spins briefly, then yields, then
/// sleeps with an exponential backoff from 20 µs up to 1 ms, so a message waits at most ~1 ms
/// to be noticed once the waiter is asleep, and an idle waiter costs ~1000 wake-ups a second.
/// The sleeps are `ppoll(2)` on the file descriptors among `objs`, so a sentinel wakes the
/// waiter at once.
pub fn wait<W: Waitable>(objs: &mut [W], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.and_then(deadline_after);
    let mut round: u32 = 0;
    let mut sleep = Duration::from_micros(20);
    let mut fds: Option<Vec<libc::pollfd>> = None;
    loop {
        let ready: Vec<usize> = objs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, o)| o.ready().then_some(i))
            .collect();
        if !ready.is_empty() || objs.is_empty() {
            return ready;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return ready;
        }
        round += 1;
        if round < 64 {
            std::hint::spin_loop();
        } else if round < 80 {
            std::thread::yield_now();
        } else {
            let s = match deadline {
                Some(d) => sleep.min(remaining(d)),
                None => sleep,
            };
            let fds = fds.get_or_insert_with(|| {
                objs.iter()
                    .filter_map(|o| o.readiness_fd())
                    .map(|fd| libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect()
            });
            sleep_or_fd(fds, s);
            sleep = (sleep * 2).min(Duration::from_millis(1));
        }
    }
}
