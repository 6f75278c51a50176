//! End-to-end tests of the mock KMS over 127.0.0.1: HTTPS with the generated CA, SigV4-signed
//! with `sealed_kms::sigv4`, attestation documents from `sealed-mock-ca`.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ciborium::Value as Cbor;
use getrandom::SysRng;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use sealed_attestation::TrustAnchor;
use sealed_kms::cms;
use sealed_kms::rsa::PrivateKey;
use sealed_kms::sigv4::{SigningCredentials, sign_kms_request};
use sealed_mock_ca::{MockCa, MockLeaf};
use sealed_mock_kms::{Config, Credential, MockKmsHandle, spawn};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const ADMIN: SigningCredentials<'static> = SigningCredentials {
    access_key_id: "AKIDADMIN",
    secret_access_key: "admin-secret",
    session_token: None,
};
const HOST: SigningCredentials<'static> = SigningCredentials {
    access_key_id: "ASIAHOST",
    secret_access_key: "host-secret",
    session_token: Some("host-session-token"),
};
const GOOD_PCR0: [u8; 48] = [0xab; 48];
const BAD_PCR0: [u8; 48] = [0xcd; 48];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rsa_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::new(&mut SysRng, 2048).unwrap())
}

struct Pki {
    ca: MockCa,
    leaf: MockLeaf,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = MockCa::generate(now()).unwrap();
        let leaf = ca.issue_leaf(now(), 3600).unwrap();
        Pki { ca, leaf }
    })
}

/// An attestation document shaped like the NSM's, signed by `leaf`, carrying our RSA key.
fn attestation(leaf: &MockLeaf, pcr0: &[u8; 48]) -> Vec<u8> {
    let t = |s: &str| Cbor::Text(s.into());
    let spki = cms::recipient_public_key_spki(&rsa_key().to_public_key()).unwrap();
    let pcrs = (0..16u8)
        .map(|i| {
            let v = if i == 0 { pcr0.to_vec() } else { vec![0; 48] };
            (Cbor::Integer(i.into()), Cbor::Bytes(v))
        })
        .collect();
    let payload = Cbor::Map(vec![
        (t("module_id"), t("i-0123456789abcdef0-enc0123456789abcdef")),
        (t("digest"), t("SHA384")),
        (t("timestamp"), Cbor::Integer((now() * 1000).into())),
        (t("pcrs"), Cbor::Map(pcrs)),
        (
            t("certificate"),
            Cbor::Bytes(leaf.certificate_der().to_vec()),
        ),
        (
            t("cabundle"),
            Cbor::Array(leaf.cabundle().into_iter().map(Cbor::Bytes).collect()),
        ),
        (t("public_key"), Cbor::Bytes(spki)),
        (t("user_data"), Cbor::Null),
        (t("nonce"), Cbor::Null),
    ]);
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&payload, &mut bytes).unwrap();
    leaf.sign_cose_sign1(&bytes).unwrap()
}

fn config(dir: &Path, with_root: bool) -> Config {
    let mut c = Config::new(dir.join("kms-state.json"), dir.join("tls"));
    c.credentials = vec![
        Credential {
            access_key_id: ADMIN.access_key_id.into(),
            secret_access_key: Zeroizing::new(ADMIN.secret_access_key.into()),
            session_token: None,
            principal_arn: "arn:aws:iam::111122223333:user/admin".into(),
        },
        Credential {
            access_key_id: HOST.access_key_id.into(),
            secret_access_key: Zeroizing::new(HOST.secret_access_key.into()),
            session_token: Some(Zeroizing::new(HOST.session_token.unwrap().into())),
            principal_arn: "arn:aws:sts::111122223333:assumed-role/enclave-host/i-0123".into(),
        },
    ];
    if with_root {
        c.attestation_root = Some(TrustAnchor::from_pem(&pki().ca.root_pem()).unwrap());
    }
    c
}

struct Reply {
    status: u16,
    error_type: Option<String>,
    request_id: Option<String>,
    body: Value,
}

impl Reply {
    fn error(&self) -> (&str, &str) {
        (
            self.body["__type"].as_str().unwrap_or(""),
            self.error_type.as_deref().unwrap_or(""),
        )
    }
}

