//! The process-wide head-writer patience (`mpmc::set_head_writer_patience`), in a test binary of
//! its own: the setting changes every handle of the process, so it must not shorten the waits
//! other tests rely on.

mod common;

use common::ring_behind_a_stalled_head_writer;
use multiproc_ring::PopError;
use std::time::{Duration, Instant};

#[test]
fn a_shorter_patience_bounds_the_wait_behind_a_live_stalled_head_writer() {
    // As `try_pop_behind_a_live_stalled_head_writer_gives_up`: position 1 claimed by a live
    // process (ourselves) that never publishes, position 2 finished.
    let q = ring_behind_a_stalled_head_writer();
    let mut v = Vec::new();
    // The default patience: the pop waits for the writer at least that long.
    let t = Instant::now();
    assert_eq!(q.try_pop_into(&mut v), Err(PopError::Empty));
    assert!(t.elapsed() >= multiproc_ring::mpmc::HEAD_WRITER_PATIENCE);
    // 1 ms: the same pop gives up after about that (bounded far below the default's 200 ms,
    // with room for a loaded machine), and nothing is lost or taken out of order.
    multiproc_ring::mpmc::set_head_writer_patience(Duration::from_millis(1));
    let t = Instant::now();
    assert_eq!(q.try_pop_into(&mut v), Err(PopError::Empty));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1) && took < Duration::from_millis(150),
        "{took:?}"
    );
    assert_eq!(q.lost_records(), 0);
    multiproc_ring::mpmc::set_head_writer_patience(multiproc_ring::mpmc::HEAD_WRITER_PATIENCE);
}
