//! The sealed-model store: uploads of sealed models (SIMODEL1, `sealed-model`) from the host,
//! unsealed inside the enclave and handed to the engine (DESIGN.md flows 3 and 4).
//!
//! An upload is three kinds of request. `Begin` carries the exact file prefix and the host's AWS
//! credentials: the header is parsed and bounded, the data key is released by KMS to this
//! enclave ([`crate::kms`]) and a [`PipelinedOpener`] is set up: one zeroizing buffer sized to
//! the plaintext, owned by a thread that computes its SHA-384 as chunks come in. Each `Chunk`
//! carries the next sealed bytes, split however the host likes; they are cut at the chunk
//! boundaries the authenticated header defines and every chunk is authenticated and decrypted as
//! it completes (on a blocking thread, so inference keeps running), then handed to the hash
//! thread. `End` checks that every byte arrived, loads the plaintext into tract while the hash
//! thread finishes (the digest is computed once, and off the critical path), and publishes the
//! model (manifest, attestation) only once the SHA-384 matches the header's; on a mismatch the
//! plan is dropped and nothing is loaded. The plaintext is wiped once the plan is built or the
//! load failed.
//!
//! Running tract on bytes whose digest is not yet confirmed changes nothing for trust: every
//! byte has passed its AES-GCM tag under the data key KMS released to this enclave, so tract sees
//! only what the key holder sealed, exactly as it would with a matching digest.
//!
//! Bounded: at most [`StoreConfig::max_uploads`] uploads at once, their plaintext together within
//! [`StoreConfig::max_model_bytes`], one upload per model id, and uploads idle for
//! [`StoreConfig::idle_timeout`] are dropped ([`ModelStore::expire_idle`]). Any failure ends that
//! upload only, wiping what it held; loaded models keep serving.
//!
//! The host must send an upload's chunks one at a time, waiting for each answer: a chunk carries
//! no offset, so two in flight could be applied in either order (the AEAD would then fail the
//! upload, never accept the wrong bytes).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sealed_model::{ModelFormatError, PipelinedOpener, SealedModelHeader, parse_header};
use sealed_wire::{AwsCredentials, ErrorCode, ModelInfo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::{Engine, EngineError};
use crate::kms::{DataKeyRequest, DataKeySource, KmsError};

/// Upload limits.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Plaintext bytes that uploads in progress may hold together; also the largest single model
    /// (which the engine further caps at `sealed_wire::limits::MAX_MODEL_LEN`).
    pub max_model_bytes: u64,
    /// Uploads in progress at once (each holds a KMS call or a plaintext buffer).
    pub max_uploads: usize,
    /// An upload with no request for this long is dropped.
    pub idle_timeout: Duration,
    /// Largest difference between the host's time and ours that we sign KMS requests with.
    pub max_clock_skew: Duration,
}

/// Default `--max-model-bytes`: 1 GiB of plaintext across uploads in progress.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `--max-clock-skew-secs`: how far the host's time may be from ours (docs/time.md).
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;
/// Largest `--max-clock-skew-secs`: AWS itself refuses SigV4 requests dated more than 15 minutes
/// from its clock (`sealed_kms::sigv4::MAX_CLOCK_SKEW`), so a wider bound only lets the host pick
/// times KMS will reject anyway.
pub const MAX_CLOCK_SKEW_SECS: u64 = 15 * 60;
const _: () = assert!(DEFAULT_MAX_CLOCK_SKEW_SECS <= MAX_CLOCK_SKEW_SECS);
/// Default uploads in progress.
pub const DEFAULT_MAX_UPLOADS: usize = 4;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            max_uploads: DEFAULT_MAX_UPLOADS,
            idle_timeout: Duration::from_secs(120),
            // AWS accepts ±15 min (SigV4); 5 min keeps a host from choosing a stale time while
            // leaving room for the enclave clock's drift (docs/time.md).
            max_clock_skew: Duration::from_secs(DEFAULT_MAX_CLOCK_SKEW_SECS),
        }
    }
}

