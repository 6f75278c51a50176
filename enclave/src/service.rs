//! Request handling: one [`EnclaveRequest`] in, one [`EnclaveResponse`] out. This is where the
//! attestation binds the HPKE key and the model manifest, where sealed requests are opened, run and
//! sealed back, where sealed-model uploads are handed to the [`ModelStore`], and where plaintext
//! model loading is refused outside simulation builds.
//!
//! Everything that can go wrong *after* a sealed request has been opened is answered inside the
//! sealed response, so the host learns only that a request was answered, never why it failed.
//! That includes the freshness checks ([`crate::freshness`]): a replayed or stale request is
//! answered `replayed_request` / `stale_request` sealed to its sender, and is not logged.
//! Requests are opened with the key their header names from the [`KeyRing`]; a key that has
//! rotated out is answered `unsupported_key_config` in the clear (the header is public anyway).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sealed_attestation::commitment;
use sealed_crypto::{
    HeaderError, KeyConfig, RESPONSE_NONCE_LEN, ResponseSealer, ServerKey, TAG_LEN,
};
use sealed_wire::{
    EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, InferRequest, InferResponse,
    PROTOCOL_VERSION,
};
use tracing::{debug, warn};

use crate::engine::Engine;
use crate::freshness::{FreshnessConfig, ReplayGuard, unix_millis};
use crate::keyring::{KeyRing, KeyRingConfig};
use crate::model_store::{ModelStore, StoreConfig};
use crate::nsm::{self, Nsm};

/// Whether this build accepts plaintext models from the host. Compile-time only: no runtime flag
/// can turn it on in a production build.
pub const PLAINTEXT_MODELS_ALLOWED: bool = cfg!(feature = "simulation");

/// Whether inference requests and answers are plaintext CBOR instead of HPKE-sealed: only in the
/// `sealed-enclave-plain-bench` binary (feature `bench-plaintext`, which needs `simulation`), so that
/// the benchmark can measure the relay without the crypto (docs/performance.md).
pub const PLAINTEXT_INFERENCE: bool = cfg!(feature = "bench-plaintext");

/// Shared state of the enclave's request handling.
pub struct Service {
    nsm: Arc<dyn Nsm>,
    /// The current HPKE key and the retired ones still in their overlap. The lock is held only to
    /// look a key up or rotate, never while opening a request (keys are `Arc`s).
    keys: Mutex<KeyRing>,
    /// Request ids seen within the freshness window.
    replay: ReplayGuard,
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
    /// A service with no KMS: sealed-model uploads are answered `KmsNotConfigured`. `key` is
    /// current now and rotates on the default schedule; freshness has its default settings.
    pub fn new(nsm: Arc<dyn Nsm>, key: ServerKey, engine: Arc<Engine>) -> Self {
        let store = ModelStore::new(Arc::clone(&engine), None, StoreConfig::default());
        Self::with_store(nsm, key, engine, store)
    }

    /// A service whose sealed-model uploads go to `store` (built over the same `engine`), with
    /// `key` current now, the default rotation schedule and the default freshness settings.
    pub fn with_store(
        nsm: Arc<dyn Nsm>,
        key: ServerKey,
        engine: Arc<Engine>,
        store: ModelStore,
    ) -> Self {
        let keys = KeyRing::with_key(KeyRingConfig::default(), key, Instant::now());
        Self::with_keys(nsm, keys, FreshnessConfig::default(), engine, store)
    }

