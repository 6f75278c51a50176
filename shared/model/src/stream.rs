//! Chunked AES-256-GCM in the STREAM construction: [`Sealer`], [`Opener`], and the one-shot
//! [`seal`] and [`open`].
//!
//! Chunk `i` is sealed under nonce `nonce_prefix (7) ‖ i (u32 BE) ‖ last (1 byte)` with the
//! SHA-384 of the file prefix as associated data. The chunk count and every chunk's length follow
//! from the header, so the opener knows where each chunk ends and which one is last without
//! trusting anything outside the authenticated header.

use aead::{AeadInOut, KeyInit};
use sealed_crypto::aes256gcm::Aes256Gcm;
use sha2::{Digest, Sha384};
use zeroize::{Zeroize, Zeroizing};

use crate::header::{DIGEST_LEN, NONCE_PREFIX_LEN, SealedModelHeader, chunk_aad, parse_header};
use crate::{ModelFormatError, TAG_LEN};

type Nonce = aead::Nonce<Aes256Gcm>;
pub(crate) type Tag = aead::Tag<Aes256Gcm>;

/// Length of an AES-256 data key.
pub const DATA_KEY_LEN: usize = 32;

/// `nonce_prefix ‖ counter (u32 BE) ‖ last flag`: 96 bits, the GCM nonce length of RFC 5116 §5.1.
pub(crate) fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    let (p, rest) = n.split_at_mut(NONCE_PREFIX_LEN);
    p.copy_from_slice(prefix);
    let (counter, flag) = rest.split_at_mut(4);
    counter.copy_from_slice(&index.to_be_bytes());
    flag.fill(u8::from(last));
    Nonce::from(n)
}

fn cipher(data_key: &[u8; DATA_KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(data_key.into())
}

/// Header fields chosen by the sealer; the length and digest come from the plaintext.
#[derive(Clone, Debug)]
pub struct SealParams {
    pub model_id: String,
    pub kms_key_id: String,
    /// The KMS `CiphertextBlob` of `data_key` (from `GenerateDataKey`).
    pub encrypted_data_key: Vec<u8>,
    pub chunk_size: u32,
}

/// Seals a whole model in memory: prefix then every chunk. `nonce_prefix` must be random (from a
/// CSPRNG), and a data key must seal one file only.
pub fn seal(
    params: SealParams,
    data_key: &[u8; DATA_KEY_LEN],
    plaintext: &[u8],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
) -> Result<Vec<u8>, ModelFormatError> {
    let header = SealedModelHeader {
        model_id: params.model_id,
        kms_key_id: params.kms_key_id,
        encrypted_data_key: params.encrypted_data_key,
        plaintext_len: plaintext.len() as u64,
        plaintext_sha384: Sha384::digest(plaintext).into(),
        chunk_size: params.chunk_size,
        nonce_prefix,
    };
    let mut sealer = Sealer::new(&header, data_key)?;
    let total = header.sealed_len(sealer.header_bytes().len())?;
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    out.extend_from_slice(sealer.header_bytes());
    let count = header.chunk_count()?;
    let chunk_size = header.chunk_size as usize;
    let mut chunks = plaintext.chunks(chunk_size);
    for index in 0..count {
        let last = index + 1 == count;
        // An empty model has no slice from `chunks`: its one chunk is empty.
        let piece = chunks.next().unwrap_or_default();
        sealer.seal_chunk_into(piece, last, &mut out)?;
    }
    sealer.finish()?;
    Ok(out)
}

/// Streaming sealer: write [`Self::header_bytes`], then each chunk from [`Self::seal_chunk`] in
/// order, then call [`Self::finish`]. The header's length and digest must be known up front (one
/// hashing pass over the plaintext, then one sealing pass).
///
/// Holds the data key schedule: wiped on drop, no `Debug`.
pub struct Sealer {
    header: SealedModelHeader,
    header_bytes: Vec<u8>,
    aad: [u8; DIGEST_LEN],
    cipher: Aes256Gcm,
    next: u32,
    count: u32,
    hasher: Sha384,
}

impl Sealer {
    /// Validates and encodes `header`.
    pub fn new(
        header: &SealedModelHeader,
        data_key: &[u8; DATA_KEY_LEN],
    ) -> Result<Sealer, ModelFormatError> {
        let header_bytes = header.encode()?;
        Ok(Sealer {
            header: header.clone(),
            aad: chunk_aad(&header_bytes),
            header_bytes,
            cipher: cipher(data_key),
            next: 0,
            count: header.chunk_count()?,
            hasher: Sha384::new(),
        })
    }

    /// The file prefix: magic, header length, CBOR header.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// Seals the next chunk. Every chunk but the last holds exactly `chunk_size` bytes; `last`
    /// must be true exactly for the final one.
    pub fn seal_chunk(
        &mut self,
        plaintext: &[u8],
        last: bool,
    ) -> Result<Vec<u8>, ModelFormatError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_chunk_into(plaintext, last, &mut out)?;
        Ok(out)
    }

    fn seal_chunk_into(
        &mut self,
        plaintext: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), ModelFormatError> {
        if self.next >= self.count {
            return Err(ModelFormatError::Misuse {
                reason: "chunk after the last chunk",
            });
        }
        let index = self.next;
        let is_last = index + 1 == self.count;
        if last != is_last {
            return Err(ModelFormatError::Misuse {
                reason: "last flag does not match the header's chunk count",
            });
        }
        if plaintext.len() != self.header.chunk_plaintext_len(index)? {
            return Err(ModelFormatError::Misuse {
                reason: "chunk length does not match the header",
            });
        }
        self.hasher.update(plaintext);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let nonce = chunk_nonce(&self.header.nonce_prefix, index, last);
        let tag = match out.get_mut(start..) {
            Some(body) => self
                .cipher
                .encrypt_inout_detached(&nonce, &self.aad, body.into())
                .ok(),
            None => None,
        };
        match tag {
            Some(tag) => out.extend_from_slice(&tag),
            None => {
                // Never leave plaintext behind in the caller's buffer.
                if let Some(body) = out.get_mut(start..) {
                    body.zeroize();
                }
                out.truncate(start);
                return Err(ModelFormatError::Misuse {
                    reason: "chunk too large for AES-GCM",
                });
            }
        }
        self.next = index + 1;
        Ok(())
    }

    /// Checks that every chunk was sealed and that the plaintext matches the header's digest.
    pub fn finish(self) -> Result<(), ModelFormatError> {
        if self.next != self.count {
            return Err(ModelFormatError::Misuse {
                reason: "finish before the last chunk",
            });
        }
        let digest: [u8; DIGEST_LEN] = self.hasher.finalize().into();
        if digest != self.header.plaintext_sha384 {
            return Err(ModelFormatError::DigestMismatch);
        }
        Ok(())
    }
}

