//! Property tests: every encoding round-trips, and no input makes a decoder panic.
//!
//! Round trips run over strategies that build only valid values (within every limit), so that
//! `decode(encode(x)) == x` must hold exactly. The no-panic properties feed each decoder arbitrary
//! bytes, CBOR-shaped junk (headers with random, often huge, declared lengths) and random
//! mutations of valid encodings; each must return `Ok` or `Err`.

use std::time::{Duration, Instant};

use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use sealed_wire::frame::{self, Frame, FrameDecoder, HEADER_LEN};
use sealed_wire::limits::{MAX_ERROR_MESSAGE_LEN, MAX_FRAME_LEN, MAX_NONCE_LEN, MIN_NONCE_LEN};
use sealed_wire::{
    DType, EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, InferRequest, InferResponse,
    ModelInfo, ModelManifest, NamedTensor, Tensor, TensorSpec, WireError, cbor,
};

// ---------------------------------------------------------------------------------------------
// Strategies for valid values.

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        prop::sample::select(ErrorCode::ALL),
        any::<u16>().prop_map(ErrorCode::from_u16),
    ]
}

/// Valid tensors: rank ≤ 4 and dims ≤ 5 keep them small; data has exactly the bytes the dtype
/// and shape need, and bool data holds only 0 and 1.
fn tensor() -> impl Strategy<Value = Tensor> {
    (dtype(), vec(0u64..=5, 0..=4)).prop_flat_map(|(dtype, shape)| {
        let len = shape.iter().product::<u64>() as usize * dtype.size();
        let byte = if dtype == DType::Bool {
            (0u8..=1).boxed()
        } else {
            any::<u8>().boxed()
        };
        vec(byte, len).prop_map(move |data| {
            Tensor::new(dtype, shape.clone(), data).expect("strategy builds valid tensors")
        })
    })
}

fn model_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,40}"
}

/// Distinct valid names, each with a tensor.
fn named_tensors() -> impl Strategy<Value = Vec<NamedTensor>> {
    btree_set("[a-z][a-zA-Z0-9_:./ ]{0,20}|\\PC{1,8}", 0..6).prop_flat_map(|names| {
        let n = names.len();
        vec(tensor(), n).prop_map(move |tensors| {
            names
                .iter()
                .cloned()
                .zip(tensors)
                .map(|(name, tensor)| NamedTensor { name, tensor })
                .collect()
        })
    })
}

fn short_message() -> impl Strategy<Value = String> {
    "\\PC{0,100}"
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    (
        "\\PC{1,20}",
        prop::option::of(dtype()),
        vec(prop::option::of(any::<u64>()), 0..=8),
    )
        .prop_map(|(name, dtype, shape)| TensorSpec { name, dtype, shape })
}

fn model_info() -> impl Strategy<Value = ModelInfo> {
    (
        model_id(),
        vec(any::<u8>(), 48),
        vec(tensor_spec(), 0..4),
        vec(tensor_spec(), 0..4),
    )
        .prop_map(|(model_id, sha384, inputs, outputs)| ModelInfo {
            model_id,
            sha384,
            inputs,
            outputs,
        })
}

fn enclave_request() -> impl Strategy<Value = EnclaveRequest> {
    prop_oneof![
        Just(EnclaveRequest::Health),
        vec(any::<u8>(), MIN_NONCE_LEN..=MAX_NONCE_LEN)
            .prop_map(|nonce| EnclaveRequest::Attestation { nonce }),
        vec(any::<u8>(), 1..512).prop_map(|sealed| EnclaveRequest::Infer { sealed }),
        (model_id(), vec(any::<u8>(), 1..512))
            .prop_map(|(model_id, onnx)| EnclaveRequest::LoadModel { model_id, onnx }),
        (any::<u64>(), vec(any::<u8>(), 1..512))
            .prop_map(|(upload_id, data)| EnclaveRequest::LoadSealedModelChunk { upload_id, data }),
        any::<u64>().prop_map(|upload_id| EnclaveRequest::LoadSealedModelEnd { upload_id }),
        any::<u64>().prop_map(|upload_id| EnclaveRequest::LoadSealedModelAbort { upload_id }),
    ]
}

