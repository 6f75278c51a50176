//! Client policy files end to end: `sealed policy create|add|remove|show|check` on measurements in
//! nitro-cli's format, checked against a real AWS Nitro attestation document
//! (`tests/data/nitro/nitrite-2024-09-07.cbor`, origin in `tests/data/README.md`), and `--policy`
//! on verify / attest / infer plus the SDK's `Policy::from_file` against the stand-in host.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sealed_client::{Client, Policy, PolicyFile};
use sealed_wire::Tensor;
use serde_json::Value;
use support::Misbehave;

/// Inside the document's leaf certificate validity (see tests/cli.rs).
const AT: &str = "2024-09-07T15:00:00Z";
/// The nitrite document's PCR0, PCR1, PCR2 (as `sealed verify --no-pcr-policy` prints them).
const PCR0: &str = "e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a";
const PCR1: &str = "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa";
const PCR2: &str = "d5dcbdea0aa39c802f9d55ced2ea6e4d74ecec5f08fe40c508882639c9090642669106a062a3e24ee2805a3024b9b75c";

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

fn json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A measurements file exactly as `nitro-cli build-enclave` prints it.
fn write_measurements(dir: &Path, file: &str, pcr0: &str, pcr1: &str, pcr2: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "{{\n  \"Measurements\": {{\n    \"HashAlgorithm\": \"Sha384 {{ ... }}\",\n    \
         \"PCR0\": \"{pcr0}\",\n    \"PCR1\": \"{pcr1}\",\n    \"PCR2\": \"{pcr2}\"\n  }}\n}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `pcr` with its last hex digit changed: one PCR of a release that is not this document's.
fn changed(pcr: &str) -> String {
    let last = if pcr.ends_with('0') { "1" } else { "0" };
    format!("{}{last}", &pcr[..pcr.len() - 1])
}

fn check_document(policy: &Path) -> Output {
    let doc = data("nitro/nitrite-2024-09-07.cbor");
    sealed(&[
        "policy",
        "check",
        "--policy",
        &s(policy),
        "--document",
        &doc,
        "--at",
        AT,
    ])
}

#[test]
fn create_then_check_names_the_set_a_real_document_matches() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_measurements(dir.path(), "measurements.json", PCR0, PCR1, PCR2);
    let policy = dir.path().join("policy.json");
    let out = json(&sealed(&[
        "policy",
        "create",
        "--measurements",
        &s(&m),
        "--name",
        "v0.3.0",
        "--out",
        &s(&policy),
    ]));
    assert_eq!(out["added"], "v0.3.0");
    assert_eq!(out["accept"], serde_json::json!(["v0.3.0"]));

    // The file is the contract's format, readable without this crate.
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert_eq!(file["version"], 1);
    assert_eq!(file["accept"][0]["name"], "v0.3.0");
    assert_eq!(file["accept"][0]["pcrs"]["0"], PCR0);
    assert_eq!(file["accept"][0]["pcrs"]["1"], PCR1);
    assert_eq!(file["accept"][0]["pcrs"]["2"], PCR2);
    assert_eq!(file.as_object().unwrap().len(), 2, "{file}");

    let out = json(&check_document(&policy));
    assert_eq!(out["valid"], true);
    assert_eq!(out["accepted_as"], "v0.3.0");
    assert_eq!(out["attestation"]["pcrs"]["0"], PCR0);
    assert_eq!(out["attestation"]["accepted_as"], "v0.3.0");
    assert_eq!(
        out["attestation"]["trust_anchor_sha256"],
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );

    // Without a document, check only validates.
    let out = json(&sealed(&["policy", "check", "--policy", &s(&policy)]));
    assert_eq!(out["valid"], true);
    assert!(out.get("accepted_as").is_none());
}

