//! The COSE_Sign1 envelope of a Nitro attestation document (RFC 9052 §4.2), parsed and nothing more.
//!
//! What it does: decodes the outer CBOR array (tag 18 optional, since real NSM documents are
//! untagged), checks the exact header profile that the NSM produces, and hands back the protected
//! header, payload and signature as the original bytes. [`sig_structure`] builds the bytes that the
//! ES384 signature covers (RFC 9052 §4.4).
//!
//! What it does not do: verify the signature (the crate root does, once the certificate chain is
//! known) or look inside the payload ([`crate::document`]).

use ciborium::value::Value;
use sealed_wire::limits::{MAX_ATTESTATION_DOC_LEN, MAX_CBOR_DEPTH};

/// CBOR tag of a COSE_Sign1 message (RFC 9052 §2).
pub const COSE_SIGN1_TAG: u64 = 18;

/// The only protected header accepted: the map `{1: -35}` (alg = ES384), encoded as the NSM encodes
/// it. Byte equality, not map equality, so that no alternative encoding of the same header (or one
/// with extra parameters such as `crit`) slips through (nitro-facts §1.1).
pub const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// Length of an ES384 signature: raw `r || s`, 48 bytes each (RFC 9053 §2.1), not DER.
pub const ES384_SIGNATURE_LEN: usize = 96;

/// Why the envelope was refused. Carries no document bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    #[error("document of {len} bytes exceeds the maximum {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed CBOR: {0}")]
    Malformed(&'static str),
    #[error("trailing bytes after the COSE_Sign1 message")]
    TrailingBytes,
    #[error("unexpected CBOR tag {0} (only 18, COSE_Sign1, is accepted)")]
    UnexpectedTag(u64),
    #[error("COSE_Sign1 must be an array of 4 items")]
    NotSign1Array,
    #[error("protected header must be exactly {{1: -35}} (ES384)")]
    UnsupportedProtectedHeader,
    #[error("unprotected header must be an empty map")]
    InvalidUnprotectedHeader,
    #[error("payload must be a byte string")]
    PayloadNotBytes,
    #[error("signature must be a byte string of 96 bytes (ES384 r || s), got {0}")]
    InvalidSignatureLength(usize),
    #[error("signature must be a byte string")]
    SignatureNotBytes,
}

/// A parsed COSE_Sign1 envelope. The byte fields are exactly the bytes of the bstrs in the message:
/// the signature is checked over them, never over a re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseSign1 {
    /// Serialized protected header (always [`PROTECTED_ES384`] once parsed).
    pub protected: Vec<u8>,
    /// The payload bytes (a CBOR attestation document).
    pub payload: Vec<u8>,
    /// `r || s`, big-endian.
    pub signature: [u8; ES384_SIGNATURE_LEN],
}

/// Parses a COSE_Sign1 message, tagged (18) or untagged, at most
/// [`MAX_ATTESTATION_DOC_LEN`] bytes. The length is checked before anything is decoded.
pub fn parse(bytes: &[u8]) -> Result<CoseSign1, CoseError> {
    if bytes.len() > MAX_ATTESTATION_DOC_LEN {
        return Err(CoseError::TooLarge {
            len: bytes.len(),
            max: MAX_ATTESTATION_DOC_LEN,
        });
    }
    let mut reader = bytes;
    // ciborium reads byte strings in bounded chunks and never pre-allocates from a claimed length,
    // so with the input capped at 16 KiB the decoded value is bounded by the input.
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_CBOR_DEPTH)
        .map_err(|e| CoseError::Malformed(describe(&e)))?;
    if !reader.is_empty() {
        return Err(CoseError::TrailingBytes);
    }
    let items = match value {
        Value::Tag(COSE_SIGN1_TAG, inner) => match *inner {
            Value::Array(items) => items,
            _ => return Err(CoseError::NotSign1Array),
        },
        Value::Tag(tag, _) => return Err(CoseError::UnexpectedTag(tag)),
        Value::Array(items) => items,
        _ => return Err(CoseError::NotSign1Array),
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = items
        .try_into()
        .map_err(|_: Vec<Value>| CoseError::NotSign1Array)?;

    let protected = match protected {
        Value::Bytes(b) if b == PROTECTED_ES384 => b,
        _ => return Err(CoseError::UnsupportedProtectedHeader),
    };
    // The NSM sends `{}`. A null here (seen in a self-signed mock) is not a header map (RFC 9052 §3).
    // Anything in the unprotected bucket would be unauthenticated, so nothing is allowed there.
    match unprotected {
        Value::Map(m) if m.is_empty() => {}
        _ => return Err(CoseError::InvalidUnprotectedHeader),
    }
    let payload = match payload {
        Value::Bytes(b) => b,
        // A nil payload means "detached" (RFC 9052 §4.1); the NSM never detaches it.
        _ => return Err(CoseError::PayloadNotBytes),
    };
    let signature = match signature {
        Value::Bytes(b) => <[u8; ES384_SIGNATURE_LEN]>::try_from(b.as_slice())
            .map_err(|_| CoseError::InvalidSignatureLength(b.len()))?,
        _ => return Err(CoseError::SignatureNotBytes),
    };
    Ok(CoseSign1 {
        protected,
        payload,
        signature,
    })
}

