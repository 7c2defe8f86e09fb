//! Seed 000 ("PIPE"): a child sends `[42, None, 'hello']` through a Pipe and closes its end;
//! the parent prints what it receives.
//!
//! Python:
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     reader, writer = Pipe()
//!     p = Process(target=f, args=(writer,))
//!     p.start()
//!     print(reader.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//! The pipe is typed: a Python list of mixed items becomes a tuple `(i32, Option<i32>, String)`.
//! The end passed to the child travels as a handle (its shared-memory segments), as in Python.
//! Run: `cargo run --example pipe_basic`

use multiproc::{Connection, Pipe, Process};

type Msg = (i32, Option<i32>, String);

#[multiproc::task]
fn f(mut conn: Connection<Msg>) {
    conn.send(&(42, None, "hello".to_string())).expect("send");
    conn.close();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let (mut reader, writer) = Pipe::duplex::<Msg>()?;
    let mut p = Process::spawn(f, writer)?;
    println!("{:?}", reader.recv()?); // (42, None, "hello")
    p.join()?;
    // The child closed its end and the pipe is drained: the next recv is EOF (Python's EOFError).
    println!("{}", reader.recv().unwrap_err());
    Ok(())
}
