//! The KMS client against a small stand-in KMS on a Unix socket (the proxy's place): real TLS
//! with a test CA, real HTTP/1.1, SigV4 checked with `sealed_kms::sigv4::verify`, and a real
//! `CiphertextForRecipient` built for the RSA key the attestation carried. The stand-in NSM
//! returns the requested `public_key` as the "document", so the server can find the key without a
//! mock CA; the attestation itself is exercised by the mock-KMS integration test.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sealed_kms::api::{DecryptRequest, DecryptResponse, KmsErrorBody, KmsErrorKind, SecretBlob};
use tokio::net::UnixListener;

use super::*;

const AKID: &str = "AKIDEXAMPLE12345";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "session-token-value";
const KEY_ARN: &str = "arn:aws:kms:eu-west-2:111122223333:key/0b9e1c52-58c4-4d4c-9a2b-7d1f3a0c9e11";
const DATA_KEY: [u8; 32] = [0x5c; 32];

/// Hands back the requested public key as the "document".
struct EchoNsm;
impl Nsm for EchoNsm {
    fn process(&self, request: Request) -> Response {
        match request {
            Request::Attestation {
                public_key: Some(pk),
                ..
            } => Response::Attestation {
                document: pk.into_vec(),
            },
            _ => Response::Error(aws_nitro_enclaves_nsm_api::api::ErrorCode::InvalidArgument),
        }
    }
}

/// How the stand-in answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Release,
    /// `Plaintext` beside `CiphertextForRecipient`: must be refused.
    Plaintext,
    Deny,
    Throttle,
    InvalidCiphertext,
    /// A 500 with no JSON body.
    Bare500,
    /// A body far over the limit.
    Huge,
    /// Never answers.
    Hang,
    /// Reads the request and closes the connection without an answer.
    Drop,
    /// HTTP 500 `KMSInternalException`.
    Internal,
    /// HTTP 503 `ServiceUnavailable`, as the AWS front end sends it.
    Unavailable503,
}

/// The stand-in's way of closing a connection without an answer.
#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dropped on purpose")
    }
}
impl std::error::Error for Dropped {}

/// What the stand-in saw.
#[derive(Default)]
struct Seen {
    requests: usize,
    host: Option<String>,
    signature_ok: bool,
    token: Option<String>,
    key_id: Option<String>,
}

struct StandIn {
    _dir: tempfile::TempDir,
    proxy: Endpoint,
    ca: CertificateDer<'static>,
    mode: Arc<StdMutex<Mode>>,
    /// Modes used once each, in order, before `mode`.
    script: Arc<StdMutex<VecDeque<Mode>>>,
    seen: Arc<StdMutex<Seen>>,
    _task: tokio::task::JoinHandle<()>,
}

