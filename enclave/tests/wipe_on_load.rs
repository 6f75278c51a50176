//! The engine opens the allocator's wipe windows (`sealed-alloc`): with the enclave's global
//! allocator, loading a model wipes at least tract's own copy of the protobuf as tract frees it,
//! and dropping the engine (a model is never unloaded otherwise) wipes its plan's weights.
//! One test function: the counter is process-wide.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sealed_alloc::{EnclaveAlloc, wiped_bytes};
use sealed_enclave::engine::{Engine, EngineConfig};

#[global_allocator]
static ALLOCATOR: EnclaveAlloc = EnclaveAlloc::new(cfg!(target_env = "musl"));

fn digits_onnx() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/digits/digits.onnx");
    std::fs::read(path).unwrap()
}

#[test]
fn loading_and_dropping_a_model_wipe_what_tract_frees() {
    let onnx = digits_onnx();
    let engine = Engine::new(EngineConfig::default());

    let before = wiped_bytes();
    engine.load_model("digits", &onnx).unwrap();
    let load = wiped_bytes() - before;
    // tract reads the whole protobuf into a buffer of its own and frees it during the load.
    assert!(
        load >= onnx.len(),
        "{load} bytes wiped by a {}-byte load",
        onnx.len()
    );

    // Nothing is wiped outside a window: a free of the same size now is not counted.
    let idle = wiped_bytes();
    drop(vec![1u8; onnx.len()]);
    assert_eq!(wiped_bytes(), idle);

    let before = wiped_bytes();
    drop(engine);
    let dropped = wiped_bytes() - before;
    // The plan's constants are the weights, most of the file.
    assert!(
        dropped >= onnx.len() / 2,
        "{dropped} bytes wiped by the drop"
    );
}
