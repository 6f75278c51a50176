//! AWS credentials that the host hands the enclave with each sealed-model load, so that the
//! enclave can sign its own KMS `Decrypt` call. An enclave has no IMDS of its own: the parent
//! passes credentials in (`nitro-facts.md` §5, as AWS's kmstool-instance does).
//!
//! Sources (`--aws-credentials`):
//! - `none` (the default): sealed-model loading is off; a load answers `kms_not_configured`.
//! - `env`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`, read at
//!   each load (so that a rotated value is picked up without a restart).
//! - `imds`: the instance role's temporary credentials from IMDSv2 (session token from
//!   `PUT /latest/api/token`, then `GET /latest/meta-data/iam/security-credentials/[role]`), through
//!   aws-config's IMDS client and credentials provider, at `--imds-endpoint` when given (the mock in
//!   simulation). Cached, and fetched again once they are within the refresh margin (5 min by
//!   default) of their `Expiration`, so that the enclave never signs with credentials that expire
//!   during its KMS call. AWS rotates instance-role credentials well before they expire
//!   (IMDS docs: "at least five minutes before the expiration"), so a fetch inside the margin
//!   returns new ones.
//!
//! What it does not do: log or print a secret access key or session token (the access key id
//! identifies, it does not authenticate, and is logged), or give the host anything that opens a
//! model: KMS releases a data key only wrapped for the attested enclave's key (`Recipient`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::imds;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use sealed_wire::{AwsCredentials, ErrorCode};
use tokio::sync::Mutex;
use tracing::{info, warn};
use zeroize::Zeroizing;

