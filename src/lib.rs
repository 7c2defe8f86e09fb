//! multiproc

pub use multiproc_sync::{
    Barrier, BarrierError, BoundedSemaphore, CondGuard, Condition, ConditionError, Event, Lock,
    LockError, LockGuard, RLock, RLockError, RLockGuard, Semaphore, SemaphoreError, SemaphoreGuard,
};
