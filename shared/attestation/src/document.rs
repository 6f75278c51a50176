//! The attestation document payload (the CBOR map inside the COSE_Sign1), decoded with the schema
//! checks of the AWS Nitro Enclaves attestation process (`attestation_process.md` §3.2.2,
//! nitro-facts §1.2).
//!
//! What it does: decodes a definite- or indefinite-length map, refuses duplicate and unknown keys,
//! checks every field's type and size, and treats CBOR null as "absent" for the three optional
//! fields (the NSM always sends all nine keys, with null for unset ones).
//!
//! What it does not do: anything with the certificates beyond their byte sizes (see
//! [`crate::chain`]), or any policy (nonce, PCR values, age).
//!
//! Unknown keys are refused: every real document carries exactly the nine keys of the CDDL, and a
//! verifier that skipped unknown keys would sign off on fields it never looked at.

use std::collections::BTreeMap;

use ciborium::value::Value;
use sealed_wire::limits::MAX_CBOR_DEPTH;

use crate::VerifiedDocument;

/// Most PCRs in a document (indices 0..=31).
pub const MAX_PCRS: usize = 32;
/// Largest DER certificate in `certificate` or `cabundle` (CDDL `cert = bytes .size (1..1024)`).
pub const MAX_CERT_LEN: usize = 1024;
/// Largest `public_key`, `user_data` and `nonce`. The CDDL says 1024; the 512 in the prose of
/// §3.2.2.2 is an open inconsistency (aws-nitro-enclaves-nsm-api#52) and real AWS documents carry
/// 1024-byte values (nitro-facts §1.2), so 1024 it is.
pub const MAX_USER_FIELD_LEN: usize = 1024;
/// The only digest the NSM uses.
pub const DIGEST_SHA384: &str = "SHA384";

/// Why the payload was refused. Carries no payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed CBOR: {0}")]
    Malformed(&'static str),
    #[error("trailing bytes after the payload map")]
    TrailingBytes,
    #[error("payload is not a CBOR map")]
    NotAMap,
    #[error("payload map has a key that is not a text string")]
    NonTextKey,
    #[error("payload map has the key `{0}` twice")]
    DuplicateKey(&'static str),
    #[error("payload map has an unknown key")]
    UnknownKey,
    #[error("payload is missing the mandatory field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` has the wrong type or size: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("digest is not \"SHA384\"")]
    UnsupportedDigest,
    #[error("PCR index out of range 0..=31 or repeated")]
    InvalidPcrIndex,
}

const KEYS: [&str; 9] = [
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
];

/// Decodes and schema-checks a payload. The caller has already bounded `bytes` (it came out of a
/// COSE message of at most 16 KiB).
pub(crate) fn parse(bytes: &[u8]) -> Result<VerifiedDocument, PayloadError> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_CBOR_DEPTH)
        .map_err(|e| PayloadError::Malformed(crate::cose::describe(&e)))?;
    if !reader.is_empty() {
        return Err(PayloadError::TrailingBytes);
    }
    let Value::Map(entries) = value else {
        return Err(PayloadError::NotAMap);
    };

    // One slot per known key; a second occurrence of a key is refused (a decoder that kept the
    // first or the last one could be made to disagree with another verifier: nitro-validator #36).
    let mut slots: [Option<Value>; 9] = Default::default();
    for (key, val) in entries {
        let Value::Text(key) = key else {
            return Err(PayloadError::NonTextKey);
        };
        let idx = KEYS
            .iter()
            .position(|k| *k == key)
            .ok_or(PayloadError::UnknownKey)?;
        let (slot, name) = slots
            .get_mut(idx)
            .zip(KEYS.get(idx))
            .ok_or(PayloadError::UnknownKey)?;
        if slot.is_some() {
            return Err(PayloadError::DuplicateKey(name));
        }
        *slot = Some(val);
    }
    let [
        module_id,
        digest,
        timestamp,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
    ] = slots;

    let module_id = match required("module_id", module_id)? {
        Value::Text(s) if !s.is_empty() => s,
        _ => return Err(invalid("module_id", "must be non-empty text")),
    };
    match required("digest", digest)? {
        Value::Text(s) if s == DIGEST_SHA384 => {}
        Value::Text(_) => return Err(PayloadError::UnsupportedDigest),
        _ => return Err(invalid("digest", "must be text")),
    }
    let timestamp_ms = match required("timestamp", timestamp)? {
        Value::Integer(i) => u64::try_from(i)
            .ok()
            .filter(|t| *t > 0)
            .ok_or(invalid("timestamp", "must be a positive integer"))?,
        _ => return Err(invalid("timestamp", "must be an unsigned integer")),
    };
    let pcrs = parse_pcrs(required("pcrs", pcrs)?)?;
    let certificate = cert_bytes("certificate", required("certificate", certificate)?)?;
    let cabundle = match required("cabundle", cabundle)? {
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|c| cert_bytes("cabundle", c))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(invalid("cabundle", "must be a non-empty array")),
    };

    Ok(VerifiedDocument {
        module_id,
        timestamp_ms,
        digest: DIGEST_SHA384.to_string(),
        pcrs,
        certificate,
        cabundle,
        public_key: optional_bytes("public_key", public_key)?,
        user_data: optional_bytes("user_data", user_data)?,
        nonce: optional_bytes("nonce", nonce)?,
    })
}

