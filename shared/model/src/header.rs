//! The file prefix: magic, header length, and the strict CBOR header (format version 1).
//!
//! Parsing reads only the prefix and says how many bytes it used, so that a caller streaming the
//! file knows where the first chunk starts. Every field is bounded before it is trusted; the
//! header must also be the canonical encoding of what it decodes to, so one header has one byte
//! string (the chunk AAD commits to those bytes).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha384};

use crate::ModelFormatError;

/// First 8 bytes of every sealed model.
pub const MAGIC: [u8; 8] = *b"SIMODEL1";
/// The KMS encryption context key under which a model's data key is generated and unwrapped,
/// with the model id as value (AWS KMS Developer Guide, "Encryption context"). It binds the
/// `CiphertextBlob` to the model id at KMS: a blob moved into another model's header does not
/// unwrap, CloudTrail records which model each `Decrypt` was for, and key policies can condition
/// on `kms:EncryptionContext:sealed-inference:model-id`.
pub const ENCRYPTION_CONTEXT_KEY: &str = "sealed-inference:model-id";
/// The only `format_version` written and read.
pub const FORMAT_VERSION: u64 = 1;
/// Magic plus the u32 header length.
pub const PREFIX_LEN: usize = MAGIC.len() + 4;
/// Largest CBOR header accepted (a KMS CiphertextBlob is at most 6144 bytes; the rest is small).
pub const MAX_HEADER_LEN: usize = 64 * 1024;
// The wire limit on the header a host sends to start a sealed load must fit every valid prefix.
const _: () =
    assert!(sealed_wire::limits::MAX_SEALED_MODEL_HEADER_LEN == PREFIX_LEN + MAX_HEADER_LEN);
/// Largest model accepted: 8 GiB.
pub const MAX_MODEL_LEN: u64 = 8 * 1024 * 1024 * 1024;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size accepted.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Chunk size used when the caller has no preference.
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
/// Longest KMS key id (a key ARN, alias ARN or id; AWS KMS API `KeyId` is at most 2048).
pub const MAX_KMS_KEY_ID_LEN: usize = 2048;
/// Longest KMS `CiphertextBlob` (AWS KMS API Reference, `Decrypt`: 1–6144 bytes).
pub const MAX_ENCRYPTED_DATA_KEY_LEN: usize = 6144;
/// SHA-384 digest length.
pub const DIGEST_LEN: usize = 48;
/// Length of the random per-file nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;

/// The decoded, validated header of a sealed model (format version 1).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedModelHeader {
    /// Same rules as `sealed_wire::message::valid_model_id`.
    pub model_id: String,
    /// The KMS key that wraps the data key (1–2048 bytes, no control characters).
    pub kms_key_id: String,
    /// The KMS `CiphertextBlob` of the 32-byte data key (1–6144 bytes).
    pub encrypted_data_key: Vec<u8>,
    /// Length of the ONNX plaintext, at most [`MAX_MODEL_LEN`].
    pub plaintext_len: u64,
    /// SHA-384 of the ONNX plaintext.
    pub plaintext_sha384: [u8; DIGEST_LEN],
    /// Plaintext bytes per chunk (all but the last), in [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// Random per file; the first 7 bytes of every chunk nonce.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

// Public metadata only, but the blob is long and useless in logs: show its length.
impl std::fmt::Debug for SealedModelHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedModelHeader")
            .field("model_id", &self.model_id)
            .field("kms_key_id", &self.kms_key_id)
            .field("encrypted_data_key_len", &self.encrypted_data_key.len())
            .field("plaintext_len", &self.plaintext_len)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// The CBOR shape. Field order is the encoding order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    format_version: u64,
    model_id: String,
    kms_key_id: String,
    encrypted_data_key: ByteBuf,
    plaintext_len: u64,
    plaintext_sha384: ByteBuf,
    chunk_size: u32,
    nonce_prefix: ByteBuf,
}

/// Read first, leniently, so that a future version is reported as such and not as malformed.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: u64,
}

