//! The Sealed Inference host: the untrusted process on the parent instance that serves the client
//! HTTP API and relays sealed bytes to and from the enclave.
//!
//! What it does: accepts HTTP requests, turns each into one host↔enclave message, multiplexes those
//! over a few persistent connections to the enclave (vsock on Nitro, a Unix socket in simulation),
//! and relays the answers; loads plaintext models at startup in simulation; relays sealed models
//! (KMS-wrapped) to the enclave from `--models-dir` or the admin API, with AWS credentials for the
//! enclave's own KMS calls; runs the allowlisted KMS proxy the enclave reaches KMS through; logs
//! ids, sizes, durations and error codes.
//!
//! What it does not do: open or parse sealed payloads (it links `sealed-wire` and
//! `sealed-transport`, never `sealed-crypto` or `sealed-model`, and holds no key that opens client
//! data or a model: KMS releases a model's data key only wrapped for the attested enclave), verify
//! attestation (clients do), retry inference requests, or log bodies, nonces or secrets.
//! The host may drop, delay or reorder messages; the sealed channel makes that all it can do.
//!
//! # Layout
//! - [`config`]: clap [`config::Args`] → [`Config`].
//! - [`enclave_pool`]: [`EnclavePool`], persistent multiplexed connections to the enclave.
//! - [`api`]: the axum router (`/v1/attestation`, `/v1/infer`, `/v1/health`, `/v1/models`).
//! - [`model_loader`]: `--load-model ID=PATH` at startup.
//! - [`sealed_loader`]: streams a sealed model file to the enclave; `--models-dir DIR` at startup.
//! - [`admin`]: the admin router (`POST /v1/admin/models`) on `--admin-listen`.
//! - [`credentials`]: AWS credentials for the enclave (`--aws-credentials imds|env|none`).
//! - [`proxy`]: the allowlisted KMS byte forwarder (`--kms-proxy`, `--proxy-allowlist`).
//! - [`run`] / [`serve`]: start everything and serve until shutdown.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod admin;
pub mod api;
pub mod config;
pub mod credentials;
pub mod enclave_pool;
pub mod model_loader;
pub mod proxy;
pub mod sealed_loader;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use enclave_pool::{EnclavePool, PoolConfig, PoolError};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::credentials::{CredentialProvider, CredentialSourceKind};

