//! The sealed channel of Sealed Inference, sans-IO: functions over bytes, randomness passed in.
//!
//! What it does: a client seals a request to the enclave's attested public key so that only that
//! enclave can open it, and the enclave seals the response so that only that client can open it.
//! Requests are HPKE (RFC 9180) base mode with one fixed suite, DHKEM(X25519, HKDF-SHA256)
//! (0x0020), HKDF-SHA256 (0x0001), AES-256-GCM (0x0002), laid out like Oblivious HTTP requests
//! (RFC 9458 §4.1, §4.3) under this project's own labels. The response key is exported from the
//! request's HPKE context (RFC 9458 §4.4), so a response is bound to exactly one request.
//!
//! What it does not do: no I/O, no clock, no OS randomness (callers pass a [`rand_core::CryptoRng`]);
//! no attestation (`sealed-attestation` checks that the key in a [`KeyConfig`] is the enclave's);
//! no message encoding (`sealed-wire` owns what goes inside); no replay protection (the host may
//! replay a request and this crate opens it again: the enclave rejects replays by the request id
//! and timestamp sealed inside, `enclave/src/freshness.rs`); no key rotation (the enclave keeps a
//! ring of [`ServerKey`]s and picks one by [`request_key_id`]); no
//! suite negotiation: one suite, and anything else is refused. Failures to open are opaque by
//! design ([`OpenError`] says nothing about why), so that no peer learns which check failed.
//!
//! # Layout
//!
//! ```text
//! key config (RFC 9458 §3, 41 bytes; the attestation document's `public_key`):
//!   key_id(1) | kem_id(2) | pkR(32) | suites_len(2) = 4 | kdf_id(2) | aead_id(2)
//! encapsulated request (RFC 9458 §4.1):
//!   hdr = key_id(1) | kem_id(2) | kdf_id(2) | aead_id(2)
//!   request = hdr | enc(32) | AES-256-GCM ciphertext | tag(16)
//!   info = "sealed-inference request" | 0x00 | hdr,  aad = ""
//! encapsulated response (RFC 9458 §4.4):
//!   secret = context.Export("sealed-inference response", 32)
//!   prk = HKDF-Extract(salt = enc | response_nonce, secret)
//!   key = HKDF-Expand(prk, "key", 32), nonce = HKDF-Expand(prk, "nonce", 12)
//!   response = response_nonce(32) | AES-256-GCM(key, nonce, aad = "", plaintext) | tag(16)
//! ```
//!
//! Modules: [`key_config`] (the public key configuration), [`request`] ([`ServerKey`] and
//! [`seal_request`]), [`response`] ([`ResponseSealer`] and [`ResponseOpener`]), [`error`].
//!
//! Secrets: the server's private key and the exported response secrets are wiped when dropped and
//! have no `Debug`; opened plaintexts come back as [`zeroize::Zeroizing`] buffers. Every input is
//! bounded ([`MAX_ENCAPSULATED_REQUEST_LEN`], [`MAX_ENCAPSULATED_RESPONSE_LEN`]) before anything is
//! allocated, and no allocation is larger than the input being opened or sealed plus overhead.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod aes256gcm;
pub mod error;
pub mod key_config;
pub mod request;
pub mod response;

#[cfg(test)]
mod kat_tests;

pub use error::{HeaderError, KeyConfigError, OpenError, SealError};
pub use key_config::KeyConfig;
pub use request::{
    PreparedRequest, ServerKey, request_key_id, seal_request, seal_request_in_place,
};
pub use response::{ResponseOpener, ResponseSealer};

/// DHKEM(X25519, HKDF-SHA256), RFC 9180 §7.1 table 2.
pub const KEM_ID: u16 = 0x0020;
/// HKDF-SHA256, RFC 9180 §7.2 table 3.
pub const KDF_ID: u16 = 0x0001;
/// AES-256-GCM, RFC 9180 §7.3 table 5.
pub const AEAD_ID: u16 = 0x0002;

/// HPKE `info` prefix of a request (the role of "message/bhttp request" in RFC 9458 §4.3).
pub const REQUEST_LABEL: &[u8] = b"sealed-inference request";
/// HPKE exporter context of the response secret (the role of "message/bhttp response" in
/// RFC 9458 §4.4).
pub const RESPONSE_LABEL: &[u8] = b"sealed-inference response";

/// Length of an encoded [`KeyConfig`] (RFC 9458 §3 with one symmetric suite).
pub const KEY_CONFIG_LEN: usize = 1 + 2 + PUBLIC_KEY_LEN + 2 + 4;
/// X25519 public key and `enc` length, `Npk` = `Nenc` = 32 (RFC 9180 §7.1 table 2).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of the request header `key_id | kem_id | kdf_id | aead_id` (RFC 9458 §4.1).
pub const REQUEST_HEADER_LEN: usize = 7;
/// AES-GCM tag length, `Nt` = 16 (RFC 9180 §7.3 table 5).
pub const TAG_LEN: usize = 16;
/// Response nonce length, `max(Nn, Nk)` = `max(12, 32)` for AES-256-GCM (RFC 9458 §4.4).
pub const RESPONSE_NONCE_LEN: usize = 32;
/// Bytes before the ciphertext of an encapsulated request (`hdr | enc`): the room
/// [`seal_request_in_place`] needs in front of the plaintext.
pub const REQUEST_PREFIX_LEN: usize = REQUEST_HEADER_LEN + PUBLIC_KEY_LEN;
/// Bytes an encapsulated request adds to its plaintext.
pub const REQUEST_OVERHEAD: usize = REQUEST_HEADER_LEN + PUBLIC_KEY_LEN + TAG_LEN;
/// Bytes an encapsulated response adds to its plaintext.
pub const RESPONSE_OVERHEAD: usize = RESPONSE_NONCE_LEN + TAG_LEN;
/// Largest plaintext sealed or opened in either direction (16 MiB). This crate does not depend on
/// `sealed-wire`; its `MAX_SEALED_MESSAGE_LEN` is the tighter limit on the wire.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024 * 1024;
/// Largest encapsulated request accepted by [`ServerKey::open_request`].
pub const MAX_ENCAPSULATED_REQUEST_LEN: usize = MAX_PLAINTEXT_LEN + REQUEST_OVERHEAD;
/// Largest encapsulated response accepted by [`ResponseOpener::open`].
pub const MAX_ENCAPSULATED_RESPONSE_LEN: usize = MAX_PLAINTEXT_LEN + RESPONSE_OVERHEAD;

/// The one HPKE suite, as `hpke` types.
pub(crate) type Kem = hpke::kem::X25519HkdfSha256;
pub(crate) type Kdf = hpke::kdf::HkdfSha256;
pub(crate) type Aead = aes256gcm::HpkeAes256Gcm;

// The ids on the wire and the types that do the work must name the same suite.
const _: () = assert!(<Kem as hpke::Kem>::KEM_ID == KEM_ID);
const _: () = assert!(<Kdf as hpke::kdf::Kdf>::KDF_ID == KDF_ID);
const _: () = assert!(<Aead as hpke::aead::Aead>::AEAD_ID == AEAD_ID);

// DHKEM's fixed-base multiplications (Encap's ephemeral public key, and Decap's recipient public
// key on every request: RFC 9180 §4.1) use curve25519-dalek's precomputed basepoint table, which
// exists only with its `precomputed-tables` feature. Naming it here makes losing the feature (a
// ~3× slower request open) a build error rather than a silent slowdown.
const _: &curve25519_dalek::edwards::EdwardsBasepointTable =
    curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
