//! The loaded-model manifest: which models the enclave serves, by id and SHA-384 of their ONNX
//! bytes. The attestation `user_data` commits to the SHA-384 of its exact encoded bytes, so the
//! enclave sends those bytes as they are and clients hash what they received before decoding it.

use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError};
use crate::limits::{MAX_MANIFEST_LEN, MAX_MODELS};

/// One loaded model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub model_id: String,
    /// SHA-384 of the model's ONNX bytes.
    #[serde(with = "crate::digest_bytes")]
    pub sha384: Vec<u8>,
}

/// The set of loaded models, sorted by id (so that one set has one encoding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest {
    #[serde(deserialize_with = "de_entries")]
    pub models: Vec<ManifestEntry>,
}

const MODELS: &str = "models";

// The model count is bounded while decoding, before a long list is collected.
fn de_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ManifestEntry>, D::Error> {
    cbor::bounded_seq(d, MAX_MODELS, MODELS)
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
        let m: ModelManifest = cbor::from_slice(bytes, MAX_MANIFEST_LEN).map_err(|e| {
            if cbor::is_too_many(&e, MAX_MODELS, MODELS) {
                ManifestError::TooManyModels { max: MAX_MODELS }
            } else {
                ManifestError::Cbor(e)
            }
        })?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: u8) -> Vec<u8> {
        vec![b; 48]
    }

    fn entry(id: &str, b: u8) -> ManifestEntry {
        ManifestEntry {
            model_id: id.into(),
            sha384: digest(b),
        }
    }

    fn ids(m: &ModelManifest) -> Vec<&str> {
        m.models.iter().map(|e| e.model_id.as_str()).collect()
    }

    #[test]
    fn insert_keeps_entries_sorted_by_id() {
        let mut m = ModelManifest::default();
        for id in ["mnist", "bert", "resnet-50", "a", "z.v2"] {
            m.insert(id.into(), digest(1));
        }
        assert_eq!(ids(&m), ["a", "bert", "mnist", "resnet-50", "z.v2"]);
    }

    #[test]
    fn insert_of_a_known_id_replaces_its_digest() {
        let mut m = ModelManifest::default();
        m.insert("b".into(), digest(1));
        m.insert("a".into(), digest(2));
        m.insert("b".into(), digest(3));
        assert_eq!(m.models, vec![entry("a", 2), entry("b", 3)]);
    }

    #[test]
    fn encode_decode_round_trips() {
        let mut m = ModelManifest::default();
        m.insert("mnist".into(), digest(0xaa));
        m.insert("bert".into(), digest(0xbb));
        let enc = m.encode().unwrap();
        assert_eq!(ModelManifest::decode(&enc).unwrap(), m);
        // One set of models has one encoding: the bytes the attestation commits to.
        let mut other = ModelManifest::default();
        other.insert("bert".into(), digest(0xbb));
        other.insert("mnist".into(), digest(0xaa));
        assert_eq!(other.encode().unwrap(), enc);
    }

    #[test]
    fn empty_manifest_round_trips() {
        let m = ModelManifest::default();
        assert_eq!(ModelManifest::decode(&m.encode().unwrap()).unwrap(), m);
    }

    #[test]
    fn decode_rejects_unsorted_or_duplicate_ids() {
        for models in [
            vec![entry("b", 1), entry("a", 1)],
            vec![entry("a", 1), entry("a", 2)],
        ] {
            let m = ModelManifest { models };
            let enc = cbor::to_vec(&m).unwrap();
            assert!(matches!(
                ModelManifest::decode(&enc),
                Err(ManifestError::NotSorted)
            ));
            assert!(matches!(m.encode(), Err(ManifestError::NotSorted)));
        }
    }

    #[test]
    fn decode_rejects_bad_digest_length() {
        for len in [0, 32, 47, 49, 64] {
            let m = ModelManifest {
                models: vec![ManifestEntry {
                    model_id: "m".into(),
                    sha384: vec![0; len],
                }],
            };
            let enc = cbor::to_vec(&m).unwrap();
            assert!(matches!(
                ModelManifest::decode(&enc),
                Err(ManifestError::InvalidEntry)
            ));
            assert!(matches!(m.encode(), Err(ManifestError::InvalidEntry)));
        }
    }

    #[test]
    fn decode_rejects_invalid_model_id() {
        for id in ["", "has space", "../etc", "é", &"x".repeat(129)] {
            let m = ModelManifest {
                models: vec![entry(id, 1)],
            };
            let enc = cbor::to_vec(&m).unwrap();
            assert!(
                matches!(
                    ModelManifest::decode(&enc),
                    Err(ManifestError::InvalidEntry)
                ),
                "{id:?}"
            );
        }
    }

    #[test]
    fn rejects_more_than_max_models() {
        let mut m = ModelManifest::default();
        for i in 0..MAX_MODELS {
            m.insert(format!("m{i:03}"), digest(1));
        }
        assert!(ModelManifest::decode(&m.encode().unwrap()).is_ok());
        m.insert("zzz".into(), digest(1));
        assert!(matches!(
            m.encode(),
            Err(ManifestError::TooManyModels { max: MAX_MODELS })
        ));
        let enc = cbor::to_vec(&m).unwrap();
        assert!(matches!(
            ModelManifest::decode(&enc),
            Err(ManifestError::TooManyModels { max: MAX_MODELS })
        ));
    }

    #[test]
    fn decode_rejects_oversize_input() {
        let input = vec![0u8; MAX_MANIFEST_LEN + 1];
        assert!(matches!(
            ModelManifest::decode(&input),
            Err(ManifestError::Cbor(CborError::TooLarge { .. }))
        ));
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut enc = ModelManifest::default().encode().unwrap();
        enc.push(0);
        assert!(matches!(
            ModelManifest::decode(&enc),
            Err(ManifestError::Cbor(CborError::TrailingBytes))
        ));
    }
}
