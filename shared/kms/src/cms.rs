//! KMS `CiphertextForRecipient`: the CMS EnvelopedData (RFC 5652 §6) that KMS returns when a
//! request carries a `Recipient` attestation document (nitro-facts.md §3.1).
//!
//! What it does: [`parse`] checks the exact structure AWS emits — ContentInfo(id-envelopedData) →
//! EnvelopedData v2 → one KeyTransRecipientInfo v2 addressed by subjectKeyIdentifier, RSAES-OAEP
//! with SHA-256 and MGF1-SHA-256 (RFC 4055 §4.1) → AES-256-CBC content (RFC 3565), primitive or
//! constructed — and the same fields AWS's own C client checks (aws-nitro-enclaves-sdk-c
//! `source/cms.c`); [`decrypt`] unwraps the content key and the content; [`build_ciphertext_for_recipient`] produces the
//! same structure for the mock KMS.
//!
//! What it does not do: other recipient kinds, other algorithms, signed or authenticated data. The
//! subjectKeyIdentifier is returned but not checked: what KMS computes it over is not documented
//! (nitro-facts.md §8). CBC gives no integrity by itself; the integrity of what is unwrapped here
//! rests on RSA-OAEP's own check of the content key and on the caller's use of the result (a data
//! key that must then open AES-GCM chunks).

use aes::Aes256;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use rand_core::TryCryptoRng;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ber::{
    self, BerError, CONSTRUCTED, Element, Reader, TAG_INTEGER, TAG_NULL, TAG_OCTET_STRING, TAG_OID,
    TAG_SEQUENCE, TAG_SET,
};

// Object identifiers, content octets only (X.690 §8.19).
/// id-envelopedData 1.2.840.113549.1.7.3 (RFC 5652 §6.1).
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// id-data 1.2.840.113549.1.7.1 (RFC 5652 §4).
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// id-RSAES-OAEP 1.2.840.113549.1.1.7 (RFC 4055 §4.1).
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// id-mgf1 1.2.840.113549.1.1.8 (RFC 4055 §2.2).
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// id-sha256 2.16.840.1.101.3.4.2.1 (RFC 5754 §2.2).
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-aes256-CBC 2.16.840.1.101.3.4.1.42 (RFC 3565 §4.1).
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// Context-specific tags used by the structure.
const CTX0_CONSTRUCTED: u8 = 0xa0;
const CTX1_CONSTRUCTED: u8 = 0xa1;
const CTX0_PRIMITIVE: u8 = 0x80;

/// AES block and CBC IV size.
pub const IV_LEN: usize = 16;
/// AES-256 key size.
pub const CONTENT_KEY_LEN: usize = 32;
/// Largest RSA-encrypted key we accept: a 4096-bit modulus. KMS requires RSA-2048 (256 bytes).
pub const MAX_ENCRYPTED_KEY_LEN: usize = 512;
/// Largest subjectKeyIdentifier we accept. KMS sends 32 bytes.
pub const MAX_SKI_LEN: usize = 64;
/// Largest plaintext [`build_ciphertext_for_recipient`] wraps: the KMS `Plaintext` limit (4096 bytes).
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// Largest encrypted content we accept: a KMS plaintext plus one padding block.
pub const MAX_CONTENT_LEN: usize = MAX_PLAINTEXT_LEN + IV_LEN;
/// Segment size of the constructed `encryptedContent` that [`build_ciphertext_for_recipient`] emits.
const BUILD_SEGMENT_LEN: usize = 1024;

