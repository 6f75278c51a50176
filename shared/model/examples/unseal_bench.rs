//! Rough throughput of sealing and opening a 256 MiB model in memory. Not a test and not run in
//! CI; build optimised by hand when measuring (`cargo run --release -p sealed-model --example
//! unseal_bench`). Uses a fixed key and nonce prefix: never do that for a real model.

use std::time::Instant;

use sealed_model::{DEFAULT_CHUNK_SIZE, ModelFormatError, SealParams, open, seal};

const LEN: usize = 256 * 1024 * 1024;

fn main() -> Result<(), ModelFormatError> {
    let key = [0x11u8; 32];
    let model = vec![0xA5u8; LEN];
    let params = SealParams {
        model_id: "bench".to_string(),
        kms_key_id: "alias/bench".to_string(),
        encrypted_data_key: vec![0; 184],
        chunk_size: DEFAULT_CHUNK_SIZE,
    };

    let t = Instant::now();
    let file = seal(params, &key, &model, [0; 7])?;
    let seal_s = t.elapsed().as_secs_f64();
    drop(model);

    let t = Instant::now();
    let opened = open(&file, &key)?;
    let open_s = t.elapsed().as_secs_f64();

    let mib = opened.len() as f64 / (1024.0 * 1024.0);
    println!("seal: {:.0} MiB/s", mib / seal_s);
    println!("open: {:.0} MiB/s", mib / open_s);
    Ok(())
}
