//! The model owner's KMS client: an `aws-sdk-kms` client on a rustls-with-ring HTTPS stack, and
//! `GenerateDataKey` with errors a person can act on.
//!
//! What it does: loads the standard AWS configuration with `aws-config` (credentials from the
//! environment variables, the shared `config`/`credentials` files with an optional profile, web
//! identity, ECS, and EC2 IMDSv2; the region from `--region`, the key ARN or that same chain),
//! builds the HTTPS client from `aws-smithy-http-client` with rustls on *ring* (never aws-lc-rs),
//! trusting either the platform's roots or, when a CA bundle is named (`--ca-bundle` or
//! `AWS_CA_BUNDLE`, as in the AWS CLI), that bundle *instead*. It resolves credentials once, up
//! front, so that "no credentials" is reported as such rather than as a failed request.
//!
//! What it does not do: talk plain `http://` (GenerateDataKey returns a plaintext data key, so
//! the endpoint must be HTTPS), or read the profile's `ca_bundle` setting. Credential sources that
//! need optional `aws-config` features (SSO, `credential_process`, console login) are not built in.
//!
//! Key ARNs name their region (`arn:aws:kms:REGION:ACCOUNT:key/ID`); [`region_from_key_arn`] lets
//! the CLI send the request to that region when `--region` is not given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kms::config::Region;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::timeout::TimeoutConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zeroize::{Zeroize, Zeroizing};

use crate::error::sanitize;
use crate::seal::DataKey;

/// Largest CA bundle file read (the Mozilla bundle is about 220 KiB).
pub const MAX_CA_BUNDLE_LEN: u64 = 4 * 1024 * 1024;

/// How long to wait for a TCP + TLS connection to KMS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt of one KMS call, and the whole call with its retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);

/// Longest server-supplied message kept in an error.
const MAX_MESSAGE_CHARS: usize = 512;

/// Where and how to reach KMS. `Default` is "everything from the standard AWS configuration".
#[derive(Default)]
pub struct KmsClientConfig<'a> {
    /// Endpoint URL (`https://host[:port]`), replacing `kms.REGION.amazonaws.com`.
    pub endpoint: Option<&'a str>,
    /// Region; otherwise the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<&'a str>,
    /// PEM bundle of the CAs to trust *instead of* the platform roots.
    pub ca_bundle: Option<&'a Path>,
    /// Profile of the shared config/credentials files (like `--profile` / `AWS_PROFILE`).
    pub profile: Option<&'a str>,
    /// Fixed credentials instead of the standard chain (the simulation and tests).
    pub credentials: Option<Credentials>,
}

/// Why a KMS client could not be built or a KMS call failed. Messages never contain key
/// material or credentials; server text is sanitised and shortened.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("--kms-endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: &'static str },
    #[error("CA bundle {path}: {reason}")]
    CaBundle { path: PathBuf, reason: String },
    #[error(
        "no AWS region: pass --region, use a key ARN (arn:aws:kms:REGION:…), or set AWS_REGION"
    )]
    NoRegion,
    #[error(
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
         AWS_SESSION_TOKEN for temporary credentials), name a profile with --profile or \
         AWS_PROFILE, or run on EC2 with an instance role ({detail})"
    )]
    NoCredentials { detail: String },
    #[error(
        "no usable credentials for profile {profile:?} in the shared AWS files (~/.aws/credentials, \
         ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE): {detail}"
    )]
    ProfileCredentials { profile: String, detail: String },
    #[error("loading AWS credentials failed: {detail}")]
    CredentialsFailed { detail: String },
    #[error("KMS rejected the credentials: {code}: {message}")]
    InvalidCredentials { code: String, message: String },
    #[error(
        "KMS denied access ({code}): {message}; the key policy or IAM policy must allow \
         kms:GenerateDataKey for these credentials"
    )]
    AccessDenied { code: String, message: String },
    #[error("KMS key cannot be used: {code}: {message}")]
    KeyUnusable { code: String, message: String },
    #[error("KMS is unavailable ({code}): {message}; try again later")]
    Unavailable { code: String, message: String },
    #[error("KMS request failed: {code}: {message}")]
    Service { code: String, message: String },
    #[error(
        "cannot reach {endpoint}: {detail} (check --kms-endpoint, the network, and \
         --ca-bundle if the endpoint uses a private CA)"
    )]
    Unreachable { endpoint: String, detail: String },
    #[error("{endpoint} did not answer in time: {detail}")]
    Timeout { endpoint: String, detail: String },
    #[error("KMS answered with a malformed response: {0}")]
    MalformedResponse(String),
    #[error("building the KMS request failed: {0}")]
    Request(String),
}