/// Why the host stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("startup model loading failed")]
    ModelLoad(#[from] model_loader::ModelLoadError),
    #[error("startup sealed model loading failed")]
    SealedLoad(#[from] sealed_loader::ModelsDirError),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("KMS proxy allowlist")]
    Allowlist(#[from] proxy::AllowlistError),
    #[error("KMS proxy")]
    Proxy(#[from] proxy::ProxyError),
    #[error("AWS credentials")]
    Credentials(#[from] credentials::CredentialsError),
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Checks the allowlist and starts every `--kms-proxy`. Refuses to start any if one remote is not
/// allowlisted, as vsock-proxy refuses at start.
pub async fn start_proxies(config: &Config) -> Result<Vec<proxy::ProxyHandle>, RunError> {
    if config.kms_proxies.is_empty() {
        return Ok(Vec::new());
    }
    let path = config
        .proxy_allowlist
        .as_deref()
        .ok_or(RunError::Config("--kms-proxy needs --proxy-allowlist"))?;
    let allowlist = proxy::Allowlist::load(path).await?;
    for spec in &config.kms_proxies {
        allowlist
            .check(&spec.remote_host, spec.remote_port, &proxy::SystemResolver)
            .await?;
    }
    let mut handles = Vec::with_capacity(config.kms_proxies.len());
    for spec in &config.kms_proxies {
        let handle = proxy::spawn(spec.clone(), config.proxy.clone())?;
        println!("sealed-host kms-proxy {spec}");
        handles.push(handle);
    }
    Ok(handles)
}

/// The credential provider `config` asks for.
pub fn credential_provider(config: &Config) -> Result<CredentialProvider, RunError> {
    if config.imds_endpoint.is_some() && config.aws_credentials != CredentialSourceKind::Imds {
        return Err(RunError::Config(
            "--imds-endpoint is only used with --aws-credentials imds",
        ));
    }
    Ok(match config.aws_credentials {
        CredentialSourceKind::None => CredentialProvider::none(),
        CredentialSourceKind::Env => CredentialProvider::env(),
        CredentialSourceKind::Imds => CredentialProvider::imds(
            config.imds_endpoint.as_deref(),
            config.credentials_refresh_margin,
        )?,
    })
}

/// Runs the host: starts the KMS proxies (after checking the allowlist; each prints
/// `sealed-host kms-proxy SPEC`), starts the enclave pool, loads `--load-model` models and then the
/// sealed models of `--models-dir` (waiting for the enclave), binds the admin listener if asked
/// (`sealed-host admin listening on http://ADDR`), binds the HTTP listener, prints
/// `sealed-host listening on http://ADDR` on stdout last, and serves both until `shutdown`
/// completes; then stops accepting and lets in-flight requests finish.
pub async fn run<F>(config: Config, shutdown: F) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = Box::pin(shutdown);
    // Before the pool starts, so that a bad path is the only thing the operator sees.
    model_loader::check_files(&config.models).await?;
    if config.models_dir.is_some() && config.aws_credentials == CredentialSourceKind::None {
        return Err(RunError::Config(
            "--models-dir needs AWS credentials for KMS: --aws-credentials imds|env",
        ));
    }
    let credentials = Arc::new(credential_provider(&config)?);
    // The proxies first: the enclave needs KMS to open the models loaded below.
    let _proxies = start_proxies(&config).await?;
    let pool = Arc::new(EnclavePool::start(config.pool_config()));
    info!(
        enclave = %config.enclave,
        connections = config.connections,
        request_timeout_ms = config.request_timeout.as_millis() as u64,
        "starting"
    );

    if !config.models.is_empty() {
        let endpoint = config.enclave.to_string();
        let load = model_loader::load_models(
            &pool,
            &endpoint,
            &config.models,
            config.startup_timeout,
            config.model_load_timeout,
        );
        let loaded = tokio::select! {
            loaded = load => loaded?,
            () = &mut shutdown => return Ok(()),
        };
        for model in &loaded {
            println!(
                "sealed-host loaded model {} sha384={}",
                model.model_id,
                hex::encode(&model.sha384)
            );
        }
    }

    if let Some(dir) = &config.models_dir {
        let endpoint = config.enclave.to_string();
        let loader = config.loader_config();
        let load = sealed_loader::load_dir(
            &pool,
            &endpoint,
            dir,
            &credentials,
            config.startup_timeout,
            &loader,
        );
        let loaded = tokio::select! {
            loaded = load => loaded?,
            () = &mut shutdown => return Ok(()),
        };
        for model in &loaded {
            println!(
                "sealed-host loaded sealed model {} sha384={}",
                model.model_id,
                hex::encode(&model.sha384)
            );
        }
    }

    // Both servers stop on the one shutdown signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let admin = match config.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| RunError::Bind { addr, source })?;
            if !bound.ip().is_loopback() {
                warn!(%bound, "the admin API has no authentication; bind it where only operators can reach it");
            }
            info!(addr = %bound, "admin API listening");
            println!("sealed-host admin listening on http://{bound}");
            let router = admin::router(pool.clone(), credentials.clone(), config.loader_config());
            Some(admin::serve(listener, router, stopped()))
        }
        None => None,
    };

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: config.listen,
        source,
    })?;
    info!(%addr, "listening");
    // A launcher reads this line to learn the port when `--listen` used port 0.
    println!("sealed-host listening on http://{addr}");
    // Nothing useful to do if stdout is gone; the log line above says the same.
    let _ = std::io::stdout().flush();

    let signal = tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let main = serve(listener, pool, config.http_timeout, stopped());
    let result = match admin {
        Some(admin) => {
            let admin = async { admin.await.map_err(RunError::Serve) };
            tokio::try_join!(main, admin).map(|_| ())
        }
        None => main.await,
    };
    signal.abort();
    result
}

/// Serves the HTTP API on `listener` until `shutdown` completes (graceful: in-flight requests
/// finish, idle connections close).
pub async fn serve<F>(
    listener: TcpListener,
    pool: Arc<EnclavePool>,
    http_timeout: Duration,
    shutdown: F,
) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, api::router(pool, http_timeout))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(RunError::Serve)?;
    info!("stopped");
    Ok(())
}
