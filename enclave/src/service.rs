//! Request handling: one [`EnclaveRequest`] in, one [`EnclaveResponse`] out. This is where the
//! attestation binds the HPKE key and the model manifest, where sealed requests are opened, run and
//! sealed back, where sealed-model uploads are handed to the [`ModelStore`], and where plaintext
//! model loading is refused outside simulation builds.
//!
//! Everything that can go wrong *after* a sealed request has been opened is answered inside the
//! sealed response, so the host learns only that a request was answered, never why it failed.

use std::sync::Arc;

use sealed_attestation::commitment;
use sealed_crypto::{HeaderError, ResponseSealer, ServerKey};
use sealed_wire::{
    EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, InferRequest, InferResponse,
    PROTOCOL_VERSION,
};
use tracing::{debug, warn};

use crate::engine::Engine;
use crate::model_store::{ModelStore, StoreConfig};
use crate::nsm::{self, Nsm};

/// Whether this build accepts plaintext models from the host. Compile-time only: no runtime flag
/// can turn it on in a production build.
pub const PLAINTEXT_MODELS_ALLOWED: bool = cfg!(feature = "simulation");

/// Shared state of the enclave's request handling.
pub struct Service {
    nsm: Arc<dyn Nsm>,
    key: ServerKey,
    engine: Arc<Engine>,
    /// Sealed-model uploads (KMS key release, chunked unsealing).
    store: ModelStore,
    /// Bounds concurrent NSM calls, so a flood of attestation requests cannot take every blocking
    /// thread and the CPU from inference and model loading.
    attest_slots: tokio::sync::Semaphore,
}

