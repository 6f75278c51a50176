//! The generated part of the seed corpus: valid encodings of every message, built with the same
//! encoders the tests use, and ciphertexts sealed to the fixed keys of the targets so that the
//! fuzzer starts behind the authentication checks. Real vectors are added from the crates'
//! `tests/data` (see [`real_vectors`]). `tests/seeds.rs` writes them to `fuzz/seeds/<target>/`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use sealed_wire::frame::encode_frame;
use sealed_wire::message::{HealthStatus, ModelInfo, TensorSpec, WireError};
use sealed_wire::{
    AwsCredentials, DType, EnclaveRequest, EnclaveResponse, ErrorCode, InferRequest, InferResponse,
    ModelManifest, NamedTensor, Tensor,
};

use crate::{DetRng, MODEL_DATA_KEY, fixed_request, rsa_key, server_key};

/// One seed: a file name (stable, so re-generation does not churn) and its bytes.
pub type Seed = (String, Vec<u8>);

fn named(name: &str, tensor: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        tensor,
    }
}

fn tensors() -> Vec<Tensor> {
    let pixels: Vec<f32> = (0..64).map(|i| i as f32 / 4.0).collect();
    vec![
        Tensor::from_f32(vec![1, 64], &pixels).expect("f32"),
        Tensor::from_i64(vec![2, 3], &[-1, 0, 1, i64::MIN, i64::MAX, 7]).expect("i64"),
        Tensor::from_f32(vec![], &[f32::NAN]).expect("scalar"),
        Tensor::new(DType::U8, vec![4], vec![1, 2, 3, 4]).expect("u8"),
        Tensor::new(DType::Bool, vec![2, 0], vec![]).expect("empty"),
        Tensor::new(DType::F16, vec![2], vec![0, 0x3c, 0, 0x7c]).expect("f16"),
    ]
}

fn infer_requests() -> Vec<InferRequest> {
    vec![
        InferRequest {
            request_id: [0xa5; 16],
            sent_at_ms: 1_764_000_000_000,
            model_id: "digits".into(),
            inputs: vec![named("input", tensors().remove(0))],
        },
        InferRequest {
            request_id: [0; 16],
            sent_at_ms: 0,
            model_id: "m.v1_2-x".into(),
            inputs: tensors()
                .into_iter()
                .enumerate()
                .map(|(i, t)| named(&format!("in{i}"), t))
                .collect(),
        },
    ]
}

fn infer_responses() -> Vec<InferResponse> {
    vec![
        InferResponse::Ok {
            outputs: vec![
                named("label", Tensor::from_i64(vec![1], &[7]).expect("label")),
                named("probabilities", tensors().remove(0)),
            ],
        },
        InferResponse::Error {
            code: ErrorCode::StaleRequest,
            message: "request is outside the freshness window".into(),
        },
    ]
}

fn model_info() -> ModelInfo {
    ModelInfo {
        model_id: "digits".into(),
        sha384: vec![0xab; 48],
        inputs: vec![TensorSpec {
            name: "input".into(),
            dtype: Some(DType::F32),
            shape: vec![None, Some(64)],
        }],
        outputs: vec![TensorSpec {
            name: "label".into(),
            dtype: None,
            shape: vec![Some(1)],
        }],
    }
}

fn enclave_requests() -> Vec<EnclaveRequest> {
    let creds = AwsCredentials {
        access_key_id: "ASIAEXAMPLEEXAMPLE00".into(),
        secret_access_key: String::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY").into(),
        session_token: Some(String::from("IQoJb3JpZ2luX2VjEXAMPLE").into()),
        expires_at: Some(1_764_003_600),
    };
    vec![
        EnclaveRequest::Health,
        EnclaveRequest::Attestation {
            nonce: vec![0x5a; 32],
        },
        EnclaveRequest::Infer {
            sealed: sealed_requests().remove(0),
        },
        EnclaveRequest::LoadModel {
            model_id: "digits".into(),
            onnx: b"\x08\x07\x12\x04test".to_vec(),
        },
        EnclaveRequest::LoadSealedModelBegin {
            header: sealed_models().remove(0)[..200].to_vec(),
            credentials: creds,
            host_time: 1_764_000_000,
        },
        EnclaveRequest::LoadSealedModelChunk {
            upload_id: 3,
            data: vec![0xee; 64],
        },
        EnclaveRequest::LoadSealedModelEnd { upload_id: 3 },
        EnclaveRequest::LoadSealedModelAbort { upload_id: 3 },
    ]
}

