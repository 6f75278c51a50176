//! End to end: real binaries, real sockets, the client SDK and CLI as users run them.

mod common;

use common::{Sim, bin_dir, input};
use std::process::Command;
use std::time::Duration;

use sealed_client::{Client, ClientError, Policy, npy};
use sealed_wire::{ErrorCode, Tensor};

fn rand_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).unwrap();
    id
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn expected_probabilities(name: &str) -> Vec<f32> {
    let text =
        std::fs::read_to_string(sealed_sim::assets::default_dir().join("digits/expected.json"))
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["inputs"][name]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

#[tokio::test]
async fn verified_sealed_inference_matches_the_models_expected_outputs() {
    let run = Sim::start(&[], &[]).await;
    let client = Client::new(&run.stack.host_url, run.policy()).unwrap();
    let session = client.attest().await.unwrap();
    assert_eq!(session.document().pcrs[&0], run.stack.pcr0.to_vec());
    assert_eq!(session.models().collect::<Vec<_>>(), vec!["digits"]);
    assert_eq!(
        hex::encode(&session.manifest().models[0].sha384),
        run.digits.model_sha384
    );
    assert!(!run.digits.examples.is_empty());
    for example in &run.digits.examples {
        let tensor = npy::read_file(&example.file).unwrap();
        let outputs = session.infer("digits", input(tensor)).await.unwrap();
        let label = outputs.iter().find(|o| o.name == "label").unwrap();
        assert_eq!(label.tensor.to_i64().unwrap(), example.predicted_labels);
        assert_eq!(example.predicted_labels, example.true_labels, "{example:?}");
        let probs = outputs.iter().find(|o| o.name == "probabilities").unwrap();
        let got = probs.tensor.to_f32().unwrap();
        let name = example.file.file_name().unwrap().to_str().unwrap();
        let want = expected_probabilities(name);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{name}: {g} vs {w}");
        }
    }
    run.stop().await;
}