impl SealedModelHeader {
    /// Checks every bound. Called before sealing and after parsing.
    pub fn validate(&self) -> Result<(), ModelFormatError> {
        if !sealed_wire::message::valid_model_id(&self.model_id) {
            return Err(ModelFormatError::InvalidField { field: "model_id" });
        }
        if self.kms_key_id.is_empty()
            || self.kms_key_id.len() > MAX_KMS_KEY_ID_LEN
            || self.kms_key_id.chars().any(char::is_control)
        {
            return Err(ModelFormatError::InvalidField {
                field: "kms_key_id",
            });
        }
        if self.encrypted_data_key.is_empty()
            || self.encrypted_data_key.len() > MAX_ENCRYPTED_DATA_KEY_LEN
        {
            return Err(ModelFormatError::InvalidField {
                field: "encrypted_data_key",
            });
        }
        if self.plaintext_len > MAX_MODEL_LEN {
            return Err(ModelFormatError::TooLarge {
                len: self.plaintext_len,
                max: MAX_MODEL_LEN,
            });
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ModelFormatError::InvalidField {
                field: "chunk_size",
            });
        }
        // With the bounds above the count is at most 2^21, so the u32 counter never wraps.
        self.chunk_count()?;
        Ok(())
    }

    /// Number of chunks: `ceil(plaintext_len / chunk_size)`, and one empty chunk for an empty model.
    pub fn chunk_count(&self) -> Result<u32, ModelFormatError> {
        let size = u64::from(self.chunk_size);
        if size == 0 {
            return Err(ModelFormatError::InvalidField {
                field: "chunk_size",
            });
        }
        let n = self.plaintext_len.div_ceil(size).max(1);
        u32::try_from(n).map_err(|_| ModelFormatError::TooLarge {
            len: self.plaintext_len,
            max: MAX_MODEL_LEN,
        })
    }

    /// Plaintext length of chunk `index` (the last may be shorter, or empty for an empty model).
    pub(crate) fn chunk_plaintext_len(&self, index: u32) -> Result<usize, ModelFormatError> {
        let count = self.chunk_count()?;
        let size = u64::from(self.chunk_size);
        let len = if index.checked_add(1) == Some(count) {
            self.plaintext_len - u64::from(index) * size
        } else if index < count {
            size
        } else {
            return Err(ModelFormatError::Misuse {
                reason: "chunk index past the last chunk",
            });
        };
        usize::try_from(len).map_err(|_| ModelFormatError::TooLarge {
            len: self.plaintext_len,
            max: MAX_MODEL_LEN,
        })
    }

    /// Total file length: prefix, header, and every chunk with its 16-byte tag.
    pub fn sealed_len(&self, header_total_len: usize) -> Result<u64, ModelFormatError> {
        let tags = u64::from(self.chunk_count()?) * crate::TAG_LEN as u64;
        (header_total_len as u64)
            .checked_add(self.plaintext_len)
            .and_then(|n| n.checked_add(tags))
            .ok_or(ModelFormatError::TooLarge {
                len: self.plaintext_len,
                max: MAX_MODEL_LEN,
            })
    }

    /// The file prefix: `MAGIC ‖ header_len (u32 BE) ‖ CBOR header`.
    pub fn encode(&self) -> Result<Vec<u8>, ModelFormatError> {
        self.validate()?;
        let cbor = self.to_cbor()?;
        let len = u32::try_from(cbor.len())
            .ok()
            .filter(|&l| l as usize <= MAX_HEADER_LEN)
            .ok_or(ModelFormatError::HeaderTooLarge {
                len: cbor.len() as u64,
                max: MAX_HEADER_LEN as u64,
            })?;
        let mut out = Vec::with_capacity(PREFIX_LEN + cbor.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&cbor);
        Ok(out)
    }

    fn to_cbor(&self) -> Result<Vec<u8>, ModelFormatError> {
        let wire = HeaderV1 {
            format_version: FORMAT_VERSION,
            model_id: self.model_id.clone(),
            kms_key_id: self.kms_key_id.clone(),
            encrypted_data_key: ByteBuf::from(self.encrypted_data_key.clone()),
            plaintext_len: self.plaintext_len,
            plaintext_sha384: ByteBuf::from(self.plaintext_sha384.to_vec()),
            chunk_size: self.chunk_size,
            nonce_prefix: ByteBuf::from(self.nonce_prefix.to_vec()),
        };
        let mut out = Vec::new();
        ciborium::ser::into_writer(&wire, &mut out).map_err(|_| ModelFormatError::Misuse {
            reason: "header does not encode",
        })?;
        Ok(out)
    }

    fn from_cbor(cbor: &[u8]) -> Result<SealedModelHeader, ModelFormatError> {
        let probe: VersionProbe = decode_exact(cbor)?;
        if probe.format_version != FORMAT_VERSION {
            return Err(ModelFormatError::UnsupportedVersion {
                version: probe.format_version,
            });
        }
        let wire: HeaderV1 = decode_exact(cbor)?;
        let header = SealedModelHeader {
            model_id: wire.model_id,
            kms_key_id: wire.kms_key_id,
            encrypted_data_key: wire.encrypted_data_key.into_vec(),
            plaintext_len: wire.plaintext_len,
            plaintext_sha384: wire.plaintext_sha384.as_slice().try_into().map_err(|_| {
                ModelFormatError::InvalidField {
                    field: "plaintext_sha384",
                }
            })?,
            chunk_size: wire.chunk_size,
            nonce_prefix: wire.nonce_prefix.as_slice().try_into().map_err(|_| {
                ModelFormatError::InvalidField {
                    field: "nonce_prefix",
                }
            })?,
        };
        header.validate()?;
        // One header, one encoding: refuse indefinite lengths, non-minimal integers, reordered
        // keys. The AAD already binds the exact bytes; this keeps the format unambiguous.
        if header.to_cbor()? != cbor {
            return Err(ModelFormatError::MalformedHeader {
                reason: "not the canonical encoding",
            });
        }
        Ok(header)
    }
}

