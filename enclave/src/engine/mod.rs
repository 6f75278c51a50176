//! The inference engine: loads ONNX models from bytes into tract and runs them on a bounded pool
//! of worker threads.
//!
//! What it does: parses a model from memory (never from a path, so no external weight file is
//! read), bounds its size, computes the SHA-384 that the manifest and the attestation commit to
//! (or, for sealed models, takes the one the opener is computing and publishes the model only once
//! it is confirmed), pins the declared input facts and optimises the model once into a plan shared by every worker.
//! Each request is checked against the declared input names, dtypes and shapes before it takes a
//! worker; outputs come back in declared order, checked against the wire limits. A panic inside
//! tract fails that one request and leaves the worker and the enclave running.
//!
//! What it does not do: decrypt or verify sealed models (the model store does, then hands the
//! plaintext bytes here), speak any protocol, or log anything but ids, sizes, digests, durations
//! and error kinds. This directory is the only code that touches tract, so that a tract upgrade
//! touches only it.
//!
//! # Layout
//! - [`Engine`], [`EngineConfig`], [`EngineError`]: the public face and the worker pool (here).
//! - `model`: one loaded model — parse, pin, optimise (with `sealed_plan`'s planner); input
//!   checks; one run.
//! - `convert`: wire tensors ↔ tract tensors, little-endian, no `unsafe`.
//! - `batch`: dynamic batching of queued requests for models the image opts in.

mod batch;
mod convert;
mod model;

use batch::{JobQueue, Work};
pub use batch::{MAX_BATCH_INPUT_BYTES, MAX_BATCH_OUTPUT_BYTES, MAX_BATCH_ROWS};

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use bytes::Bytes;
use sealed_model::DIGEST_LEN;
use sealed_wire::limits::{MAX_MODEL_LEN, MAX_MODELS};
use sealed_wire::message::valid_model_id;
use sealed_wire::{ErrorCode, ModelInfo, ModelManifest, NamedTensor, Tensor};
use sha2::{Digest, Sha384};
use tokio::sync::oneshot;

use model::LoadedModel;
use sealed_plan::Planner;
use tract_onnx::prelude::multithread::Executor;
use tract_onnx::tract_core::knobs::KnobScope;