/// The bytes an ES384 COSE_Sign1 signature covers (RFC 9052 §4.4):
/// `["Signature1", protected, h'' (external_aad), payload]`, in deterministic CBOR.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    const CONTEXT: &[u8] = b"Signature1";
    let mut out = Vec::with_capacity(1 + 11 + 9 + protected.len() + 1 + 9 + payload.len());
    out.push(0x84); // array(4)
    push_header(&mut out, 3, CONTEXT.len() as u64);
    out.extend_from_slice(CONTEXT);
    push_header(&mut out, 2, protected.len() as u64);
    out.extend_from_slice(protected);
    push_header(&mut out, 2, 0); // external_aad: empty bstr
    push_header(&mut out, 2, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// Writes a CBOR head with the shortest length encoding (RFC 8949 §4.2.1), as the NSM does.
fn push_header(out: &mut Vec<u8>, major: u8, len: u64) {
    let m = major << 5;
    if len < 24 {
        out.push(m | len as u8);
    } else if let Ok(n) = u8::try_from(len) {
        out.extend_from_slice(&[m | 24, n]);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(len) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// A short, static description of a ciborium error: never quotes input.
pub(crate) fn describe<E>(e: &ciborium::de::Error<E>) -> &'static str {
    match e {
        ciborium::de::Error::Io(_) => "truncated input",
        ciborium::de::Error::Syntax(_) => "syntax error",
        ciborium::de::Error::Semantic(_, _) => "invalid item",
        ciborium::de::Error::RecursionLimitExceeded => "nesting too deep",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn sign1(protected: Value, unprotected: Value, payload: Value, sig: Value) -> Value {
        Value::Array(vec![protected, unprotected, payload, sig])
    }

    fn good() -> Value {
        sign1(
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(vec![]),
            Value::Bytes(vec![0xa0]),
            Value::Bytes(vec![7; 96]),
        )
    }

    #[test]
    fn sig_structure_matches_ciborium_encoding() {
        for len in [0usize, 23, 24, 255, 256, 4482, 70_000] {
            let payload = vec![0x5a; len];
            let expected = encode(&Value::Array(vec![
                Value::Text("Signature1".into()),
                Value::Bytes(PROTECTED_ES384.to_vec()),
                Value::Bytes(vec![]),
                Value::Bytes(payload.clone()),
            ]));
            assert_eq!(sig_structure(&PROTECTED_ES384, &payload), expected);
        }
    }

    #[test]
    fn sig_structure_has_documented_prefix() {
        // nitro-facts §1.1: 84 6a "Signature1" 44 a1013822 40 59 LLLL <payload>
        let s = sig_structure(&PROTECTED_ES384, &[0u8; 300]);
        assert_eq!(
            hex::encode(&s[..21]),
            "846a5369676e61747572653144a10138224059012c"
        );
    }

    #[test]
    fn parses_untagged_and_tagged() {
        let untagged = encode(&good());
        let tagged = encode(&Value::Tag(18, Box::new(good())));
        let a = parse(&untagged).unwrap();
        let b = parse(&tagged).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.payload, vec![0xa0]);
        assert_eq!(a.signature, [7; 96]);
    }

    #[test]
    fn rejects_other_tag() {
        let v = encode(&Value::Tag(98, Box::new(good())));
        assert_eq!(parse(&v), Err(CoseError::UnexpectedTag(98)));
    }

    #[test]
    fn rejects_null_unprotected_header() {
        let v = sign1(
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Null,
            Value::Bytes(vec![0xa0]),
            Value::Bytes(vec![7; 96]),
        );
        assert_eq!(parse(&encode(&v)), Err(CoseError::InvalidUnprotectedHeader));
    }

    #[test]
    fn rejects_non_empty_unprotected_header() {
        let v = sign1(
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(vec![(
                Value::Integer(1.into()),
                Value::Integer((-35).into()),
            )]),
            Value::Bytes(vec![0xa0]),
            Value::Bytes(vec![7; 96]),
        );
        assert_eq!(parse(&encode(&v)), Err(CoseError::InvalidUnprotectedHeader));
    }

    #[test]
    fn rejects_other_algorithms_and_header_encodings() {
        // ES256 (-7), ES512 (-36), and {1:-35} with an extra parameter.
        for protected in [
            vec![0xa1, 0x01, 0x26],
            vec![0xa1, 0x01, 0x38, 0x23],
            vec![0xa2, 0x01, 0x38, 0x22, 0x04, 0x40],
            vec![],
        ] {
            let v = sign1(
                Value::Bytes(protected),
                Value::Map(vec![]),
                Value::Bytes(vec![0xa0]),
                Value::Bytes(vec![7; 96]),
            );
            assert_eq!(
                parse(&encode(&v)),
                Err(CoseError::UnsupportedProtectedHeader)
            );
        }
    }

    #[test]
    fn rejects_wrong_signature_length_and_types() {
        let v = sign1(
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(vec![]),
            Value::Bytes(vec![0xa0]),
            Value::Bytes(vec![7; 64]),
        );
        assert_eq!(
            parse(&encode(&v)),
            Err(CoseError::InvalidSignatureLength(64))
        );
        let v = sign1(
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(vec![]),
            Value::Null,
            Value::Bytes(vec![7; 96]),
        );
        assert_eq!(parse(&encode(&v)), Err(CoseError::PayloadNotBytes));
    }

    #[test]
    fn rejects_wrong_arity_trailing_bytes_and_oversize() {
        let v = Value::Array(vec![Value::Bytes(PROTECTED_ES384.to_vec())]);
        assert_eq!(parse(&encode(&v)), Err(CoseError::NotSign1Array));
        let mut bytes = encode(&good());
        bytes.push(0x00);
        assert_eq!(parse(&bytes), Err(CoseError::TrailingBytes));
        let big = vec![0u8; MAX_ATTESTATION_DOC_LEN + 1];
        assert!(matches!(parse(&big), Err(CoseError::TooLarge { .. })));
        assert!(matches!(parse(&[0x84, 0x44]), Err(CoseError::Malformed(_))));
    }
}
