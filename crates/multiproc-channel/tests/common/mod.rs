//! The shared test helpers (crates/multiproc-testutil).
#![allow(unused_imports)]
pub use multiproc_testutil::*;
