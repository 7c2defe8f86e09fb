//! How a message becomes bytes and back.
//!
//! [`Postcard`] (the default) serializes any `serde` type with postcard, straight into the
//! ring's reserved space when it fits (`postcard::to_slice` into the write grant) and into a
//! `Vec` sized by `postcard::experimental::serialized_size` only when it does not. [`Plain`] is for
//! plain-data types (`zerocopy::IntoBytes + FromBytes`): their bytes are copied as they are, no
//! codec at all. With the `bitcode` feature, [`Bitcode`] serializes `serde` types with bitcode
//! (encoded into a `Vec`, then copied into the ring: bitcode has no into-slice encoder).
//!
//! ```
//! use multiproc_channel::{Codec, Plain, Postcard};
//! let mut buf = [0u8; 16];
//! let n = <Postcard as Codec<(u8, String)>>::encode_into(&(7, "hi".into()), &mut buf).unwrap().unwrap();
//! let back: (u8, String) = Postcard::decode(&buf[..n]).unwrap();
//! assert_eq!(back, (7, "hi".to_string()));
//! let n = <Plain as Codec<u64>>::encode_into(&42u64, &mut buf).unwrap().unwrap();
//! assert_eq!(<Plain as Codec<u64>>::decode(&buf[..n]).unwrap(), 42);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use zerocopy::{FromBytes, Immutable, IntoBytes};

thread_local! {
    /// Why the last shared-object handle deserialized on this thread was refused. Postcard (and
    /// bitcode) replace a `Deserialize` impl's custom error text with a generic one, so the
    /// handle types note theirs here and [`Codec::decode`] reports it.
    static HANDLE_ERROR: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// Notes why a handle was refused (see `HANDLE_ERROR`) and returns the message for the
/// serde error.
pub(crate) fn note_handle_error(msg: String) -> String {
    HANDLE_ERROR.with(|c| c.set(Some(msg.clone())));
    msg
}

fn clear_handle_error() {
    HANDLE_ERROR.with(|c| drop(c.take()));
}

/// A decode error, naming a refused handle if one caused it.
fn decode_error(e: impl std::fmt::Display) -> CodecError {
    match HANDLE_ERROR.with(|c| c.take()) {
        Some(h) => CodecError(format!("{h} (decoding: {e})")),
        None => CodecError(e.to_string()),
    }
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("codec error: {0}")]
pub struct CodecError(pub String);

/// Turns `T` into bytes and back. Implemented by marker types chosen as a type parameter of
/// [`Connection`](crate::Connection) and [`Queue`](crate::Queue).
pub trait Codec<T>: 'static {
    /// Encodes `v` into `buf`: `Ok(Some(len))` if it fit, `Ok(None)` if `buf` is too short (the
    /// caller then uses [`Codec::encode_vec`]).
    fn encode_into(v: &T, buf: &mut [u8]) -> Result<Option<usize>, CodecError>;
    /// Encodes `v` into `out` (cleared first), whatever its size.
    fn encode_vec(v: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Decodes one message occupying all of `bytes`.
    fn decode(bytes: &[u8]) -> Result<T, CodecError>;
    /// The longest encoding of any `T`, when the codec bounds it; `None` (the default) when it
    /// does not or cannot tell. A [`Queue`](crate::Queue) then makes its slots no larger than
    /// that needs (a slot of up to 16 bytes shares its cache line with another, see
    /// `docs/ring.md`) and never needs a side segment. An encoder that writes more than it
    /// promised here gets `PutError::TooLarge` from such a queue, never a cut message.
    fn max_len() -> Option<usize> {
        None
    }
}

/// The longest postcard encoding of a primitive `T` (varints: 3, 5 and 10 bytes for 16, 32
/// and 64 bits; a `char` is a length byte and up to 4 UTF-8 bytes), `None` for any other type.
/// A primitive's `type_name` is its bare name (any other type's is a path); the size is checked
/// too.
fn postcard_primitive_max<T>() -> Option<usize> {
    let (name, size) = (std::any::type_name::<T>(), std::mem::size_of::<T>());
    Some(match (name, size) {
        ("u8" | "i8" | "bool", 1) => 1,
        ("u16" | "i16", 2) => 3,
        ("u32" | "i32" | "usize" | "isize", 4) => 5,
        ("u64" | "i64" | "usize" | "isize", 8) => 10,
        ("f32", 4) => 4,
        ("f64", 8) => 8,
        ("char", 4) => 5,
        _ => return None,
    })
}

/// The default codec: postcard over serde.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T: Serialize + DeserializeOwned> Codec<T> for Postcard {
    #[inline]
    fn encode_into(v: &T, buf: &mut [u8]) -> Result<Option<usize>, CodecError> {
        match postcard::to_slice(v, buf) {
            Ok(s) => Ok(Some(s.len())),
            Err(postcard::Error::SerializeBufferFull) => Ok(None),
            Err(e) => Err(CodecError(e.to_string())),
        }
    }

    fn encode_vec(v: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let n =
            postcard::experimental::serialized_size(v).map_err(|e| CodecError(e.to_string()))?;
        out.clear();
        out.resize(n, 0);
        let used = postcard::to_slice(v, out)
            .map_err(|e| CodecError(e.to_string()))?
            .len();
        out.truncate(used);
        Ok(())
    }

    fn max_len() -> Option<usize> {
        postcard_primitive_max::<T>()
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        clear_handle_error();
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((v, [])) => Ok(v),
            Ok(_) => Err(CodecError("trailing bytes after the message".into())),
            Err(e) => Err(decode_error(e)),
        }
    }
}