/// Why a `CiphertextForRecipient` was rejected. These describe public structure only.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CmsError {
    #[error("malformed BER: {0}")]
    Ber(#[from] BerError),
    #[error("content type is not id-envelopedData")]
    NotEnvelopedData,
    #[error("unsupported {field} version")]
    UnsupportedVersion { field: &'static str },
    #[error("expected exactly one recipient")]
    RecipientCount,
    #[error("unsupported key encryption algorithm or parameters")]
    UnsupportedKeyEncryption,
    #[error("encrypted content type is not id-data")]
    NotData,
    #[error("unsupported content encryption algorithm or parameters")]
    UnsupportedContentEncryption,
    #[error("field {field} has invalid length {len}")]
    BadLength { field: &'static str, len: usize },
}

/// The parts of a KMS `CiphertextForRecipient` needed to decrypt it. Nothing here is secret: the
/// content key is RSA-encrypted to the enclave's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopedRecipient {
    /// KeyTransRecipientInfo.rid subjectKeyIdentifier (32 bytes from KMS; meaning undocumented).
    pub subject_key_id: Vec<u8>,
    /// RSAES-OAEP-encrypted AES-256 content key.
    pub encrypted_key: Vec<u8>,
    /// AES-256-CBC initialisation vector.
    pub iv: [u8; IV_LEN],
    /// AES-256-CBC ciphertext, segments concatenated.
    pub encrypted_content: Vec<u8>,
}

/// Decryption failed. Deliberately opaque (STYLE.md "Decryption failures are opaque"): which step
/// failed — RSA-OAEP, key length or CBC padding — is not revealed, so the error is no oracle.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("CMS decryption failed")]
pub struct DecryptError;

/// Why [`build_ciphertext_for_recipient`] could not produce a `CiphertextForRecipient`.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    #[error("plaintext of {len} bytes exceeds the {max}-byte limit")]
    PlaintextTooLarge { len: usize, max: usize },
    #[error("subjectKeyIdentifier of {len} bytes exceeds the {max}-byte limit")]
    SkiTooLarge { len: usize, max: usize },
    #[error("random number generator failed")]
    Rng,
    #[error("RSA-OAEP encryption failed")]
    Rsa,
    #[error("AES-256-CBC encryption failed")]
    Cipher,
}

/// Parses a KMS `CiphertextForRecipient` (the raw bytes, after base64 decoding).
pub fn parse(input: &[u8]) -> Result<EnvelopedRecipient, CmsError> {
    // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content } (RFC 5652 §3)
    let mut top = Reader::new(input)?;
    let content_info = top.expect(TAG_SEQUENCE)?;
    top.finish()?;
    let mut ci = content_info.children()?;
    if ci.expect(TAG_OID)?.content != OID_ENVELOPED_DATA {
        return Err(CmsError::NotEnvelopedData);
    }
    let explicit = ci.expect(CTX0_CONSTRUCTED)?;
    ci.finish()?;
    let mut wrapper = explicit.children()?;
    let enveloped = wrapper.expect(TAG_SEQUENCE)?;
    wrapper.finish()?;

    // EnvelopedData (RFC 5652 §6.1). Version 2 because the recipient is addressed by SKI
    // (§6.1: version 2 when a KeyTransRecipientInfo has version 2); sdk-c checks the same.
    // originatorInfo and unprotectedAttrs are absent in KMS output and rejected here.
    let mut ed = enveloped.children()?;
    expect_version(&mut ed, 2, "EnvelopedData")?;
    let recipients = ed.expect(TAG_SET)?;
    let recipient = parse_recipient_infos(&recipients)?;
    let eci = ed.expect(TAG_SEQUENCE)?;
    ed.finish()?;

    // EncryptedContentInfo (RFC 5652 §6.1).
    let mut eci = eci.children()?;
    if eci.expect(TAG_OID)?.content != OID_DATA {
        return Err(CmsError::NotData);
    }
    let iv = parse_aes256_cbc(&eci.expect(TAG_SEQUENCE)?)?;
    // encryptedContent [0] IMPLICIT OCTET STRING: primitive (0x80) or constructed (0xa0).
    let content = eci.next()?.ok_or(CmsError::BadLength {
        field: "encryptedContent",
        len: 0,
    })?;
    if content.tag & !CONSTRUCTED != CTX0_PRIMITIVE {
        return Err(CmsError::Ber(BerError::UnexpectedTag {
            found: content.tag,
            expected: CTX0_PRIMITIVE,
        }));
    }
    eci.finish()?;
    let mut encrypted_content = Vec::new();
    content.octets_into(&mut encrypted_content, MAX_CONTENT_LEN)?;
    // CBC ciphertext is whole blocks, at least one (PKCS#7 always adds padding).
    if encrypted_content.is_empty() || encrypted_content.len() % IV_LEN != 0 {
        return Err(CmsError::BadLength {
            field: "encryptedContent",
            len: encrypted_content.len(),
        });
    }

    Ok(EnvelopedRecipient {
        subject_key_id: recipient.0,
        encrypted_key: recipient.1,
        iv,
        encrypted_content,
    })
}

