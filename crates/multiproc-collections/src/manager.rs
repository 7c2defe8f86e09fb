//! `Manager`: the one place to make the shared objects Python users reach for through
//! `multiprocessing.Manager()` — `dict()`, `list()`, `value(x)`, `array(..)`, `lock()` — without
//! a server process. Each object lives in its own shared-memory segment, so there is no server to
//! die and take the data with it, and an access costs a lock and a copy instead of a socket round
//! trip and two pickles.
//!
//! `Manager` holds nothing: objects outlive it and are freed when their last handle (in any
//! process) goes. Queues, events, semaphores, conditions and barriers come from the layers below.
//!
//! ```
//! use multiproc_collections::Manager;
//! let m = Manager::new();
//! let d = m.dict::<String, i64>().unwrap();
//! let lock = m.lock().unwrap();
//! d.insert(&"count".into(), &300).unwrap();
//! {
//!     let _g = lock.lock().unwrap();           // with lock:
//!     let c = d.get("count").unwrap().unwrap(); //     d['count'] -= 1
//!     d.insert(&"count".into(), &(c - 1)).unwrap();
//! }
//! d.update("count", |c| c.unwrap_or(0) - 1).unwrap(); // the same, in one critical section
//! assert_eq!(d.get("count").unwrap(), Some(298));
//! ```

use crate::dict::Key;
use crate::error::{CreateError, Result};
use crate::{SharedDict, SharedList, SharedLock};
use multiproc_channel::ChannelError;
use multiproc_channel::{JoinableQueue, Queue, SimpleQueue};
use multiproc_shm::ShmError;
use multiproc_sync::{
    Array, Barrier, BarrierCreateError, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore,
    SharedData, Value,
};

/// Makes shared objects (Python's `multiprocessing.Manager()`, minus the server).
#[derive(Clone, Copy, Debug, Default)]
pub struct Manager {
    _private: (),
}

impl Manager {
    /// A manager. Cheap: it starts no process and owns no memory.
    pub fn new() -> Manager {
        Manager { _private: () }
    }

    /// A new shared dict (`m.dict()`), default capacity.
    pub fn dict<K: Key, V: Key>(&self) -> Result<SharedDict<K, V>, CreateError> {
        SharedDict::new()
    }

    /// A new shared dict for `capacity` entries.
    pub fn dict_with_capacity<K: Key, V: Key>(
        &self,
        capacity: usize,
    ) -> Result<SharedDict<K, V>, CreateError> {
        SharedDict::with_capacity(capacity)
    }

    /// A new shared dict holding `items` (`m.dict({'count': 300})`).
    pub fn dict_from<K: Key, V: Key>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<SharedDict<K, V>> {
        let d = SharedDict::new()?;
        for (k, v) in items {
            d.insert(&k, &v)?;
        }
        Ok(d)
    }

    /// A new shared list (`m.list()`), default capacity.
    pub fn list<T: Key>(&self) -> Result<SharedList<T>, CreateError> {
        SharedList::new()
    }

    /// A new shared list for `capacity` elements.
    pub fn list_with_capacity<T: Key>(
        &self,
        capacity: usize,
    ) -> Result<SharedList<T>, CreateError> {
        SharedList::with_capacity(capacity)
    }

    /// A new shared list holding `items` (`m.list([1, 2, 3])`).
    pub fn list_from<T: Key>(&self, items: impl IntoIterator<Item = T>) -> Result<SharedList<T>> {
        let l = SharedList::new()?;
        for x in items {
            l.push(&x)?;
        }
        Ok(l)
    }

    /// A new locked shared value (`m.Value('i', x)`).
    pub fn value<T: SharedData>(&self, x: T) -> Result<Value<T>, multiproc_sync::CreateError> {
        Value::new(x)
    }

    /// A new locked shared array holding `items` (`m.Array('d', items)`).
    pub fn array<T: SharedData>(
        &self,
        items: &[T],
    ) -> Result<Array<T>, multiproc_sync::CreateError> {
        Array::from_slice(items)
    }

    /// A new robust lock (`m.Lock()`).
    pub fn lock(&self) -> Result<SharedLock, CreateError> {
        SharedLock::new()
    }

    /// A new process queue holding at most `maxsize` items (`m.Queue(maxsize)`).
    pub fn queue<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
        &self,
        maxsize: usize,
    ) -> Result<Queue<T>, ChannelError> {
        Queue::new(maxsize)
    }

    /// A new joinable queue (`m.JoinableQueue(maxsize)`).
    pub fn joinable_queue<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>, ChannelError> {
        JoinableQueue::new(maxsize)
    }

    /// A new simple queue (`m.SimpleQueue()`).
    pub fn simple_queue<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
        &self,
    ) -> Result<SimpleQueue<T>, ChannelError> {
        SimpleQueue::new()
    }

    /// A new futex-based lock that any process may release (`m.Lock()` with Python's exact
    /// semantics; [`Manager::lock`] gives the robust-mutex lock instead).
    pub fn process_lock(&self) -> Result<Lock, ShmError> {
        Lock::new()
    }

    /// A new reentrant lock (`m.RLock()`).
    pub fn rlock(&self) -> Result<RLock, ShmError> {
        RLock::new()
    }

    /// A new semaphore (`m.Semaphore(n)`).
    pub fn semaphore(&self, value: u32) -> Result<Semaphore, ShmError> {
        Semaphore::new(value)
    }

    /// A new bounded semaphore (`m.BoundedSemaphore(n)`).
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore, ShmError> {
        BoundedSemaphore::new(value)
    }

    /// A new event (`m.Event()`).
    pub fn event(&self) -> Result<Event, ShmError> {
        Event::new()
    }

    /// A new condition over its own reentrant lock (`m.Condition()`).
    pub fn condition(&self) -> Result<Condition, ShmError> {
        Condition::new()
    }

    /// A new barrier for `parties` processes (`m.Barrier(parties)`).
    pub fn barrier(&self, parties: u32) -> Result<Barrier, BarrierCreateError> {
        Barrier::new(parties)
    }
}