#[tokio::test]
async fn a_client_expecting_another_pcr0_refuses_to_send() {
    let run = Sim::start(&[], &[]).await;
    let pem = std::fs::read_to_string(&run.stack.root_pem).unwrap();
    let mut other = run.stack.pcr0;
    other[47] ^= 1;
    let client = Client::new(
        &run.stack.host_url,
        Policy::new()
            .trust_root_pem(&pem)
            .unwrap()
            .expect_pcr(0, other.to_vec()),
    )
    .unwrap();
    // No Session, so no way to send inputs.
    let err = client.attest().await.err().unwrap();
    assert!(err.is_verification_failure(), "{err}");
    assert_eq!(err.step(), "verify:pcr_policy");

    // Right measurements, but a model digest other than the one served: refused too.
    let client = Client::new(
        &run.stack.host_url,
        run.policy().expect_model("digits", vec![0u8; 48]),
    )
    .unwrap();
    let err = client.attest().await.err().unwrap();
    assert!(err.is_verification_failure(), "{err}");
    assert_eq!(err.step(), "model_policy");
    // And the digest that is served passes.
    let served = hex::decode(&run.digits.model_sha384).unwrap();
    let client = Client::new(
        &run.stack.host_url,
        run.policy().expect_model("digits", served),
    )
    .unwrap();
    assert!(client.attest().await.is_ok());

    // The default trust anchor (AWS Nitro root) never accepts the mock CA.
    let client = Client::new(
        &run.stack.host_url,
        Policy::new().expect_pcr(0, run.stack.pcr0.to_vec()),
    )
    .unwrap();
    let err = client.attest().await.err().unwrap();
    assert_eq!(err.step(), "verify:certificate_chain", "{err}");
    run.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_stable_codes_and_the_enclave_keeps_serving() {
    let run = Sim::start(&[], &[]).await;
    let url = run.stack.host_url.clone();
    let session = Client::new(&url, run.policy())
        .unwrap()
        .attest()
        .await
        .unwrap();

    // Wrong shape: refused inside the enclave, the code comes back sealed.
    let wrong = Tensor::from_f32(vec![1, 63], &[0.0; 63]).unwrap();
    match session.infer("digits", input(wrong)).await {
        Err(ClientError::Inference { code, .. }) => assert_eq!(code, ErrorCode::InputMismatch),
        other => panic!("expected input_mismatch, got {other:?}"),
    }
    // Wrong dtype.
    let wrong = Tensor::from_i64(vec![1, 64], &[0; 64]).unwrap();
    match session.infer("digits", input(wrong)).await {
        Err(ClientError::Inference { code, .. }) => assert_eq!(code, ErrorCode::InputMismatch),
        other => panic!("expected input_mismatch, got {other:?}"),
    }

    let http = reqwest::Client::new();
    // Garbage instead of a sealed request.
    let r = http
        .post(format!("{url}/v1/infer"))
        .body(vec![0u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["name"], "unsupported_key_config");

    // A real sealed request with one byte flipped in the ciphertext: opaque failure.
    let plaintext = sealed_wire::InferRequest {
        request_id: rand_id(),
        sent_at_ms: now_ms(),
        model_id: "digits".into(),
        inputs: input(Tensor::from_f32(vec![1, 64], &[0.5; 64]).unwrap()),
    }
    .encode()
    .unwrap();
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let (mut sealed, _opener) =
        sealed_crypto::seal_request(session.key_config(), &plaintext, &mut rng).unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    let r = http
        .post(format!("{url}/v1/infer"))
        .body(sealed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["name"], "sealed_request_invalid");

    // Nonce too short.
    let r = http
        .get(format!("{url}/v1/attestation?nonce=00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A broken frame straight to the enclave's socket: that connection closes, nothing else.
    let socket = run.paths.workdir.join("enclave.sock");
    let mut raw = tokio::net::UnixStream::connect(&socket).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut buf)).await;
    assert!(
        buf.len() > 12,
        "the enclave answers a bad frame with an error before closing"
    );

    // Still serving.
    let digit = npy::read_file(&run.digits.examples[0].file).unwrap();
    let outputs = session.infer("digits", input(digit)).await.unwrap();
    assert_eq!(outputs.len(), 2);
    run.stop().await;
}

#[tokio::test]
async fn a_response_cannot_be_opened_by_anyone_but_the_requester() {
    let run = Sim::start(&[], &[]).await;
    let url = run.stack.host_url.clone();
    let session = Client::new(&url, run.policy())
        .unwrap()
        .attest()
        .await
        .unwrap();
    let plaintext = sealed_wire::InferRequest {
        request_id: rand_id(),
        sent_at_ms: now_ms(),
        model_id: "digits".into(),
        inputs: input(npy::read_file(&run.digits.examples[0].file).unwrap()),
    }
    .encode()
    .unwrap();
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let (sealed, mine) =
        sealed_crypto::seal_request(session.key_config(), &plaintext, &mut rng).unwrap();
    let (_, someone_else) =
        sealed_crypto::seal_request(session.key_config(), &plaintext, &mut rng).unwrap();
    let body = reqwest::Client::new()
        .post(format!("{url}/v1/infer"))
        .body(sealed)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(someone_else.open(&body).is_err());
    let opened = mine.open(&body).unwrap();
    assert!(matches!(
        sealed_wire::InferResponse::decode(&opened).unwrap(),
        sealed_wire::InferResponse::Ok { .. }
    ));
    run.stop().await;
}

#[tokio::test]
async fn the_cli_attests_and_infers_against_the_running_stack() {
    let run = Sim::start(&[], &[]).await;
    let out = tempfile::tempdir().unwrap();
    let sealed = bin_dir().join("sealed");
    let pcr = format!("0={}", hex::encode(run.stack.pcr0));
    let root = run.stack.root_pem.display().to_string();
    let example = &run.digits.examples[0];
    let output = Command::new(&sealed)
        .args([
            "infer",
            "--host",
            &run.stack.host_url,
            "--trust-root",
            &root,
        ])
        .args(["--expect-pcr", &pcr, "--model", "digits"])
        .arg("--input")
        .arg(format!("input={}", example.file.display()))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let label = npy::read_file(&out.path().join("label.npy")).unwrap();
    assert_eq!(label.to_i64().unwrap(), example.predicted_labels);

    // Without a PCR policy the CLI refuses to talk at all.
    let output = Command::new(&sealed)
        .args([
            "attest",
            "--host",
            &run.stack.host_url,
            "--trust-root",
            &root,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    run.stop().await;
}

/// The release path of docs/measurements.md, in simulation: measurements of the enclave binary
/// (`sealed-sim measure`, the same JSON `nitro-cli build-enclave` prints) become a client policy file
/// (`sealed policy create`), which `sealed attest --policy` enforces against the running enclave and
/// names the set it matched; a rolling upgrade adds a second set.
#[tokio::test]
async fn a_policy_file_made_from_the_measurements_pins_the_running_enclave() {
    let run = Sim::start(&[], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = bin_dir();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let measure = |binary: &std::path::Path, out: &std::path::Path| {
        let o = Command::new(bin.join("sealed-sim"))
            .arg("measure")
            .arg("--enclave")
            .arg(binary)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        ok(&o);
    };
    let current = dir.path().join("current.json");
    measure(&bin.join("sealed-enclave"), &current);
    // Another image: any other bytes measure differently.
    let other_image = dir.path().join("other-image");
    std::fs::write(&other_image, b"not this enclave").unwrap();
    let other = dir.path().join("other.json");
    measure(&other_image, &other);

    let sealed = |args: &[&std::ffi::OsStr]| Command::new(bin.join("sealed")).args(args).output();
    let policy = dir.path().join("policy.json");
    let o = sealed(&[
        "policy".as_ref(),
        "create".as_ref(),
        "--measurements".as_ref(),
        other.as_os_str(),
        "--name".as_ref(),
        "v1".as_ref(),
        "--out".as_ref(),
        policy.as_os_str(),
    ])
    .unwrap();
    ok(&o);
    let attest = || {
        Command::new(bin.join("sealed"))
            .args(["attest", "--host", &run.stack.host_url, "--trust-root"])
            .arg(&run.stack.root_pem)
            .arg("--policy")
            .arg(&policy)
            .output()
            .unwrap()
    };
    // A policy that lists only another image refuses this enclave.
    let o = attest();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("pcr"));

    // Rolling upgrade: the running image's measurements are added as a second set.
    let o = sealed(&[
        "policy".as_ref(),
        "add".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--measurements".as_ref(),
        current.as_os_str(),
        "--name".as_ref(),
        "v2".as_ref(),
    ])
    .unwrap();
    ok(&o);
    let o = attest();
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["accepted_as"], "v2", "{summary}");
    assert_eq!(
        summary["pcrs"]["0"].as_str().unwrap(),
        hex::encode(run.stack.pcr0)
    );

    // Retiring v2 leaves a policy that refuses again.
    let o = sealed(&[
        "policy".as_ref(),
        "remove".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--name".as_ref(),
        "v2".as_ref(),
    ])
    .unwrap();
    ok(&o);
    assert_eq!(attest().status.code(), Some(1));
    run.stop().await;
}

#[test]
fn the_production_enclave_has_no_mock_and_needs_the_nsm_device() {
    let prod = bin_dir().join("sealed-enclave-production");
    assert!(
        prod.is_file(),
        "run ./scripts/test.sh: it builds {}",
        prod.display()
    );
    // No flag can switch a production build to the mock NSM.
    let out = Command::new(&prod)
        .args([
            "--listen",
            "unix:/nonexistent/x.sock",
            "--mock-ca-dir",
            "/tmp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects the unknown flag");
    // Without /dev/nsm (as on this machine) it refuses to start instead of falling back.
    if !std::path::Path::new("/dev/nsm").exists() {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&prod)
            .arg("--listen")
            .arg(format!("unix:{}", dir.path().join("e.sock").display()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/nsm"));
    }
}
