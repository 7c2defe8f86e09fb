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

use crate::error::StartError;
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
    pub trampoline: fn(&[u8]) -> std::result::Result<Vec<u8>, TaskFailure>,
    /// Runs a whole chunk (the pool's unit of work): decodes a postcard sequence of
    /// arguments in one call, calls the function on each, and appends the postcard sequence
    /// of the results to the buffer (no per-item lookup, framing or allocation). See
    /// [`run_chunk`].
    pub chunk_trampoline: fn(&[u8], &mut Vec<u8>) -> std::result::Result<(), TaskFailure>,
}

/// Why a trampoline could not run a task to a result (a panic is not one: callers catch it).
/// Callers tell the two apart by variant, never by the message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFailure {
    /// The arguments' bytes did not decode as the task's argument types (a different build, or
    /// a corrupted job): the message names the types and the codec's error.
    Arguments(String),
    /// The task ran, but its result could not be encoded: the message names the type.
    Result(String),
}

impl TaskFailure {
    /// The message, without the variant.
    pub fn message(&self) -> &str {
        match self {
            TaskFailure::Arguments(m) | TaskFailure::Result(m) => m,
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TaskFailure {}

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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run as a multiproc task",
    label = "not a task: needs a `#[multiproc::task]` fn whose arguments and result are serde types",
    note = "task arguments must be serde Serialize + DeserializeOwned; &str → String, &[T] → Vec<T>",
    note = "a task is a plain `fn` marked `#[multiproc::task]` (a closure cannot be sent to a spawned process: use Process::fork for closures)"
)]
pub trait Task<M>: Copy + Send + 'static {
    /// What the child receives.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What the child returns.
    type Output: Serialize + DeserializeOwned;
    /// Calls the function.
    fn call(self, args: Self::Args) -> Self::Output;
}

#[diagnostic::do_not_recommend]
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

#[diagnostic::do_not_recommend]
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
        #[diagnostic::do_not_recommend]
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

/// What a task argument must be: a serde type the child can decode on its own (owned).
/// `#[multiproc::task]` checks every argument against this, so a bad one is named at its type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task argument: it is sent to another process",
    label = "not a serde Serialize + DeserializeOwned + Send + 'static type",
    note = "task arguments must be serde Serialize + DeserializeOwned; &str → String, &[T] → Vec<T>"
)]
pub trait TaskArg {}
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + 'static> TaskArg for T {}

/// What a task result must be: a serde type the parent can decode.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task result: it is sent back to the parent process",
    label = "not a serde Serialize + DeserializeOwned type",
    note = "task results must be serde Serialize + DeserializeOwned; &str → String, &[T] → Vec<T>"
)]
pub trait TaskResult {}
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> TaskResult for T {}

/// Refuses, when the program is built, a task that is not a function item: a closure that
/// captures something or a fn pointer has a size, a `#[multiproc::task]` fn item has none. (A
/// closure capturing nothing cannot be told apart from a fn item by the type system; it fails at
/// run time with [`StartError::TaskNotRegistered`].) Evaluated at monomorphization, so
/// `cargo build` reports it, `cargo check` does not.
#[doc(hidden)]
#[inline(always)]
pub const fn assert_fn_item<T>() {
    const {
        assert!(
            std::mem::size_of::<T>() == 0,
            "a task must be a #[multiproc::task] fn, not a closure or fn pointer: a spawned child \
             cannot receive a closure (use Process::fork for closures)"
        )
    }
}

/// The macro's per-argument check (see [`TaskArg`]).
#[doc(hidden)]
pub fn assert_task_arg<T: TaskArg>() {}

/// The macro's result check (see [`TaskResult`]).
#[doc(hidden)]
pub fn assert_task_result<T: TaskResult>() {}

/// What a [`Process::fork`](crate::Process::fork) closure may return, as the process's result
/// type `R`: any serde type (as itself), and also the never type (as `()`), so a child closure
/// that never returns (`|| loop { .. }`, `|| std::process::exit(0)`) compiles without writing
/// `-> ()`. (Two impls that cannot overlap: `T -> T` for serde types, `! -> ()`.)
#[diagnostic::on_unimplemented(
    message = "a forked closure's result `{Self}` must be a serde Serialize type",
    label = "returned by the closure passed to Process::fork",
    note = "return a serde type (or `()`); the child sends it to the parent's join()"
)]
pub trait ForkReturn<R> {
    /// Encodes the result for the parent.
    fn encode(&self) -> std::result::Result<Vec<u8>, String>;
}

