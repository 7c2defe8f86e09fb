//! Which public types may cross threads, checked by the compiler.
//!
//! Handles (`Value`, `Queue`, `Pool`, ...) are `Send + Sync` or `Send`, as their docs say; every
//! guard of a robust mutex is `!Send`: the kernel's robust list and the mutex's owner word name the
//! thread that locked it, so the unlock must happen on that thread. A change that makes a guard
//! `Send` (a field of a `Send` type replacing the `PhantomData<*const ()>` marker, say) fails to
//! compile here: these assertions are the compile-fail tests of the `!Send` guards.
//!
//! The `assert_not_impl!` trick: `AmbiguousIfImpl<_>` has one blanket impl for every type and a
//! second only for types with the auto trait, so naming `<T as AmbiguousIfImpl<_>>::item` is
//! ambiguous (a compile error) exactly when `T` has it.

#![allow(dead_code)]

use multiproc::channel::Codec;

fn send<T: Send + ?Sized>() {}
fn sync<T: Sync + ?Sized>() {}

macro_rules! assert_send_sync {
    ($($t:ty),+ $(,)?) => { $( const _: fn() = || { send::<$t>(); sync::<$t>(); }; )+ };
}
macro_rules! assert_send {
    ($($t:ty),+ $(,)?) => { $( const _: fn() = || { send::<$t>(); }; )+ };
}
macro_rules! assert_not_impl {
    ($auto:path; $($t:ty),+ $(,)?) => {
        $(
            const _: fn() = || {
                trait AmbiguousIfImpl<A> {
                    fn item() {}
                }
                impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
                struct Implements;
                impl<T: ?Sized + $auto> AmbiguousIfImpl<Implements> for T {}
                let _ = <$t as AmbiguousIfImpl<_>>::item;
            };
        )+
    };
}
macro_rules! assert_not_send {
    ($($t:ty),+ $(,)?) => { assert_not_impl!(Send; $($t),+); };
}
macro_rules! assert_not_sync {
    ($($t:ty),+ $(,)?) => { assert_not_impl!(Sync; $($t),+); };
}

// Shared state and synchronisation: one handle may be used from many threads at once.
assert_send_sync!(
    multiproc::Value<u64>,
    multiproc::Array<u64>,
    multiproc::RawValue<u64>,
    multiproc::RawArray<u64>,
    multiproc::Lock,
    multiproc::RLock,
    multiproc::Semaphore,
    multiproc::BoundedSemaphore,
    multiproc::Event,
    multiproc::Condition,
    multiproc::Barrier,
    multiproc::Segment,
);

// Queues: Python's Queue is thread- and process-safe; so are these handles.
assert_send_sync!(
    multiproc::Queue<u64>,
    multiproc::Queue<String>,
    multiproc::JoinableQueue<u64>,
    multiproc::SimpleQueue<u64>,
    multiproc::Sender<u64>,
    multiproc::Receiver<u64>,
    multiproc::MpmcRing,
);

// Pool and processes.
assert_send_sync!(multiproc::Pool, multiproc::AsyncResult<u64>);
assert_send!(multiproc::Process);

// Collections.
assert_send_sync!(
    multiproc::SharedDict<String, u64>,
    multiproc::SharedList<u64>,
    multiproc::SharedLock,
    multiproc::Manager,
);

// Errors own their causes (no guard, no borrow): `?` takes each into `Box<dyn Error + Send +
// Sync>` or anyhow, across threads.
assert_send_sync!(
    multiproc::ShmError,
    multiproc::SyncError,
    multiproc::CreateError,
    multiproc::AccessError,
    multiproc::LockError,
    multiproc::SendError,
    multiproc::RecvError,
    multiproc::PutError<u64>,
    multiproc::GetError,
    multiproc::channel::ChannelError,
    multiproc::StartError,
    multiproc::JoinError,
    multiproc::ProcessError,
    multiproc::BuildError,
    multiproc::SubmitError,
    multiproc::TaskError,
    multiproc::PoolError,
    multiproc::collections::CreateError,
    multiproc::collections::ReadError,
    multiproc::collections::WriteError,
    multiproc::collections::Error,
);
#[cfg(feature = "redis")]
assert_send_sync!(
    multiproc::redis::ConnectError,
    multiproc::redis::PutError,
    multiproc::redis::GetError,
    multiproc::redis::SubmitError,
    multiproc::redis::TaskError,
    multiproc::redis::LinkError,
    multiproc::redis::Error,
);

// One end of a pipe or ring belongs to one thread at a time, but may move.
assert_send!(
    multiproc::Connection<u64>,
    multiproc::Producer,
    multiproc::Consumer,
    multiproc::SpscRing,
);

// Guards of robust mutexes: released by the thread that locked.
assert_not_send!(
    multiproc::ValueGuard<'static, u64>,
    multiproc::ArrayGuard<'static, u64>,
    multiproc::RLockGuard<'static>,
    multiproc::CondGuard<'static>,
    multiproc::SharedLockGuard<'static>,
    multiproc::DictGuard<'static, String, u64>,
    multiproc::ListGuard<'static, u64>,
);

// A Pipe end is used by one thread at a time (Python's Connection is not thread-safe either).
assert_not_sync!(multiproc::Connection<u64>);

// Lock and Semaphore are not owned by a thread (Python lets any thread release them), so their
// guards may move: a guard released on another thread releases the lock.
assert_send!(
    multiproc::LockGuard<'static>,
    multiproc::SemaphoreGuard<'static>
);

/// The assertions above are checked at compile time; this test only makes the file a test target
/// that the README's test command builds.
#[test]
fn auto_traits_are_checked_at_compile_time() {
    fn codec_is_a_type<C: Codec<u64>>() {}
    codec_is_a_type::<multiproc::channel::Postcard>();
}