fn enclave_response() -> impl Strategy<Value = EnclaveResponse> {
    prop_oneof![
        (
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            vec(model_info(), 0..4)
        )
            .prop_map(
                |(
                    protocol_version,
                    ready,
                    simulation,
                    workers,
                    in_flight,
                    batched_requests,
                    models,
                )| {
                    EnclaveResponse::Health(HealthStatus {
                        protocol_version,
                        ready,
                        simulation,
                        workers,
                        in_flight,
                        batched_requests,
                        models,
                    })
                }
            ),
        (vec(any::<u8>(), 1..1024), vec(any::<u8>(), 1..256))
            .prop_map(|(document, manifest)| EnclaveResponse::Attestation { document, manifest }),
        vec(any::<u8>(), 1..512).prop_map(|sealed| EnclaveResponse::Infer { sealed }),
        model_info().prop_map(EnclaveResponse::ModelLoaded),
        (any::<u64>(), any::<u64>()).prop_map(|(upload_id, sealed_len)| {
            EnclaveResponse::SealedModelReady {
                upload_id,
                sealed_len,
            }
        }),
        any::<u64>().prop_map(|upload_id| EnclaveResponse::SealedUploadAborted { upload_id }),
        (any::<u64>(), any::<u64>()).prop_map(|(upload_id, received)| {
            EnclaveResponse::SealedChunkAccepted {
                upload_id,
                received,
            }
        }),
        // Any message, even over the limit: `error` truncates it to something decodable.
        (error_code(), "\\PC{0,300}").prop_map(|(code, m)| EnclaveResponse::error(code, m)),
    ]
}

fn infer_request() -> impl Strategy<Value = InferRequest> {
    (model_id(), named_tensors(), any::<[u8; 16]>(), any::<u64>()).prop_map(
        |(model_id, inputs, request_id, sent_at_ms)| InferRequest {
            request_id,
            sent_at_ms,
            model_id,
            inputs,
        },
    )
}

fn infer_response() -> impl Strategy<Value = InferResponse> {
    prop_oneof![
        named_tensors().prop_map(|outputs| InferResponse::Ok { outputs }),
        (error_code(), short_message())
            .prop_map(|(code, message)| InferResponse::Error { code, message }),
    ]
}

fn manifest() -> impl Strategy<Value = ModelManifest> {
    btree_map(model_id(), vec(any::<u8>(), 48), 0..8).prop_map(|entries| {
        let mut m = ModelManifest::default();
        // Insert in reverse so that `insert` has to sort.
        for (id, digest) in entries.into_iter().rev() {
            m.insert(id, digest);
        }
        m
    })
}

// ---------------------------------------------------------------------------------------------
// Every decoder, for the no-panic properties.

fn decode_everything(bytes: &[u8]) {
    let _ = EnclaveRequest::decode(bytes);
    let _ = EnclaveResponse::decode(bytes);
    let _ = InferRequest::decode(bytes);
    let _ = InferResponse::decode(bytes);
    let _ = ModelManifest::decode(bytes);
    let _ = cbor::from_slice::<Tensor>(bytes, bytes.len());
    let _ = cbor::from_slice::<ErrorCode>(bytes, bytes.len());
    if let Ok(t) = cbor::from_slice::<Tensor>(bytes, bytes.len()) {
        // A decoded tensor is as valid as a constructed one.
        let (dtype, shape, data) = t.into_parts();
        assert!(Tensor::new(dtype, shape, data).is_ok());
    }
    if let Some(h) = bytes.first_chunk::<HEADER_LEN>() {
        let _ = frame::decode_header(h, MAX_FRAME_LEN);
        let _ = frame::decode_header(h, 64);
    }
    let mut d = FrameDecoder::new(1024);
    for chunk in bytes.chunks(7) {
        d.push(chunk);
        while let Ok(Some(_)) = d.next_frame() {}
    }
}

