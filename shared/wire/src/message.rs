//! Messages. Two layers:
//!
//! - [`EnclaveRequest`]/[`EnclaveResponse`] travel in frames between host and enclave; the host
//!   builds and reads them, so they hold nothing secret (sealed bytes are opaque to the host).
//! - [`InferRequest`]/[`InferResponse`] are the plaintexts inside the sealed channel; only the
//!   client and the enclave ever see them.
//!
//! Every `decode` bounds the input, decodes CBOR with a depth limit and validates counts, names
//! and tensors before returning.

use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError};
use crate::credentials::AwsCredentials;
use crate::error::ErrorCode;
use crate::fast::Reader;
use crate::limits::{
    MAX_ATTESTATION_DOC_LEN, MAX_ERROR_MESSAGE_LEN, MAX_FRAME_LEN, MAX_MANIFEST_LEN,
    MAX_MODEL_ID_LEN, MAX_MODEL_LEN, MAX_MODELS, MAX_NAME_LEN, MAX_NONCE_LEN,
    MAX_SEALED_MESSAGE_LEN, MAX_SEALED_MODEL_HEADER_LEN, MAX_TENSORS, MAX_UPLOAD_CHUNK_LEN,
    MIN_NONCE_LEN,
};
use crate::tensor::{DType, Tensor};

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Cbor(#[from] CborError),
    #[error("{field} is {len} bytes, outside {min}..={max}")]
    FieldLength {
        field: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("invalid model id")]
    InvalidModelId,
    #[error("invalid tensor name")]
    InvalidName,
    #[error("more than {max} tensors")]
    TooManyTensors { max: usize },
    #[error("tensor name {0:?} appears twice")]
    DuplicateName(String),
    #[error("invalid AWS credentials")]
    InvalidCredentials,
}

impl MessageError {
    /// The stable code a peer receives for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::Cbor(CborError::TooLarge { .. }) => ErrorCode::RequestTooLarge,
            MessageError::Cbor(CborError::Malformed(m)) if m.contains("tensor") => {
                ErrorCode::InvalidTensor
            }
            MessageError::FieldLength { field: "nonce", .. } => ErrorCode::InvalidNonce,
            _ => ErrorCode::MalformedMessage,
        }
    }
}

/// A model id: 1–128 characters of `A–Z a–z 0–9 . _ -`. Ids appear in logs and URLs.
pub fn valid_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MODEL_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A tensor name: 1–256 bytes, no control characters (names appear in errors and CLI output).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

fn check_len(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), MessageError> {
    if len < min || len > max {
        return Err(MessageError::FieldLength {
            field,
            len,
            min,
            max,
        });
    }
    Ok(())
}

/// A tensor with its input or output name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

// Tensor lists are bounded while decoding (see `cbor::bounded_seq`); `check_tensors` still checks
// the count so that values built in memory meet the same rule.
const TENSORS: &str = "tensors";

fn de_tensors<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<NamedTensor>, D::Error> {
    cbor::bounded_seq(d, MAX_TENSORS, TENSORS)
}

fn de_models<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ModelInfo>, D::Error> {
    cbor::bounded_seq(d, MAX_MODELS, "models")
}

/// Decodes a message that holds tensor lists, reporting an over-long list as
/// [`MessageError::TooManyTensors`] like [`check_tensors`] does.
fn decode_with_tensors<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MessageError> {
    cbor::from_slice(bytes, MAX_SEALED_MESSAGE_LEN).map_err(|e| {
        if cbor::is_too_many(&e, MAX_TENSORS, TENSORS) {
            MessageError::TooManyTensors { max: MAX_TENSORS }
        } else {
            MessageError::Cbor(e)
        }
    })
}

fn check_tensors(tensors: &[NamedTensor]) -> Result<(), MessageError> {
    if tensors.len() > MAX_TENSORS {
        return Err(MessageError::TooManyTensors { max: MAX_TENSORS });
    }
    for (i, t) in tensors.iter().enumerate() {
        if !valid_name(&t.name) {
            return Err(MessageError::InvalidName);
        }
        if tensors.iter().take(i).any(|o| o.name == t.name) {
            return Err(MessageError::DuplicateName(t.name.clone()));
        }
    }
    Ok(())
}

/// Declared input or output of a model. `None` marks a dimension or dtype the model leaves open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Option<DType>,
    pub shape: Vec<Option<u64>>,
}

/// What the enclave says about a loaded model (metadata only; never weights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub model_id: String,
    /// SHA-384 of the ONNX bytes, as in the manifest.
    #[serde(with = "crate::digest_bytes")]
    pub sha384: Vec<u8>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Enclave health, as reported to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    pub protocol_version: u16,
    /// True once the enclave can attest and serve.
    pub ready: bool,
    /// True when the enclave runs with the mock NSM (simulation build).
    pub simulation: bool,
    pub workers: u32,
    pub in_flight: u32,
    /// Requests answered as part of a dynamic batch of two or more since the enclave started
    /// (docs/operations.md, "Dynamic batching"). Absent, read as 0, from an older enclave.
    #[serde(default)]
    pub batched_requests: u64,
    #[serde(deserialize_with = "de_models")]
    pub models: Vec<ModelInfo>,
}

/// An error carried back to the requester: a stable code and a short operator-facing message that
/// never contains payload, tensor, key or model details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        // Cut at a char boundary at or below the limit, so the message stays valid UTF-8 and
        // decodes on the other side.
        message.truncate(message.floor_char_boundary(MAX_ERROR_MESSAGE_LEN));
        WireError { code, message }
    }
}

