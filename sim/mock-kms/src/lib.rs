//! SIMULATION ONLY: a mock AWS KMS that speaks the real wire protocol on loopback, so the enclave's
//! key release, the model owner's `seal-model` CLI (aws-sdk-kms) and the demo run without AWS.
//!
//! What it does:
//! - Serves the KMS JSON 1.1 protocol (`POST /`, `Content-Type: application/x-amz-json-1.1`,
//!   `X-Amz-Target: TrentService.<Op>`) over HTTPS (rustls, HTTP/1.1) on 127.0.0.1, with a TLS
//!   certificate for `localhost`/`127.0.0.1` from its own mock CA ([`tls`]).
//! - Authenticates every request with SigV4 ([`sealed_kms::sigv4::verify`]) against the
//!   configured access keys, each mapped to a principal ARN; a configured session token must be
//!   sent as `X-Amz-Security-Token`; the clock skew limit is AWS's 15 minutes.
//! - Operations: `CreateKey` (with `Policy`), `DescribeKey`, `GetKeyPolicy`, `PutKeyPolicy`,
//!   `Encrypt`, `Decrypt`, `GenerateDataKey`, `GenerateRandom`. With `Recipient`, the attestation
//!   document is verified against the configured root ([`sealed_attestation::verify`]) and the
//!   result is returned only as `CiphertextForRecipient`, in the AWS CMS structure
//!   ([`sealed_kms::cms::build_ciphertext_for_recipient`]) for the document's RSA key.
//! - Enforces key policies ([`policy`]): Allow/Deny, principals, actions, resources, and
//!   `StringEquals[IgnoreCase]` & co. on `kms:RecipientAttestation:ImageSha384` and
//!   `kms:RecipientAttestation:PCR0`…`PCR31`.
//! - Answers errors as AWS does: `{"__type": "AccessDeniedException", "message": …}` with the
//!   type's HTTP status and `x-amzn-ErrorType`; every response has `x-amzn-RequestId`.
//! - Persists keys in one JSON state file (0600), so models sealed earlier open after a restart.
//!
//! What it deliberately does not do: it is no security boundary. Key material sits in the state
//! file in base64; the TLS CA and the attestation root are mocks that nothing trusts unless the
//! operator names them. No IAM: `CreateKey` and `GenerateRandom` (authorised by IAM policies on
//! AWS) are allowed to any authenticated caller, and a key policy naming the account
//! (`arn:aws:iam::ACCOUNT:root`) allows every principal of that account instead of delegating to
//! IAM. No aliases, grants, key rotation, disabling, deletion, asymmetric or HMAC keys, multi-
//! region keys, custom key stores, encryption-context condition keys, or real throttling (it fails
//! only on purpose: [`faults`]).
//!
//! How it differs from AWS on the wire: the `CiphertextBlob` format is its own (AWS's is opaque
//! too; see [`state`]); the CMS `subjectKeyIdentifier` is SHA-256 of the recipient SPKI (what AWS
//! hashes is undocumented); debug-mode attestation documents are accepted (their zero PCRs then
//! fail PCR conditions); documents older than [`Config::max_attestation_age`] are refused; error
//! messages are close to AWS's but not byte-identical.
//!
//! # Layout
//! - [`spawn`] / [`MockKmsHandle`]: bind, generate TLS material, serve until dropped.
//! - [`faults`]: injected faults (delays, 5xx, throttling, dropped connections) for tests.
//! - [`service`]: authentication, dispatch, operations, error replies.
//! - [`policy`]: key-policy parsing and evaluation.
//! - [`state`]: keys, the blob format, the state file.
//! - [`tls`]: the mock TLS CA and server certificate.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod faults;
pub mod policy;
pub mod service;
pub mod state;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use sealed_attestation::TrustAnchor;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::faults::{Fault, FaultControl, FaultRule};
use crate::service::Service;
use crate::state::KeyStore;