/// A test CA (DER and PEM), and a leaf for `names` signed by it with its key.
struct TlsMaterial {
    ca: CertificateDer<'static>,
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn tls_material(names: &[&str]) -> TlsMaterial {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "enclave test KMS CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    TlsMaterial {
        ca: ca_cert.der().clone(),
        ca_pem: ca_cert.pem(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

impl StandIn {
    async fn start(mode: Mode) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let TlsMaterial { ca, leaf, key, .. } = tls_material(&["localhost"]);
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let mode = Arc::new(StdMutex::new(mode));
        let script = Arc::new(StdMutex::new(VecDeque::new()));
        let seen = Arc::new(StdMutex::new(Seen::default()));
        let (m, s, sc) = (Arc::clone(&mode), Arc::clone(&seen), Arc::clone(&script));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, m, s, sc) = (
                    acceptor.clone(),
                    Arc::clone(&m),
                    Arc::clone(&s),
                    Arc::clone(&sc),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let (m, s, sc) = (Arc::clone(&m), Arc::clone(&s), Arc::clone(&sc));
                        async move {
                            let mode = sc.lock().unwrap().pop_front();
                            let mode = mode.unwrap_or_else(|| *m.lock().unwrap());
                            answer(req, mode, s).await.ok_or(Dropped)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        StandIn {
            proxy: format!("unix:{}", path.display()).parse().unwrap(),
            _dir: dir,
            ca,
            mode,
            script,
            seen,
            _task: task,
        }
    }

    fn client(&self) -> KmsClient {
        let mut config = KmsConfig::new(self.proxy.clone());
        config.endpoint = Some("localhost:4443".parse().unwrap());
        config.roots = TrustRoots::Only(vec![self.ca.clone()]);
        config.request_timeout = Duration::from_secs(5);
        config.retry = fast_retries();
        KmsClient::new(config, Arc::new(EchoNsm)).unwrap()
    }
}

/// Retries on a test's time scale: 10 ms doubling to 40 ms, within 2 s.
fn fast_retries() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        deadline: Duration::from_secs(2),
    }
}

fn json(status: u16, body: Vec<u8>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", api::CONTENT_TYPE)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn error(kind: KmsErrorKind, message: &str) -> hyper::Response<Full<Bytes>> {
    json(
        kind.http_status(),
        serde_json::to_vec(&KmsErrorBody::new(&kind, message)).unwrap(),
    )
}

/// The answer for `mode`; `None` closes the connection without one.
async fn answer(
    req: hyper::Request<Incoming>,
    mode: Mode,
    seen: Arc<StdMutex<Seen>>,
) -> Option<hyper::Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let header_refs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let received = sigv4::ReceivedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &header_refs,
        body: &body,
    };
    let signature_ok = header("authorization")
        .and_then(|a| sigv4::parse_authorization(&a).ok())
        .is_some_and(|auth| {
            auth.access_key_id == AKID
                && sigv4::verify(&received, &auth, SECRET, "eu-west-2", "kms").is_ok()
        });
    let request: DecryptRequest = serde_json::from_slice(&body).unwrap();
    {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        s.host = header("host");
        s.signature_ok = signature_ok;
        s.token = header("x-amz-security-token");
        s.key_id = request.key_id.clone();
    }
    assert_eq!(
        header("x-amz-target").as_deref(),
        Some("TrentService.Decrypt")
    );
    // The data key was generated under the model id as encryption context; Decrypt names it.
    assert_eq!(
        request
            .encryption_context
            .as_ref()
            .and_then(|c| c.get(sealed_model::ENCRYPTION_CONTEXT_KEY))
            .map(String::as_str),
        Some("digits")
    );
    assert_eq!(header("content-type").as_deref(), Some(api::CONTENT_TYPE));
    let cfr = || {
        let recipient = request.recipient.as_ref().unwrap();
        let public =
            sealed_kms::cms::recipient_public_key_from_spki(&recipient.attestation_document.0)
                .unwrap();
        sealed_kms::cms::build_ciphertext_for_recipient(
            &DATA_KEY,
            &public,
            &[7; 32],
            &mut crate::rng::os_rng(),
        )
        .unwrap()
    };
    let release = |plaintext: Option<SecretBlob>| {
        let response = DecryptResponse {
            key_id: Some(KEY_ARN.into()),
            encryption_algorithm: Some("SYMMETRIC_DEFAULT".into()),
            plaintext,
            ciphertext_for_recipient: Some(Blob(cfr())),
        };
        json(200, serde_json::to_vec(&response).unwrap())
    };
    Some(match mode {
        Mode::Release => release(None),
        Mode::Plaintext => release(Some(SecretBlob::new(DATA_KEY.to_vec()))),
        Mode::Deny => error(
            KmsErrorKind::AccessDenied,
            "The ciphertext refers to a customer master key that does not exist\u{7}, or access is denied",
        ),
        Mode::Throttle => error(KmsErrorKind::Throttling, "Rate exceeded"),
        Mode::InvalidCiphertext => error(KmsErrorKind::InvalidCiphertext, ""),
        Mode::Bare500 => json(500, b"<html>oops</html>".to_vec()),
        Mode::Huge => json(200, vec![b' '; api::MAX_MESSAGE_LEN + 1]),
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::Drop => return None,
        Mode::Internal => error(KmsErrorKind::Internal, "internal error"),
        Mode::Unavailable503 => json(
            503,
            br#"{"__type":"ServiceUnavailable","message":"Service Unavailable"}"#.to_vec(),
        ),
    })
}

fn credentials(token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: AKID.into(),
        secret_access_key: Zeroizing::new(SECRET.into()),
        session_token: token.map(|t| Zeroizing::new(t.into())),
        expires_at: None,
    }
}