/// Streaming opener: feed each chunk in order with [`Self::open_chunk`], which decrypts into the
/// caller's buffer, then call [`Self::finish`]. The buffer holds authenticated chunks as they
/// arrive, but the model is only whole and checked once `finish` returns `Ok`; on any error the
/// caller must wipe and drop the buffer ([`open`] does).
///
/// Holds the data key schedule: wiped on drop, no `Debug`.
pub struct Opener {
    header: SealedModelHeader,
    aad: [u8; DIGEST_LEN],
    cipher: Aes256Gcm,
    next: u32,
    count: u32,
    hasher: Sha384,
    failed: bool,
}

/// Both openers bind the chunks to the exact header bytes (they are the AAD), so `header_bytes`
/// must be the exact file prefix `header` was parsed from. Returns the header parsed from them.
pub(crate) fn check_header_bytes(
    header: &SealedModelHeader,
    header_bytes: &[u8],
) -> Result<SealedModelHeader, ModelFormatError> {
    let (parsed, used) = parse_header(header_bytes)?;
    if used != header_bytes.len() || parsed != *header {
        return Err(ModelFormatError::Misuse {
            reason: "header bytes do not match the header",
        });
    }
    Ok(parsed)
}

impl Opener {
    /// `header_bytes` is the exact file prefix `header` was parsed from (the first
    /// `header_total_len` bytes returned by [`parse_header`]).
    pub fn new(
        header: &SealedModelHeader,
        header_bytes: &[u8],
        data_key: &[u8; DATA_KEY_LEN],
    ) -> Result<Opener, ModelFormatError> {
        let parsed = check_header_bytes(header, header_bytes)?;
        Ok(Opener {
            header: parsed,
            aad: chunk_aad(header_bytes),
            cipher: cipher(data_key),
            next: 0,
            count: header.chunk_count()?,
            hasher: Sha384::new(),
            failed: false,
        })
    }