/// Random CBOR-shaped tokens: a major type, an "additional information" value (including the
/// reserved 28–31), and 0–8 argument bytes, which make many declared lengths huge.
fn cbor_junk() -> impl Strategy<Value = Vec<u8>> {
    vec((0u8..8, 0u8..32, vec(any::<u8>(), 0..=8)), 0..64).prop_map(|tokens| {
        let mut out = Vec::new();
        for (major, info, arg) in tokens {
            out.push((major << 5) | info);
            out.extend(arg);
        }
        out
    })
}

/// Applies byte edits (position taken modulo the length), then maybe truncates.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        vec((any::<usize>(), any::<u8>()), 1..6),
        prop::option::of(any::<usize>()),
    )
}

// ---------------------------------------------------------------------------------------------
// Round trips.

proptest! {
    #[test]
    fn frame_round_trips_through_header_and_decoder(
        id in any::<u64>(),
        body in vec(any::<u8>(), 0..2048),
    ) {
        let wire = frame::encode_frame(id, &body).unwrap();
        let h = frame::decode_header(wire.first_chunk().unwrap(), MAX_FRAME_LEN).unwrap();
        prop_assert_eq!((h.request_id, h.body_len), (id, body.len()));
        let mut d = FrameDecoder::new(MAX_FRAME_LEN);
        d.push(&wire);
        prop_assert_eq!(d.next_frame().unwrap(), Some(Frame { request_id: id, body }));
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn frame_stream_round_trips_whatever_the_chunking(
        frames in vec((any::<u64>(), vec(any::<u8>(), 0..300)), 0..8),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|(id, body)| frame::encode_frame(*id, body).unwrap())
            .collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut d = FrameDecoder::new(1024);
        let mut got = Vec::new();
        let mut from = 0;
        for to in cuts {
            d.push(&wire[from..to]);
            from = to;
            while let Some(f) = d.next_frame().unwrap() {
                got.push((f.request_id, f.body));
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn tensor_round_trips(t in tensor()) {
        let enc = cbor::to_vec(&t).unwrap();
        prop_assert_eq!(cbor::from_slice::<Tensor>(&enc, enc.len()).unwrap(), t.clone());
        let (dtype, shape, data) = t.clone().into_parts();
        prop_assert_eq!(Tensor::new(dtype, shape, data).unwrap(), t);
    }

    #[test]
    fn enclave_request_round_trips(req in enclave_request()) {
        let enc = req.encode().unwrap();
        prop_assert_eq!(EnclaveRequest::decode(&enc).unwrap(), req);
    }

    #[test]
    fn enclave_response_round_trips(resp in enclave_response()) {
        let enc = resp.encode().unwrap();
        prop_assert_eq!(EnclaveResponse::decode(&enc).unwrap(), resp);
    }

    #[test]
    fn infer_request_round_trips(req in infer_request()) {
        let enc = req.encode().unwrap();
        prop_assert_eq!(InferRequest::decode(&enc).unwrap(), req);
    }

    #[test]
    fn infer_response_round_trips(resp in infer_response()) {
        let enc = resp.encode().unwrap();
        prop_assert_eq!(InferResponse::decode(&enc).unwrap(), resp);
    }

    #[test]
    fn manifest_round_trips_and_is_sorted(m in manifest()) {
        prop_assert!(m.models.windows(2).all(|w| w[0].model_id < w[1].model_id));
        let enc = m.encode().unwrap();
        prop_assert_eq!(ModelManifest::decode(&enc).unwrap(), m);
    }

    #[test]
    fn wire_error_message_is_a_bounded_prefix(code in error_code(), msg in "\\PC{0,700}") {
        let e = WireError::new(code, msg.clone());
        prop_assert!(e.message.len() <= MAX_ERROR_MESSAGE_LEN);
        prop_assert!(msg.starts_with(&e.message));
        prop_assert!(msg.len() <= MAX_ERROR_MESSAGE_LEN || e.message.len() + 4 > MAX_ERROR_MESSAGE_LEN);
    }

    #[test]
    fn error_code_number_round_trips(n in any::<u16>()) {
        prop_assert_eq!(ErrorCode::from_u16(n).as_u16(), n);
    }
}

// ---------------------------------------------------------------------------------------------
// No input panics a decoder.

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..2048)) {
        decode_everything(&bytes);
    }

    #[test]
    fn cbor_shaped_junk_never_panics_a_decoder(bytes in cbor_junk()) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_enclave_requests_never_panic(req in enclave_request(), (e, cut) in edits()) {
        decode_everything(&mutate(req.encode().unwrap(), &e, cut));
    }

    #[test]
    fn mutated_enclave_responses_never_panic(resp in enclave_response(), (e, cut) in edits()) {
        decode_everything(&mutate(resp.encode().unwrap(), &e, cut));
    }

    #[test]
    fn mutated_infer_requests_never_panic(req in infer_request(), (e, cut) in edits()) {
        decode_everything(&mutate(req.encode().unwrap(), &e, cut));
    }

    #[test]
    fn mutated_infer_responses_never_panic(resp in infer_response(), (e, cut) in edits()) {
        decode_everything(&mutate(resp.encode().unwrap(), &e, cut));
    }

    #[test]
    fn mutated_manifests_never_panic(m in manifest(), (e, cut) in edits()) {
        decode_everything(&mutate(m.encode().unwrap(), &e, cut));
    }

    #[test]
    fn mutated_frames_never_panic(
        frames in vec((any::<u64>(), vec(any::<u8>(), 0..64)), 1..4),
        (e, cut) in edits(),
        max in any::<u32>(),
    ) {
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|(id, body)| frame::encode_frame(*id, body).unwrap())
            .collect();
        let wire = mutate(wire, &e, cut);
        let mut d = FrameDecoder::new(max);
        d.push(&wire);
        // At most one frame per header's worth of bytes: a loop that did not end would hang here.
        for _ in 0..=wire.len() / HEADER_LEN {
            match d.next_frame() {
                Ok(Some(f)) => prop_assert!(f.body.len() <= wire.len()),
                Ok(None) | Err(_) => break,
            }
        }
        decode_everything(&wire);
    }
}