#[diagnostic::do_not_recommend]
impl<T: Serialize> ForkReturn<T> for T {
    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        encode(self, "the forked closure's result")
    }
}

impl ForkReturn<()> for Never {
    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        match *self {}
    }
}

/// Names the never type on stable Rust (the return type of `fn() -> !`).
#[doc(hidden)]
pub trait FnReturn {
    /// The return type.
    type Output;
}
impl<R> FnReturn for fn() -> R {
    type Output = R;
}
/// The never type `!` (what a closure that never returns returns).
pub type Never = <fn() -> ! as FnReturn>::Output;

/// The trampoline body the macro instantiates: decode, call, encode.
pub fn run_task<M, T: Task<M>>(task: T, bytes: &[u8]) -> std::result::Result<Vec<u8>, TaskFailure> {
    let args: T::Args = decode(bytes, "the task arguments").map_err(TaskFailure::Arguments)?;
    let out = task.call(args);
    encode(&out, "the task result").map_err(TaskFailure::Result)
}

/// Encodes `v` with postcard; the error names `what`, the Rust type and the direction
/// (`encoding the task result (alloc::string::String) with postcard failed: ...`).
pub fn encode<T: Serialize + ?Sized>(v: &T, what: &str) -> std::result::Result<Vec<u8>, String> {
    postcard::to_allocvec(v)
        .map_err(|e| codec_message("encoding", what, std::any::type_name::<T>(), &e))
}

/// Decodes a `T` with postcard; the error names `what`, the Rust type and the direction.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> std::result::Result<T, String> {
    postcard::from_bytes(bytes)
        .map_err(|e| codec_message("decoding", what, std::any::type_name::<T>(), &e))
}

/// `"{direction} {what} ({type}) with postcard failed: {error}"`.
#[doc(hidden)]
pub fn codec_message(direction: &str, what: &str, ty: &str, e: &dyn std::fmt::Display) -> String {
    format!("{direction} {what} ({ty}) with postcard failed: {e}")
}

/// Appends postcard output to a `Vec` (postcard's own `to_extend` goes through `Extend` byte
/// by byte).
struct VecAppend<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecAppend<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints (1-10 bytes) are most of what is written: a byte loop beats a call to
        // memmove for each (memmove was 15% of a trivial map's profile).
        if data.len() <= 16 {
            self.0.reserve(16);
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `value`'s postcard encoding to `out`.
#[inline]
pub fn postcard_append<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> std::result::Result<(), postcard::Error> {
    postcard::serialize_with_flavor(value, VecAppend(out))
}

/// The prefix of a *plain* chunk (see [`plain_width`]): ten `0xFF` bytes, which no postcard
/// sequence starts with (a varint has at most ten bytes and the tenth ends it), so a chunk
/// trampoline tells the two encodings apart by looking. After it: `[args width u8][result
/// width u8][n u32 LE]`, then `n` values as their native bytes.
#[doc(hidden)]
pub const PLAIN_MAGIC: [u8; 10] = [0xFF; 10];
/// Bytes before a plain chunk's values: the magic, two widths, the count.
#[doc(hidden)]
pub const PLAIN_HEAD: usize = PLAIN_MAGIC.len() + 2 + 4;

/// The width of a *plain* type: a primitive integer or float (`u8`..`u128`, `i8`..`i128`,
/// `usize`, `isize`, `f32`, `f64`), every bit pattern of which is a value, without padding.
/// Chunks of plain arguments and results travel as one slice copy instead of per-item
/// postcard (the pool's `map` of `u64`s: no varint work on either side). Known by
/// `type_name`, which spells a primitive by its bare name (any other type has a path), and
/// checked against `size_of`; `T` need not be `'static` (a task's output has no such
/// bound). The parent also checks with `TypeId` (see [`plain_width_static`]).
#[doc(hidden)]
pub fn plain_width<T>() -> Option<usize> {
    let w = match std::any::type_name::<T>() {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" | "f32" => 4,
        "u64" | "i64" | "f64" => 8,
        "u128" | "i128" => 16,
        "usize" | "isize" => std::mem::size_of::<usize>(),
        _ => return None,
    };
    (std::mem::size_of::<T>() == w).then_some(w)
}

/// [`plain_width`], proved with `TypeId` (for `'static` types: what the parent uses before it
/// copies values as bytes).
#[doc(hidden)]
pub fn plain_width_static<T: 'static>() -> Option<usize> {
    let t = TypeId::of::<T>();
    macro_rules! any_of {
        ($($ty:ty),*) => { false $(|| t == TypeId::of::<$ty>())* };
    }
    if any_of!(
        u8, i8, u16, i16, u32, i32, f32, u64, i64, f64, u128, i128, usize, isize
    ) {
        Some(std::mem::size_of::<T>())
    } else {
        None
    }
}