/// One HTTPS request to the mock, trusting only its generated CA.
async fn send(kms: &MockKmsHandle, headers: &[(&str, String)], body: Vec<u8>) -> Reply {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(kms.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(kms.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post("/");
    for (n, v) in headers {
        req = req.header(*n, v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, error_type, request_id) = (
        resp.status().as_u16(),
        header("x-amzn-errortype"),
        header("x-amzn-requestid"),
    );
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-amz-json-1.1")
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        error_type,
        request_id,
        body: serde_json::from_slice(&bytes).unwrap(),
    }
}

async fn call(kms: &MockKmsHandle, creds: &SigningCredentials<'_>, op: &str, body: Value) -> Reply {
    let body = serde_json::to_vec(&body).unwrap();
    let headers = sign_kms_request(
        creds,
        "us-east-1",
        &kms.host(),
        &format!("TrentService.{op}"),
        &body,
        SystemTime::now(),
    )
    .unwrap();
    send(kms, &headers, body).await
}

fn ok(r: &Reply) -> &Value {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.request_id.is_some());
    &r.body
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// The policy an operator writes: the account administers the key; the enclave host role may
/// decrypt only for an enclave whose image digest (PCR0) matches, written in upper case to
/// exercise case-insensitive matching.
fn enclave_policy(pcr0: &[u8; 48]) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Admin", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::111122223333:user/admin"},
             "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy",
                        "kms:Encrypt", "kms:GenerateDataKey"],
             "Resource": "*"},
            {"Sid": "Enclave", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::111122223333:role/enclave-host"},
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {
                 "kms:RecipientAttestation:ImageSha384": hex::encode_upper(pcr0),
                 "kms:RecipientAttestation:PCR0": hex::encode_upper(pcr0)}}}
        ]
    })
    .to_string()
}

async fn create_key(kms: &MockKmsHandle, policy: Option<String>) -> (String, String) {
    let mut req = json!({"Description": "sealed models"});
    if let Some(p) = policy {
        req["Policy"] = Value::String(p);
    }
    let r = call(kms, &ADMIN, "CreateKey", req).await;
    let meta = &ok(&r)["KeyMetadata"];
    assert_eq!(meta["KeySpec"], "SYMMETRIC_DEFAULT");
    assert_eq!(meta["KeyState"], "Enabled");
    assert!(meta["CreationDate"].as_f64().unwrap() > 1.6e9);
    let arn = meta["Arn"].as_str().unwrap().to_owned();
    assert_eq!(
        arn,
        format!(
            "arn:aws:kms:us-east-1:111122223333:key/{}",
            meta["KeyId"].as_str().unwrap()
        )
    );
    (meta["KeyId"].as_str().unwrap().to_owned(), arn)
}

#[tokio::test]
async fn recipient_decrypt_is_released_only_to_the_policy_pcr0() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path(), true)).await.unwrap();
    let (_, arn) = create_key(&kms, Some(enclave_policy(&GOOD_PCR0))).await;

    let r = call(
        &kms,
        &ADMIN,
        "GenerateDataKey",
        json!({"KeyId": arn, "KeySpec": "AES_256"}),
    )
    .await;
    let body = ok(&r);
    let data_key = b64(&body["Plaintext"]);
    assert_eq!(data_key.len(), 32);
    let blob = body["CiphertextBlob"].clone();

    // The measured enclave: the key comes back only as CMS for its attested RSA key.
    let good = attestation(&pki().leaf, &GOOD_PCR0);
    let recipient = |doc: &[u8]| {
        json!({"AttestationDocument": STANDARD.encode(doc),
               "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
    };
    let r = call(
        &kms,
        &HOST,
        "Decrypt",
        json!({"CiphertextBlob": blob, "KeyId": arn, "Recipient": recipient(&good)}),
    )
    .await;
    let body = ok(&r);
    assert!(body.get("Plaintext").is_none());
    assert_eq!(body["KeyId"], arn.as_str());
    let envelope = cms::parse(&b64(&body["CiphertextForRecipient"])).unwrap();
    let opened = cms::decrypt(&envelope, rsa_key(), &mut SysRng).unwrap();
    assert_eq!(opened.as_slice(), data_key.as_slice());

    // Another measurement, or no attestation at all: refused by the policy.
    let bad = attestation(&pki().leaf, &BAD_PCR0);
    for req in [
        json!({"CiphertextBlob": blob, "Recipient": recipient(&bad)}),
        json!({"CiphertextBlob": blob}),
    ] {
        let r = call(&kms, &HOST, "Decrypt", req).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.error(),
            ("AccessDeniedException", "AccessDeniedException")
        );
        assert!(r.body["message"].as_str().unwrap().contains("kms:Decrypt"));
    }

    // A document from another CA is not an attestation at all.
    let foreign_ca = MockCa::generate(now()).unwrap();
    let foreign = attestation(&foreign_ca.issue_leaf(now(), 600).unwrap(), &GOOD_PCR0);
    let r = call(
        &kms,
        &HOST,
        "Decrypt",
        json!({"CiphertextBlob": blob, "Recipient": recipient(&foreign)}),
    )
    .await;
    assert_eq!(r.error().0, "ValidationException");

    // Explicit Deny wins over the Allow.
    let mut policy: Value = serde_json::from_str(&enclave_policy(&GOOD_PCR0)).unwrap();
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"StringEquals": {"kms:RecipientAttestation:PCR0": hex::encode(GOOD_PCR0)}}
    }));
    let r = call(
        &kms,
        &ADMIN,
        "PutKeyPolicy",
        json!({"KeyId": arn, "PolicyName": "default", "Policy": policy.to_string()}),
    )
    .await;
    ok(&r);
    let r = call(&kms, &ADMIN, "GetKeyPolicy", json!({"KeyId": arn})).await;
    assert_eq!(ok(&r)["Policy"].as_str().unwrap(), policy.to_string());
    let r = call(
        &kms,
        &HOST,
        "Decrypt",
        json!({"CiphertextBlob": blob, "Recipient": recipient(&good)}),
    )
    .await;
    assert_eq!(r.error().0, "AccessDeniedException");

    // The host role itself may not administer or generate keys.
    let r = call(
        &kms,
        &HOST,
        "GenerateDataKey",
        json!({"KeyId": arn, "KeySpec": "AES_256"}),
    )
    .await;
    assert_eq!(r.error().0, "AccessDeniedException");
}

