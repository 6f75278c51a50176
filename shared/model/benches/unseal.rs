//! Unseal throughput: how fast a sealed model is opened the way the enclave opens it (the
//! pipelined opener: chunks authenticated and decrypted on the caller's thread, SHA-384 on its own
//! thread), beside the serial opener (GCM then SHA-384 on one thread), the two costs they are made
//! of (AES-256-GCM alone, SHA-384 alone) and sealing.
//!
//! The pipelined opener gives two figures: "plaintext ready" (the caller's thread, which is what
//! the enclave's tract load waits for) and "digest confirmed" (the hash thread done, which is what
//! publishing the model waits for; bound by SHA-384).
//!
//! `cargo bench -p sealed-model --bench unseal` (optimised build). `UNSEAL_BENCH_MIB` sets the model
//! size (default 1024 MiB); each figure is the best of `UNSEAL_BENCH_RUNS` runs (default 3).
//! Uses a fixed key and nonce prefix: never do that for a real model.

use std::time::Instant;

use aead::{AeadInOut, KeyInit, Nonce};
use sealed_crypto::aes256gcm::Aes256Gcm;
use sealed_model::{
    DEFAULT_CHUNK_SIZE, ModelFormatError, Opener, PipelinedOpener, SealedModelHeader, Sealer,
    parse_header,
};
use sha2::{Digest, Sha384};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Best (shortest) of `runs` timings of `f`, in seconds.
fn best_of(
    runs: usize,
    mut f: impl FnMut() -> Result<(), ModelFormatError>,
) -> Result<f64, ModelFormatError> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<(), ModelFormatError> {
    let mib = env_usize("UNSEAL_BENCH_MIB", 1024);
    let runs = env_usize("UNSEAL_BENCH_RUNS", 3).max(1);
    let len = mib * 1024 * 1024;
    let key = [0x11u8; 32];
    // Not constant, so nothing can shortcut it; not random, so runs compare.
    let model: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let chunk = DEFAULT_CHUNK_SIZE as usize;

    // Seal once into a file image, timing it.
    let mut file = Vec::new();
    let seal_s = best_of(1, || {
        file.clear();
        // Sealing reads the model twice: once for the digest the header carries, once to encrypt.
        let header = SealedModelHeader {
            model_id: "bench".to_string(),
            kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/bench".to_string(),
            encrypted_data_key: vec![0; 184],
            plaintext_len: len as u64,
            plaintext_sha384: Sha384::digest(&model).into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            nonce_prefix: [0; 7],
        };
        let mut sealer = Sealer::new(&header, &key)?;
        file.reserve(len + len / chunk * 16 + 70_000);
        file.extend_from_slice(sealer.header_bytes());
        let count = model.chunks(chunk).count();
        for (i, piece) in model.chunks(chunk).enumerate() {
            file.extend_from_slice(&sealer.seal_chunk(piece, i + 1 == count)?);
        }
        sealer.finish()
    })?;

    // Open as the enclave does: pipelined, SHA-384 on its own thread.
    let mut ready_best = f64::INFINITY;
    let pipelined_s = best_of(runs, || {
        let t = Instant::now();
        let (header, header_len) = parse_header(&file)?;
        let header_bytes = file.get(..header_len).unwrap_or_default();
        let mut opener = PipelinedOpener::new(&header, header_bytes, &key)?;
        let mut rest = file.get(header_len..).unwrap_or_default();
        while let Some(n) = opener.next_chunk_len() {
            let (this, tail) = rest.split_at(n.min(rest.len()));
            opener.open_chunk(this)?;
            rest = tail;
        }
        let model = opener.finish()?;
        ready_best = ready_best.min(t.elapsed().as_secs_f64());
        assert_eq!(model.plaintext().len(), len);
        model.verify()
    })?;

    // The serial opener: streamed, one preallocated output buffer, digest checked inline.
    let open_s = best_of(runs, || {
        let (header, header_len) = parse_header(&file)?;
        let header_bytes = file.get(..header_len).unwrap_or_default();
        let mut opener = Opener::new(&header, header_bytes, &key)?;
        let mut out = opener.output_buffer()?;
        let mut rest = file.get(header_len..).unwrap_or_default();
        while let Some(n) = opener.next_chunk_len() {
            let (this, tail) = rest.split_at(n.min(rest.len()));
            opener.open_chunk(this, &mut out)?;
            rest = tail;
        }
        opener.finish()?;
        assert_eq!(out.len(), len);
        Ok(())
    })?;

    // The two parts on their own.
    let cipher = Aes256Gcm::new(&key.into());
    let mut buf = model.clone();
    let gcm_s = best_of(runs, || {
        for (i, piece) in buf.chunks_mut(chunk).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
            let _tag = cipher
                .encrypt_inout_detached(&Nonce::<Aes256Gcm>::from(nonce), b"", piece.into())
                .map_err(|_| ModelFormatError::Misuse { reason: "bench" })?;
        }
        Ok(())
    })?;
    let sha_s = best_of(runs, || {
        let digest = Sha384::digest(&model);
        std::hint::black_box(digest);
        Ok(())
    })?;

    let mb = len as f64 / 1e6;
    println!(
        "sealed-model unseal benchmark: {mib} MiB model, {} KiB chunks, best of {runs}",
        chunk / 1024
    );
    println!(
        "  seal (GCM + SHA-384)            {:>6.0} MB/s",
        mb / seal_s
    );
    println!(
        "  pipelined open, plaintext ready {:>6.0} MB/s   ({:.3} s)   <- enclave, before tract",
        mb / ready_best,
        ready_best
    );
    println!(
        "  pipelined open, digest checked  {:>6.0} MB/s   ({:.3} s)",
        mb / pipelined_s,
        pipelined_s
    );
    println!(
        "  serial open (GCM, then SHA-384) {:>6.0} MB/s   ({:.3} s)",
        mb / open_s,
        open_s
    );
    println!("  AES-256-GCM alone               {:>6.0} MB/s", mb / gcm_s);
    println!("  SHA-384 alone                   {:>6.0} MB/s", mb / sha_s);
    println!(
        "  serial open / (GCM + SHA-384 in series) = {:.2}",
        (1.0 / open_s) / (1.0 / (gcm_s + sha_s))
    );
    Ok(())
}