/// The only key spec and encryption algorithm of the mock's keys.
pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// The simulated AWS account.
pub const MOCK_ACCOUNT_ID: &str = "111122223333";
/// The simulated region.
pub const MOCK_REGION: &str = "us-east-1";
/// Principal ARN given to credentials configured without one.
pub const DEFAULT_PRINCIPAL_ARN: &str = "arn:aws:iam::111122223333:user/sealed-sim";
/// Largest request body (KMS requests are a few KiB; attestation documents ~5 KiB in base64).
pub const MAX_BODY: usize = sealed_kms::api::MAX_MESSAGE_LEN;
/// Concurrent connections served; more wait for a slot.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection idle (no complete request headers) for this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One access key the mock accepts, and the principal it authenticates as.
#[derive(Clone)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
    pub principal_arn: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("principal_arn", &self.principal_arn)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential; `principal_arn` defaults to [`DEFAULT_PRINCIPAL_ARN`].
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        principal_arn: Option<String>,
    ) -> Credential {
        Credential {
            access_key_id,
            secret_access_key: Zeroizing::new(secret_access_key),
            session_token: session_token.map(Zeroizing::new),
            principal_arn: principal_arn.unwrap_or_else(|| DEFAULT_PRINCIPAL_ARN.to_owned()),
        }
    }
}

#[derive(serde::Deserialize)]
struct CredentialEntry {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    #[serde(default)]
    session_token: Option<Zeroizing<String>>,
    #[serde(default)]
    principal_arn: Option<String>,
}

/// Largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 1024 * 1024;

