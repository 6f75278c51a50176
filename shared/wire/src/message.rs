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
use crate::error::ErrorCode;
use crate::limits::{
    MAX_ATTESTATION_DOC_LEN, MAX_ERROR_MESSAGE_LEN, MAX_FRAME_LEN, MAX_MANIFEST_LEN,
    MAX_MODEL_ID_LEN, MAX_MODEL_LEN, MAX_MODELS, MAX_NAME_LEN, MAX_NONCE_LEN, MAX_SEALED_MESSAGE_LEN,
    MAX_TENSORS, MIN_NONCE_LEN,
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
}

impl MessageError {
    /// The stable code a peer receives for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::Cbor(CborError::TooLarge { .. }) => ErrorCode::RequestTooLarge,
            MessageError::Cbor(CborError::Malformed(m)) if m.contains("tensor") => {
                ErrorCode::InvalidTensor
            }
            MessageError::FieldLength {
                field: "nonce", ..
            } => ErrorCode::InvalidNonce,
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

fn valid_name(name: &str) -> bool {
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
    #[serde(with = "serde_bytes")]
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
        if message.len() > MAX_ERROR_MESSAGE_LEN {
            let mut cut = MAX_ERROR_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
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
}

// Model bytes and sealed payloads never reach a log through Debug.
impl std::fmt::Debug for EnclaveRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnclaveRequest::Health => f.write_str("Health"),
            EnclaveRequest::Attestation { nonce } => {
                write!(f, "Attestation {{ nonce_len: {} }}", nonce.len())
            }
            EnclaveRequest::Infer { sealed } => write!(f, "Infer {{ sealed_len: {} }}", sealed.len()),
            EnclaveRequest::LoadModel { model_id, onnx } => {
                write!(f, "LoadModel {{ model_id: {model_id:?}, len: {} }}", onnx.len())
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
            EnclaveResponse::Infer { sealed } => write!(f, "Infer {{ sealed_len: {} }}", sealed.len()),
            EnclaveResponse::ModelLoaded(m) => f.debug_tuple("ModelLoaded").field(m).finish(),
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
            EnclaveResponse::ModelLoaded(_) => {}
        }
        Ok(msg)
    }
}

/// The plaintext of a sealed inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    pub model_id: String,
    pub inputs: Vec<NamedTensor>,
}

impl InferRequest {
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        Ok(cbor::to_vec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let msg: InferRequest = cbor::from_slice(bytes, MAX_SEALED_MESSAGE_LEN)?;
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
    Ok { outputs: Vec<NamedTensor> },
    Error { code: ErrorCode, message: String },
}

impl InferResponse {
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        Ok(cbor::to_vec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let msg: InferResponse = cbor::from_slice(bytes, MAX_SEALED_MESSAGE_LEN)?;
        match &msg {
            InferResponse::Ok { outputs } => check_tensors(outputs)?,
            InferResponse::Error { message, .. } => {
                check_len("message", message.len(), 0, MAX_ERROR_MESSAGE_LEN)?
            }
        }
        Ok(msg)
    }
}
