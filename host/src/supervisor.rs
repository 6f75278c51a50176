//! Enclave supervision and readiness: what `/readyz` answers, when requests fail fast, and the
//! reload of the startup models when an enclave comes back.
//!
//! The supervisor probes the enclave with a `Health` request every `probe_interval` (timeout
//! `probe_timeout`), and at once whenever the number of live connections changes. The enclave is
//! **lost** when every connection is down (counted by the pool even if it reconnects before the
//! next probe: a restarted enclave is a new enclave) or a probe fails; the host then logs one
//! `error` line, sets `sealed_host_enclave_up` to 0, answers `/readyz` 503, and fails requests at
//! once with 503 `enclave_unavailable` instead of letting them wait for the request timeout. It is
//! **back** when a probe succeeds again: the host logs it, counts a restart, and reloads the startup
//! models (`--load-model`, `--models-dir`) that the new enclave lacks before `/readyz` says 200
//! again. A probe refused as `busy` says nothing about the enclave's health and changes nothing.
//!
//! What it does not do: restart the enclave (that is `nitro-cli`'s and the operator's job), retry
//! client requests, or reload models loaded through the admin API (the operator uploads those).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sealed_wire::{EnclaveRequest, EnclaveResponse, HealthStatus, PROTOCOL_VERSION};
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::credentials::CredentialProvider;
use crate::enclave_pool::{EnclavePool, InferAnswer, InferFrame, PoolError};
use crate::metrics::Metrics;
use crate::model_loader::{self, ModelSpec};
use crate::sealed_loader::{self, LoaderConfig};

/// After a failed reload, the next attempt waits this long (a model that fails to load would
/// otherwise be sent to the enclave, and to KMS, every probe).
pub const RELOAD_RETRY: Duration = Duration::from_secs(30);

/// Why `/readyz` answers 503 (its JSON `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    /// Startup (proxies, startup model loads) is not finished.
    Starting,
    /// SIGTERM or SIGINT: draining.
    ShuttingDown,
    /// No connection, or the last health probe failed.
    EnclaveUnavailable,
    /// The enclave answers but says it is not ready, or speaks another protocol version.
    EnclaveNotReady,
    /// The enclave lacks startup models (it restarted); they are being reloaded.
    LoadingModels,
}

/// What the last probe learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// No probe has finished yet.
    Unknown,
    Up {
        ready: bool,
        models_complete: bool,
    },
    Down,
}

/// State shared by the HTTP servers and the supervisor.
pub struct HostState {
    pub pool: Arc<EnclavePool>,
    pub metrics: Metrics,
    startup_done: AtomicBool,
    shutting_down: AtomicBool,
    probe: Mutex<Probe>,
}

impl HostState {
    /// State over `pool`, starting up, with no probe yet.
    pub fn new(pool: Arc<EnclavePool>) -> HostState {
        HostState {
            pool,
            metrics: Metrics::new(),
            startup_done: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            probe: Mutex::new(Probe::Unknown),
        }
    }

    /// Startup loads are done: the host may become ready.
    pub fn mark_started(&self) {
        self.startup_done.store(true, Ordering::SeqCst);
    }