#[tokio::test]
async fn generate_random_and_data_key_for_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path(), true)).await.unwrap();
    let (key_id, _) = create_key(&kms, None).await;
    let doc = STANDARD.encode(attestation(&pki().leaf, &GOOD_PCR0));
    let recipient =
        json!({"AttestationDocument": doc, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"});

    let r = call(
        &kms,
        &ADMIN,
        "GenerateRandom",
        json!({"NumberOfBytes": 40, "Recipient": recipient}),
    )
    .await;
    let body = ok(&r);
    assert!(body.get("Plaintext").is_none());
    let random = cms::decrypt(
        &cms::parse(&b64(&body["CiphertextForRecipient"])).unwrap(),
        rsa_key(),
        &mut SysRng,
    )
    .unwrap();
    assert_eq!(random.len(), 40);

    // The default key policy lets the account do everything; the data key given to the
    // recipient is the one inside CiphertextBlob.
    let r = call(
        &kms,
        &ADMIN,
        "GenerateDataKey",
        json!({"KeyId": key_id, "NumberOfBytes": 24, "Recipient": recipient}),
    )
    .await;
    let body = ok(&r);
    assert!(body.get("Plaintext").is_none());
    let for_recipient = cms::decrypt(
        &cms::parse(&b64(&body["CiphertextForRecipient"])).unwrap(),
        rsa_key(),
        &mut SysRng,
    )
    .unwrap();
    let r = call(
        &kms,
        &ADMIN,
        "Decrypt",
        json!({"CiphertextBlob": body["CiphertextBlob"]}),
    )
    .await;
    assert_eq!(b64(&ok(&r)["Plaintext"]), for_recipient.as_slice());
}

#[tokio::test]
async fn recipient_is_refused_without_a_configured_root() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path(), false)).await.unwrap();
    let doc = STANDARD.encode(attestation(&pki().leaf, &GOOD_PCR0));
    let r = call(
        &kms,
        &ADMIN,
        "GenerateRandom",
        json!({"NumberOfBytes": 32, "Recipient": {"AttestationDocument": doc, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error().0, "ValidationException");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("attestation root")
    );
}

#[tokio::test]
async fn authentication_failures_have_aws_error_types() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path(), false)).await.unwrap();
    let body = br#"{"NumberOfBytes":16}"#.to_vec();
    let target = "TrentService.GenerateRandom";
    let sign = |creds: &SigningCredentials<'_>, region: &str| {
        sign_kms_request(creds, region, &kms.host(), target, &body, SystemTime::now()).unwrap()
    };

    // Correct signature: accepted.
    let r = send(&kms, &sign(&ADMIN, "us-east-1"), body.clone()).await;
    assert_eq!(b64(&ok(&r)["Plaintext"]).len(), 16);

    // Wrong secret → InvalidSignatureException.
    let wrong = SigningCredentials {
        secret_access_key: "nope",
        ..ADMIN
    };
    let r = send(&kms, &sign(&wrong, "us-east-1"), body.clone()).await;
    assert_eq!(
        r.error(),
        ("InvalidSignatureException", "InvalidSignatureException")
    );

    // A body changed after signing → InvalidSignatureException.
    let r = send(
        &kms,
        &sign(&ADMIN, "us-east-1"),
        br#"{"NumberOfBytes":17}"#.to_vec(),
    )
    .await;
    assert_eq!(r.error().0, "InvalidSignatureException");

    // Another region in the scope → InvalidSignatureException.
    let r = send(&kms, &sign(&ADMIN, "eu-west-1"), body.clone()).await;
    assert_eq!(r.error().0, "InvalidSignatureException");

    // Unknown access key → UnrecognizedClientException.
    let unknown = SigningCredentials {
        access_key_id: "AKIDUNKNOWN",
        ..ADMIN
    };
    let r = send(&kms, &sign(&unknown, "us-east-1"), body.clone()).await;
    assert_eq!(r.error().0, "UnrecognizedClientException");

    // Session token missing or wrong for temporary credentials → UnrecognizedClientException.
    for token in [None, Some("other-token")] {
        let creds = SigningCredentials {
            session_token: token,
            ..HOST
        };
        let r = send(&kms, &sign(&creds, "us-east-1"), body.clone()).await;
        assert_eq!(r.error().0, "UnrecognizedClientException");
    }

    // No Authorization at all.
    let unsigned: Vec<(&str, String)> = sign(&ADMIN, "us-east-1")
        .into_iter()
        .filter(|(n, _)| *n != "authorization")
        .collect();
    let r = send(&kms, &unsigned, body.clone()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error().0, "MissingAuthenticationToken");

    // Request time outside AWS's 15-minute window.
    let old = sign_kms_request(
        &ADMIN,
        "us-east-1",
        &kms.host(),
        target,
        &body,
        SystemTime::now() - std::time::Duration::from_secs(20 * 60),
    )
    .unwrap();
    let r = send(&kms, &old, body.clone()).await;
    assert_eq!(r.error().0, "InvalidSignatureException");
}

