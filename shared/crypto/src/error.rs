//! Errors of the sealed channel, one type per operation.
//!
//! [`OpenError`] is deliberately opaque: a wrong key, a wrong key id, a tampered or truncated
//! message and an unknown suite all look the same, so that neither the host nor a client can use
//! the enclave as an oracle. [`HeaderError`] gives detail about the *cleartext* request header
//! only, for operators and for the `unsupported_key_config` code.

/// A sealed request or response could not be opened. Says nothing about why, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed message could not be opened")]
pub struct OpenError;

/// Sealing failed. Nothing here depends on secret data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The plaintext is larger than [`crate::MAX_PLAINTEXT_LEN`].
    #[error("plaintext of {len} bytes exceeds the maximum of {max} bytes")]
    PlaintextTooLarge { len: usize, max: usize },
    /// The recipient public key gave an all-zero X25519 shared secret (a low-order point),
    /// which RFC 9180 §7.1.4 requires senders to refuse.
    #[error("the recipient public key is not a usable X25519 key")]
    InvalidPublicKey,
    /// An in-place seal was given a buffer shorter than the room it needs in front of the
    /// plaintext ([`crate::REQUEST_PREFIX_LEN`] or [`crate::RESPONSE_NONCE_LEN`]): a caller bug.
    #[error("buffer of {len} bytes has less than the {min} bytes of room a sealed message needs")]
    MissingHeadroom { len: usize, min: usize },
    /// The AEAD or the HPKE exporter failed; unreachable with the sizes this crate allows.
    #[error("internal sealing failure")]
    Internal,
}

/// A key configuration (RFC 9458 §3) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    /// The encoding is not exactly [`crate::KEY_CONFIG_LEN`] bytes.
    #[error("key configuration is {len} bytes, expected {expected}")]
    WrongLength { len: usize, expected: usize },
    /// The KEM is not DHKEM(X25519, HKDF-SHA256).
    #[error("unsupported KEM {kem_id:#06x}")]
    UnsupportedKem { kem_id: u16 },
    /// The symmetric suite list is not exactly one entry (4 bytes).
    #[error("symmetric suite list is {len} bytes, expected 4")]
    UnexpectedSuitesLength { len: u16 },
    /// The one symmetric suite is not HKDF-SHA256 / AES-256-GCM.
    #[error("unsupported symmetric suite: KDF {kdf_id:#06x}, AEAD {aead_id:#06x}")]
    UnsupportedSuite { kdf_id: u16, aead_id: u16 },
}

/// The cleartext header of an encapsulated request (RFC 9458 §4.1) names a key or suite this
/// server does not serve, or the request cannot be one at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than a header, an `enc` and a tag.
    #[error("encapsulated request of {len} bytes is shorter than the minimum of {min}")]
    Truncated { len: usize, min: usize },
    /// Longer than [`crate::MAX_ENCAPSULATED_REQUEST_LEN`].
    #[error("encapsulated request of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// The key id is not this server's.
    #[error("unknown key id {key_id}, this server's is {expected}")]
    UnknownKeyId { key_id: u8, expected: u8 },
    /// The KEM, KDF or AEAD id is not the one suite.
    #[error("unsupported suite: KEM {kem_id:#06x}, KDF {kdf_id:#06x}, AEAD {aead_id:#06x}")]
    UnsupportedSuite {
        kem_id: u16,
        kdf_id: u16,
        aead_id: u16,
    },
}