    /// Shutdown began: not ready from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_started(&self) -> bool {
        self.startup_done.load(Ordering::SeqCst)
    }

    fn probe(&self) -> Probe {
        *self.probe.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_probe(&self, probe: Probe) {
        *self.probe.lock().unwrap_or_else(PoisonError::into_inner) = probe;
    }

    /// Ok when the host should receive traffic, else why not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(NotReady::ShuttingDown);
        }
        if !self.is_started() {
            return Err(NotReady::Starting);
        }
        if self.pool.connected() == 0 {
            return Err(NotReady::EnclaveUnavailable);
        }
        match self.probe() {
            Probe::Unknown | Probe::Down => Err(NotReady::EnclaveUnavailable),
            Probe::Up { ready: false, .. } => Err(NotReady::EnclaveNotReady),
            Probe::Up {
                models_complete: false,
                ..
            } => Err(NotReady::LoadingModels),
            Probe::Up { .. } => Ok(()),
        }
    }

    /// One request to the enclave, failing at once with `Unavailable` while the supervisor knows
    /// the enclave is lost (a hung enclave keeps its connections but answers nothing).
    pub async fn call(&self, request: &EnclaveRequest) -> Result<EnclaveResponse, PoolError> {
        if self.probe() == Probe::Down {
            return Err(PoolError::Unavailable);
        }
        self.pool.call(request).await
    }

    /// [`Self::call`] for a request the caller gives up: an inference's sealed bytes go into the
    /// frame without being copied again (docs/performance.md).
    pub async fn call_owned(&self, request: EnclaveRequest) -> Result<EnclaveResponse, PoolError> {
        if self.probe() == Probe::Down {
            return Err(PoolError::Unavailable);
        }
        self.pool.call_owned(request).await
    }

    /// [`Self::call`] for an inference built in place ([`EnclavePool::call_infer`]).
    pub async fn call_infer(&self, frame: InferFrame) -> Result<InferAnswer, PoolError> {
        if self.probe() == Probe::Down {
            return Err(PoolError::Unavailable);
        }
        self.pool.call_infer(frame).await
    }

    /// Sets the gauges that are read from live state rather than counted.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.enclave_in_flight
            .set(i64::try_from(self.pool.in_flight()).unwrap_or(i64::MAX));
        m.enclave_connections_up
            .set(i64::try_from(self.pool.connected()).unwrap_or(i64::MAX));
    }
}

/// The models the host loads at startup and again into a restarted enclave.
#[derive(Clone)]
pub struct StartupModels {
    /// `--load-model`.
    pub plaintext: Vec<ModelSpec>,
    /// `--models-dir` files with the model id each loaded as (known after the startup load).
    pub sealed: Vec<(PathBuf, String)>,
    pub credentials: Arc<CredentialProvider>,
    pub loader: LoaderConfig,
    /// Time one plaintext model load may take.
    pub model_load_timeout: Duration,
}

impl StartupModels {
    /// No startup models.
    pub fn none() -> StartupModels {
        StartupModels {
            plaintext: Vec::new(),
            sealed: Vec::new(),
            credentials: Arc::new(CredentialProvider::none()),
            loader: LoaderConfig::default(),
            model_load_timeout: crate::config::DEFAULT_MODEL_LOAD_TIMEOUT,
        }
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        self.plaintext
            .iter()
            .map(|m| m.model_id.as_str())
            .chain(self.sealed.iter().map(|(_, id)| id.as_str()))
    }
}

/// Probe timing.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Starts the supervisor. `startup` is read whenever a reload is needed, so that the host can
/// fill in the sealed models' ids once the startup load knows them.
pub fn spawn(
    state: Arc<HostState>,
    startup: Arc<Mutex<StartupModels>>,
    probe: ProbeConfig,
) -> JoinHandle<()> {
    tokio::spawn(supervise(state, startup, probe))
}

