//! Stable error codes. The numbers and names never change meaning once released: clients and
//! operators key on them. Messages that accompany a code are for operators and never carry
//! payload, tensor, key or model details.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $text:literal; )*) => {
        /// A stable error code carried on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this version does not know (sent by a newer peer).
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every known code, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The numeric code.
            pub fn as_u16(self) -> u16 {
                match self { $( ErrorCode::$name => $num, )* ErrorCode::Unknown(n) => n }
            }

            /// The snake_case name, stable like the number.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$name => $text, )* ErrorCode::Unknown(_) => "unknown" }
            }

            /// Code from its number; unknown numbers are kept, not rejected.
            pub fn from_u16(n: u16) -> Self {
                match n { $( $num => ErrorCode::$name, )* other => ErrorCode::Unknown(other) }
            }
        }
    };
}

error_codes! {
    // 1xx: framing and message decoding.
    /// A frame header or body could not be decoded.
    MalformedFrame = 100, "malformed_frame";
    /// A frame exceeded the hard maximum.
    FrameTooLarge = 101, "frame_too_large";
    /// A CBOR message was malformed or did not match the schema.
    MalformedMessage = 102, "malformed_message";
    /// The peer speaks a protocol version we do not.
    UnsupportedVersion = 103, "unsupported_version";
    /// A request body exceeded its limit.
    RequestTooLarge = 104, "request_too_large";
    /// No such HTTP route or method on the host.
    NotFound = 105, "not_found";
    // 2xx: the sealed channel.
    /// The sealed request could not be opened (deliberately opaque).
    SealedRequestInvalid = 200, "sealed_request_invalid";
    /// The sealed request names a key id, KEM, KDF or AEAD the enclave does not serve.
    UnsupportedKeyConfig = 201, "unsupported_key_config";
    /// The enclave has already answered a request with this request id inside the freshness
    /// window (a replay). Sealed: only the requester can read it.
    ReplayedRequest = 202, "replayed_request";
    /// The request's `sent_at_ms` is outside the enclave's freshness window (an old capture, or a
    /// client clock far off). Sealed: only the requester can read it.
    StaleRequest = 203, "stale_request";
    // 3xx: inference.
    /// No model with that id is loaded.
    UnknownModel = 300, "unknown_model";
    /// Inputs do not match the model's declared names, dtypes or shapes.
    InputMismatch = 301, "input_mismatch";
    /// A tensor was malformed or exceeded a limit.
    InvalidTensor = 302, "invalid_tensor";
    /// The engine failed while running the model.
    InferenceFailed = 303, "inference_failed";
    // 4xx: model loading.
    /// The model could not be parsed or optimised (corrupt file, unsupported operator).
    ModelRejected = 400, "model_rejected";
    /// The model exceeds the size limit.
    ModelTooLarge = 401, "model_too_large";
    /// Plaintext model loading is disabled in this build (production enclave).
    PlaintextModelsDisabled = 402, "plaintext_models_disabled";
    /// A model with this id is already loaded.
    ModelAlreadyLoaded = 403, "model_already_loaded";
    /// Too many models are loaded.
    TooManyModels = 404, "too_many_models";
    /// KMS refused to release the model's data key to this enclave: the key policy's
    /// attestation conditions (`kms:RecipientAttestation:*`) or principal do not match.
    ModelAccessDenied = 405, "model_access_denied";
    /// Every chunk authenticated but the plaintext's SHA-384 differs from the sealed header's.
    ModelDigestMismatch = 406, "model_digest_mismatch";
    /// The sealed model file is malformed, truncated, has trailing data or a chunk that fails
    /// authentication.
    ModelCorrupt = 407, "model_corrupt";
    /// The decrypted model uses an ONNX operator the engine does not implement.
    UnsupportedOperator = 408, "unsupported_operator";
    /// KMS could not be reached or did not answer in time (proxy, TLS, 5xx, throttling).
    KmsUnavailable = 409, "kms_unavailable";
    /// KMS answered with an error other than access denied (invalid ciphertext, unknown or
    /// disabled key, rejected credentials or signature).
    KmsError = 410, "kms_error";
    /// A sealed-model chunk or end refers to an upload the enclave does not know (never started,
    /// expired, or already failed).
    UnknownUpload = 411, "unknown_upload";
    /// The enclave was started without KMS settings, so it cannot load sealed models.
    KmsNotConfigured = 412, "kms_not_configured";
    // 5xx: attestation and the enclave itself.
    /// The attestation request was invalid (nonce length).
    InvalidNonce = 500, "invalid_nonce";
    /// The NSM failed to produce a document.
    AttestationUnavailable = 501, "attestation_unavailable";
    /// The enclave is at capacity; retry later.
    Busy = 502, "busy";
    /// The enclave could not be reached by the host.
    EnclaveUnavailable = 503, "enclave_unavailable";
    /// The request timed out.
    Timeout = 504, "timeout";
    /// An internal error; details are in the enclave log, never in the response.
    Internal = 505, "internal";
    /// This client address has too many connections or requests in flight on the host; retry
    /// later (HTTP 429).
    TooManyRequests = 506, "too_many_requests";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.as_u16())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The released codes. A change here breaks clients and operators that key on them.
    const PINNED: &[(ErrorCode, u16, &str)] = &[
        (ErrorCode::MalformedFrame, 100, "malformed_frame"),
        (ErrorCode::FrameTooLarge, 101, "frame_too_large"),
        (ErrorCode::MalformedMessage, 102, "malformed_message"),
        (ErrorCode::UnsupportedVersion, 103, "unsupported_version"),
        (ErrorCode::RequestTooLarge, 104, "request_too_large"),
        (ErrorCode::NotFound, 105, "not_found"),
        (
            ErrorCode::SealedRequestInvalid,
            200,
            "sealed_request_invalid",
        ),
        (
            ErrorCode::UnsupportedKeyConfig,
            201,
            "unsupported_key_config",
        ),
        (ErrorCode::ReplayedRequest, 202, "replayed_request"),
        (ErrorCode::StaleRequest, 203, "stale_request"),
        (ErrorCode::UnknownModel, 300, "unknown_model"),
        (ErrorCode::InputMismatch, 301, "input_mismatch"),
        (ErrorCode::InvalidTensor, 302, "invalid_tensor"),
        (ErrorCode::InferenceFailed, 303, "inference_failed"),
        (ErrorCode::ModelRejected, 400, "model_rejected"),
        (ErrorCode::ModelTooLarge, 401, "model_too_large"),
        (
            ErrorCode::PlaintextModelsDisabled,
            402,
            "plaintext_models_disabled",
        ),
        (ErrorCode::ModelAlreadyLoaded, 403, "model_already_loaded"),
        (ErrorCode::TooManyModels, 404, "too_many_models"),
        (ErrorCode::ModelAccessDenied, 405, "model_access_denied"),
        (ErrorCode::ModelDigestMismatch, 406, "model_digest_mismatch"),
        (ErrorCode::ModelCorrupt, 407, "model_corrupt"),
        (ErrorCode::UnsupportedOperator, 408, "unsupported_operator"),
        (ErrorCode::KmsUnavailable, 409, "kms_unavailable"),
        (ErrorCode::KmsError, 410, "kms_error"),
        (ErrorCode::UnknownUpload, 411, "unknown_upload"),
        (ErrorCode::KmsNotConfigured, 412, "kms_not_configured"),
        (ErrorCode::InvalidNonce, 500, "invalid_nonce"),
        (
            ErrorCode::AttestationUnavailable,
            501,
            "attestation_unavailable",
        ),
        (ErrorCode::Busy, 502, "busy"),
        (ErrorCode::EnclaveUnavailable, 503, "enclave_unavailable"),
        (ErrorCode::Timeout, 504, "timeout"),
        (ErrorCode::Internal, 505, "internal"),
        (ErrorCode::TooManyRequests, 506, "too_many_requests"),
    ];

    #[test]
    fn released_codes_keep_their_numbers_and_names() {
        assert_eq!(ErrorCode::ALL.len(), PINNED.len());
        for &(code, num, name) in PINNED {
            assert_eq!((code.as_u16(), code.as_str()), (num, name), "{code:?}");
        }
    }

    #[test]
    fn numbers_and_names_are_unique() {
        let nums: HashSet<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(nums.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!(
            !names.contains("unknown"),
            "\"unknown\" is reserved for Unknown(_)"
        );
    }

    #[test]
    fn names_are_snake_case() {
        for c in ErrorCode::ALL {
            let name = c.as_str();
            assert!(!name.is_empty() && !name.starts_with('_') && !name.ends_with('_'));
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn from_u16_round_trips_every_known_code() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c.as_u16()), c);
        }
    }

    #[test]
    fn unknown_codes_are_preserved() {
        for n in [0u16, 99, 106, 999, u16::MAX] {
            let c = ErrorCode::from_u16(n);
            assert_eq!(c, ErrorCode::Unknown(n));
            assert_eq!(c.as_u16(), n);
            assert_eq!(c.as_str(), "unknown");
            let enc = crate::cbor::to_vec(&c).unwrap();
            assert_eq!(crate::cbor::from_slice::<ErrorCode>(&enc, 16), Ok(c));
        }
    }

    #[test]
    fn encodes_as_a_bare_integer() {
        for &c in ErrorCode::ALL {
            let enc = crate::cbor::to_vec(&c).unwrap();
            assert_eq!(enc, crate::cbor::to_vec(&c.as_u16()).unwrap());
            assert_eq!(crate::cbor::from_slice::<ErrorCode>(&enc, 16), Ok(c));
        }
        // Not a string, and not a number out of u16 range.
        let s = crate::cbor::to_vec(&"busy").unwrap();
        assert!(crate::cbor::from_slice::<ErrorCode>(&s, 16).is_err());
        let big = crate::cbor::to_vec(&70_000u32).unwrap();
        assert!(crate::cbor::from_slice::<ErrorCode>(&big, 16).is_err());
    }

    #[test]
    fn display_shows_name_and_number() {
        assert_eq!(ErrorCode::Busy.to_string(), "busy (502)");
        assert_eq!(ErrorCode::Unknown(777).to_string(), "unknown (777)");
    }
}