    /// The general constructor: a key ring (rotation schedule included) and freshness settings.
    pub fn with_keys(
        nsm: Arc<dyn Nsm>,
        keys: KeyRing,
        freshness: FreshnessConfig,
        engine: Arc<Engine>,
        store: ModelStore,
    ) -> Self {
        Service {
            nsm,
            keys: Mutex::new(keys),
            replay: ReplayGuard::new(freshness),
            engine,
            store,
            attest_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_ATTESTATIONS),
        }
    }

    /// The current key configuration (what attestation publishes now).
    pub fn key_config(&self) -> KeyConfig {
        self.with_ring(|ring| ring.current().config())
    }

    /// Rotates and drops keys that are due ([`KeyRing::maintain`]) and returns when to call again.
    /// The enclave calls it from a timer so that keys retire on time even when no request comes.
    pub fn maintain_keys(&self) -> Instant {
        self.with_ring(|ring| ring.next_deadline())
    }

    /// Runs `f` on the key ring after bringing it up to date.
    fn with_ring<T>(&self, f: impl FnOnce(&KeyRing) -> T) -> T {
        // Poisoning means a panic while the ring was locked; the ring is consistent between its
        // method calls, so carrying on is safe.
        let mut ring = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if ring.maintain(Instant::now(), &mut crate::rng::os_rng()) {
            tracing::info!(key_id = ring.current().key_id(), "HPKE key rotated");
        }
        f(&ring)
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
                let all = 0..data.len();
                self.sealed_chunk_in_frame(upload_id, data, all).await
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

    /// A sealed model's chunk at `range` of the frame it arrived in
    /// (`sealed_wire::message::sealed_chunk_range`): opened where it lies, no copy.
    pub async fn sealed_chunk_in_frame(
        &self,
        upload_id: u64,
        frame: Vec<u8>,
        range: std::ops::Range<usize>,
    ) -> EnclaveResponse {
        match self.store.chunk_in(upload_id, frame, range).await {
            Ok(received) => EnclaveResponse::SealedChunkAccepted {
                upload_id,
                received,
            },
            Err(e) => store_error(&e),
        }
    }

    fn health(&self) -> HealthStatus {
        HealthStatus {
            protocol_version: PROTOCOL_VERSION,
            ready: true,
            simulation: PLAINTEXT_MODELS_ALLOWED,
            workers: u32::try_from(self.engine.workers()).unwrap_or(u32::MAX),
            in_flight: u32::try_from(self.engine.in_flight()).unwrap_or(u32::MAX),
            batched_requests: self.engine.batched_requests(),
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
        // Always the current key: a client that attests now seals to the newest key.
        let public_key = self.key_config().encode();
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

    /// Sealed inference (DESIGN.md flow 2), with the freshness checks of docs/protocol.md §2.2.
    async fn infer(&self, sealed: Vec<u8>) -> EnclaveResponse {
        self.infer_in_frame(sealed, 0).await
    }

    /// [`Self::handle`] of an `Infer` request whose sealed bytes are `body[start..]` (a frame
    /// body and the position `sealed_wire::message::infer_envelope_range` found): the request
    /// is opened, decoded and wiped where it lies, with no copy of the body.
    pub async fn infer_in_frame(&self, body: Vec<u8>, start: usize) -> EnclaveResponse {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.infer_in_frame_to(body, start, move |response| {
            let _ = tx.send(response);
        })
        .await;
        rx.await.unwrap_or_else(|_| {
            EnclaveResponse::error(ErrorCode::Internal, "the worker dropped the request")
        })
    }

    /// [`Self::infer_in_frame`] that gives its answer to `respond` instead of returning it:
    /// on the inference worker's thread once the model has run (the answer is sealed there and
    /// can leave without waking an async thread), or on the caller's for an answer made before
    /// (a request that does not open, a replay, a full queue). Returns once `respond` has run,
    /// or without it if the engine dropped the request (it was closing). Dropping the future
    /// gives the request up; a queued inference is then skipped and `respond` never runs.
    pub async fn infer_in_frame_to(
        &self,
        body: Vec<u8>,
        start: usize,
        respond: impl FnOnce(EnclaveResponse) + Send + 'static,
    ) {
        #[cfg(feature = "bench-plaintext")]
        return self.infer_plaintext(body, start, respond).await;
        #[cfg(not(feature = "bench-plaintext"))]
        self.infer_sealed(body, start, respond).await
    }

    /// The benchmark's plain-HTTP variant: the same steps as [`Self::infer_sealed`] minus HPKE.
    #[cfg(feature = "bench-plaintext")]
    async fn infer_plaintext(
        &self,
        mut body: Vec<u8>,
        start: usize,
        respond: impl FnOnce(EnclaveResponse) + Send + 'static,
    ) {
        let len = body.len();
        self.answer(&mut body, start..len, move |response| {
            respond(match response.encode() {
                Ok(sealed) => EnclaveResponse::Infer { sealed },
                Err(_) => EnclaveResponse::error(ErrorCode::Internal, "response encoding failed"),
            })
        })
        .await
    }

    #[cfg_attr(feature = "bench-plaintext", allow(dead_code))]
    async fn infer_sealed(
        &self,
        mut body: Vec<u8>,
        start: usize,
        respond: impl FnOnce(EnclaveResponse) + Send + 'static,
    ) {
        let unsupported = || {
            EnclaveResponse::error(
                ErrorCode::UnsupportedKeyConfig,
                "sealed request names a key id or suite this enclave does not serve \
                 (the key may have been retired): attest again",
            )
        };
        let invalid = || {
            EnclaveResponse::error(
                ErrorCode::SealedRequestInvalid,
                "sealed request could not be opened",
            )
        };
        let Some(sealed) = body.get_mut(start..) else {
            return respond(invalid());
        };
        // The header is plaintext (RFC 9458 §4.1), so naming a wrong key id or suite reveals nothing.
        let key_id = match sealed_crypto::request_key_id(sealed) {
            Ok(id) => id,
            Err(HeaderError::UnsupportedSuite { .. }) => return respond(unsupported()),
            Err(_) => return respond(invalid()),
        };
        let Some(key) = self.with_ring(|ring| ring.get(key_id)) else {
            return respond(unsupported());
        };
        // Decrypted where it lies: the frame body is the one copy of the request, ciphertext
        // then plaintext, until it is decoded and wiped.
        let opened = key.open_request_in_place(sealed);
        drop(key);
        let (range, sealer) = match opened {
            Ok(opened) => opened,
            // Opaque on purpose: the host and the sender learn only that it did not open.
            Err(_) => return respond(invalid()),
        };
        let range = start + range.start..start + range.end;
        self.answer(&mut body, range, move |response| {
            respond(seal_response(sealer, &response))
        })
        .await
    }

    /// Decodes an opened request from `buf[range]`, wipes all of `buf`, checks freshness, runs
    /// it, and gives `finish` the answer that goes back sealed (or, in the benchmark's plain
    /// build, as is): on the worker's thread if the model ran, else on this one.
    async fn answer(
        &self,
        buf: &mut Vec<u8>,
        range: std::ops::Range<usize>,
        finish: impl FnOnce(InferResponse) + Send + 'static,
    ) {
        // The range comes from the opener and is always within `buf`; were it not, the empty
        // input is refused as malformed.
        let decoded = {
            // Our layout decodes without a copy; any other layout (or a malformed request) goes
            // through ciborium, whose intermediate copies of the plaintext are freed here, on an
            // async thread: the window wipes them as they go (threat model E8).
            let _wiping = sealed_alloc::wiping();
            InferRequest::decode(buf.get(range).unwrap_or_default())
        };
        sealed_wire::wipe::wipe(buf);
        let request = match decoded {
            Ok(request) => request,
            Err(e) => {
                return finish(InferResponse::Error {
                    code: e.code(),
                    message: e.to_string(),
                });
            }
        };
        // Freshness first, then the replay cache (which remembers only fresh ids). Nothing is
        // logged: whether a request was a replay is for its sender alone.
        let checked = self.replay.check(
            request.request_id,
            request.sent_at_ms,
            unix_millis(SystemTime::now()),
        );
        if let Err(e) = checked {
            return finish(InferResponse::Error {
                code: e.code(),
                message: e.to_string(),
            });
        }
        let model_id = request.model_id;
        self.engine
            .infer_with(&model_id, request.inputs, move |result| {
                finish(match result {
                    Ok(outputs) => InferResponse::Ok { outputs },
                    // Not logged: the log leaves through the host, and which model a sealed
                    // request named, or why it failed, is for the requester alone.
                    Err(e) => InferResponse::Error {
                        code: e.code(),
                        message: e.to_string(),
                    },
                })
            })
            .await
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
        let loaded = tokio::task::spawn_blocking(move || {
            // As for a sealed model (model_store::end): the bytes, which wipe themselves, are
            // freed before the guard and not kept for reuse.
            let _load = sealed_alloc::before_load();
            let loaded = engine.load_model(&id, &onnx);
            drop(onnx);
            loaded
        })
        .await;
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
    // An error answer is encoded by ciborium into a growing buffer: the blocks it outgrows (a
    // message that is for the requester alone) are wiped as they are freed.
    let _wiping = sealed_alloc::wiping();
    // Encoded once at its exact size with room for the response nonce and tag, then sealed
    // where it lies: the plaintext encoding becomes the ciphertext, with no copy (the seal
    // wipes the buffer if it fails).
    let mut buf = match response.encode_with_room(RESPONSE_NONCE_LEN, TAG_LEN) {
        Ok(b) => b,
        Err(_) => return EnclaveResponse::error(ErrorCode::Internal, "response encoding failed"),
    };
    let mut rng = crate::rng::os_rng();
    match sealer.seal_in_place(&mut buf, &mut rng) {
        Ok(()) => EnclaveResponse::Infer { sealed: buf },
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
        let config: KeyConfig = service.key_config();
        let (sealed, opener) = seal_request(&config, plaintext, &mut rng()).unwrap();
        match service.handle(EnclaveRequest::Infer { sealed }).await {
            EnclaveResponse::Infer { sealed } => {
                InferResponse::decode(&opener.open(&sealed).unwrap()).unwrap()
            }
            other => panic!("expected a sealed response, got {other:?}"),
        }
    }

    fn request_at(request_id: [u8; 16], sent_at_ms: u64) -> Vec<u8> {
        InferRequest {
            request_id,
            sent_at_ms,
            model_id: "digits".to_string(),
            inputs: vec![NamedTensor {
                name: "input".to_string(),
                tensor: Tensor::from_f32(vec![1, 64], &[0.5; 64]).unwrap(),
            }],
        }
        .encode()
        .unwrap()
    }

    fn error_code(response: InferResponse) -> ErrorCode {
        match response {
            InferResponse::Error { code, .. } => code,
            InferResponse::Ok { .. } => panic!("expected an error, got outputs"),
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
    async fn a_replayed_request_is_answered_replayed_sealed_to_its_sender() {
        let service = service_with(Arc::new(NoNsm));
        load_digits(&service);
        let plaintext = request_at(rand_id(), now_ms());
        assert!(matches!(
            sealed_infer(&service, &plaintext).await,
            InferResponse::Ok { .. }
        ));
        // The same plaintext sealed again (a new HPKE context, as a host cannot make one, but the
        // id is what counts) and the very same sealed bytes both come back `replayed_request`.
        assert_eq!(
            error_code(sealed_infer(&service, &plaintext).await),
            ErrorCode::ReplayedRequest
        );
        let (sealed, opener) = seal_request(
            &service.key_config(),
            &request_at(rand_id(), now_ms()),
            &mut rng(),
        )
        .unwrap();
        let first = service
            .handle(EnclaveRequest::Infer {
                sealed: sealed.clone(),
            })
            .await;
        assert!(matches!(first, EnclaveResponse::Infer { .. }));
        let EnclaveResponse::Infer { sealed: replayed } =
            service.handle(EnclaveRequest::Infer { sealed }).await
        else {
            panic!("a replay is answered sealed, not in the clear");
        };
        let response = InferResponse::decode(&opener.open(&replayed).unwrap()).unwrap();
        assert_eq!(error_code(response), ErrorCode::ReplayedRequest);
    }

    #[tokio::test]
    async fn a_request_outside_the_window_is_answered_stale_and_not_remembered() {
        let service = service_with(Arc::new(NoNsm));
        load_digits(&service);
        let id = rand_id();
        let hour_ms = 3_600_000;
        for sent_at in [now_ms() - hour_ms, now_ms() + hour_ms] {
            assert_eq!(
                error_code(sealed_infer(&service, &request_at(id, sent_at)).await),
                ErrorCode::StaleRequest
            );
        }
        // The id was not used up by the refused requests.
        assert!(matches!(
            sealed_infer(&service, &request_at(id, now_ms())).await,
            InferResponse::Ok { .. }
        ));
        assert_eq!(service.replay.len(), 1);
    }

    #[tokio::test]
    async fn a_full_replay_cache_answers_busy_sealed() {
        let engine = Arc::new(Engine::new(EngineConfig {
            workers: 1,
            queue_depth: 8,
            ..EngineConfig::default()
        }));
        let store = ModelStore::new(Arc::clone(&engine), None, StoreConfig::default());
        let keys = KeyRing::new(KeyRingConfig::default(), Instant::now(), &mut rng());
        let freshness = FreshnessConfig {
            replay_cache_entries: 2,
            ..FreshnessConfig::default()
        };
        let service = Arc::new(Service::with_keys(
            Arc::new(NoNsm),
            keys,
            freshness,
            engine,
            store,
        ));
        load_digits(&service);
        for _ in 0..2 {
            let r = sealed_infer(&service, &request_at(rand_id(), now_ms())).await;
            assert!(matches!(r, InferResponse::Ok { .. }));
        }
        let r = sealed_infer(&service, &request_at(rand_id(), now_ms())).await;
        assert_eq!(error_code(r), ErrorCode::Busy);
    }

    #[tokio::test]
    async fn requests_open_with_any_key_in_the_ring_and_a_retired_key_is_refused_in_the_clear() {
        let service = service_with(Arc::new(NoNsm));
        load_digits(&service);
        let old = service.key_config();
        let t = Instant::now() + std::time::Duration::from_secs(3600);
        // Rotate by hand (as the timer would an hour from now): the old key enters its overlap.
        assert!(service.keys.lock().unwrap().maintain(t, &mut rng()));
        let new = service.key_config();
        assert_eq!(new.key_id, old.key_id.wrapping_add(1));
        for config in [&old, &new] {
            let (sealed, opener) =
                seal_request(config, &request_at(rand_id(), now_ms()), &mut rng()).unwrap();
            let EnclaveResponse::Infer { sealed } =
                service.handle(EnclaveRequest::Infer { sealed }).await
            else {
                panic!("key {} should open", config.key_id);
            };
            let r = InferResponse::decode(&opener.open(&sealed).unwrap()).unwrap();
            assert!(matches!(r, InferResponse::Ok { .. }));
        }
        // Overlap over: the old key is gone, and its requests get `unsupported_key_config`.
        service
            .keys
            .lock()
            .unwrap()
            .maintain(t + std::time::Duration::from_secs(300), &mut rng());
        let (sealed, _) = seal_request(&old, &request_at(rand_id(), now_ms()), &mut rng()).unwrap();
        let r = service.handle(EnclaveRequest::Infer { sealed }).await;
        match &r {
            EnclaveResponse::Error(e) => {
                assert_eq!(e.code, ErrorCode::UnsupportedKeyConfig);
                assert!(e.message.contains("attest again"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn tampered_or_foreign_requests_fail_opaquely() {
        let service = service_with(Arc::new(NoNsm));
        let config = service.key_config();
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
        assert_eq!(doc.public_key.unwrap(), service.key_config().encode());
        let m = commitment::verify(&doc.user_data.unwrap(), &manifest).unwrap();
        assert_eq!(m.models.len(), 1);
        assert_eq!(m.models[0].model_id, "digits");
    }
}
