//! The Sealed Inference enclave: the only place where client inputs, outputs and model weights
//! exist in the clear.
//!
//! It attests itself through the NSM (binding its HPKE key and the manifest of loaded models),
//! opens sealed inference requests, runs them on tract, and seals the results so that only the
//! requester can read them. It talks to the host over frames (vsock on Nitro, a Unix socket in
//! simulation) and trusts nothing the host says.
//!
//! What it does not do: parse HTTP, hold TLS for clients, or log payloads. Simulation support (the
//! mock NSM and plaintext model loading) exists only with the `simulation` cargo feature; the
//! default build has no mock code and no flag that could enable it.
//!
//! # Layout
//! - [`nsm`]: the `Nsm` trait, the `/dev/nsm` driver and (simulation) the mock NSM.
//! - [`engine`]: tract behind one module: load, optimise once, bounded worker pool.
//! - [`service`]: one request in, one response out: attestation, sealed inference, model loading.
//! - [`server`]: listener and per-connection multiplexing by request id.
//! - [`rng`]: the OS randomness source.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod engine;
pub mod nsm;
pub mod rng;
pub mod server;
pub mod service;

use std::sync::Arc;

use sealed_transport::Endpoint;

use crate::engine::{Engine, EngineConfig};
use crate::nsm::Nsm;
use crate::service::Service;

/// Everything the enclave needs to start.
pub struct Config {
    pub listen: Endpoint,
    pub engine: EngineConfig,
    pub nsm: Arc<dyn Nsm>,
}

/// Why the enclave could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// Generates the HPKE key pair, binds the listener and serves until cancelled. `on_ready` is called
/// once the listener is bound (the binary prints a line a launcher can wait for).
pub async fn run(config: Config, on_ready: impl FnOnce(&Endpoint)) -> Result<(), StartError> {
    let mut rng = rng::os_rng();
    // Key id 0: one key per enclave boot; a restart attests a new key.
    let key = sealed_crypto::ServerKey::generate(0, &mut rng);
    let engine = Arc::new(Engine::new(config.engine));
    let service = Arc::new(Service::new(config.nsm, key, engine));
    let listener = server::bind(&config.listen)?;
    on_ready(&config.listen);
    server::serve(listener, service).await;
    Ok(())
}
