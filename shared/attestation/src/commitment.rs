//! The enclave's commitment in the attestation `user_data`: what it serves, bound to the document
//! that the NSM signs.
//!
//! `user_data = PROTOCOL_VERSION (u16 big-endian) || SHA-384(manifest_bytes)`, 50 bytes. The enclave
//! sends the manifest's exact encoded bytes next to the document; the client hashes what it
//! received *before* decoding it, so that the decoded manifest is the one the enclave committed to.
//!
//! What it does not do: check the document itself (see [`crate::verify`]); a commitment is only
//! meaningful in a document whose signature and chain have been verified.

use sealed_wire::PROTOCOL_VERSION;
use sealed_wire::limits::MAX_MANIFEST_LEN;
use sealed_wire::manifest::{ManifestError, ModelManifest};
use sha2::{Digest, Sha384};

/// Length of the commitment: 2-byte version and a 48-byte SHA-384.
pub const USER_DATA_LEN: usize = 2 + 48;

/// Why a commitment did not hold.
#[derive(Debug, thiserror::Error)]
pub enum CommitmentError {
    #[error("the attestation document carries no user_data commitment")]
    Missing,
    #[error("user_data is {len} bytes, expected {expected}")]
    WrongLength { len: usize, expected: usize },
    #[error("user_data commits to protocol version {found}, this client speaks {expected}")]
    UnsupportedVersion { found: u16, expected: u16 },
    #[error("manifest of {len} bytes exceeds the maximum {max}")]
    ManifestTooLarge { len: usize, max: usize },
    #[error("the manifest does not match the digest committed in user_data")]
    DigestMismatch,
    #[error("the committed manifest is invalid: {0}")]
    Manifest(#[from] ManifestError),
}

impl CommitmentError {
    /// Stable name of the failed check, like [`crate::VerifyError::check`].
    pub fn check(&self) -> &'static str {
        match self {
            CommitmentError::Missing | CommitmentError::WrongLength { .. } => "commitment_format",
            CommitmentError::UnsupportedVersion { .. } => "commitment_version",
            CommitmentError::ManifestTooLarge { .. } | CommitmentError::DigestMismatch => {
                "commitment_digest"
            }
            CommitmentError::Manifest(_) => "manifest",
        }
    }
}

/// The `user_data` the enclave puts in its attestation requests.
pub fn user_data(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(USER_DATA_LEN);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&Sha384::digest(manifest_bytes));
    out
}

/// Checks `user_data` against the manifest bytes the enclave sent, then decodes them.
pub fn verify(user_data: &[u8], manifest_bytes: &[u8]) -> Result<ModelManifest, CommitmentError> {
    let (version, digest) = match user_data.split_first_chunk::<2>() {
        Some((version, digest)) if user_data.len() == USER_DATA_LEN => (version, digest),
        _ => {
            return Err(CommitmentError::WrongLength {
                len: user_data.len(),
                expected: USER_DATA_LEN,
            });
        }
    };
    let found = u16::from_be_bytes(*version);
    if found != PROTOCOL_VERSION {
        return Err(CommitmentError::UnsupportedVersion {
            found,
            expected: PROTOCOL_VERSION,
        });
    }
    if manifest_bytes.len() > MAX_MANIFEST_LEN {
        return Err(CommitmentError::ManifestTooLarge {
            len: manifest_bytes.len(),
            max: MAX_MANIFEST_LEN,
        });
    }
    if Sha384::digest(manifest_bytes).as_slice() != digest {
        return Err(CommitmentError::DigestMismatch);
    }
    Ok(ModelManifest::decode(manifest_bytes)?)
}

/// [`verify`] for a document's optional `user_data`: a document without one fails.
pub fn verify_document(
    user_data: Option<&[u8]>,
    manifest_bytes: &[u8],
) -> Result<ModelManifest, CommitmentError> {
    verify(user_data.ok_or(CommitmentError::Missing)?, manifest_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Vec<u8> {
        let mut m = ModelManifest::default();
        m.insert("mnist".into(), vec![0xab; 48]);
        m.insert("resnet".into(), vec![0xcd; 48]);
        m.encode().unwrap()
    }

    #[test]
    fn user_data_is_version_then_sha384() {
        let ud = user_data(b"abc");
        assert_eq!(ud.len(), USER_DATA_LEN);
        assert_eq!(&ud[..2], &PROTOCOL_VERSION.to_be_bytes());
        // FIPS 180-2 Appendix D.1: SHA-384("abc").
        assert_eq!(
            hex::encode(&ud[2..]),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7"
        );
    }

    #[test]
    fn verify_round_trips_and_decodes() {
        let bytes = manifest();
        let m = verify(&user_data(&bytes), &bytes).unwrap();
        assert_eq!(m.models.len(), 2);
        assert_eq!(m.models[0].model_id, "mnist");
    }

    #[test]
    fn rejects_other_manifest() {
        let bytes = manifest();
        let mut other = ModelManifest::default();
        other.insert("mnist".into(), vec![0xab; 48]);
        let other = other.encode().unwrap();
        let err = verify(&user_data(&bytes), &other).unwrap_err();
        assert!(matches!(err, CommitmentError::DigestMismatch));
        assert_eq!(err.check(), "commitment_digest");
    }

    #[test]
    fn rejects_wrong_length_and_version() {
        let bytes = manifest();
        let ud = user_data(&bytes);
        assert!(matches!(
            verify(&ud[..49], &bytes),
            Err(CommitmentError::WrongLength { len: 49, .. })
        ));
        assert!(matches!(
            verify(&[], &bytes),
            Err(CommitmentError::WrongLength { len: 0, .. })
        ));
        let mut v2 = ud.clone();
        v2[1] ^= 0x03;
        assert!(matches!(
            verify(&v2, &bytes),
            Err(CommitmentError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn rejects_committed_but_invalid_manifest() {
        let garbage = b"not cbor at all".to_vec();
        let err = verify(&user_data(&garbage), &garbage).unwrap_err();
        assert!(matches!(err, CommitmentError::Manifest(_)));
    }

    #[test]
    fn verify_document_requires_user_data() {
        let bytes = manifest();
        assert!(matches!(
            verify_document(None, &bytes),
            Err(CommitmentError::Missing)
        ));
        verify_document(Some(&user_data(&bytes)), &bytes).unwrap();
    }
}