    /// An empty buffer with room for the whole plaintext, so that [`Self::open_chunk`] never
    /// reallocates (a reallocation would leave an unwiped copy behind).
    ///
    /// This allocates `plaintext_len` (at most [`crate::MAX_MODEL_LEN`]) from a header that no
    /// tag has vouched for yet: callers streaming from an untrusted source should first check it
    /// against their own memory budget or the announced file length. [`open`] checks it against
    /// the length of the file it holds.
    pub fn output_buffer(&self) -> Result<Zeroizing<Vec<u8>>, ModelFormatError> {
        let len =
            usize::try_from(self.header.plaintext_len).map_err(|_| ModelFormatError::TooLarge {
                len: self.header.plaintext_len,
                max: crate::MAX_MODEL_LEN,
            })?;
        Ok(Zeroizing::new(Vec::with_capacity(len)))
    }

    /// Ciphertext length (plaintext and tag) of the next expected chunk; `None` once all are in.
    pub fn next_chunk_len(&self) -> Option<usize> {
        if self.next >= self.count || self.failed {
            return None;
        }
        self.header
            .chunk_plaintext_len(self.next)
            .ok()
            .map(|n| n + TAG_LEN)
    }

    /// Authenticates and decrypts the next chunk, appending its plaintext to `out`. `out` must
    /// have room for the rest of the model (see [`Self::output_buffer`]) unless it is empty.
    /// After an error the opener refuses further chunks.
    pub fn open_chunk(
        &mut self,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ModelFormatError> {
        if self.failed {
            return Err(ModelFormatError::Misuse {
                reason: "opener used after a failure",
            });
        }
        let result = self.open_chunk_inner(ciphertext, out);
        self.failed = result.is_err();
        result
    }

    fn open_chunk_inner(
        &mut self,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ModelFormatError> {
        if self.next >= self.count {
            return Err(ModelFormatError::TrailingData);
        }
        let index = self.next;
        let expected = self.header.chunk_plaintext_len(index)?;
        let (body, tag) = ciphertext
            .split_last_chunk::<TAG_LEN>()
            .ok_or(ModelFormatError::Truncated)?;
        if body.len() < expected {
            return Err(ModelFormatError::Truncated);
        }
        if body.len() > expected {
            return Err(ModelFormatError::TrailingData);
        }
        self.reserve(out)?;
        let start = out.len();
        out.extend_from_slice(body);
        let last = index + 1 == self.count;
        let nonce = chunk_nonce(&self.header.nonce_prefix, index, last);
        let opened = match out.get_mut(start..) {
            Some(region) => self
                .cipher
                .decrypt_inout_detached(&nonce, &self.aad, region.into(), &Tag::from(*tag))
                .is_ok(),
            None => false,
        };
        let region = out.get_mut(start..).unwrap_or_default();
        if !opened {
            region.zeroize();
            out.truncate(start);
            return Err(ModelFormatError::ChunkAuthFailed { index });
        }
        self.hasher.update(&*region);
        self.next = index + 1;
        Ok(expected)
    }

    /// Makes room for the rest of the model once, while `out` holds no plaintext yet.
    fn reserve(&self, out: &mut Vec<u8>) -> Result<(), ModelFormatError> {
        let remaining = self.remaining_plaintext()?;
        if out.capacity() - out.len() >= remaining {
            return Ok(());
        }
        if !out.is_empty() {
            return Err(ModelFormatError::Misuse {
                reason: "output buffer would have to move; preallocate with output_buffer()",
            });
        }
        out.reserve_exact(remaining);
        Ok(())
    }

    fn remaining_plaintext(&self) -> Result<usize, ModelFormatError> {
        let done = u64::from(self.next) * u64::from(self.header.chunk_size);
        let remaining = self.header.plaintext_len.saturating_sub(done);
        usize::try_from(remaining).map_err(|_| ModelFormatError::TooLarge {
            len: self.header.plaintext_len,
            max: crate::MAX_MODEL_LEN,
        })
    }

    /// Checks that every chunk arrived and that the plaintext's SHA-384 matches the header. Only
    /// after `Ok` is the caller's buffer the model.
    pub fn finish(self) -> Result<(), ModelFormatError> {
        if self.failed {
            return Err(ModelFormatError::Misuse {
                reason: "opener used after a failure",
            });
        }
        if self.next != self.count {
            return Err(ModelFormatError::Truncated);
        }
        let digest: [u8; DIGEST_LEN] = self.hasher.finalize().into();
        // Not secret (the digest is in the header), so a plain comparison is fine.
        if digest != self.header.plaintext_sha384 {
            return Err(ModelFormatError::DigestMismatch);
        }
        Ok(())
    }
}

/// Opens a whole sealed model held in memory. Returns the plaintext only after every tag and the
/// digest check pass; on failure the partial plaintext is wiped.
pub fn open(
    file: &[u8],
    data_key: &[u8; DATA_KEY_LEN],
) -> Result<Zeroizing<Vec<u8>>, ModelFormatError> {
    let (header, header_len) = parse_header(file)?;
    // Length checked before allocating: the one allocation is smaller than `file`.
    let expected = header.sealed_len(header_len)?;
    match (file.len() as u64).cmp(&expected) {
        std::cmp::Ordering::Less => return Err(ModelFormatError::Truncated),
        std::cmp::Ordering::Greater => return Err(ModelFormatError::TrailingData),
        std::cmp::Ordering::Equal => {}
    }
    let (header_bytes, mut rest) = file
        .split_at_checked(header_len)
        .ok_or(ModelFormatError::Truncated)?;
    let mut opener = Opener::new(&header, header_bytes, data_key)?;
    // Wiped on drop, including on every early return below.
    let mut out = opener.output_buffer()?;
    while let Some(len) = opener.next_chunk_len() {
        let (chunk, tail) = rest
            .split_at_checked(len)
            .ok_or(ModelFormatError::Truncated)?;
        opener.open_chunk(chunk, &mut out)?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(ModelFormatError::TrailingData);
    }
    opener.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIN_CHUNK_SIZE;

    const KEY: [u8; 32] = [0x17; 32];

    /// A two-chunk file whose last chunk is sealed with the given flag, everything else honest.
    fn two_chunks_with_last_flag(flag: bool) -> Vec<u8> {
        let cs = MIN_CHUNK_SIZE as usize;
        let pt = vec![0x5Au8; 2 * cs];
        let header = SealedModelHeader {
            model_id: "m".into(),
            kms_key_id: "k".into(),
            encrypted_data_key: vec![1],
            plaintext_len: pt.len() as u64,
            plaintext_sha384: Sha384::digest(&pt).into(),
            chunk_size: MIN_CHUNK_SIZE,
            nonce_prefix: [3; NONCE_PREFIX_LEN],
        };
        let mut sealer = Sealer::new(&header, &KEY).unwrap();
        let mut file = sealer.header_bytes().to_vec();
        file.extend(sealer.seal_chunk(&pt[..cs], false).unwrap());
        let mut body = pt[cs..].to_vec();
        let nonce = chunk_nonce(&header.nonce_prefix, 1, flag);
        let tag = sealer
            .cipher
            .encrypt_inout_detached(&nonce, &sealer.aad, body.as_mut_slice().into())
            .unwrap();
        file.extend_from_slice(&body);
        file.extend_from_slice(&tag);
        file
    }

    #[test]
    fn chunk_sealed_as_not_last_fails_in_last_position() {
        // Same key, AAD, counter and bytes: only the STREAM last flag differs.
        assert!(open(&two_chunks_with_last_flag(true), &KEY).is_ok());
        assert_eq!(
            open(&two_chunks_with_last_flag(false), &KEY),
            Err(ModelFormatError::ChunkAuthFailed { index: 1 })
        );
    }

    #[test]
    fn nonce_is_prefix_counter_and_flag() {
        let n = chunk_nonce(&[1, 2, 3, 4, 5, 6, 7], 0x0A0B0C0D, true);
        assert_eq!(
            n.as_slice(),
            &[1, 2, 3, 4, 5, 6, 7, 0x0A, 0x0B, 0x0C, 0x0D, 1]
        );
        let n = chunk_nonce(&[0; 7], 1, false);
        assert_eq!(n.as_slice(), &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    }
}
