//! Iterators over a queue's items ([`Iter`], [`TryIter`], [`IntoIter`]) and the `IntoIterator`
//! impls of every queue handle.

use super::{JoinableQueue, Queue, Receiver, SimpleQueue};
use crate::codec::{Codec, Postcard};
use crate::error::GetError;

/// Blocking iterator over a queue's items ([`Queue::iter`]): ends on `Disconnected`/`Closed`.
pub struct Iter<'a, T, C = Postcard> {
    pub(super) q: &'a Queue<T, C>,
}

impl<T: 'static, C: Codec<T>> Iterator for Iter<'_, T, C> {
    type Item = Result<T, GetError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.q.get() {
            Err(GetError::Disconnected | GetError::Closed) => None,
            r => Some(r),
        }
    }
}

/// Non-blocking iterator ([`Queue::try_iter`]): ends on `Empty`/`Disconnected`/`Closed`.
pub struct TryIter<'a, T, C = Postcard> {
    pub(super) q: &'a Queue<T, C>,
}

impl<T: 'static, C: Codec<T>> Iterator for TryIter<'_, T, C> {
    type Item = Result<T, GetError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.q.get_nowait() {
            Err(GetError::Disconnected | GetError::Closed | GetError::Empty) => None,
            r => Some(r),
        }
    }
}

/// Owning blocking iterator (`IntoIterator` for a queue handle): as [`Iter`].
pub struct IntoIter<T, C = Postcard> {
    q: Queue<T, C>,
}

impl<T: 'static, C: Codec<T>> Iterator for IntoIter<T, C> {
    type Item = Result<T, GetError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.q.iter().next()
    }
}

macro_rules! into_iter {
    ($ty:ident, $conv:expr) => {
        impl<T: 'static, C: Codec<T>> IntoIterator for $ty<T, C> {
            type Item = Result<T, GetError>;
            type IntoIter = IntoIter<T, C>;
            fn into_iter(self) -> IntoIter<T, C> {
                IntoIter { q: $conv(self) }
            }
        }

        impl<'a, T: 'static, C: Codec<T>> IntoIterator for &'a $ty<T, C> {
            type Item = Result<T, GetError>;
            type IntoIter = Iter<'a, T, C>;
            fn into_iter(self) -> Iter<'a, T, C> {
                self.iter()
            }
        }
    };
}

into_iter!(Queue, |q| q);
into_iter!(Receiver, |r: Receiver<T, C>| r.into_queue());
into_iter!(JoinableQueue, |q: JoinableQueue<T, C>| q.into_queue());
into_iter!(SimpleQueue, |q: SimpleQueue<T, C>| q.into_queue());

impl<T, C> Receiver<T, C> {
    fn into_queue(self) -> Queue<T, C> {
        self.0
    }
}

impl<T, C> JoinableQueue<T, C> {
    fn into_queue(self) -> Queue<T, C> {
        self.0
    }
}

impl<T, C> SimpleQueue<T, C> {
    fn into_queue(self) -> Queue<T, C> {
        self.0
    }
}
