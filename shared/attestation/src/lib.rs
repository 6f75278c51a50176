//! Client-side verification of AWS Nitro Enclaves attestation documents, and the enclave's
//! commitment carried in them. Sans-IO: functions over bytes; the verification time comes in as
//! [`VerifyOptions::now`].
//!
//! What it does ([`verify`], in this order, each step a distinct [`VerifyError`] stage):
//! 1. `cose`: parse the COSE_Sign1 envelope (RFC 9052), tagged or not, ES384 header only.
//! 2. `payload`: decode the attestation document and check its schema (`attestation_process.md`
//!    §3.2.2), refusing duplicate and unknown keys.
//! 3. `certificate_chain` / `certificate_validity`: pin `cabundle[0]` to the [`TrustAnchor`],
//!    check the path leaf → … → root (names, ecdsa-with-SHA384 signatures, CA constraints) and the
//!    validity of every certificate at `now`.
//! 4. `signature`: ES384 over the COSE Sig_structure with the leaf key, over the original payload
//!    bytes. High-S signatures are accepted, as real NSM documents have them (nitro-facts §1.1).
//! 5. Policy, only on an authentic document: `debug_mode` (PCR0 all zero), `pcr_policy`, `nonce`,
//!    `timestamp` (not in the future beyond a skew) and `max_age`.
//!
//! The chain is checked before the signature so that a document with a foreign root reports the
//! root, not the signature that necessarily fails with it.
//!
//! What it does not do: fetch documents, read files or the clock, or trust anything implicitly:
//! the AWS root is built in ([`TrustAnchor::aws_nitro_root_g1`]) but still passed explicitly, and a
//! mock CA root is trusted only when the caller loads it with [`TrustAnchor::from_pem`]. No
//! revocation checks (AWS does not use CRLs for this PKI).
//!
//! # Layout
//! - [`cose`]: COSE_Sign1 parsing and the Sig_structure.
//! - [`document`]: the payload schema.
//! - [`chain`]: [`TrustAnchor`] and certificate path validation.
//! - [`policy`]: [`PcrPolicy`], nonce, age and debug-mode checks.
//! - [`commitment`]: `user_data` = protocol version ‖ SHA-384(manifest bytes).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod chain;
pub mod commitment;
pub mod cose;
pub mod document;
pub mod policy;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p384::ecdsa::Signature;
use p384::ecdsa::signature::Verifier;

pub use chain::{AWS_NITRO_ROOT_G1_PEM, AnchorError, CertRole, ChainError, TrustAnchor};
pub use commitment::CommitmentError;
pub use cose::CoseError;
pub use document::PayloadError;
pub use policy::{PcrPolicy, PolicyError};

/// What a client requires of a document.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The root the chain must end at.
    pub trust_anchor: TrustAnchor,
    /// Accepted PCR values.
    pub pcr_policy: PcrPolicy,
    /// `Some`: the document's nonce must equal it.
    pub expected_nonce: Option<Vec<u8>>,
    /// `Some`: the document's timestamp must be at most this old at `now`. Independently of it, a
    /// timestamp more than [`policy::MAX_FUTURE_SKEW`] after `now` is always refused.
    pub max_age: Option<Duration>,
    /// Accept debug-mode enclaves (PCR0 all zero). Never for production.
    pub allow_debug: bool,
    /// The verification time: certificate validity and age are checked at it.
    pub now: SystemTime,
}

/// The content of a document whose envelope, chain, signature and policy all verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDocument {
    pub module_id: String,
    /// Milliseconds since the UNIX epoch.
    pub timestamp_ms: u64,
    /// Always `"SHA384"`.
    pub digest: String,
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// The leaf certificate (DER) that signed the document.
    pub certificate: Vec<u8>,
    /// `[root, intermediate…]`, DER.
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// Why a document was refused, by stage. [`VerifyError::check`] names the failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("attestation envelope (COSE_Sign1) is invalid: {0}")]
    Cose(#[from] CoseError),
    #[error("attestation document payload is invalid: {0}")]
    Payload(#[from] PayloadError),
    #[error("certificate chain rejected: {0}")]
    Chain(#[from] ChainError),
    #[error("attestation signature does not verify with the leaf certificate's key")]
    Signature,
    #[error(
        "enclave runs in debug mode (PCR0 is all zeros or missing); its measurements mean nothing"
    )]
    DebugMode,
    #[error("enclave measurements rejected: {0}")]
    PcrPolicy(PolicyError),
    #[error("attestation document carries no nonce, but one was expected")]
    NonceMissing,
    #[error("attestation document nonce does not match the expected nonce (stale or replayed)")]
    NonceMismatch,
    #[error("attestation document timestamp is {ahead_ms} ms in the future")]
    TimestampInFuture { ahead_ms: u64 },
    #[error("attestation document is {age_ms} ms old, older than the accepted {max_age_ms} ms")]
    TooOld { age_ms: u64, max_age_ms: u64 },
    #[error("verification time is before 1970")]
    InvalidTime,
}

impl VerifyError {
    /// Stable name of the failed check, for CLIs, logs and metrics. Values: `cose`, `payload`,
    /// `certificate_chain`, `certificate_validity`, `signature`, `debug_mode`, `pcr_policy`,
    /// `nonce`, `timestamp`, `max_age`, `time`.
    pub fn check(&self) -> &'static str {
        match self {
            VerifyError::Cose(_) => "cose",
            VerifyError::Payload(_) => "payload",
            VerifyError::Chain(e) if e.is_validity() => "certificate_validity",
            VerifyError::Chain(_) => "certificate_chain",
            VerifyError::Signature => "signature",
            VerifyError::DebugMode => "debug_mode",
            VerifyError::PcrPolicy(_) => "pcr_policy",
            VerifyError::NonceMissing | VerifyError::NonceMismatch => "nonce",
            VerifyError::TimestampInFuture { .. } => "timestamp",
            VerifyError::TooOld { .. } => "max_age",
            VerifyError::InvalidTime => "time",
        }
    }
}

/// Verifies an attestation document (the raw COSE_Sign1 bytes, at most 16 KiB) against `opts`.
pub fn verify(document: &[u8], opts: &VerifyOptions) -> Result<VerifiedDocument, VerifyError> {
    let now = opts
        .now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| VerifyError::InvalidTime)?;

    // 1. Envelope (§3.1): bounded, exact header profile.
    let sign1 = cose::parse(document)?;
    // 2. Payload schema (§3.2.2), decoded from the bytes that were signed.
    let doc = document::parse(&sign1.payload)?;
    // 3. Chain to the pinned anchor at `now` (§3.2.3–3.2.4); yields the leaf key.
    let leaf_key = chain::verify(&doc.certificate, &doc.cabundle, &opts.trust_anchor, now)?;
    // 4. ES384 over Sig_structure (RFC 9052 §4.4) with the original protected and payload bytes.
    //    p384 verifies with `NORMALIZE_S = false`, so high-S signatures, which real NSM documents
    //    carry (nitro-facts §1.1), verify as ECDSA defines them; no low-S rule is added.
    let signature = Signature::from_slice(&sign1.signature).map_err(|_| VerifyError::Signature)?;
    let signed = cose::sig_structure(&sign1.protected, &sign1.payload);
    leaf_key
        .verify(&signed, &signature)
        .map_err(|_| VerifyError::Signature)?;
    // 5. Policy, only now that the content is authentic.
    policy::check(&doc, opts, now)?;
    Ok(doc)
}