async fn data_key(client: &KmsClient, token: Option<&str>) -> Result<DataKey, KmsError> {
    let creds = credentials(token);
    client
        .data_key(DataKeyRequest {
            key_id: KEY_ARN,
            ciphertext_blob: b"blob",
            model_id: "digits",
            credentials: &creds,
            signing_time: SystemTime::now(),
        })
        .await
}

#[tokio::test]
async fn data_key_comes_back_through_tls_sigv4_and_cms() {
    let kms = StandIn::start(Mode::Release).await;
    let client = kms.client();
    let key = data_key(&client, Some(TOKEN)).await.unwrap();
    assert_eq!(*key, DATA_KEY);
    let seen = kms.seen.lock().unwrap();
    assert_eq!(seen.requests, 1);
    // Host carries the port when it is not 443; the region comes from the key ARN.
    assert_eq!(seen.host.as_deref(), Some("localhost:4443"));
    assert!(seen.signature_ok, "SigV4 signature did not verify");
    assert_eq!(seen.token.as_deref(), Some(TOKEN));
    assert_eq!(seen.key_id.as_deref(), Some(KEY_ARN));
}

#[tokio::test]
async fn kms_answers_map_to_stable_codes() {
    let kms = StandIn::start(Mode::Release).await;
    let mut client = kms.client();
    // Retryable answers keep failing here: give up soon.
    client.config.retry.deadline = Duration::from_millis(100);
    let cases = [
        (Mode::Plaintext, ErrorCode::KmsError),
        (Mode::Deny, ErrorCode::ModelAccessDenied),
        (Mode::Throttle, ErrorCode::KmsUnavailable),
        (Mode::InvalidCiphertext, ErrorCode::KmsError),
        (Mode::Bare500, ErrorCode::KmsUnavailable),
        (Mode::Huge, ErrorCode::KmsError),
    ];
    for (mode, code) in cases {
        *kms.mode.lock().unwrap() = mode;
        let err = data_key(&client, None).await.unwrap_err();
        assert_eq!(err.code(), code, "{mode:?}: {err}");
        if mode == Mode::Plaintext {
            assert!(matches!(
                err,
                KmsError::BadResponse(api::RecipientResponseError::PlaintextPresent)
            ));
        }
        if mode == Mode::Deny {
            // AWS's message is passed on, without control characters.
            let text = err.to_string();
            assert!(text.contains("AccessDeniedException") && text.contains("access is denied"));
            assert!(!text.contains('\u{7}'));
        }
    }
}

#[tokio::test]
async fn unreachable_untrusted_or_silent_kms_is_unavailable() {
    // Nothing listens on the proxy socket.
    let dir = tempfile::tempdir().unwrap();
    let mut config = KmsConfig::new(
        format!("unix:{}", dir.path().join("none.sock").display())
            .parse()
            .unwrap(),
    );
    config.region = Some("us-east-1".into());
    config.retry = RetryConfig::none();
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    let err = data_key(&client, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::KmsUnavailable, "{err}");

    // A server whose certificate does not chain to the configured root (here: the web PKI).
    let kms = StandIn::start(Mode::Release).await;
    let mut config = KmsConfig::new(kms.proxy.clone());
    config.endpoint = Some("localhost:4443".parse().unwrap());
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    let err = data_key(&client, None).await.unwrap_err();
    assert!(
        matches!(err, KmsError::Unavailable(ref m) if m.contains("TLS")),
        "{err}"
    );
    // …or a name the certificate does not cover.
    let mut config = KmsConfig::new(kms.proxy.clone());
    config.endpoint = Some("kms.eu-west-2.amazonaws.com".parse().unwrap());
    config.roots = TrustRoots::Only(vec![kms.ca.clone()]);
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    let err = data_key(&client, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::KmsUnavailable, "{err}");
    assert_eq!(kms.seen.lock().unwrap().requests, 0);

    // A server that never answers: the attempt timeout ends each wait, the deadline the retries.
    *kms.mode.lock().unwrap() = Mode::Hang;
    let mut client = kms.client();
    client.config.request_timeout = Duration::from_millis(300);
    client.config.retry.deadline = Duration::from_millis(700);
    let err = data_key(&client, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::KmsUnavailable, "{err}");
    let KmsError::GaveUp { attempts, last, .. } = &err else {
        panic!("{err}")
    };
    assert!(*attempts >= 2, "{err}");
    assert!(
        matches!(**last, KmsError::Unavailable(ref m) if m.contains("did not answer")),
        "{err}"
    );
    // An attempt cut short by the deadline may end before its request reaches the server.
    let requests = kms.seen.lock().unwrap().requests;
    assert!(
        requests >= 2 && requests <= *attempts as usize,
        "{requests} requests, {err}"
    );
}

