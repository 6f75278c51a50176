//! Serde for digests: a byte string in CBOR (the wire), lowercase hex in human-readable formats
//! (the host's JSON), so that operators and non-Rust clients see what `sha384sum` prints.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Longest digest accepted in hex form (SHA-512).
const MAX_DIGEST_LEN: usize = 64;

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        serde_bytes::serialize(bytes, s)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    if d.is_human_readable() {
        let text = String::deserialize(d)?;
        if text.len() > 2 * MAX_DIGEST_LEN {
            return Err(D::Error::custom("digest too long"));
        }
        hex::decode(&text).map_err(|_| D::Error::custom("digest is not hex"))
    } else {
        serde_bytes::deserialize(d)
    }
}
