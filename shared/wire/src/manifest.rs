//! The loaded-model manifest: which models the enclave serves, by id and SHA-384 of their ONNX
//! bytes. The attestation `user_data` commits to the SHA-384 of its exact encoded bytes, so the
//! enclave sends those bytes as they are and clients hash what they received before decoding it.

use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError};
use crate::limits::{MAX_MANIFEST_LEN, MAX_MODELS, MAX_MODEL_ID_LEN};

/// One loaded model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub model_id: String,
    /// SHA-384 of the model's ONNX bytes.
    #[serde(with = "serde_bytes")]
    pub sha384: Vec<u8>,
}

/// The set of loaded models, sorted by id (so that one set has one encoding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub models: Vec<ManifestEntry>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest encoding: {0}")]
    Cbor(#[from] CborError),
    #[error("manifest lists more than {max} models")]
    TooManyModels { max: usize },
    #[error("manifest entry has an invalid model id or digest")]
    InvalidEntry,
    #[error("manifest entries are not sorted by unique model id")]
    NotSorted,
}

impl ModelManifest {
    /// Adds or replaces an entry, keeping the list sorted by id.
    pub fn insert(&mut self, model_id: String, sha384: Vec<u8>) {
        match self
            .models
            .binary_search_by(|e| e.model_id.as_str().cmp(model_id.as_str()))
        {
            Ok(i) => {
                if let Some(e) = self.models.get_mut(i) {
                    e.sha384 = sha384;
                }
            }
            Err(i) => self.models.insert(i, ManifestEntry { model_id, sha384 }),
        }
    }

    /// Canonical encoding: the bytes that the attestation commitment hashes.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        Ok(cbor::to_vec(self)?)
    }

    /// Decodes and validates (limits, sorted unique ids, 48-byte digests).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: ModelManifest = cbor::from_slice(bytes, MAX_MANIFEST_LEN)?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.models.len() > MAX_MODELS {
            return Err(ManifestError::TooManyModels { max: MAX_MODELS });
        }
        for e in &self.models {
            if !crate::message::valid_model_id(&e.model_id) || e.sha384.len() != 48 {
                return Err(ManifestError::InvalidEntry);
            }
        }
        if self
            .models
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.model_id >= b.model_id))
        {
            return Err(ManifestError::NotSorted);
        }
        let _ = MAX_MODEL_ID_LEN;
        Ok(())
    }
}