/// `RecipientInfos SET` with exactly one KeyTransRecipientInfo v2 (RFC 5652 §6.2.1).
/// Returns (subjectKeyIdentifier, encryptedKey).
fn parse_recipient_infos(set: &Element<'_>) -> Result<(Vec<u8>, Vec<u8>), CmsError> {
    let mut infos = set.children()?;
    let ktri = infos.next()?.ok_or(CmsError::RecipientCount)?;
    if infos.next()?.is_some() {
        return Err(CmsError::RecipientCount);
    }
    if ktri.tag != TAG_SEQUENCE {
        // Other RecipientInfo choices are tagged [1]..[4].
        return Err(CmsError::RecipientCount);
    }
    let mut k = ktri.children()?;
    expect_version(&mut k, 2, "KeyTransRecipientInfo")?;
    // rid: subjectKeyIdentifier [0] IMPLICIT OCTET STRING (version 2 means SKI, §6.2.1).
    let rid = k.next()?.ok_or(BerError::Truncated)?;
    if rid.tag & !CONSTRUCTED != CTX0_PRIMITIVE {
        return Err(CmsError::UnsupportedVersion {
            field: "KeyTransRecipientInfo rid",
        });
    }
    let mut ski = Vec::new();
    rid.octets_into(&mut ski, MAX_SKI_LEN)?;
    if ski.is_empty() {
        return Err(CmsError::BadLength {
            field: "subjectKeyIdentifier",
            len: 0,
        });
    }
    parse_rsaes_oaep_sha256(&k.expect(TAG_SEQUENCE)?)?;
    let mut encrypted_key = Vec::new();
    let ek = k.next()?.ok_or(BerError::Truncated)?;
    if ek.tag & !CONSTRUCTED != TAG_OCTET_STRING {
        return Err(CmsError::Ber(BerError::UnexpectedTag {
            found: ek.tag,
            expected: TAG_OCTET_STRING,
        }));
    }
    ek.octets_into(&mut encrypted_key, MAX_ENCRYPTED_KEY_LEN)?;
    if encrypted_key.is_empty() {
        return Err(CmsError::BadLength {
            field: "encryptedKey",
            len: 0,
        });
    }
    k.finish()?;
    Ok((ski, encrypted_key))
}

fn expect_version(r: &mut Reader<'_>, version: u8, field: &'static str) -> Result<(), CmsError> {
    // INTEGER contents are minimal even in BER (X.690 §8.3.2), so one octet.
    if r.expect(TAG_INTEGER)?.content != [version] {
        return Err(CmsError::UnsupportedVersion { field });
    }
    Ok(())
}

/// keyEncryptionAlgorithm: id-RSAES-OAEP with RSAES-OAEP-params { hashFunc [0] sha256,
/// maskGenFunc [1] mgf1(sha256), pSourceFunc [2] absent (empty label) } (RFC 4055 §4.1). The
/// defaults are SHA-1, so both hash fields must be present.
fn parse_rsaes_oaep_sha256(alg: &Element<'_>) -> Result<(), CmsError> {
    let mut a = alg.children()?;
    if a.expect(TAG_OID)?.content != OID_RSAES_OAEP {
        return Err(CmsError::UnsupportedKeyEncryption);
    }
    let params = a.expect(TAG_SEQUENCE)?;
    a.finish()?;
    let mut p = params.children()?;
    let hash = p
        .optional(CTX0_CONSTRUCTED)?
        .ok_or(CmsError::UnsupportedKeyEncryption)?;
    expect_sha256_in(&hash)?;
    let mgf = p
        .optional(CTX1_CONSTRUCTED)?
        .ok_or(CmsError::UnsupportedKeyEncryption)?;
    let mut m = mgf.children()?;
    let mgf_alg = m.expect(TAG_SEQUENCE)?;
    m.finish()?;
    let mut ma = mgf_alg.children()?;
    if ma.expect(TAG_OID)?.content != OID_MGF1 {
        return Err(CmsError::UnsupportedKeyEncryption);
    }
    expect_sha256_alg(&ma.expect(TAG_SEQUENCE)?)?;
    ma.finish()?;
    // A pSourceFunc (a label) would change the OAEP hash input; KMS uses none.
    p.finish().map_err(|_| CmsError::UnsupportedKeyEncryption)?;
    Ok(())
}

/// `[n] EXPLICIT AlgorithmIdentifier` holding SHA-256.
fn expect_sha256_in(explicit: &Element<'_>) -> Result<(), CmsError> {
    let mut e = explicit.children()?;
    let alg = e.expect(TAG_SEQUENCE)?;
    e.finish()?;
    expect_sha256_alg(&alg)
}

/// AlgorithmIdentifier { id-sha256, NULL or absent } (RFC 5754 §2: both forms occur).
fn expect_sha256_alg(alg: &Element<'_>) -> Result<(), CmsError> {
    let mut a = alg.children()?;
    if a.expect(TAG_OID)?.content != OID_SHA256 {
        return Err(CmsError::UnsupportedKeyEncryption);
    }
    if let Some(null) = a.optional(TAG_NULL)?
        && !null.content.is_empty()
    {
        return Err(CmsError::UnsupportedKeyEncryption);
    }
    a.finish()?;
    Ok(())
}

