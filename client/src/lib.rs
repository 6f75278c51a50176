//! Sealed Inference client SDK: verify an enclave, then talk to it through the sealed channel.
//!
//! What it does: [`Client::attest`] fetches an attestation document from a `sealed-host` for a
//! fresh random nonce and verifies it with `sealed-attestation` against a [`Policy`] (trust anchor,
//! accepted PCRs, freshness, debug mode), checks that the manifest the host relayed is the one the
//! enclave committed to in `user_data`, and takes the enclave's HPKE key from the document. Only
//! then does it return a [`Session`], and [`Session::infer`] is the only way to send inputs: they
//! are sealed to that key (`sealed-crypto`, RFC 9180 / RFC 9458 layout), so the host relays bytes it
//! cannot read, and the response opens only with this request's secret.
//!
//! For model owners, [`seal::seal_model_file`] seals an ONNX file so that only an enclave the KMS
//! key policy admits can open it: a fresh data key from KMS `GenerateDataKey`, the model encrypted
//! in the `sealed-model` format chunk by chunk, the key's `CiphertextBlob` in the header.
//!
//! There is no way to skip verification: no flag, no feature, no constructor of [`Session`]
//! outside [`Client::attest`]. A policy must name the measurements it trusts or opt out in so many
//! words ([`Policy::no_pcr_policy`]); the AWS Nitro root is the default anchor and a mock CA is
//! trusted only when named.
//!
//! What it does not do:
//! - TLS. This build speaks plain `http://` only and refuses other schemes (known limitation).
//!   The sealed channel keeps inputs and outputs confidential and the attestation authenticates
//!   the enclave, but an on-path attacker can still see sizes, timing, model ids in errors, and the
//!   host's plain metadata endpoints.
//! - Replay protection of requests (a host may replay a sealed request; the enclave answers again).
//!
//! # Layout
//! - [`policy`]: [`Policy`], the builder of what an enclave must satisfy.
//! - [`policy_file`]: [`PolicyFile`], named accepted PCR sets in a JSON file (rolling upgrades),
//!   and [`Measurements`], a release's `measurements.json` as `nitro-cli` prints it
//!   (`docs/measurements.md`).
//! - [`session`]: [`Client`] and the attested [`Session`].
//! - [`http`]: base URL checks, bounded body reads, the host's JSON error shape.
//! - [`npy`]: NumPy `.npy` files ↔ [`sealed_wire::Tensor`].
//! - [`kms`]: the model owner's AWS KMS client (`aws-sdk-kms` on rustls/ring) and `GenerateDataKey`.
//! - [`seal`]: sealing an ONNX file for the enclave with a KMS data key (`sealed seal-model`).
//! - [`error`]: [`ClientError`], naming the step that failed.
//!
//! The `sealed` binary (`src/main.rs`, `src/cli.rs`) is a thin command line over this crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealed_client::ClientError> {
//! use sealed_client::{Client, Policy};
//! use sealed_wire::{NamedTensor, Tensor};
//!
//! let pcr0 = vec![0u8; 48]; // the enclave image measurement you build and trust
//! let client = Client::new("http://127.0.0.1:8080", Policy::new().expect_pcr(0, pcr0))?;
//! let session = client.attest().await?;
//! let input = Tensor::from_f32(vec![1, 64], &[0.0; 64]).expect("valid tensor");
//! let outputs = session
//!     .infer("digits", vec![NamedTensor { name: "input".into(), tensor: input }])
//!     .await?;
//! # let _ = outputs;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod error;
pub mod http;
pub mod kms;
pub mod npy;
pub mod policy;
pub mod policy_file;
pub mod seal;
pub mod session;

pub use error::ClientError;
pub use policy::{AcceptedAs, InvalidPolicy, Policy};
pub use policy_file::{Measurements, PcrSet, PolicyFile, PolicyFileError};
pub use session::{Client, Session};
