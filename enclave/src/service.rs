//! Request handling: one [`EnclaveRequest`] in, one [`EnclaveResponse`] out. This is where the
//! attestation binds the HPKE key and the model manifest, where sealed requests are opened, run and
//! sealed back, and where plaintext model loading is refused outside simulation builds.
//!
//! Everything that can go wrong *after* a sealed request has been opened is answered inside the
//! sealed response, so the host learns only that a request was answered, never why it failed.

use std::sync::Arc;

use sealed_attestation::commitment;
use sealed_crypto::{ResponseSealer, ServerKey};
use sealed_wire::{
    EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, InferRequest, InferResponse,
    PROTOCOL_VERSION,
};
use tracing::{debug, warn};

use crate::engine::Engine;
use crate::nsm::{self, Nsm};

/// Whether this build accepts plaintext models from the host. Compile-time only: no runtime flag
/// can turn it on in a production build.
pub const PLAINTEXT_MODELS_ALLOWED: bool = cfg!(feature = "simulation");

/// Shared state of the enclave's request handling.
pub struct Service {
    nsm: Arc<dyn Nsm>,
    key: ServerKey,
    engine: Arc<Engine>,
}

impl Service {
    pub fn new(nsm: Arc<dyn Nsm>, key: ServerKey, engine: Arc<Engine>) -> Self {
        Service { nsm, key, engine }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Handles one request. Never panics on input; every failure becomes an error response.
    pub async fn handle(self: &Arc<Self>, request: EnclaveRequest) -> EnclaveResponse {
        match request {
            EnclaveRequest::Health => EnclaveResponse::Health(self.health()),
            EnclaveRequest::Attestation { nonce } => self.attest(nonce).await,
            EnclaveRequest::Infer { sealed } => self.infer(sealed).await,
            EnclaveRequest::LoadModel { model_id, onnx } => {
                self.load_plaintext(model_id, onnx).await
            }
        }
    }

    fn health(&self) -> HealthStatus {
        HealthStatus {
            protocol_version: PROTOCOL_VERSION,
            ready: true,
            simulation: PLAINTEXT_MODELS_ALLOWED,
            workers: u32::try_from(self.engine.workers()).unwrap_or(u32::MAX),
            in_flight: u32::try_from(self.engine.in_flight()).unwrap_or(u32::MAX),
            models: self.engine.models(),
        }
    }

    /// Attestation (DESIGN.md flow 1): `public_key` = our RFC 9458 key configuration,
    /// `nonce` = the client's nonce, `user_data` = version || SHA-384(manifest bytes).
    async fn attest(self: &Arc<Self>, nonce: Vec<u8>) -> EnclaveResponse {
        let manifest = match self.engine.manifest().encode() {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "manifest encoding failed");
                return EnclaveResponse::error(ErrorCode::Internal, "manifest unavailable");
            }
        };
        let user_data = commitment::user_data(&manifest);
        let public_key = self.key.config().encode();
        let this = Arc::clone(self);
        // The NSM call is a blocking ioctl (or a signature in the mock): keep it off the reactor.
        let doc = tokio::task::spawn_blocking(move || {
            nsm::attest(
                this.nsm.as_ref(),
                Some(public_key),
                Some(user_data),
                Some(nonce),
            )
        })
        .await;
        match doc {
            Ok(Ok(document)) => {
                debug!(document_len = document.len(), "attestation document issued");
                EnclaveResponse::Attestation { document, manifest }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "NSM attestation failed");
                EnclaveResponse::error(ErrorCode::AttestationUnavailable, "NSM attestation failed")
            }
            Err(_) => EnclaveResponse::error(ErrorCode::Internal, "attestation task failed"),
        }
    }

    /// Sealed inference (DESIGN.md flow 2).
    async fn infer(&self, sealed: Vec<u8>) -> EnclaveResponse {
        // The header is plaintext (RFC 9458 §4.1), so naming a wrong key id or suite reveals nothing.
        if self.key.check_header(&sealed).is_err() {
            return EnclaveResponse::error(
                ErrorCode::UnsupportedKeyConfig,
                "sealed request names a key id or suite this enclave does not serve",
            );
        }
        let (plaintext, sealer) = match self.key.open_request(&sealed) {
            Ok(opened) => opened,
            // Opaque on purpose: the host and the sender learn only that it did not open.
            Err(_) => {
                return EnclaveResponse::error(
                    ErrorCode::SealedRequestInvalid,
                    "sealed request could not be opened",
                );
            }
        };
        let response = match InferRequest::decode(&plaintext) {
            Ok(request) => {
                let model_id = request.model_id;
                match self.engine.infer(&model_id, request.inputs).await {
                    Ok(outputs) => InferResponse::Ok { outputs },
                    Err(e) => {
                        // Ids and codes only: error messages never carry tensor values.
                        debug!(model_id = %model_id, code = %e.code(), "inference refused");
                        InferResponse::Error {
                            code: e.code(),
                            message: e.to_string(),
                        }
                    }
                }
            }
            Err(e) => InferResponse::Error {
                code: e.code(),
                message: e.to_string(),
            },
        };
        drop(plaintext);
        seal_response(sealer, &response)
    }

    async fn load_plaintext(&self, model_id: String, onnx: Vec<u8>) -> EnclaveResponse {
        if !PLAINTEXT_MODELS_ALLOWED {
            warn!(model_id = %model_id, "plaintext model refused: production build");
            return EnclaveResponse::error(
                ErrorCode::PlaintextModelsDisabled,
                "this enclave build does not accept plaintext models",
            );
        }
        let engine = Arc::clone(&self.engine);
        let id = model_id.clone();
        // Parsing and optimising a model is CPU-bound work.
        let loaded = tokio::task::spawn_blocking(move || engine.load_model(&id, &onnx)).await;
        match loaded {
            // The engine logs the load (id, size, digest, duration).
            Ok(Ok(info)) => EnclaveResponse::ModelLoaded(info),
            Ok(Err(e)) => {
                warn!(model_id = %model_id, code = %e.code(), error = %e, "model load failed");
                EnclaveResponse::error(e.code(), e.to_string())
            }
            Err(_) => EnclaveResponse::error(ErrorCode::Internal, "model load task failed"),
        }
    }
}

fn seal_response(sealer: ResponseSealer, response: &InferResponse) -> EnclaveResponse {
    let encoded = match response.encode() {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(_) => return EnclaveResponse::error(ErrorCode::Internal, "response encoding failed"),
    };
    let mut rng = crate::rng::os_rng();
    match sealer.seal(&encoded, &mut rng) {
        Ok(sealed) => EnclaveResponse::Infer { sealed },
        Err(_) => EnclaveResponse::error(ErrorCode::Internal, "response sealing failed"),
    }
}