/// Why an upload request failed. Messages carry ids, sizes and stages, never key material or
/// model bytes. Each maps to a stable wire code ([`StoreError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this enclave was started without --kms-proxy, so it cannot load sealed models")]
    KmsNotConfigured,
    #[error("sealed model rejected: {0}")]
    Format(ModelFormatError),
    #[error(
        "the Begin header must be exactly the sealed-file prefix ({expected} bytes), got {got}"
    )]
    HeaderLength { expected: usize, got: usize },
    #[error("model of {len} bytes exceeds this enclave's limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error(
        "host time differs from the enclave clock by {skew_secs} s (clock skew, max {max_secs} s)"
    )]
    ClockSkew { skew_secs: u64, max_secs: u64 },
    #[error("{0}")]
    Busy(&'static str),
    #[error("model `{0}` is already loaded or being loaded")]
    AlreadyLoading(String),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("no sealed-model upload {0} (never started, expired, finished or failed)")]
    UnknownUpload(u64),
    #[error("upload ended after {received} of {expected} sealed bytes")]
    Incomplete { received: u64, expected: u64 },
    #[error("{0}")]
    Engine(EngineError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        StoreError::Engine(e)
    }
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::KmsNotConfigured => ErrorCode::KmsNotConfigured,
            StoreError::Format(e) => format_code(e),
            StoreError::HeaderLength { .. } | StoreError::Incomplete { .. } => {
                ErrorCode::ModelCorrupt
            }
            StoreError::TooLarge { .. } => ErrorCode::ModelTooLarge,
            StoreError::ClockSkew { .. } => ErrorCode::KmsError,
            StoreError::Busy(_) => ErrorCode::Busy,
            StoreError::AlreadyLoading(_) => ErrorCode::ModelAlreadyLoaded,
            StoreError::Kms(e) => e.code(),
            StoreError::UnknownUpload(_) => ErrorCode::UnknownUpload,
            StoreError::Engine(e) => e.code(),
            StoreError::Internal(_) => ErrorCode::Internal,
        }
    }
}

fn format_code(e: &ModelFormatError) -> ErrorCode {
    match e {
        ModelFormatError::DigestMismatch => ErrorCode::ModelDigestMismatch,
        ModelFormatError::TooLarge { .. } => ErrorCode::ModelTooLarge,
        ModelFormatError::Misuse { .. } | ModelFormatError::Resources { .. } => ErrorCode::Internal,
        _ => ErrorCode::ModelCorrupt,
    }
}

/// Budget granularity: permits are KiB of plaintext.
const BUDGET_UNIT: u64 = 1024;

/// One upload in progress. No `Debug`: it holds the opener (key schedule) and plaintext.
struct Upload {
    model_id: String,
    /// `None` once the upload is finished or failed. Holds the authenticated plaintext so far
    /// (preallocated to the model's length, on its hash thread); wiped on drop.
    opener: Option<PipelinedOpener>,
    /// Bytes of an incomplete chunk (ciphertext: not secret).
    pending: Vec<u8>,
    received: u64,
    sealed_len: u64,
    last_active: Instant,
    closed: bool,
    /// Held for the upload's life: its slot and its share of the plaintext budget.
    _slot: OwnedSemaphorePermit,
    budget: Option<OwnedSemaphorePermit>,
}

impl Upload {
    /// Feeds the next sealed bytes; returns the total received.
    fn feed(&mut self, mut data: &[u8]) -> Result<u64, StoreError> {
        let opener = self
            .opener
            .as_mut()
            .ok_or(StoreError::Internal("upload already closed"))?;
        let len = data.len() as u64;
        if self.received.saturating_add(len) > self.sealed_len {
            return Err(StoreError::Format(ModelFormatError::TrailingData));
        }
        while !data.is_empty() {
            let need = opener
                .next_chunk_len()
                .ok_or(StoreError::Format(ModelFormatError::TrailingData))?;
            if self.pending.is_empty() && data.len() >= need {
                // A whole chunk in this message: open it in place, no copy.
                let (chunk, rest) = data.split_at(need);
                opener.open_chunk(chunk).map_err(StoreError::Format)?;
                data = rest;
                continue;
            }
            let take = need.saturating_sub(self.pending.len()).min(data.len());
            let (part, rest) = data.split_at(take);
            self.pending.extend_from_slice(part);
            data = rest;
            if self.pending.len() == need {
                opener
                    .open_chunk(&self.pending)
                    .map_err(StoreError::Format)?;
                self.pending.clear();
            }
        }
        self.received += len;
        Ok(self.received)
    }

    /// Wipes and releases everything the upload holds.
    fn close(&mut self) {
        self.closed = true;
        drop_plaintext(self.opener.take());
        self.pending = Vec::new();
        self.budget = None;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        drop_plaintext(self.opener.take());
    }
}