/// Host → enclave.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnclaveRequest {
    Health,
    /// Attest with the client's nonce.
    Attestation {
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// A sealed inference request (RFC 9458-style encapsulated request), opaque to the host.
    Infer {
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// A plaintext ONNX model. Accepted only by simulation builds; production enclaves answer
    /// [`ErrorCode::PlaintextModelsDisabled`].
    LoadModel {
        model_id: String,
        #[serde(with = "serde_bytes")]
        onnx: Vec<u8>,
    },
    /// Starts loading a sealed model (DESIGN.md flow 2). `header` is the exact sealed-file prefix
    /// (magic, header length, CBOR header); the enclave asks KMS for the data key with these
    /// credentials, signing with `host_time` (seconds since the Unix epoch) when it is close to its
    /// own clock. Answered by [`EnclaveResponse::SealedModelReady`] once the key is unwrapped.
    LoadSealedModelBegin {
        #[serde(with = "serde_bytes")]
        header: Vec<u8>,
        credentials: AwsCredentials,
        host_time: u64,
    },
    /// The next bytes of the sealed file after the header, in order; any split is allowed.
    /// Answered by [`EnclaveResponse::SealedChunkAccepted`].
    LoadSealedModelChunk {
        upload_id: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// All bytes sent: the enclave checks the digest, builds the plan and answers
    /// [`EnclaveResponse::ModelLoaded`].
    LoadSealedModelEnd {
        upload_id: u64,
    },
    /// The host gives up on an upload (the file was short, a read stalled, the client went away):
    /// the enclave wipes what it holds and releases the model id at once instead of waiting for
    /// the idle expiry. Answered by [`EnclaveResponse::SealedUploadAborted`].
    LoadSealedModelAbort {
        upload_id: u64,
    },
}

// Model bytes and sealed payloads never reach a log through Debug.
impl std::fmt::Debug for EnclaveRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnclaveRequest::Health => f.write_str("Health"),
            EnclaveRequest::Attestation { nonce } => {
                write!(f, "Attestation {{ nonce_len: {} }}", nonce.len())
            }
            EnclaveRequest::Infer { sealed } => {
                write!(f, "Infer {{ sealed_len: {} }}", sealed.len())
            }
            EnclaveRequest::LoadModel { model_id, onnx } => {
                write!(
                    f,
                    "LoadModel {{ model_id: {model_id:?}, len: {} }}",
                    onnx.len()
                )
            }
            EnclaveRequest::LoadSealedModelBegin {
                header,
                credentials,
                host_time,
            } => write!(
                f,
                "LoadSealedModelBegin {{ header_len: {}, credentials: {credentials:?}, host_time: {host_time} }}",
                header.len()
            ),
            EnclaveRequest::LoadSealedModelChunk { upload_id, data } => write!(
                f,
                "LoadSealedModelChunk {{ upload_id: {upload_id}, len: {} }}",
                data.len()
            ),
            EnclaveRequest::LoadSealedModelEnd { upload_id } => {
                write!(f, "LoadSealedModelEnd {{ upload_id: {upload_id} }}")
            }
            EnclaveRequest::LoadSealedModelAbort { upload_id } => {
                write!(f, "LoadSealedModelAbort {{ upload_id: {upload_id} }}")
            }
        }
    }
}

impl EnclaveRequest {
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        Ok(cbor::to_vec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let msg: EnclaveRequest = cbor::from_slice(bytes, MAX_FRAME_LEN as usize)?;
        match &msg {
            EnclaveRequest::Health => {}
            EnclaveRequest::Attestation { nonce } => {
                check_len("nonce", nonce.len(), MIN_NONCE_LEN, MAX_NONCE_LEN)?
            }
            EnclaveRequest::Infer { sealed } => {
                check_len("sealed", sealed.len(), 1, MAX_SEALED_MESSAGE_LEN)?
            }
            EnclaveRequest::LoadModel { model_id, onnx } => {
                if !valid_model_id(model_id) {
                    return Err(MessageError::InvalidModelId);
                }
                check_len("onnx", onnx.len(), 1, MAX_MODEL_LEN)?
            }
            EnclaveRequest::LoadSealedModelBegin {
                header,
                credentials,
                ..
            } => {
                check_len("header", header.len(), 1, MAX_SEALED_MODEL_HEADER_LEN)?;
                credentials.validate()?;
            }
            EnclaveRequest::LoadSealedModelChunk { data, .. } => {
                check_len("data", data.len(), 1, MAX_UPLOAD_CHUNK_LEN)?
            }
            EnclaveRequest::LoadSealedModelEnd { .. }
            | EnclaveRequest::LoadSealedModelAbort { .. } => {}
        }
        Ok(msg)
    }
}

/// Enclave → host.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnclaveResponse {
    Health(HealthStatus),
    /// The COSE_Sign1 attestation document and the exact manifest bytes its `user_data` commits to.
    Attestation {
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
    },
    /// The sealed inference response, opaque to the host.
    Infer {
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    ModelLoaded(ModelInfo),
    /// KMS released the data key; the enclave now expects `sealed_len` bytes of chunks (the file
    /// length minus the header) under `upload_id`.
    SealedModelReady {
        upload_id: u64,
        sealed_len: u64,
    },
    /// A chunk was authenticated and decrypted; `received` counts sealed bytes so far.
    SealedChunkAccepted {
        upload_id: u64,
        received: u64,
    },
    /// The upload is gone and its model id free again.
    SealedUploadAborted {
        upload_id: u64,
    },
    Error(WireError),
}

impl std::fmt::Debug for EnclaveResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnclaveResponse::Health(h) => f.debug_tuple("Health").field(h).finish(),
            EnclaveResponse::Attestation { document, manifest } => write!(
                f,
                "Attestation {{ document_len: {}, manifest_len: {} }}",
                document.len(),
                manifest.len()
            ),
            EnclaveResponse::Infer { sealed } => {
                write!(f, "Infer {{ sealed_len: {} }}", sealed.len())
            }
            EnclaveResponse::ModelLoaded(m) => f.debug_tuple("ModelLoaded").field(m).finish(),
            EnclaveResponse::SealedModelReady {
                upload_id,
                sealed_len,
            } => write!(
                f,
                "SealedModelReady {{ upload_id: {upload_id}, sealed_len: {sealed_len} }}"
            ),
            EnclaveResponse::SealedChunkAccepted {
                upload_id,
                received,
            } => write!(
                f,
                "SealedChunkAccepted {{ upload_id: {upload_id}, received: {received} }}"
            ),
            EnclaveResponse::SealedUploadAborted { upload_id } => {
                write!(f, "SealedUploadAborted {{ upload_id: {upload_id} }}")
            }
            EnclaveResponse::Error(e) => f.debug_tuple("Error").field(e).finish(),
        }
    }
}

