//! Startup model loading: `--load-model ID=PATH` reads a plaintext ONNX file and hands it to the
//! enclave as [`EnclaveRequest::LoadModel`].
//!
//! Simulation only: a production enclave answers `plaintext_models_disabled`, and startup then
//! fails with that code, so that an operator never believes a model is served when it is not.
//! Sealed models (KMS-wrapped) are a separate path, not handled here.
//!
//! What it does not do: parse or validate ONNX (the enclave does), or log model bytes. It logs the
//! model id, size and the SHA-384 the enclave reports.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sealed_wire::limits::MAX_MODEL_LEN;
use sealed_wire::message::valid_model_id;
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode, ModelInfo};
use tokio::io::AsyncReadExt;
use tracing::info;

use crate::enclave_pool::{EnclavePool, PoolError};

/// One `--load-model ID=PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub model_id: String,
    pub path: PathBuf,
}

/// Why a `--load-model` argument is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelSpecError {
    #[error("expected ID=PATH")]
    MissingSeparator,
    #[error("invalid model id {0:?}: use 1-128 characters of A-Z a-z 0-9 . _ -")]
    InvalidId(String),
    #[error("empty model path")]
    EmptyPath,
}

impl FromStr for ModelSpec {
    type Err = ModelSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, path) = s.split_once('=').ok_or(ModelSpecError::MissingSeparator)?;
        if !valid_model_id(id) {
            return Err(ModelSpecError::InvalidId(id.to_string()));
        }
        if path.is_empty() {
            return Err(ModelSpecError::EmptyPath);
        }
        Ok(ModelSpec {
            model_id: id.to_string(),
            path: PathBuf::from(path),
        })
    }
}

/// Why startup model loading failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error("cannot read model file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {path} is larger than the {max}-byte limit")]
    TooLarge { path: PathBuf, max: usize },
    #[error("model file {path} is empty")]
    Empty { path: PathBuf },
    #[error("the enclave at {endpoint} was not reachable within {waited:?}")]
    EnclaveUnreachable { endpoint: String, waited: Duration },
    #[error("the enclave refused model {model_id:?}: {code}: {message}")]
    Refused {
        model_id: String,
        code: ErrorCode,
        message: String,
    },
    #[error("loading model {model_id:?}")]
    Pool {
        model_id: String,
        #[source]
        source: PoolError,
    },
    #[error("loading model {model_id:?}: the enclave answered with the wrong response kind")]
    UnexpectedResponse { model_id: String },
}

/// Reads a model file, refusing one larger than [`MAX_MODEL_LEN`] before reading it (and again
/// while reading, in case the file grows in between).
pub async fn read_model(path: &Path) -> Result<Vec<u8>, ModelLoadError> {
    let read_err = |source| ModelLoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || ModelLoadError::TooLarge {
        path: path.to_path_buf(),
        max: MAX_MODEL_LEN,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let len = file.metadata().await.map_err(read_err)?.len();
    if len > MAX_MODEL_LEN as u64 {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_MODEL_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(read_err)?;
    if bytes.len() > MAX_MODEL_LEN {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Err(ModelLoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Checks that every model file exists and is within [`MAX_MODEL_LEN`], so that a typo fails
/// startup at once; the bytes are read later, one model at a time, to hold at most one in memory.
pub async fn check_files(specs: &[ModelSpec]) -> Result<(), ModelLoadError> {
    for spec in specs {
        let meta =
            tokio::fs::metadata(&spec.path)
                .await
                .map_err(|source| ModelLoadError::Read {
                    path: spec.path.clone(),
                    source,
                })?;
        if meta.len() > MAX_MODEL_LEN as u64 {
            return Err(ModelLoadError::TooLarge {
                path: spec.path.clone(),
                max: MAX_MODEL_LEN,
            });
        }
    }
    Ok(())
}

/// Loads every model in order, after waiting up to `connect_timeout` for the enclave. Each load
/// may take up to `load_timeout`. Stops at the first failure.
pub async fn load_models(
    pool: &EnclavePool,
    endpoint: &str,
    specs: &[ModelSpec],
    connect_timeout: Duration,
    load_timeout: Duration,
) -> Result<Vec<ModelInfo>, ModelLoadError> {
    check_files(specs).await?;
    if !specs.is_empty() && !pool.wait_connected(connect_timeout).await {
        return Err(ModelLoadError::EnclaveUnreachable {
            endpoint: endpoint.to_string(),
            waited: connect_timeout,
        });
    }
    let mut loaded = Vec::with_capacity(specs.len());
    for spec in specs {
        let onnx = read_model(&spec.path).await?;
        let len = onnx.len();
        let request = EnclaveRequest::LoadModel {
            model_id: spec.model_id.clone(),
            onnx,
        };
        let pool_err = |source| ModelLoadError::Pool {
            model_id: spec.model_id.clone(),
            source,
        };
        match pool
            .call_with_timeout(&request, load_timeout)
            .await
            .map_err(pool_err)?
        {
            EnclaveResponse::ModelLoaded(info) => {
                info!(model_id = %info.model_id, len, sha384 = %hex::encode(&info.sha384), "model loaded");
                loaded.push(info);
            }
            EnclaveResponse::Error(e) => {
                return Err(ModelLoadError::Refused {
                    model_id: spec.model_id.clone(),
                    code: e.code,
                    message: e.message,
                });
            }
            _ => {
                return Err(ModelLoadError::UnexpectedResponse {
                    model_id: spec.model_id.clone(),
                });
            }
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_specs() {
        assert_eq!(
            "mlp=/models/a=b.onnx".parse::<ModelSpec>().unwrap(),
            ModelSpec {
                model_id: "mlp".into(),
                path: "/models/a=b.onnx".into()
            }
        );
        assert_eq!(
            "mlp".parse::<ModelSpec>(),
            Err(ModelSpecError::MissingSeparator)
        );
        assert!(matches!(
            "a/b=/m".parse::<ModelSpec>(),
            Err(ModelSpecError::InvalidId(_))
        ));
        assert!(matches!(
            "=/m".parse::<ModelSpec>(),
            Err(ModelSpecError::InvalidId(_))
        ));
        assert_eq!("m=".parse::<ModelSpec>(), Err(ModelSpecError::EmptyPath));
    }

    #[tokio::test]
    async fn reads_a_model_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"onnx bytes").unwrap();
        assert_eq!(read_model(&path).await.unwrap(), b"onnx bytes");
    }

    #[tokio::test]
    async fn refuses_a_model_file_over_the_limit_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.onnx");
        // Sparse: the size is checked from metadata, so this costs no disk and no memory.
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_MODEL_LEN as u64 + 1).unwrap();
        assert!(matches!(
            read_model(&path).await,
            Err(ModelLoadError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn gives_up_when_the_enclave_stays_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"onnx bytes").unwrap();
        let endpoint = sealed_transport::Endpoint::Unix(dir.path().join("absent.sock"));
        let pool = EnclavePool::start(crate::enclave_pool::PoolConfig::new(endpoint));
        let specs = [ModelSpec {
            model_id: "m".into(),
            path,
        }];
        let started = std::time::Instant::now();
        let err = load_models(
            &pool,
            "unix:absent",
            &specs,
            Duration::from_millis(200),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, ModelLoadError::EnclaveUnreachable { .. }),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn refuses_empty_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.onnx");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            read_model(&path).await,
            Err(ModelLoadError::Empty { .. })
        ));
        assert!(matches!(
            read_model(&dir.path().join("missing.onnx")).await,
            Err(ModelLoadError::Read { .. })
        ));
    }
}