/// contentEncryptionAlgorithm { id-aes256-CBC, AES-IV OCTET STRING (16) } (RFC 3565 §4.1).
fn parse_aes256_cbc(alg: &Element<'_>) -> Result<[u8; IV_LEN], CmsError> {
    let mut a = alg.children()?;
    if a.expect(TAG_OID)?.content != OID_AES256_CBC {
        return Err(CmsError::UnsupportedContentEncryption);
    }
    let iv = a.expect(TAG_OCTET_STRING)?;
    a.finish()?;
    iv.content.try_into().map_err(|_| CmsError::BadLength {
        field: "IV",
        len: iv.content.len(),
    })
}

/// RSA modulus size KMS requires of a recipient key: "must include a RSA2048 key encoded as a DER
/// SubjectPublicKeyInfo" (aws-nitro-enclaves-sdk-c `docs/kms-apis/RecipientRequest.md`).
pub const RECIPIENT_KEY_BYTES: usize = 256;

/// Why a recipient public key was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKeyError {
    #[error("recipient public key is not a DER RSA SubjectPublicKeyInfo")]
    NotRsaSpki,
    #[error("recipient RSA key has a {bits}-bit modulus, 2048 required")]
    NotRsa2048 { bits: usize },
    #[error("recipient public key cannot be encoded")]
    Encoding,
}

/// Reads the attestation document's `public_key` (DER SubjectPublicKeyInfo) as the RSA-2048 key
/// KMS encrypts to. The mock KMS uses this; so can the enclave to check its own document.
pub fn recipient_public_key_from_spki(spki_der: &[u8]) -> Result<PublicKey, RecipientKeyError> {
    let key =
        PublicKey::from_public_key_der(spki_der).map_err(|_| RecipientKeyError::NotRsaSpki)?;
    if key.size() != RECIPIENT_KEY_BYTES {
        return Err(RecipientKeyError::NotRsa2048 {
            bits: key.size() * 8,
        });
    }
    Ok(key)
}

/// The DER SubjectPublicKeyInfo of `key`, for the attestation request's `public_key`.
pub fn recipient_public_key_spki(key: &PublicKey) -> Result<Vec<u8>, RecipientKeyError> {
    key.to_public_key_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|_| RecipientKeyError::Encoding)
}

