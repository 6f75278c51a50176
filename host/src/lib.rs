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
//! - [`config`]: clap [`config::Args`], `SEALED_HOST_*` and the TOML file → [`Config`].
//! - [`enclave_pool`]: [`EnclavePool`], persistent multiplexed connections to the enclave.
//! - [`api`]: the axum router (`/v1/attestation`, `/v1/infer`, `/v1/health`, `/v1/models`,
//!   `/livez`, `/readyz`) and the metrics listener's (`/metrics`, `/livez`, `/readyz`).
//! - [`supervisor`]: [`supervisor::HostState`] (readiness, fail-fast) and the enclave health probe
//!   that detects a lost enclave and reloads the startup models when it is back.
//! - [`limits`]: [`limits::HttpLimits`] (connections, in flight, header size and time, idle) and
//!   the hyper accept loop that enforces them.
//! - [`metrics`]: the Prometheus metrics (`sealed_host_*`).
//! - [`model_loader`]: `--load-model ID=PATH` at startup.
//! - [`sealed_loader`]: streams a sealed model file to the enclave; `--models-dir DIR` at startup.
//! - [`admin`]: the admin router (`POST /v1/admin/models`) on `--admin-listen`.
//! - [`credentials`]: AWS credentials for the enclave (`--aws-credentials imds|env|none`).
//! - [`proxy`]: the allowlisted KMS byte forwarder (`--kms-proxy`, `--proxy-allowlist`).
//! - [`run`] / [`serve`]: start everything and serve until shutdown, then drain.
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
pub mod limits;
pub mod metrics;
pub mod model_loader;
pub mod proxy;
pub mod sealed_loader;
pub mod supervisor;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::Config;
pub use enclave_pool::{EnclavePool, InferAnswer, InferFrame, PoolConfig, PoolError};
pub use limits::HttpLimits;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::credentials::{CredentialProvider, CredentialSourceKind};
use crate::supervisor::{HostState, ProbeConfig, StartupModels};

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

