//! `sealed-sim demo` and `sealed-sim up`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealed_client::{Client, Policy, npy};
use sealed_wire::NamedTensor;

use crate::assets::Digits;
use crate::stack::{Paths, SimAws, Stack, StackOptions};

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

/// A sealed model in the work directory, and what sealing it reported.
struct Sealed {
    path: PathBuf,
    key_arn: String,
    sha384: Vec<u8>,
}

/// The model owner's side: a KMS key whose policy releases it only to an enclave measuring
/// `pcr0`, then the bundled model sealed under it with `GenerateDataKey` (the real AWS SDK,
/// talking to the mock KMS).
async fn seal_bundled_model(
    paths: &Paths,
    aws: &SimAws,
    digits: &Digits,
    pcr0: &[u8; 48],
) -> Result<Sealed> {
    let kms = aws.owner_kms_client().await?;
    let created = kms
        .create_key()
        .description("sealed-sim demo: digits model key")
        .policy(crate::stack::key_policy(pcr0))
        .send()
        .await
        .context("CreateKey on the mock KMS")?;
    let key_arn = created
        .key_metadata()
        .and_then(|m| m.arn())
        .context("CreateKey returned no key ARN")?
        .to_string();
    let path = paths.workdir.join("digits.sealed");
    let summary = sealed_client::seal::seal_model_file(
        &kms,
        &sealed_client::seal::SealRequest {
            model: &digits.model,
            out: &path,
            model_id: MODEL_ID,
            key_id: &key_arn,
            chunk_size: sealed_model::DEFAULT_CHUNK_SIZE,
            overwrite: true,
        },
        indicatif::ProgressBar::hidden(),
    )
    .await
    .context("sealing the bundled model")?;
    Ok(Sealed {
        path,
        key_arn,
        sha384: summary.sha384.to_vec(),
    })
}

/// What the admin API answered to an upload.
enum Upload {
    Loaded(serde_json::Value),
    Refused {
        status: u16,
        name: String,
        message: String,
    },
}

