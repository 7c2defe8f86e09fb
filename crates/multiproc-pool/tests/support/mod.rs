//! Tasks shared by the pool's test binaries.
#![allow(dead_code)]

use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;

#[multiproc_process::task(crate = multiproc_process)]
pub fn sqr(x: u64) -> u64 {
    x * x
}

/// `x * x`, pausing 3 ms on every 50th `x` (chunks of plain data that take a while).
#[multiproc_process::task(crate = multiproc_process)]
pub fn sqr_pausing(x: u64) -> u64 {
    if x.is_multiple_of(50) {
        std::thread::sleep(Duration::from_millis(3));
    }
    x * x
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn mul(a: u64, b: u64) -> u64 {
    a * b
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn pid_of_worker() -> u32 {
    std::process::id()
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Writes the worker's pid to `path`, then sleeps `ms`.
#[multiproc_process::task(crate = multiproc_process)]
pub fn report_pid_then_sleep(path: String, ms: u64) -> u32 {
    let _ = std::fs::write(&path, std::process::id().to_string());
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn panics_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        panic!("bad value {x}");
    }
    x
}

/// Item 64: the failing item fails at once, the others take `ms`.
#[multiproc_process::task(crate = multiproc_process)]
pub fn fail_first_sleep_rest(x: u64, ms: u64) -> u64 {
    if x == 0 {
        panic!("first fails");
    }
    std::thread::sleep(Duration::from_millis(ms));
    x
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyError {
    pub code: i32,
    pub reason: String,
}

/// Item 63: a typed error travels with its type and fields.
#[multiproc_process::task(crate = multiproc_process)]
pub fn typed_error(code: i32) -> Result<u8, MyError> {
    Err(MyError {
        code,
        reason: "because".into(),
    })
}

/// A value that cannot be encoded (Python's unpicklable result).
#[derive(Debug, Deserialize)]
pub struct Unencodable(pub u8);

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn unencodable() -> Unencodable {
    Unencodable(1)
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn exit_now(code: i32) -> u8 {
    std::process::exit(code)
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn init_env(value: String) {
    // SAFETY: the worker is single-threaded when its initializer runs.
    unsafe { std::env::set_var("POOL_INIT_VALUE", value) };
}

#[multiproc_process::task(crate = multiproc_process)]
pub fn read_env() -> String {
    std::env::var("POOL_INIT_VALUE").unwrap_or_default()
}

/// Live (non-zombie) and zombie children of this process, from /proc.
#[allow(unused_imports)] // not every suite that includes this module uses it
pub use multiproc_testutil::children;

#[multiproc_process::task(crate = multiproc_process)]
pub fn failing_init() {
    panic!("initializer fails")
}
