//! Bounded CBOR (RFC 8949) encode/decode used by every message. Decoding refuses inputs over a
//! caller-given length, nesting deeper than [`MAX_CBOR_DEPTH`], and trailing bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::MAX_CBOR_DEPTH;

/// Why CBOR could not be encoded or decoded. Carries no input bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("CBOR input of {len} bytes exceeds the maximum {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    #[error("trailing bytes after the CBOR item")]
    TrailingBytes,
    #[error("CBOR encoding failed")]
    Encode,
}

/// Encodes a value as CBOR.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).map_err(|_| CborError::Encode)?;
    Ok(out)
}

/// Decodes exactly one CBOR item of at most `max_len` bytes.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, CborError> {
    if bytes.len() > max_len {
        return Err(CborError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let mut reader = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_CBOR_DEPTH)
        .map_err(|e| CborError::Malformed(describe(&e)))?;
    if !reader.is_empty() {
        return Err(CborError::TrailingBytes);
    }
    Ok(value)
}

// ciborium's messages name the schema mismatch; they never quote input bytes, but we keep only the
// kind and a bounded message to be sure nothing large is echoed.
fn describe<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    let s = match e {
        ciborium::de::Error::Io(_) => "truncated input".to_string(),
        ciborium::de::Error::Syntax(off) => format!("syntax error at offset {off}"),
        ciborium::de::Error::Semantic(_, msg) => msg.clone(),
        ciborium::de::Error::RecursionLimitExceeded => "nesting too deep".to_string(),
    };
    s.chars().take(160).collect()
}