/// POSTs a sealed file to the host's admin API, as an operator would.
async fn upload(stack: &Stack, body: Vec<u8>) -> Result<Upload> {
    let admin = stack
        .admin_url
        .as_deref()
        .context("the host has no admin API")?;
    let response = reqwest::Client::new()
        .post(format!("{admin}/v1/admin/models"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .context("POST /v1/admin/models")?;
    let status = response.status().as_u16();
    let json: serde_json::Value = response.json().await.context("admin API answer")?;
    if status == 200 {
        return Ok(Upload::Loaded(json));
    }
    let error = &json["error"];
    Ok(Upload::Refused {
        status,
        name: error["name"].as_str().unwrap_or_default().to_string(),
        message: error["message"].as_str().unwrap_or_default().to_string(),
    })
}

/// The mock CA, the simulated AWS side, and an enclave + host pair wired to it with no model.
async fn start_sealed(paths: &Paths) -> Result<(SimAws, Stack)> {
    crate::stack::write_mock_ca(paths)?;
    let aws = SimAws::start(paths).await?;
    let stack = Stack::start_with(
        paths,
        StackOptions {
            name: "",
            enclave_binary: paths.enclave(),
            plaintext_models: Vec::new(),
            aws: Some(&aws),
            enclave_args: Vec::new(),
            host_args: Vec::new(),
            host_enclave_socket: None,
        },
    )
    .await;
    match stack {
        Ok(stack) => Ok((aws, stack)),
        Err(e) => {
            aws.stop().await;
            Err(e)
        }
    }
}

/// Runs the scripted demo; fails (non-zero exit) if any prediction is wrong or any check misbehaves.
pub async fn demo(paths: &Paths) -> Result<()> {
    let digits = Digits::load(&paths.assets)?;
    println!("== Sealed Inference: simulation demo");
    println!(
        "   (mock NSM, mock CA, mock KMS, mock IMDS: simulation only; nothing trusts a mock root unless named)"
    );
    let (aws, stack) = start_sealed(paths).await?;
    let result = run_demo(paths, &aws, &stack, &digits).await;
    stack.stop().await;
    aws.stop().await;
    result
}

async fn run_demo(paths: &Paths, aws: &SimAws, stack: &Stack, digits: &Digits) -> Result<()> {
    println!();
    println!("[1] mock CA root:        {}", stack.root_pem.display());
    println!(
        "[2] enclave measurement: PCR0 = SHA-384(sealed-enclave binary) = {}",
        hex::encode(stack.pcr0)
    );
    println!(
        "[3] host listening on:   {} (admin API {}); mock KMS {}; mock IMDS {}",
        stack.host_url,
        stack.admin_url.as_deref().unwrap_or("-"),
        aws.kms.endpoint_url(),
        aws.imds_url
    );

    let started = Instant::now();
    let sealed = seal_bundled_model(paths, aws, digits, &stack.pcr0).await?;
    println!(
        "[4] model owner: KMS key {} with a key policy releasing it only to PCR0 {}…;",
        sealed.key_arn,
        &hex::encode(stack.pcr0)[..16]
    );
    println!(
        "      sealed {} → {} with GenerateDataKey (AWS SDK) in {:.0} ms; plaintext sha384 {}",
        digits.model.display(),
        sealed.path.display(),
        ms(started.elapsed()),
        hex::encode(&sealed.sha384)
    );
    let file = std::fs::read(&sealed.path)
        .with_context(|| format!("reading {}", sealed.path.display()))?;

    // A sealed file with one flipped bit is refused: every chunk is authenticated.
    let mut tampered = file.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 0x01;
    }
    match upload(stack, tampered).await? {
        Upload::Loaded(_) => bail!("the enclave loaded a tampered sealed model"),
        Upload::Refused { status, name, .. } => {
            if name != "model_corrupt" {
                bail!("a tampered sealed model gave {status} {name}, expected model_corrupt");
            }
            println!(
                "[5] the sealed file with one bit flipped is refused (the key is released, a chunk fails authentication): {status} {name}"
            );
        }
    }

    let started = Instant::now();
    match upload(stack, file.clone()).await? {
        Upload::Loaded(info) => println!(
            "[6] host uploads the sealed file; the enclave attests to KMS (RSA key in the NSM document), unwraps the data key, decrypts and loads {:?} in {:.0} ms",
            info["model_id"].as_str().unwrap_or_default(),
            ms(started.elapsed())
        ),
        Upload::Refused {
            status,
            name,
            message,
        } => {
            bail!("the enclave could not load the sealed model: {status} {name}: {message}")
        }
    }

    let client = Client::new(
        &stack.host_url,
        policy(stack)?.expect_model(MODEL_ID, sealed.sha384.clone()),
    )?;
    let started = Instant::now();
    let session = client.attest().await.context("attestation")?;
    let doc = session.document();
    println!(
        "[7] attestation verified in {:.1} ms: ES384 signature, chain to the mock root, PCR0 matches, fresh nonce echoed, manifest committed in user_data lists the sealed model's digest",
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
        "[8] sealed inferences (inputs sealed to the attested key; the host sees ciphertext only):"
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

    // An enclave built differently measures differently, and KMS refuses it the key.
    let other_binary = crate::stack::other_build(
        &paths.enclave(),
        &paths.workdir.join("other-build"),
        "\nsealed-sim: another build of the enclave\n",
    )?;
    let other = Stack::start_with(
        paths,
        StackOptions {
            name: "other-",
            enclave_binary: other_binary,
            plaintext_models: Vec::new(),
            aws: Some(aws),
            enclave_args: Vec::new(),
            host_args: Vec::new(),
            host_enclave_socket: None,
        },
    )
    .await
    .context("starting the second enclave")?;
    let refused = upload(&other, file).await;
    let other_pcr0 = other.pcr0;
    other.stop().await;
    match refused? {
        Upload::Loaded(_) => bail!("KMS released the key to an enclave with another PCR0"),
        Upload::Refused {
            status,
            name,
            message,
        } => {
            if name != "model_access_denied" {
                bail!(
                    "the other enclave got {status} {name}: {message}, expected model_access_denied"
                );
            }
            println!(
                "[9] an enclave with another measurement (PCR0 {}…) asks KMS for the same key and is refused: {status} {name}",
                &hex::encode(other_pcr0)[..16]
            );
        }
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
            "[10] a client expecting PCR0 = {}… refuses: {e}",
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
        Err(e) => println!("[11] a client trusting only the AWS Nitro root refuses: {e}"),
    }
    println!();
    println!(
        "demo finished: KMS-sealed model released only to the attested enclave; attested, sealed inference with correct predictions"
    );
    Ok(())
}

/// Starts the simulated AWS side and the stack, seals and loads the bundled model, and keeps
/// everything running until Ctrl-C.
pub async fn up(paths: &Paths) -> Result<()> {
    let digits = Digits::load(&paths.assets)?;
    let (aws, mut stack) = start_sealed(paths).await?;
    let outcome = serve_up(paths, &aws, &mut stack, &digits).await;
    println!("stopping…");
    stack.stop().await;
    aws.stop().await;
    outcome
}

async fn serve_up(paths: &Paths, aws: &SimAws, stack: &mut Stack, digits: &Digits) -> Result<()> {
    let sealed = seal_bundled_model(paths, aws, digits, &stack.pcr0).await?;
    let file = std::fs::read(&sealed.path)
        .with_context(|| format!("reading {}", sealed.path.display()))?;
    if let Upload::Refused {
        status,
        name,
        message,
    } = upload(stack, file).await?
    {
        bail!("the enclave could not load the sealed model: {status} {name}: {message}");
    }
    // The model owner's simulated credentials go to a 0600 file, not to the terminal.
    let env_file = paths.workdir.join("model-owner.env");
    let env: String = aws
        .owner_env()
        .into_iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    write_private(&env_file, env.as_bytes())?;

    // What a release publishes and what its clients pin (docs/measurements.md), for this stack:
    // the measurements in nitro-cli's format, and a policy file accepting them with the model pinned.
    let measurements = crate::measure::Measurements::of_simulation_enclave(&paths.enclave())?;
    let measurements_file = paths.workdir.join("measurements.json");
    std::fs::write(&measurements_file, measurements.to_nitro_cli_json())
        .with_context(|| format!("writing {}", measurements_file.display()))?;
    let pcrs = measurements
        .pcrs()
        .into_iter()
        .map(|(index, value)| (index, value.to_vec()))
        .collect();
    let mut policy = sealed_client::PolicyFile::new("simulation", pcrs)?;
    policy.set_model(MODEL_ID, sealed.sha384.to_vec())?;
    let policy_file = paths.workdir.join("policy.json");
    policy.save(&policy_file)?;

    let sha = hex::encode(&sealed.sha384);
    let cli = paths.bin_dir.join("sealed");
    let example = digits
        .examples
        .first()
        .map(|e| e.file.display().to_string())
        .unwrap_or_else(|| "INPUT.npy".to_string());
    let admin = stack.admin_url.clone().unwrap_or_default();
    println!();
    println!("Sealed Inference simulation is up (Ctrl-C stops everything).");
    println!("  host URL:        {}", stack.host_url);
    println!("  admin API:       {admin}");
    println!("  mock CA root:    {}", stack.root_pem.display());
    println!(
        "  measurements:    {} (PCR0 {})",
        measurements_file.display(),
        hex::encode(measurements.pcr0)
    );
    println!(
        "  client policy:   {} (these PCRs, {MODEL_ID} pinned)",
        policy_file.display()
    );
    println!(
        "  mock KMS:        {} (TLS CA {})",
        aws.kms.endpoint_url(),
        aws.kms.ca_file.display()
    );
    println!(
        "  KMS key:         {} (Decrypt only for PCR0 above)",
        sealed.key_arn
    );
    println!(
        "  model:           {MODEL_ID} sealed at {} (sha384 {sha})",
        sealed.path.display()
    );
    println!();
    println!("Try, from another terminal:");
    println!(
        "  {} infer --host {} --trust-root {} --policy {} --model {MODEL_ID} --input input={example}",
        cli.display(),
        stack.host_url,
        stack.root_pem.display(),
        policy_file.display()
    );
    println!("  # seal another model as the model owner, then load it through the admin API:");
    println!("  source {}", env_file.display());
    println!(
        "  {} seal-model --model MODEL.onnx --model-id my-model --key-id {} --kms-endpoint {} --ca-bundle {} --out /tmp/my-model.sealed",
        cli.display(),
        sealed.key_arn,
        aws.kms.endpoint_url(),
        aws.kms.ca_file.display()
    );
    println!(
        "  curl --data-binary @/tmp/my-model.sealed -H 'content-type: application/octet-stream' {admin}/v1/admin/models"
    );
    // SIGTERM as well as Ctrl-C: either way the children are stopped before we exit.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        msg = stack.wait_any_exit() => Err(anyhow::anyhow!(msg)),
    }
}

/// Writes a file only the current user can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
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
