//! Seed 000 ("PIPE"): a child sends `[42, None, 'hello']` through a Pipe and closes its end;
//! the parent prints what it receives.
//!
//! Python:
//! ```python
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//! reader, writer = Pipe()
//! p = Process(target=f, args=(writer,)); p.start()
//! print(reader.recv())   # prints "[42, None, 'hello']"
//! p.join()
//! ```
//! Run: `cargo run --example pipe_basic`

use multiproc::Pipe;

type Msg = (i32, Option<i32>, String);

/// Runs `f` in a forked child (until multiproc-process lands, fork stands in for `Process`).
fn spawn(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the example is single-threaded; the child runs `f` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// Waits for a child (Python's `p.join()`).
fn join(pid: libc::pid_t) {
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

fn main() {
    let (mut reader, mut writer) = Pipe::duplex::<Msg>().expect("pipe");
    let p = spawn(move || {
        writer.send(&(42, None, "hello".to_string())).expect("send");
        writer.close();
    });
    println!("{:?}", reader.recv().expect("recv")); // (42, None, "hello")
    join(p);
    // The writer is closed and the pipe drained: the next recv is EOF.
    println!("{:?}", reader.recv().unwrap_err());
}
