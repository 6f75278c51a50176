//! The wire format of Sealed Inference, sans-IO: functions over bytes, no sockets, files or tokio.
//!
//! What it does: host↔enclave frames (u32 big-endian length, request id, CBOR body), the messages
//! those frames carry, the CBOR messages that travel *inside* the sealed channel (inference requests
//! and responses), the tensor encoding, the hard limits on every size that comes from outside, and the
//! stable error codes that clients see.
//!
//! What it does not do: encryption (`sealed-crypto`), attestation (`sealed-attestation`), or any I/O
//! (`sealed-transport` reads and writes frames over a stream). The host links this crate alone, so it
//! can route frames without being able to open them.
//!
//! # Layout
//! - [`limits`]: every hard maximum, in one place.
//! - [`error`]: [`ErrorCode`], the stable codes on the wire.
//! - [`frame`]: frame header encode/decode and an incremental [`frame::FrameDecoder`].
//! - [`cbor`]: bounded CBOR encode/decode helpers used by every message.
//! - [`tensor`]: [`Tensor`] and [`DType`], validated on construction and on decode.
//! - [`message`]: host↔enclave messages and the sealed inference request/response bodies.
//! - [`manifest`]: the loaded-model manifest that the attestation commits to.
//! - [`wipe`]: fast zeroing of plaintext buffers.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod cbor;
pub mod credentials;
pub mod digest_bytes;
pub mod error;
mod fast;
pub mod frame;
pub mod limits;
pub mod manifest;
pub mod message;
pub mod tensor;
pub mod wipe;

pub use credentials::AwsCredentials;
pub use error::ErrorCode;
pub use manifest::{ManifestEntry, ModelManifest};
pub use message::{
    EnclaveRequest, EnclaveResponse, HealthStatus, InferRequest, InferResponse, ModelInfo,
    NamedTensor, REQUEST_ID_LEN, TensorSpec, WireError,
};
pub use tensor::{DType, Tensor, TensorError};

/// Version of the protocol spoken on every layer; committed to in the attestation `user_data`.
pub const PROTOCOL_VERSION: u16 = 1;
