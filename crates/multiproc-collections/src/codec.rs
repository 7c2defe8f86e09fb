//! Encoding keys and values with postcard (a stack buffer for small ones), and the stable hash.

use crate::error::ReadError;
use serde::Serialize;
use serde::de::DeserializeOwned;

const STACK: usize = 128;

/// Encoded bytes, on the stack when small.
pub(crate) enum Encoded {
    Stack([u8; STACK], usize),
    Heap(Vec<u8>),
}

impl std::ops::Deref for Encoded {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Encoded::Stack(b, n) => &b[..*n],
            Encoded::Heap(v) => v,
        }
    }
}

/// Encodes `v` with postcard.
#[inline]
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Encoded, ReadError> {
    let mut buf = [0u8; STACK];
    match postcard::to_slice(v, &mut buf) {
        Ok(s) => {
            let n = s.len();
            Ok(Encoded::Stack(buf, n))
        }
        Err(postcard::Error::SerializeBufferFull) => postcard::to_allocvec(v)
            .map(Encoded::Heap)
            .map_err(ReadError::Encode),
        Err(e) => Err(ReadError::Encode(e)),
    }
}

/// Decodes a whole buffer (trailing bytes are an error: they mean a corrupted entry).
#[inline]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ReadError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err(ReadError::Corrupted("trailing bytes after a stored value")),
        Err(e) => Err(ReadError::Decode(e)),
    }
}

/// A stable 64-bit hash of encoded key bytes (the same in every process and build): 8-byte
/// words folded with a multiply-rotate, finished with murmur3's fmix64.
#[inline]
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_spreads() {
        assert_eq!(hash(b""), hash(b""));
        assert_ne!(hash(b"a"), hash(b"b"));
        assert_ne!(hash(b"count"), hash(b"count\0"));
    }

    #[test]
    fn encode_large_goes_to_heap_and_round_trips() {
        let s = "x".repeat(1000);
        let e = encode(&s).unwrap();
        assert!(matches!(e, Encoded::Heap(_)));
        assert_eq!(decode::<String>(&e).unwrap(), s);
    }
}