#[test]
fn a_set_with_one_pcr_changed_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    for (i, pcrs) in [
        [changed(PCR0), PCR1.into(), PCR2.into()],
        [PCR0.into(), changed(PCR1), PCR2.into()],
        [PCR0.into(), PCR1.into(), changed(PCR2)],
    ]
    .iter()
    .enumerate()
    {
        let m = write_measurements(
            dir.path(),
            &format!("m{i}.json"),
            &pcrs[0],
            &pcrs[1],
            &pcrs[2],
        );
        let policy = dir.path().join(format!("p{i}.json"));
        json(&sealed(&[
            "policy",
            "create",
            "--measurements",
            &s(&m),
            "--name",
            "other",
            "--out",
            &s(&policy),
        ]));
        let out = check_document(&policy);
        assert_eq!(out.status.code(), Some(1), "PCR{i}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("verification failed: pcr_policy: "),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn rolling_upgrade_add_the_next_release_then_retire_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    // The document is "v0.3.0"; "v0.4.0" is a new image (other PCR0, same kernel PCR1/PCR2).
    let old = write_measurements(dir.path(), "v030.json", PCR0, PCR1, PCR2);
    let new = write_measurements(dir.path(), "v040.json", &changed(PCR0), PCR1, PCR2);
    let policy = dir.path().join("policy.json");
    let p = s(&policy);
    json(&sealed(&[
        "policy",
        "create",
        "--measurements",
        &s(&old),
        "--name",
        "v0.3.0",
        "--out",
        &p,
    ]));
    let out = json(&sealed(&[
        "policy",
        "add",
        "--policy",
        &p,
        "--measurements",
        &s(&new),
        "--name",
        "v0.4.0",
    ]));
    assert_eq!(out["accept"], serde_json::json!(["v0.3.0", "v0.4.0"]));
    assert_eq!(json(&check_document(&policy))["accepted_as"], "v0.3.0");

    // show prints the normalised file.
    let shown = json(&sealed(&["policy", "show", "--policy", &p]));
    assert_eq!(shown["accept"][1]["name"], "v0.4.0");
    assert_eq!(shown["accept"][1]["pcrs"]["0"], changed(PCR0));

    // The same name twice is refused, and the file is unchanged.
    let before = std::fs::read(&policy).unwrap();
    let out = sealed(&[
        "policy",
        "add",
        "--policy",
        &p,
        "--measurements",
        &s(&new),
        "--name",
        "v0.4.0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&policy).unwrap(), before);

    // Retire v0.3.0: this (old) document is no longer accepted.
    let out = json(&sealed(&[
        "policy", "remove", "--policy", &p, "--name", "v0.3.0",
    ]));
    assert_eq!(out["removed"], "v0.3.0");
    assert_eq!(out["accept"], serde_json::json!(["v0.4.0"]));
    let out = check_document(&policy);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("verification failed: pcr_policy: "));

    // Neither an unknown name nor the last set can be removed.
    let out = sealed(&["policy", "remove", "--policy", &p, "--name", "v0.3.0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sealed(&["policy", "remove", "--policy", &p, "--name", "v0.4.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("accepting nothing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn create_refuses_to_overwrite_without_force_and_checks_the_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_measurements(dir.path(), "m.json", PCR0, PCR1, PCR2);
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, "keep me").unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec![
            "policy".to_string(),
            "create".into(),
            "--measurements".into(),
            s(&m),
            "--name".into(),
            "r1".into(),
            "--out".into(),
            s(&policy),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sealed(&args)
    };
    let out = create(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), "keep me");
    json(&create(&["--force", "--pcrs", "0", "--max-age", "600"]));
    let file = PolicyFile::load(&policy).unwrap();
    assert_eq!(file.sets()[0].pcrs.keys().copied().collect::<Vec<_>>(), [0]);
    assert_eq!(file.max_age_secs(), Some(600));

    // A PCR the measurements lack, and a file that is not nitro-cli output: exit 3.
    let out = create(&["--force", "--pcrs", "0,8"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("PCR8"), "{}", stderr(&out));
    std::fs::write(&m, r#"{"PCR0": "00"}"#).unwrap();
    let out = create(&["--force"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Bad names and indices are usage errors from the parser.
    let out = sealed(&[
        "policy",
        "create",
        "--measurements",
        &s(&m),
        "--name",
        "a b",
        "--out",
        "x.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = create(&["--force", "--pcrs", "0,32"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_policy_files_exit_3_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let doc = data("nitro/nitrite-2024-09-07.cbor");
    let cases = [
        (
            format!(
                r#"{{"version": 1, "accept": [{{"name": "a", "pcrs": {{"0": "{PCR0}"}}}}], "allow_debug": true}}"#
            ),
            "allow_debug",
        ),
        (
            format!(r#"{{"version": 2, "accept": [{{"name": "a", "pcrs": {{"0": "{PCR0}"}}}}]}}"#),
            "version 2",
        ),
        (
            format!(
                r#"{{"version": 1, "accept": [{{"name": "a", "pcrs": {{"0": "{}"}}}}]}}"#,
                &PCR0[..90]
            ),
            "PCR0",
        ),
        (r#"{"version": 1, "accept": []}"#.to_string(), "no PCR set"),
    ];
    for (text, needle) in cases {
        std::fs::write(&policy, &text).unwrap();
        for args in [
            vec!["policy", "check", "--policy"],
            vec!["policy", "show", "--policy"],
            vec!["verify", "--document", &doc, "--at", AT, "--policy"],
        ] {
            let mut args = args.clone();
            let p = s(&policy);
            args.push(&p);
            let out = sealed(&args);
            assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
            assert!(stderr(&out).contains("policy.json"), "{}", stderr(&out));
        }
    }
    let out = sealed(&["policy", "show", "--policy", &s(&dir.path().join("absent"))]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn verify_with_a_policy_file_names_the_matched_set_and_applies_its_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let text = format!(
        r#"{{
  "version": 1,
  "accept": [
    {{ "name": "next", "pcrs": {{ "0": "{next}", "1": "{PCR1}", "2": "{PCR2}" }} }},
    {{ "name": "current", "pcrs": {{ "0": "{upper}", "1": "{PCR1}", "2": "{PCR2}" }} }}
  ]
}}"#,
        next = changed(PCR0),
        upper = PCR0.to_uppercase(),
    );
    std::fs::write(&policy, &text).unwrap();
    let doc = data("nitro/nitrite-2024-09-07.cbor");
    let p = s(&policy);
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--document", &doc, "--at", AT, "--policy", &p];
        args.extend_from_slice(extra);
        sealed(&args)
    };
    let out = json(&verify(&[]));
    assert_eq!(out["accepted_as"], "current");

    // The document is 22 minutes old at AT: a 300 s max_age_secs in the file refuses it, and
    // --max-age on the command line overrides the file.
    let with_age = text.replacen(
        "\"version\": 1,",
        "\"version\": 1, \"max_age_secs\": 300,",
        1,
    );
    std::fs::write(&policy, with_age).unwrap();
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: max_age: "),
        "{}",
        stderr(&out)
    );
    json(&verify(&["--max-age", "3600"]));

    // --policy replaces the PCR flags and can never allow debug mode.
    for conflicting in [
        vec!["--expect-pcr", "0=00"],
        vec!["--no-pcr-policy"],
        vec!["--allow-debug"],
    ] {
        let out = verify(&conflicting);
        assert_eq!(out.status.code(), Some(2), "{conflicting:?}");
        assert!(
            stderr(&out).contains("cannot be used with"),
            "{}",
            stderr(&out)
        );
    }
    // A root other than AWS's fails the chain, as without a policy file.
    let out = verify(&["--max-age", "3600", "--trust-root", &data("other-root.pem")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: certificate_chain: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_with_expect_pcr_reports_no_set_name() {
    let pcr0 = format!("0={PCR0}");
    let doc = data("nitro/nitrite-2024-09-07.cbor");
    let out = json(&sealed(&[
        "verify",
        "--document",
        &doc,
        "--at",
        AT,
        "--expect-pcr",
        &pcr0,
    ]));
    assert_eq!(out["accepted_as"], Value::Null);
}

/// A policy file accepting the stand-in host's enclave (PCR0 = 0x5a…, PCR1/PCR2 zero) as `sim`,
/// after a set it does not match, and its mock CA root.
fn stand_in_policy(dir: &Path, s_in: &support::StandIn) -> (PathBuf, PathBuf) {
    let m = write_measurements(
        dir,
        "sim.json",
        &hex::encode(support::PCR0),
        &"00".repeat(48),
        &"00".repeat(48),
    );
    let other = write_measurements(dir, "other.json", PCR0, PCR1, PCR2);
    let policy = dir.join("policy.json");
    json(&sealed(&[
        "policy",
        "create",
        "--measurements",
        &s(&other),
        "--name",
        "aws",
        "--out",
        &s(&policy),
    ]));
    json(&sealed(&[
        "policy",
        "add",
        "--policy",
        &s(&policy),
        "--measurements",
        &s(&m),
        "--name",
        "sim",
    ]));
    let root = dir.join("root.pem");
    std::fs::write(&root, &s_in.root_pem).unwrap();
    (policy, root)
}

#[test]
fn attest_and_check_against_a_host_name_the_matched_set() {
    let stand_in = support::start(Misbehave::Nothing);
    let dir = tempfile::tempdir().unwrap();
    let (policy, root) = stand_in_policy(dir.path(), &stand_in);
    let out = json(&sealed(&[
        "attest",
        "--host",
        &stand_in.url,
        "--trust-root",
        &s(&root),
        "--policy",
        &s(&policy),
    ]));
    assert_eq!(out["accepted_as"], "sim");
    assert_eq!(out["manifest"][0]["model_id"], "add");

    let out = json(&sealed(&[
        "policy",
        "check",
        "--policy",
        &s(&policy),
        "--host",
        &stand_in.url,
        "--trust-root",
        &s(&root),
    ]));
    assert_eq!(out["accepted_as"], "sim");
    assert_eq!(out["attestation"]["manifest"][1]["model_id"], "digits");

    // The mock root is trusted only when named: the same policy with the default AWS root fails.
    let out = sealed(&["attest", "--host", &stand_in.url, "--policy", &s(&policy)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("verification failed: certificate_chain: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn infer_with_a_policy_file_reports_the_release_and_enforces_its_models() {
    let stand_in = support::start(Misbehave::Nothing);
    let dir = tempfile::tempdir().unwrap();
    let (policy, root) = stand_in_policy(dir.path(), &stand_in);
    let a = dir.path().join("a.npy");
    sealed_client::npy::write_file(&a, &Tensor::from_i64(vec![1], &[4]).unwrap()).unwrap();
    let infer = |policy: &Path| {
        sealed(&[
            "infer",
            "--host",
            &stand_in.url,
            "--trust-root",
            &s(&root),
            "--policy",
            &s(policy),
            "--model",
            "add",
            "--input",
            &format!("a={}", a.display()),
            "--input",
            &format!("b={}", a.display()),
        ])
    };
    let out = infer(&policy);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("accepted as sim"), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sum: i64 [1] = [8]\n");

    // The file's models pin the manifest: a wrong digest refuses before anything is sent.
    let mut file = PolicyFile::load(&policy).unwrap();
    file.set_model("add", vec![0x11; 48]).unwrap();
    file.save(&policy).unwrap();
    let posts = stand_in.posts.load(std::sync::atomic::Ordering::SeqCst);
    let out = infer(&policy);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("\"add\""), "{}", stderr(&out));
    assert_eq!(
        stand_in.posts.load(std::sync::atomic::Ordering::SeqCst),
        posts
    );
}

#[tokio::test]
async fn sdk_loads_a_policy_file_and_the_session_names_the_matched_set() {
    let stand_in = support::start(Misbehave::Nothing);
    let dir = tempfile::tempdir().unwrap();
    let (policy_path, _) = stand_in_policy(dir.path(), &stand_in);
    let policy = Policy::from_file(&policy_path)
        .unwrap()
        .trust_root_pem(&stand_in.root_pem)
        .unwrap();
    let session = Client::new(&stand_in.url, policy)
        .unwrap()
        .attest()
        .await
        .unwrap();
    let accepted = session.accepted_as().unwrap();
    assert_eq!((accepted.index, accepted.name.as_deref()), (1, Some("sim")));
}