/// Plain-data types go through as their bytes (no encoding).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl<T: IntoBytes + FromBytes + Immutable> Codec<T> for Plain {
    #[inline]
    fn encode_into(v: &T, buf: &mut [u8]) -> Result<Option<usize>, CodecError> {
        let b = v.as_bytes();
        match buf.get_mut(..b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                Ok(Some(b.len()))
            }
            None => Ok(None),
        }
    }

    fn encode_vec(v: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        out.extend_from_slice(v.as_bytes());
        Ok(())
    }

    fn max_len() -> Option<usize> {
        Some(std::mem::size_of::<T>())
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        T::read_from_bytes(bytes).map_err(|_| {
            CodecError(format!(
                "plain message of {} bytes, expected {}",
                bytes.len(),
                std::mem::size_of::<T>()
            ))
        })
    }
}

/// The bitcode codec (feature `bitcode`): serde types through `bitcode::serialize`.
#[cfg(feature = "bitcode")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bitcode;

#[cfg(feature = "bitcode")]
impl<T: Serialize + DeserializeOwned> Codec<T> for Bitcode {
    fn encode_into(v: &T, buf: &mut [u8]) -> Result<Option<usize>, CodecError> {
        let bytes = bitcode::serialize(v).map_err(|e| CodecError(e.to_string()))?;
        match buf.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(&bytes);
                Ok(Some(bytes.len()))
            }
            None => Ok(None),
        }
    }

    fn encode_vec(v: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        *out = bitcode::serialize(v).map_err(|e| CodecError(e.to_string()))?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        clear_handle_error();
        bitcode::deserialize(bytes).map_err(decode_error)
    }
}

#[cfg(all(test, feature = "bitcode"))]
mod bitcode_tests {
    use super::*;

    #[test]
    fn bitcode_round_trips_and_reports_short_buffers_and_bad_input() {
        let v: (u32, String, Vec<f64>) = (7, "hi".into(), vec![1.5, -2.0]);
        let mut buf = [0u8; 64];
        let n = <Bitcode as Codec<_>>::encode_into(&v, &mut buf)
            .unwrap()
            .unwrap();
        let back: (u32, String, Vec<f64>) = Bitcode::decode(&buf[..n]).unwrap();
        assert_eq!(back, v);
        assert_eq!(
            <Bitcode as Codec<_>>::encode_into(&v, &mut [0u8; 2]).unwrap(),
            None
        );
        let mut out = Vec::new();
        <Bitcode as Codec<_>>::encode_vec(&v, &mut out).unwrap();
        assert_eq!(&out[..], &buf[..n]);
        assert!(<Bitcode as Codec<(u32, String, Vec<f64>)>>::decode(&[0xff; 3]).is_err());
    }

    #[test]
    fn a_pipe_carries_bitcode_messages() {
        let (mut a, mut b) =
            crate::Pipe::duplex_with::<Vec<u64>, Bitcode>(crate::PipeOptions::default()).unwrap();
        a.send(&vec![1, 2, 3]).unwrap();
        assert_eq!(b.recv().unwrap(), vec![1, 2, 3]);
    }
}

#[cfg(test)]
mod max_len_tests {
    use super::*;

    fn longest<T: Serialize + DeserializeOwned>(vals: &[T]) -> usize {
        vals.iter()
            .map(|v| postcard::to_allocvec(v).unwrap().len())
            .max()
            .unwrap()
    }

    /// Postcard's bound per primitive is reached by its extremes, and no other type has one.
    #[test]
    fn postcard_bounds_primitives_exactly_and_nothing_else() {
        fn check<T: Serialize + DeserializeOwned + 'static>(vals: &[T]) {
            assert_eq!(
                <Postcard as Codec<T>>::max_len(),
                Some(longest(vals)),
                "{}",
                std::any::type_name::<T>()
            );
        }
        check(&[0u8, u8::MAX]);
        check(&[0i8, i8::MIN, i8::MAX]);
        check(&[false, true]);
        check(&[0u16, u16::MAX]);
        check(&[0i16, i16::MIN, i16::MAX]);
        check(&[0u32, u32::MAX]);
        check(&[0i32, i32::MIN, i32::MAX]);
        check(&[0u64, u64::MAX]);
        check(&[0i64, i64::MIN, i64::MAX]);
        check(&[0usize, usize::MAX]);
        check(&[0isize, isize::MIN, isize::MAX]);
        check(&[0f32, f32::MAX]);
        check(&[0f64, f64::MAX]);
        check(&['a', '\u{10FFFF}']);
        assert_eq!(<Postcard as Codec<String>>::max_len(), None);
        assert_eq!(<Postcard as Codec<(u8, u8)>>::max_len(), None);
        assert_eq!(<Postcard as Codec<Vec<u64>>>::max_len(), None);
        assert_eq!(<Postcard as Codec<u128>>::max_len(), None);
        assert_eq!(<Plain as Codec<[u32; 3]>>::max_len(), Some(12));
    }
}