/// Drops what holds a model's plaintext under [`sealed_alloc::keep_nothing`]: the buffer wipes
/// itself as before and then goes back to the system, not into the musl image's block cache for
/// a later allocation of its exact size, which only another model of the same length would make
/// (a 6.7 MB model's wiped buffer stayed resident beside it: docs/performance.md, round 18).
fn drop_plaintext<T>(value: Option<T>) {
    if let Some(value) = value {
        let _keeping = sealed_alloc::keep_nothing();
        drop(value);
    }
}

type Shared = Arc<tokio::sync::Mutex<Upload>>;

#[derive(Default)]
struct Inner {
    uploads: HashMap<u64, Shared>,
    /// Model ids with an upload in progress (from `Begin` until `End` has loaded or failed).
    loading: HashSet<String>,
}

/// The store. Shared by every connection behind the service's `Arc`.
pub struct ModelStore {
    engine: Arc<Engine>,
    keys: Option<Arc<dyn DataKeySource>>,
    config: StoreConfig,
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    budget_units: u64,
}

/// A model id reserved for an upload; released on drop.
struct Claim<'a> {
    store: &'a ModelStore,
    model_id: String,
}

impl Claim<'_> {
    /// Keeps the id reserved past this guard (the upload entry now owns it).
    fn keep(mut self) {
        self.model_id = String::new();
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Model ids are never empty, so an empty one marks a kept claim.
        if !self.model_id.is_empty() {
            self.store.lock().loading.remove(&self.model_id);
        }
    }
}

impl ModelStore {
    /// `keys`: where data keys come from (`None`: no `--kms-proxy`, every `Begin` is refused).
    pub fn new(
        engine: Arc<Engine>,
        keys: Option<Arc<dyn DataKeySource>>,
        config: StoreConfig,
    ) -> ModelStore {
        let budget_units = config
            .max_model_bytes
            .div_ceil(BUDGET_UNIT)
            .min(Semaphore::MAX_PERMITS as u64);
        ModelStore {
            engine,
            keys,
            slots: Arc::new(Semaphore::new(config.max_uploads.max(1))),
            budget: Arc::new(Semaphore::new(usize::try_from(budget_units).unwrap_or(0))),
            budget_units,
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section is a few map operations that cannot panic halfway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Largest model accepted: our budget, and the engine's own cap.
    pub fn max_model_len(&self) -> u64 {
        let engine = u64::try_from(self.engine.max_model_len()).unwrap_or(u64::MAX);
        self.config.max_model_bytes.min(engine)
    }

    /// Uploads in progress.
    pub fn uploads_in_progress(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Starts an upload: returns its id and the sealed bytes expected after the header.
    /// `now` is the enclave's clock, `host_time` the host's (Unix seconds).
    pub async fn begin(
        &self,
        header_bytes: Vec<u8>,
        credentials: AwsCredentials,
        host_time: u64,
        now: SystemTime,
    ) -> Result<(u64, u64), StoreError> {
        let keys = self.keys.as_ref().ok_or(StoreError::KmsNotConfigured)?;
        let (header, header_len) = parse_header(&header_bytes).map_err(StoreError::Format)?;
        if header_len != header_bytes.len() {
            return Err(StoreError::HeaderLength {
                expected: header_len,
                got: header_bytes.len(),
            });
        }
        let max = self.max_model_len();
        if header.plaintext_len > max {
            return Err(StoreError::TooLarge {
                len: header.plaintext_len,
                max,
            });
        }
        let sealed_len = header
            .sealed_len(header_len)
            .map_err(StoreError::Format)?
            .saturating_sub(header_len as u64);
        let signing_time = check_clock(host_time, now, self.config.max_clock_skew)?;

        self.expire_idle(Instant::now());
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| StoreError::Busy("too many sealed-model uploads in progress"))?;
        let claim = self.claim(&header.model_id)?;
        let units = header.plaintext_len.div_ceil(BUDGET_UNIT).max(1);
        let budget = u32::try_from(units)
            .ok()
            .filter(|u| u64::from(*u) <= self.budget_units)
            .ok_or(StoreError::TooLarge {
                len: header.plaintext_len,
                max,
            })?;
        let budget = Arc::clone(&self.budget)
            .try_acquire_many_owned(budget)
            .map_err(|_| StoreError::Busy("the model memory budget is in use by other uploads"))?;

        let started = Instant::now();
        let data_key = keys
            .data_key(DataKeyRequest {
                key_id: &header.kms_key_id,
                ciphertext_blob: &header.encrypted_data_key,
                model_id: &header.model_id,
                credentials: &credentials,
                signing_time,
            })
            .await;
        drop(credentials);
        let data_key = match data_key {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(model_id = %header.model_id, key_id = %header.kms_key_id, code = %e.code(), error = %e, "data key not released");
                return Err(e.into());
            }
        };
        let opener =
            PipelinedOpener::new(&header, &header_bytes, &data_key).map_err(StoreError::Format)?;
        drop(data_key);
        let upload = Upload {
            model_id: header.model_id.clone(),
            opener: Some(opener),
            pending: Vec::new(),
            received: 0,
            sealed_len,
            last_active: Instant::now(),
            closed: false,
            _slot: slot,
            budget: Some(budget),
        };
        let upload_id = self.insert(upload, claim);
        log_begin(&header, upload_id, sealed_len, started.elapsed());
        Ok((upload_id, sealed_len))
    }

    /// Reserves `model_id` for a new upload: not loaded, not being loaded.
    fn claim(&self, model_id: &str) -> Result<Claim<'_>, StoreError> {
        if self.engine.models().iter().any(|m| m.model_id == model_id) {
            return Err(StoreError::AlreadyLoading(model_id.to_owned()));
        }
        if !self.lock().loading.insert(model_id.to_owned()) {
            return Err(StoreError::AlreadyLoading(model_id.to_owned()));
        }
        Ok(Claim {
            store: self,
            model_id: model_id.to_owned(),
        })
    }

