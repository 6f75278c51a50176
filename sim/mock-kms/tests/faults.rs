//! Fault injection over real HTTPS on 127.0.0.1: each fault kind as a client sees it, counts,
//! operation filters, the start-up plan, and normal service once the plan is used up or cleared.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use sealed_kms::sigv4::{SigningCredentials, sign_kms_request};
use sealed_mock_kms::faults::{Fault, FaultRule, FaultStats};
use sealed_mock_kms::{Config, Credential, MockKmsHandle, spawn};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const ADMIN: SigningCredentials<'static> = SigningCredentials {
    access_key_id: "AKIDADMIN",
    secret_access_key: "admin-secret",
    session_token: None,
};

fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir.join("kms-state.json"), dir.join("tls"));
    c.credentials = vec![Credential {
        access_key_id: ADMIN.access_key_id.into(),
        secret_access_key: Zeroizing::new(ADMIN.secret_access_key.into()),
        session_token: None,
        principal_arn: "arn:aws:iam::111122223333:user/admin".into(),
    }];
    c
}

/// What the client saw: an answer, or the connection closing without one.
#[derive(Debug)]
enum Outcome {
    Answer {
        status: u16,
        error_type: Option<String>,
        body: Value,
    },
    Closed(String),
}

impl Outcome {
    fn error(&self) -> (u16, &str, &str) {
        match self {
            Outcome::Answer {
                status,
                error_type,
                body,
            } => (
                *status,
                error_type.as_deref().unwrap_or(""),
                body["__type"].as_str().unwrap_or(""),
            ),
            Outcome::Closed(e) => panic!("connection closed: {e}"),
        }
    }

    fn is_ok(&self) -> bool {
        matches!(self, Outcome::Answer { status: 200, .. })
    }
}

/// One signed request on a fresh connection, trusting only the mock's CA.
async fn call(kms: &MockKmsHandle, op: &str, body: Value) -> Outcome {
    let body = serde_json::to_vec(&body).unwrap();
    let headers = sign_kms_request(
        &ADMIN,
        "us-east-1",
        &kms.host(),
        &format!("TrentService.{op}"),
        &body,
        SystemTime::now(),
    )
    .unwrap();
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
    for (n, v) in &headers {
        req = req.header(*n, v);
    }
    let resp = match sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Closed(e.to_string()),
    };
    let status = resp.status().as_u16();
    let error_type = resp
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Outcome::Answer {
        status,
        error_type,
        body: serde_json::from_slice(&bytes).unwrap(),
    }
}

async fn random(kms: &MockKmsHandle) -> Outcome {
    call(kms, "GenerateRandom", json!({"NumberOfBytes": 16})).await
}

#[tokio::test]
async fn each_fault_kind_reaches_the_client_as_aws_would_send_it() {
    let dir = tempfile::tempdir().unwrap();
    let kms = spawn(config(dir.path())).await.unwrap();
    assert!(random(&kms).await.is_ok());

    let cases = [
        ("internal*1", 500, "KMSInternalException"),
        ("unavailable*1", 503, "ServiceUnavailable"),
        ("throttle*1", 400, "ThrottlingException"),
    ];
    for (spec, status, error_type) in cases {
        kms.faults().set_spec(spec).unwrap();
        assert_eq!(
            random(&kms).await.error(),
            (status, error_type, error_type),
            "{spec}"
        );
        // Counted down to nothing: the next request is served.
        assert_eq!(kms.faults().spec(), "");
        assert!(random(&kms).await.is_ok(), "{spec}");
    }

    kms.faults().push(FaultRule::times(Fault::Drop, 1));
    match random(&kms).await {
        Outcome::Closed(_) => {}
        other => panic!("expected a dropped connection, got {other:?}"),
    }
    assert!(random(&kms).await.is_ok());

    let delay = Duration::from_millis(300);
    kms.faults().push(FaultRule::times(Fault::Delay(delay), 1));
    let started = Instant::now();
    assert!(random(&kms).await.is_ok(), "a delayed request is answered");
    assert!(started.elapsed() >= delay);

    assert_eq!(
        kms.faults().stats(),
        FaultStats {
            requests: 10,
            faulted: 5
        }
    );
}

#[tokio::test]
async fn faults_target_one_operation_and_last_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Given at start, as `sealed-sim kms --fault` would.
    cfg.faults = sealed_mock_kms::faults::parse_plan("unavailable@Decrypt").unwrap();
    let kms = spawn(cfg).await.unwrap();

    // CreateKey and Encrypt are not affected; Decrypt fails every time.
    let created = call(&kms, "CreateKey", json!({})).await;
    let Outcome::Answer {
        status: 200, body, ..
    } = created
    else {
        panic!("{created:?}")
    };
    let key_id = body["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let encrypted = call(
        &kms,
        "Encrypt",
        json!({"KeyId": key_id, "Plaintext": "aGVsbG8="}),
    )
    .await;
    let Outcome::Answer {
        status: 200, body, ..
    } = encrypted
    else {
        panic!("{encrypted:?}")
    };
    let decrypt = json!({"CiphertextBlob": body["CiphertextBlob"]});
    for _ in 0..3 {
        assert_eq!(call(&kms, "Decrypt", decrypt.clone()).await.error().0, 503);
    }
    assert_eq!(kms.faults().spec(), "unavailable@Decrypt");
    kms.faults().clear();
    let Outcome::Answer {
        status: 200, body, ..
    } = call(&kms, "Decrypt", decrypt).await
    else {
        panic!("Decrypt still failing after clear")
    };
    assert_eq!(body["Plaintext"], "aGVsbG8=");
    assert_eq!(kms.faults().stats().faulted, 3);

    assert!(kms.faults().set_spec("explode").is_err());
    assert_eq!(kms.faults().spec(), "", "a bad spec changes nothing");
}
