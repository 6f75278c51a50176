//! The enclave's KMS client: unwraps a sealed model's data key with `TrentService.Decrypt`, having
//! KMS wrap the answer to a key only this enclave holds (DESIGN.md flow 4, nitro-facts.md §3).
//!
//! Per request: a fresh RSA-2048 key pair ([`recipient`]), an NSM attestation document carrying
//! its DER SubjectPublicKeyInfo as `public_key`, a `Decrypt` body with
//! `Recipient = {AttestationDocument, KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256}`, SigV4-signed
//! (`sealed_kms::sigv4`) with the credentials the host passed in, sent over TLS that ends here,
//! through the host's byte proxy ([`https`]). The answer's `CiphertextForRecipient` (CMS
//! EnvelopedData) is opened with the private key; a response carrying `Plaintext` is refused
//! (`sealed_kms::api::decrypt_response_for_recipient` fails closed).
//!
//! Transient failures (the proxy or KMS unreachable, a broken TLS handshake, a dropped
//! connection, a timeout, HTTP 5xx, `ThrottlingException` and the other retryable KMS errors) are
//! retried with capped exponential backoff and jitter ([`RetryConfig`], as AWS's "Timeouts,
//! retries and backoff with jitter" guidance and the SDKs' standard retry mode do) within an
//! overall deadline, reusing the same recipient key, attestation document and signed request
//! (Decrypt is idempotent). Access denied and every other 4xx answer are final at once. When the
//! deadline runs out the error is `kms_unavailable` naming the attempts and the last cause.
//!
//! What it does not do: choose credentials (the host's, bounded and redacted in `sealed-wire`),
//! trust the host's clock blindly (the model store checks skew before calling), keep connections
//! open, or log anything but key ids, regions, statuses and error kinds.
//!
//! # Layout
//! - [`KmsClient`], [`KmsConfig`], [`KmsEndpoint`]: configuration and the Decrypt call (here).
//! - [`RetryConfig`]: backoff and deadline of the retries.
//! - [`DataKeySource`]: what the model store needs; [`KmsClient`] implements it, tests fake it.
//! - [`KmsError`]: failures with their stable wire codes.
//! - [`recipient`]: the RSA key pair. [`https`]: one POST over TLS over the proxied stream.

pub mod https;
pub mod recipient;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::ServerName;
use sealed_kms::api::{self, Blob, DecryptRequest, KmsErrorBody, KmsErrorKind, Recipient};
use sealed_kms::sigv4::{self, SigningCredentials};
use sealed_transport::Endpoint;
use sealed_wire::{AwsCredentials, ErrorCode};
use zeroize::Zeroizing;

use crate::nsm::{self, Nsm};
use https::{HttpsError, HttpsTarget};

/// A 32-byte AES-256 data key, wiped on drop.
pub type DataKey = Zeroizing<[u8; sealed_model::DATA_KEY_LEN]>;

/// What the model store asks for: the data key in `ciphertext_blob`, released by KMS.
pub struct DataKeyRequest<'a> {
    /// The sealed header's `kms_key_id` (key ARN, alias or key id).
    pub key_id: &'a str,
    /// The sealed header's `encrypted_data_key` (a KMS `CiphertextBlob`).
    pub ciphertext_blob: &'a [u8],
    /// The sealed header's model id: the encryption context the data key was generated under.
    pub model_id: &'a str,
    pub credentials: &'a AwsCredentials,
    /// The SigV4 signing time (the host's, once the store has checked it against our clock).
    pub signing_time: SystemTime,
}

/// A boxed future, so that [`DataKeySource`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where data keys come from: KMS in the enclave, a fake in tests.
pub trait DataKeySource: Send + Sync {
    fn data_key<'a>(
        &'a self,
        request: DataKeyRequest<'a>,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>>;
}

