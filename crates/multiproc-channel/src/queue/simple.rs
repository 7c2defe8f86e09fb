//! [`SimpleQueue`]: Python's `SimpleQueue` (put/get/empty/close, no timeouts) over a
//! [`Queue`].

use super::{Iter, Queue, Receiver, SIMPLE_QUEUE_MAXSIZE, Sender, TryIter};
use crate::codec::{Codec, Postcard};
use crate::error::{ChannelError, GetError, PutError};
use multiproc_sync::park::WaitStrategy;
use serde::{Deserialize, Serialize};

/// Python's `SimpleQueue`: `put`, `get`, `empty`, `close`, and no timeouts (the full [`Queue`]
/// has them). Bounded, unlike Python's: [`SIMPLE_QUEUE_MAXSIZE`] items (a `put` beyond waits),
/// or [`SimpleQueue::with_maxsize`]. Disconnects as [`Queue`] does.
pub struct SimpleQueue<T, C = Postcard>(pub(super) Queue<T, C>);

impl<T, C> Clone for SimpleQueue<T, C> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T, C> std::fmt::Debug for SimpleQueue<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.0).finish()
    }
}

impl<T: 'static, C: Codec<T>> SimpleQueue<T, C> {
    /// A new simple queue of [`SIMPLE_QUEUE_MAXSIZE`] items.
    pub fn new() -> Result<Self, ChannelError> {
        Queue::new(SIMPLE_QUEUE_MAXSIZE).map(SimpleQueue)
    }

    /// A new simple queue of `maxsize` items (`1..=`[`MAX_MAXSIZE`](super::MAX_MAXSIZE)).
    pub fn with_maxsize(maxsize: usize) -> Result<Self, ChannelError> {
        Queue::new(maxsize).map(SimpleQueue)
    }

    /// A blocking iterator (see [`Queue::iter`]).
    pub fn iter(&self) -> Iter<'_, T, C> {
        self.0.iter()
    }

    /// A producer-only handle (see [`Queue::sender`]).
    pub fn sender(&self) -> Sender<T, C> {
        self.0.sender()
    }

    /// A consumer-only handle (see [`Queue::receiver`]): a consumer that also holds a
    /// `SimpleQueue` counts as a producer and never sees `Disconnected`.
    pub fn receiver(&self) -> Receiver<T, C> {
        self.0.receiver()
    }

    /// A non-blocking iterator (see [`Queue::try_iter`]).
    pub fn try_iter(&self) -> TryIter<'_, T, C> {
        self.0.try_iter()
    }

    /// Puts an item (waits only if the queue holds its bound of items).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.0.put(item)
    }

    /// Takes the next item, waiting for one.
    pub fn get(&self) -> Result<T, GetError> {
        self.0.get()
    }

    /// Whether no item is waiting.
    pub fn empty(&self) -> bool {
        self.0.empty()
    }

    /// Closes this handle.
    pub fn close(&mut self) {
        self.0.close()
    }

    /// See [`Queue::set_wait_strategy`].
    pub fn set_wait_strategy(&mut self, s: impl Into<WaitStrategy>) {
        self.0.set_wait_strategy(s)
    }
}

impl<T: 'static, C: Codec<T>> Serialize for SimpleQueue<T, C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: 'static, C: Codec<T>> Deserialize<'de> for SimpleQueue<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Queue::deserialize(d).map(SimpleQueue)
    }
}