/// Threads of an executor's pool.
fn executor_threads(executor: &Executor) -> usize {
    match executor {
        #[cfg(feature = "multithread-mm")]
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// Requests waiting for a worker, by default, beyond those running.
pub const DEFAULT_QUEUE_DEPTH: usize = 64;

/// Why a model was not loaded or a request not served. Messages name stages, limits and declared
/// input/output names only: never tensor values, model bytes or tract's own error text.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no model `{0}` is loaded")]
    UnknownModel(String),
    #[error("inputs do not match the model: {0}")]
    InputMismatch(String),
    #[error("invalid tensor: {0}")]
    InvalidTensor(String),
    #[error("an output exceeds the tensor or response size limits")]
    OutputTooLarge,
    #[error("inference failed: {0}")]
    InferenceFailed(&'static str),
    #[error("model rejected: {0}")]
    ModelRejected(String),
    /// The graph uses an ONNX operator tract does not implement. Which one is not said: the
    /// message reaches the host, and a sealed model's structure is the owner's business.
    #[error("the model uses an ONNX operator this engine does not implement")]
    UnsupportedOperator,
    #[error("model is {len} bytes, over the maximum of {max}")]
    ModelTooLarge { len: usize, max: usize },
    #[error("invalid model id")]
    InvalidModelId,
    #[error("model `{0}` is already loaded")]
    ModelAlreadyLoaded(String),
    #[error("{max} models are already loaded")]
    TooManyModels { max: usize },
    #[error("the inference queue is full")]
    Busy,
    #[error("internal engine error: {0}")]
    Internal(&'static str),
}

impl EngineError {
    /// The stable code a requester receives.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::UnknownModel(_) => ErrorCode::UnknownModel,
            EngineError::InputMismatch(_) => ErrorCode::InputMismatch,
            EngineError::InvalidTensor(_) | EngineError::OutputTooLarge => ErrorCode::InvalidTensor,
            EngineError::InferenceFailed(_) => ErrorCode::InferenceFailed,
            EngineError::ModelRejected(_) => ErrorCode::ModelRejected,
            EngineError::UnsupportedOperator => ErrorCode::UnsupportedOperator,
            EngineError::ModelTooLarge { .. } => ErrorCode::ModelTooLarge,
            // The same code `sealed-wire` gives an invalid id in a decoded message.
            EngineError::InvalidModelId => ErrorCode::MalformedMessage,
            EngineError::ModelAlreadyLoaded(_) => ErrorCode::ModelAlreadyLoaded,
            EngineError::TooManyModels { .. } => ErrorCode::TooManyModels,
            EngineError::Busy => ErrorCode::Busy,
            EngineError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Pool sizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Worker threads, each running one inference at a time (at least 1).
    pub workers: usize,
    /// Requests that may wait for a worker; more are refused with [`EngineError::Busy`] (at least 1).
    pub queue_depth: usize,
    /// Largest ONNX model accepted, in bytes. Plaintext loads (simulation) are bounded by the
    /// frame limit ([`MAX_MODEL_LEN`]) before they get here; sealed models by this.
    pub max_model_len: usize,
    /// Threads one inference may use for tract's matrix products and large element-wise ops:
    /// above 1, one pool of this many threads (tract's multithreaded executor, rayon), shared by
    /// every worker and model; a worker waits while its products run there. 1, the default, runs
    /// each inference on its worker alone. Needs the `multithread-mm` feature
    /// ([`INTRA_OP_AVAILABLE`]); without it a value above 1 is logged and treated as 1.
    pub intra_op_threads: usize,
    /// Models served with dynamic batching, by id, with the most rows one batch may hold
    /// (2..=[`MAX_BATCH_ROWS`]; 1 or less turns it off for that model). Such a model must declare
    /// axis 0 of every input and output as one shared symbol, and every other output dimension as
    /// a fixed size (so that a batch's outputs, at most [`MAX_BATCH_OUTPUT_BYTES`], are known
    /// before it runs), or its load is refused. See the `batch` module for what batching assumes
    /// of the model.
    pub dynamic_batch: BTreeMap<String, usize>,
    /// tract knobs, `NAME=VALUE`, in force while each model's plan is built (tract's scoped
    /// knobs only: kernel choices such as `TRACT_DISABLE_DIRECT_SPATIAL=true`). Check them with
    /// [`tract_knob_scope`] first: here an invalid set is logged and ignored.
    pub tract_knobs: Vec<(String, String)>,
}

/// The scope tract applies `knobs` with, or why it refuses them (an unknown name, a knob tract
/// reads only process-wide, a value that does not parse). `None` when there are none.
pub fn tract_knob_scope(knobs: &[(String, String)]) -> Result<Option<KnobScope>, String> {
    if knobs.is_empty() {
        return Ok(None);
    }
    KnobScope::new(knobs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(Some)
        .map_err(|e| format!("{e}"))
}

/// How plans are optimised under `knobs` (already checked by [`tract_knob_scope`], so that the
/// planner, which checks them again, cannot refuse them; if it did, tract's own optimiser).
fn planner(knobs: &[(String, String)]) -> Planner {
    Planner::new(knobs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap_or_else(|_| Planner::tract())
}

/// Names and one-line descriptions of the knobs [`EngineConfig::tract_knobs`] accepts.
pub fn scoped_tract_knobs() -> Vec<(&'static str, &'static str)> {
    tract_onnx::tract_core::knobs::all()
        .into_iter()
        .filter(|k| k.scopable)
        .map(|k| (k.name, k.doc))
        .collect()
}

/// Whether this build has tract's multithreaded executor (`multithread-mm`), which
/// [`EngineConfig::intra_op_threads`] above 1 needs.
pub const INTRA_OP_AVAILABLE: bool = cfg!(feature = "multithread-mm");

impl Default for EngineConfig {
    /// One worker per available CPU (the enclave's vCPUs), [`DEFAULT_QUEUE_DEPTH`] waiting.
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_model_len: MAX_MODEL_LEN,
            intra_op_threads: 1,
            dynamic_batch: BTreeMap::new(),
            tract_knobs: Vec::new(),
        }
    }
}

/// The executor every plan is built with: `None` for tract's default (each inference on its
/// worker thread), or a shared pool of `threads`.
fn intra_op_executor(threads: usize) -> Option<Executor> {
    if threads <= 1 {
        return None;
    }
    #[cfg(feature = "multithread-mm")]
    {
        // Built here rather than by tract's `Executor::multithread_with_name` so that each pool
        // thread wipes what it frees (its share of a request's activations), as the workers do,
        // and so that a pool that cannot start is an error rather than tract's panic.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|n| format!("engine-intra-op-{n}"))
            .start_handler(|_| sealed_alloc::wipe_this_thread())
            .build();
        match pool {
            Ok(pool) => Some(Executor::MultiThread(Arc::new(pool))),
            Err(_) => {
                tracing::error!(
                    threads,
                    "could not start the intra-op pool; one thread per inference"
                );
                None
            }
        }
    }
    #[cfg(not(feature = "multithread-mm"))]
    {
        tracing::warn!(
            threads,
            "intra-op threads need the multithread-mm feature; one thread per inference"
        );
        None
    }
}

/// What a worker produces for one request.
pub type ReplyResult = Result<Vec<NamedTensor>, EngineError>;

/// Where a worker's result goes. A requester that gave up drops its end of the channel, which
/// the workers check to skip its queued work.
pub(crate) enum Reply {
    /// Back to the awaiting task.
    Channel(oneshot::Sender<ReplyResult>),
    /// `finish` runs on the worker thread (the service seals and sends the answer there, so that
    /// it leaves without waking an async thread first), then the awaiting task is told it ran.
    Finish {
        finish: Box<dyn FnOnce(ReplyResult) + Send>,
        done: oneshot::Sender<()>,
    },
}

impl Reply {
    /// A reply that hands the result back on the returned channel.
    fn channel() -> (Reply, oneshot::Receiver<ReplyResult>) {
        let (tx, rx) = oneshot::channel();
        (Reply::Channel(tx), rx)
    }

    /// A reply that runs `finish`, and the signal that it ran.
    fn finish(finish: impl FnOnce(ReplyResult) + Send + 'static) -> (Reply, oneshot::Receiver<()>) {
        let (done, ran) = oneshot::channel();
        let finish = Box::new(finish);
        (Reply::Finish { finish, done }, ran)
    }

    /// Whether the requester gave up (its deadline passed or its connection closed).
    fn is_closed(&self) -> bool {
        match self {
            Reply::Channel(tx) => tx.is_closed(),
            Reply::Finish { done, .. } => done.is_closed(),
        }
    }

    /// Delivers `result`. The requester may have gone away meanwhile; nothing to do then.
    fn send(self, result: ReplyResult) {
        match self {
            Reply::Channel(tx) => {
                let _ = tx.send(result);
            }
            Reply::Finish { finish, done } => {
                finish(result);
                let _ = done.send(());
            }
        }
    }
}

/// Work for a worker thread.
enum Job {
    Infer {
        model: Arc<LoadedModel>,
        inputs: Vec<Tensor>,
        reply: Reply,
    },

    /// Test only: occupies a worker until released, to fill the queue without timing.
    #[cfg(test)]
    Hold {
        started: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
    /// Test only: panics inside the same guard as a real inference.
    #[cfg(test)]
    Panic { reply: Reply },
}

/// The engine: loaded models and the worker pool. `Send + Sync`; share it behind an `Arc`.
/// Dropping it closes the queue: workers finish what they hold and exit.
pub struct Engine {
    models: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    queue: Arc<JobQueue>,
    workers: usize,
    in_flight: Arc<AtomicUsize>,
    /// Requests answered as part of a batch of two or more.
    batched: Arc<AtomicU64>,
    max_model_len: usize,
    /// Batching models by id, with their row limits ([`EngineConfig::dynamic_batch`]).
    dynamic_batch: BTreeMap<String, usize>,
    /// [`EngineConfig::tract_knobs`], checked.
    knobs: Option<KnobScope>,
    /// How plans are optimised: tract's optimiser, direct spatial convolutions narrowed to where
    /// they pay (`sealed_plan`), unless the knobs name `TRACT_DISABLE_DIRECT_SPATIAL`, and
    /// stride-2 2 × 2 max pools run by `sealed_plan::pool`.
    planner: Planner,
    /// Given to every plan at load (tract's `RunOptions::executor`).
    executor: Option<Executor>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers)
            .field("intra_op_threads", &self.intra_op_threads())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a panic into [`EngineError::InferenceFailed`]. The panic payload is not
/// logged: it may quote tensor data.
fn guarded<T>(f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("inference panicked; the request failed, the worker continues");
        Err(EngineError::InferenceFailed("the engine panicked"))
    })
}

fn worker_loop(queue: Arc<JobQueue>, in_flight: Arc<AtomicUsize>, batched: Arc<AtomicU64>) {
    // Everything a worker frees is a request's: its input tensors, tract's activations (derived
    // from the input, and handed out uninitialised to the next request) and its outputs. Wiped,
    // so that no request's data outlives it in freed memory (threat model E8).
    sealed_alloc::wipe_this_thread();
    // `None` once the engine was dropped and the queue has drained.
    while let Some(work) = queue.next(&in_flight) {
        let job = match work {
            Work::Batch { model, batch } => {
                run_batch(&model, batch, &in_flight, &batched);
                continue;
            }
            Work::One(job) => job,
        };
        match job {
            Job::Infer {
                model,
                inputs,
                reply,
            } => {
                // The requester gave up (its deadline passed or its connection closed) while the
                // job waited: skip it, so that expired work does not hold the workers.
                if reply.is_closed() {
                    drop((model, inputs));
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let result = guarded(|| model.run(inputs));
                drop(model);
                in_flight.fetch_sub(1, Ordering::AcqRel);
                reply.send(result);
            }
            #[cfg(test)]
            Job::Hold { started, release } => {
                let _ = started.send(());
                let _ = release.recv();
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            #[cfg(test)]
            Job::Panic { reply } => {
                let result = guarded(|| panic!("test panic inside a worker"));
                in_flight.fetch_sub(1, Ordering::AcqRel);
                reply.send(result);
            }
        }
    }
}

/// Runs a batch of a batching model's requests and answers each. A batch of one runs as any
/// request does; a request whose requester has gone away is skipped. If the batched run fails as a whole (tract refuses the joined shapes, an
/// output lacks one row per input row, a panic), every request is run again alone, so that one
/// request can never fail another; errors that concern one request's outputs (its size limit)
/// are that request's alone.
fn run_batch(
    model: &LoadedModel,
    batch: Vec<batch::Pending>,
    in_flight: &AtomicUsize,
    batched: &AtomicU64,
) {
    let answer = |reply: Reply, result: ReplyResult| {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        reply.send(result);
    };
    let (batch, gone): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| !p.reply.is_closed());
    in_flight.fetch_sub(gone.len(), Ordering::AcqRel);
    drop(gone);
    if batch.len() == 1 {
        for pending in batch {
            let result = guarded(|| model.run(pending.inputs));
            answer(pending.reply, result);
        }
        return;
    }
    let (inputs, replies): (Vec<Vec<Tensor>>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.inputs, p.reply)).unzip();
    match guarded(|| model.run_rows(&inputs)) {
        Ok(results) if results.len() == replies.len() => {
            drop(inputs);
            batched.fetch_add(replies.len() as u64, Ordering::Relaxed);
            for (reply, result) in replies.into_iter().zip(results) {
                answer(reply, result);
            }
        }
        other => {
            let why = other
                .err()
                .map_or("wrong number of results", |e| e.code().as_str());
            tracing::warn!(
                model_id = %model.info().model_id,
                requests = replies.len(),
                error = why,
                "a batched run failed; running its requests one by one"
            );
            for (inputs, reply) in inputs.into_iter().zip(replies) {
                let result = guarded(|| model.run(inputs));
                answer(reply, result);
            }
        }
    }
}

impl Engine {
    /// Starts the worker pool. Never fails: a worker thread that cannot be spawned is logged and
    /// the pool runs with the others (with none, every inference fails with `Internal`).
    pub fn new(config: EngineConfig) -> Engine {
        let queue = Arc::new(JobQueue::new(config.queue_depth));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let batched = Arc::new(AtomicU64::new(0));
        let mut workers = 0;
        for i in 0..config.workers.max(1) {
            let (queue, count) = (Arc::clone(&queue), Arc::clone(&in_flight));
            let batched = Arc::clone(&batched);
            match std::thread::Builder::new()
                .name(format!("engine-worker-{i}"))
                .spawn(move || worker_loop(queue, count, batched))
            {
                Ok(_) => workers += 1,
                Err(e) => {
                    tracing::error!(worker = i, error = %e, "could not spawn an engine worker")
                }
            }
        }
        let executor = intra_op_executor(config.intra_op_threads);
        let dynamic_batch: BTreeMap<String, usize> = config
            .dynamic_batch
            .into_iter()
            .filter(|&(_, rows)| rows > 1)
            .map(|(id, rows)| (id, rows.min(MAX_BATCH_ROWS)))
            .collect();
        let (knobs, planner) = match tract_knob_scope(&config.tract_knobs) {
            Ok(scope) => (scope, planner(&config.tract_knobs)),
            Err(e) => {
                tracing::error!(error = %e, "tract knobs refused; building plans with tract's defaults");
                (None, planner(&[]))
            }
        };
        tracing::info!(
            workers,
            queue_depth = config.queue_depth.max(1),
            tract_knobs = config.tract_knobs.len(),
            narrow_direct_convolutions = planner.narrows_direct_spatial(),
            intra_op_threads = executor.as_ref().map_or(1, executor_threads),
            batching_models = dynamic_batch.len(),
            "inference engine started"
        );
        Engine {
            models: RwLock::new(BTreeMap::new()),
            queue,
            workers,
            in_flight,
            batched,
            max_model_len: config.max_model_len,
            dynamic_batch,
            knobs,
            planner,
            executor,
        }
    }

    /// Threads one inference may use (1 without an intra-op pool).
    pub fn intra_op_threads(&self) -> usize {
        self.executor.as_ref().map_or(1, executor_threads)
    }

    /// Largest ONNX model [`Self::load_model`] accepts.
    pub fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    /// Parses an ONNX model from bytes, pins its input facts and optimises it once. Computes the
    /// SHA-384 the manifest carries. Blocks for as long as tract takes (call it from
    /// `spawn_blocking` on an async runtime).
    pub fn load_model(&self, model_id: &str, onnx: &[u8]) -> Result<ModelInfo, EngineError> {
        self.check_load(model_id, onnx)?;
        let sha384: [u8; DIGEST_LEN] = Sha384::digest(onnx).into();
        // One exact copy for the decoder (see `load_model_with_digest`), wiped when it drops
        // wherever that happens (`Zeroizing`; the load's own frees are wiped by sealed_alloc).
        let onnx = Bytes::from_owner(zeroize::Zeroizing::new(onnx.to_vec()));
        self.load_model_with_digest(model_id, onnx, sha384, || Ok::<(), EngineError>(()))
    }

    /// [`Self::load_model`] for a caller that is computing the SHA-384 of `onnx` itself, so that
    /// the model is hashed once and the hash can overlap tract's load (sealed models: the
    /// digest the header promises, recomputed over the decrypted bytes on the opener's own
    /// thread, `sealed_model::UnverifiedModel`).
    ///
    /// `sha384` is the digest the manifest will carry. `confirm` must return `Ok` only once the
    /// caller has checked that `onnx` hashes to it; it is called after tract's load and before the
    /// model becomes visible (listed, in the manifest the attestation commits to, or served), so a
    /// model whose digest fails is never published and its plan is dropped. When the load itself
    /// fails, `confirm` is still called first and its error wins: a digest mismatch is always
    /// reported as such, whatever tract made of the bytes.
    ///
    /// `onnx` is a `Bytes` so that the protobuf decoder can take its fields as slices of it
    /// rather than copies (`Bytes::from_owner` over the caller's buffer: no copy of the model is
    /// made for it). The engine drops its share before returning.
    pub fn load_model_with_digest<E: From<EngineError>>(
        &self,
        model_id: &str,
        onnx: Bytes,
        sha384: [u8; DIGEST_LEN],
        confirm: impl FnOnce() -> Result<(), E>,
    ) -> Result<ModelInfo, E> {
        let started = Instant::now();
        let sha384_hex = hex::encode(sha384);
        let len = onnx.len();
        let loaded = self.check_load(model_id, &onnx).and_then(|()| {
            LoadedModel::load(
                model_id,
                onnx,
                sha384.to_vec(),
                &model::LoadOptions {
                    executor: self.executor.as_ref(),
                    batch_rows: self.dynamic_batch.get(model_id).copied(),
                    knobs: self.knobs.as_ref(),
                    planner: &self.planner,
                },
            )
        });
        let loaded = match loaded {
            Ok(m) => m,
            Err(e) => {
                confirm()?;
                tracing::warn!(model_id, bytes = len, sha384 = %sha384_hex, error = %e, "model rejected");
                return Err(e.into());
            }
        };
        // Only now is the digest known to be that of the bytes just loaded.
        confirm()?;
        let info = loaded.info().clone();

        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the write lock: another load may have finished meanwhile.
        self.check_room(&models, model_id)?;
        models.insert(model_id.to_owned(), Arc::new(loaded));
        drop(models);
        tracing::info!(
            model_id,
            bytes = len,
            sha384 = %sha384_hex,
            inputs = info.inputs.len(),
            outputs = info.outputs.len(),
            batch_rows = self.dynamic_batch.get(model_id).copied().unwrap_or(1),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(info)
    }

    /// The cheap checks, before any hashing or parsing: id, size, a duplicate or a full table.
    fn check_load(&self, model_id: &str, onnx: &[u8]) -> Result<(), EngineError> {
        if !valid_model_id(model_id) {
            return Err(EngineError::InvalidModelId);
        }
        if onnx.len() > self.max_model_len {
            return Err(EngineError::ModelTooLarge {
                len: onnx.len(),
                max: self.max_model_len,
            });
        }
        if onnx.is_empty() {
            return Err(EngineError::ModelRejected("the model is empty".into()));
        }
        self.check_room(&self.read_models(), model_id)
    }

    fn read_models(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<LoadedModel>>> {
        // The map is only ever changed by a single `insert`, so a panic elsewhere while the lock
        // was held cannot have left it half-updated.
        self.models.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_room(
        &self,
        models: &BTreeMap<String, Arc<LoadedModel>>,
        model_id: &str,
    ) -> Result<(), EngineError> {
        if models.contains_key(model_id) {
            return Err(EngineError::ModelAlreadyLoaded(model_id.to_owned()));
        }
        if models.len() >= MAX_MODELS {
            return Err(EngineError::TooManyModels { max: MAX_MODELS });
        }
        Ok(())
    }

    /// Metadata of every loaded model, sorted by id.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.read_models()
            .values()
            .map(|m| m.info().clone())
            .collect()
    }

    /// The manifest the attestation commits to: every loaded model's id and SHA-384.
    pub fn manifest(&self) -> ModelManifest {
        let mut manifest = ModelManifest::default();
        for (id, m) in self.read_models().iter() {
            manifest.insert(id.clone(), m.info().sha384.clone());
        }
        manifest
    }

    /// Checks `inputs` against the model's declared inputs, then runs it on the worker pool.
    /// Fails fast with [`EngineError::Busy`] when the queue is full.
    pub async fn infer(
        &self,
        model_id: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, EngineError> {
        let (reply, result) = Reply::channel();
        self.submit_reply(model_id, inputs, reply)
            .map_err(|(_, e)| e)?;
        result
            .await
            .map_err(|_| EngineError::Internal("the worker dropped the request"))?
    }

    /// [`Engine::infer`] that hands the result to `finish` on the thread that has it: a worker's,
    /// or the caller's when the request fails before it is queued (unknown model, bad inputs, a
    /// full queue). Returns once `finish` has run, or once the request was dropped without it
    /// (the engine closed); dropping the future gives the request up: queued, it is skipped.
    pub async fn infer_with(
        &self,
        model_id: &str,
        inputs: Vec<NamedTensor>,
        finish: impl FnOnce(ReplyResult) + Send + 'static,
    ) {
        let (reply, ran) = Reply::finish(finish);
        if let Err((reply, e)) = self.submit_reply(model_id, inputs, reply) {
            reply.send(Err(e));
            return;
        }
        let _ = ran.await;
    }

    /// The synchronous half of [`Engine::infer_with`]: look up, check, enqueue; the reply back
    /// with the error if any of it fails.
    fn submit_reply(
        &self,
        model_id: &str,
        inputs: Vec<NamedTensor>,
        reply: Reply,
    ) -> Result<(), (Reply, EngineError)> {
        let Some(model) = self.read_models().get(model_id).cloned() else {
            return Err((reply, EngineError::UnknownModel(model_id.to_owned())));
        };
        let inputs = match model.check_inputs(inputs) {
            Ok(inputs) => inputs,
            Err(e) => return Err((reply, e)),
        };
        self.enqueue(Job::Infer {
            model,
            inputs,
            reply,
        })
        .map_err(|(job, e)| match job {
            Job::Infer { reply, .. } => (reply, e),
            // Only an `Infer` job was given.
            #[cfg(test)]
            _ => unreachable!(),
        })
    }

    /// Test only: occupies one worker until the returned sender is used (or dropped).
    #[cfg(test)]
    pub(crate) fn hold_worker(&self) -> std::sync::mpsc::Sender<()> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        assert!(
            self.enqueue(Job::Hold {
                started: started_tx,
                release: release_rx,
            })
            .is_ok()
        );
        started_rx.recv().unwrap();
        release_tx
    }

    /// Submits a request whose result comes back on the returned channel.
    #[cfg(test)]
    fn submit(
        &self,
        model_id: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<oneshot::Receiver<ReplyResult>, EngineError> {
        let (reply, receiver) = Reply::channel();
        self.submit_reply(model_id, inputs, reply)
            .map(|()| receiver)
            .map_err(|(_, e)| e)
    }

    fn enqueue(&self, job: Job) -> Result<(), (Job, EngineError)> {
        if self.workers == 0 {
            return Err((job, EngineError::Internal("no inference worker is running")));
        }
        // Counted before the push so that a worker's decrement never precedes it.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.queue.push(job).inspect_err(|_| {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Worker threads running.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Requests queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests answered so far as part of a dynamic batch of two or more.
    pub fn batched_requests(&self) -> u64 {
        self.batched.load(Ordering::Relaxed)
    }

    /// The row limit of a model served with dynamic batching; `None` if it is not.
    pub fn batch_rows(&self, model_id: &str) -> Option<usize> {
        self.read_models()
            .get(model_id)
            .and_then(|m| m.batch_rows())
    }
}

#[cfg(test)]
mod tests;