/// Why a data key was not released. Messages carry statuses, AWS error types and AWS's own
/// message (which names keys and principals, never key material).
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("KMS refused access to the data key: {0}")]
    AccessDenied(String),
    #[error("KMS is unavailable: {0}")]
    Unavailable(String),
    #[error(
        "KMS is unavailable: gave up after {attempts} attempt{s} in {elapsed_ms} ms; last error: {cause}",
        s = if *.attempts == 1 { "" } else { "s" },
        cause = .last.cause()
    )]
    GaveUp {
        attempts: u32,
        elapsed_ms: u64,
        last: Box<KmsError>,
    },
    #[error("KMS error: {0}")]
    Service(String),
    #[error("cannot tell the KMS region from key id `{0}`; start the enclave with --kms-region")]
    NoRegion(String),
    #[error("cannot sign the KMS request: {0}")]
    Signing(#[from] sigv4::SigV4Error),
    #[error("KMS response rejected: {0}")]
    BadResponse(#[from] api::RecipientResponseError),
    #[error("the data key released by KMS could not be opened")]
    Unwrap,
    #[error("KMS released a data key of {0} bytes, expected 32")]
    DataKeyLength(usize),
    #[error("NSM attestation for KMS failed: {0}")]
    Attestation(String),
    #[error("internal KMS client error: {0}")]
    Internal(&'static str),
}

impl KmsError {
    /// The message without the "KMS is unavailable" prefix that [`KmsError::GaveUp`] already says.
    fn cause(&self) -> String {
        match self {
            KmsError::Unavailable(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The stable code the host receives (contract: AccessDeniedException → ModelAccessDenied;
    /// network, TLS, 5xx and throttling → KmsUnavailable; everything else KMS says → KmsError).
    pub fn code(&self) -> ErrorCode {
        match self {
            KmsError::AccessDenied(_) => ErrorCode::ModelAccessDenied,
            KmsError::Unavailable(_) | KmsError::GaveUp { .. } => ErrorCode::KmsUnavailable,
            KmsError::Service(_)
            | KmsError::NoRegion(_)
            | KmsError::Signing(_)
            | KmsError::BadResponse(_)
            | KmsError::Unwrap
            | KmsError::DataKeyLength(_) => ErrorCode::KmsError,
            KmsError::Attestation(_) => ErrorCode::AttestationUnavailable,
            KmsError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<HttpsError> for KmsError {
    fn from(e: HttpsError) -> Self {
        match e {
            // A body over our limit is not an outage: KMS (or something posing as it) said
            // something no KMS response says.
            HttpsError::TooLarge { .. } | HttpsError::Request(_) => {
                KmsError::Service(e.to_string())
            }
            _ => KmsError::Unavailable(e.to_string()),
        }
    }
}

/// `HOST[:PORT]` of the KMS endpoint (port 443 when omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsEndpoint {
    pub host: String,
    pub port: u16,
}

/// Why a `--kms-endpoint` was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid KMS endpoint `{0}`: expected HOST[:PORT] (a DNS name, no scheme or path)")]
pub struct EndpointParseError(String);

impl FromStr for KmsEndpoint {
    type Err = EndpointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EndpointParseError(s.chars().take(100).collect());
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (s, 443),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid || port == 0 {
            return Err(bad());
        }
        Ok(KmsEndpoint {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl KmsEndpoint {
    /// The regional endpoint `kms.<region>.<dns suffix>:443` (sdk-c `source/rest.c`; China
    /// regions use `amazonaws.com.cn`).
    pub fn for_region(region: &str) -> KmsEndpoint {
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        KmsEndpoint {
            host: format!("kms.{region}.{suffix}"),
            port: 443,
        }
    }

    /// The `Host` header value: with `:port` only when it is not 443 (RFC 9110 §7.2).
    pub fn host_header(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for KmsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Which TLS roots to trust for KMS.
#[derive(Clone)]
pub enum TrustRoots {
    /// The public web PKI (webpki-roots): the only choice in production builds.
    WebPki,
    /// Exactly these certificates (DER). Simulation builds only (`--kms-ca`), and unit tests.
    #[cfg(any(test, feature = "simulation"))]
    Only(Vec<rustls_pki_types::CertificateDer<'static>>),
}

/// Default first retry delay (`--kms-retry-initial-ms`).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Default longest retry delay (`--kms-retry-max-ms`).
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(2);
/// Default overall deadline of one KMS call, retries included (`--kms-deadline-secs`). Below
/// the host's default 30 s wait for the upload's `Begin`, so the operator gets our clear
/// `kms_unavailable` rather than the host's `timeout`.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(20);
/// Longest deadline accepted: a model load holds an upload slot while it waits.
pub const MAX_RETRY_DEADLINE: Duration = Duration::from_secs(300);

/// How a KMS call is retried. Delays double from `initial_backoff` up to `max_backoff`; each is
/// drawn from [d/2, d] ("equal jitter") so that enclaves restarted together do not retry in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// From the first attempt: no attempt starts, and none runs, past it.
    pub deadline: Duration,
}

impl Default for RetryConfig {
    /// 100 ms doubling to 2 s, within 20 s.
    fn default() -> Self {
        RetryConfig {
            initial_backoff: DEFAULT_RETRY_INITIAL,
            max_backoff: DEFAULT_RETRY_MAX,
            deadline: DEFAULT_RETRY_DEADLINE,
        }
    }
}

/// Why retry settings were refused.
#[derive(Debug, thiserror::Error)]
#[error("KMS retry settings: {0}")]
pub struct RetryConfigError(&'static str);

impl RetryConfig {
    /// No retries: one attempt (tests, and operators who retry themselves).
    pub fn none() -> RetryConfig {
        RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            deadline: Duration::ZERO,
        }
    }

    /// Checks the bounds the flags must respect.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if self.initial_backoff < Duration::from_millis(1) {
            return Err(RetryConfigError("the first delay must be at least 1 ms"));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(RetryConfigError(
                "the longest delay must not be below the first",
            ));
        }
        if self.deadline > MAX_RETRY_DEADLINE {
            return Err(RetryConfigError("the deadline must be at most 300 s"));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 for the first retry), before jitter.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// `backoff` with equal jitter: uniform in [d/2, d] (millisecond steps).
    fn jittered(&self, retry: u32, random: u64) -> Duration {
        let d = u64::try_from(self.backoff(retry).as_millis()).unwrap_or(u64::MAX);
        let half = d / 2;
        let spread = d - half;
        Duration::from_millis(half + random % spread.saturating_add(1))
    }
}

/// KMS settings from the command line.
#[derive(Clone)]
pub struct KmsConfig {
    /// The host's proxy to KMS (`vsock:3:8000` on Nitro).
    pub proxy: Endpoint,
    /// Overrides `kms.<region>.amazonaws.com:443` (the mock KMS in simulation).
    pub endpoint: Option<KmsEndpoint>,
    /// Used when the key id is not an ARN (an alias name or a bare key id).
    pub region: Option<String>,
    pub roots: TrustRoots,
    /// Limit on one attempt's connecting and TLS handshake.
    pub connect_timeout: Duration,
    /// Limit on one attempt (`--kms-attempt-timeout-secs`); the deadline caps it too.
    pub request_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// How the proxy is dialled: [`https::TransportConnect`] except in tests.
    pub connector: Arc<dyn https::ProxyConnect>,
}

/// Default limit on connecting to the proxy plus the TLS handshake, per attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on one attempt (`--kms-attempt-timeout-secs`).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

impl KmsConfig {
    /// Defaults: web PKI roots; per attempt 5 s to connect and handshake, 10 s in all (KMS
    /// answers in milliseconds; a stuck attempt should leave time to retry); [`RetryConfig`]'s
    /// defaults.
    pub fn new(proxy: Endpoint) -> KmsConfig {
        KmsConfig {
            proxy,
            endpoint: None,
            region: None,
            roots: TrustRoots::WebPki,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            retry: RetryConfig::default(),
            connector: Arc::new(https::TransportConnect),
        }
    }
}

/// Why the KMS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KmsConfigError {
    #[error("invalid KMS region `{0}`")]
    Region(String),
    #[error("KMS TLS settings: {0}")]
    Tls(String),
    #[error("KMS CA certificate: {0}")]
    Ca(String),
    #[error("--kms-proxy {0}")]
    Proxy(String),
    #[error(transparent)]
    Retry(#[from] RetryConfigError),
}

/// The parent instance's vsock CID as seen from an enclave (`VMADDR_CID_HOST` is 2 on a
/// hypervisor; on Nitro the parent is always CID 3, nitro-facts.md §5). The host's KMS proxy
/// listens there: `--kms-proxy vsock:3:8000`.
pub const PARENT_CID: u32 = 3;

/// Checks that `--kms-proxy` names something an enclave can dial: `vsock:any:PORT` is a listening
/// address (CID `VMADDR_CID_ANY`), not a peer. Any other vsock CID than [`PARENT_CID`] is allowed
/// but logged, since on Nitro only the parent can run the proxy. Unix sockets are simulation's.
pub fn check_proxy(proxy: &Endpoint) -> Result<(), KmsConfigError> {
    match proxy {
        Endpoint::Vsock { cid, port } if *cid == tokio_vsock::VMADDR_CID_ANY => {
            Err(KmsConfigError::Proxy(format!(
                "vsock:any:{port} is a listening address; the enclave connects to the parent \
                 instance's proxy at CID {PARENT_CID}: --kms-proxy vsock:{PARENT_CID}:{port}"
            )))
        }
        Endpoint::Vsock { cid, port } if *cid != PARENT_CID => {
            tracing::warn!(
                cid,
                port,
                "--kms-proxy is not on the parent instance (CID {PARENT_CID}); KMS calls may not connect"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads a PEM file's certificates as the only KMS trust roots (simulation's `--kms-ca`).
#[cfg(any(test, feature = "simulation"))]
pub fn roots_from_pem(pem: &[u8]) -> Result<TrustRoots, KmsConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KmsConfigError::Ca(e.to_string()))?;
    if certs.is_empty() {
        return Err(KmsConfigError::Ca("no certificate in the file".into()));
    }
    Ok(TrustRoots::Only(certs))
}

/// The KMS client. Cheap to share behind an `Arc`.
pub struct KmsClient {
    config: KmsConfig,
    nsm: Arc<dyn Nsm>,
    tls: Arc<rustls::ClientConfig>,
    /// Recipient keys, one per request, the next made ahead (recipient.rs says why).
    keys: recipient::KeyMaker,
}

/// Region names: `us-east-1`, `cn-north-1`, `us-gov-west-1`…: lowercase letters, digits, dashes.
fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The region of a key or alias ARN: `arn:<partition>:kms:<region>:<account>:<resource>`.
pub fn region_from_key_id(key_id: &str) -> Option<&str> {
    let mut parts = key_id.splitn(6, ':');
    let (arn, _partition, service, region) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (arn == "arn" && service == "kms" && valid_region(region)).then_some(region)
}

impl KmsClient {
    pub fn new(config: KmsConfig, nsm: Arc<dyn Nsm>) -> Result<KmsClient, KmsConfigError> {
        check_proxy(&config.proxy)?;
        config.retry.validate()?;
        if let Some(region) = &config.region
            && !valid_region(region)
        {
            return Err(KmsConfigError::Region(region.clone()));
        }
        let roots = match &config.roots {
            TrustRoots::WebPki => https::web_pki_roots(),
            #[cfg(any(test, feature = "simulation"))]
            TrustRoots::Only(certs) => {
                let mut store = rustls::RootCertStore::empty();
                for cert in certs {
                    store
                        .add(cert.clone())
                        .map_err(|e| KmsConfigError::Ca(e.to_string()))?;
                }
                store
            }
        };
        let tls = https::client_config(roots).map_err(|e| KmsConfigError::Tls(e.to_string()))?;
        Ok(KmsClient {
            config,
            nsm,
            tls: Arc::new(tls),
            keys: recipient::KeyMaker::new(),
        })
    }

    /// The region a key id is used in: from its ARN, else `--kms-region`.
    fn region_for<'a>(&'a self, key_id: &'a str) -> Result<&'a str, KmsError> {
        region_from_key_id(key_id)
            .or(self.config.region.as_deref())
            .ok_or_else(|| KmsError::NoRegion(key_id.chars().take(200).collect()))
    }

    fn endpoint_for(&self, region: &str) -> KmsEndpoint {
        self.config
            .endpoint
            .clone()
            .unwrap_or_else(|| KmsEndpoint::for_region(region))
    }

    /// `TrentService.Decrypt` with a `Recipient`; returns the 32-byte data key.
    async fn decrypt(&self, request: DataKeyRequest<'_>) -> Result<DataKey, KmsError> {
        let region = self.region_for(request.key_id)?;
        let endpoint = self.endpoint_for(region);
        let server_name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| KmsError::Internal("KMS host is not a valid TLS server name"))?;

        // A fresh recipient key and a fresh document for this request (recipient.rs says why).
        let pair = self
            .keys
            .take()
            .await
            .map_err(|_| KmsError::Internal("recipient key generation failed"))?;
        let spki = pair.spki_der().to_vec();
        let nsm = Arc::clone(&self.nsm);
        // sdk-c `aws_attestation_request` sets only `public_key`; KMS reads nothing else.
        let document =
            tokio::task::spawn_blocking(move || nsm::attest(nsm.as_ref(), Some(spki), None, None))
                .await
                .map_err(|_| KmsError::Internal("attestation task failed"))?
                .map_err(|e| KmsError::Attestation(e.to_string()))?;

        let body = serde_json::to_vec(&DecryptRequest {
            ciphertext_blob: Blob(request.ciphertext_blob.to_vec()),
            // Naming the key makes KMS refuse a blob wrapped under another key (IncorrectKeyException).
            key_id: Some(request.key_id.to_owned()),
            // The context the model owner generated the key with (sealed_model::ENCRYPTION_CONTEXT_KEY);
            // KMS refuses the blob under any other (InvalidCiphertextException).
            encryption_context: Some(
                [(
                    sealed_model::ENCRYPTION_CONTEXT_KEY.to_owned(),
                    request.model_id.to_owned(),
                )]
                .into(),
            ),
            recipient: Some(Recipient::new(document)),
            ..Default::default()
        })
        .map_err(|_| KmsError::Internal("Decrypt request encoding failed"))?;
        let credentials = request.credentials;
        let headers = sigv4::sign_kms_request(
            &SigningCredentials {
                access_key_id: &credentials.access_key_id,
                secret_access_key: &credentials.secret_access_key,
                session_token: credentials.session_token.as_ref().map(|t| t.as_str()),
            },
            region,
            &endpoint.host_header(),
            api::Operation::Decrypt.target(),
            &body,
            request.signing_time,
        )?;

        let target = HttpsTarget {
            proxy: self.config.proxy.clone(),
            connector: Arc::clone(&self.config.connector),
            server_name,
            tls: Arc::clone(&self.tls),
            connect_timeout: self.config.connect_timeout,
            request_timeout: self.config.request_timeout,
            max_response_len: api::MAX_MESSAGE_LEN,
        };
        let response = self
            .post_with_retries(&target, &endpoint, &headers, body)
            .await?;
        let enveloped = api::decrypt_response_for_recipient(&response.body)?;
        // RSA-OAEP decryption with blinding, then AES-256-CBC: CPU work, off the reactor.
        let plaintext = tokio::task::spawn_blocking(move || pair.open(&enveloped))
            .await
            .map_err(|_| KmsError::Internal("CMS decryption task failed"))?
            .map_err(|_| KmsError::Unwrap)?;
        let mut key: DataKey = Zeroizing::new([0u8; sealed_model::DATA_KEY_LEN]);
        if plaintext.len() != key.len() {
            return Err(KmsError::DataKeyLength(plaintext.len()));
        }
        key.copy_from_slice(&plaintext);
        Ok(key)
    }
}

/// No retry starts with less time than this before the deadline.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// One attempt's outcome when it produced no 200 answer.
enum Failed {
    /// Another attempt may succeed.
    Transient(KmsError),
    Final(KmsError),
}

impl KmsClient {
    /// POSTs the signed request until KMS answers 200, a final error, or the deadline.
    async fn post_with_retries(
        &self,
        target: &HttpsTarget,
        endpoint: &KmsEndpoint,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<https::HttpsResponse, KmsError> {
        let retry = &self.config.retry;
        let started = Instant::now();
        let deadline = started + retry.deadline;
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            // The first attempt always runs with its own limits; later ones only in the time left.
            let mut attempt = target.clone();
            if attempts > 1 {
                let left = deadline.saturating_duration_since(Instant::now());
                attempt.connect_timeout = attempt.connect_timeout.min(left);
                attempt.request_timeout = attempt.request_timeout.min(left);
            }
            let attempt_started = Instant::now();
            let failed = match https::post(&attempt, headers, body.clone()).await {
                Ok(response) => {
                    tracing::info!(
                        endpoint = %endpoint,
                        status = response.status,
                        attempt = attempts,
                        elapsed_ms = attempt_started.elapsed().as_millis() as u64,
                        "KMS Decrypt answered"
                    );
                    if response.status == 200 {
                        return Ok(response);
                    }
                    let error = service_error(response.status, &response.body);
                    if retryable_status(response.status, &response.body) {
                        Failed::Transient(error)
                    } else {
                        Failed::Final(error)
                    }
                }
                Err(e) if e.is_transient() => Failed::Transient(e.into()),
                Err(e) => Failed::Final(e.into()),
            };
            let error = match failed {
                Failed::Final(e) => return Err(e),
                Failed::Transient(e) => e,
            };
            let mut rng = crate::rng::os_rng();
            let delay = retry.jittered(attempts, rand_core::Rng::next_u64(&mut rng));
            let now = Instant::now();
            // Waiting past the deadline, or retrying with hardly any time left (the attempt would
            // time out and hide the real cause), only delays the answer.
            if now + delay + MIN_ATTEMPT_TIME > deadline {
                let elapsed_ms =
                    u64::try_from(now.duration_since(started).as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(attempts, elapsed_ms, error = %error, "KMS unavailable; giving up");
                return Err(if attempts == 1 && retry.deadline.is_zero() {
                    error
                } else {
                    KmsError::GaveUp {
                        attempts,
                        elapsed_ms,
                        last: Box::new(error),
                    }
                });
            }
            tracing::warn!(
                attempt = attempts,
                retry_in_ms = delay.as_millis() as u64,
                error = %error,
                "KMS call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether an error answer is worth another attempt: 5xx, 429, and the KMS error types AWS
/// documents as retryable (throttling, `KeyUnavailableException`, `DependencyTimeoutException`,
/// `KMSInternalException`). Access denied and every other 4xx are final.
fn retryable_status(status: u16, body: &[u8]) -> bool {
    let kind = serde_json::from_slice::<KmsErrorBody>(body)
        .ok()
        .map(|b| b.kind());
    match kind {
        Some(KmsErrorKind::AccessDenied) => false,
        Some(
            KmsErrorKind::Throttling
            | KmsErrorKind::KeyUnavailable
            | KmsErrorKind::DependencyTimeout
            | KmsErrorKind::Internal,
        ) => true,
        _ => status >= 500 || status == 429,
    }
}

impl DataKeySource for KmsClient {
    fn data_key<'a>(
        &'a self,
        request: DataKeyRequest<'a>,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(self.decrypt(request))
    }
}

/// Longest piece of AWS's error message passed on.
const MAX_KMS_MESSAGE_LEN: usize = 200;

/// Maps a non-200 answer: the awsJson error body (`{"__type", "message"}`) when there is one.
fn service_error(status: u16, body: &[u8]) -> KmsError {
    let parsed: Option<KmsErrorBody> = serde_json::from_slice(body).ok();
    let (kind, message) = match &parsed {
        Some(b) => (Some(b.kind()), b.message.as_deref().unwrap_or("")),
        None => (None, ""),
    };
    // Printable characters only, bounded: it ends up in the host's logs and API answers.
    let message: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_KMS_MESSAGE_LEN)
        .collect();
    let kind_name = kind.as_ref().map_or("no error type", |k| k.as_str());
    let text = if message.is_empty() {
        format!("HTTP {status}, {kind_name}")
    } else {
        format!("HTTP {status}, {kind_name}: {message}")
    };
    match kind {
        Some(KmsErrorKind::AccessDenied) => KmsError::AccessDenied(text),
        Some(
            KmsErrorKind::Throttling
            | KmsErrorKind::KeyUnavailable
            | KmsErrorKind::DependencyTimeout
            | KmsErrorKind::Internal,
        ) => KmsError::Unavailable(text),
        _ if status >= 500 || status == 429 => KmsError::Unavailable(text),
        _ => KmsError::Service(text),
    }
}

#[cfg(test)]
mod tests;
