//! [`ModelFormatError`]: why a sealed model could not be parsed, sealed or opened.
//!
//! Variants carry sizes and chunk indices only, never model bytes, key material or the text of
//! the input: these errors reach the host's logs.

/// Why a sealed model could not be parsed, sealed or opened. Stable codes via [`Self::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelFormatError {
    /// The file does not start with [`crate::MAGIC`].
    #[error("not a sealed model (bad magic)")]
    BadMagic,
    /// The header declares a `format_version` this build does not read.
    #[error("unsupported sealed-model format version {version}")]
    UnsupportedVersion { version: u64 },
    /// The declared header length is over [`crate::MAX_HEADER_LEN`].
    #[error("sealed-model header of {len} bytes exceeds the maximum {max}")]
    HeaderTooLarge { len: u64, max: u64 },
    /// The header is not the strict CBOR map of format version 1.
    #[error("malformed sealed-model header: {reason}")]
    MalformedHeader { reason: &'static str },
    /// A header field is out of its bounds (e.g. an invalid model id or chunk size).
    #[error("invalid sealed-model header field `{field}`")]
    InvalidField { field: &'static str },
    /// The model is larger than [`crate::MAX_MODEL_LEN`].
    #[error("model of {len} bytes exceeds the maximum {max}")]
    TooLarge { len: u64, max: u64 },
    /// The input ends before the header or a chunk does, or chunks are missing.
    #[error("sealed model is truncated")]
    Truncated,
    /// Bytes follow the last chunk.
    #[error("trailing data after the last chunk")]
    TrailingData,
    /// Chunk `index` failed authentication: wrong key, edited header or chunk, reordered or
    /// relabelled chunks. Deliberately says nothing else (RFC 5116 §2.2: decryption failure is a
    /// single opaque outcome).
    #[error("chunk {index} failed authentication")]
    ChunkAuthFailed { index: u32 },
    /// Every chunk authenticated but the plaintext's SHA-384 differs from the header's.
    #[error("model digest does not match the header")]
    DigestMismatch,
    /// The caller used the streaming API out of order (wrong chunk length, chunk after the last,
    /// finish before the last chunk, output buffer that would have to move).
    #[error("sealed-model API misuse: {reason}")]
    Misuse { reason: &'static str },
    /// The system could not provide what opening needs (a thread for the pipelined digest).
    #[error("sealed-model resources unavailable: {reason}")]
    Resources { reason: &'static str },
}

impl ModelFormatError {
    /// The stable code for this error, safe to show to clients and to match on.
    pub fn code(&self) -> &'static str {
        match self {
            ModelFormatError::BadMagic
            | ModelFormatError::HeaderTooLarge { .. }
            | ModelFormatError::MalformedHeader { .. }
            | ModelFormatError::InvalidField { .. }
            | ModelFormatError::Truncated
            | ModelFormatError::TrailingData => "corrupt_file",
            ModelFormatError::UnsupportedVersion { .. } => "unsupported_version",
            ModelFormatError::TooLarge { .. } => "model_too_large",
            ModelFormatError::ChunkAuthFailed { .. } => "auth_failed",
            ModelFormatError::DigestMismatch => "digest_mismatch",
            ModelFormatError::Misuse { .. } | ModelFormatError::Resources { .. } => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case() {
        let cases = [
            (ModelFormatError::BadMagic, "corrupt_file"),
            (ModelFormatError::Truncated, "corrupt_file"),
            (ModelFormatError::TrailingData, "corrupt_file"),
            (
                ModelFormatError::UnsupportedVersion { version: 2 },
                "unsupported_version",
            ),
            (
                ModelFormatError::TooLarge { len: 1, max: 0 },
                "model_too_large",
            ),
            (
                ModelFormatError::ChunkAuthFailed { index: 3 },
                "auth_failed",
            ),
            (ModelFormatError::DigestMismatch, "digest_mismatch"),
            (ModelFormatError::Misuse { reason: "x" }, "internal"),
            (ModelFormatError::Resources { reason: "x" }, "internal"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }
}