// ---------------------------------------------------------------------------------------------
// Declared lengths far beyond the input.

/// A CBOR byte string header (major 2, 8-byte length) declaring 2^63-1 bytes.
const HUGE_BYTES: [u8; 9] = [0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

#[test]
fn huge_declared_byte_string_fails_quickly() {
    let start = Instant::now();
    let mut inputs = vec![HUGE_BYTES.to_vec(), [&HUGE_BYTES[..], b"tiny"].concat()];
    // Also inside otherwise valid messages: the `sealed` and `data` fields claim 2^63-1 bytes.
    let infer = EnclaveRequest::Infer {
        sealed: vec![0xee; 4],
    }
    .encode()
    .unwrap();
    let at = infer.len() - 5; // the 1-byte header 0x44 of the 4-byte payload
    assert_eq!(infer[at], 0x44);
    inputs.push([&infer[..at], &HUGE_BYTES[..], &[0xee; 4]].concat());
    let req = InferRequest {
        request_id: [1; 16],
        sent_at_ms: 1,
        model_id: "m".into(),
        inputs: vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::from_u8(vec![3], &[0xee; 3]).unwrap(),
        }],
    }
    .encode()
    .unwrap();
    let at = req.len() - 4;
    assert_eq!(req[at], 0x43);
    inputs.push([&req[..at], &HUGE_BYTES[..], &[0xee; 3]].concat());

    for input in &inputs {
        assert!(EnclaveRequest::decode(input).is_err());
        assert!(EnclaveResponse::decode(input).is_err());
        assert!(InferRequest::decode(input).is_err());
        assert!(InferResponse::decode(input).is_err());
        assert!(ModelManifest::decode(input).is_err());
        assert!(cbor::from_slice::<Tensor>(input, 1024).is_err());
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