impl KmsError {
    /// Stable short name of the failure class (for scripts and tests).
    pub fn kind(&self) -> &'static str {
        match self {
            KmsError::InvalidEndpoint { .. } | KmsError::CaBundle { .. } | KmsError::NoRegion => {
                "config"
            }
            KmsError::NoCredentials { .. }
            | KmsError::ProfileCredentials { .. }
            | KmsError::CredentialsFailed { .. }
            | KmsError::InvalidCredentials { .. } => "credentials",
            KmsError::AccessDenied { .. } => "access_denied",
            KmsError::KeyUnusable { .. } => "key_unusable",
            KmsError::Unreachable { .. }
            | KmsError::Timeout { .. }
            | KmsError::Unavailable { .. } => "unreachable",
            KmsError::Service { .. } | KmsError::MalformedResponse(_) | KmsError::Request(_) => {
                "kms_error"
            }
        }
    }
}

/// Builds a KMS client from the standard AWS configuration, with an endpoint, region and CA
/// bundle override. The contract's entry point; see [`sdk_client_with`] for profiles and fixed
/// credentials.
pub async fn sdk_client(
    endpoint: Option<&str>,
    region: Option<&str>,
    ca_bundle: Option<&Path>,
) -> Result<aws_sdk_kms::Client, KmsError> {
    sdk_client_with(KmsClientConfig {
        endpoint,
        region,
        ca_bundle,
        ..KmsClientConfig::default()
    })
    .await
}

/// Builds a KMS client: validates the endpoint and CA bundle, loads the AWS configuration,
/// resolves credentials once (a clear error when there are none), and returns a client that
/// uses those credentials.
pub async fn sdk_client_with(config: KmsClientConfig<'_>) -> Result<aws_sdk_kms::Client, KmsError> {
    let endpoint = config.endpoint.map(check_endpoint).transpose()?;
    let trust_store = match config.ca_bundle {
        Some(path) => TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(read_ca_bundle(path)?),
        None => TrustStore::default(),
    };
    let tls_context = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .map_err(|e| KmsError::Request(format!("TLS configuration: {e}")))?;
    // rustls on *ring*: the SDK's default client would bring aws-lc-rs (a C build) back in.
    let http_client: SharedHttpClient = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(tls_context)
        .build_https();

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client.clone())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(region) = config.region {
        if region.is_empty() {
            return Err(KmsError::NoRegion);
        }
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(profile) = config.profile {
        loader = loader.profile_name(profile);
    }
    let explicit = config.credentials.is_some();
    if let Some(credentials) = config.credentials {
        loader = loader.credentials_provider(credentials);
    }
    let sdk_config = loader.load().await;
    if sdk_config.region().is_none() {
        return Err(KmsError::NoRegion);
    }
    let credentials = match (config.profile, explicit) {
        // A named profile is used as named, as the AWS CLI does: environment credentials do
        // not silently take its place (they come first in the default chain).
        (Some(profile), false) => {
            let provider_config = ProviderConfig::default()
                .with_http_client(http_client)
                .with_region(sdk_config.region().cloned());
            ProfileFileCredentialsProvider::builder()
                .configure(&provider_config)
                .profile_name(profile)
                .build()
                .provide_credentials()
                .await
                .map_err(|e| KmsError::ProfileCredentials {
                    profile: sanitize(profile, 128),
                    detail: error_chain(&e),
                })?
        }
        _ => match sdk_config.credentials_provider() {
            Some(provider) => provider
                .provide_credentials()
                .await
                .map_err(credentials_error)?,
            None => {
                return Err(KmsError::NoCredentials {
                    detail: "no credentials provider configured".into(),
                });
            }
        },
    };

    let mut kms = aws_sdk_kms::config::Builder::from(&sdk_config)
        // One resolution, reused: sealing makes a single call right away.
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(url) = endpoint {
        kms = kms.endpoint_url(url);
    }
    Ok(aws_sdk_kms::Client::from_conf(kms.build()))
}

/// Accepts `https://host[:port][/]` only: KMS returns plaintext keys, so never plain HTTP.
fn check_endpoint(url: &str) -> Result<String, KmsError> {
    let invalid = |reason| KmsError::InvalidEndpoint {
        url: sanitize(url, 200),
        reason,
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
            return Err(invalid(
                "plain http is refused: KMS returns the plaintext data key, use https://",
            ));
        }
        _ => return Err(invalid("expected https://HOST[:PORT]")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(invalid(
            "expected https://HOST[:PORT] with no path, query or user",
        ));
    }
    Ok(format!("https://{authority}"))
}