/// Default time before expiry at which cached credentials are fetched again.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Where the host takes AWS credentials from (`--aws-credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialSourceKind {
    /// No credentials: sealed models cannot be loaded.
    None,
    /// The standard AWS_* environment variables.
    Env,
    /// The instance role, from IMDSv2.
    Imds,
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no AWS credentials configured (start the host with --aws-credentials imds|env)")]
    NotConfigured,
    #[error("environment variable {0} is not set or not valid UTF-8")]
    MissingEnv(&'static str),
    #[error("invalid IMDS endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    /// The provider's error chain, which names the failing step and never carries secrets.
    #[error("cannot get instance credentials from IMDS: {0}")]
    Imds(String),
    #[error("the credentials are malformed")]
    Invalid(#[source] sealed_wire::message::MessageError),
}

impl CredentialsError {
    /// The stable code a client of the admin API receives: the host has no KMS credentials to
    /// give (configuration), or cannot get them now (IMDS down: retry later).
    pub fn code(&self) -> ErrorCode {
        match self {
            CredentialsError::NotConfigured
            | CredentialsError::MissingEnv(_)
            | CredentialsError::BadEndpoint { .. }
            | CredentialsError::Invalid(_) => ErrorCode::KmsNotConfigured,
            CredentialsError::Imds(_) => ErrorCode::KmsUnavailable,
        }
    }
}

enum Source {
    None,
    Env,
    Imds(Box<ImdsCredentialsProvider>),
}

/// Hands out current AWS credentials from the configured source. Cheap to share (`Arc`).
pub struct CredentialProvider {
    source: Source,
    refresh_margin: Duration,
    /// Last IMDS credentials; held across a fetch so that concurrent loads fetch once.
    cache: Mutex<Option<AwsCredentials>>,
    fetches: AtomicU64,
}

impl CredentialProvider {
    /// No credentials: every [`Self::get`] fails with [`CredentialsError::NotConfigured`].
    pub fn none() -> CredentialProvider {
        CredentialProvider::with_source(Source::None, DEFAULT_REFRESH_MARGIN)
    }

    /// The AWS_* environment variables, read at each [`Self::get`].
    pub fn env() -> CredentialProvider {
        CredentialProvider::with_source(Source::Env, DEFAULT_REFRESH_MARGIN)
    }

    /// IMDSv2 at `endpoint` (e.g. `http://127.0.0.1:PORT`), or at the standard address
    /// (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`) when `None`.
    /// Credentials are fetched again once they are within `refresh_margin` of expiry.
    pub fn imds(
        endpoint: Option<&str>,
        refresh_margin: Duration,
    ) -> Result<CredentialProvider, CredentialsError> {
        // IMDS is plain HTTP on a link-local (or, in simulation, loopback) address; this client
        // speaks HTTP and, unused here, HTTPS with rustls on ring.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let provider_config = ProviderConfig::without_region().with_http_client(http);
        let mut client = imds::Client::builder().configure(&provider_config);
        if let Some(endpoint) = endpoint {
            client = client
                .endpoint(endpoint)
                .map_err(|e| CredentialsError::BadEndpoint {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let provider = ImdsCredentialsProvider::builder()
            .configure(&provider_config)
            .imds_client(client.build())
            .build();
        Ok(CredentialProvider::with_source(
            Source::Imds(Box::new(provider)),
            refresh_margin,
        ))
    }

    fn with_source(source: Source, refresh_margin: Duration) -> CredentialProvider {
        CredentialProvider {
            source,
            refresh_margin,
            cache: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// Whether a source is configured at all (`--aws-credentials` other than `none`).
    pub fn is_configured(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// How many times credentials were fetched from IMDS (cache misses), for tests and metrics.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Current credentials, valid for at least the refresh margin when they carry an expiry.
    pub async fn get(&self) -> Result<AwsCredentials, CredentialsError> {
        match &self.source {
            Source::None => Err(CredentialsError::NotConfigured),
            Source::Env => from_env(),
            Source::Imds(provider) => {
                let mut cache = self.cache.lock().await;
                if let Some(cached) = cache.as_ref().filter(|c| self.is_fresh(c)) {
                    return Ok(cached.clone());
                }
                let fetched = self.fetch_imds(provider).await?;
                if !self.is_fresh(&fetched) {
                    // Still usable now; the next load will try again.
                    warn!(
                        access_key_id = %fetched.access_key_id,
                        expires_at = ?fetched.expires_at,
                        "IMDS returned credentials that expire within the refresh margin"
                    );
                }
                *cache = Some(fetched.clone());
                Ok(fetched)
            }
        }
    }

    fn is_fresh(&self, credentials: &AwsCredentials) -> bool {
        match credentials.expires_at {
            None => true,
            Some(expires_at) => {
                let refresh_at = expires_at.saturating_sub(self.refresh_margin.as_secs());
                unix_now() < refresh_at
            }
        }
    }

    async fn fetch_imds(
        &self,
        provider: &ImdsCredentialsProvider,
    ) -> Result<AwsCredentials, CredentialsError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = provider.provide_credentials().await.map_err(|e| {
            CredentialsError::Imds(
                aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            )
        })?;
        let credentials = AwsCredentials {
            access_key_id: fetched.access_key_id().to_string(),
            secret_access_key: Zeroizing::new(fetched.secret_access_key().to_string()),
            session_token: fetched
                .session_token()
                .map(|t| Zeroizing::new(t.to_string())),
            expires_at: fetched.expiry().map(unix_secs),
        };
        credentials.validate().map_err(CredentialsError::Invalid)?;
        info!(
            access_key_id = %credentials.access_key_id,
            expires_at = ?credentials.expires_at,
            "fetched instance credentials from IMDS"
        );
        Ok(credentials)
    }
}

fn from_env() -> Result<AwsCredentials, CredentialsError> {
    let var = |name: &'static str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(CredentialsError::MissingEnv(name))
    };
    let credentials = AwsCredentials {
        access_key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: Zeroizing::new(var("AWS_SECRET_ACCESS_KEY")?),
        session_token: var("AWS_SESSION_TOKEN").ok().map(Zeroizing::new),
        expires_at: None,
    };
    credentials.validate().map_err(CredentialsError::Invalid)?;
    Ok(credentials)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn none_refuses_with_a_configuration_code() {
        let p = CredentialProvider::none();
        assert!(!p.is_configured());
        let err = p.get().await.unwrap_err();
        assert!(matches!(err, CredentialsError::NotConfigured));
        assert_eq!(err.code(), ErrorCode::KmsNotConfigured);
    }

    #[test]
    fn freshness_honours_the_refresh_margin() {
        let p = CredentialProvider::with_source(Source::None, Duration::from_secs(300));
        let creds = |expires_at| AwsCredentials {
            access_key_id: "ASIAEXAMPLEEXAMPLE".into(),
            secret_access_key: Zeroizing::new("secret".into()),
            session_token: None,
            expires_at,
        };
        let now = unix_now();
        assert!(p.is_fresh(&creds(None)));
        assert!(p.is_fresh(&creds(Some(now + 3600))));
        // Not yet expired, but inside the margin: must be refreshed.
        assert!(!p.is_fresh(&creds(Some(now + 200))));
        assert!(!p.is_fresh(&creds(Some(now.saturating_sub(1)))));
    }

    #[test]
    fn rejects_a_malformed_imds_endpoint() {
        let err = CredentialProvider::imds(Some("not a url"), DEFAULT_REFRESH_MARGIN)
            .err()
            .unwrap();
        assert!(matches!(err, CredentialsError::BadEndpoint { .. }), "{err}");
    }
}
