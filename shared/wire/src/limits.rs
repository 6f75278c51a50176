//! Hard limits on every size that comes from outside. Each is checked before allocation.

/// Largest frame body (request id + CBOR message) accepted on the host↔enclave link.
/// Sized to carry a plaintext model load in simulation plus framing overhead.
pub const MAX_FRAME_LEN: u32 = 80 * 1024 * 1024;
/// Largest sealed (HPKE-encapsulated) inference request or response.
pub const MAX_SEALED_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// Largest plaintext ONNX model handed over in one frame (simulation only in this version).
pub const MAX_MODEL_LEN: usize = 64 * 1024 * 1024;
/// Tensor rank limit.
pub const MAX_TENSOR_RANK: usize = 8;
/// Largest element count of one tensor.
pub const MAX_TENSOR_ELEMENTS: u64 = 4 * 1024 * 1024;
/// Largest data size of one tensor in bytes.
pub const MAX_TENSOR_BYTES: u64 = 16 * 1024 * 1024;
/// Most tensors in one request or response.
pub const MAX_TENSORS: usize = 64;
/// Longest tensor (input/output) name.
pub const MAX_NAME_LEN: usize = 256;
/// Longest model id.
pub const MAX_MODEL_ID_LEN: usize = 128;
/// Most models loaded at once (bounds the manifest).
pub const MAX_MODELS: usize = 64;
/// Client nonce length bounds for attestation requests (the NSM itself accepts up to 1024).
pub const MIN_NONCE_LEN: usize = 16;
pub const MAX_NONCE_LEN: usize = 64;
/// Largest attestation document relayed (real documents are 4.4–7.5 KB; the NSM buffer is 16 KiB).
pub const MAX_ATTESTATION_DOC_LEN: usize = 16 * 1024;
/// Largest encoded manifest.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// Longest error message carried on the wire.
pub const MAX_ERROR_MESSAGE_LEN: usize = 512;
/// Nesting depth allowed when decoding CBOR.
pub const MAX_CBOR_DEPTH: usize = 32;

/// Largest sealed-model file prefix (magic, length, CBOR header) sent to start a sealed model
/// load: `sealed_model::PREFIX_LEN` (12) + `sealed_model::MAX_HEADER_LEN` (64 KiB). The
/// sealed-model crate asserts that the two agree.
pub const MAX_SEALED_MODEL_HEADER_LEN: usize = 12 + 64 * 1024;
/// Largest piece of sealed-model ciphertext in one `LoadSealedModelChunk` frame.
pub const MAX_UPLOAD_CHUNK_LEN: usize = 8 * 1024 * 1024;
/// Longest AWS access key id (IAM allows 16..=128 characters).
pub const MAX_ACCESS_KEY_ID_LEN: usize = 128;
/// Longest AWS secret access key handed to the enclave.
pub const MAX_SECRET_ACCESS_KEY_LEN: usize = 256;
/// Longest AWS session token (STS tokens are a few hundred to about 2 KB; headroom for growth).
pub const MAX_SESSION_TOKEN_LEN: usize = 8 * 1024;