/// Reads and checks a PEM bundle: at least one certificate, each usable as a trust anchor.
/// (aws-smithy-http-client panics on an unparsable one, so it must be checked here.)
fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, KmsError> {
    use std::io::Read;
    let fail = |reason: String| KmsError::CaBundle {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut pem = Vec::new();
    file.take(MAX_CA_BUNDLE_LEN + 1)
        .read_to_end(&mut pem)
        .map_err(|e| fail(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_BUNDLE_LEN {
        return Err(fail(format!("larger than {MAX_CA_BUNDLE_LEN} bytes")));
    }
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail("contains no PEM CERTIFICATE".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| fail(format!("unusable certificate: {e}")))?;
    }
    Ok(pem)
}

/// An error and its sources on one line (`a: b: c`), each source once, sanitised and shortened.
/// (`DisplayErrorContext` appends the whole `Debug` form, too noisy for a terminal.)
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        // Wrappers often repeat their source's text; keep each piece once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    sanitize(&parts.join(": "), MAX_MESSAGE_CHARS)
}

fn credentials_error(e: CredentialsError) -> KmsError {
    let detail = error_chain(&e);
    match e {
        CredentialsError::CredentialsNotLoaded(_) => KmsError::NoCredentials { detail },
        _ => KmsError::CredentialsFailed { detail },
    }
}

/// The region of a KMS key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/…` or `…:alias/…`).
pub fn region_from_key_arn(key_id: &str) -> Option<&str> {
    let mut parts = key_id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_partition), Some("kms"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

/// `GenerateDataKey` with `KeySpec = AES_256` (AWS KMS API Reference, GenerateDataKey): the
/// plaintext key moves straight into a zeroizing [`DataKey`] with the `CiphertextBlob` and the
/// key ARN KMS reports.
pub async fn generate_data_key(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    model_id: &str,
) -> Result<DataKey, KmsError> {
    let endpoint = endpoint_label(client);
    let output = client
        .generate_data_key()
        .key_id(key_id)
        .key_spec(DataKeySpec::Aes256)
        // The enclave unwraps with the same context (sealed_model::ENCRYPTION_CONTEXT_KEY).
        .encryption_context(sealed_model::ENCRYPTION_CONTEXT_KEY, model_id)
        .send()
        .await
        .map_err(|e| sdk_error(e, &endpoint))?;
    let mut plaintext = output
        .plaintext
        .map(|b| Zeroizing::new(b.into_inner()))
        .ok_or_else(|| KmsError::MalformedResponse("no Plaintext in the response".into()))?;
    let mut key = Zeroizing::new([0u8; sealed_model::DATA_KEY_LEN]);
    if plaintext.len() != key.len() {
        plaintext.zeroize();
        return Err(KmsError::MalformedResponse(format!(
            "Plaintext is {} bytes, expected {} for AES_256",
            plaintext.len(),
            key.len()
        )));
    }
    key.copy_from_slice(&plaintext);
    drop(plaintext);
    let blob = output
        .ciphertext_blob
        .map(|b| b.into_inner())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| KmsError::MalformedResponse("no CiphertextBlob in the response".into()))?;
    if blob.len() > sealed_model::MAX_ENCRYPTED_DATA_KEY_LEN {
        return Err(KmsError::MalformedResponse(format!(
            "CiphertextBlob of {} bytes exceeds {}",
            blob.len(),
            sealed_model::MAX_ENCRYPTED_DATA_KEY_LEN
        )));
    }
    // KMS reports the key ARN; fall back to what the caller named (an alias, say).
    let key_arn = output
        .key_id
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| key_id.to_string());
    if key_arn.len() > sealed_model::MAX_KMS_KEY_ID_LEN {
        return Err(KmsError::MalformedResponse("KeyId too long".into()));
    }
    Ok(DataKey::new(key, blob, key_arn))
}

fn endpoint_label(client: &aws_sdk_kms::Client) -> String {
    // The endpoint URL itself is not readable back from the SDK config; the connector error in
    // the detail names the address.
    match client.config().region() {
        Some(region) => format!("the KMS endpoint of {region}"),
        None => "the KMS endpoint".to_string(),
    }
}