#[test]
fn region_comes_from_the_arn_or_the_fallback() {
    assert_eq!(region_from_key_id(KEY_ARN), Some("eu-west-2"));
    assert_eq!(
        region_from_key_id("arn:aws-cn:kms:cn-north-1:111122223333:alias/models"),
        Some("cn-north-1")
    );
    assert_eq!(region_from_key_id("alias/models"), None);
    assert_eq!(
        region_from_key_id("0b9e1c52-58c4-4d4c-9a2b-7d1f3a0c9e11"),
        None
    );
    assert_eq!(region_from_key_id("arn:aws:s3:us-east-1:1:bucket"), None);
    assert_eq!(region_from_key_id("arn:aws:kms:US EAST:1:key/x"), None);

    let dir = tempfile::tempdir().unwrap();
    let proxy: Endpoint = format!("unix:{}", dir.path().join("p").display())
        .parse()
        .unwrap();
    let client = KmsClient::new(KmsConfig::new(proxy.clone()), Arc::new(EchoNsm)).unwrap();
    assert!(matches!(
        client.region_for("alias/models"),
        Err(KmsError::NoRegion(_))
    ));
    let mut config = KmsConfig::new(proxy.clone());
    config.region = Some("ap-south-1".into());
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    assert_eq!(client.region_for("alias/models").unwrap(), "ap-south-1");
    assert_eq!(client.region_for(KEY_ARN).unwrap(), "eu-west-2");
    assert_eq!(
        client.endpoint_for("ap-south-1").host_header(),
        "kms.ap-south-1.amazonaws.com"
    );
    assert_eq!(
        client.endpoint_for("cn-north-1").host,
        "kms.cn-north-1.amazonaws.com.cn"
    );

    let mut config = KmsConfig::new(proxy);
    config.region = Some("us-east-1\r\n".into());
    assert!(KmsClient::new(config, Arc::new(EchoNsm)).is_err());
}

#[test]
fn endpoint_flag_parses_host_and_port() {
    let e: KmsEndpoint = "localhost:8443".parse().unwrap();
    assert_eq!((e.host.as_str(), e.port), ("localhost", 8443));
    assert_eq!(e.host_header(), "localhost:8443");
    let e: KmsEndpoint = "KMS.us-east-1.amazonaws.com".parse().unwrap();
    assert_eq!(e.port, 443);
    assert_eq!(e.host_header(), "kms.us-east-1.amazonaws.com");
    for bad in [
        "",
        "https://kms",
        "kms:0",
        "kms:99999",
        "kms/path",
        "a b",
        ":443",
    ] {
        assert!(bad.parse::<KmsEndpoint>().is_err(), "{bad}");
    }
}

#[test]
fn kms_ca_pem_must_hold_a_certificate() {
    let pem = tls_material(&["localhost"]).ca_pem;
    assert!(matches!(roots_from_pem(pem.as_bytes()), Ok(TrustRoots::Only(c)) if c.len() == 1));
    assert!(roots_from_pem(b"not a pem").is_err());
}

/// Records the endpoint each KMS call dials and refuses the connection: what the enclave would do
/// on Nitro, without opening a vsock socket here.
#[derive(Default)]
struct RecordingConnect(StdMutex<Vec<Endpoint>>);

impl https::ProxyConnect for RecordingConnect {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<
        'a,
        Result<
            (sealed_transport::BoxRead, sealed_transport::BoxWrite),
            sealed_transport::TransportError,
        >,
    > {
        self.0.lock().unwrap().push(endpoint.clone());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        Box::pin(async move { Err(sealed_transport::TransportError::Io(refused)) })
    }
}