/// The head of a plain chunk of `n` `A`s (plain, see [`plain_width_static`]) whose results
/// are `out_width` bytes wide: what goes before the items' [`plain_bytes`]. `None` if `A` is
/// not plain or a width or the count does not fit its field.
#[doc(hidden)]
pub fn plain_head<A: 'static>(n: usize, out_width: usize) -> Option<[u8; PLAIN_HEAD]> {
    let w = plain_width_static::<A>()?;
    let (Ok(wa), Ok(wo), Ok(n)) = (u8::try_from(w), u8::try_from(out_width), u32::try_from(n))
    else {
        return None;
    };
    let mut h = [0u8; PLAIN_HEAD];
    h[..PLAIN_MAGIC.len()].copy_from_slice(&PLAIN_MAGIC);
    h[PLAIN_MAGIC.len()] = wa;
    h[PLAIN_MAGIC.len() + 1] = wo;
    h[PLAIN_MAGIC.len() + 2..].copy_from_slice(&n.to_le_bytes());
    Some(h)
}

/// `items` as the native bytes a plain chunk carries; `None` if `A` is not plain (see
/// [`plain_width_static`]).
#[doc(hidden)]
pub fn plain_bytes<A: 'static>(items: &[A]) -> Option<&[u8]> {
    plain_width_static::<A>()?;
    // SAFETY: `A` is a primitive number (checked by `TypeId` above): no padding, so the
    // `size_of_val(items)` bytes behind `items` are initialized and may be read as `u8`s for
    // as long as `items` is borrowed.
    Some(unsafe {
        std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items))
    })
}

/// Appends `items` (plain, see [`plain_width_static`]) as a plain chunk whose results are
/// `out_width` bytes wide: [`plain_head`], then [`plain_bytes`] (one slice copy).
#[doc(hidden)]
pub fn plain_append<A: 'static>(items: &[A], out_width: usize, out: &mut Vec<u8>) -> bool {
    let (Some(head), Some(bytes)) = (plain_head::<A>(items.len(), out_width), plain_bytes(items))
    else {
        return false;
    };
    out.reserve(PLAIN_HEAD + bytes.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(bytes);
    true
}

/// Reads a plain chunk of `R`s (`bytes` starts with [`PLAIN_MAGIC`]) into a `Vec`: one slice
/// copy. `None` if `R` is not plain or the bytes do not hold a whole chunk of `R`s.
#[doc(hidden)]
pub fn plain_read<R: 'static>(bytes: &[u8]) -> Option<Vec<R>> {
    let w = plain_width_static::<R>()?;
    let (n, body) = plain_split(bytes, w)?;
    let mut v: Vec<R> = Vec::with_capacity(n);
    // SAFETY: `body` holds exactly `n * w` bytes (checked by `plain_split`), `v` has room for
    // `n` `R`s, and every bit pattern of a primitive number (checked above) is an `R`.
    unsafe {
        std::ptr::copy_nonoverlapping(body.as_ptr(), v.as_mut_ptr().cast::<u8>(), n * w);
        v.set_len(n);
    }
    Some(v)
}

/// Copies a plain chunk of `R`s (`bytes` starts with [`PLAIN_MAGIC`]) into `dst`, which it
/// must fill exactly: one slice copy. False (nothing written) if `R` is not plain or the
/// chunk does not hold exactly `dst.len()` `R`s.
#[doc(hidden)]
pub fn plain_read_into<R: 'static>(bytes: &[u8], dst: &mut [std::mem::MaybeUninit<R>]) -> bool {
    let Some(w) = plain_width_static::<R>() else {
        return false;
    };
    let Some((n, body)) = plain_split(bytes, w) else {
        return false;
    };
    if n != dst.len() {
        return false;
    }
    // SAFETY: `body` holds exactly `n * w` bytes (checked by `plain_split`), `dst` has room
    // for `n` `R`s of `w` bytes each, and every bit pattern of a primitive number (checked
    // above) is an `R`.
    unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), dst.as_mut_ptr().cast::<u8>(), n * w) };
    true
}