/// A 32-byte subjectKeyIdentifier for the mock KMS: SHA-256 of the SPKI DER. What AWS hashes is not
/// documented (nitro-facts.md §8); nothing checks this value, it only fills the field with the
/// length AWS uses.
pub fn subject_key_id(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// Decrypts the content: RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) unwraps the 32-byte
/// AES key, then AES-256-CBC with PKCS#7 unpadding (sdk-c `aws_cms_cipher_decrypt`).
///
/// `rng` blinds the RSA private operation (rsa 0.10 is constant-time; blinding is defence in
/// depth against timing side channels such as Marvin, RUSTSEC-2023-0071).
pub fn decrypt<R: TryCryptoRng + ?Sized>(
    recipient: &EnvelopedRecipient,
    rsa_private_key: &PrivateKey,
    rng: &mut R,
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let content_key = Zeroizing::new(
        rsa_private_key
            .oaep_decrypt_with_rng::<Sha256, _>(rng, &recipient.encrypted_key)
            .map_err(|_| DecryptError)?,
    );
    if content_key.len() != CONTENT_KEY_LEN {
        return Err(DecryptError);
    }
    let cipher = cbc::Decryptor::<Aes256>::new_from_slices(&content_key, &recipient.iv)
        .map_err(|_| DecryptError)?;
    let mut buf = Zeroizing::new(recipient.encrypted_content.clone());
    let len = cipher
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| DecryptError)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Builds a `CiphertextForRecipient` for `plaintext` exactly as KMS does (nitro-facts.md §3.1):
/// a fresh AES-256 key and IV from `rng`, the key RSAES-OAEP-encrypted to `recipient_public_key`,
/// BER with indefinite lengths on the outer and content layers, and the content as a constructed
/// `[0]` of OCTET STRING segments (like the first AWS vector).
pub fn build_ciphertext_for_recipient<R: TryCryptoRng + ?Sized>(
    plaintext: &[u8],
    recipient_public_key: &PublicKey,
    subject_key_id: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, BuildError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(BuildError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    if subject_key_id.len() > MAX_SKI_LEN {
        return Err(BuildError::SkiTooLarge {
            len: subject_key_id.len(),
            max: MAX_SKI_LEN,
        });
    }
    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    rng.try_fill_bytes(content_key.as_mut_slice())
        .map_err(|_| BuildError::Rng)?;
    let mut iv = [0u8; IV_LEN];
    rng.try_fill_bytes(&mut iv).map_err(|_| BuildError::Rng)?;
    let encrypted_key = recipient_public_key
        .oaep_encrypt_with_rng::<Sha256, _>(rng, content_key.as_slice())
        .map_err(|_| BuildError::Rsa)?;
    let cipher = cbc::Encryptor::<Aes256>::new_from_slices(content_key.as_slice(), &iv)
        .map_err(|_| BuildError::Cipher)?;
    // PKCS#7 always adds 1..=16 bytes; the buffer holds plaintext, so it is zeroized.
    let mut buf = Zeroizing::new(vec![0u8; plaintext.len() + IV_LEN]);
    let prefix = buf.get_mut(..plaintext.len()).ok_or(BuildError::Cipher)?;
    prefix.copy_from_slice(plaintext);
    let encrypted_content = cipher
        .encrypt_padded::<Pkcs7>(&mut buf, plaintext.len())
        .map_err(|_| BuildError::Cipher)?
        .to_vec();

    let mut out = Vec::with_capacity(encrypted_content.len() + encrypted_key.len() + 256);
    ber::write_indefinite(&mut out, TAG_SEQUENCE, |o| {
        ber::write_definite(o, TAG_OID, OID_ENVELOPED_DATA);
        ber::write_indefinite(o, CTX0_CONSTRUCTED, |o| {
            ber::write_indefinite(o, TAG_SEQUENCE, |o| {
                ber::write_definite(o, TAG_INTEGER, &[2]);
                let ktri = ktri_der(subject_key_id, &encrypted_key);
                let mut set = Vec::with_capacity(ktri.len() + 4);
                ber::write_definite(&mut set, TAG_SEQUENCE, &ktri);
                ber::write_definite(o, TAG_SET, &set);
                ber::write_indefinite(o, TAG_SEQUENCE, |o| {
                    ber::write_definite(o, TAG_OID, OID_DATA);
                    let mut alg = Vec::new();
                    ber::write_definite(&mut alg, TAG_OID, OID_AES256_CBC);
                    ber::write_definite(&mut alg, TAG_OCTET_STRING, &iv);
                    ber::write_definite(o, TAG_SEQUENCE, &alg);
                    ber::write_indefinite(o, CTX0_CONSTRUCTED, |o| {
                        for segment in encrypted_content.chunks(BUILD_SEGMENT_LEN) {
                            ber::write_definite(o, TAG_OCTET_STRING, segment);
                        }
                    });
                });
            });
        });
    });
    Ok(out)
}

/// KeyTransRecipientInfo contents, definite lengths as in the AWS vectors.
fn ktri_der(subject_key_id: &[u8], encrypted_key: &[u8]) -> Vec<u8> {
    let sha256 = {
        let mut v = Vec::new();
        ber::write_definite(&mut v, TAG_OID, OID_SHA256);
        ber::write_definite(&mut v, TAG_NULL, &[]);
        let mut alg = Vec::new();
        ber::write_definite(&mut alg, TAG_SEQUENCE, &v);
        alg
    };
    let mut params = Vec::new();
    ber::write_definite(&mut params, CTX0_CONSTRUCTED, &sha256);
    let mut mgf = Vec::new();
    ber::write_definite(&mut mgf, TAG_OID, OID_MGF1);
    mgf.extend_from_slice(&sha256);
    let mut mgf_alg = Vec::new();
    ber::write_definite(&mut mgf_alg, TAG_SEQUENCE, &mgf);
    ber::write_definite(&mut params, CTX1_CONSTRUCTED, &mgf_alg);
    let mut alg = Vec::new();
    ber::write_definite(&mut alg, TAG_OID, OID_RSAES_OAEP);
    ber::write_definite(&mut alg, TAG_SEQUENCE, &params);

    let mut k = Vec::new();
    ber::write_definite(&mut k, TAG_INTEGER, &[2]);
    ber::write_definite(&mut k, CTX0_PRIMITIVE, subject_key_id);
    ber::write_definite(&mut k, TAG_SEQUENCE, &alg);
    ber::write_definite(&mut k, TAG_OCTET_STRING, encrypted_key);
    k
}