impl EnclaveResponse {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        EnclaveResponse::Error(WireError::new(code, message))
    }

    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        Ok(cbor::to_vec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let msg: EnclaveResponse = cbor::from_slice(bytes, MAX_FRAME_LEN as usize)?;
        match &msg {
            EnclaveResponse::Attestation { document, manifest } => {
                check_len("document", document.len(), 1, MAX_ATTESTATION_DOC_LEN)?;
                check_len("manifest", manifest.len(), 1, MAX_MANIFEST_LEN)?;
            }
            EnclaveResponse::Infer { sealed } => {
                check_len("sealed", sealed.len(), 1, MAX_SEALED_MESSAGE_LEN)?
            }
            EnclaveResponse::Health(h) => check_len("models", h.models.len(), 0, MAX_MODELS)?,
            EnclaveResponse::Error(e) => {
                check_len("message", e.message.len(), 0, MAX_ERROR_MESSAGE_LEN)?
            }
            EnclaveResponse::ModelLoaded(_)
            | EnclaveResponse::SealedModelReady { .. }
            | EnclaveResponse::SealedChunkAccepted { .. }
            | EnclaveResponse::SealedUploadAborted { .. } => {}
        }
        Ok(msg)
    }
}

/// Length of [`InferRequest::request_id`].
pub const REQUEST_ID_LEN: usize = 16;

/// The plaintext of a sealed inference request.
///
/// `request_id` and `sent_at_ms` travel inside the ciphertext, so only the client can set them and
/// the host can neither read nor change them: the enclave refuses a request whose `sent_at_ms` is
/// outside its freshness window or whose `request_id` it has already seen in that window
/// (`docs/protocol.md` §2, replay protection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// 16 random bytes chosen by the client for this request alone.
    #[serde(with = "request_id_bytes")]
    pub request_id: [u8; REQUEST_ID_LEN],
    /// The client's clock when it sealed the request, Unix time in milliseconds.
    pub sent_at_ms: u64,
    pub model_id: String,
    #[serde(deserialize_with = "de_tensors")]
    pub inputs: Vec<NamedTensor>,
}

/// `request_id` as a CBOR byte string of exactly [`REQUEST_ID_LEN`] bytes.
mod request_id_bytes {
    use super::REQUEST_ID_LEN;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &[u8; REQUEST_ID_LEN], s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&id[..], s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; REQUEST_ID_LEN], D::Error> {
        let bytes = <serde_bytes::ByteBuf as Deserialize>::deserialize(d)?;
        <[u8; REQUEST_ID_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| D::Error::invalid_length(bytes.len(), &"16 bytes"))
    }
}

impl InferRequest {
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.encode_with_room(0, 0)
    }

    /// [`Self::encode`] after `front` zero bytes, in one allocation with `back` bytes of spare
    /// capacity: the buffer a sealer (`sealed_crypto::seal_request_in_place`, `front` =
    /// `REQUEST_PREFIX_LEN`, `back` = `TAG_LEN`) turns into the sealed message where it lies.
    /// Written once at its exact size, so no copy of the plaintext is left in freed memory.
    pub fn encode_with_room(&self, front: usize, back: usize) -> Result<Vec<u8>, MessageError> {
        Ok(crate::fast::encode_infer_request(self, front, back))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        // The layout our encoder writes is read without ciborium's copies; anything else (and
        // every error) goes through the full decoder.
        let msg: InferRequest = match crate::fast::infer_request(bytes) {
            Some(msg) => msg,
            None => decode_with_tensors(bytes)?,
        };
        if !valid_model_id(&msg.model_id) {
            return Err(MessageError::InvalidModelId);
        }
        check_tensors(&msg.inputs)?;
        Ok(msg)
    }
}