fn invalid(field: &'static str, reason: &'static str) -> PayloadError {
    PayloadError::InvalidField { field, reason }
}

fn required(field: &'static str, v: Option<Value>) -> Result<Value, PayloadError> {
    v.ok_or(PayloadError::MissingField(field))
}

fn parse_pcrs(v: Value) -> Result<BTreeMap<u16, Vec<u8>>, PayloadError> {
    let Value::Map(entries) = v else {
        return Err(invalid("pcrs", "must be a map"));
    };
    if entries.is_empty() || entries.len() > MAX_PCRS {
        return Err(invalid("pcrs", "must hold 1..=32 entries"));
    }
    let mut pcrs = BTreeMap::new();
    for (k, v) in entries {
        let index = match k {
            Value::Integer(i) => u16::try_from(i)
                .ok()
                .filter(|i| usize::from(*i) < MAX_PCRS)
                .ok_or(PayloadError::InvalidPcrIndex)?,
            _ => return Err(PayloadError::InvalidPcrIndex),
        };
        let value = match v {
            Value::Bytes(b) if matches!(b.len(), 32 | 48 | 64) => b,
            _ => return Err(invalid("pcrs", "values must be 32, 48 or 64 bytes")),
        };
        if pcrs.insert(index, value).is_some() {
            return Err(PayloadError::InvalidPcrIndex);
        }
    }
    Ok(pcrs)
}

fn cert_bytes(field: &'static str, v: Value) -> Result<Vec<u8>, PayloadError> {
    match v {
        Value::Bytes(b) if !b.is_empty() && b.len() <= MAX_CERT_LEN => Ok(b),
        _ => Err(invalid(field, "certificates must be 1..=1024 bytes")),
    }
}