fn enclave_responses() -> Vec<EnclaveResponse> {
    let mut manifest = ModelManifest::default();
    manifest.insert("digits".into(), vec![0xab; 48]);
    vec![
        EnclaveResponse::Health(HealthStatus {
            protocol_version: sealed_wire::PROTOCOL_VERSION,
            ready: true,
            simulation: true,
            workers: 2,
            in_flight: 1,
            batched_requests: 0,
            models: vec![model_info()],
        }),
        EnclaveResponse::Attestation {
            document: vec![0xd2, 0x84, 0x44],
            manifest: manifest.encode().expect("manifest"),
        },
        EnclaveResponse::Infer {
            sealed: vec![0x33; 80],
        },
        EnclaveResponse::ModelLoaded(model_info()),
        EnclaveResponse::SealedModelReady {
            upload_id: 1,
            sealed_len: 4096,
        },
        EnclaveResponse::SealedChunkAccepted {
            upload_id: 1,
            received: 1024,
        },
        EnclaveResponse::SealedUploadAborted { upload_id: 1 },
        EnclaveResponse::Error(WireError::new(ErrorCode::Busy, "busy")),
    ]
}

fn sealed_requests() -> Vec<Vec<u8>> {
    let mut rng = DetRng::new("sealed-fuzz seeds: requests");
    infer_requests()
        .iter()
        .map(|r| {
            let plain = r.encode().expect("encode");
            sealed_crypto::seal_request(&server_key().config(), &plain, &mut rng)
                .expect("seal")
                .0
        })
        .collect()
}

fn sealed_responses() -> Vec<Vec<u8>> {
    let mut rng = DetRng::new("sealed-fuzz seeds: responses");
    infer_responses()
        .iter()
        .map(|r| {
            // The opener of `sealed_response` belongs to this exact request.
            let (request, _) = fixed_request();
            let (_, sealer) = server_key()
                .open_request(&request)
                .expect("open fixed request");
            sealer
                .seal(&r.encode().expect("encode"), &mut rng)
                .expect("seal response")
        })
        .collect()
}

fn sealed_models() -> Vec<Vec<u8>> {
    let params = |chunk_size| sealed_model::SealParams {
        model_id: "digits".into(),
        kms_key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            .into(),
        encrypted_data_key: vec![0x01; 184],
        chunk_size,
    };
    let model: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        // Three chunks, the last one short.
        sealed_model::seal(params(4096), &MODEL_DATA_KEY, &model, [1; 7]).expect("seal"),
        // One chunk.
        sealed_model::seal(params(4096), &MODEL_DATA_KEY, &model[..100], [2; 7]).expect("seal"),
        // An empty model: one empty last chunk.
        sealed_model::seal(params(4096), &MODEL_DATA_KEY, &[], [3; 7]).expect("seal"),
    ]
}

fn cms_blobs() -> Vec<Vec<u8>> {
    let public = rsa_key().to_public_key();
    let mut rng = DetRng::new("sealed-fuzz seeds: cms");
    [&[0x42u8; 32][..], &[0x17; 100][..]]
        .iter()
        .map(|plain| {
            sealed_kms::cms::build_ciphertext_for_recipient(plain, &public, &[7; 32], &mut rng)
                .expect("build cms")
        })
        .collect()
}

fn hex48(byte: u8) -> String {
    hex::encode([byte; 48])
}

fn encode_all<T>(items: &[T], f: impl Fn(&T) -> Vec<u8>) -> Vec<Vec<u8>> {
    items.iter().map(f).collect()
}

