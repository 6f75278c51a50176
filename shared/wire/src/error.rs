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
    // 2xx: the sealed channel.
    /// The sealed request could not be opened (deliberately opaque).
    SealedRequestInvalid = 200, "sealed_request_invalid";
    /// The sealed request names a key id, KEM, KDF or AEAD the enclave does not serve.
    UnsupportedKeyConfig = 201, "unsupported_key_config";
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