fn optional_bytes(field: &'static str, v: Option<Value>) -> Result<Option<Vec<u8>>, PayloadError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) if b.len() <= MAX_USER_FIELD_LEN => Ok(Some(b)),
        Some(_) => Err(invalid(field, "must be null or at most 1024 bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn base() -> Vec<(Value, Value)> {
        vec![
            (t("module_id"), t("i-0123-enc0123")),
            (t("digest"), t("SHA384")),
            (t("timestamp"), Value::Integer(1_700_000_000_000u64.into())),
            (
                t("pcrs"),
                Value::Map(
                    (0..16u8)
                        .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![i; 48])))
                        .collect(),
                ),
            ),
            (t("certificate"), Value::Bytes(vec![0x30; 10])),
            (
                t("cabundle"),
                Value::Array(vec![Value::Bytes(vec![0x30; 10])]),
            ),
            (t("public_key"), Value::Null),
            (t("user_data"), Value::Bytes(vec![1; 1024])),
            (t("nonce"), Value::Null),
        ]
    }

    fn enc(entries: Vec<(Value, Value)>) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Map(entries), &mut out).unwrap();
        out
    }

    fn with(key: &str, val: Value) -> Vec<u8> {
        let mut e = base();
        for (k, v) in e.iter_mut() {
            if *k == t(key) {
                *v = val.clone();
            }
        }
        enc(e)
    }

    #[test]
    fn accepts_well_formed_payload_with_nulls_as_absent() {
        let d = parse(&enc(base())).unwrap();
        assert_eq!(d.module_id, "i-0123-enc0123");
        assert_eq!(d.timestamp_ms, 1_700_000_000_000);
        assert_eq!(d.pcrs.len(), 16);
        assert_eq!(d.pcrs[&3], vec![3; 48]);
        assert_eq!(d.public_key, None);
        assert_eq!(d.user_data.as_deref().map(<[u8]>::len), Some(1024));
        assert_eq!(d.nonce, None);
    }

    #[test]
    fn accepts_missing_optional_keys() {
        let mut e = base();
        e.truncate(6);
        let d = parse(&enc(e)).unwrap();
        assert_eq!(d.user_data, None);
    }

    #[test]
    fn accepts_indefinite_length_map() {
        let definite = enc(base());
        // Re-frame the same entries as `bf … ff` (RFC 8949 §3.2.2), as AWS has done since 2026.
        let mut indefinite = vec![0xbf];
        indefinite.extend_from_slice(&definite[1..]);
        indefinite.push(0xff);
        assert_eq!(definite[0], 0xa9);
        let a = parse(&definite).unwrap();
        let b = parse(&indefinite).unwrap();
        assert_eq!(a.pcrs, b.pcrs);
        assert_eq!(a.user_data, b.user_data);
    }

    #[test]
    fn rejects_duplicate_key() {
        let mut e = base();
        e.push((t("nonce"), Value::Bytes(vec![1])));
        assert_eq!(parse(&enc(e)), Err(PayloadError::DuplicateKey("nonce")));
    }

    #[test]
    fn rejects_unknown_and_non_text_keys() {
        let mut e = base();
        e.push((t("extra"), Value::Null));
        assert_eq!(parse(&enc(e)), Err(PayloadError::UnknownKey));
        let mut e = base();
        e.push((Value::Integer(1.into()), Value::Null));
        assert_eq!(parse(&enc(e)), Err(PayloadError::NonTextKey));
    }

    #[test]
    fn rejects_missing_mandatory_field() {
        let e: Vec<_> = base()
            .into_iter()
            .filter(|(k, _)| *k != t("cabundle"))
            .collect();
        assert_eq!(parse(&enc(e)), Err(PayloadError::MissingField("cabundle")));
    }

    #[test]
    fn rejects_schema_violations() {
        let bad = [
            ("module_id", t("")),
            ("digest", t("SHA256")),
            ("timestamp", Value::Integer(0.into())),
            ("timestamp", Value::Integer((-5).into())),
            ("pcrs", Value::Map(vec![])),
            (
                "pcrs",
                Value::Map(vec![(Value::Integer(32.into()), Value::Bytes(vec![0; 48]))]),
            ),
            (
                "pcrs",
                Value::Map(vec![(Value::Integer(0.into()), Value::Bytes(vec![0; 47]))]),
            ),
            ("certificate", Value::Bytes(vec![])),
            ("certificate", Value::Bytes(vec![0; 1025])),
            ("cabundle", Value::Array(vec![])),
            ("cabundle", Value::Null),
            ("cabundle", Value::Array(vec![Value::Bytes(vec![0; 1025])])),
            ("public_key", Value::Bytes(vec![0; 1025])),
            ("user_data", t("text")),
            ("nonce", Value::Bytes(vec![0; 1025])),
        ];
        for (key, val) in bad {
            assert!(parse(&with(key, val.clone())).is_err(), "{key} = {val:?}");
        }
    }

    #[test]
    fn rejects_repeated_pcr_index_and_non_map() {
        let pcrs = Value::Map(vec![
            (Value::Integer(0.into()), Value::Bytes(vec![0; 48])),
            (Value::Integer(0.into()), Value::Bytes(vec![1; 48])),
        ]);
        assert_eq!(
            parse(&with("pcrs", pcrs)),
            Err(PayloadError::InvalidPcrIndex)
        );
        assert_eq!(parse(&[0x80]), Err(PayloadError::NotAMap));
    }
}
