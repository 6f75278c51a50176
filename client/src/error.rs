//! [`ClientError`]: every way an attestation or an inference can fail, each naming its step
//! ([`ClientError::step`]) so that a user can tell "the enclave is not the one I expect" from "the
//! network is down" from "the model refused my input".

use sealed_attestation::{CommitmentError, VerifyError};
use sealed_crypto::{KeyConfigError, OpenError, SealError};
use sealed_wire::ErrorCode;
use sealed_wire::message::MessageError;

use crate::policy::InvalidPolicy;

/// Why the client refused or failed. Text that came from the (untrusted) host is sanitised before
/// it is stored here, so printing an error cannot inject terminal control sequences.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("host URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("policy: {0}")]
    Policy(#[from] InvalidPolicy),
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("{step}: HTTP request failed: {source}")]
    Http {
        step: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{step}: response exceeds the maximum of {max} bytes")]
    ResponseTooLarge { step: &'static str, max: usize },
    #[error("{step}: malformed response: {reason}")]
    MalformedResponse { step: &'static str, reason: String },
    #[error("host answered HTTP {status}{detail}: {message}", detail = host_code(*.code, .name))]
    Host {
        status: u16,
        code: Option<ErrorCode>,
        name: Option<String>,
        message: String,
    },
    #[error("attestation verification failed: {check}: {0}", check = .0.check())]
    Verification(#[from] VerifyError),
    #[error("attestation commitment failed: {check}: {0}", check = .0.check())]
    Commitment(#[from] CommitmentError),
    #[error("attested document carries no public key")]
    NoPublicKey,
    #[error("attested public key is not a usable key configuration: {0}")]
    KeyConfig(#[from] KeyConfigError),
    #[error("the attested manifest does not list model {model_id:?} with the expected SHA-384")]
    ModelDigestMismatch { model_id: String },
    #[error("model {model_id:?} is not in the attested manifest; the enclave serves: {available}")]
    ModelNotAttested { model_id: String, available: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("encoding the request: {0}")]
    Encode(MessageError),
    #[error("sealing the request: {0}")]
    Seal(#[from] SealError),
    #[error("opening the response: {0} (not from the attested enclave, or corrupted)")]
    Open(#[from] OpenError),
    #[error("decoding the opened response: {0}")]
    Decode(MessageError),
    #[error("inference failed in the enclave: {code}: {message}")]
    Inference { code: ErrorCode, message: String },
}

fn host_code(code: Option<ErrorCode>, name: &Option<String>) -> String {
    match (code, name) {
        (Some(code), _) => format!(" ({code})"),
        (None, Some(name)) => format!(" ({name})"),
        (None, None) => String::new(),
    }
}

impl ClientError {
    /// Stable name of the failed step. Verification and commitment failures name their check
    /// (`verify:signature`, `verify:pcr_policy`, `commitment:commitment_digest`…).
    pub fn step(&self) -> String {
        let fixed = match self {
            ClientError::InvalidUrl { .. } => "url",
            ClientError::Policy(_) => "policy",
            ClientError::Random(_) => "random",
            ClientError::Http { step, .. }
            | ClientError::ResponseTooLarge { step, .. }
            | ClientError::MalformedResponse { step, .. } => step,
            ClientError::Host { .. } => "host",
            ClientError::Verification(e) => return format!("verify:{}", e.check()),
            ClientError::Commitment(e) => return format!("commitment:{}", e.check()),
            ClientError::NoPublicKey | ClientError::KeyConfig(_) => "key_config",
            ClientError::ModelNotAttested { .. } => "model_not_attested",
            ClientError::ModelDigestMismatch { .. } => "model_policy",
            ClientError::InvalidRequest(_) => "request",
            ClientError::Encode(_) => "encode",
            ClientError::Seal(_) => "seal",
            ClientError::Open(_) => "open",
            ClientError::Decode(_) => "decode",
            ClientError::Inference { .. } => "inference",
        };
        fixed.to_string()
    }

    /// True when the enclave itself could not be verified (signature, chain, measurements,
    /// freshness, commitment, key): retrying will not help, and nothing was sent to it.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Verification(_)
                | ClientError::Commitment(_)
                | ClientError::NoPublicKey
                | ClientError::KeyConfig(_)
                | ClientError::ModelDigestMismatch { .. }
        )
    }

    /// True when the host reports that the enclave could not open the request: it names a key
    /// the enclave no longer holds (`unsupported_key_config`: the key was rotated out or the
    /// enclave restarted), or it did not open under the key with that id
    /// (`sealed_request_invalid` in the clear: a restarted enclave whose random first key id
    /// happens to equal ours, 1 in 256, or tampering on the way). Nothing ran in either case, so
    /// attesting again and sending a newly sealed request is safe. [`crate::Session::infer`] does
    /// that once by itself; a sealed error (the enclave opened the request) never qualifies.
    pub fn needs_reattestation(&self) -> bool {
        matches!(
            self,
            ClientError::Host {
                code: Some(ErrorCode::UnsupportedKeyConfig | ErrorCode::SealedRequestInvalid),
                ..
            }
        )
    }

    /// The stable error code, when the host or the enclave sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Host { code, .. } => *code,
            ClientError::Inference { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Keeps host-supplied text printable and short: at most `max` characters, control characters
/// (terminal escapes, newlines) replaced by `?`.
pub(crate) fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealed_attestation::PolicyError;

    #[test]
    fn verification_errors_name_their_check_in_step_and_message() {
        let e = ClientError::from(VerifyError::Signature);
        assert_eq!(e.step(), "verify:signature");
        assert!(e.is_verification_failure());
        assert!(
            e.to_string()
                .starts_with("attestation verification failed: signature: ")
        );
        let e = ClientError::from(VerifyError::PcrPolicy(PolicyError::NoMatch {
            alternatives: 1,
        }));
        assert_eq!(e.step(), "verify:pcr_policy");
        let e = ClientError::from(CommitmentError::DigestMismatch);
        assert_eq!(e.step(), "commitment:commitment_digest");
        assert!(e.is_verification_failure());
        assert!(
            e.to_string()
                .starts_with("attestation commitment failed: commitment_digest: ")
        );
    }

    #[test]
    fn host_error_shows_status_code_and_message() {
        let e = ClientError::Host {
            status: 503,
            code: Some(ErrorCode::Busy),
            name: Some("busy".into()),
            message: "at capacity".into(),
        };
        assert_eq!(
            e.to_string(),
            "host answered HTTP 503 (busy (502)): at capacity"
        );
        assert_eq!(e.code(), Some(ErrorCode::Busy));
        assert_eq!(e.step(), "host");
        assert!(!e.is_verification_failure());
        let e = ClientError::Host {
            status: 500,
            code: None,
            name: None,
            message: "oops".into(),
        };
        assert_eq!(e.to_string(), "host answered HTTP 500: oops");
        assert_eq!(e.code(), None);
    }

    #[test]
    fn only_requests_the_enclave_could_not_open_ask_for_reattestation() {
        let host = |code| ClientError::Host {
            status: 400,
            code: Some(code),
            name: None,
            message: "key retired".into(),
        };
        assert!(host(ErrorCode::UnsupportedKeyConfig).needs_reattestation());
        assert!(host(ErrorCode::SealedRequestInvalid).needs_reattestation());
        for code in [
            ErrorCode::StaleRequest,
            ErrorCode::ReplayedRequest,
            ErrorCode::Busy,
        ] {
            assert!(!host(code).needs_reattestation(), "{code}");
        }
        // Sealed errors come from an enclave that opened the request: never re-sent.
        let sealed = ClientError::Inference {
            code: ErrorCode::UnsupportedKeyConfig,
            message: String::new(),
        };
        assert!(!sealed.needs_reattestation());
    }

    #[test]
    fn inference_error_carries_the_enclave_code() {
        let e = ClientError::Inference {
            code: ErrorCode::InputMismatch,
            message: "input 'x' has shape [2] but the model expects [1, 64]".into(),
        };
        assert_eq!(e.code(), Some(ErrorCode::InputMismatch));
        assert_eq!(e.step(), "inference");
        assert!(!e.needs_reattestation());
        assert!(e.to_string().contains("input_mismatch (301)"));
    }

    #[test]
    fn sanitize_replaces_control_characters_and_truncates() {
        assert_eq!(sanitize("ok \x1b[31mred\n", 100), "ok ?[31mred?");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("abc", 3), "abc");
        assert_eq!(sanitize("ééé", 2), "éé…");
    }
}