/// A plain chunk's count and values, if `bytes` is one whose values are `w` bytes wide (the
/// width written after the magic is the values' own: the arguments' in a job, the results'
/// in a result, which repeats the result width in both places).
fn plain_split(bytes: &[u8], w: usize) -> Option<(usize, &[u8])> {
    let rest = bytes.strip_prefix(&PLAIN_MAGIC[..])?;
    if rest.len() < 6 || rest[0] as usize != w {
        return None;
    }
    let n = u32::from_le_bytes(rest[2..6].try_into().ok()?) as usize;
    let body = &rest[6..];
    (body.len() == n.checked_mul(w)?).then_some((n, body))
}

/// The plain half of [`run_chunk`]: arguments read as native values, results written as
/// native bytes after a plain head of their own.
fn run_plain_chunk<M, T: Task<M>>(
    task: T,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), TaskFailure> {
    let wo = bytes.get(PLAIN_MAGIC.len() + 1).copied().unwrap_or(0) as usize;
    let (Some(wa), Some(wr)) = (plain_width_static::<T::Args>(), plain_width::<T::Output>()) else {
        return Err(TaskFailure::Arguments(format!(
            "decoding the task arguments: a plain-data chunk for a task of `{}` -> `{}`",
            std::any::type_name::<T::Args>(),
            std::any::type_name::<T::Output>()
        )));
    };
    let Some((n, args)) = plain_split(bytes, wa).filter(|_| wr == wo) else {
        return Err(TaskFailure::Arguments(
            "decoding the task arguments: a malformed plain-data chunk".into(),
        ));
    };
    let base = out.len();
    out.resize(base + PLAIN_HEAD + n * wr, 0);
    out[base..base + PLAIN_MAGIC.len()].copy_from_slice(&PLAIN_MAGIC);
    out[base + 10] = wr as u8;
    out[base + 11] = wr as u8;
    out[base + 12..base + 16].copy_from_slice(&(n as u32).to_le_bytes());
    let dst = out[base + PLAIN_HEAD..].as_mut_ptr();
    for i in 0..n {
        // SAFETY: `args` holds `n * wa` bytes (checked by `plain_split`) and `T::Args` is a
        // primitive number `wa` bytes wide (checked by `TypeId`): any bytes are a value.
        let a: T::Args = unsafe { std::ptr::read_unaligned(args.as_ptr().add(i * wa).cast()) };
        let r = task.call(a);
        // SAFETY: `out` was resized to hold `n * wr` bytes at `dst`, and `T::Output` is a
        // primitive number `wr` bytes wide (checked by name and size above).
        unsafe { std::ptr::write_unaligned(dst.add(i * wr).cast::<T::Output>(), r) };
    }
    Ok(())
}

/// The chunk trampoline body the macro instantiates: `bytes` is the postcard encoding of a
/// `[T::Args]` sequence; appends the postcard encoding of the `[T::Output]` sequence (the
/// same bytes as encoding a `Vec<T::Output>`) to `out`. The first error ends the chunk (the
/// caller discards what was appended).
pub fn run_chunk<M, T: Task<M>>(
    task: T,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), TaskFailure> {
    let decode_err = |e: postcard::Error| {
        TaskFailure::Arguments(codec_message(
            "decoding",
            "the task arguments",
            std::any::type_name::<T::Args>(),
            &e,
        ))
    };
    // A one-item chunk (every `apply`): the item alone, no `Vec` (a varint length of 1 is the
    // byte 1).
    if let Some((1, item)) = bytes.split_first() {
        let a: T::Args = postcard::from_bytes(item).map_err(decode_err)?;
        out.push(1);
        let r = task.call(a);
        return postcard_append(&r, out).map_err(|e| {
            TaskFailure::Result(codec_message(
                "encoding",
                "the task result",
                std::any::type_name::<T::Output>(),
                &e,
            ))
        });
    }
    if bytes.starts_with(&PLAIN_MAGIC) {
        return run_plain_chunk(task, bytes, out);
    }
    let args: Vec<T::Args> = postcard::from_bytes(bytes).map_err(decode_err)?;
    // The sequence's length: a LEB128 varint, as postcard writes a `usize` length.
    let mut n = args.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    for a in args {
        let r = task.call(a);
        postcard_append(&r, out).map_err(|e| {
            TaskFailure::Result(codec_message(
                "encoding",
                "the task result",
                std::any::type_name::<T::Output>(),
                &e,
            ))
        })?;
    }
    Ok(())
}

