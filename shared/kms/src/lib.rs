//! Sans-IO pieces of AWS KMS key release to a Nitro enclave (nitro-facts.md §3).
//!
//! # Layout
//!
//! - [`api`]: serde types for the KMS JSON 1.1 messages (`TrentService.Decrypt`,
//!   `GenerateDataKey`, `Encrypt`, `GenerateRandom`) with the `Recipient` attestation parameter,
//!   their size limits, the error body, and the fail-closed extraction of `CiphertextForRecipient`.
//! - [`cms`]: parsing, decrypting and building the CMS EnvelopedData that KMS returns as
//!   `CiphertextForRecipient` (BER, indefinite lengths), over a small bounded BER reader.
//! - [`sigv4`]: SigV4 signing of KMS calls (over the `aws-sigv4` crate) and a server-side
//!   verifier for the mock KMS, checked against the AWS signing test suite.
//!
//! What it does not do: HTTP, TLS, attestation, key policy. Callers bring the bytes,
//! the RSA key and the randomness; nothing here opens a socket or reads a clock.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod api;
mod ber;
pub mod cms;
pub mod sigv4;

pub use ber::{BerError, MAX_DEPTH as BER_MAX_DEPTH, MAX_INPUT as BER_MAX_INPUT};
pub use cms::{CmsError, DecryptError, EnvelopedRecipient};
/// The RSA crate whose key types [`cms::decrypt`] and [`cms::build_ciphertext_for_recipient`] take.
pub use rsa;