/// Reads a credentials file: a JSON array of
/// `{"access_key_id", "secret_access_key", "session_token"?, "principal_arn"?}`.
pub fn load_credentials_file(path: &std::path::Path) -> Result<Vec<Credential>, MockKmsError> {
    let bad = |reason: String| MockKmsError::Credentials {
        path: path.to_owned(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_CREDENTIALS_FILE {
        return Err(bad(format!("{len} bytes is too large")));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    // serde_json's errors give positions, not the (secret) input.
    let entries: Vec<CredentialEntry> =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    Ok(entries
        .into_iter()
        .map(|e| Credential {
            access_key_id: e.access_key_id,
            secret_access_key: e.secret_access_key,
            session_token: e.session_token,
            principal_arn: e
                .principal_arn
                .unwrap_or_else(|| DEFAULT_PRINCIPAL_ARN.to_owned()),
        })
        .collect())
}

/// Reads the PEM root that `Recipient` attestation documents must chain to.
pub fn load_attestation_root(path: &std::path::Path) -> Result<TrustAnchor, MockKmsError> {
    let bad = |reason: String| MockKmsError::AttestationRoot {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    TrustAnchor::from_pem(&pem).map_err(|e| bad(e.to_string()))
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; must be a loopback address (this is a simulation tool).
    pub listen: SocketAddr,
    pub state_file: PathBuf,
    pub tls_dir: PathBuf,
    /// Root that `Recipient` attestation documents must chain to; `None` refuses `Recipient`.
    pub attestation_root: Option<TrustAnchor>,
    pub credentials: Vec<Credential>,
    pub region: String,
    pub account_id: String,
    /// Oldest attestation document accepted.
    pub max_attestation_age: Duration,
    /// Faults injected from the start ([`faults`]); change them later through
    /// [`MockKmsHandle::faults`].
    pub faults: Vec<FaultRule>,
}

impl Config {
    /// 127.0.0.1:0, the mock account and region, 5-minute attestation age, no credentials.
    pub fn new(state_file: PathBuf, tls_dir: PathBuf) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_file,
            tls_dir,
            attestation_root: None,
            credentials: Vec::new(),
            region: MOCK_REGION.to_owned(),
            account_id: MOCK_ACCOUNT_ID.to_owned(),
            max_attestation_age: Duration::from_secs(300),
            faults: Vec::new(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockKmsError {
    #[error("refusing to listen on {0}: the mock KMS serves loopback addresses only")]
    NotLoopback(SocketAddr),
    #[error("no credentials configured: give access keys (flags, --credentials or AWS_* env)")]
    NoCredentials,
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("credentials file {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("attestation root {path}: {reason}")]
    AttestationRoot { path: PathBuf, reason: String },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server; dropping it (or [`MockKmsHandle::shutdown`]) stops accepting connections.
pub struct MockKmsHandle {
    pub addr: SocketAddr,
    /// The mock TLS CA certificate (PEM) that clients must trust explicitly.
    pub ca_pem: String,
    /// Path of `kms-ca.pem` in the TLS directory.
    pub ca_file: PathBuf,
    faults: FaultControl,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MockKmsHandle {
    /// `https://localhost:PORT`, the endpoint URL for SDKs.
    pub fn endpoint_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `localhost:PORT`, the Host / server name the enclave uses.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    /// The live fault plan: tests make KMS fail, slow or rude from here ([`faults`]).
    pub fn faults(&self) -> &FaultControl {
        &self.faults
    }

    /// Stops accepting and waits for the accept loop to end (open connections finish alone).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockKmsHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Loads state and TLS material, binds `config.listen` and serves in a background task.
pub async fn spawn(config: Config) -> Result<MockKmsHandle, MockKmsError> {
    if !config.listen.ip().is_loopback() {
        return Err(MockKmsError::NotLoopback(config.listen));
    }
    if config.credentials.is_empty() {
        return Err(MockKmsError::NoCredentials);
    }
    let store = KeyStore::open(&config.state_file)?;
    let material = tls::load_or_generate(&config.tls_dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls::TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(material.chain, material.key)
        .map_err(tls::TlsError::from)?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server_config));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| MockKmsError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| MockKmsError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(%addr, keys = store.len(), "mock KMS listening");
    let faults = FaultControl::new(config.faults);
    if !faults.spec().is_empty() {
        tracing::warn!(plan = %faults.spec(), "fault injection on: requests will fail on purpose");
    }
    let service = Arc::new(Service {
        region: config.region,
        account_id: config.account_id,
        credentials: config.credentials,
        attestation_root: config.attestation_root,
        max_attestation_age: config.max_attestation_age,
        store: Mutex::new(store),
    });
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, acceptor, service, faults.clone(), rx));
    Ok(MockKmsHandle {
        addr,
        ca_pem: material.ca_pem,
        ca_file: config.tls_dir.join(tls::CA_FILE),
        faults,
        shutdown: tx,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    service: Arc<Service>,
    faults: FaultControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let faults = faults.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| {
                let (service, faults) = (service.clone(), faults.clone());
                // An `Err` makes hyper close the connection without answering (`Fault::Drop`).
                async move { serve(&service, &faults, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A request answered by closing the connection ([`Fault::Drop`]).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

async fn serve(
    service: &Service,
    faults: &FaultControl,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let request_id = request_id();
    let (parts, body) = req.into_parts();
    let reply = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            // After the whole request is read: the fault hits a request KMS has received.
            let operation = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| t.strip_prefix("TrentService."))
                .unwrap_or_default();
            let injected = match faults.next(operation) {
                Some(Fault::Drop) => {
                    tracing::info!(%request_id, operation, "injected fault: connection dropped");
                    return Err(Dropped);
                }
                Some(Fault::Delay(d)) => {
                    tracing::info!(%request_id, operation, delay_ms = d.as_millis() as u64, "injected fault: delay");
                    tokio::time::sleep(d).await;
                    None
                }
                Some(fault) => fault.error_reply(),
                None => None,
            };
            if let Some((status, error_type, message)) = injected {
                tracing::info!(%request_id, operation, status, error_type, "injected fault");
                service::Reply {
                    status,
                    error_type: Some(error_type.to_owned()),
                    body: serde_json::to_vec(
                        &serde_json::json!({"__type": error_type, "message": message}),
                    )
                    .unwrap_or_default(),
                }
            } else {
                answer(service, &parts, &body)
            }
        }
        Err(_) => service::Reply {
            status: 413,
            error_type: Some("ValidationException".to_owned()),
            body: br#"{"__type":"ValidationException","message":"request body too large"}"#
                .to_vec(),
        },
    };
    Ok(respond(&request_id, reply))
}

/// Handles a request that gets no injected fault.
fn answer(service: &Service, parts: &http::request::Parts, body: &[u8]) -> service::Reply {
    let headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    service.handle(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &headers,
        body,
        SystemTime::now(),
    )
}

fn respond(request_id: &str, reply: service::Reply) -> Response<Full<Bytes>> {
    if let Some(t) = &reply.error_type {
        tracing::info!(%request_id, status = reply.status, error = %t, "kms error");
    }
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(sealed_kms::api::CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(t) = reply.error_type
        && let Ok(v) = HeaderValue::from_str(&t)
    {
        h.insert("x-amzn-errortype", v);
    }
    resp
}

fn request_id() -> String {
    let mut b = [0u8; 16];
    // A request id needs uniqueness, not secrecy; on RNG failure an all-zero id is harmless.
    let _ = getrandom::fill(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}
