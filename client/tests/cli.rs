//! The `sealed` binary, run as a user would, on real AWS Nitro attestation documents
//! (`tests/data/README.md` gives their origin).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use sealed_wire::Tensor;
use serde_json::Value;
use support::Misbehave;

/// Inside the leaf certificate's validity (14:37:36 → 17:37:39 UTC), 22 minutes after the
/// document's timestamp (2024-09-07T14:37:39.545Z).
const AT: &str = "2024-09-07T15:00:00Z";
const PCR0: &str = "e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a";
const PCR1: &str = "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa";

fn data(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn sealed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealed"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn verify_nitrite(extra: &[&str]) -> Output {
    let doc = data("nitro/nitrite-2024-09-07.cbor");
    let mut args = vec!["verify", "--document", &doc, "--at", AT];
    args.extend_from_slice(extra);
    sealed(&args)
}

#[test]
fn verify_accepts_a_real_document_with_an_explicit_pcr_opt_out_and_prints_its_content() {
    let out = verify_nitrite(&["--no-pcr-policy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["module_id"], "i-0a22e5c5f24d22174-enc0191cceb4289903f");
    assert_eq!(json["timestamp_ms"], 1_725_719_859_545u64);
    assert_eq!(json["timestamp"], "2024-09-07T14:37:39.545Z");
    assert_eq!(json["digest"], "SHA384");
    assert_eq!(json["pcrs"]["0"], PCR0);
    assert_eq!(json["pcrs"]["1"], PCR1);
    assert_eq!(json["pcrs"].as_object().unwrap().len(), 16);
    // This document carries 1024-byte public_key, user_data and nonce fields, all 0x01.
    for field in ["public_key", "user_data", "nonce"] {
        assert_eq!(json[field], "01".repeat(1024), "{field}");
    }
    assert_eq!(
        json["trust_anchor_sha256"],
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );
}

#[test]
fn verify_accepts_matching_pcrs_and_the_aws_root_named_explicitly() {
    let pcr0 = format!("0={PCR0}");
    let pcr1 = format!("1={PCR1}");
    let root = data("nitro/aws-nitro-root-g1.pem");
    let out = verify_nitrite(&[
        "--expect-pcr",
        &pcr0,
        "--expect-pcr",
        &pcr1,
        "--trust-root",
        &root,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn verify_rejects_a_wrong_pcr_naming_pcr_policy() {
    let wrong = format!("0={}", "00".repeat(48));
    let out = verify_nitrite(&["--expect-pcr", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: pcr_policy: "),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    // One right PCR does not make up for a wrong one in the same set.
    let pcr1 = format!("1={PCR1}");
    let out = verify_nitrite(&["--expect-pcr", &pcr1, "--expect-pcr", &wrong]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn verify_rejects_a_flipped_nonce_bit_naming_signature() {
    let doc = data("nitro/nonce-bitflip.cbor");
    let out = sealed(&["verify", "--document", &doc, "--at", AT, "--no-pcr-policy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: signature: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_without_policy_flags_is_a_usage_error() {
    let out = verify_nitrite(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--expect-pcr") && err.contains("--no-pcr-policy"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn verify_refuses_expected_pcrs_together_with_the_opt_out() {
    let pcr0 = format!("0={PCR0}");
    let out = verify_nitrite(&["--expect-pcr", &pcr0, "--no-pcr-policy"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_rejects_pcr_values_that_are_not_48_bytes_as_usage() {
    let out = verify_nitrite(&["--expect-pcr", "0=e72a46ca"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("48 bytes"), "{}", stderr(&out));
}

#[test]
fn verify_checks_certificate_validity_at_the_given_time() {
    for at in ["2024-09-07T17:37:40Z", "2024-09-07T14:37:35Z"] {
        let doc = data("nitro/nitrite-2024-09-07.cbor");
        let out = sealed(&["verify", "--document", &doc, "--at", at, "--no-pcr-policy"]);
        assert_eq!(out.status.code(), Some(1), "{at}");
        assert!(
            stderr(&out).starts_with("verification failed: certificate_validity: "),
            "{at}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn verify_with_another_root_fails_the_chain() {
    let root = data("other-root.pem");
    let out = verify_nitrite(&["--no-pcr-policy", "--trust-root", &root]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: certificate_chain: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_max_age_is_relative_to_at() {
    // The document is 1 340 s old at AT.
    let out = verify_nitrite(&["--no-pcr-policy", "--max-age", "60"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: max_age: "),
        "{}",
        stderr(&out)
    );
    let out = verify_nitrite(&["--no-pcr-policy", "--max-age", "1400"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn verify_compares_the_nonce_when_given() {
    let right = "01".repeat(1024);
    let out = verify_nitrite(&["--no-pcr-policy", "--nonce", &right]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let wrong = "02".repeat(32);
    let out = verify_nitrite(&["--no-pcr-policy", "--nonce", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: nonce: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_reports_a_missing_file_without_calling_it_a_verification_result() {
    let out = sealed(&[
        "verify",
        "--document",
        "/nonexistent/doc.cbor",
        "--no-pcr-policy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/doc.cbor"), "{err}");
    assert!(!err.contains("verification failed"), "{err}");
}

#[test]
fn verify_refuses_a_file_that_is_not_a_document() {
    let npy = data("npy/digit_0_1.npy");
    let out = sealed(&["verify", "--document", &npy, "--at", AT, "--no-pcr-policy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: cose: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn malformed_flags_are_usage_errors() {
    for extra in [
        &["--at", "yesterday", "--no-pcr-policy"][..],
        &["--expect-pcr", "zero=00"],
        &["--nonce", "xyz", "--no-pcr-policy"],
        &["--max-age", "-1", "--no-pcr-policy"],
    ] {
        let doc = data("nitro/nitrite-2024-09-07.cbor");
        let mut args = vec!["verify", "--document", &doc];
        args.extend_from_slice(extra);
        let out = sealed(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
    }
}

#[test]
fn attest_refuses_https_as_a_usage_error() {
    let out = sealed(&["attest", "--host", "https://127.0.0.1:1", "--no-pcr-policy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no TLS"), "{}", stderr(&out));
}

#[test]
fn infer_reads_inputs_before_contacting_the_host() {
    // Port 1 on loopback: were the host contacted first, the error would be a connection error.
    let out = sealed(&[
        "infer",
        "--host",
        "http://127.0.0.1:1",
        "--no-pcr-policy",
        "--model",
        "digits",
        "--input",
        "input=/nonexistent/x.npy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("input /nonexistent/x.npy: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn attest_reports_an_unreachable_host_as_a_failure_not_a_verification_result() {
    let out = sealed(&["attest", "--host", "http://127.0.0.1:1", "--no-pcr-policy"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("attestation_request: HTTP request failed"),
        "{err}"
    );
}

/// The policy flags that trust the stand-in host of `support/`.
fn stand_in_flags(dir: &std::path::Path, s: &support::StandIn) -> Vec<String> {
    let root = dir.join("root.pem");
    std::fs::write(&root, &s.root_pem).unwrap();
    vec![
        "--host".into(),
        s.url.clone(),
        "--trust-root".into(),
        root.to_string_lossy().into_owned(),
        "--expect-pcr".into(),
        format!("0={}", hex::encode(support::PCR0)),
    ]
}

#[test]
fn attest_prints_the_verified_document_and_the_manifest() {
    let s = support::start(Misbehave::Nothing);
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["attest".to_string()];
    args.extend(stand_in_flags(dir.path(), &s));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sealed(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pcrs"]["0"], hex::encode(support::PCR0));
    assert_eq!(json["nonce"].as_str().unwrap().len(), 64);
    assert_eq!(json["manifest"][0]["model_id"], "add");
    assert_eq!(json["manifest"][0]["sha384"], "ab".repeat(48));
    assert_eq!(json["manifest"][1]["model_id"], "digits");
}

#[test]
fn attest_names_the_failed_check_when_the_host_replays_a_document() {
    let s = support::start(Misbehave::StaleNonce);
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["attest".to_string()];
    args.extend(stand_in_flags(dir.path(), &s));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sealed(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: nonce: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn infer_runs_a_model_on_npy_inputs_and_writes_npy_outputs() {
    let s = support::start(Misbehave::Nothing);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    let a_tensor = Tensor::from_i64(vec![3], &[1, 2, 3]).unwrap();
    sealed_client::npy::write_file(&a, &a_tensor).unwrap();
    sealed_client::npy::write_file(&b, &Tensor::from_i64(vec![3], &[10, 20, -30]).unwrap())
        .unwrap();
    let out_dir = dir.path().join("out");
    let mut args = vec!["infer".to_string()];
    args.extend(stand_in_flags(dir.path(), &s));
    args.extend([
        "--model".into(),
        "add".into(),
        "--input".into(),
        format!("a={}", a.display()),
        "--input".into(),
        format!("b={}", b.display()),
        "--out".into(),
        out_dir.to_string_lossy().into_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sealed(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sum: i64 [3] = [11, 22, -27]\n"
    );
    let sum = sealed_client::npy::read_file(&out_dir.join("sum.npy")).unwrap();
    assert_eq!(sum.to_i64().unwrap(), vec![11, 22, -27]);
}

#[test]
fn infer_refuses_a_model_the_enclave_did_not_attest() {
    let s = support::start(Misbehave::Nothing);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npy");
    sealed_client::npy::write_file(&a, &Tensor::from_i64(vec![1], &[1]).unwrap()).unwrap();
    let mut args = vec!["infer".to_string()];
    args.extend(stand_in_flags(dir.path(), &s));
    args.extend([
        "--model".into(),
        "resnet".into(),
        "--input".into(),
        format!("a={}", a.display()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sealed(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not in the attested manifest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.posts.load(std::sync::atomic::Ordering::SeqCst), 0);
}
