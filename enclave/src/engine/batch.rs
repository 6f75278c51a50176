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
//! it outside axis 0, while the rows, the input bytes and the output bytes fit, and stops at the
//! first that does not (so that model's requests keep their order). Every waiting request holds
//! exactly one slot, so `queue_depth` and `Busy` mean what they mean without batching.

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

/// Output bytes one batch's run may hold, all outputs together: rows × the model's output bytes
/// per row, which the load fixed (an opted-in model whose outputs have a symbolic dimension other
/// than axis 0 is refused). tract allocates a joined run's outputs before any request's share is
/// checked against the response limits, so the batch is cut here, before it runs. The figure is
/// the tensor data of the largest response one request may get: a joined run then never makes
/// tract hold more output than one lone request that gets an answer can, so batching adds no
/// output memory per worker beyond what serving one request already needs, and each request of a
/// batch that fits also fits its own response. (The 4 MiB input bound is smaller because it
/// bounds an extra copy that only batching makes; the outputs are tract's allocation either way.)
/// A single request over it still runs, alone, and its outputs are checked as without batching.
pub const MAX_BATCH_OUTPUT_BYTES: usize = super::convert::MAX_RESPONSE_DATA_LEN;

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
    pub(super) fn push(&self, job: Job) -> Result<(), (Job, EngineError)> {
        let mut state = self.lock();
        if state.closed {
            return Err((
                job,
                EngineError::Internal("every inference worker has stopped"),
            ));
        }
        if state.jobs.len() >= self.depth {
            return Err((job, EngineError::Busy));
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
    let row_bytes = model.output_row_bytes();
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
        let joined_rows = total_rows.saturating_add(rows(inputs));
        let fits = batch
            .first()
            .is_some_and(|first| fit_together(&first.inputs, inputs))
            && joined_rows <= max_rows
            && total_bytes.saturating_add(bytes(inputs)) <= MAX_BATCH_INPUT_BYTES
            && joined_rows
                .checked_mul(row_bytes)
                .is_some_and(|out| out <= MAX_BATCH_OUTPUT_BYTES);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Output bytes of one row of the wide test model: a megabyte.
    const ROW_ELEMENTS: usize = 256 * 1024;

    fn wide_model() -> Arc<LoadedModel> {
        Arc::new(LoadedModel::wide_for_test(ROW_ELEMENTS, Some(MAX_BATCH_ROWS)).unwrap())
    }

    /// Queues one request of `rows` rows for `model`; its receiver must live for it to be joined.
    fn push(
        queue: &JobQueue,
        in_flight: &AtomicUsize,
        model: &Arc<LoadedModel>,
        rows: u64,
    ) -> tokio::sync::oneshot::Receiver<super::super::ReplyResult> {
        let (reply, receiver) = Reply::channel();
        let values = vec![0.5f32; usize::try_from(rows).unwrap()];
        let inputs = vec![Tensor::from_f32(vec![rows, 1], &values).unwrap()];
        in_flight.fetch_add(1, Ordering::AcqRel);
        let pushed = queue.push(Job::Infer {
            model: Arc::clone(model),
            inputs,
            reply,
        });
        assert!(pushed.is_ok());
        receiver
    }

    /// Rows of each request of the next batch.
    fn next_batch(queue: &JobQueue, in_flight: &AtomicUsize) -> Vec<usize> {
        match queue.next(in_flight) {
            Some(Work::Batch { batch, .. }) => batch.iter().map(|p| rows(&p.inputs)).collect(),
            _ => panic!("expected a batch"),
        }
    }

    #[test]
    fn gathering_stops_at_the_joined_output_budget() {
        let model = wide_model();
        let row_bytes = model.output_row_bytes();
        assert_eq!(row_bytes, ROW_ELEMENTS * 4);
        let fit = MAX_BATCH_OUTPUT_BYTES / row_bytes;
        // The output budget is what binds here, not the rows or the input bytes.
        assert!((2..MAX_BATCH_ROWS).contains(&fit), "{fit}");
        let queued = fit + 5;
        assert!(queued * 4 <= MAX_BATCH_INPUT_BYTES && queued <= MAX_BATCH_ROWS);

        let (queue, in_flight) = (JobQueue::new(64), AtomicUsize::new(0));
        let _replies: Vec<_> = (0..queued)
            .map(|_| push(&queue, &in_flight, &model, 1))
            .collect();
        let first = next_batch(&queue, &in_flight);
        assert_eq!(first.len(), fit);
        assert!(first.len() * row_bytes <= MAX_BATCH_OUTPUT_BYTES);
        assert!((first.len() + 1) * row_bytes > MAX_BATCH_OUTPUT_BYTES);
        assert_eq!(next_batch(&queue, &in_flight), vec![1; 5]);
    }

    #[test]
    fn a_request_over_the_output_budget_still_runs_alone() {
        let model = wide_model();
        let over = u64::try_from(MAX_BATCH_OUTPUT_BYTES / model.output_row_bytes() + 1).unwrap();
        let (queue, in_flight) = (JobQueue::new(64), AtomicUsize::new(0));
        let _replies = [
            push(&queue, &in_flight, &model, over),
            push(&queue, &in_flight, &model, 1),
            push(&queue, &in_flight, &model, 2),
        ];
        let over = usize::try_from(over).unwrap();
        // Alone: nothing is joined to it, and it is not refused.
        assert_eq!(next_batch(&queue, &in_flight), [over]);
        // Requests counted in rows: 1 + 2 rows fit together.
        assert_eq!(next_batch(&queue, &in_flight), [1, 2]);
        assert_eq!(in_flight.load(Ordering::Acquire), 3);
    }
}
