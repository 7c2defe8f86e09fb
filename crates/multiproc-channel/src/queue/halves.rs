//! [`Sender`] and [`Receiver`]: the producer-only and consumer-only handles of a [`Queue`].

use super::{Iter, Queue, TryIter};
use crate::codec::{Codec, Postcard};
use crate::error::{GetError, PutError, TaskDoneError};
use multiproc_sync::park::WaitStrategy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The producer half of a [`Queue`]: it counts as a producer only, so consumers get
/// [`GetError::Disconnected`] once every `Sender` (and every full `Queue` handle) is gone.
pub struct Sender<T, C = Postcard>(pub(super) Queue<T, C>);

/// The consumer half of a [`Queue`]: it counts as a consumer only, so putters get
/// [`PutError::Disconnected`] once every `Receiver` (and every full `Queue` handle) is gone.
pub struct Receiver<T, C = Postcard>(pub(super) Queue<T, C>);

macro_rules! half_common {
    ($half:ident, $name:literal) => {
        impl<T, C> Clone for $half<T, C> {
            fn clone(&self) -> Self {
                $half(self.0.clone())
            }
        }

        impl<T, C> std::fmt::Debug for $half<T, C> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple($name).field(&self.0).finish()
            }
        }

        impl<T: 'static, C: Codec<T>> $half<T, C> {
            /// The bound (`maxsize`).
            pub fn maxsize(&self) -> usize {
                self.0.maxsize()
            }

            /// Items in the queue (see [`Queue::qsize`]).
            pub fn qsize(&self) -> usize {
                self.0.qsize()
            }

            /// Whether the queue holds no item.
            pub fn empty(&self) -> bool {
                self.0.empty()
            }

            /// Whether the queue holds `maxsize` items.
            pub fn full(&self) -> bool {
                self.0.full()
            }

            /// Closes this handle (see [`Queue::close`]).
            pub fn close(&mut self) {
                self.0.close()
            }

            /// See [`Queue::set_wait_strategy`].
            pub fn set_wait_strategy(&mut self, s: impl Into<WaitStrategy>) {
                self.0.set_wait_strategy(s)
            }

            /// See [`Queue::is_disconnected`].
            pub fn is_disconnected(&self) -> bool {
                self.0.is_disconnected()
            }
        }

        impl<T: 'static, C: Codec<T>> Serialize for $half<T, C> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de, T: 'static, C: Codec<T>> Deserialize<'de> for $half<T, C> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Queue::deserialize(d).map($half)
            }
        }
    };
}

half_common!(Sender, "Sender");
half_common!(Receiver, "Receiver");

impl<T: 'static, C: Codec<T>> Sender<T, C> {
    /// See [`Queue::put`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.0.put(item)
    }

    /// See [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.0.put_timeout(item, timeout)
    }

    /// See [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.0.put_nowait(item)
    }
}

impl<T: 'static, C: Codec<T>> Receiver<T, C> {
    /// See [`Queue::get`].
    pub fn get(&self) -> Result<T, GetError> {
        self.0.get()
    }

    /// See [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.0.get_timeout(timeout)
    }

    /// See [`Queue::get_nowait`].
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.0.get_nowait()
    }

    /// See [`Queue::iter`].
    pub fn iter(&self) -> Iter<'_, T, C> {
        self.0.iter()
    }

    /// See [`Queue::try_iter`].
    pub fn try_iter(&self) -> TryIter<'_, T, C> {
        self.0.try_iter()
    }

    /// [`JoinableQueue::task_done`] for a consumer-only handle of a `JoinableQueue` (on a plain
    /// queue nothing is ever unfinished: [`TaskDoneError::TooManyCalls`]).
    ///
    /// [`JoinableQueue::task_done`]: super::JoinableQueue::task_done
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.0.task_done_inner()
    }
}
