//! The task registry: every `#[multiproc::task]` function has one [`TaskEntry`] in the linkme
//! distributed slice [`TASKS`], collected at link time from every crate of the binary.
//!
//! A parent finds the entry of the plain function it was handed by the function item's `TypeId`
//! (each fn item has its own zero-sized type, so this is exact and needs no fn-pointer comparison,
//! which Rust does not guarantee to be unique); it sends the entry's stable id hash to the child,
//! which looks the hash up in its own copy of the slice (same binary) and calls the trampoline.
//!
//! ```ignore
//! #[multiproc::task]
//! fn square(x: u64) -> u64 { x * x }
//! let e = multiproc_process::registry::entry_of(&square).unwrap();
//! assert!(e.id.ends_with("::square(u64)->u64"));
//! ```

use crate::error::{ProcessError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::TypeId;
use std::sync::OnceLock;

/// One registered task.
#[derive(Debug)]
pub struct TaskEntry {
    /// `module_path::name(ArgTypes)->RetType`.
    pub id: &'static str,
    /// The `TypeId` of the function item (how `Process::spawn(f, ..)` finds this entry).
    pub type_id: fn() -> TypeId,
    /// Decodes the arguments, calls the function, encodes its result.
    pub trampoline: fn(&[u8]) -> std::result::Result<Vec<u8>, String>,
}

impl TaskEntry {
    /// The stable hash of [`TaskEntry::id`] (FNV-1a 64), sent to the child.
    pub fn hash(&self) -> u64 {
        fnv1a(self.id.as_bytes())
    }
}

/// Every task of this binary.
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// A function a process can run. Implemented for every `Fn` of up to 8 arguments whose
/// arguments and result are serde types; `M` is a marker (the fn signature) that keeps the
/// implementations apart. One argument travels as itself, several as a tuple, none as `()`.
pub trait Task<M>: Copy + Send + 'static {
    /// What the child receives.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What the child returns.
    type Output: Serialize + DeserializeOwned;
    /// Calls the function.
    fn call(self, args: Self::Args) -> Self::Output;
}

impl<F, R> Task<fn() -> R> for F
where
    F: Fn() -> R + Copy + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    type Args = ();
    type Output = R;
    fn call(self, _args: ()) -> R {
        self()
    }
}

impl<F, A, R> Task<fn(A) -> R> for F
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    type Args = A;
    type Output = R;
    fn call(self, args: A) -> R {
        self(args)
    }
}

macro_rules! impl_task_tuple {
    ($($a:ident),+) => {
        impl<F, $($a,)+ R> Task<fn($($a),+) -> R> for F
        where
            F: Fn($($a),+) -> R + Copy + Send + 'static,
            $($a: Serialize + DeserializeOwned + Send + 'static,)+
            R: Serialize + DeserializeOwned,
        {
            type Args = ($($a,)+);
            type Output = R;
            #[allow(non_snake_case)]
            fn call(self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
        }
    };
}
impl_task_tuple!(A, B);
impl_task_tuple!(A, B, C);
impl_task_tuple!(A, B, C, D);
impl_task_tuple!(A, B, C, D, E);
impl_task_tuple!(A, B, C, D, E, G);
impl_task_tuple!(A, B, C, D, E, G, H);
impl_task_tuple!(A, B, C, D, E, G, H, I);

/// The trampoline body the macro instantiates: decode, call, encode.
pub fn run_task<M, T: Task<M>>(task: T, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let args: T::Args =
        postcard::from_bytes(bytes).map_err(|e| format!("decoding the task arguments: {e}"))?;
    let out = task.call(args);
    postcard::to_allocvec(&out).map_err(|e| format!("encoding the task result: {e}"))
}

/// The `TypeId` of a value's type (the macro's way to name a fn item's type).
pub fn type_id_of_val<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

/// The registry entry of the function item `T`, if it is a `#[multiproc::task]`.
pub fn entry_for<T: 'static>() -> Result<&'static TaskEntry> {
    let want = TypeId::of::<T>();
    TASKS
        .iter()
        .find(|e| (e.type_id)() == want)
        .ok_or(ProcessError::TaskNotRegistered(std::any::type_name::<T>()))
}

/// [`entry_for`] by value.
pub fn entry_of<T: 'static>(_f: &T) -> Result<&'static TaskEntry> {
    entry_for::<T>()
}

/// The entry with this id hash (what a child looks up).
pub fn entry_by_hash(hash: u64) -> Option<&'static TaskEntry> {
    TASKS.iter().find(|e| e.hash() == hash)
}

/// A hash of every task id of this binary (sorted), part of the build id.
pub fn registry_hash() -> u64 {
    static H: OnceLock<u64> = OnceLock::new();
    *H.get_or_init(|| {
        let mut ids: Vec<&str> = TASKS.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        let mut h = FNV_OFFSET;
        for id in ids {
            h = fnv1a_from(h, id.as_bytes());
            h = fnv1a_from(h, &[0]);
        }
        h
    })
}

/// Identifies this build: the executable's size, mtime and inode plus [`registry_hash`]. A child
/// refuses a parent whose build id differs from its own.
pub fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let mut h = FNV_OFFSET;
        if let Ok(m) = std::fs::metadata("/proc/self/exe") {
            for v in [
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ino(),
                m.dev(),
            ] {
                h = fnv1a_from(h, &v.to_le_bytes());
            }
        }
        fnv1a_from(h, &registry_hash().to_le_bytes())
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Every registered id (for diagnostics).
pub fn task_ids() -> Vec<&'static str> {
    TASKS.iter().map(|e| e.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
