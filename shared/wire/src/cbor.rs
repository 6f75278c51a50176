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

/// Deserializes a sequence of at most `max` elements and fails on the first one past it.
///
/// A plain `Vec<T>` is only checked against its limit after the whole sequence is decoded, so a
/// request of many tiny elements (a shape of a million zeros, tens of thousands of one-byte
/// tensors) would first cost ten or more times its size in memory. Used through
/// `#[serde(deserialize_with)]`, so the wire shape and the Rust types are unchanged.
pub(crate) fn bounded_seq<'de, D, T>(
    deserializer: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Bounded<T> {
        max: usize,
        what: &'static str,
        marker: std::marker::PhantomData<T>,
    }

    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a sequence of at most {} {}", self.max, self.what)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // The declared length is a hint from the input: never reserve more than `max`.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(item) = seq.next_element()? {
                if out.len() >= self.max {
                    return Err(serde::de::Error::custom(too_many(self.max, self.what)));
                }
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(Bounded {
        max,
        what,
        marker: std::marker::PhantomData,
    })
}

/// The message [`bounded_seq`] fails with, so that decoders can map it back to their typed error.
pub(crate) fn too_many(max: usize, what: &str) -> String {
    format!("more than {max} {what}")
}

/// True if `err` is the error [`bounded_seq`] gives for `max` and `what`.
pub(crate) fn is_too_many(err: &CborError, max: usize, what: &str) -> bool {
    matches!(err, CborError::Malformed(m) if *m == too_many(max, what))
}

// ciborium and serde name the schema mismatch, but some of their messages quote the input: an
// unknown enum variant or field name (`unknown variant `...``), a string or integer of the wrong type
// (`invalid type: string "..."`). Inside the sealed channel that text is client plaintext, and error
// messages reach logs, so everything from the first quote on is dropped and the rest is bounded.
// Our own validation messages (from `TryFrom`, e.g. tensor limits) carry only numbers and dtype
// names, never quotes, and stay whole.
fn describe<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    let s = match e {
        ciborium::de::Error::Io(_) => "truncated input".to_string(),
        ciborium::de::Error::Syntax(off) => format!("syntax error at offset {off}"),
        ciborium::de::Error::Semantic(_, msg) => redact(msg),
        ciborium::de::Error::RecursionLimitExceeded => "nesting too deep".to_string(),
    };
    s.chars().take(160).collect()
}

fn redact(msg: &str) -> String {
    match msg.find(['`', '"', '\'']) {
        Some(cut) => msg.get(..cut).unwrap_or_default().trim_end().to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;
    use std::time::{Duration, Instant};

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut v = vec![0x81; depth]; // array(1)
        v.push(0x00); // unsigned(0)
        v
    }

    #[test]
    fn round_trips_a_value() {
        let v = (7u32, "seven".to_string(), vec![1u64, 2]);
        let enc = to_vec(&v).unwrap();
        assert_eq!(from_slice::<(u32, String, Vec<u64>)>(&enc, 64), Ok(v));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut enc = to_vec(&5u32).unwrap();
        assert_eq!(from_slice::<u32>(&enc, 64), Ok(5));
        enc.push(0x00);
        assert_eq!(from_slice::<u32>(&enc, 64), Err(CborError::TrailingBytes));
    }

    #[test]
    fn rejects_input_over_max_len_before_parsing() {
        // Garbage that would be a syntax error: the length check comes first.
        let input = [0xff; 65];
        assert_eq!(
            from_slice::<IgnoredAny>(&input, 64),
            Err(CborError::TooLarge { len: 65, max: 64 })
        );
        let enc = to_vec(&vec![0u8; 100]).unwrap();
        assert!(matches!(
            from_slice::<Vec<u8>>(&enc, enc.len() - 1),
            Err(CborError::TooLarge { .. })
        ));
        assert!(from_slice::<Vec<u8>>(&enc, enc.len()).is_ok());
    }

    #[test]
    fn rejects_truncated_and_empty_input() {
        let enc = to_vec(&"hello").unwrap();
        assert_eq!(
            from_slice::<String>(&enc[..3], 64),
            Err(CborError::Malformed("truncated input".into()))
        );
        assert!(matches!(
            from_slice::<IgnoredAny>(&[], 64),
            Err(CborError::Malformed(_))
        ));
    }

    #[test]
    fn accepts_nesting_up_to_the_depth_limit() {
        assert!(from_slice::<IgnoredAny>(&nested_arrays(MAX_CBOR_DEPTH), 1024).is_ok());
    }

    #[test]
    fn rejects_nesting_deeper_than_the_limit() {
        assert_eq!(
            from_slice::<IgnoredAny>(&nested_arrays(MAX_CBOR_DEPTH + 1), 1024),
            Err(CborError::Malformed("nesting too deep".into()))
        );
    }

    #[test]
    fn very_deep_nesting_fails_without_exhausting_the_stack() {
        // A million nested arrays would overflow the stack of a recursive decoder with no limit.
        let input = nested_arrays(1_000_000);
        assert_eq!(
            from_slice::<IgnoredAny>(&input, input.len()),
            Err(CborError::Malformed("nesting too deep".into()))
        );
    }

    /// Headers that declare 2^63-1 bytes, characters, elements or pairs, in inputs of a few bytes.
    fn huge_declared_lengths() -> Vec<Vec<u8>> {
        [0x5b, 0x7b, 0x9b, 0xbb]
            .into_iter()
            .map(|major| {
                let mut v = vec![major];
                v.extend_from_slice(&0x7fff_ffff_ffff_ffffu64.to_be_bytes());
                v.extend_from_slice(b"abc");
                v
            })
            .collect()
    }

    #[test]
    fn huge_declared_length_in_tiny_input_fails_quickly() {
        let start = Instant::now();
        for input in huge_declared_lengths() {
            assert!(from_slice::<IgnoredAny>(&input, 64).is_err());
            assert!(from_slice::<serde_bytes::ByteBuf>(&input, 64).is_err());
            assert!(from_slice::<String>(&input, 64).is_err());
            assert!(from_slice::<Vec<u64>>(&input, 64).is_err());
            assert!(from_slice::<std::collections::BTreeMap<String, u8>>(&input, 64).is_err());
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn error_messages_never_quote_the_input() {
        // An unknown enum variant and a wrong-typed string both come from the input.
        let enc = to_vec(&"SECRET-PLAINTEXT").unwrap();
        let err = from_slice::<crate::DType>(&enc, 64).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let err = from_slice::<u64>(&enc, 64).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert!(
            err.to_string().starts_with("malformed CBOR: invalid type"),
            "{err}"
        );
        let enc = to_vec(&123_456_789i64).unwrap();
        let err = from_slice::<String>(&enc, 64).unwrap_err();
        assert!(!err.to_string().contains("123456789"), "{err}");
    }

    #[test]
    fn redact_keeps_messages_without_quotes_whole() {
        assert_eq!(
            redact("tensor rank 9 exceeds the maximum 8"),
            "tensor rank 9 exceeds the maximum 8"
        );
        assert_eq!(
            redact("unknown variant `x`, expected `f32`"),
            "unknown variant"
        );
        assert_eq!(redact("invalid type: string \"x\""), "invalid type: string");
    }

    #[test]
    fn malformed_message_is_bounded() {
        // A long validation message (no quotes) is cut to 160 characters.
        let long = "é".repeat(500);
        let e: ciborium::de::Error<()> = ciborium::de::Error::Semantic(None, long);
        assert_eq!(describe(&e).chars().count(), 160);
    }
}