fn sdk_error<E, R>(e: SdkError<E, R>, endpoint: &str) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = || error_chain(&e);
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            classify_service_error(err.code(), err.message())
        }
        SdkError::TimeoutError(_) => KmsError::Timeout {
            endpoint: endpoint.to_string(),
            detail: detail(),
        },
        SdkError::DispatchFailure(failure) if failure.is_timeout() => KmsError::Timeout {
            endpoint: endpoint.to_string(),
            detail: detail(),
        },
        SdkError::DispatchFailure(failure) if failure.is_user() => KmsError::Request(detail()),
        SdkError::DispatchFailure(_) => KmsError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: detail(),
        },
        SdkError::ResponseError(_) => KmsError::MalformedResponse(detail()),
        _ => KmsError::Request(detail()),
    }
}

/// Maps a KMS error code (the `__type` of the JSON error body, AWS KMS API Reference "Common
/// Errors" and the GenerateDataKey errors) to what the user has to fix.
pub fn classify_service_error(code: Option<&str>, message: Option<&str>) -> KmsError {
    let code = sanitize(code.unwrap_or("UnknownError"), 128);
    let message = sanitize(message.unwrap_or("(no message)"), MAX_MESSAGE_CHARS);
    match code.as_str() {
        "AccessDeniedException" => KmsError::AccessDenied { code, message },
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "IncompleteSignatureException"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId" => KmsError::InvalidCredentials { code, message },
        "NotFoundException"
        | "DisabledException"
        | "InvalidKeyUsageException"
        | "KMSInvalidStateException"
        | "KeyUnavailableException"
        | "InvalidArnException" => KmsError::KeyUnusable { code, message },
        "DependencyTimeoutException"
        | "KMSInternalException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "ThrottlingException"
        | "LimitExceededException" => KmsError::Unavailable { code, message },
        _ => KmsError::Service { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_must_be_https_host_port() {
        assert_eq!(
            check_endpoint("https://127.0.0.1:8443/").unwrap(),
            "https://127.0.0.1:8443"
        );
        assert_eq!(
            check_endpoint("HTTPS://kms.eu-west-1.amazonaws.com").unwrap(),
            "https://kms.eu-west-1.amazonaws.com"
        );
        let e = check_endpoint("http://127.0.0.1:8443").unwrap_err();
        assert!(e.to_string().contains("plain http is refused"), "{e}");
        for bad in [
            "127.0.0.1:8443",
            "https://",
            "https://h/path",
            "https://u@h",
            "ftp://h",
            "https://h\n",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_arn_names_its_region() {
        assert_eq!(
            region_from_key_arn(
                "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
            Some("us-east-1")
        );
        assert_eq!(
            region_from_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:alias/models"),
            Some("cn-north-1")
        );
        assert_eq!(
            region_from_key_arn("1234abcd-12ab-34cd-56ef-1234567890ab"),
            None
        );
        assert_eq!(region_from_key_arn("alias/models"), None);
        assert_eq!(region_from_key_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(region_from_key_arn("arn:aws:kms::1:key/x"), None);
    }

    #[test]
    fn service_errors_map_to_what_the_user_must_fix() {
        let e = classify_service_error(Some("AccessDeniedException"), Some("not allowed"));
        assert_eq!(e.kind(), "access_denied");
        assert!(e.to_string().contains("kms:GenerateDataKey"), "{e}");
        assert!(e.to_string().contains("not allowed"), "{e}");
        for code in [
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
        ] {
            assert_eq!(
                classify_service_error(Some(code), None).kind(),
                "credentials"
            );
        }
        for code in [
            "NotFoundException",
            "DisabledException",
            "InvalidKeyUsageException",
        ] {
            assert_eq!(
                classify_service_error(Some(code), None).kind(),
                "key_unusable"
            );
        }
        assert_eq!(
            classify_service_error(Some("ThrottlingException"), None).kind(),
            "unreachable"
        );
        assert_eq!(classify_service_error(None, None).kind(), "kms_error");
    }

    #[test]
    fn server_text_in_errors_is_sanitised() {
        let e = classify_service_error(Some("Weird\u{1b}[31m"), Some("line\nbreak\u{7}"));
        let text = e.to_string();
        assert!(!text.contains('\u{1b}') && !text.contains('\n'), "{text:?}");
    }

    #[test]
    fn ca_bundle_must_hold_usable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_ca_bundle(&missing).unwrap_err();
        assert_eq!(e.kind(), "config");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"no certificates here\n").unwrap();
        assert!(
            read_ca_bundle(&empty)
                .unwrap_err()
                .to_string()
                .contains("no PEM CERTIFICATE")
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca_bundle(&junk).is_err());
    }
}