/// Aborts a background task when dropped, so that no task outlives [`run`].
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `addr` for a server, mapping the error.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), RunError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| RunError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Runs the host: starts the KMS proxies (after checking the allowlist; each prints
/// `sealed-host kms-proxy SPEC`), starts the enclave pool and its supervisor, binds the metrics
/// listener if asked (`sealed-host metrics listening on http://ADDR`; `/readyz` there says
/// `starting` until the startup loads are done), loads `--load-model` models and then the sealed
/// models of `--models-dir` (waiting for the enclave), binds the admin listener if asked
/// (`sealed-host admin listening on http://ADDR`), binds the HTTP listener, prints
/// `sealed-host listening on http://ADDR` on stdout last, and serves until `shutdown` completes.
///
/// On `shutdown`: `/readyz` turns 503 at once, the API and admin listeners stop accepting, and
/// in-flight requests get up to `shutdown_grace` to finish; then `run` returns (the metrics
/// listener serves until then, so that the drain can be watched).
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
    let host = Arc::new(HostState::new(pool.clone()));
    let startup = Arc::new(Mutex::new(StartupModels {
        plaintext: config.models.clone(),
        sealed: Vec::new(),
        credentials: credentials.clone(),
        loader: config.loader_config(),
        model_load_timeout: config.model_load_timeout,
    }));
    let _supervisor = AbortOnDrop(supervisor::spawn(
        host.clone(),
        startup.clone(),
        ProbeConfig {
            interval: config.probe_interval,
            timeout: config.probe_timeout,
        },
    ));
    info!(
        enclave = %config.enclave,
        connections = config.connections,
        request_timeout_ms = config.request_timeout.as_millis() as u64,
        "starting"
    );

    let _metrics = match config.metrics_listen {
        Some(addr) => {
            let (listener, bound) = bind(addr).await?;
            info!(addr = %bound, "metrics listening");
            println!("sealed-host metrics listening on http://{bound}");
            let router = api::metrics_router(host.clone());
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    warn!(error = %e, "metrics server failed");
                }
            })))
        }
        None => None,
    };

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
            loaded = load => loaded,
            () = &mut shutdown => return Ok(()),
        };
        let loaded = loaded.inspect_err(|e| host.metrics.observe_sealed_load(Err(e.code())))?;
        let mut sealed = Vec::with_capacity(loaded.len());
        for (path, model) in loaded {
            host.metrics.observe_sealed_load(Ok(()));
            println!(
                "sealed-host loaded sealed model {} sha384={}",
                model.model_id,
                hex::encode(&model.sha384)
            );
            sealed.push((path, model.model_id));
        }
        startup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sealed = sealed;
    }
    host.mark_started();

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
            let (listener, bound) = bind(addr).await?;
            if !bound.ip().is_loopback() {
                warn!(%bound, "the admin API has no authentication; bind it where only operators can reach it");
            }
            info!(addr = %bound, "admin API listening");
            println!("sealed-host admin listening on http://{bound}");
            let router = admin::router_with_metrics(
                host.clone(),
                credentials.clone(),
                config.loader_config(),
            );
            Some(admin::serve(listener, router, stopped()))
        }
        None => None,
    };

    let (listener, addr) = bind(config.listen).await?;
    info!(%addr, "listening");
    // A launcher reads this line to learn the port when `--listen` used port 0.
    println!("sealed-host listening on http://{addr}");
    // Nothing useful to do if stdout is gone; the log line above says the same.
    let _ = std::io::stdout().flush();

    let grace = config.shutdown_grace;
    let signal = AbortOnDrop(tokio::spawn({
        let host = host.clone();
        async move {
            shutdown.await;
            // Not ready before the listeners close, so that a balancer polling /readyz on the
            // metrics listener sees the drain.
            host.begin_shutdown();
            info!(
                in_flight = host.metrics.http_in_flight.get(),
                grace_secs = grace.as_secs(),
                "draining: no new connections; waiting for in-flight requests"
            );
            stop_tx.send_replace(true);
        }
    }));
    let main = serve_state(
        listener,
        host.clone(),
        config.http_timeout,
        config.limits,
        stopped(),
    );
    let servers = async {
        match admin {
            Some(admin) => {
                let admin = async { admin.await.map_err(RunError::Serve) };
                tokio::try_join!(main, admin).map(|_| ())
            }
            None => main.await,
        }
    };
    let deadline = {
        let stopped = stopped();
        async move {
            stopped.await;
            tokio::time::sleep(grace).await;
        }
    };
    let result = tokio::select! {
        result = servers => result,
        () = deadline => {
            warn!(
                in_flight = host.metrics.http_in_flight.get(),
                grace_secs = grace.as_secs(),
                "shutdown grace expired; exiting with requests in flight"
            );
            Ok(())
        }
    };
    drop(signal);
    if result.is_ok() {
        info!("stopped");
    }
    result
}

/// Serves the HTTP API on `listener` over `pool` until `shutdown` completes (graceful: in-flight
/// requests finish, idle connections close), with the default [`HttpLimits`]. The bare API, as
/// tests use it: no supervisor, so nothing but clients talks to the enclave, and `/readyz`
/// answers 503 `enclave_unavailable` (use [`supervisor::spawn`] and [`serve_state`] for the full
/// behaviour).
pub async fn serve<F>(
    listener: TcpListener,
    pool: Arc<EnclavePool>,
    http_timeout: Duration,
    shutdown: F,
) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with_limits(
        listener,
        pool,
        http_timeout,
        HttpLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve`] under `limits`.
pub async fn serve_with_limits<F>(
    listener: TcpListener,
    pool: Arc<EnclavePool>,
    http_timeout: Duration,
    limits: HttpLimits,
    shutdown: F,
) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let host = Arc::new(HostState::new(pool));
    host.mark_started();
    serve_state(listener, host, http_timeout, limits, shutdown).await
}

/// Serves the HTTP API over `host` on `listener` under `limits` until `shutdown` completes.
/// `http_timeout` bounds each whole request, body transfer included.
pub async fn serve_state<F>(
    listener: TcpListener,
    host: Arc<HostState>,
    http_timeout: Duration,
    limits: HttpLimits,
    shutdown: F,
) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let router = api::router_with_limits(host.clone(), http_timeout, &limits);
    limits::serve_http(listener, router, host, http_timeout, limits, shutdown)
        .await
        .map_err(RunError::Serve)
}
