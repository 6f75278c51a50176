//! The Sealed Inference host: the untrusted process on the parent instance that serves the client
//! HTTP API and relays sealed bytes to and from the enclave.
//!
//! What it does: accepts HTTP requests, turns each into one host↔enclave message, multiplexes those
//! over a few persistent connections to the enclave (vsock on Nitro, a Unix socket in simulation),
//! and relays the answers; loads plaintext models at startup in simulation; logs ids, sizes,
//! durations and error codes.
//!
//! What it does not do: open or parse sealed payloads (it links `sealed-wire` and
//! `sealed-transport` only, never `sealed-crypto`, and holds no key that opens client data or a
//! model), verify attestation (clients do), retry inference requests, or log bodies and nonces.
//! The host may drop, delay or reorder messages; the sealed channel makes that all it can do.
//!
//! # Layout
//! - [`config`]: clap [`config::Args`] → [`Config`].
//! - [`enclave_pool`]: [`EnclavePool`], persistent multiplexed connections to the enclave.
//! - [`api`]: the axum router (`/v1/attestation`, `/v1/infer`, `/v1/health`, `/v1/models`).
//! - [`model_loader`]: `--load-model ID=PATH` at startup.
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

pub mod api;
pub mod config;
pub mod enclave_pool;
pub mod model_loader;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use enclave_pool::{EnclavePool, PoolConfig, PoolError};
use tokio::net::TcpListener;
use tracing::info;

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
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Runs the host: starts the enclave pool, loads `--load-model` models (waiting for the enclave),
/// binds the HTTP listener, prints `sealed-host listening on http://ADDR` on stdout, and serves until
/// `shutdown` completes; then stops accepting and lets in-flight requests finish.
pub async fn run<F>(config: Config, shutdown: F) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = Box::pin(shutdown);
    // Before the pool starts, so that a bad path is the only thing the operator sees.
    model_loader::check_files(&config.models).await?;
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

    serve(listener, pool, config.http_timeout, shutdown).await
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