// ciborium's messages can quote the input; only a fixed reason leaves this function.
fn decode_exact<T: serde::de::DeserializeOwned>(cbor: &[u8]) -> Result<T, ModelFormatError> {
    let mut reader = cbor;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, 4).map_err(|_| {
        ModelFormatError::MalformedHeader {
            reason: "not a format version 1 header map",
        }
    })?;
    if !reader.is_empty() {
        return Err(ModelFormatError::MalformedHeader {
            reason: "trailing bytes after the header map",
        });
    }
    Ok(value)
}

/// How many bytes the prefix occupies (magic, length, header), from its first [`PREFIX_LEN`]
/// bytes. Lets a streaming caller read exactly the header before calling [`parse_header`].
pub fn header_total_len(file_prefix: &[u8]) -> Result<usize, ModelFormatError> {
    let (magic, rest) = file_prefix
        .split_first_chunk::<8>()
        .ok_or(ModelFormatError::Truncated)?;
    if *magic != MAGIC {
        return Err(ModelFormatError::BadMagic);
    }
    let (len, _) = rest
        .split_first_chunk::<4>()
        .ok_or(ModelFormatError::Truncated)?;
    let len = u32::from_be_bytes(*len);
    if len as usize > MAX_HEADER_LEN {
        return Err(ModelFormatError::HeaderTooLarge {
            len: u64::from(len),
            max: MAX_HEADER_LEN as u64,
        });
    }
    Ok(PREFIX_LEN + len as usize)
}

/// Parses and validates the header at the start of `file_prefix` (which may hold more of the
/// file). Returns the header and the number of bytes it occupies; chunks start there.
pub fn parse_header(file_prefix: &[u8]) -> Result<(SealedModelHeader, usize), ModelFormatError> {
    let total = header_total_len(file_prefix)?;
    let cbor = file_prefix
        .get(PREFIX_LEN..total)
        .ok_or(ModelFormatError::Truncated)?;
    let header = SealedModelHeader::from_cbor(cbor)?;
    Ok((header, total))
}