/// The plaintext of a sealed inference response: outputs, or a stable error code that only the
/// requester sees (the host learns nothing about why a request failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferResponse {
    Ok {
        #[serde(deserialize_with = "de_tensors")]
        outputs: Vec<NamedTensor>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl InferResponse {
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.encode_with_room(0, 0)
    }

    /// [`Self::encode`] after `front` zero bytes with `back` bytes of spare capacity, like
    /// [`InferRequest::encode_with_room`] (for `ResponseSealer::seal_in_place`: `front` =
    /// `RESPONSE_NONCE_LEN`, `back` = `TAG_LEN`).
    pub fn encode_with_room(&self, front: usize, back: usize) -> Result<Vec<u8>, MessageError> {
        match self {
            InferResponse::Ok { outputs } => {
                Ok(crate::fast::encode_infer_response_ok(outputs, front, back))
            }
            // Small: through ciborium, appended after the room.
            InferResponse::Error { .. } => {
                let mut out = vec![0u8; front];
                ciborium::ser::into_writer(self, &mut out)
                    .map_err(|_| MessageError::from(cbor::CborError::Encode))?;
                Ok(out)
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let msg: InferResponse = match crate::fast::infer_response(bytes) {
            Some(msg) => msg,
            None => decode_with_tensors(bytes)?,
        };
        match &msg {
            InferResponse::Ok { outputs } => check_tensors(outputs)?,
            InferResponse::Error { message, .. } => {
                check_len("message", message.len(), 0, MAX_ERROR_MESSAGE_LEN)?
            }
        }
        Ok(msg)
    }
}

/// The CBOR bytes of `EnclaveRequest::Infer` and `EnclaveResponse::Infer` up to the sealed
/// bytes: `{"infer": {"sealed": <byte string header>}}` (RFC 8949 §3.1, the serde externally
/// tagged layout ciborium writes). Both messages share it.
const INFER_ENVELOPE_HEAD: &[u8] = &[
    0xa1, 0x65, b'i', b'n', b'f', b'e', b'r', 0xa1, 0x66, b's', b'e', b'a', b'l', b'e', b'd',
];

/// The bytes that precede `sealed_len` sealed bytes in the encoding of `EnclaveRequest::Infer`
/// (and `EnclaveResponse::Infer`): `prefix ‖ sealed` equals `encode()` of that message. Lets a
/// relay write the envelope and the sealed bytes without copying them into one buffer.
pub fn infer_envelope_prefix(sealed_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(INFER_ENVELOPE_HEAD.len() + 9);
    out.extend_from_slice(INFER_ENVELOPE_HEAD);
    // Major type 2 with the shortest length argument (RFC 8949 §3, §4.2.1), as ciborium writes.
    let len = sealed_len as u64;
    if len < 24 {
        out.push(0x40 | len as u8);
    } else if let Ok(l) = u8::try_from(len) {
        out.extend_from_slice(&[0x58, l]);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0x59);
        out.extend_from_slice(&l.to_be_bytes());
    } else if let Ok(l) = u32::try_from(len) {
        out.push(0x5a);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0x5b);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out
}

/// Where the sealed bytes lie in `bytes` if `bytes` is exactly an `Infer` envelope (request or
/// response) with a definite-length byte string of 1..=[`MAX_SEALED_MESSAGE_LEN`] bytes and
/// nothing after it. `None` means "not this shape": decode the message in full instead, which
/// accepts every other valid encoding and reports errors. Lets the relays take the sealed bytes
/// by position instead of copying them through the CBOR decoder.
pub fn infer_envelope_range(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let rest = bytes.strip_prefix(INFER_ENVELOPE_HEAD)?;
    trailing_bytes(bytes, rest, MAX_SEALED_MESSAGE_LEN)
}

/// The encoding of `EnclaveRequest::LoadSealedModelChunk` up to its `upload_id` value: a map of
/// one entry, the variant name, then its map of two fields in declaration order.
const CHUNK_ENVELOPE_HEAD: &[u8] = b"\xa1\x77load_sealed_model_chunk\xa2\x69upload_id";
/// Between the `upload_id` value and the data's byte string.
const CHUNK_DATA_KEY: &[u8] = b"\x64data";

/// The upload id of a `LoadSealedModelChunk` and where its data lies in `bytes`, if `bytes` is
/// exactly that message as our encoder writes it, with 1..=[`MAX_UPLOAD_CHUNK_LEN`] bytes of data
/// and nothing after them. `None` means "not this shape": decode in full instead (as for
/// [`infer_envelope_range`]). Lets the enclave open a model's chunk where it lies in the frame
/// instead of copying up to 8 MiB through the CBOR decoder into a buffer of its own.
pub fn sealed_chunk_range(bytes: &[u8]) -> Option<(u64, std::ops::Range<usize>)> {
    let mut cbor = Reader {
        rest: bytes.strip_prefix(CHUNK_ENVELOPE_HEAD)?,
    };
    let upload_id = cbor.expect(0)?;
    let rest = cbor.rest.strip_prefix(CHUNK_DATA_KEY)?;
    Some((
        upload_id,
        trailing_bytes(bytes, rest, MAX_UPLOAD_CHUNK_LEN)?,
    ))
}

/// `rest` (a suffix of `bytes`) is exactly one definite-length byte string of 1..=`max` bytes:
/// where its content lies in `bytes`.
fn trailing_bytes(bytes: &[u8], rest: &[u8], max: usize) -> Option<std::ops::Range<usize>> {
    let mut cbor = Reader { rest };
    let len = usize::try_from(cbor.expect(2)?).ok()?;
    let rest = cbor.rest;
    if len == 0 || len > max || rest.len() != len {
        return None;
    }
    let start = bytes.len() - len;
    Some(start..bytes.len())
}

/// Takes the sealed bytes out of an owned `Infer` envelope in place (no new allocation).
fn take_infer_envelope(mut bytes: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
    match infer_envelope_range(&bytes) {
        Some(range) => {
            bytes.truncate(range.end);
            bytes.drain(..range.start);
            Ok(bytes)
        }
        None => Err(bytes),
    }
}

impl EnclaveRequest {
    /// [`EnclaveRequest::decode`] of an owned frame body. An `Infer` envelope keeps its sealed
    /// bytes in the same buffer instead of copying them through the CBOR decoder.
    pub fn decode_owned(bytes: Vec<u8>) -> Result<Self, MessageError> {
        match take_infer_envelope(bytes) {
            Ok(sealed) => Ok(EnclaveRequest::Infer { sealed }),
            Err(bytes) => EnclaveRequest::decode(&bytes),
        }
    }
}

impl EnclaveResponse {
    /// [`EnclaveResponse::decode`] of an owned frame body, like [`EnclaveRequest::decode_owned`].
    pub fn decode_owned(bytes: Vec<u8>) -> Result<Self, MessageError> {
        match take_infer_envelope(bytes) {
            Ok(sealed) => Ok(EnclaveResponse::Infer { sealed }),
            Err(bytes) => EnclaveResponse::decode(&bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_envelope_prefix_and_range_match_the_full_encoding() {
        for len in [1usize, 23, 24, 255, 256, 65_535, 65_536, 70_000] {
            let sealed: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let request = EnclaveRequest::Infer {
                sealed: sealed.clone(),
            };
            let full = request.encode().unwrap();
            let mut parts = infer_envelope_prefix(len);
            parts.extend_from_slice(&sealed);
            assert_eq!(parts, full, "request prefix for {len}");
            let response = EnclaveResponse::Infer {
                sealed: sealed.clone(),
            }
            .encode()
            .unwrap();
            assert_eq!(response, full, "both envelopes share the layout");
            let range = infer_envelope_range(&full).unwrap();
            assert_eq!(&full[range], &sealed[..]);
            assert!(EnclaveRequest::decode_owned(full.clone()).unwrap() == request);
            assert!(
                EnclaveResponse::decode_owned(full.clone()).unwrap()
                    == EnclaveResponse::Infer { sealed }
            );
        }
    }

    #[test]
    fn infer_envelope_range_refuses_other_shapes_and_decode_owned_falls_back() {
        let full = EnclaveRequest::Infer {
            sealed: vec![7; 300],
        }
        .encode()
        .unwrap();
        // Trailing byte, truncated body, empty sealed bytes: not the fast shape, and the full
        // decoder refuses them with its usual errors.
        let mut trailing = full.clone();
        trailing.push(0);
        let truncated = full[..full.len() - 1].to_vec();
        let empty = EnclaveRequest::Infer { sealed: vec![] }.encode().unwrap();
        for bad in [trailing, truncated, empty] {
            assert!(infer_envelope_range(&bad).is_none());
            assert_eq!(
                EnclaveRequest::decode_owned(bad.clone()).unwrap_err(),
                EnclaveRequest::decode(&bad).unwrap_err()
            );
        }
        // A non-shortest length argument is valid CBOR: the range still finds the bytes.
        let mut long_form = INFER_ENVELOPE_HEAD.to_vec();
        long_form.push(0x5a);
        long_form.extend_from_slice(&3u32.to_be_bytes());
        long_form.extend_from_slice(b"abc");
        assert_eq!(
            &long_form[infer_envelope_range(&long_form).unwrap()],
            b"abc"
        );
        assert!(
            EnclaveRequest::decode(&long_form).unwrap()
                == EnclaveRequest::Infer {
                    sealed: b"abc".to_vec()
                }
        );
        // Other messages decode as before.
        let health = EnclaveRequest::Health.encode().unwrap();
        assert!(infer_envelope_range(&health).is_none());
        assert!(EnclaveRequest::decode_owned(health).unwrap() == EnclaveRequest::Health);
        // An over-long sealed message is left to the full decoder, which refuses it.
        let mut over = infer_envelope_prefix(MAX_SEALED_MESSAGE_LEN + 1);
        over.resize(over.len() + MAX_SEALED_MESSAGE_LEN + 1, 1);
        assert!(infer_envelope_range(&over).is_none());
        assert!(EnclaveResponse::decode_owned(over).is_err());
    }
    #[test]
    fn sealed_chunk_range_matches_the_full_encoding() {
        let ids = [
            0u64,
            23,
            24,
            255,
            256,
            65_536,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        let lens = [1usize, 23, 24, 256, 70_000, MAX_UPLOAD_CHUNK_LEN];
        for (upload_id, len) in ids.into_iter().zip(lens.into_iter().cycle()) {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let request = EnclaveRequest::LoadSealedModelChunk {
                upload_id,
                data: data.clone(),
            };
            let full = request.encode().unwrap();
            let (id, range) = sealed_chunk_range(&full).unwrap();
            assert_eq!(id, upload_id);
            assert_eq!(&full[range], &data[..], "{upload_id}, {len}");
            assert!(EnclaveRequest::decode(&full).unwrap() == request);
        }
    }

    #[test]
    fn sealed_chunk_range_refuses_what_the_full_decoder_would_not_decode_to_the_same() {
        let chunk = |data: Vec<u8>| {
            EnclaveRequest::LoadSealedModelChunk { upload_id: 9, data }
                .encode()
                .unwrap()
        };
        let full = chunk(vec![7; 300]);
        let mut trailing = full.clone();
        trailing.push(0);
        let truncated = full[..full.len() - 1].to_vec();
        // Empty and over-long data: the full decoder refuses them (the message's limits).
        let empty = chunk(vec![]);
        let over = chunk(vec![1; MAX_UPLOAD_CHUNK_LEN + 1]);
        // The upload id as a negative integer, the data as a text string: other types.
        let mut negative = full.clone();
        negative[CHUNK_ENVELOPE_HEAD.len()] = 0x28;
        let mut text = full.clone();
        let at = CHUNK_ENVELOPE_HEAD.len() + 1 + CHUNK_DATA_KEY.len();
        text[at] = 0x79;
        for bad in [trailing, truncated, empty, over, negative, text] {
            assert!(sealed_chunk_range(&bad).is_none());
            assert!(EnclaveRequest::decode(&bad).is_err());
        }
        // Fields in the other order: valid, not our layout; the full decoder takes it.
        let mut swapped =
            b"\xa1\x77load_sealed_model_chunk\xa2\x64data\x43abc\x69upload_id\x09".to_vec();
        assert!(sealed_chunk_range(&swapped).is_none());
        assert!(
            EnclaveRequest::decode(&swapped).unwrap()
                == EnclaveRequest::LoadSealedModelChunk {
                    upload_id: 9,
                    data: b"abc".to_vec()
                }
        );
        // Non-shortest arguments are valid CBOR: found, and the same values the decoder reads.
        swapped.clear();
        swapped.extend_from_slice(CHUNK_ENVELOPE_HEAD);
        swapped.extend_from_slice(&[0x1b, 0, 0, 0, 0, 0, 0, 0, 9]);
        swapped.extend_from_slice(CHUNK_DATA_KEY);
        swapped.extend_from_slice(&[0x5a, 0, 0, 0, 3]);
        swapped.extend_from_slice(b"abc");
        let (id, range) = sealed_chunk_range(&swapped).unwrap();
        assert_eq!((id, &swapped[range]), (9, &b"abc"[..]));
        assert!(
            EnclaveRequest::decode(&swapped).unwrap()
                == EnclaveRequest::LoadSealedModelChunk {
                    upload_id: 9,
                    data: b"abc".to_vec()
                }
        );
        // Other messages are not chunks.
        for other in [
            EnclaveRequest::Health.encode().unwrap(),
            EnclaveRequest::LoadSealedModelEnd { upload_id: 9 }
                .encode()
                .unwrap(),
            EnclaveRequest::Infer { sealed: vec![1; 9] }
                .encode()
                .unwrap(),
        ] {
            assert!(sealed_chunk_range(&other).is_none());
        }
    }

    use crate::limits::MAX_TENSOR_RANK;

    /// A recognisable payload: if Debug ever printed it, as text or as a byte list, we would see it.
    const PATTERN: &[u8] = b"SECRET-PAYLOAD-PATTERN-0123456789";

    fn leaks(s: &str) -> bool {
        // "SECRET" as text, or the first bytes of the pattern as a Debug list of numbers.
        s.contains("SECRET") || s.contains("83, 69, 67") || s.contains("83,\n")
    }

    fn named(name: &str) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor: Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap(),
        }
    }

    fn request(inputs: Vec<NamedTensor>) -> InferRequest {
        InferRequest {
            model_id: "mnist".into(),
            inputs,
            request_id: [7; REQUEST_ID_LEN],
            sent_at_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn enclave_request_round_trips_every_variant() {
        for req in [
            EnclaveRequest::Health,
            EnclaveRequest::Attestation {
                nonce: vec![7; MIN_NONCE_LEN],
            },
            EnclaveRequest::Infer {
                sealed: PATTERN.to_vec(),
            },
            EnclaveRequest::LoadModel {
                model_id: "resnet-50_v1.2".into(),
                onnx: PATTERN.to_vec(),
            },
            EnclaveRequest::LoadSealedModelBegin {
                header: PATTERN.to_vec(),
                credentials: credentials(),
                host_time: 1_764_000_000,
            },
            EnclaveRequest::LoadSealedModelChunk {
                upload_id: 7,
                data: PATTERN.to_vec(),
            },
            EnclaveRequest::LoadSealedModelEnd { upload_id: 7 },
            EnclaveRequest::LoadSealedModelAbort { upload_id: 7 },
        ] {
            let enc = req.encode().unwrap();
            assert_eq!(EnclaveRequest::decode(&enc).unwrap(), req);
        }
    }

    fn credentials() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "ASIAEXAMPLE12345".into(),
            secret_access_key: zeroize::Zeroizing::new("SECRET-ACCESS-KEY".into()),
            session_token: Some(zeroize::Zeroizing::new("SECRET-TOKEN".into())),
            expires_at: None,
        }
    }

    #[test]
    fn sealed_model_load_fields_are_bounded_and_debug_hides_secrets() {
        let begin = |header: usize, credentials: AwsCredentials| {
            EnclaveRequest::decode(
                &EnclaveRequest::LoadSealedModelBegin {
                    header: vec![1; header],
                    credentials,
                    host_time: 0,
                }
                .encode()
                .unwrap(),
            )
        };
        assert!(begin(MAX_SEALED_MODEL_HEADER_LEN, credentials()).is_ok());
        assert!(begin(0, credentials()).is_err());
        assert!(begin(MAX_SEALED_MODEL_HEADER_LEN + 1, credentials()).is_err());
        let mut bad = credentials();
        bad.secret_access_key = zeroize::Zeroizing::new("x\ny".into());
        assert_eq!(
            begin(10, bad).unwrap_err().code(),
            ErrorCode::MalformedMessage
        );
        let chunk = |n: usize| {
            EnclaveRequest::decode(
                &EnclaveRequest::LoadSealedModelChunk {
                    upload_id: 1,
                    data: vec![0; n],
                }
                .encode()
                .unwrap(),
            )
        };
        assert!(chunk(MAX_UPLOAD_CHUNK_LEN).is_ok());
        assert!(chunk(0).is_err());
        assert!(chunk(MAX_UPLOAD_CHUNK_LEN + 1).is_err());
        let debug = format!(
            "{:?}",
            EnclaveRequest::LoadSealedModelBegin {
                header: PATTERN.to_vec(),
                credentials: credentials(),
                host_time: 0,
            }
        );
        assert!(!leaks(&debug), "{debug}");
        assert!(debug.contains("ASIAEXAMPLE12345"));
    }

    #[test]
    fn attestation_nonce_length_is_bounded() {
        let decode = |n: usize| {
            let enc = EnclaveRequest::Attestation { nonce: vec![1; n] }
                .encode()
                .unwrap();
            EnclaveRequest::decode(&enc)
        };
        for ok in [MIN_NONCE_LEN, 32, MAX_NONCE_LEN] {
            assert!(decode(ok).is_ok(), "{ok}");
        }
        for bad in [0, 1, MIN_NONCE_LEN - 1, MAX_NONCE_LEN + 1, 1024] {
            let err = decode(bad).unwrap_err();
            assert_eq!(
                err,
                MessageError::FieldLength {
                    field: "nonce",
                    len: bad,
                    min: MIN_NONCE_LEN,
                    max: MAX_NONCE_LEN
                }
            );
            assert_eq!(err.code(), ErrorCode::InvalidNonce);
        }
    }

    #[test]
    fn rejects_empty_sealed_payload() {
        let enc = EnclaveRequest::Infer { sealed: vec![] }.encode().unwrap();
        let err = EnclaveRequest::decode(&enc).unwrap_err();
        assert!(matches!(
            err,
            MessageError::FieldLength {
                field: "sealed",
                len: 0,
                ..
            }
        ));
        assert_eq!(err.code(), ErrorCode::MalformedMessage);
        let enc = EnclaveResponse::Infer { sealed: vec![] }.encode().unwrap();
        assert!(matches!(
            EnclaveResponse::decode(&enc),
            Err(MessageError::FieldLength {
                field: "sealed",
                len: 0,
                ..
            })
        ));
    }

    #[test]
    fn rejects_sealed_payload_over_the_limit() {
        let sealed = vec![0; MAX_SEALED_MESSAGE_LEN + 1];
        let enc = EnclaveRequest::Infer { sealed }.encode().unwrap();
        assert!(matches!(
            EnclaveRequest::decode(&enc),
            Err(MessageError::FieldLength {
                field: "sealed",
                ..
            })
        ));
    }

    #[test]
    fn valid_model_ids() {
        for ok in [
            "a",
            "mnist",
            "resnet-50_v1.2",
            "A.B-C_9",
            &"x".repeat(MAX_MODEL_ID_LEN),
        ] {
            assert!(valid_model_id(ok), "{ok:?}");
        }
        for bad in [
            "",
            "has space",
            "../etc/passwd",
            "a/b",
            "é",
            "nul\0",
            "line\n",
            &"x".repeat(MAX_MODEL_ID_LEN + 1),
        ] {
            assert!(!valid_model_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn load_model_rejects_invalid_model_id_and_empty_model() {
        for id in ["", "a b", "../x", &"m".repeat(MAX_MODEL_ID_LEN + 1)] {
            let enc = EnclaveRequest::LoadModel {
                model_id: id.into(),
                onnx: vec![1],
            }
            .encode()
            .unwrap();
            assert_eq!(
                EnclaveRequest::decode(&enc),
                Err(MessageError::InvalidModelId)
            );
        }
        let enc = EnclaveRequest::LoadModel {
            model_id: "m".into(),
            onnx: vec![],
        }
        .encode()
        .unwrap();
        assert!(matches!(
            EnclaveRequest::decode(&enc),
            Err(MessageError::FieldLength { field: "onnx", .. })
        ));
    }

    #[test]
    fn infer_request_round_trips() {
        let req = request(vec![named("x"), named("y")]);
        assert_eq!(InferRequest::decode(&req.encode().unwrap()).unwrap(), req);
        let empty = request(vec![]);
        assert_eq!(
            InferRequest::decode(&empty.encode().unwrap()).unwrap(),
            empty
        );
    }

    #[test]
    fn infer_request_rejects_invalid_model_id() {
        let mut req = request(vec![named("x")]);
        req.model_id = "no/slashes".into();
        assert_eq!(
            InferRequest::decode(&req.encode().unwrap()),
            Err(MessageError::InvalidModelId)
        );
    }

    #[test]
    fn rejects_duplicate_tensor_names() {
        let req = request(vec![named("x"), named("y"), named("x")]);
        let err = InferRequest::decode(&req.encode().unwrap()).unwrap_err();
        assert_eq!(err, MessageError::DuplicateName("x".into()));
        let resp = InferResponse::Ok {
            outputs: vec![named("out"), named("out")],
        };
        assert_eq!(
            InferResponse::decode(&resp.encode().unwrap()),
            Err(MessageError::DuplicateName("out".into()))
        );
    }

    #[test]
    fn rejects_invalid_tensor_names() {
        for name in ["", "tab\there", "nl\n", &"n".repeat(MAX_NAME_LEN + 1)] {
            let req = request(vec![named(name)]);
            assert_eq!(
                InferRequest::decode(&req.encode().unwrap()),
                Err(MessageError::InvalidName),
                "{name:?}"
            );
        }
        // Names are model metadata, not ids: any printable Unicode is fine.
        let req = request(vec![named("input:0/ü"), named(&"n".repeat(MAX_NAME_LEN))]);
        assert!(InferRequest::decode(&req.encode().unwrap()).is_ok());
    }

    #[test]
    fn rejects_too_many_tensors() {
        let at_limit: Vec<_> = (0..MAX_TENSORS).map(|i| named(&format!("t{i}"))).collect();
        let req = request(at_limit.clone());
        assert!(InferRequest::decode(&req.encode().unwrap()).is_ok());

        let mut over = at_limit;
        over.push(named("one-more"));
        let req = request(over.clone());
        assert_eq!(
            InferRequest::decode(&req.encode().unwrap()),
            Err(MessageError::TooManyTensors { max: MAX_TENSORS })
        );
        let resp = InferResponse::Ok { outputs: over };
        assert_eq!(
            InferResponse::decode(&resp.encode().unwrap()),
            Err(MessageError::TooManyTensors { max: MAX_TENSORS })
        );
    }

    #[test]
    fn invalid_tensor_inside_a_request_maps_to_invalid_tensor() {
        #[derive(Serialize)]
        struct RawReq {
            model_id: &'static str,
            inputs: Vec<RawNamed>,
        }
        #[derive(Serialize)]
        struct RawNamed {
            name: &'static str,
            tensor: RawT,
        }
        #[derive(Serialize)]
        struct RawT {
            dtype: &'static str,
            shape: Vec<u64>,
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        for (shape, data) in [
            (vec![u64::MAX, 2], vec![]),
            (vec![2], vec![0; 3]),
            (vec![1; MAX_TENSOR_RANK + 1], vec![0; 4]),
            (vec![1; 10_000], vec![0; 4]),
        ] {
            let raw = RawReq {
                model_id: "m",
                inputs: vec![RawNamed {
                    name: "x",
                    tensor: RawT {
                        dtype: "f32",
                        shape,
                        data,
                    },
                }],
            };
            let enc = cbor::to_vec(&raw).unwrap();
            let err = InferRequest::decode(&enc).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidTensor, "{err}");
        }
    }

    #[test]
    fn oversize_input_maps_to_request_too_large() {
        let input = vec![0u8; MAX_SEALED_MESSAGE_LEN + 1];
        let err = InferRequest::decode(&input).unwrap_err();
        assert!(matches!(
            err,
            MessageError::Cbor(CborError::TooLarge { .. })
        ));
        assert_eq!(err.code(), ErrorCode::RequestTooLarge);
        assert!(InferResponse::decode(&input).is_err());
    }

    #[test]
    fn decoders_reject_trailing_bytes() {
        let mut enc = EnclaveRequest::Health.encode().unwrap();
        enc.push(0);
        assert_eq!(
            EnclaveRequest::decode(&enc),
            Err(MessageError::Cbor(CborError::TrailingBytes))
        );
        let mut enc = request(vec![]).encode().unwrap();
        enc.extend_from_slice(&[0xa0]);
        assert_eq!(
            InferRequest::decode(&enc),
            Err(MessageError::Cbor(CborError::TrailingBytes))
        );
    }

    #[test]
    fn rejects_unknown_request_variant() {
        let enc = cbor::to_vec(&"shutdown").unwrap();
        let err = EnclaveRequest::decode(&enc).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedMessage);
        assert!(!err.to_string().contains("shutdown"), "{err}");
    }

    #[test]
    fn infer_response_round_trips_and_bounds_its_error_message() {
        for resp in [
            InferResponse::Ok {
                outputs: vec![named("y")],
            },
            InferResponse::Error {
                code: ErrorCode::InputMismatch,
                message: "expected 1x784".into(),
            },
            InferResponse::Error {
                code: ErrorCode::Unknown(4242),
                message: String::new(),
            },
        ] {
            assert_eq!(
                InferResponse::decode(&resp.encode().unwrap()).unwrap(),
                resp
            );
        }
        let long = InferResponse::Error {
            code: ErrorCode::Internal,
            message: "x".repeat(MAX_ERROR_MESSAGE_LEN + 1),
        };
        assert!(matches!(
            InferResponse::decode(&long.encode().unwrap()),
            Err(MessageError::FieldLength {
                field: "message",
                ..
            })
        ));
    }

    fn model_info(id: &str) -> ModelInfo {
        ModelInfo {
            model_id: id.into(),
            sha384: vec![9; 48],
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: Some(DType::F32),
                shape: vec![None, Some(784)],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                dtype: None,
                shape: vec![],
            }],
        }
    }

    #[test]
    fn enclave_response_round_trips_every_variant() {
        for resp in [
            EnclaveResponse::Health(HealthStatus {
                protocol_version: crate::PROTOCOL_VERSION,
                ready: true,
                simulation: false,
                workers: 2,
                in_flight: 1,
                batched_requests: 7,
                models: vec![model_info("a"), model_info("b")],
            }),
            EnclaveResponse::Attestation {
                document: vec![0xd2; 100],
                manifest: vec![0xa1; 10],
            },
            EnclaveResponse::Infer {
                sealed: PATTERN.to_vec(),
            },
            EnclaveResponse::ModelLoaded(model_info("m")),
            EnclaveResponse::SealedModelReady {
                upload_id: u64::MAX,
                sealed_len: 1 << 40,
            },
            EnclaveResponse::SealedChunkAccepted {
                upload_id: 3,
                received: 4096,
            },
            EnclaveResponse::SealedUploadAborted { upload_id: 3 },
            EnclaveResponse::error(ErrorCode::Busy, "queue full"),
        ] {
            assert_eq!(
                EnclaveResponse::decode(&resp.encode().unwrap()).unwrap(),
                resp
            );
        }
    }

    #[test]
    fn enclave_response_bounds_attestation_fields() {
        let decode = |document: usize, manifest: usize| {
            let enc = EnclaveResponse::Attestation {
                document: vec![1; document],
                manifest: vec![1; manifest],
            }
            .encode()
            .unwrap();
            EnclaveResponse::decode(&enc)
        };
        assert!(decode(MAX_ATTESTATION_DOC_LEN, MAX_MANIFEST_LEN).is_ok());
        for (d, m, field) in [
            (0, 1, "document"),
            (MAX_ATTESTATION_DOC_LEN + 1, 1, "document"),
            (1, 0, "manifest"),
            (1, MAX_MANIFEST_LEN + 1, "manifest"),
        ] {
            assert!(
                matches!(decode(d, m), Err(MessageError::FieldLength { field: f, .. }) if f == field),
                "{d} {m}"
            );
        }
    }

    #[test]
    fn enclave_response_bounds_health_models_and_error_message() {
        let health = |n: usize| HealthStatus {
            protocol_version: 1,
            ready: true,
            simulation: true,
            workers: 1,
            in_flight: 0,
            batched_requests: 0,
            models: (0..n).map(|i| model_info(&format!("m{i}"))).collect(),
        };
        let ok = EnclaveResponse::Health(health(MAX_MODELS))
            .encode()
            .unwrap();
        assert!(EnclaveResponse::decode(&ok).is_ok());
        let over = EnclaveResponse::Health(health(MAX_MODELS + 1))
            .encode()
            .unwrap();
        assert!(EnclaveResponse::decode(&over).is_err());

        // Built without `WireError::new`, so not truncated: the decoder refuses it.
        let long = EnclaveResponse::Error(WireError {
            code: ErrorCode::Internal,
            message: "x".repeat(MAX_ERROR_MESSAGE_LEN + 1),
        });
        assert!(matches!(
            EnclaveResponse::decode(&long.encode().unwrap()),
            Err(MessageError::FieldLength {
                field: "message",
                ..
            })
        ));
    }

    #[test]
    fn wire_error_keeps_short_messages_whole() {
        let e = WireError::new(ErrorCode::Busy, "try later");
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::Busy, "try later"));
        let exact = "x".repeat(MAX_ERROR_MESSAGE_LEN);
        assert_eq!(
            WireError::new(ErrorCode::Busy, exact.clone()).message,
            exact
        );
    }

    #[test]
    fn wire_error_truncates_long_messages_at_a_char_boundary() {
        let ascii = WireError::new(ErrorCode::Internal, "a".repeat(600));
        assert_eq!(ascii.message.len(), MAX_ERROR_MESSAGE_LEN);

        // 'é' is 2 bytes: 512 is a boundary. '€' is 3 bytes: 512 is inside one, cut to 510.
        let two = WireError::new(ErrorCode::Internal, "é".repeat(300));
        assert_eq!(two.message, "é".repeat(256));
        let three = WireError::new(ErrorCode::Internal, "€".repeat(200));
        assert_eq!(three.message, "€".repeat(170));
        assert_eq!(three.message.len(), 510);
        // 4-byte chars after one ASCII byte: boundaries at 1, 5, …, 509.
        let four = WireError::new(ErrorCode::Internal, format!("a{}", "😀".repeat(200)));
        assert_eq!(four.message.len(), 509);
        assert!(four.message.ends_with('😀'));

        // The truncated message decodes on the other side.
        let enc = EnclaveResponse::Error(three).encode().unwrap();
        assert!(EnclaveResponse::decode(&enc).is_ok());
    }

    #[test]
    fn debug_of_enclave_request_never_shows_payload_bytes() {
        for req in [
            EnclaveRequest::Attestation {
                nonce: PATTERN.to_vec(),
            },
            EnclaveRequest::Infer {
                sealed: PATTERN.to_vec(),
            },
            EnclaveRequest::LoadModel {
                model_id: "m".into(),
                onnx: PATTERN.to_vec(),
            },
        ] {
            for s in [format!("{req:?}"), format!("{req:#?}")] {
                assert!(!leaks(&s), "{s}");
                assert!(s.contains(&PATTERN.len().to_string()), "{s}");
            }
        }
        assert_eq!(format!("{:?}", EnclaveRequest::Health), "Health");
    }

    #[test]
    fn debug_of_enclave_response_never_shows_payload_bytes() {
        for resp in [
            EnclaveResponse::Attestation {
                document: PATTERN.to_vec(),
                manifest: PATTERN.to_vec(),
            },
            EnclaveResponse::Infer {
                sealed: PATTERN.to_vec(),
            },
        ] {
            let s = format!("{resp:?}");
            assert!(!leaks(&s), "{s}");
        }
    }

    #[test]
    fn debug_of_infer_messages_never_shows_tensor_data() {
        let t = Tensor::new(DType::U8, vec![PATTERN.len() as u64], PATTERN.to_vec()).unwrap();
        let req = request(vec![NamedTensor {
            name: "x".into(),
            tensor: t.clone(),
        }]);
        let resp = InferResponse::Ok {
            outputs: vec![NamedTensor {
                name: "y".into(),
                tensor: t,
            }],
        };
        for s in [format!("{req:?}"), format!("{req:#?}"), format!("{resp:?}")] {
            assert!(!leaks(&s), "{s}");
        }
    }

    #[test]
    fn error_codes_of_message_errors() {
        assert_eq!(
            MessageError::Cbor(CborError::TooLarge { len: 2, max: 1 }).code(),
            ErrorCode::RequestTooLarge
        );
        assert_eq!(
            MessageError::InvalidModelId.code(),
            ErrorCode::MalformedMessage
        );
        assert_eq!(
            MessageError::TooManyTensors { max: MAX_TENSORS }.code(),
            ErrorCode::MalformedMessage
        );
        assert_eq!(
            MessageError::DuplicateName("x".into()).code(),
            ErrorCode::MalformedMessage
        );
        assert_eq!(
            MessageError::Cbor(CborError::TrailingBytes).code(),
            ErrorCode::MalformedMessage
        );
    }
}