/// The `TypeId` of a value's type (the macro's way to name a fn item's type).
pub fn type_id_of_val<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

/// The registry entry of the function item `T`, if it is a `#[multiproc::task]`.
pub fn entry_for<T: 'static>() -> Result<&'static TaskEntry, StartError> {
    let want = TypeId::of::<T>();
    TASKS
        .iter()
        .find(|e| (e.type_id)() == want)
        .ok_or(StartError::TaskNotRegistered(std::any::type_name::<T>()))
}

/// [`entry_for`] by value.
pub fn entry_of<T: 'static>(_f: &T) -> Result<&'static TaskEntry, StartError> {
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

/// Identifies this build: the executable's ELF build-id note (`NT_GNU_BUILD_ID`, read from the
/// loaded program headers) or, for a binary linked without one, a hash of the executable's bytes
/// (computed once, lazily); plus [`registry_hash`]. A child refuses a parent whose build id
/// differs from its own. Unlike the file's metadata, neither changes when the file is touched
/// or copied, and both change with any change to the code.
pub fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let h = match elf_build_id() {
            Some(note) => fnv1a_from(fnv1a(b"elf-build-id"), note),
            None => fnv1a_from(
                fnv1a(b"exe-bytes"),
                &exe_hash("/proc/self/exe").unwrap_or(0).to_le_bytes(),
            ),
        };
        fnv1a_from(h, &registry_hash().to_le_bytes())
    })
}

/// The `NT_GNU_BUILD_ID` note of the running executable, from its program headers as loaded
/// (`getauxval(AT_PHDR)`): no file access, no lock. `None` if the binary has no such note
/// (linked without `--build-id`).
#[doc(hidden)]
pub fn elf_build_id() -> Option<&'static [u8]> {
    #[cfg(target_pointer_width = "64")]
    type Phdr = libc::Elf64_Phdr;
    #[cfg(target_pointer_width = "32")]
    type Phdr = libc::Elf32_Phdr;
    // SAFETY: getauxval has no preconditions.
    let (at, num) = unsafe {
        (
            libc::getauxval(libc::AT_PHDR),
            libc::getauxval(libc::AT_PHNUM),
        )
    };
    if at == 0 || num == 0 || num > 4096 {
        return None;
    }
    // SAFETY: the kernel's AT_PHDR/AT_PHNUM describe the executable's program header table,
    // mapped readable for the life of the process.
    let phdrs = unsafe { std::slice::from_raw_parts(at as usize as *const Phdr, num as usize) };
    // The load bias: where PT_PHDR says the table is vs where it is (0 for a non-PIE binary).
    let bias = match phdrs.iter().find(|p| p.p_type == libc::PT_PHDR) {
        Some(p) => (at as usize).wrapping_sub(p.p_vaddr as usize),
        None => return None,
    };
    phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_NOTE && p.p_memsz > 0)
        .find_map(|p| {
            let addr = bias.wrapping_add(p.p_vaddr as usize);
            // SAFETY: a PT_NOTE segment lies inside a loaded (readable) PT_LOAD segment of the
            // executable, mapped for the life of the process, `p_memsz` bytes from its address.
            let notes =
                unsafe { std::slice::from_raw_parts(addr as *const u8, p.p_memsz as usize) };
            find_build_id(notes, (p.p_align as usize).max(4))
        })
}

/// Walks a note segment (`Elf_Nhdr` records: namesz, descsz, type, then the name and the
/// descriptor, each padded to `align`) for the GNU build-id; every size is bounds-checked.
fn find_build_id(mut notes: &[u8], align: usize) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let pad = |n: usize| n.checked_next_multiple_of(align);
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().expect("4 bytes"));
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = pad(name_end)?;
        let desc_end = desc_start.checked_add(descsz)?;
        if desc_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && &notes[12..name_end] == b"GNU\0" && descsz > 0 {
            return Some(&notes[desc_start..desc_end]);
        }
        notes = &notes[pad(desc_end)?.min(notes.len())..];
    }
    None
}