async fn supervise(state: Arc<HostState>, startup: Arc<Mutex<StartupModels>>, config: ProbeConfig) {
    let mut connected = state.pool.subscribe_connected();
    let mut seen_outages = state.pool.outages();
    // Whether the enclave was lost and has not been seen back yet; `ever_up` tells a first
    // connection from a return.
    let mut lost = false;
    // Whether every connection closed during this loss: the enclave process went away, and what
    // answers next is a new enclave (a restart) rather than the old one recovering.
    let mut closed = false;
    let mut ever_up = false;
    let mut next_reload = Instant::now();
    loop {
        let outages = state.pool.outages();
        if outages != seen_outages {
            seen_outages = outages;
            closed = true;
            if !lost {
                lost = true;
                state.set_probe(Probe::Down);
                state.metrics.enclave_up.set(0);
                error!(
                    "enclave lost: every connection closed; requests fail with 503 \
                     enclave_unavailable until it is back"
                );
            }
        }
        // Read before the probe is sent: a probe already in flight when the startup load finishes
        // may describe the enclave before that load, and must not trigger a second one.
        let started = state.is_started();
        let answer = if state.pool.connected() == 0 {
            Err(PoolError::Unavailable)
        } else {
            state
                .pool
                .call_with_timeout(&EnclaveRequest::Health, config.timeout)
                .await
        };
        match answer {
            Ok(EnclaveResponse::Health(health)) => {
                if ever_up && closed {
                    state.metrics.enclave_restarts.inc();
                    info!(
                        models = health.models.len(),
                        "enclave is back (restarted); reloading the startup models it lacks"
                    );
                } else if ever_up && lost {
                    info!(models = health.models.len(), "enclave answers again");
                } else if !ever_up {
                    info!(models = health.models.len(), "enclave is up");
                }
                lost = false;
                closed = false;
                ever_up = true;
                state.metrics.enclave_up.set(1);
                state
                    .metrics
                    .models_loaded
                    .set(i64::try_from(health.models.len()).unwrap_or(i64::MAX));
                state
                    .metrics
                    .enclave_batched_requests
                    .set(i64::try_from(health.batched_requests).unwrap_or(i64::MAX));
                let ready = health.ready && health.protocol_version == PROTOCOL_VERSION;
                let missing = missing_models(&health, &startup);
                state.set_probe(Probe::Up {
                    ready,
                    models_complete: missing.is_empty(),
                });
                // The answer predates the end of the startup load: probe again at once rather
                // than report the startup models missing until the next interval.
                if !started && state.is_started() {
                    continue;
                }
                // Before the startup load is done, the models are the startup code's business.
                if !missing.is_empty() && started && Instant::now() >= next_reload {
                    let plan = startup
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    if reload(&state, &plan, &missing).await {
                        // Probe again at once: ready as soon as the enclave reports them.
                        continue;
                    }
                    next_reload = Instant::now() + RELOAD_RETRY;
                }
            }
            // The enclave is alive and at capacity: no news about its health.
            Err(PoolError::Busy) => {}
            other => {
                // Before the enclave was ever up it is not lost, only not there yet (startup
                // waits for it and says so if it never comes).
                if !lost && ever_up {
                    lost = true;
                    let reason = match &other {
                        Err(e) => e.to_string(),
                        Ok(_) => "wrong response kind to a health probe".to_string(),
                    };
                    error!(
                        reason = %reason,
                        "enclave lost: health probe failed; requests fail with 503 \
                         enclave_unavailable until it is back"
                    );
                }
                state.set_probe(Probe::Down);
                state.metrics.enclave_up.set(0);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Startup model ids the enclave does not report.
fn missing_models(health: &HealthStatus, startup: &Mutex<StartupModels>) -> Vec<String> {
    let have: HashSet<&str> = health.models.iter().map(|m| m.model_id.as_str()).collect();
    startup
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .ids()
        .filter(|id| !have.contains(id))
        .map(str::to_string)
        .collect()
}

/// Loads the `missing` startup models; true if all loaded.
async fn reload(state: &HostState, plan: &StartupModels, missing: &[String]) -> bool {
    let started = Instant::now();
    let mut ok = true;
    let specs: Vec<ModelSpec> = plan
        .plaintext
        .iter()
        .filter(|m| missing.contains(&m.model_id))
        .cloned()
        .collect();
    if !specs.is_empty() {
        match model_loader::load_models(
            &state.pool,
            "the enclave",
            &specs,
            Duration::from_secs(1),
            plan.model_load_timeout,
        )
        .await
        {
            Ok(loaded) => {
                for model in &loaded {
                    info!(model_id = %model.model_id, sha384 = %hex::encode(&model.sha384), "reloaded model");
                }
            }
            Err(e) => {
                ok = false;
                error!(error = %error_chain(&e), "reloading a startup model failed; retrying later");
            }
        }
    }
    for (path, id) in plan.sealed.iter().filter(|(_, id)| missing.contains(id)) {
        match sealed_loader::load_file(&state.pool, path, &plan.credentials, &plan.loader).await {
            Ok(model) => {
                state.metrics.observe_sealed_load(Ok(()));
                info!(model_id = %model.model_id, sha384 = %hex::encode(&model.sha384), "reloaded sealed model");
            }
            Err(e) => {
                ok = false;
                state.metrics.observe_sealed_load(Err(e.code()));
                error!(model_id = %id, error = e.code().as_str(), detail = %error_chain(&e), "reloading a sealed model failed; retrying later");
            }
        }
    }
    if ok {
        info!(
            models = missing.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "startup models reloaded"
        );
    } else {
        warn!(
            retry_in_secs = RELOAD_RETRY.as_secs(),
            "not ready until the startup models load"
        );
    }
    ok
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
