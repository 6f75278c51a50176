//! With the musl image's allocator (`EnclaveAlloc::new(true)`: freed large blocks kept for the
//! next allocation of their exact size), a sealed model's plaintext buffer is given back once the
//! model is loaded, not kept: only another model of the same length would ever reuse it, and a
//! 6.7 MB model's wiped buffer stayed resident beside it (docs/performance.md, round 18). The
//! plaintext-model path (simulation) likewise.
//! One test function: the block cache is process-wide.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_nitro_enclaves_nsm_api::api::{ErrorCode as NsmErrorCode, Request, Response};
use sealed_alloc::{EnclaveAlloc, kept_bytes};
use sealed_crypto::ServerKey;
use sealed_enclave::engine::{Engine, EngineConfig};
use sealed_enclave::kms::{BoxFuture, DataKey, DataKeyRequest, DataKeySource, KmsError};
use sealed_enclave::model_store::{ModelStore, StoreConfig};
use sealed_enclave::nsm::Nsm;
use sealed_enclave::rng::os_rng;
use sealed_enclave::service::{PLAINTEXT_MODELS_ALLOWED, Service};
use sealed_model::SealParams;
use sealed_wire::{AwsCredentials, EnclaveRequest, EnclaveResponse};
use zeroize::Zeroizing;

#[global_allocator]
static ALLOCATOR: EnclaveAlloc = EnclaveAlloc::new(true);

const DIGITS: &[u8] = include_bytes!("../../sim/assets/digits/digits.onnx");
const KEY: [u8; 32] = [0x42; 32];

/// Releases the one data key, whatever is asked.
struct OneKey;

impl DataKeySource for OneKey {
    fn data_key<'a>(
        &'a self,
        _request: DataKeyRequest<'a>,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(async { Ok(Zeroizing::new(KEY)) })
    }
}

/// Never asked: nothing here attests.
struct NoNsm;
impl Nsm for NoNsm {
    fn process(&self, _request: Request) -> Response {
        Response::Error(NsmErrorCode::InternalError)
    }
}

/// The digits model grown to `len` bytes with a `doc_string` (ModelProto field 6, which tract
/// ignores), so that its buffer has a size nothing else in the process allocates.
fn digits_of_len(len: usize) -> Vec<u8> {
    let mut onnx = DIGITS.to_vec();
    // Tag (6 << 3 | 2), a 3-byte varint length, then the text.
    let text = len - onnx.len() - 4;
    assert!(text < 1 << 21);
    onnx.push(0x32);
    onnx.extend_from_slice(&[
        (text & 0x7f) as u8 | 0x80,
        ((text >> 7) & 0x7f) as u8 | 0x80,
        (text >> 14) as u8,
    ]);
    onnx.resize(len, b'x');
    onnx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_models_plaintext_is_given_back_not_kept() {
    const LEN: usize = (1 << 20) + 4321;
    let onnx = digits_of_len(LEN);
    let engine = Arc::new(Engine::new(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    }));
    let store = ModelStore::new(
        Arc::clone(&engine),
        Some(Arc::new(OneKey)),
        StoreConfig::default(),
    );
    let service = Arc::new(Service::with_store(
        Arc::new(NoNsm),
        ServerKey::generate(0, &mut os_rng()),
        Arc::clone(&engine),
        store,
    ));
    let store = service.model_store();
    let file = sealed_model::seal(
        SealParams {
            model_id: "padded".into(),
            kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/test".into(),
            encrypted_data_key: b"wrapped".to_vec(),
            chunk_size: sealed_model::DEFAULT_CHUNK_SIZE,
        },
        &KEY,
        &onnx,
        [7; 7],
    )
    .unwrap();
    let header_len = sealed_model::header_total_len(&file).unwrap();
    let credentials = AwsCredentials {
        access_key_id: "AKIDEXAMPLE12345".into(),
        secret_access_key: Zeroizing::new("secret".into()),
        session_token: None,
        expires_at: None,
    };
    let now = SystemTime::now();
    let host_time = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (id, _) = store
        .begin(file[..header_len].to_vec(), credentials, host_time, now)
        .await
        .unwrap();
    store.chunk(id, file[header_len..].to_vec()).await.unwrap();
    drop(file);
    let info = store.end(id).await.unwrap();
    assert_eq!(info.model_id, "padded");

    // The loaded model answers; the plaintext it was loaded from is not in the cache.
    assert!(engine.models().iter().any(|m| m.model_id == "padded"));
    assert!(
        kept_bytes() < LEN,
        "{} bytes kept after loading a {LEN}-byte model: its plaintext buffer was kept",
        kept_bytes()
    );

    // A plaintext model (simulation builds only): the request's bytes, likewise.
    if PLAINTEXT_MODELS_ALLOWED {
        let onnx = digits_of_len(LEN + 999);
        let response = service
            .handle(EnclaveRequest::LoadModel {
                model_id: "plain".into(),
                onnx,
            })
            .await;
        assert!(matches!(response, EnclaveResponse::ModelLoaded(_)));
        assert!(
            kept_bytes() < LEN,
            "{} bytes kept after loading a plaintext model of {} bytes",
            kept_bytes(),
            LEN + 999
        );
    }
}