/// A hash of a file's bytes (a build without a build-id note): 64-bit words mixed as in
/// FNV-1a, eight bytes a step, so a debug test binary of tens of MB takes milliseconds.
#[doc(hidden)]
pub fn exe_hash(path: &str) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut h = FNV_OFFSET;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunks = buf[..n].chunks_exact(8);
        for c in &mut chunks {
            h ^= u64::from_le_bytes(c.try_into().expect("8 bytes"));
            h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        }
        h = fnv1a_from(h, chunks.remainder());
        h = fnv1a_from(h, &(n as u64).to_le_bytes());
    }
    Ok(h)
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

    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(align), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(align), 0);
        v
    }

    #[test]
    fn the_build_id_note_is_found_among_other_notes_and_bad_sizes_are_refused() {
        let mut notes = note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 2, 0, 0], 4); // NT_GNU_ABI_TAG
        notes.extend(note(b"GNU\0", 3, &[0xab; 20], 4));
        assert_eq!(find_build_id(&notes, 4), Some(&[0xab; 20][..]));
        let other = note(b"XYZ\0", 3, &[1; 8], 8);
        assert_eq!(find_build_id(&other, 8), None);
        // A descriptor size past the end: refused, no panic.
        let mut bad = note(b"GNU\0", 3, &[1; 8], 4);
        bad[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(find_build_id(&bad, 4), None);
        assert_eq!(find_build_id(&[1, 2, 3], 4), None);
    }

    #[test]
    fn the_running_binary_s_build_id_note_matches_the_file() {
        // The note as linked into the file: find the 20-byte sha1 build-id record by its header.
        let file = std::fs::read("/proc/self/exe").unwrap();
        let header: Vec<u8> = [4u32, 20, 3]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .chain(*b"GNU\0")
            .collect();
        let in_file = file
            .windows(header.len())
            .position(|w| w == header)
            .map(|i| &file[i + header.len()..i + header.len() + 20]);
        assert_eq!(
            elf_build_id(),
            in_file,
            "linked without --build-id? then the exe hash is used"
        );
    }

    #[test]
    fn the_exe_hash_depends_on_every_byte() {
        let dir = std::env::temp_dir();
        let a = dir.join(format!("multiproc-exe-hash-a-{}", std::process::id()));
        let b = dir.join(format!("multiproc-exe-hash-b-{}", std::process::id()));
        let mut bytes = vec![7u8; 100_003];
        std::fs::write(&a, &bytes).unwrap();
        bytes[99_999] ^= 1;
        std::fs::write(&b, &bytes).unwrap();
        let ha = exe_hash(a.to_str().unwrap()).unwrap();
        let hb = exe_hash(b.to_str().unwrap()).unwrap();
        assert_ne!(ha, hb);
        assert_eq!(ha, exe_hash(a.to_str().unwrap()).unwrap());
        let _ = (std::fs::remove_file(a), std::fs::remove_file(b));
    }

    fn double(x: u64) -> u64 {
        x * 2
    }

    fn fail_on_three(x: u64) -> u64 {
        assert!(x != 3, "three");
        x
    }

    #[test]
    fn a_chunk_runs_as_one_record_and_encodes_as_a_vec() {
        let args = postcard::to_allocvec(&[1u64, 200, 3][..]).unwrap();
        let mut out = vec![9u8]; // appended after what is there
        run_chunk(double, &args, &mut out).unwrap();
        assert_eq!(out[0], 9);
        let back: Vec<u64> = postcard::from_bytes(&out[1..]).unwrap();
        assert_eq!(back, vec![2, 400, 6]);
        assert_eq!(
            &out[1..],
            &postcard::to_allocvec(&vec![2u64, 400, 6]).unwrap()[..]
        );
        // 200 items: the length takes two varint bytes.
        let many: Vec<u64> = (0..200).collect();
        let mut out = Vec::new();
        run_chunk(double, &postcard::to_allocvec(&many).unwrap(), &mut out).unwrap();
        let back: Vec<u64> = postcard::from_bytes(&out).unwrap();
        assert_eq!(back, many.iter().map(|x| x * 2).collect::<Vec<_>>());
        let mut out = Vec::new();
        run_chunk(
            double,
            &postcard::to_allocvec(&[21u64][..]).unwrap(),
            &mut out,
        )
        .unwrap();
        assert_eq!(postcard::from_bytes::<Vec<u64>>(&out).unwrap(), vec![42]);
        let err = run_chunk(double, &[5, 1], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TaskFailure::Arguments(_)), "{err}");
        assert!(
            err.message().starts_with("decoding the task arguments"),
            "{err}"
        );
        let r = std::panic::catch_unwind(|| {
            run_chunk(
                fail_on_three,
                &postcard::to_allocvec(&[1u64, 3]).unwrap(),
                &mut Vec::new(),
            )
        });
        assert!(r.is_err());
    }

    fn halve(x: f64) -> f32 {
        (x / 2.0) as f32
    }

    fn label(x: u64) -> String {
        x.to_string()
    }

    #[test]
    fn a_plain_chunk_travels_as_bytes_both_ways() {
        assert_eq!(plain_width::<u64>(), Some(8));
        assert_eq!(plain_width::<f32>(), Some(4));
        assert_eq!(plain_width::<String>(), None);
        assert_eq!(plain_width::<(u64,)>(), None);
        assert_eq!(plain_width::<bool>(), None);
        assert_eq!(plain_width_static::<i16>(), Some(2));
        assert_eq!(plain_width_static::<char>(), None);
        let mut job = vec![7u8]; // appended after what is there
        assert!(plain_append(&[1u64, 200, u64::MAX / 2][..], 8, &mut job));
        assert_eq!(job.len(), 1 + PLAIN_HEAD + 24);
        // No postcard sequence starts like a plain chunk.
        assert!(postcard::from_bytes::<Vec<u64>>(&job[1..]).is_err());
        let mut out = vec![9u8];
        run_chunk(double, &job[1..], &mut out).unwrap();
        assert_eq!(out[0], 9);
        assert_eq!(
            plain_read::<u64>(&out[1..]).unwrap(),
            vec![2, 400, (u64::MAX / 2) * 2]
        );
        // Different widths each way.
        let mut job = Vec::new();
        assert!(plain_append(&[3.0f64, -8.0][..], 4, &mut job));
        let mut out = Vec::new();
        run_chunk(halve, &job, &mut out).unwrap();
        assert_eq!(plain_read::<f32>(&out).unwrap(), vec![1.5, -4.0]);
        let mut dst = [std::mem::MaybeUninit::<f32>::uninit(); 2];
        assert!(plain_read_into(&out, &mut dst));
        // SAFETY: `plain_read_into` returned true: it filled both.
        let back = unsafe { [dst[0].assume_init(), dst[1].assume_init()] };
        assert_eq!(back, [1.5, -4.0]);
        assert!(!plain_read_into(&out, &mut dst[..1]));
        // Read back as the wrong type, or cut short: refused, never misread.
        assert!(plain_read::<u64>(&out).is_none());
        assert!(plain_read::<f32>(&out[..out.len() - 1]).is_none());
        // A plain chunk for a task whose result is not plain, or a lying header: errors.
        let mut job = Vec::new();
        assert!(plain_append(&[1u64, 2][..], 8, &mut job));
        let err = run_chunk(label, &job, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TaskFailure::Arguments(_)), "{err}");
        let mut short = job.clone();
        short.pop();
        let err = run_chunk(double, &short, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, TaskFailure::Arguments(m) if m.contains("malformed")),
            "{err}"
        );
        let mut wrong = job.clone();
        wrong[11] = 4; // results asked 4 bytes wide from a task returning u64
        assert!(run_chunk(double, &wrong, &mut Vec::new()).is_err());
        // Non-plain items are refused by `plain_append` (the caller falls back to postcard).
        assert!(!plain_append(&["a".to_string()][..], 8, &mut Vec::new()));
        // A panicking item unwinds out of the chunk (the worker catches it).
        let mut job = Vec::new();
        assert!(plain_append(&[1u64, 3][..], 8, &mut job));
        let r = std::panic::catch_unwind(|| run_chunk(fail_on_three, &job, &mut Vec::new()));
        assert!(r.is_err());
    }

    #[test]
    fn fnv_matches_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
