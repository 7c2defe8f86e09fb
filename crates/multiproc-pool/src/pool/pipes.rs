//! The parent's ends of a worker's pipes: the job side ([`JobPipe`]) and the result side
//! ([`Reader`], read by the receiver thread or a waiting caller, woken through an eventfd).
use super::JobFds;
use crate::facade::{AtomicBool, AtomicU64, Ordering};
use crate::fdpass;
use crate::wire::Payload;
use multiproc_channel::Connection;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

/// The write side of a worker: its job pipe and its fd socket.
pub(super) struct JobPipe {
    pub(super) conn: Connection<Vec<u8>>,
    pub(super) sock: OwnedFd,
}

impl JobPipe {
    /// Sends job `seq` (its fds first). False if the worker is gone.
    pub(super) fn send(
        &mut self,
        buf: &mut Vec<u8>,
        seq: u64,
        payload: &Payload,
        fds: &JobFds,
    ) -> bool {
        if let Some(f) = fds {
            let raw: Vec<RawFd> = f.iter().map(|o| o.as_raw_fd()).collect();
            if fdpass::send_fds(self.sock.as_fd(), &raw).is_err() {
                return false;
            }
        }
        if payload.body.is_some() {
            // A plain chunk: its items go from the caller's input straight into the ring.
            let seq = seq.to_le_bytes();
            return self
                .conn
                .send_bytes_vectored(&[&seq, &payload.head, payload.body()])
                .is_ok();
        }
        buf.clear();
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&payload.head);
        self.conn.send_bytes(buf, 0, None).is_ok()
    }
}

/// The result pipe's read end and its receive buffer.
pub(super) struct RxEnd {
    pub(super) conn: Connection<Vec<u8>>,
    pub(super) buf: Vec<u8>,
}

/// The result side of one worker (one generation). Whoever holds `rx` reads results: the
/// worker's receiver thread while some held job's result is nobody else's to read (`need`),
/// else a caller of `apply` waiting for its own result, which reads the pipe itself (two
/// hand-offs per `apply`: caller -> worker -> caller, as a pipe round trip). An idle receiver
/// sleeps in `poll(2)` on the worker's pidfd and an eventfd (`wake`), so it notices the
/// worker's end at once and is woken when a job it must read for is sent.
pub(super) struct Reader {
    pub(super) rx: Mutex<RxEnd>,
    /// Held jobs whose results the receiver thread must read (not a direct caller's), plus
    /// one until the worker's hello arrived.
    pub(super) need: AtomicU64,
    /// The receiver is (about to be) asleep in `poll`: a waker writes the eventfd.
    pub(super) idle: AtomicBool,
    /// The receiver wants the pipe (the worker ended, or a direct reader saw its end): direct
    /// readers give it up and wait for their result as any caller does.
    pub(super) takeover: AtomicBool,
    pub(super) wake: OwnedFd,
    pub(super) pidfd: Option<OwnedFd>,
}

impl Reader {
    pub(super) fn must_read(&self) -> bool {
        // SeqCst: with `idle` (store SeqCst in `receiver`, load SeqCst in `wake`), a job
        // counted after the receiver's check is always followed by an eventfd write.
        self.need.load(Ordering::SeqCst) > 0 || self.takeover.load(Ordering::SeqCst)
    }

    /// Wakes the receiver if it sleeps (or is about to).
    fn wake(&self) {
        // SeqCst: pairs with the receiver's `idle` store and `need` re-check (see `must_read`).
        if self.idle.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Writes the eventfd (the receiver's next or current sleep ends at once).
    pub(super) fn notify(&self) {
        {
            let one: u64 = 1;
            // SAFETY: `wake` is an eventfd we own; 8 valid bytes are written. A full counter
            // (EAGAIN) already wakes the reader.
            unsafe {
                libc::write(
                    self.wake.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// Counts a job the receiver must read for, waking it.
    pub(super) fn add_need(&self) {
        // SeqCst: see `must_read`.
        self.need.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    pub(super) fn sub_need(&self) {
        // Relaxed: only the receiver's decision to read depends on it, and a stale non-zero
        // value costs one more bounded receive.
        let _ = self
            .need
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Sleeps until woken, the worker's end, or `d`.
    pub(super) fn sleep(&self, d: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // A negative fd is ignored by poll; errors and EINTR only end the sleep early.
        let _ = multiproc_shm::sys::poll(&mut fds, Some(d.min(Duration::from_secs(1))));
        if fds[0].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: a non-blocking eventfd we own; 8 writable bytes.
            unsafe {
                libc::read(
                    self.wake.as_raw_fd(),
                    (&mut v as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

pub(super) fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd returned is ours.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
