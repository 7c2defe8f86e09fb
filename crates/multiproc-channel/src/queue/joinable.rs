//! [`JoinableQueue`]: a [`Queue`] with an unfinished-task count in shared memory
//! (`task_done`/`join`).

use super::{PARK_MAX, Queue, QueueOptions};
use crate::codec::{Codec, Postcard};
use crate::error::{ChannelError, JoinError, TaskDoneError};
use crate::facade::Ordering;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

impl<T: 'static, C: Codec<T>> Queue<T, C> {
    // ----- JoinableQueue support -----

    pub(super) fn task_done_inner(&self) -> Result<(), TaskDoneError> {
        let t = &self.ctl().tasks;
        let mut cur = t.unfinished.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return Err(TaskDoneError::TooManyCalls);
            }
            // SeqCst: Dekker partner of the joiner's announcement in `join_deadline`.
            match t.unfinished.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur == 1 {
            // The waker's half of the Dekker pair with a joiner parked in `join_deadline`.
            t.wait.wake_all();
        }
        Ok(())
    }

    pub(super) fn join_deadline(&self, deadline: Option<Instant>) -> Result<(), JoinError> {
        let t = &self.ctl().tasks;
        let r = t.wait.wait_until(
            self.strategy,
            &self.budget,
            deadline,
            PARK_MAX,
            // SeqCst: same total order as `task_done_inner`'s decrement and `put`'s increment.
            || (t.unfinished.load(Ordering::SeqCst) == 0).then_some(()),
            || None::<()>,
        );
        match r {
            Ok(()) => Ok(()),
            Err(_) => match t.unfinished.load(Ordering::SeqCst) {
                0 => Ok(()),
                unfinished => Err(JoinError::Timeout { unfinished }),
            },
        }
    }
}

/// A [`Queue`] whose consumers acknowledge items with [`JoinableQueue::task_done`], so a
/// producer can [`JoinableQueue::join`] until every item put was processed. The unfinished count
/// lives in shared memory.
///
/// A consumer killed between `get` and `task_done` leaves the count above zero for good:
/// use [`JoinableQueue::join_timeout`] where that matters.
pub struct JoinableQueue<T, C = Postcard>(pub(super) Queue<T, C>);

impl<T, C> Clone for JoinableQueue<T, C> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T, C> std::fmt::Debug for JoinableQueue<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.0).finish()
    }
}

impl<T: 'static, C: Codec<T>> JoinableQueue<T, C> {
    /// A joinable queue holding at most `maxsize` items (see [`Queue::new`]).
    pub fn new(maxsize: usize) -> Result<Self, ChannelError> {
        Queue::build(None, maxsize, QueueOptions::default(), true).map(JoinableQueue)
    }

    /// A named joinable queue (see [`Queue::create_named`]).
    pub fn create_named(name: &str, maxsize: usize) -> Result<Self, ChannelError> {
        Queue::build(Some(name), maxsize, QueueOptions::default(), true).map(JoinableQueue)
    }

    /// Opens a named joinable queue.
    pub fn open_named(name: &str) -> Result<Self, ChannelError> {
        let mut q = Queue::open_named(name)?;
        q.joinable = true;
        Ok(JoinableQueue(q))
    }

    /// Marks one item taken by `get` as processed; more calls than items put is
    /// [`TaskDoneError::TooManyCalls`].
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.0.task_done_inner()
    }

    /// Items put and not yet `task_done`.
    pub fn unfinished(&self) -> usize {
        self.0.ctl().tasks.unfinished.load(Ordering::Relaxed) as usize
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) {
        let _ = self.0.join_deadline(None);
    }

    /// Waits at most `timeout` until every item put has been marked done.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinError> {
        self.0
            .join_deadline(multiproc_shm::deadline::after(timeout))
    }
}

impl<T, C> std::ops::Deref for JoinableQueue<T, C> {
    type Target = Queue<T, C>;
    fn deref(&self) -> &Queue<T, C> {
        &self.0
    }
}

impl<T, C> std::ops::DerefMut for JoinableQueue<T, C> {
    fn deref_mut(&mut self) -> &mut Queue<T, C> {
        &mut self.0
    }
}

impl<T: 'static, C: Codec<T>> Serialize for JoinableQueue<T, C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: 'static, C: Codec<T>> Deserialize<'de> for JoinableQueue<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut q = Queue::deserialize(d)?;
        q.joinable = true;
        Ok(JoinableQueue(q))
    }
}