    /// Registers an upload under a fresh random id; its claim stays until the upload is taken.
    fn insert(&self, upload: Upload, claim: Claim<'_>) -> u64 {
        let mut rng = crate::rng::os_rng();
        let mut inner = self.lock();
        let id = loop {
            let id = rand_core::Rng::next_u64(&mut rng);
            if !inner.uploads.contains_key(&id) {
                break id;
            }
        };
        inner
            .uploads
            .insert(id, Arc::new(tokio::sync::Mutex::new(upload)));
        drop(inner);
        // The id stays reserved in `loading` until `take` hands out a new claim for it.
        claim.keep();
        id
    }

    fn get(&self, upload_id: u64) -> Result<Shared, StoreError> {
        self.lock()
            .uploads
            .get(&upload_id)
            .cloned()
            .ok_or(StoreError::UnknownUpload(upload_id))
    }

    /// Removes an upload; the returned claim releases its model id when dropped.
    fn take(&self, upload_id: u64, model_id: &str) -> Option<Claim<'_>> {
        self.lock().uploads.remove(&upload_id).map(|_| Claim {
            store: self,
            model_id: model_id.to_owned(),
        })
    }

    /// Feeds the next sealed bytes of an upload; returns the sealed bytes received so far. Any
    /// failure ends the upload.
    pub async fn chunk(&self, upload_id: u64, data: Vec<u8>) -> Result<u64, StoreError> {
        let all = 0..data.len();
        self.chunk_in(upload_id, data, all).await
    }

    /// [`Self::chunk`] for the bytes at `range` of `buf`: a chunk opened where it lies in the
    /// frame it arrived in (`sealed_wire::message::sealed_chunk_range`), with no copy. A range
    /// outside `buf` is an internal error (and ends the upload, as any failed chunk does).
    pub async fn chunk_in(
        &self,
        upload_id: u64,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
    ) -> Result<u64, StoreError> {
        let mut upload = self.get(upload_id)?.lock_owned().await;
        if upload.closed {
            return Err(StoreError::UnknownUpload(upload_id));
        }
        upload.last_active = Instant::now();
        let model_id = upload.model_id.clone();
        // Authenticating and decrypting up to 8 MiB is CPU work: off the reactor.
        let result = tokio::task::spawn_blocking(move || {
            let result = match buf.get(range) {
                Some(data) => upload.feed(data),
                None => Err(StoreError::Internal("chunk range outside its frame")),
            };
            (upload, result)
        })
        .await;
        let (mut upload, result) = match result {
            Ok(pair) => pair,
            Err(_) => {
                // The task panicked with the upload inside: it was dropped (and wiped) there.
                drop(self.take(upload_id, &model_id));
                return Err(StoreError::Internal("chunk task failed"));
            }
        };
        match result {
            Ok(received) => {
                upload.last_active = Instant::now();
                Ok(received)
            }
            Err(e) => {
                tracing::warn!(upload_id, model_id = %upload.model_id, code = %e.code(), error = %e, "sealed model upload failed");
                upload.close();
                drop(upload);
                drop(self.take(upload_id, &model_id));
                Err(e)
            }
        }
    }

    /// Finishes an upload: completeness check, then the engine load overlapped with the end of the
    /// SHA-384, which must match before the model is published. The plaintext is wiped once the
    /// plan is built (or the load failed).
    pub async fn end(&self, upload_id: u64) -> Result<ModelInfo, StoreError> {
        let mut upload = self.get(upload_id)?.lock_owned().await;
        if upload.closed {
            return Err(StoreError::UnknownUpload(upload_id));
        }
        let model_id = upload.model_id.clone();
        let claim = self
            .take(upload_id, &model_id)
            .ok_or(StoreError::UnknownUpload(upload_id))?;
        // Everything the upload holds moves into the blocking task and is wiped when it ends.
        let opener = upload.opener.take();
        let budget = upload.budget.take();
        let (received, expected) = (upload.received, upload.sealed_len);
        upload.close();
        drop(upload);
        let engine = Arc::clone(&self.engine);
        let id = model_id.clone();
        let result = tokio::task::spawn_blocking(move || {
            // Declared first, dropped last: the plaintext is freed before it (drop_plaintext).
            let _load = sealed_alloc::before_load();
            let opener = opener.ok_or(StoreError::Internal("upload already closed"))?;
            if received != expected {
                return Err(StoreError::Incomplete { received, expected });
            }
            let model = opener.finish().map_err(StoreError::Format)?;
            let info = engine.load_model_with_digest(
                &id,
                // The decoder reads the opener's buffer itself, no copy (round 9).
                bytes::Bytes::from_owner(model.shared_plaintext()),
                *model.expected_digest(),
                || model.verify().map_err(StoreError::Format),
            );
            drop(model);
            drop(budget);
            info
        })
        .await
        .unwrap_or(Err(StoreError::Internal("model load task failed")));
        drop(claim);
        match &result {
            // The engine logs the load (id, size, digest, duration).
            Ok(_) => tracing::info!(upload_id, model_id = %model_id, "sealed model loaded"),
            Err(e) => {
                tracing::warn!(upload_id, model_id = %model_id, code = %e.code(), error = %e, "sealed model load failed")
            }
        }
        result
    }

    /// Ends an upload the host gave up on: wipes what it holds and releases its model id now.
    /// Waits for a chunk being decrypted to finish first.
    pub async fn abort(&self, upload_id: u64) -> Result<(), StoreError> {
        let mut upload = self.get(upload_id)?.lock_owned().await;
        if upload.closed {
            return Err(StoreError::UnknownUpload(upload_id));
        }
        let model_id = upload.model_id.clone();
        upload.close();
        drop(upload);
        drop(self.take(upload_id, &model_id));
        tracing::info!(upload_id, model_id = %model_id, "sealed model upload aborted by the host");
        Ok(())
    }

    /// Drops uploads idle since before `now - idle_timeout`, wiping what they hold. Uploads busy
    /// with a chunk are active and left alone. Returns how many were dropped.
    pub fn expire_idle(&self, now: Instant) -> usize {
        let timeout = self.config.idle_timeout;
        let mut expired = Vec::new();
        let mut inner = self.lock();
        inner.uploads.retain(|id, upload| {
            let Ok(mut upload) = upload.try_lock() else {
                return true;
            };
            if now.saturating_duration_since(upload.last_active) <= timeout {
                return true;
            }
            upload.close();
            expired.push((*id, upload.model_id.clone()));
            false
        });
        for (_, model_id) in &expired {
            inner.loading.remove(model_id);
        }
        drop(inner);
        for (upload_id, model_id) in &expired {
            tracing::warn!(upload_id, model_id = %model_id, "sealed model upload expired (idle)");
        }
        expired.len()
    }
}

/// The time to sign with: the host's, when it is within `max_skew` of ours.
fn check_clock(
    host_time: u64,
    now: SystemTime,
    max_skew: Duration,
) -> Result<SystemTime, StoreError> {
    let ours = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let skew = ours.abs_diff(host_time);
    if skew > max_skew.as_secs() {
        return Err(StoreError::ClockSkew {
            skew_secs: skew,
            max_secs: max_skew.as_secs(),
        });
    }
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(host_time))
        .ok_or(StoreError::Internal("host time out of range"))
}

fn log_begin(header: &SealedModelHeader, upload_id: u64, sealed_len: u64, elapsed: Duration) {
    tracing::info!(
        upload_id,
        model_id = %header.model_id,
        key_id = %header.kms_key_id,
        plaintext_len = header.plaintext_len,
        sealed_len,
        sha384 = %hex::encode(header.plaintext_sha384),
        kms_ms = elapsed.as_millis() as u64,
        "sealed model upload started"
    );
}

#[cfg(test)]
mod tests;