#[tokio::test]
async fn tampered_or_rebound_ciphertext_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path(), false)).await.unwrap();
    let (key_id, arn) = create_key(&kms, None).await;
    let ctx = json!({"model": "m1"});
    let r = call(
        &kms,
        &ADMIN,
        "Encrypt",
        json!({"KeyId": key_id, "Plaintext": STANDARD.encode(b"secret"), "EncryptionContext": ctx}),
    )
    .await;
    let body = ok(&r);
    assert_eq!(body["KeyId"], arn.as_str());
    let blob = b64(&body["CiphertextBlob"]);

    let r = call(
        &kms,
        &ADMIN,
        "Decrypt",
        json!({"CiphertextBlob": STANDARD.encode(&blob), "EncryptionContext": ctx}),
    )
    .await;
    assert_eq!(b64(&ok(&r)["Plaintext"]), b"secret");

    for i in [0, 10, blob.len() / 2, blob.len() - 1] {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        let r = call(
            &kms,
            &ADMIN,
            "Decrypt",
            json!({"CiphertextBlob": STANDARD.encode(&t), "EncryptionContext": ctx}),
        )
        .await;
        assert_eq!(
            r.error(),
            ("InvalidCiphertextException", "InvalidCiphertextException"),
            "byte {i}"
        );
    }
    let r = call(
        &kms,
        &ADMIN,
        "Decrypt",
        json!({"CiphertextBlob": STANDARD.encode(&blob), "EncryptionContext": {"model": "m2"}}),
    )
    .await;
    assert_eq!(r.error().0, "InvalidCiphertextException");

    // Unknown key ids.
    let r = call(
        &kms,
        &ADMIN,
        "DescribeKey",
        json!({"KeyId": "00000000-0000-4000-8000-000000000000"}),
    )
    .await;
    assert_eq!(r.error().0, "NotFoundException");
}

#[tokio::test]
async fn keys_persist_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path(), false)).await.unwrap();
    let ca_before = kms.ca_pem.clone();
    let (key_id, _) = create_key(&kms, None).await;
    let r = call(
        &kms,
        &ADMIN,
        "GenerateDataKey",
        json!({"KeyId": key_id, "KeySpec": "AES_256"}),
    )
    .await;
    let body = ok(&r).clone();
    kms.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("kms-state.json")), 0o600);
        assert_eq!(mode(&dir.path().join("tls/kms-key.pem")), 0o600);
    }

    let kms = spawn(config(dir.path(), false)).await.unwrap();
    assert_eq!(kms.ca_pem, ca_before, "TLS material is reused");
    let r = call(
        &kms,
        &ADMIN,
        "Decrypt",
        json!({"CiphertextBlob": body["CiphertextBlob"]}),
    )
    .await;
    assert_eq!(ok(&r)["Plaintext"], body["Plaintext"]);
    let r = call(&kms, &ADMIN, "DescribeKey", json!({"KeyId": key_id})).await;
    assert_eq!(ok(&r)["KeyMetadata"]["KeyId"], key_id.as_str());
}
