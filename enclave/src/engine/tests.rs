//! Engine tests against the bundled digits model (`sim/assets/digits/`, made by
//! `scripts/make_digits_model.py`) and its recorded NumPy forward pass (`expected.json`).

use std::path::PathBuf;
use std::sync::Arc;

use sealed_wire::limits::{MAX_MODEL_LEN, MAX_MODELS};
use sealed_wire::{DType, ErrorCode, NamedTensor, Tensor, TensorSpec};
use sha2::{Digest, Sha384};

use super::*;

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sim/assets/digits")
        .join(name)
}

fn digits_onnx() -> Vec<u8> {
    std::fs::read(asset("digits.onnx")).unwrap()
}

fn add_onnx() -> Vec<u8> {
    std::fs::read(asset("add_i64.onnx")).unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(asset("expected.json")).unwrap()).unwrap()
}

/// Reads a little-endian f32, C-order `.npy` file (format version 1.0 or 2.0).
fn read_npy_f32(name: &str) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(asset(name)).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => panic!("npy version {v}"),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let dims = &header[header.find("'shape': (").unwrap() + 10..];
    let dims = &dims[..dims.find(')').unwrap()];
    let shape: Vec<u64> = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let values: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values.len() as u64, shape.iter().product::<u64>());
    (shape, values)
}

fn engine() -> Engine {
    Engine::new(EngineConfig {
        workers: 2,
        queue_depth: 64,
        ..EngineConfig::default()
    })
}

fn digits_engine() -> Engine {
    let e = engine();
    e.load_model("digits", &digits_onnx()).unwrap();
    e
}

fn digits_input(name: &str) -> Vec<NamedTensor> {
    let (shape, values) = read_npy_f32(name);
    vec![NamedTensor {
        name: "input".into(),
        tensor: Tensor::from_f32(shape, &values).unwrap(),
    }]
}

fn f32_input(name: &str, shape: Vec<u64>) -> Vec<NamedTensor> {
    let n = shape.iter().product::<u64>() as usize;
    vec![NamedTensor {
        name: name.into(),
        tensor: Tensor::from_f32(shape, &vec![0.5; n]).unwrap(),
    }]
}

fn i64_tensor(name: &str, values: &[i64]) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        tensor: Tensor::from_i64(vec![values.len() as u64], values).unwrap(),
    }
}

