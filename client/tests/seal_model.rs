//! `sealed seal-model`, run as a user would, against a KMS stand-in on 127.0.0.1.
//!
//! The stand-in speaks just enough of the KMS JSON 1.1 protocol over TLS (a throwaway CA made
//! here with rcgen) for `GenerateDataKey`: it answers by access key id, so that one test each
//! covers success, `AccessDeniedException` and unknown credentials through the real AWS SDK,
//! rustls on ring, and `--ca-bundle`. The binary runs with a cleared environment: no real AWS
//! configuration, IMDS disabled, nothing leaves 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/6f1c4a7e-2b9d-4e53-9a0c-1d2e3f405162";
const GOOD_KEY_ID: &str = "AKIAGOODGOODGOODGOOD";
const DENIED_KEY_ID: &str = "AKIADENIEDDENIEDDENI";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// One request the stand-in received.
#[derive(Clone, Debug)]
struct Seen {
    target: String,
    authorization: String,
    body: Value,
}

struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    data_key: [u8; 32],
    blob: Vec<u8>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

fn tls_config() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

fn spawn_stand_in() -> StandIn {
    let (ca_pem, config) = tls_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data_key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let blob: Vec<u8> = (0..184u32).map(|i| (i * 7 + 3) as u8).collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (k, b, s) = (data_key, blob.clone(), seen.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let (config, b, s) = (config.clone(), b.clone(), s.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // Keep-alive: serve requests until the client closes (or the handshake fails).
                while let Some(seen) = read_request(&mut tls) {
                    let (status, body) = answer(&seen, &k, &b);
                    s.lock().unwrap().push(seen);
                    let body = body.to_string();
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.1\r\n\
                         x-amzn-requestid: 0c9e7d3a-0000-4000-8000-000000000001\r\n\
                         content-length: {}\r\n\r\n",
                        body.len()
                    );
                    if tls.write_all(head.as_bytes()).is_err()
                        || tls.write_all(body.as_bytes()).is_err()
                        || tls.flush().is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    StandIn {
        addr,
        ca_pem,
        data_key,
        blob,
        seen,
    }
}

fn read_request<S: Read>(stream: &mut S) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if line.is_empty() {
        return None;
    }
    let (mut len, mut target, mut authorization) = (0usize, String::new(), String::new());
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().ok()?,
            "x-amz-target" => target = value.trim().to_string(),
            "authorization" => authorization = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    // The BufReader may only have buffered this request's bytes: the client waits for our answer.
    Some(Seen {
        target,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn answer(seen: &Seen, key: &[u8; 32], blob: &[u8]) -> (&'static str, Value) {
    let error = |kind: &str, message: &str| {
        (
            "400 Bad Request",
            json!({ "__type": kind, "message": message }),
        )
    };
    if seen.target != "TrentService.GenerateDataKey" {
        return error("UnknownOperationException", "only GenerateDataKey here");
    }
    if seen
        .authorization
        .contains(&format!("Credential={DENIED_KEY_ID}/"))
    {
        return error(
            "AccessDeniedException",
            "User: arn:aws:iam::111122223333:user/denied is not authorized to perform: \
             kms:GenerateDataKey on this resource because no resource-based policy allows it",
        );
    }
    if !seen
        .authorization
        .contains(&format!("Credential={GOOD_KEY_ID}/"))
    {
        return error(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    (
        "200 OK",
        json!({
            "CiphertextBlob": BASE64.encode(blob),
            "Plaintext": BASE64.encode(key),
            "KeyId": ARN,
        }),
    )
}

/// A directory with the model, the CA file and empty AWS config files.
struct Workspace {
    dir: tempfile::TempDir,
    model: Vec<u8>,
}

impl Workspace {
    fn new(ca_pem: &str, model_len: usize) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let model: Vec<u8> = (0..model_len).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(dir.path().join("model.onnx"), &model).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("config"), "").unwrap();
        std::fs::write(dir.path().join("credentials"), "").unwrap();
        Workspace { dir, model }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sealed seal-model` with `args` after the model/out/id/key flags, in a cleared
    /// environment plus `env`.
    fn seal(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let model = self.path("model.onnx");
        let out = self.path("model.sealed");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealed"));
        cmd.env_clear()
            .env("HOME", self.dir.path())
            .env("AWS_CONFIG_FILE", self.path("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path("credentials"))
            // Never reach for 169.254.169.254; one attempt keeps failure tests fast.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1")
            .args(["seal-model", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(["--model-id", "digits", "--key-id", ARN])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn good_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", GOOD_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check_sealed_file(ws: &Workspace, kms: &StandIn) {
    let sealed = std::fs::read(ws.path("model.sealed")).unwrap();
    let (header, _) = sealed_model::parse_header(&sealed).unwrap();
    assert_eq!(header.model_id, "digits");
    assert_eq!(header.kms_key_id, ARN);
    assert_eq!(header.encrypted_data_key, kms.blob);
    let opened = sealed_model::open(&sealed, &kms.data_key).unwrap();
    assert_eq!(&opened[..], &ws.model[..]);
}

#[test]
fn seals_through_the_aws_sdk_with_a_named_ca_and_the_key_arn_region() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 300_000);
    let ca = ws.path("ca.pem");
    let out = ws.seal(
        &[
            "--kms-endpoint",
            &kms.url(),
            "--ca-bundle",
            ca.to_str().unwrap(),
            "--chunk-size",
            "64K",
        ],
        &good_env(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["model_id"], "digits");
    assert_eq!(summary["kms_key_id"], ARN);
    assert_eq!(summary["plaintext_len"], 300_000);
    assert_eq!(summary["chunk_size"], 65_536);
    let sealed_len = std::fs::metadata(ws.path("model.sealed")).unwrap().len();
    assert_eq!(summary["sealed_len"], sealed_len);
    use sha2::Digest as _;
    assert_eq!(
        summary["sha384"],
        hex::encode(sha2::Sha384::digest(&ws.model))
    );
    check_sealed_file(&ws, &kms);

    let seen = kms.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "TrentService.GenerateDataKey");
    assert_eq!(seen[0].body["KeyId"], ARN);
    assert_eq!(seen[0].body["KeySpec"], "AES_256");
    assert_eq!(
        seen[0].body["EncryptionContext"][sealed_model::ENCRYPTION_CONTEXT_KEY],
        "digits"
    );
    // SigV4 with the region taken from the key ARN (no --region, no AWS_REGION).
    assert!(
        seen[0]
            .authorization
            .starts_with(&format!("AWS4-HMAC-SHA256 Credential={GOOD_KEY_ID}/"))
            && seen[0]
                .authorization
                .contains("/us-east-1/kms/aws4_request"),
        "{}",
        seen[0].authorization
    );
    // Nothing secret on the terminal.
    let err = stderr(&out);
    assert!(!err.contains(SECRET) && !err.contains(&BASE64.encode(kms.data_key)));
}

#[test]
fn reads_credentials_from_a_named_profile_and_endpoint_and_ca_from_the_environment() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 5000);
    std::fs::write(
        ws.path("credentials"),
        format!(
            "[default]\naws_access_key_id = {DENIED_KEY_ID}\naws_secret_access_key = {SECRET}\n\n\
             [sealer]\naws_access_key_id = {GOOD_KEY_ID}\naws_secret_access_key = {SECRET}\n"
        ),
    )
    .unwrap();
    let ca = ws.path("ca.pem");
    let url = kms.url();
    let out = ws.seal(
        &["--profile", "sealer"],
        &[
            ("AWS_ENDPOINT_URL_KMS", &url),
            ("AWS_CA_BUNDLE", ca.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check_sealed_file(&ws, &kms);
}

#[test]
fn access_denied_by_kms_exits_5_with_the_reason_and_writes_nothing() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 5000);
    let ca = ws.path("ca.pem");
    let out = ws.seal(
        &[
            "--kms-endpoint",
            &kms.url(),
            "--ca-bundle",
            ca.to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", DENIED_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("KMS denied access (AccessDeniedException)")
            && err.contains("is not authorized to perform"),
        "{err}"
    );
    assert!(!ws.path("model.sealed").exists());
}

#[test]
fn credentials_kms_does_not_recognise_exit_4() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 100);
    let ca = ws.path("ca.pem");
    let out = ws.seal(
        &[
            "--kms-endpoint",
            &kms.url(),
            "--ca-bundle",
            ca.to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWNUN"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("UnrecognizedClientException"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_credentials_exit_4_naming_the_sources_before_any_request() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 100);
    let ca = ws.path("ca.pem");
    let out = ws.seal(
        &[
            "--kms-endpoint",
            &kms.url(),
            "--ca-bundle",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no AWS credentials found") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(kms.seen.lock().unwrap().is_empty());
}

#[test]
fn the_stand_in_ca_is_not_trusted_unless_named() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 100);
    let out = ws.seal(&["--kms-endpoint", &kms.url()], &good_env());
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach") && err.contains("--ca-bundle"),
        "{err}"
    );
    assert!(kms.seen.lock().unwrap().is_empty());
    assert!(!ws.path("model.sealed").exists());
}

#[test]
fn unreachable_endpoint_exits_6() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 100);
    let ca = ws.path("ca.pem");
    let url = format!("https://127.0.0.1:{port}");
    let out = ws.seal(
        &["--kms-endpoint", &url, "--ca-bundle", ca.to_str().unwrap()],
        &good_env(),
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[test]
fn usage_and_file_errors_fail_before_kms_with_their_own_codes() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 100);
    let ca = ws.path("ca.pem");
    let endpoint = [
        "--kms-endpoint",
        &kms.url(),
        "--ca-bundle",
        ca.to_str().unwrap(),
    ];

    // Bad model id: clap's usage error.
    let out = ws.seal(
        &[&endpoint[..], &["--model-id", "../evil"]].concat(),
        &good_env(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--model-id"), "{}", stderr(&out));

    // Plain http endpoint.
    let out = ws.seal(&["--kms-endpoint", "http://127.0.0.1:1"], &good_env());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plain http is refused"),
        "{}",
        stderr(&out)
    );

    // A CA bundle that is not one.
    std::fs::write(ws.path("bad.pem"), "not a certificate").unwrap();
    let bad = ws.path("bad.pem");
    let out = ws.seal(
        &[
            "--kms-endpoint",
            &kms.url(),
            "--ca-bundle",
            bad.to_str().unwrap(),
        ],
        &good_env(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Unreadable model.
    std::fs::remove_file(ws.path("model.onnx")).unwrap();
    let out = ws.seal(&endpoint, &good_env());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read model") && stderr(&out).contains("model.onnx"),
        "{}",
        stderr(&out)
    );

    // Existing output without --force.
    std::fs::write(ws.path("model.onnx"), b"x").unwrap();
    std::fs::write(ws.path("model.sealed"), b"keep me").unwrap();
    let out = ws.seal(&endpoint, &good_env());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(ws.path("model.sealed")).unwrap(), b"keep me");
    assert!(kms.seen.lock().unwrap().is_empty());
}

#[test]
fn sdk_client_api_seals_in_process() {
    let kms = spawn_stand_in();
    let ws = Workspace::new(&kms.ca_pem, 70_000);
    let ca = ws.path("ca.pem");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt.block_on(async {
        let client = sealed_client::kms::sdk_client_with(sealed_client::kms::KmsClientConfig {
            endpoint: Some(&kms.url()),
            region: Some("us-east-1"),
            ca_bundle: Some(&ca),
            credentials: Some(aws_credential_types::Credentials::new(
                GOOD_KEY_ID,
                SECRET,
                None,
                None,
                "test",
            )),
            ..Default::default()
        })
        .await
        .unwrap();
        sealed_client::seal::seal_model_file(
            &client,
            &sealed_client::seal::SealRequest {
                model: &ws.path("model.onnx"),
                out: &ws.path("model.sealed"),
                model_id: "digits",
                key_id: ARN,
                chunk_size: sealed_model::DEFAULT_CHUNK_SIZE,
                overwrite: false,
            },
            indicatif::ProgressBar::hidden(),
        )
        .await
        .unwrap()
    });
    assert_eq!(summary.plaintext_len, 70_000);
    check_sealed_file(&ws, &kms);
}
