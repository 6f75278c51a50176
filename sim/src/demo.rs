//! `sealed-sim demo` and `sealed-sim up`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealed_client::{Client, Policy, npy};
use sealed_wire::NamedTensor;

use crate::assets::Digits;
use crate::stack::{ModelFile, Paths, Stack};

/// The model id the bundled model is served under.
pub const MODEL_ID: &str = "digits";

fn policy(stack: &Stack) -> Result<Policy> {
    let pem = std::fs::read_to_string(&stack.root_pem)
        .with_context(|| format!("reading {}", stack.root_pem.display()))?;
    // The mock root is trusted here only because we name it explicitly.
    Ok(Policy::new()
        .trust_root_pem(&pem)?
        .expect_pcr(0, stack.pcr0.to_vec()))
}

fn models(digits: &Digits) -> Vec<ModelFile> {
    vec![ModelFile {
        id: MODEL_ID.to_string(),
        path: digits.model.clone(),
    }]
}

/// Runs the scripted demo; fails (non-zero exit) if any prediction is wrong or any check misbehaves.
pub async fn demo(paths: &Paths) -> Result<()> {
    let digits = Digits::load(&paths.assets)?;
    println!("== Sealed Inference: simulation demo");
    println!(
        "   (mock NSM and mock CA: simulation only; nothing trusts the mock root unless named)"
    );
    let stack = Stack::start(paths, &models(&digits)).await?;
    let result = run_demo(&stack, &digits).await;
    stack.stop().await;
    result
}

async fn run_demo(stack: &Stack, digits: &Digits) -> Result<()> {
    println!();
    println!("[1] mock CA root:        {}", stack.root_pem.display());
    println!(
        "[2] enclave measurement: PCR0 = SHA-384(sealed-enclave binary) = {}",
        hex::encode(stack.pcr0)
    );
    println!("[3] host listening on:   {}", stack.host_url);

    let client = Client::new(&stack.host_url, policy(stack)?)?;
    let started = Instant::now();
    let session = client.attest().await.context("attestation")?;
    let doc = session.document();
    println!(
        "[4] attestation verified in {:.1} ms: ES384 signature, chain to the mock root, PCR0 matches, fresh nonce echoed, manifest committed in user_data",
        ms(started.elapsed())
    );
    println!("      module_id {}", doc.module_id);
    for m in &session.manifest().models {
        println!(
            "      serves model {:?} sha384 {}",
            m.model_id,
            hex::encode(&m.sha384)
        );
    }

    println!(
        "[5] sealed inferences (inputs sealed to the attested key; the host sees ciphertext only):"
    );
    let mut correct = 0usize;
    let mut total = 0usize;
    let mut mismatches = 0usize;
    for example in &digits.examples {
        let tensor = npy::read_file(&example.file)
            .with_context(|| format!("reading {}", example.file.display()))?;
        let started = Instant::now();
        let outputs = session
            .infer(
                MODEL_ID,
                vec![NamedTensor {
                    name: "input".to_string(),
                    tensor,
                }],
            )
            .await
            .with_context(|| format!("inference on {}", example.file.display()))?;
        let elapsed = started.elapsed();
        let labels = outputs
            .iter()
            .find(|o| o.name == "label")
            .context("no `label` output")?
            .tensor
            .to_i64()
            .context("`label` is not i64")?;
        let name = example
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ok = labels
            .iter()
            .zip(&example.true_labels)
            .filter(|(a, b)| a == b)
            .count();
        correct += ok;
        total += example.true_labels.len();
        if labels != example.predicted_labels {
            mismatches += 1;
        }
        println!(
            "      {name:<16} predicted {labels:?}  true {:?}  ({:.1} ms round trip)",
            example.true_labels,
            ms(elapsed)
        );
    }
    println!("      {correct}/{total} digits classified correctly");
    if mismatches > 0 {
        bail!("{mismatches} input(s) gave outputs that differ from the model's expected outputs");
    }

    // A client whose policy names another measurement refuses before sending anything.
    let mut other = stack.pcr0;
    other[0] ^= 0xff;
    let pem = std::fs::read_to_string(&stack.root_pem)?;
    let strict = Client::new(
        &stack.host_url,
        Policy::new()
            .trust_root_pem(&pem)?
            .expect_pcr(0, other.to_vec()),
    )?;
    match strict.attest().await {
        Ok(_) => bail!("a client expecting another PCR0 accepted the enclave"),
        Err(e) => println!(
            "[6] a client expecting PCR0 = {}… refuses: {e}",
            &hex::encode(other)[..16]
        ),
    }
    // And a client that trusts only the AWS root (the default) refuses the mock enclave.
    let default_root = Client::new(
        &stack.host_url,
        Policy::new().expect_pcr(0, stack.pcr0.to_vec()),
    )?;
    match default_root.attest().await {
        Ok(_) => bail!("a client trusting only the AWS root accepted the mock enclave"),
        Err(e) => println!("[7] a client trusting only the AWS Nitro root refuses: {e}"),
    }
    println!();
    println!("demo finished: attested, sealed inference with correct predictions");
    Ok(())
}

/// Starts the stack and keeps it running until Ctrl-C.
pub async fn up(paths: &Paths) -> Result<()> {
    let digits = Digits::load(&paths.assets)?;
    let mut stack = Stack::start(paths, &models(&digits)).await?;
    let pcr0 = hex::encode(stack.pcr0);
    let sealed = paths.bin_dir.join("sealed");
    let example = digits
        .examples
        .first()
        .map(|e| e.file.display().to_string())
        .unwrap_or_else(|| "INPUT.npy".to_string());
    println!();
    println!("Sealed Inference simulation is up (Ctrl-C stops everything).");
    println!("  host URL:       {}", stack.host_url);
    println!("  mock CA root:   {}", stack.root_pem.display());
    println!("  PCR policy:     --expect-pcr 0={pcr0}");
    println!("  model:          {MODEL_ID}");
    println!();
    println!("Try, from another terminal:");
    println!(
        "  {} attest --host {} --trust-root {} --expect-pcr 0={pcr0}",
        sealed.display(),
        stack.host_url,
        stack.root_pem.display()
    );
    println!(
        "  {} infer --host {} --trust-root {} --expect-pcr 0={pcr0} --model {MODEL_ID} --input input={example}",
        sealed.display(),
        stack.host_url,
        stack.root_pem.display()
    );
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        msg = stack.wait_any_exit() => Err(anyhow::anyhow!(msg)),
    };
    println!("stopping…");
    stack.stop().await;
    outcome
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The work directory: given, or a fresh temporary one.
pub fn workdir(given: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(dir) => Ok((dir, None)),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("sealed-sim-")
                .tempdir()
                .context("creating a temporary directory")?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}
