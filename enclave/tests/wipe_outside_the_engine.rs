//! Secrets handled outside the engine's wipe windows, by dependencies that free copies of them
//! unwiped, are handled inside windows of their own (threat model E8):
//! - an opened request is decoded on an async thread. A request in the layout our encoder writes
//!   decodes without a copy; any other valid CBOR layout goes through ciborium, whose
//!   intermediate copies of the plaintext tensors are freed during the decode;
//! - the KMS recipient key is generated, and the data key unwrapped with it, on blocking threads
//!   by the `rsa` crate, whose big-integer temporaries are freed unwiped.
//!
//! One test function: the allocator's counter is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use aws_nitro_enclaves_nsm_api::api::{ErrorCode as NsmErrorCode, Request, Response};
use ciborium::Value;
use sealed_alloc::{EnclaveAlloc, wiped_bytes};
use sealed_crypto::{ServerKey, seal_request};
use sealed_enclave::engine::{Engine, EngineConfig};
use sealed_enclave::kms::recipient::KeyPair;
use sealed_enclave::nsm::Nsm;
use sealed_enclave::rng::os_rng;
use sealed_enclave::service::Service;
use sealed_kms::cms;
use sealed_wire::{
    EnclaveRequest, EnclaveResponse, ErrorCode, InferRequest, InferResponse, NamedTensor, Tensor,
};

#[global_allocator]
static ALLOCATOR: EnclaveAlloc = EnclaveAlloc::new(cfg!(target_env = "musl"));

/// Never asked: nothing here attests.
struct NoNsm;
impl Nsm for NoNsm {
    fn process(&self, _request: Request) -> Response {
        Response::Error(NsmErrorCode::InternalError)
    }
}

/// A request the freshness check refuses (sent in 1970) after it decoded: the engine never sees
/// it, so every wipe counted during `handle` is the decode's (or the sealing's, which frees no
/// plaintext on this path).
fn stale_request(data_len: usize) -> InferRequest {
    InferRequest {
        request_id: [9; 16],
        sent_at_ms: 1,
        model_id: "m".into(),
        inputs: vec![NamedTensor {
            name: "input".into(),
            tensor: Tensor::from_f32(vec![1, (data_len / 4) as u64], &vec![0.5; data_len / 4])
                .unwrap(),
        }],
    }
}

/// The same request with its map's entries in reverse order: valid CBOR for the same message,
/// which the copy-free decoder does not take, so ciborium decodes it.
fn in_another_layout(encoded: &[u8]) -> Vec<u8> {
    let value: Value = ciborium::de::from_reader(encoded).unwrap();
    let Value::Map(mut entries) = value else {
        panic!("a request encodes as a map");
    };
    entries.reverse();
    let mut out = Vec::new();
    ciborium::ser::into_writer(&Value::Map(entries), &mut out).unwrap();
    out
}

#[test]
fn decoding_a_request_and_unwrapping_a_data_key_leave_their_copies_wiped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let engine = Arc::new(Engine::new(EngineConfig {
        workers: 1,
        queue_depth: 8,
        ..EngineConfig::default()
    }));
    let service = Arc::new(Service::new(
        Arc::new(NoNsm),
        ServerKey::generate(0, &mut os_rng()),
        engine,
    ));
    let config = service.key_config();

    // Wiped bytes while the service handles `plaintext`, sealed; the answer must be the
    // freshness refusal, which proves the plaintext was opened and decoded.
    let wiped_while_handling = |plaintext: &[u8]| -> usize {
        let (sealed, opener) = seal_request(&config, plaintext, &mut os_rng()).unwrap();
        let before = wiped_bytes();
        let response = runtime.block_on(service.handle(EnclaveRequest::Infer { sealed }));
        let wiped = wiped_bytes() - before;
        let EnclaveResponse::Infer { sealed } = response else {
            panic!("expected a sealed answer");
        };
        match InferResponse::decode(&opener.open(&sealed).unwrap()).unwrap() {
            InferResponse::Error { code, .. } => assert_eq!(code, ErrorCode::StaleRequest),
            InferResponse::Ok { .. } => panic!("a stale request was run"),
        }
        wiped
    };

    let data_len = 256 * 1024;
    let ours = stale_request(data_len).encode().unwrap();
    let other = in_another_layout(&ours);
    assert_ne!(ours, other);
    assert!(
        InferRequest::decode(&other).is_ok(),
        "the other layout is a valid request"
    );

    // ciborium reads a byte string into a buffer that it grows as it goes: each block it
    // outgrows holds the data read so far, and is freed, so wiped, inside the decode's window
    // (the last one holds the first half of the tensor). Without the window: 0.
    let fallback = wiped_while_handling(&other);
    assert!(
        fallback >= data_len / 2,
        "{fallback} bytes wiped decoding a request with {data_len} bytes of tensor data"
    );

    // Our own layout is decoded straight into the tensor: nothing of that size is freed.
    let direct = wiped_while_handling(&ours);
    assert!(
        direct < data_len,
        "{direct} bytes wiped decoding our own layout: a copy of the tensor data was made"
    );

    // The recipient key: candidates, products and inverses are freed as the key is made. Without
    // the window: 0 (what is wiped is counted only inside one).
    let before = wiped_bytes();
    let pair = KeyPair::generate().unwrap();
    let keygen = wiped_bytes() - before;
    assert!(keygen > 0, "nothing wiped while generating an RSA key");

    // Unwrapping a data key KMS wrapped to it (built here as KMS builds it): the private-key
    // operation's temporaries are freed, wiped.
    let data_key = [0x5a_u8; 32];
    let public = cms::recipient_public_key_from_spki(pair.spki_der()).unwrap();
    let wrapped = cms::build_ciphertext_for_recipient(
        &data_key,
        &public,
        &cms::subject_key_id(pair.spki_der()),
        &mut os_rng(),
    )
    .unwrap();
    let enveloped = cms::parse(&wrapped).unwrap();
    let before = wiped_bytes();
    let opened = pair.open(&enveloped).unwrap();
    let unwrap = wiped_bytes() - before;
    assert_eq!(opened.as_slice(), data_key.as_slice());
    assert!(unwrap > 0, "nothing wiped while unwrapping a data key");
}