/// The generated seeds of `target` (empty for an unknown target).
pub fn generated(target: &str) -> Vec<Seed> {
    let bodies: Vec<Vec<u8>> = match target {
        "frame" => {
            let reqs = encode_all(&enclave_requests(), |m| m.encode().expect("encode"));
            let mut stream = vec![5u8];
            for (i, body) in reqs.iter().enumerate() {
                stream.extend(encode_frame(i as u64 + 1, body).expect("frame"));
            }
            let mut small = vec![0u8];
            small.extend(encode_frame(9, b"").expect("frame"));
            small.extend(encode_frame(u64::MAX, &[0xa0]).expect("frame"));
            vec![stream, small]
        }
        "enclave_request" => encode_all(&enclave_requests(), |m| m.encode().expect("encode")),
        "enclave_response" => encode_all(&enclave_responses(), |m| m.encode().expect("encode")),
        "infer_request" => encode_all(&infer_requests(), |m| m.encode().expect("encode")),
        "infer_response" => encode_all(&infer_responses(), |m| m.encode().expect("encode")),
        "tensor" => encode_all(&tensors(), |t| {
            sealed_wire::cbor::to_vec(t).expect("encode")
        }),
        "manifest" => {
            let mut m = ModelManifest::default();
            m.insert("digits".into(), vec![0xab; 48]);
            m.insert("other-model".into(), vec![0xcd; 48]);
            vec![
                m.encode().expect("encode"),
                ModelManifest::default().encode().expect("encode"),
            ]
        }
        "sealed_request" => {
            let mut v = sealed_requests();
            v.push(server_key().config().encode());
            v
        }
        "sealed_response" => sealed_responses(),
        "sealed_model" => sealed_models(),
        "kms_cms" => cms_blobs(),
        "kms_json" => {
            let cms = cms_blobs().remove(0);
            let b64 = STANDARD.encode(&cms);
            let key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
            let bodies = [
                serde_json::json!({"KeyId": key, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                    "CiphertextForRecipient": b64}),
                serde_json::json!({"KeyId": key, "CiphertextBlob": STANDARD.encode([1u8; 184]),
                    "CiphertextForRecipient": b64}),
                serde_json::json!({"CiphertextForRecipient": b64}),
                serde_json::json!({"__type": "AccessDeniedException",
                    "message": "The ciphertext refers to a customer master key that does not exist"}),
            ];
            bodies
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut out = vec![i as u8];
                    out.extend(serde_json::to_vec(v).expect("json"));
                    out
                })
                .collect()
        }
        "policy_file" => {
            let policy = serde_json::json!({
                "version": 1,
                "accept": [
                    {"name": "v0.3.0", "pcrs": {"0": hex48(0xa0), "1": hex48(0xa1), "2": hex48(0xa2)}},
                    {"name": "v0.4.0", "pcrs": {"0": hex48(0xb0), "1": hex48(0xa1), "2": hex48(0xb2), "8": hex48(0xb8)}}
                ],
                "models": {"digits": hex48(0xe0)},
                "max_age_secs": 300
            });
            let minimal = serde_json::json!({
                "version": 1,
                "accept": [{"name": "only", "pcrs": {"0": hex48(0x01)}}]
            });
            let measurements = serde_json::json!({
                "Measurements": {
                    "HashAlgorithm": "Sha384 { ... }",
                    "PCR0": hex48(0xa0), "PCR1": hex48(0xa1), "PCR2": hex48(0xa2)
                }
            });
            let bare = serde_json::json!({
                "PCR0": hex48(0xA0).to_uppercase(), "PCR1": hex48(0xa1), "PCR2": hex48(0xa2),
                "PCR8": hex48(0x08)
            });
            [policy, minimal, measurements, bare]
                .iter()
                .map(|v| serde_json::to_vec_pretty(v).expect("json"))
                .collect()
        }
        _ => Vec::new(),
    };
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("gen-{i:02}"), b))
        .collect()
}

/// Real vectors for `target`, read from the crates' `tests/data` under `repo` (the workspace
/// root), with the selector byte the target expects in front where it takes one.
pub fn real_vectors(target: &str, repo: &std::path::Path) -> std::io::Result<Vec<Seed>> {
    let read = |rel: &str| std::fs::read(repo.join(rel));
    let mut out = Vec::new();
    match target {
        "attestation" => {
            // The byte picks the verification instant (crate::ATTESTATION_TIMES_MS).
            let docs: BTreeMap<&str, (u8, &str)> = BTreeMap::from([
                ("evervault", (0, "evervault-2022-10-13.cbor")),
                ("nitrite", (1, "nitrite-2024-09-07.cbor")),
                ("nitro-validator", (2, "nitro-validator-2026-01-03.cbor")),
                ("self-signed-mock", (1, "self-signed-mock.cbor")),
                ("nonce-bitflip", (1, "nonce-bitflip.cbor")),
            ]);
            for (name, (pick, file)) in docs {
                let mut bytes = vec![pick];
                bytes.extend(read(&format!("shared/attestation/tests/data/{file}"))?);
                out.push((format!("real-{name}"), bytes));
            }
        }
        "kms_cms" | "kms_json" => {
            for (name, file) in [
                (
                    "sdk-c-ber",
                    "aws-nitro-enclaves-sdk-c_cms_test_input_ber.ber",
                ),
                (
                    "sdk-c-ber-w-ctx",
                    "aws-nitro-enclaves-sdk-c_cms_test_input_ber_w_ctx.ber",
                ),
            ] {
                let bytes = read(&format!("shared/kms/tests/data/{file}"))?;
                let bytes = if target == "kms_json" {
                    let body =
                        serde_json::json!({"CiphertextForRecipient": STANDARD.encode(&bytes)});
                    let mut v = vec![0u8];
                    v.extend(serde_json::to_vec(&body).expect("json"));
                    v
                } else {
                    bytes
                };
                out.push((format!("real-{name}"), bytes));
            }
        }
        _ => {}
    }
    Ok(out)
}