/// NSM calls that may run at once.
pub const MAX_CONCURRENT_ATTESTATIONS: usize = 4;
/// How long an attestation request waits for a slot before the enclave answers `busy`.
const ATTEST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Service {
    /// A service with no KMS: sealed-model uploads are answered `KmsNotConfigured`.
    pub fn new(nsm: Arc<dyn Nsm>, key: ServerKey, engine: Arc<Engine>) -> Self {
        let store = ModelStore::new(Arc::clone(&engine), None, StoreConfig::default());
        Self::with_store(nsm, key, engine, store)
    }

    /// A service whose sealed-model uploads go to `store` (built over the same `engine`).
    pub fn with_store(
        nsm: Arc<dyn Nsm>,
        key: ServerKey,
        engine: Arc<Engine>,
        store: ModelStore,
    ) -> Self {
        Service {
            nsm,
            key,
            engine,
            store,
            attest_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_ATTESTATIONS),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn model_store(&self) -> &ModelStore {
        &self.store
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
            EnclaveRequest::LoadSealedModelBegin {
                header,
                credentials,
                host_time,
            } => match self
                .store
                .begin(header, credentials, host_time, std::time::SystemTime::now())
                .await
            {
                Ok((upload_id, sealed_len)) => EnclaveResponse::SealedModelReady {
                    upload_id,
                    sealed_len,
                },
                Err(e) => store_error(&e),
            },
            EnclaveRequest::LoadSealedModelChunk { upload_id, data } => {
                match self.store.chunk(upload_id, data).await {
                    Ok(received) => EnclaveResponse::SealedChunkAccepted {
                        upload_id,
                        received,
                    },
                    Err(e) => store_error(&e),
                }
            }
            EnclaveRequest::LoadSealedModelEnd { upload_id } => {
                match self.store.end(upload_id).await {
                    Ok(info) => EnclaveResponse::ModelLoaded(info),
                    Err(e) => store_error(&e),
                }
            }
            EnclaveRequest::LoadSealedModelAbort { upload_id } => {
                match self.store.abort(upload_id).await {
                    Ok(()) => EnclaveResponse::SealedUploadAborted { upload_id },
                    Err(e) => store_error(&e),
                }
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
        let _slot = match tokio::time::timeout(ATTEST_WAIT, self.attest_slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => return EnclaveResponse::error(ErrorCode::Busy, "too many attestation requests"),
        };
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
        match self.key.check_header(&sealed) {
            Ok(()) => {}
            Err(HeaderError::UnknownKeyId { .. } | HeaderError::UnsupportedSuite { .. }) => {
                return EnclaveResponse::error(
                    ErrorCode::UnsupportedKeyConfig,
                    "sealed request names a key id or suite this enclave does not serve",
                );
            }
            Err(_) => {
                return EnclaveResponse::error(
                    ErrorCode::SealedRequestInvalid,
                    "sealed request could not be opened",
                );
            }
        }
        let opened = self.key.open_request(&sealed);
        // Hold one copy of the request at a time: the ciphertext goes once opened, the
        // plaintext once decoded.
        drop(sealed);
        let (plaintext, sealer) = match opened {
            Ok(opened) => opened,
            // Opaque on purpose: the host and the sender learn only that it did not open.
            Err(_) => {
                return EnclaveResponse::error(
                    ErrorCode::SealedRequestInvalid,
                    "sealed request could not be opened",
                );
            }
        };
        let decoded = InferRequest::decode(&plaintext);
        drop(plaintext);
        let response = match decoded {
            Ok(request) => {
                let model_id = request.model_id;
                match self.engine.infer(&model_id, request.inputs).await {
                    Ok(outputs) => InferResponse::Ok { outputs },
                    // Not logged: the log leaves through the host, and which model a sealed
                    // request named, or why it failed, is for the requester alone.
                    Err(e) => InferResponse::Error {
                        code: e.code(),
                        message: e.to_string(),
                    },
                }
            }
            Err(e) => InferResponse::Error {
                code: e.code(),
                message: e.to_string(),
            },
        };
        seal_response(sealer, &response)
    }

    async fn load_plaintext(&self, model_id: String, onnx: Vec<u8>) -> EnclaveResponse {
        // Model bytes are wiped when this request is done, whatever the outcome.
        let onnx = zeroize::Zeroizing::new(onnx);
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

/// The store's errors name stages, sizes, ids and KMS's own answer; never key material or bytes.
fn store_error(e: &crate::model_store::StoreError) -> EnclaveResponse {
    EnclaveResponse::error(e.code(), e.to_string())
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

#[cfg(test)]
mod tests {
    use aws_nitro_enclaves_nsm_api::api::{ErrorCode as NsmErrorCode, Request, Response};
    use sealed_crypto::{KeyConfig, seal_request};
    use sealed_wire::{NamedTensor, Tensor};

    use super::*;
    use crate::engine::EngineConfig;

    const DIGITS: &[u8] = include_bytes!("../../sim/assets/digits/digits.onnx");

    /// An NSM that is never available: enough for every path that does not attest.
    struct NoNsm;
    impl Nsm for NoNsm {
        fn process(&self, _request: Request) -> Response {
            Response::Error(NsmErrorCode::InternalError)
        }
    }

    fn rng() -> crate::rng::OsRng {
        crate::rng::os_rng()
    }

    fn rand_id() -> [u8; 16] {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).unwrap();
        id
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn service_with(nsm: Arc<dyn Nsm>) -> Arc<Service> {
        let engine = Arc::new(Engine::new(EngineConfig {
            workers: 1,
            queue_depth: 8,
            ..EngineConfig::default()
        }));
        let key = ServerKey::generate(0, &mut rng());
        Arc::new(Service::new(nsm, key, engine))
    }

    fn digit_request(model_id: &str, tensor: Tensor) -> Vec<u8> {
        InferRequest {
            request_id: rand_id(),
            sent_at_ms: now_ms(),
            model_id: model_id.to_string(),
            inputs: vec![NamedTensor {
                name: "input".to_string(),
                tensor,
            }],
        }
        .encode()
        .unwrap()
    }

    async fn sealed_infer(service: &Arc<Service>, plaintext: &[u8]) -> InferResponse {
        let config: KeyConfig = service.key.config();
        let (sealed, opener) = seal_request(&config, plaintext, &mut rng()).unwrap();
        match service.handle(EnclaveRequest::Infer { sealed }).await {
            EnclaveResponse::Infer { sealed } => {
                InferResponse::decode(&opener.open(&sealed).unwrap()).unwrap()
            }
            other => panic!("expected a sealed response, got {other:?}"),
        }
    }

    fn load_digits(service: &Arc<Service>) {
        service.engine.load_model("digits", DIGITS).unwrap();
    }

    #[tokio::test]
    async fn sealed_inference_round_trips_through_the_service() {
        let service = service_with(Arc::new(NoNsm));
        load_digits(&service);
        let input = Tensor::from_f32(vec![1, 64], &[0.25; 64]).unwrap();
        match sealed_infer(&service, &digit_request("digits", input)).await {
            InferResponse::Ok { outputs } => {
                let names: Vec<_> = outputs.iter().map(|o| o.name.as_str()).collect();
                assert_eq!(names, ["probabilities", "label"]);
                let p = outputs[0].tensor.to_f32().unwrap();
                assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn errors_after_opening_travel_inside_the_sealed_response() {
        let service = service_with(Arc::new(NoNsm));
        load_digits(&service);
        let input = Tensor::from_f32(vec![1, 64], &[0.0; 64]).unwrap();
        let unknown = sealed_infer(&service, &digit_request("nope", input.clone())).await;
        assert!(matches!(
            unknown,
            InferResponse::Error {
                code: ErrorCode::UnknownModel,
                ..
            }
        ));
        let wrong = Tensor::from_f32(vec![2, 32], &[0.0; 64]).unwrap();
        let mismatch = sealed_infer(&service, &digit_request("digits", wrong)).await;
        assert!(matches!(
            mismatch,
            InferResponse::Error {
                code: ErrorCode::InputMismatch,
                ..
            }
        ));
        let garbage = sealed_infer(&service, b"not cbor").await;
        assert!(matches!(
            garbage,
            InferResponse::Error {
                code: ErrorCode::MalformedMessage,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn tampered_or_foreign_requests_fail_opaquely() {
        let service = service_with(Arc::new(NoNsm));
        let config = service.key.config();
        let (mut sealed, _) = seal_request(&config, b"hello", &mut rng()).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let r = service.handle(EnclaveRequest::Infer { sealed }).await;
        assert!(
            matches!(&r, EnclaveResponse::Error(e) if e.code == ErrorCode::SealedRequestInvalid)
        );

        // Sealed to another enclave's key with the same key id: the same opaque answer.
        let other = ServerKey::generate(0, &mut rng());
        let (sealed, _) = seal_request(&other.config(), b"hello", &mut rng()).unwrap();
        let r = service.handle(EnclaveRequest::Infer { sealed }).await;
        assert!(
            matches!(&r, EnclaveResponse::Error(e) if e.code == ErrorCode::SealedRequestInvalid)
        );

        let wrong_id = KeyConfig {
            key_id: 7,
            ..config
        };
        let (sealed, _) = seal_request(&wrong_id, b"hello", &mut rng()).unwrap();
        let r = service.handle(EnclaveRequest::Infer { sealed }).await;
        assert!(
            matches!(&r, EnclaveResponse::Error(e) if e.code == ErrorCode::UnsupportedKeyConfig)
        );
    }

    #[tokio::test]
    async fn attestation_failure_is_reported_not_fatal() {
        let service = service_with(Arc::new(NoNsm));
        let r = service
            .handle(EnclaveRequest::Attestation { nonce: vec![1; 32] })
            .await;
        assert!(
            matches!(&r, EnclaveResponse::Error(e) if e.code == ErrorCode::AttestationUnavailable)
        );
        assert!(matches!(
            service.handle(EnclaveRequest::Health).await,
            EnclaveResponse::Health(h) if h.ready
        ));
    }

    #[cfg(not(feature = "simulation"))]
    #[tokio::test]
    async fn production_build_refuses_plaintext_models() {
        let service = service_with(Arc::new(NoNsm));
        let r = service
            .handle(EnclaveRequest::LoadModel {
                model_id: "digits".into(),
                onnx: DIGITS.to_vec(),
            })
            .await;
        assert!(
            matches!(&r, EnclaveResponse::Error(e) if e.code == ErrorCode::PlaintextModelsDisabled)
        );
        assert!(service.engine.models().is_empty());
    }

    #[cfg(feature = "simulation")]
    #[tokio::test]
    async fn attestation_binds_key_config_nonce_and_manifest() {
        use sealed_attestation::{PcrPolicy, TrustAnchor, VerifyOptions, commitment};
        use std::collections::BTreeMap;
        use std::time::{Duration, SystemTime};

        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ca = sealed_mock_ca::MockCa::generate(now).unwrap();
        let anchor = TrustAnchor::from_der(&ca.root_der()).unwrap();
        let image = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(image.path(), b"enclave image").unwrap();
        let nsm = crate::nsm::mock::MockNsm::new(ca, image.path()).unwrap();
        let service = service_with(Arc::new(nsm));
        let loaded = service
            .handle(EnclaveRequest::LoadModel {
                model_id: "digits".into(),
                onnx: DIGITS.to_vec(),
            })
            .await;
        assert!(matches!(loaded, EnclaveResponse::ModelLoaded(_)));

        let nonce = vec![0x5a; 32];
        let (document, manifest) = match service
            .handle(EnclaveRequest::Attestation {
                nonce: nonce.clone(),
            })
            .await
        {
            EnclaveResponse::Attestation { document, manifest } => (document, manifest),
            other => panic!("{other:?}"),
        };
        let mut pcrs = BTreeMap::new();
        pcrs.insert(
            0u16,
            crate::nsm::mock::measure_image(image.path())
                .unwrap()
                .to_vec(),
        );
        let doc = sealed_attestation::verify(
            &document,
            &VerifyOptions {
                trust_anchor: anchor,
                pcr_policy: PcrPolicy::AnyOf(vec![pcrs]),
                expected_nonce: Some(nonce),
                max_age: Some(Duration::from_secs(60)),
                allow_debug: false,
                now: SystemTime::now(),
            },
        )
        .unwrap();
        assert_eq!(doc.public_key.unwrap(), service.key.config().encode());
        let m = commitment::verify(&doc.user_data.unwrap(), &manifest).unwrap();
        assert_eq!(m.models.len(), 1);
        assert_eq!(m.models[0].model_id, "digits");
    }
}
