//! Process plumbing for workloads: fork a child pinned to a CPU, wait for it with a deadline.
//! The helpers live in multiproc-testutil (the one home of the fork/wait/kill helpers of every
//! test suite and of this bench); this module names what the workloads use.
//!
//! The bench forks from a single-threaded parent (nothing here starts threads), so forked
//! children may allocate freely.

pub use multiproc_testutil::{Child, cpus, fork_pinned, pin_to_cpu, wait_all};