/// The associated data of every chunk: SHA-384 of the exact prefix bytes, so that any header edit
/// fails every tag.
pub(crate) fn chunk_aad(header_bytes: &[u8]) -> [u8; DIGEST_LEN] {
    Sha384::digest(header_bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> SealedModelHeader {
        SealedModelHeader {
            model_id: "resnet-50.v1".to_string(),
            kms_key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd".to_string(),
            encrypted_data_key: vec![0xAB; 184],
            plaintext_len: 10_000,
            plaintext_sha384: [7; DIGEST_LEN],
            chunk_size: MIN_CHUNK_SIZE,
            nonce_prefix: [1, 2, 3, 4, 5, 6, 7],
        }
    }

    #[test]
    fn header_round_trips_and_reports_its_length() {
        let h = sample();
        let mut bytes = h.encode().unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(b"chunks follow");
        let (back, used) = parse_header(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(used, len);
        assert_eq!(header_total_len(&bytes).unwrap(), len);
    }

    #[test]
    fn chunk_count_rounds_up_and_empty_model_has_one_chunk() {
        let mut h = sample();
        for (len, count) in [(0, 1), (1, 1), (4095, 1), (4096, 1), (4097, 2), (8192, 2)] {
            h.plaintext_len = len;
            assert_eq!(h.chunk_count().unwrap(), count, "len {len}");
        }
    }

    #[test]
    fn rejects_bad_magic_and_short_prefix() {
        let bytes = sample().encode().unwrap();
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(parse_header(&bad), Err(ModelFormatError::BadMagic));
        for cut in 0..bytes.len() {
            let err = parse_header(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ModelFormatError::Truncated),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_oversized_header_length_before_reading_it() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(MAX_HEADER_LEN as u32 + 1).to_be_bytes());
        assert!(matches!(
            parse_header(&bytes),
            Err(ModelFormatError::HeaderTooLarge { .. })
        ));
    }

    fn with_cbor(cbor: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(cbor.len() as u32).to_be_bytes());
        out.extend_from_slice(cbor);
        out
    }

    fn wire(h: &SealedModelHeader) -> HeaderV1 {
        HeaderV1 {
            format_version: 1,
            model_id: h.model_id.clone(),
            kms_key_id: h.kms_key_id.clone(),
            encrypted_data_key: ByteBuf::from(h.encrypted_data_key.clone()),
            plaintext_len: h.plaintext_len,
            plaintext_sha384: ByteBuf::from(h.plaintext_sha384.to_vec()),
            chunk_size: h.chunk_size,
            nonce_prefix: ByteBuf::from(h.nonce_prefix.to_vec()),
        }
    }

    fn encode_wire(w: &HeaderV1) -> Vec<u8> {
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(w, &mut cbor).unwrap();
        with_cbor(&cbor)
    }

    #[test]
    fn reports_future_version_as_unsupported() {
        let mut w = wire(&sample());
        w.format_version = 2;
        assert_eq!(
            parse_header(&encode_wire(&w)),
            Err(ModelFormatError::UnsupportedVersion { version: 2 })
        );
    }

    type Edit = fn(&mut HeaderV1);

    #[test]
    fn rejects_out_of_bounds_fields() {
        let base = sample();
        let cases: Vec<(&str, Edit)> = vec![
            ("model_id", |w| w.model_id = "bad id/..".into()),
            ("model_id", |w| w.model_id = String::new()),
            ("kms_key_id", |w| w.kms_key_id = String::new()),
            ("kms_key_id", |w| {
                w.kms_key_id = "k".repeat(MAX_KMS_KEY_ID_LEN + 1)
            }),
            ("kms_key_id", |w| w.kms_key_id = "line\nbreak".into()),
            ("encrypted_data_key", |w| {
                w.encrypted_data_key = ByteBuf::new()
            }),
            ("encrypted_data_key", |w| {
                w.encrypted_data_key = ByteBuf::from(vec![0; MAX_ENCRYPTED_DATA_KEY_LEN + 1])
            }),
            ("plaintext_sha384", |w| {
                w.plaintext_sha384 = ByteBuf::from(vec![0; 32])
            }),
            ("chunk_size", |w| w.chunk_size = MIN_CHUNK_SIZE - 1),
            ("chunk_size", |w| w.chunk_size = MAX_CHUNK_SIZE + 1),
            ("chunk_size", |w| w.chunk_size = 0),
            ("nonce_prefix", |w| {
                w.nonce_prefix = ByteBuf::from(vec![0; 8])
            }),
        ];
        for (field, edit) in cases {
            let mut w = wire(&base);
            edit(&mut w);
            assert_eq!(
                parse_header(&encode_wire(&w)),
                Err(ModelFormatError::InvalidField { field }),
                "{field}"
            );
        }
        let mut w = wire(&base);
        w.plaintext_len = MAX_MODEL_LEN + 1;
        assert!(matches!(
            parse_header(&encode_wire(&w)),
            Err(ModelFormatError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_unknown_fields_and_non_canonical_encodings() {
        #[derive(Serialize)]
        struct Extra {
            #[serde(flatten)]
            inner: HeaderV1,
            extra: u8,
        }
        let extra = Extra {
            inner: wire(&sample()),
            extra: 1,
        };
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&extra, &mut cbor).unwrap();
        assert!(matches!(
            parse_header(&with_cbor(&cbor)),
            Err(ModelFormatError::MalformedHeader { .. })
        ));

        // The same map with one integer in a non-minimal form (u32 chunk_size as a u64).
        let good = sample().encode().unwrap();
        let cbor = &good[PREFIX_LEN..];
        let pos = cbor
            .windows(3)
            .position(|w| w == [0x19, 0x10, 0x00])
            .unwrap();
        let mut longer = cbor[..pos].to_vec();
        longer.extend_from_slice(&[0x1A, 0x00, 0x00, 0x10, 0x00]);
        longer.extend_from_slice(&cbor[pos + 3..]);
        assert_eq!(
            parse_header(&with_cbor(&longer)),
            Err(ModelFormatError::MalformedHeader {
                reason: "not the canonical encoding"
            })
        );
    }

    #[test]
    fn rejects_trailing_bytes_inside_the_declared_header() {
        let good = sample().encode().unwrap();
        let mut cbor = good[PREFIX_LEN..].to_vec();
        cbor.push(0);
        assert!(matches!(
            parse_header(&with_cbor(&cbor)),
            Err(ModelFormatError::MalformedHeader { .. })
        ));
    }
}