#[tokio::test]
async fn kms_calls_dial_the_parent_proxy_over_vsock() {
    let proxy: Endpoint = "vsock:3:8000".parse().unwrap();
    assert_eq!(
        proxy,
        Endpoint::Vsock {
            cid: PARENT_CID,
            port: 8000
        }
    );
    let recorder = Arc::new(RecordingConnect::default());
    let mut config = KmsConfig::new(proxy.clone());
    config.connector = recorder.clone();
    config.retry = RetryConfig::none();
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    let err = data_key(&client, None).await.unwrap_err();
    assert_eq!(*recorder.0.lock().unwrap(), vec![proxy]);
    // The operator is told what was dialled and what must run on the parent.
    assert_eq!(err.code(), ErrorCode::KmsUnavailable, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cannot reach the KMS proxy vsock:3:8000"),
        "{text}"
    );
    assert!(
        text.contains("--kms-proxy vsock:any:8000=kms.REGION.amazonaws.com:443"),
        "{text}"
    );
}

#[tokio::test]
async fn unix_proxy_errors_carry_no_vsock_hint() {
    let dir = tempfile::tempdir().unwrap();
    let proxy: Endpoint = format!("unix:{}", dir.path().join("none.sock").display())
        .parse()
        .unwrap();
    let mut config = KmsConfig::new(proxy);
    config.retry = RetryConfig::none();
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    let text = data_key(&client, None).await.unwrap_err().to_string();
    assert!(text.contains("cannot reach the KMS proxy unix:"), "{text}");
    assert!(!text.contains("sealed-host"), "{text}");
}

#[test]
fn a_listening_address_is_refused_as_kms_proxy() {
    let err = KmsClient::new(
        KmsConfig::new("vsock:any:8000".parse().unwrap()),
        Arc::new(EchoNsm),
    )
    .err()
    .unwrap();
    assert!(matches!(err, KmsConfigError::Proxy(_)));
    assert!(
        err.to_string().contains("--kms-proxy vsock:3:8000"),
        "{err}"
    );
    // Another CID is allowed (logged): nothing is dialled until a model is loaded.
    assert!(
        KmsClient::new(
            KmsConfig::new("vsock:2:8000".parse().unwrap()),
            Arc::new(EchoNsm)
        )
        .is_ok()
    );
}

#[tokio::test]
async fn transient_failures_are_retried_until_kms_answers() {
    let kms = StandIn::start(Mode::Release).await;
    let mut client = kms.client();
    client.config.request_timeout = Duration::from_millis(300);
    // Every kind of transient failure once, then KMS answers.
    kms.script.lock().unwrap().extend([
        Mode::Drop,
        Mode::Bare500,
        Mode::Throttle,
        Mode::Internal,
        Mode::Unavailable503,
        Mode::Hang,
    ]);
    let key = data_key(&client, Some(TOKEN)).await.unwrap();
    assert_eq!(*key, DATA_KEY);
    let seen = kms.seen.lock().unwrap();
    assert_eq!(seen.requests, 7);
    // The same signed request each time: still valid at the last attempt.
    assert!(seen.signature_ok);
}

#[tokio::test]
async fn final_answers_are_not_retried() {
    let kms = StandIn::start(Mode::Release).await;
    let client = kms.client();
    let cases = [
        (Mode::Deny, ErrorCode::ModelAccessDenied),
        (Mode::InvalidCiphertext, ErrorCode::KmsError),
        (Mode::Plaintext, ErrorCode::KmsError),
        (Mode::Huge, ErrorCode::KmsError),
    ];
    for (i, (mode, code)) in cases.into_iter().enumerate() {
        // A release queued behind the failure: a retry would succeed, so only no retry fails.
        kms.script.lock().unwrap().extend([mode, Mode::Release]);
        let err = data_key(&client, None).await.unwrap_err();
        assert_eq!(err.code(), code, "{mode:?}: {err}");
        assert!(!matches!(err, KmsError::GaveUp { .. }), "{mode:?}: {err}");
        assert_eq!(
            kms.seen.lock().unwrap().requests,
            i + 1,
            "{mode:?} was retried"
        );
        kms.script.lock().unwrap().clear();
    }
}

#[tokio::test]
async fn a_persistent_failure_gives_up_at_the_deadline_naming_attempts_and_cause() {
    for mode in [Mode::Throttle, Mode::Drop, Mode::Unavailable503] {
        let kms = StandIn::start(mode).await;
        let mut client = kms.client();
        client.config.retry.deadline = Duration::from_millis(200);
        let err = data_key(&client, None).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::KmsUnavailable, "{mode:?}: {err}");
        let KmsError::GaveUp { attempts, .. } = &err else {
            panic!("{mode:?}: {err}")
        };
        assert!(*attempts >= 2, "{mode:?}: {err}");
        let requests = kms.seen.lock().unwrap().requests;
        assert!(
            requests >= 2 && requests <= *attempts as usize,
            "{mode:?}: {requests} requests, {err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "KMS is unavailable: gave up after {attempts} attempts in "
            )),
            "{text}"
        );
        let cause = match mode {
            Mode::Throttle => "ThrottlingException",
            Mode::Drop => "HTTP exchange with KMS failed",
            _ => "HTTP 503, ServiceUnavailable",
        };
        assert!(text.contains(cause), "{text}");
    }
}

