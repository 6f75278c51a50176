//! The engine opens the allocator's wipe windows (`sealed-alloc`): with the enclave's global
//! allocator, loading a model wipes at least tract's decoded copy of the protobuf as tract frees it,
//! an inference wipes at least its input tensor as the worker frees it (and tract's activations
//! with it), and dropping the engine (a model is never unloaded otherwise) wipes its plan's
//! weights.
//! One test function: the counter is process-wide.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sealed_alloc::{EnclaveAlloc, wiped_bytes};
use sealed_enclave::engine::{Engine, EngineConfig};
use sealed_wire::{NamedTensor, Tensor};

#[global_allocator]
static ALLOCATOR: EnclaveAlloc = EnclaveAlloc::new(cfg!(target_env = "musl"));

fn digits_onnx() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/digits/digits.onnx");
    std::fs::read(path).unwrap()
}

#[test]
fn loading_running_and_dropping_a_model_wipe_what_tract_frees() {
    let onnx = digits_onnx();
    let engine = Engine::new(EngineConfig::default());

    let before = wiped_bytes();
    engine.load_model("digits", &onnx).unwrap();
    let load = wiped_bytes() - before;
    // tract decodes the protobuf (its own copy of every weight), builds tensors from it and
    // rebuilds them as it optimises, freeing each copy during the load (digits: ~1.2 MB wiped).
    assert!(
        load >= onnx.len(),
        "{load} bytes wiped by a {}-byte load",
        onnx.len()
    );

    // Nothing is wiped outside a window: a free of the same size now is not counted.
    let idle = wiped_bytes();
    drop(vec![1u8; onnx.len()]);
    assert_eq!(wiped_bytes(), idle);

    // An inference: the worker thread frees tract's copy of the input (rows × 64 f32), the
    // activations and the outputs, all inside the worker's window; the wire tensors handed in and
    // back wipe themselves (`Zeroizing`) without the counter.
    let rows = 32u64;
    let input = vec![NamedTensor {
        name: "input".into(),
        tensor: Tensor::from_f32(vec![rows, 64], &vec![0.5; 64 * rows as usize]).unwrap(),
    }];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let before = wiped_bytes();
    let outputs = runtime.block_on(engine.infer("digits", input)).unwrap();
    let inference = wiped_bytes() - before;
    assert!(!outputs.is_empty());
    let input_bytes = (rows * 64 * 4) as usize;
    assert!(
        inference >= input_bytes,
        "{inference} bytes wiped by an inference on a {input_bytes}-byte input"
    );

    let before = wiped_bytes();
    drop(engine);
    let dropped = wiped_bytes() - before;
    // The plan's constants are the weights, most of the file.
    assert!(
        dropped >= onnx.len() / 2,
        "{dropped} bytes wiped by the drop"
    );
}