/// Checks outputs against one `expected.json` entry: labels exactly, probabilities within 1e-5.
fn assert_matches_expected(outputs: &[NamedTensor], entry: &serde_json::Value) {
    let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities", "label"]);
    let rows = entry["predicted_labels"].as_array().unwrap().len() as u64;

    let probs = &outputs[0].tensor;
    assert_eq!(probs.shape(), &[rows, 10]);
    let got = probs.to_f32().unwrap();
    let want: Vec<f64> = entry["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((f64::from(*g) - w).abs() <= 1e-5, "probability {g} vs {w}");
    }

    let labels = &outputs[1].tensor;
    assert_eq!(labels.shape(), &[rows]);
    let want: Vec<i64> = entry["predicted_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(labels.to_i64().unwrap(), want);
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}

#[test]
fn load_reports_declared_inputs_outputs_and_sha384() {
    let e = engine();
    let bytes = digits_onnx();
    let info = e.load_model("digits", &bytes).unwrap();
    assert_eq!(info.model_id, "digits");
    assert_eq!(info.sha384, Sha384::digest(&bytes).to_vec());
    assert_eq!(
        hex::encode(&info.sha384),
        expected()["model_sha384"].as_str().unwrap()
    );
    assert_eq!(
        info.inputs,
        [TensorSpec {
            name: "input".into(),
            dtype: Some(DType::F32),
            shape: vec![None, Some(64)],
        }]
    );
    assert_eq!(
        info.outputs,
        [
            TensorSpec {
                name: "probabilities".into(),
                dtype: Some(DType::F32),
                shape: vec![None, Some(10)],
            },
            TensorSpec {
                name: "label".into(),
                dtype: Some(DType::I64),
                shape: vec![None],
            },
        ]
    );
    assert_eq!(e.models(), [info]);
}

#[tokio::test]
async fn predictions_match_the_recorded_forward_pass() {
    let e = digits_engine();
    let expected = expected();
    let entries = expected["inputs"].as_object().unwrap();
    assert!(entries.len() >= 6);
    for (file, entry) in entries {
        let outputs = e.infer("digits", digits_input(file)).await.unwrap();
        assert_matches_expected(&outputs, entry);
    }
    assert_eq!(e.in_flight(), 0);
}

#[tokio::test]
async fn batch_of_eight_gives_eight_rows() {
    let e = digits_engine();
    let (shape, _) = read_npy_f32("batch_8.npy");
    assert_eq!(shape, [8, 64]);
    let outputs = e
        .infer("digits", digits_input("batch_8.npy"))
        .await
        .unwrap();
    assert_matches_expected(&outputs, &expected()["inputs"]["batch_8.npy"]);
}

#[tokio::test]
async fn integer_model_adds_and_shares_its_symbol_across_inputs() {
    let e = engine();
    let info = e.load_model("add", &add_onnx()).unwrap();
    assert_eq!(info.inputs.len(), 2);
    assert_eq!(info.inputs[0].shape, [None]);
    assert_eq!(info.outputs[0].dtype, Some(DType::I64));
    // Inputs in any order; outputs in declared order.
    let out = e
        .infer(
            "add",
            vec![
                i64_tensor("b", &[10, -20, i64::MAX - 3]),
                i64_tensor("a", &[1, 2, 3]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out[0].name, "sum");
    assert_eq!(out[0].tensor.to_i64().unwrap(), [11, -18, i64::MAX]);

    let err = e
        .infer(
            "add",
            vec![i64_tensor("a", &[1, 2, 3]), i64_tensor("b", &[1, 2])],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InputMismatch, "{err}");
}

#[tokio::test]
async fn inputs_that_do_not_match_the_declaration_are_refused_before_running() {
    let e = digits_engine();
    let good = || f32_input("input", vec![2, 64]);
    assert!(e.infer("digits", good()).await.is_ok());

    let mut extra = good();
    extra.push(NamedTensor {
        name: "other".into(),
        tensor: Tensor::from_f32(vec![1], &[0.0]).unwrap(),
    });
    let mut twice = good();
    twice.extend(good());
    let cases: Vec<(&str, Vec<NamedTensor>)> = vec![
        ("wrong name", f32_input("pixels", vec![1, 64])),
        (
            "wrong dtype",
            vec![NamedTensor {
                name: "input".into(),
                tensor: Tensor::from_f64(vec![1, 64], &[0.0; 64]).unwrap(),
            }],
        ),
        ("wrong fixed dim", f32_input("input", vec![1, 63])),
        ("wrong rank", f32_input("input", vec![64])),
        ("too high rank", f32_input("input", vec![1, 1, 64])),
        ("empty batch", f32_input("input", vec![0, 64])),
        ("extra input", extra),
        ("input twice", twice),
        ("missing input", vec![]),
    ];
    for (case, inputs) in cases {
        let err = e.infer("digits", inputs).await.unwrap_err();
        assert!(
            matches!(err, EngineError::InputMismatch(_)),
            "{case}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::InputMismatch);
    }
    assert_eq!(e.in_flight(), 0);
}

#[tokio::test]
async fn mismatch_messages_do_not_echo_values_or_unknown_names() {
    let e = digits_engine();
    let err = e
        .infer(
            "digits",
            vec![NamedTensor {
                name: "secret-name".into(),
                tensor: Tensor::from_f32(vec![1, 64], &[123.456; 64]).unwrap(),
            }],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("secret-name") && !err.contains("123.4"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_model_is_refused() {
    let e = digits_engine();
    let err = e
        .infer("nope", f32_input("input", vec![1, 64]))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownModel(ref id) if id == "nope"));
    assert_eq!(err.code(), ErrorCode::UnknownModel);
}

#[test]
fn bad_model_bytes_are_rejected() {
    let e = engine();
    let digits = digits_onnx();
    // The op type "Relu" → "Relx": a well-formed protobuf naming an operator tract lacks.
    let pos = digits.windows(4).position(|w| w == b"Relu").unwrap();
    let mut unsupported = digits.clone();
    unsupported[pos + 3] = b'x';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"this is not an onnx model at all".to_vec()),
        ("truncated", digits[..digits.len() / 2].to_vec()),
        ("empty", vec![]),
    ];
    for (case, bytes) in cases {
        let err = e.load_model("m", &bytes).unwrap_err();
        assert!(
            matches!(err, EngineError::ModelRejected(_)),
            "{case}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::ModelRejected);
    }
    let err = e.load_model("m", &unsupported).unwrap_err();
    assert!(matches!(err, EngineError::UnsupportedOperator), "{err:?}");
    assert_eq!(err.code(), ErrorCode::UnsupportedOperator);
    assert!(e.models().is_empty());
    assert!(e.manifest().models.is_empty());
}

#[test]
fn oversized_model_and_invalid_id_are_refused_before_parsing() {
    let e = engine();
    let err = e
        .load_model("big", &vec![0u8; MAX_MODEL_LEN + 1])
        .unwrap_err();
    assert!(matches!(err, EngineError::ModelTooLarge { .. }));
    assert_eq!(err.code(), ErrorCode::ModelTooLarge);
    // The cap is the configured one (sealed models: `--max-model-bytes`).
    let small = Engine::new(EngineConfig {
        workers: 1,
        queue_depth: 1,
        max_model_len: 64,
        ..EngineConfig::default()
    });
    assert_eq!(small.max_model_len(), 64);
    assert!(matches!(
        small.load_model("digits", &digits_onnx()).unwrap_err(),
        EngineError::ModelTooLarge { max: 64, .. }
    ));
    for id in ["", "has space", "slash/id", &"x".repeat(129)] {
        let err = e.load_model(id, &add_onnx()).unwrap_err();
        assert!(matches!(err, EngineError::InvalidModelId), "{id:?}");
    }
}

#[test]
fn duplicate_id_is_refused_and_manifest_lists_models_sorted() {
    let e = engine();
    e.load_model("zeta", &add_onnx()).unwrap();
    e.load_model("alpha", &digits_onnx()).unwrap();
    let err = e.load_model("zeta", &digits_onnx()).unwrap_err();
    assert!(matches!(err, EngineError::ModelAlreadyLoaded(ref id) if id == "zeta"));
    assert_eq!(err.code(), ErrorCode::ModelAlreadyLoaded);

    let manifest = e.manifest();
    let ids: Vec<&str> = manifest
        .models
        .iter()
        .map(|m| m.model_id.as_str())
        .collect();
    assert_eq!(ids, ["alpha", "zeta"]);
    assert_eq!(
        manifest.models[0].sha384,
        Sha384::digest(digits_onnx()).to_vec()
    );
    // The first model stays the one that was loaded under the id.
    assert_eq!(
        manifest.models[1].sha384,
        Sha384::digest(add_onnx()).to_vec()
    );
    assert!(manifest.encode().is_ok());
}

#[test]
fn loading_more_than_max_models_is_refused() {
    let e = engine();
    let add = add_onnx();
    for i in 0..MAX_MODELS {
        e.load_model(&format!("m{i:02}"), &add).unwrap();
    }
    let err = e.load_model("one-more", &add).unwrap_err();
    assert!(matches!(err, EngineError::TooManyModels { max } if max == MAX_MODELS));
    assert_eq!(err.code(), ErrorCode::TooManyModels);
    assert_eq!(e.models().len(), MAX_MODELS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_inferences_from_several_tasks_all_succeed() {
    let e = Arc::new(digits_engine());
    let expected = expected();
    let entries: Vec<(String, serde_json::Value)> = expected["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut tasks = Vec::new();
    for t in 0..12 {
        let (e, entries) = (Arc::clone(&e), entries.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let (file, entry) = &entries[(t + round) % entries.len()];
                let out = e.infer("digits", digits_input(file)).await.unwrap();
                assert_matches_expected(&out, entry);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(e.in_flight(), 0);
}

#[tokio::test]
async fn full_queue_answers_busy_without_waiting() {
    let e = Engine::new(EngineConfig {
        workers: 1,
        queue_depth: 1,
        ..EngineConfig::default()
    });
    e.load_model("digits", &digits_onnx()).unwrap();
    assert_eq!(e.workers(), 1);

    // Occupy the only worker, and wait until it has taken the job off the queue.
    let release_tx = e.hold_worker();

    // One request fits in the queue; the next one does not.
    let queued = e.submit("digits", digits_input("digit_0_1.npy")).unwrap();
    assert_eq!(e.in_flight(), 2);
    let err = e
        .infer("digits", digits_input("digit_2_0.npy"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Busy));
    assert_eq!(err.code(), ErrorCode::Busy);
    assert_eq!(e.in_flight(), 2);

    release_tx.send(()).unwrap();
    let out = queued.await.unwrap().unwrap();
    assert_matches_expected(&out, &expected()["inputs"]["digit_0_1.npy"]);
    // Room again.
    assert!(
        e.infer("digits", digits_input("digit_2_0.npy"))
            .await
            .is_ok()
    );
    assert_eq!(e.in_flight(), 0);
}

#[tokio::test]
async fn panic_in_a_worker_fails_one_request_and_the_worker_keeps_serving() {
    let e = Engine::new(EngineConfig {
        workers: 1,
        queue_depth: 4,
        ..EngineConfig::default()
    });
    e.load_model("digits", &digits_onnx()).unwrap();
    let (reply, receiver) = Reply::channel();
    assert!(e.enqueue(Job::Panic { reply }).is_ok());
    let err = receiver.await.unwrap().unwrap_err();
    assert!(matches!(err, EngineError::InferenceFailed(_)));
    assert_eq!(err.code(), ErrorCode::InferenceFailed);

    // Same single worker, still alive.
    let out = e
        .infer("digits", digits_input("digit_9_3.npy"))
        .await
        .unwrap();
    assert_matches_expected(&out, &expected()["inputs"]["digit_9_3.npy"]);
    assert_eq!(e.in_flight(), 0);
}

/// With an intra-op pool (builds with `multithread-mm`), every prediction still matches the
/// recorded forward pass, from several tasks at once sharing the one pool; without the feature
/// the setting falls back to one thread. tract's size gates are lowered to 0 so that the digits
/// model's small products really run on the pool.
#[tokio::test]
async fn intra_op_threads_keep_the_recorded_predictions() {
    #[cfg(feature = "multithread-mm")]
    {
        tract_onnx::prelude::multithread::set_threading_panel_threshold(0);
        tract_onnx::prelude::multithread::set_threading_element_threshold(0);
    }
    assert_eq!(EngineConfig::default().intra_op_threads, 1);
    let e = Arc::new(Engine::new(EngineConfig {
        workers: 2,
        intra_op_threads: 2,
        ..EngineConfig::default()
    }));
    assert_eq!(e.intra_op_threads(), if INTRA_OP_AVAILABLE { 2 } else { 1 });
    e.load_model("digits", &digits_onnx()).unwrap();
    let expected = expected();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (e, expected) = (Arc::clone(&e), expected.clone());
        tasks.push(tokio::spawn(async move {
            for (file, entry) in expected["inputs"].as_object().unwrap() {
                let outputs = e.infer("digits", digits_input(file)).await.unwrap();
                assert_matches_expected(&outputs, entry);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The intra-op pool's threads compute parts of a request's activations and free their scratch:
/// each wipes what it frees for its whole life, as the workers do (tests/wipe_on_load.rs counts
/// a worker's wipes; this checks every pool thread's window, which needs no global allocator).
#[cfg(feature = "multithread-mm")]
#[test]
fn every_intra_op_thread_wipes_what_it_frees() {
    let Some(Executor::MultiThread(pool)) = intra_op_executor(3) else {
        panic!("no intra-op pool");
    };
    assert_eq!(pool.current_num_threads(), 3);
    let windows = pool.broadcast(|_| sealed_alloc::wipes_this_thread());
    assert_eq!(windows, vec![true; 3]);
    assert!(
        !sealed_alloc::wipes_this_thread(),
        "not the caller's thread"
    );
    assert!(intra_op_executor(1).is_none());
}

#[test]
fn config_defaults_to_one_worker_per_cpu_and_clamps_zero() {
    let d = EngineConfig::default();
    assert_eq!(
        d.workers,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(d.queue_depth, DEFAULT_QUEUE_DEPTH);
    let e = Engine::new(EngineConfig {
        workers: 0,
        queue_depth: 0,
        ..EngineConfig::default()
    });
    assert_eq!(e.workers(), 1);
}

#[test]
fn every_error_maps_to_its_stable_code() {
    let cases = [
        (
            EngineError::UnknownModel("m".into()),
            ErrorCode::UnknownModel,
        ),
        (
            EngineError::InputMismatch("x".into()),
            ErrorCode::InputMismatch,
        ),
        (
            EngineError::InvalidTensor("x".into()),
            ErrorCode::InvalidTensor,
        ),
        (EngineError::OutputTooLarge, ErrorCode::InvalidTensor),
        (
            EngineError::InferenceFailed("x"),
            ErrorCode::InferenceFailed,
        ),
        (
            EngineError::ModelRejected("x".into()),
            ErrorCode::ModelRejected,
        ),
        (
            EngineError::ModelTooLarge { len: 2, max: 1 },
            ErrorCode::ModelTooLarge,
        ),
        (EngineError::InvalidModelId, ErrorCode::MalformedMessage),
        (
            EngineError::ModelAlreadyLoaded("m".into()),
            ErrorCode::ModelAlreadyLoaded,
        ),
        (
            EngineError::TooManyModels { max: 1 },
            ErrorCode::TooManyModels,
        ),
        (
            EngineError::UnsupportedOperator,
            ErrorCode::UnsupportedOperator,
        ),
        (EngineError::Busy, ErrorCode::Busy),
        (EngineError::Internal("x"), ErrorCode::Internal),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
}

/// One worker, `model_id` served with dynamic batching up to `rows` rows.
fn batching_engine(model_id: &str, rows: usize) -> Engine {
    batching_engine_with_depth(model_id, rows, 32)
}

fn batching_engine_with_depth(model_id: &str, rows: usize, queue_depth: usize) -> Engine {
    Engine::new(EngineConfig {
        workers: 1,
        queue_depth,
        dynamic_batch: [(model_id.to_owned(), rows)].into(),
        ..EngineConfig::default()
    })
}

#[tokio::test]
async fn dynamic_batching_joins_queued_requests_and_answers_each_its_own_rows() {
    let e = batching_engine("digits", 8);
    e.load_model("digits", &digits_onnx()).unwrap();
    assert_eq!(e.batch_rows("digits"), Some(8));
    let expected = expected();
    let singles: Vec<String> = expected["inputs"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("digit_"))
        .cloned()
        .collect();
    assert!((2..=7).contains(&singles.len()));

    // With the worker held, every request queues; on release the first token takes all the
    // single-row requests (≤ 8 rows) as one batch, and the 8-row one runs alone after them.
    let release = e.hold_worker();
    let mut waiting = Vec::new();
    for file in singles
        .iter()
        .chain(std::iter::once(&"batch_8.npy".to_owned()))
    {
        waiting.push((
            file.clone(),
            e.submit("digits", digits_input(file)).unwrap(),
        ));
    }
    assert_eq!(e.in_flight(), waiting.len() + 1);
    release.send(()).unwrap();
    for (file, reply) in waiting {
        let out = reply.await.unwrap().unwrap();
        assert_matches_expected(&out, &expected["inputs"][&file]);
    }
    assert_eq!(e.batched_requests(), singles.len() as u64);
    assert_eq!(e.in_flight(), 0);

    // Unloaded: a lone request runs alone, as without batching.
    let out = e
        .infer("digits", digits_input("digit_0_1.npy"))
        .await
        .unwrap();
    assert_matches_expected(&out, &expected["inputs"]["digit_0_1.npy"]);
    assert_eq!(e.batched_requests(), singles.len() as u64);
}

#[tokio::test]
async fn dynamic_batching_splits_outputs_by_each_requests_rows() {
    let e = batching_engine("add", 16);
    e.load_model("add", &add_onnx()).unwrap();
    let requests: Vec<(Vec<i64>, Vec<i64>)> = vec![
        (vec![1], vec![10]),
        (vec![2, 3, 4], vec![20, 30, 40]),
        (vec![-5, 5], vec![5, -5]),
    ];
    let release = e.hold_worker();
    let waiting: Vec<_> = requests
        .iter()
        .map(|(a, b)| {
            e.submit("add", vec![i64_tensor("a", a), i64_tensor("b", b)])
                .unwrap()
        })
        .collect();
    release.send(()).unwrap();
    for ((a, b), reply) in requests.iter().zip(waiting) {
        let out = reply.await.unwrap().unwrap();
        let want: Vec<i64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
        assert_eq!(out[0].name, "sum");
        assert_eq!(out[0].tensor.shape(), [a.len() as u64]);
        assert_eq!(out[0].tensor.to_i64().unwrap(), want);
    }
    assert_eq!(e.batched_requests(), 3);
}

#[tokio::test]
async fn dynamic_batching_keeps_the_queue_bound_and_skips_abandoned_requests() {
    let e = batching_engine_with_depth("digits", 8, 2);
    e.load_model("digits", &digits_onnx()).unwrap();
    let release = e.hold_worker();
    let kept = e.submit("digits", digits_input("digit_0_1.npy")).unwrap();
    let abandoned = e.submit("digits", digits_input("digit_2_0.npy")).unwrap();
    let err = e
        .infer("digits", digits_input("digit_4_2.npy"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Busy), "{err:?}");
    assert_eq!(e.in_flight(), 3);
    drop(abandoned);
    release.send(()).unwrap();
    let out = kept.await.unwrap().unwrap();
    assert_matches_expected(&out, &expected()["inputs"]["digit_0_1.npy"]);
    // Neither the refused nor the abandoned request ran: nothing was batched.
    assert_eq!(e.batched_requests(), 0);
    for _ in 0..1000 {
        if e.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn models_not_named_for_batching_run_as_before() {
    let e = batching_engine("other", 8);
    e.load_model("digits", &digits_onnx()).unwrap();
    assert_eq!(e.batch_rows("digits"), None);
    // A row limit of 1 turns batching off for that model.
    let off = batching_engine("digits", 1);
    off.load_model("digits", &digits_onnx()).unwrap();
    assert_eq!(off.batch_rows("digits"), None);
}

#[tokio::test]
async fn tract_knobs_are_checked_and_a_plan_built_under_them_predicts_the_same() {
    assert!(tract_knob_scope(&[]).unwrap().is_none());
    let knob = |v: &str| vec![("TRACT_DISABLE_DIRECT_SPATIAL".to_owned(), v.to_owned())];
    assert!(tract_knob_scope(&knob("true")).unwrap().is_some());
    assert!(tract_knob_scope(&knob("sideways")).is_err());
    assert!(tract_knob_scope(&[("TRACT_NO_SUCH_KNOB".into(), "1".into())]).is_err());
    assert!(
        scoped_tract_knobs()
            .iter()
            .any(|(name, _)| *name == "TRACT_DISABLE_DIRECT_SPATIAL")
    );

    let e = Engine::new(EngineConfig {
        workers: 1,
        tract_knobs: knob("true"),
        ..EngineConfig::default()
    });
    e.load_model("digits", &digits_onnx()).unwrap();
    let out = e
        .infer("digits", digits_input("digit_7_9.npy"))
        .await
        .unwrap();
    assert_matches_expected(&out, &expected()["inputs"]["digit_7_9.npy"]);
}

#[test]
fn plans_narrow_direct_convolutions_unless_the_knob_is_named() {
    let engine = |knobs: &[(&str, &str)]| {
        Engine::new(EngineConfig {
            workers: 1,
            tract_knobs: knobs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..EngineConfig::default()
        })
    };
    let x86 = cfg!(target_arch = "x86_64");
    assert_eq!(engine(&[]).planner.narrows_direct_spatial(), x86);
    // Another knob leaves the narrowing on; naming the direct spatial one, either way, hands
    // every convolution back to tract's choice; a refused set plans as if none had been given.
    let other = [("TRACT_LAZY_IM2COL_MIN_KERNEL", "6")];
    assert_eq!(engine(&other).planner.narrows_direct_spatial(), x86);
    for v in ["true", "false"] {
        let named = [("TRACT_DISABLE_DIRECT_SPATIAL", v)];
        assert!(!engine(&named).planner.narrows_direct_spatial());
    }
    let refused = [("TRACT_NO_SUCH_KNOB", "1")];
    assert_eq!(engine(&refused).planner.narrows_direct_spatial(), x86);
    // The max pools and the im2col gather are sealed-plan's whatever the knobs (no tract knob
    // governs them).
    let named = [("TRACT_DISABLE_DIRECT_SPATIAL", "true")];
    for knobs in [&[][..], &other[..], &named[..], &refused[..]] {
        assert!(engine(knobs).planner.replaces_max_pools());
        assert!(engine(knobs).planner.replaces_lazy_im2col());
    }
}

#[tokio::test]
async fn batching_frees_a_queue_slot_for_every_request_it_joins() {
    // Round after round, a full queue is joined into one batch; each round must find the whole
    // queue free again (an earlier design left a slot per joined request behind).
    let e = batching_engine_with_depth("digits", 8, 4);
    e.load_model("digits", &digits_onnx()).unwrap();
    let expected = expected();
    for round in 0..3u64 {
        let release = e.hold_worker();
        let replies: Vec<_> = (0..4)
            .map(|_| e.submit("digits", digits_input("digit_4_2.npy")).unwrap())
            .collect();
        assert!(matches!(
            e.submit("digits", digits_input("digit_4_2.npy")),
            Err(EngineError::Busy)
        ));
        release.send(()).unwrap();
        for reply in replies {
            let out = reply.await.unwrap().unwrap();
            assert_matches_expected(&out, &expected["inputs"]["digit_4_2.npy"]);
        }
        assert_eq!(e.batched_requests(), 4 * (round + 1));
        assert_eq!(e.in_flight(), 0);
    }
}

#[tokio::test]
async fn a_batching_model_keeps_its_order_and_other_models_are_not_joined() {
    let e = batching_engine_with_depth("digits", 2, 16);
    e.load_model("digits", &digits_onnx()).unwrap();
    e.load_model("add", &add_onnx()).unwrap();
    let expected = expected();
    let release = e.hold_worker();
    // digits ×3 with a row limit of 2 (→ batches of 2 and 1), an `add` request in between
    // (not batching: runs alone, and is not held back by the digits batches).
    let d1 = e.submit("digits", digits_input("digit_0_1.npy")).unwrap();
    let add = e
        .submit("add", vec![i64_tensor("a", &[1]), i64_tensor("b", &[2])])
        .unwrap();
    let d2 = e.submit("digits", digits_input("digit_2_0.npy")).unwrap();
    let d3 = e.submit("digits", digits_input("digit_7_9.npy")).unwrap();
    release.send(()).unwrap();
    for (reply, file) in [
        (d1, "digit_0_1.npy"),
        (d2, "digit_2_0.npy"),
        (d3, "digit_7_9.npy"),
    ] {
        let out = reply.await.unwrap().unwrap();
        assert_matches_expected(&out, &expected["inputs"][file]);
    }
    assert_eq!(add.await.unwrap().unwrap()[0].tensor.to_i64().unwrap(), [3]);
    assert_eq!(e.batched_requests(), 2);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn dropping_the_engine_stops_its_workers() {
    let e = batching_engine("digits", 8);
    let queue = Arc::clone(&e.queue);
    drop(e);
    // Closed and empty: a worker asking for work is told to stop instead of waiting.
    assert!(
        queue
            .next(&std::sync::atomic::AtomicUsize::new(0))
            .is_none()
    );
}

#[test]
fn a_batching_model_knows_its_output_bytes_per_row_at_load() {
    let e = batching_engine("digits", 8);
    e.load_model("digits", &digits_onnx()).unwrap();
    // probabilities [batch, 10] f32 and label [batch] i64.
    let row_bytes = e.read_models().get("digits").unwrap().output_row_bytes();
    assert_eq!(row_bytes, 10 * 4 + 8);
}

#[tokio::test]
async fn a_batch_is_cut_where_its_joined_outputs_would_exceed_the_budget() {
    // 6 MiB of output a row from 4 bytes of input: two rows fit in the joined-output budget,
    // three do not (while 3 rows and 12 input bytes are far within the other two limits).
    let row_elements = 6 * 1024 * 1024 / 4;
    let e = batching_engine("wide", 8);
    let model = model::LoadedModel::wide_for_test(row_elements, Some(8)).unwrap();
    assert!(2 * model.output_row_bytes() <= MAX_BATCH_OUTPUT_BYTES);
    assert!(3 * model.output_row_bytes() > MAX_BATCH_OUTPUT_BYTES);
    e.models
        .write()
        .unwrap()
        .insert("wide".into(), Arc::new(model));

    let release = e.hold_worker();
    let waiting: Vec<_> = [1.0f32, 2.0, 3.0]
        .into_iter()
        .map(|v| {
            let x = NamedTensor {
                name: "x".into(),
                tensor: Tensor::from_f32(vec![1, 1], &[v]).unwrap(),
            };
            (v, e.submit("wide", vec![x]).unwrap())
        })
        .collect();
    release.send(()).unwrap();
    for (v, reply) in waiting {
        let out = reply.await.unwrap().unwrap();
        assert_eq!(out[0].tensor.shape(), [1, row_elements as u64]);
        assert!(
            out[0]
                .tensor
                .to_f32()
                .unwrap()
                .iter()
                .all(|&y| y == v + 1.0)
        );
    }
    // The first two were joined; the third ran alone.
    assert_eq!(e.batched_requests(), 2);
    assert_eq!(e.in_flight(), 0);
}