/// Dials the real socket and counts the dials.
#[derive(Default)]
struct CountingConnect(std::sync::atomic::AtomicUsize);

impl https::ProxyConnect for CountingConnect {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<
        'a,
        Result<
            (sealed_transport::BoxRead, sealed_transport::BoxWrite),
            sealed_transport::TransportError,
        >,
    > {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(sealed_transport::connect(endpoint))
    }
}

#[tokio::test]
async fn a_refused_certificate_is_final_but_an_absent_proxy_is_retried() {
    let kms = StandIn::start(Mode::Release).await;
    let dials = Arc::new(CountingConnect::default());
    let mut config = KmsConfig::new(kms.proxy.clone());
    config.endpoint = Some("localhost:4443".parse().unwrap());
    config.connector = dials.clone();
    config.retry = fast_retries();
    // The web PKI does not know the stand-in's CA.
    let client = KmsClient::new(config.clone(), Arc::new(EchoNsm)).unwrap();
    let err = data_key(&client, None).await.unwrap_err();
    assert!(
        matches!(err, KmsError::Unavailable(ref m) if m.contains("server was refused")),
        "{err}"
    );
    assert_eq!(dials.0.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Nobody listens on the proxy socket: dialled again until the deadline.
    let dir = tempfile::tempdir().unwrap();
    config.proxy = format!("unix:{}", dir.path().join("none.sock").display())
        .parse()
        .unwrap();
    config.retry.deadline = Duration::from_millis(200);
    let client = KmsClient::new(config, Arc::new(EchoNsm)).unwrap();
    let err = data_key(&client, None).await.unwrap_err();
    let KmsError::GaveUp { attempts, .. } = err else {
        panic!("{err}")
    };
    assert!(attempts >= 2);
    assert_eq!(
        dials.0.load(std::sync::atomic::Ordering::SeqCst),
        1 + attempts as usize
    );
}

#[test]
fn backoff_doubles_to_the_cap_with_jitter_inside_half_to_full() {
    let retry = RetryConfig::default();
    assert_eq!(retry.initial_backoff, Duration::from_millis(100));
    assert_eq!(retry.max_backoff, Duration::from_secs(2));
    assert_eq!(retry.deadline, Duration::from_secs(20));
    let want = [100, 200, 400, 800, 1600, 2000, 2000];
    for (i, ms) in want.into_iter().enumerate() {
        assert_eq!(retry.backoff(i as u32 + 1), Duration::from_millis(ms));
    }
    // Far past any shift width: capped, no overflow.
    assert_eq!(retry.backoff(u32::MAX), Duration::from_secs(2));
    for random in [0, 1, 99, 100, 101, u64::MAX] {
        let d = retry.jittered(3, random);
        assert!(
            d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
            "{d:?}"
        );
    }
    assert_eq!(retry.jittered(3, 0), Duration::from_millis(200));
    assert_eq!(retry.jittered(3, 200), Duration::from_millis(400));

    let dir = tempfile::tempdir().unwrap();
    let proxy: Endpoint = format!("unix:{}", dir.path().join("p").display())
        .parse()
        .unwrap();
    for bad in [
        RetryConfig {
            initial_backoff: Duration::ZERO,
            ..RetryConfig::default()
        },
        RetryConfig {
            max_backoff: Duration::from_millis(50),
            ..RetryConfig::default()
        },
        RetryConfig {
            deadline: Duration::from_secs(301),
            ..RetryConfig::default()
        },
    ] {
        let mut config = KmsConfig::new(proxy.clone());
        config.retry = bad.clone();
        assert!(
            matches!(
                KmsClient::new(config, Arc::new(EchoNsm)),
                Err(KmsConfigError::Retry(_))
            ),
            "{bad:?}"
        );
    }
    RetryConfig::none().validate().unwrap();
}
