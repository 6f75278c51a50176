//! The workers' job queue, and dynamic batching: requests for one model that are already waiting
//! when a worker becomes free run as one inference, their rows joined along axis 0.
//!
//! Batching is only for models the enclave image names (`--dynamic-batch MODEL_ID=MAX_ROWS`):
//! rows of different requesters meet in one computation, which is right only for a model that
//! computes each row of axis 0 from that row alone. Shapes cannot prove that (a mean over axis 0
//! keeps every shape), so the owner of the image decides, and the image is what the attestation
//! measures (PCR0) and what the model's KMS key policy names.
//!
//! The wait is zero: a worker takes what is queued behind the request it picked and never holds a
//! request back for company. Under light load every request runs alone, exactly as without
//! batching; batches form only when requests are already queuing for a worker.
//!
//! The queue is written here rather than taken from `std::sync::mpsc` because forming a batch
//! takes requests out of the middle of it: the worker that pops a request for a batching model
//! also removes, in arrival order, the following requests for the same model whose inputs match
//! it outside axis 0, while the rows and bytes fit, and stops at the first that does not (so that
//! model's requests keep their order). Every waiting request holds exactly one slot, so
//! `queue_depth` and `Busy` mean what they mean without batching.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use sealed_wire::Tensor;

use super::model::LoadedModel;
use super::{EngineError, Job, Reply};

/// The most rows one batch may hold (`--dynamic-batch` refuses more).
pub const MAX_BATCH_ROWS: usize = 64;

/// Input bytes one batch may hold, all inputs together: batching exists for small requests, and a
/// batch is copied once more into tract's input tensors, so this bounds that copy and the memory
/// of one batched run. A single request larger than this still runs, alone.
pub const MAX_BATCH_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// A checked request of a batch.
pub(super) struct Pending {
    /// Inputs in declared order, checked against the model.
    pub(super) inputs: Vec<Tensor>,
    pub(super) reply: Reply,
}

/// Rows along axis 0 of checked inputs: the size of the batch symbol, which `check_inputs` made
/// equal on every input. Zero for a rank-0 input (never batchable: the load check refuses it).
pub(super) fn rows(inputs: &[Tensor]) -> usize {
    inputs
        .first()
        .and_then(|t| t.shape().first())
        .and_then(|&r| usize::try_from(r).ok())
        .unwrap_or(0)
}

fn bytes(inputs: &[Tensor]) -> usize {
    inputs.iter().map(|t| t.data().len()).sum()
}

/// Whether two requests can share a batch: the same shapes outside axis 0 on every input
/// (dtypes and ranks are the model's, already checked).
fn fit_together(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.shape().get(1..) == y.shape().get(1..))
}

/// What a worker takes from the queue.
pub(super) enum Work {
    /// Any job, run as it is.
    One(Job),
    /// Requests for one batching model, oldest first (possibly just one).
    Batch {
        model: Arc<LoadedModel>,
        batch: Vec<Pending>,
    },
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The bounded queue between the engine and its workers.
pub(super) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    depth: usize,
}

impl JobQueue {
    pub(super) fn new(depth: usize) -> JobQueue {
        JobQueue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            depth: depth.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that can panic runs under the lock; a poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a job, or refuses at once: [`EngineError::Busy`] when `depth` jobs wait already.
    pub(super) fn push(&self, job: Job) -> Result<(), EngineError> {
        let mut state = self.lock();
        if state.closed {
            return Err(EngineError::Internal("every inference worker has stopped"));
        }
        if state.jobs.len() >= self.depth {
            return Err(EngineError::Busy);
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Stops taking jobs; workers finish those queued, then [`Self::next`] returns `None`.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next work, waiting for it; `None` once the queue is closed and empty. Requests joined
    /// into a batch whose requester has gone away are dropped here and counted done in
    /// `in_flight`.
    pub(super) fn next(&self, in_flight: &AtomicUsize) -> Option<Work> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(match job {
                    Job::Infer {
                        model,
                        inputs,
                        reply,
                    } if model.batch_rows().is_some() => {
                        let batch = gather(&mut state.jobs, &model, inputs, reply, in_flight);
                        Work::Batch { model, batch }
                    }
                    job => Work::One(job),
                });
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A batch for `model` starting with the request just popped: the queued requests for the same
/// model that follow it and fit, in order, taken out of `jobs`.
fn gather(
    jobs: &mut VecDeque<Job>,
    model: &Arc<LoadedModel>,
    inputs: Vec<Tensor>,
    reply: Reply,
    in_flight: &AtomicUsize,
) -> Vec<Pending> {
    let max_rows = model.batch_rows().unwrap_or(1);
    let (mut total_rows, mut total_bytes) = (rows(&inputs), bytes(&inputs));
    let mut batch = vec![Pending { inputs, reply }];
    let mut ix = 0;
    while ix < jobs.len() {
        let Some(Job::Infer {
            model: other,
            inputs,
            reply,
        }) = jobs.get(ix)
        else {
            ix += 1;
            continue;
        };
        if !Arc::ptr_eq(other, model) {
            ix += 1;
            continue;
        }
        if reply.is_closed() {
            jobs.remove(ix);
            in_flight.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let fits = batch
            .first()
            .is_some_and(|first| fit_together(&first.inputs, inputs))
            && total_rows.saturating_add(rows(inputs)) <= max_rows
            && total_bytes.saturating_add(bytes(inputs)) <= MAX_BATCH_INPUT_BYTES;
        if !fits {
            break; // The model's next request waits for the next batch: arrival order is kept.
        }
        if let Some(Job::Infer { inputs, reply, .. }) = jobs.remove(ix) {
            total_rows = total_rows.saturating_add(rows(&inputs));
            total_bytes = total_bytes.saturating_add(bytes(&inputs));
            batch.push(Pending { inputs, reply });
        }
    }
    batch
}
