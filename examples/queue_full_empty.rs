//! Seed 001 ("put_nowait / get_nowait"): a full queue refuses `put_nowait` with Full (the item
//! comes back), an empty one answers `get_nowait` with Empty.
//!
//! Python:
//! ```python
//! q = Queue(2)
//! try:
//!     q.put_nowait(1); q.put_nowait(2); q.put_nowait(3)
//! except queue.Full:
//!     print('Full')
//! q = Queue()
//! try:
//!     print(q.get_nowait())
//! except queue.Empty:
//!     print('Empty')
//! ```
//! Run: `cargo run --example queue_full_empty`

use multiproc::{GetError, PutError, Queue};

fn main() {
    let q: Queue<i32> = Queue::new(2).expect("queue");
    let r = q
        .put_nowait(1)
        .and_then(|()| q.put_nowait(2))
        .and_then(|()| q.put_nowait(3));
    match r {
        Err(PutError::Full(item)) => println!("Full (item {item} handed back)"),
        other => println!("unexpected: {other:?}"),
    }
    let q: Queue<i32> = Queue::new(1024).expect("queue");
    match q.get_nowait() {
        Err(GetError::Empty) => println!("Empty"),
        other => println!("unexpected: {other:?}"),
    }
}
