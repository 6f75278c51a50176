//! The sealed-model file format, sans-IO: functions over bytes, no files, sockets or KMS calls.
//!
//! What it does: encodes and parses the versioned header of a sealed ONNX model, and seals and
//! opens the model body as AES-256-GCM chunks (RFC 5116 `AEAD_AES_256_GCM`) chained in the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption and its
//! Nonce-Reuse Misuse-Resistance", CRYPTO 2015. Opening detects any edit of the header, any chunk
//! that is altered, reordered, dropped, duplicated or relabelled as last, truncation and trailing
//! data, and a plaintext whose SHA-384 differs from the header's. A multi-gigabyte model is opened
//! chunk by chunk into one buffer preallocated to the plaintext length: there is never a second
//! plaintext copy.
//!
//! What it does not do: talk to KMS (the header carries the KMS `CiphertextBlob`; unwrapping it to
//! the 32-byte data key is `sealed-kms`'s job, with the attestation document as recipient), read
//! files, generate randomness (the nonce prefix and data key come in as arguments), or parse ONNX.
//!
//! # Byte layout (format version 1)
//!
//! ```text
//! file   = magic ‖ header_len ‖ header ‖ chunk_0 ‖ … ‖ chunk_{n-1}
//! magic  = "SIMODEL1"                         8 bytes
//! header_len                                  u32 big-endian, ≤ MAX_HEADER_LEN (64 KiB)
//! header = CBOR map (RFC 8949), canonical, no other keys:
//!   format_version      uint  = 1
//!   model_id            text  (sealed_wire::message::valid_model_id)
//!   kms_key_id          text  1..=2048 bytes
//!   encrypted_data_key  bytes 1..=6144 (KMS CiphertextBlob of the data key)
//!   plaintext_len       uint  ≤ MAX_MODEL_LEN (8 GiB)
//!   plaintext_sha384    bytes 48
//!   chunk_size          uint  4 KiB..=16 MiB (default 1 MiB)
//!   nonce_prefix        bytes 7, random per file
//! n      = max(1, ceil(plaintext_len / chunk_size))
//! chunk_i = AES-256-GCM(key   = data key,
//!                       nonce = nonce_prefix ‖ i (u32 BE) ‖ (i == n-1 ? 0x01 : 0x00),
//!                       aad   = SHA-384(magic ‖ header_len ‖ header),
//!                       pt    = plaintext[i·chunk_size .. min((i+1)·chunk_size, plaintext_len)])
//!         = ciphertext ‖ tag (16 bytes)
//! ```
//!
//! Every chunk but the last carries exactly `chunk_size` plaintext bytes; the last carries the
//! rest (an empty model is one empty last chunk). Chunk boundaries and the last-chunk flag follow
//! from the authenticated header, never from the untrusted stream: a missing chunk makes the
//! stream short, a moved chunk fails under its new counter, and a truncated stream whose final
//! chunk is relabelled as last fails its tag because it was sealed with flag 0 (STREAM, §7 of the
//! paper). The AAD binds every chunk to the exact header bytes, so editing the model id, key id,
//! length, digest or chunk size fails every tag. The digest check after the last tag is a second,
//! key-independent check that the plaintext is the model the header names.
//!
//! A data key must seal one file only (KMS `GenerateDataKey` per file); the random 7-byte nonce
//! prefix then only separates re-seals that reuse a key by mistake. It is generated and unwrapped
//! with the KMS encryption context `{"sealed-inference:model-id": model_id}`
//! ([`ENCRYPTION_CONTEXT_KEY`]).
//!
//! # Layout
//! - [`error`]: [`ModelFormatError`] with stable [`ModelFormatError::code`]s.
//! - [`header`]: [`SealedModelHeader`], [`parse_header`], the limits.
//! - [`stream`]: [`Sealer`], [`Opener`], and the one-shot [`seal`] and [`open`].
//! - [`pipeline`]: [`PipelinedOpener`], which leaves the SHA-384 to a thread of its own so that
//!   opening runs at AES-GCM speed and the digest overlaps the caller's use of the plaintext
//!   ([`UnverifiedModel`]); the enclave opens uploads with it.
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
pub mod header;
pub mod pipeline;
pub mod stream;

pub use error::ModelFormatError;
pub use header::{
    DEFAULT_CHUNK_SIZE, DIGEST_LEN, ENCRYPTION_CONTEXT_KEY, FORMAT_VERSION, MAGIC, MAX_CHUNK_SIZE,
    MAX_ENCRYPTED_DATA_KEY_LEN, MAX_HEADER_LEN, MAX_KMS_KEY_ID_LEN, MAX_MODEL_LEN, MIN_CHUNK_SIZE,
    NONCE_PREFIX_LEN, PREFIX_LEN, SealedModelHeader, header_total_len, parse_header,
};
pub use pipeline::{PipelinedOpener, SharedPlaintext, UnverifiedModel};
pub use stream::{DATA_KEY_LEN, Opener, SealParams, Sealer, open, seal};

/// AES-GCM tag length (RFC 5116 §5.1).
pub const TAG_LEN: usize = 16;
