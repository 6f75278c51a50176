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
//! - [`keyring`]: the HPKE key pairs over time: the current key, retired keys in their overlap.
//! - [`freshness`]: the timestamp window and the replay cache of request ids.
//! - [`model_store`]: sealed-model uploads: header, KMS data key, chunked unsealing, engine load.
//! - [`kms`]: the KMS client: RSA recipient key, attestation, SigV4, HTTPS through the host's
//!   proxy, `CiphertextForRecipient`.
//! - [`server`]: listener and per-connection multiplexing by request id.
//! - [`rng`]: the OS randomness source. [`entropy`]: seeds it from the NSM at startup.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

// `bench-plaintext` turns the sealing off (docs/performance.md): it exists for the simulation
// benchmark only and must never reach a build that talks to a real NSM or KMS.
#[cfg(all(feature = "bench-plaintext", not(feature = "simulation")))]
compile_error!(
    "the `bench-plaintext` feature is for sealed-bench's simulation stack only: it requires \
     `simulation` and must never be in a production enclave build"
);

pub mod engine;
pub mod entropy;
pub mod freshness;
pub mod keyring;
pub mod kms;
pub mod model_store;
pub mod nsm;
pub mod rng;
pub mod server;
pub mod service;

use std::sync::Arc;

use sealed_transport::Endpoint;

use crate::engine::{Engine, EngineConfig};
use crate::freshness::FreshnessConfig;
use crate::keyring::{KeyRing, KeyRingConfig};
use crate::kms::{DataKeySource, KmsClient, KmsConfig};
use crate::model_store::{ModelStore, StoreConfig};
use crate::nsm::Nsm;
use crate::service::Service;

/// Everything the enclave needs to start.
pub struct Config {
    pub listen: Endpoint,
    pub engine: EngineConfig,
    pub nsm: Arc<dyn Nsm>,
    /// KMS access for sealed models; `None` answers every sealed load `KmsNotConfigured`.
    pub kms: Option<KmsConfig>,
    pub store: StoreConfig,
    /// HPKE key rotation schedule (checked with [`KeyRingConfig::validate`] at start).
    pub keys: KeyRingConfig,
    /// Timestamp window and replay cache size for sealed requests.
    pub freshness: FreshnessConfig,
    /// Per-request deadlines and connection bounds of the listener.
    pub limits: server::ServerLimits,
}

/// Why the enclave could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Kms(#[from] kms::KmsConfigError),
    #[error("seeding the kernel random pool from the NSM: {0}")]
    Entropy(#[from] entropy::EntropyError),
    #[error(transparent)]
    Keys(#[from] keyring::KeyRingConfigError),
}

/// [`entropy::seed_kernel_pool`] with the failure policy of this build: an NSM failure always
/// stops the enclave; a pool that cannot be written stops a production build and is only a
/// warning in a simulation build.
fn seed_entropy(nsm: &dyn nsm::Nsm) -> Result<(), entropy::EntropyError> {
    match entropy::seed_kernel_pool(nsm) {
        Ok(bytes) => {
            tracing::info!(bytes, "kernel random pool seeded from the NSM");
            Ok(())
        }
        #[cfg(feature = "simulation")]
        Err(e) if !e.is_nsm() => {
            tracing::warn!(error = %e, "SIMULATION BUILD: kernel random pool not seeded");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// How often idle sealed-model uploads are looked for.
const UPLOAD_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Seeds the kernel pool from the NSM, generates the first HPKE key pair (and rotates keys on
/// schedule from then on), binds the listener and serves until cancelled. `on_ready` is called
/// once the listener is bound (the binary prints a line a launcher can wait for).
pub async fn run(config: Config, on_ready: impl FnOnce(&Endpoint)) -> Result<(), StartError> {
    config.keys.validate()?;
    // Before any key exists (entropy.rs: what is mixed in, and why failure stops the enclave).
    seed_entropy(config.nsm.as_ref())?;
    // A random first key id, so that a restarted enclave is unlikely to reuse the id a client
    // still holds (it would get an opaque failure instead of `unsupported_key_config`).
    let ring = KeyRing::new(config.keys, std::time::Instant::now(), &mut rng::os_rng());
    tracing::info!(
        key_id = ring.current().key_id(),
        rotation_secs = config.keys.rotation.as_secs(),
        overlap_secs = config.keys.overlap.as_secs(),
        "HPKE key generated"
    );
    let engine = Arc::new(Engine::new(config.engine));
    let keys: Option<Arc<dyn DataKeySource>> = match config.kms {
        Some(kms) => {
            tracing::info!(proxy = %kms.proxy, "sealed models enabled: KMS through the host proxy");
            // Starts making the first KMS recipient key (kms/recipient.rs): after
            // `seed_entropy` above, like every key this enclave makes.
            Some(Arc::new(KmsClient::new(kms, Arc::clone(&config.nsm))?))
        }
        None => None,
    };
    let store = ModelStore::new(Arc::clone(&engine), keys, config.store);
    let service = Arc::new(Service::with_keys(
        config.nsm,
        ring,
        config.freshness,
        engine,
        store,
    ));
    let listener = server::bind(&config.listen)?;
    let sweeper = Arc::downgrade(&service);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPLOAD_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let Some(service) = sweeper.upgrade() else {
                return;
            };
            service.model_store().expire_idle(std::time::Instant::now());
        }
    });
    // Rotates keys and drops retired ones on time, also when no request comes to do it.
    let rotator = Arc::downgrade(&service);
    tokio::spawn(async move {
        loop {
            let Some(service) = rotator.upgrade() else {
                return;
            };
            let next = service.maintain_keys();
            drop(service);
            // A few milliseconds late rather than early: `maintain` acts at the deadline or after.
            let wait = next.saturating_duration_since(std::time::Instant::now());
            tokio::time::sleep(wait + std::time::Duration::from_millis(5)).await;
        }
    });
    on_ready(&config.listen);
    server::serve_with_limits(listener, service, config.limits).await;
    Ok(())
}
