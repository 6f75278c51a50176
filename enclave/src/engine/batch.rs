//! Dynamic batching: requests for one model that are already waiting when a worker becomes free
//! run as one inference, their rows concatenated along axis 0.
//!
//! Only for models the enclave image names (`--dynamic-batch MODEL_ID=MAX_ROWS`): rows of
//! different requesters meet in one computation, which is right only for a model that computes
//! each row of axis 0 from that row alone. Shapes cannot prove that (a mean over axis 0 keeps
//! every shape), so the owner of the image decides, and the image is what the attestation
//! measures (PCR0) and what the model's KMS key policy names.
//!
//! The wait is zero: a worker takes what is queued behind the request it picked and never holds a
//! request back for company. Under light load every request runs alone, exactly as without
//! batching; batches form only when requests are already queuing for a worker.
//!
//! Each request keeps its place in the engine's bounded queue through a token ([`super::Job`]),
//! so `queue_depth` and `Busy` mean what they meant. A worker that takes a token drains the
//! model's pending list from its front: the oldest request first, then every following one whose
//! inputs match it outside axis 0, while the rows and the bytes fit. It stops at the first that
//! does not fit, so requests are served in arrival order. A token whose request was already run
//! by an earlier batch finds nothing to do.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use sealed_wire::Tensor;

use super::Reply;

/// The most rows one batch may hold (`--dynamic-batch` refuses more).
pub const MAX_BATCH_ROWS: usize = 64;

/// Input bytes one batch may hold, all inputs together: batching exists for small requests, and a
/// batch is copied once more into tract's input tensors, so this bounds that copy and the memory
/// of one batched run. A single request larger than this still runs, alone.
pub const MAX_BATCH_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// A checked request waiting for a batch.
pub(super) struct Pending {
    /// Inputs in declared order, checked against the model.
    pub(super) inputs: Vec<Tensor>,
    pub(super) reply: Reply,
}

impl Pending {
    /// Rows along axis 0: the size of the batch symbol, which `check_inputs` made equal on every
    /// input. Zero for a rank-0 input (never batchable; the model's load check prevents it).
    pub(super) fn rows(&self) -> usize {
        self.inputs
            .first()
            .and_then(|t| t.shape().first())
            .and_then(|&r| usize::try_from(r).ok())
            .unwrap_or(0)
    }

    fn bytes(&self) -> usize {
        self.inputs.iter().map(|t| t.data().len()).sum()
    }

    /// Whether `other` can share a batch with `self`: the same shapes outside axis 0 on every
    /// input (dtypes and ranks are the model's, already checked).
    fn fits_with(&self, other: &Pending) -> bool {
        self.inputs.len() == other.inputs.len()
            && self
                .inputs
                .iter()
                .zip(&other.inputs)
                .all(|(a, b)| a.shape().get(1..) == b.shape().get(1..))
    }
}

/// A batching model's waiting requests.
pub(super) struct BatchQueue {
    max_rows: usize,
    pending: Mutex<VecDeque<Pending>>,
}

impl BatchQueue {
    pub(super) fn new(max_rows: usize) -> BatchQueue {
        BatchQueue {
            max_rows: max_rows.clamp(1, MAX_BATCH_ROWS),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    pub(super) fn max_rows(&self) -> usize {
        self.max_rows
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        // Nothing that can panic runs under the lock; a poisoned list is still consistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `pending` and calls `enqueue_token` under the lock; if that fails, takes `pending`
    /// back out, so that a request refused as busy never runs. Holding the lock across the
    /// (non-blocking) enqueue keeps a worker from seeing the token before the request.
    pub(super) fn push<E>(
        &self,
        pending: Pending,
        enqueue_token: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut list = self.lock();
        list.push_back(pending);
        match enqueue_token() {
            Ok(()) => Ok(()),
            Err(e) => {
                list.pop_back();
                Err(e)
            }
        }
    }

    /// The next batch, oldest request first; empty if earlier batches took everything. Requests
    /// whose requester has gone away are dropped on the way, and `in_flight` counts them done.
    pub(super) fn take(&self, in_flight: &AtomicUsize) -> Vec<Pending> {
        let mut list = self.lock();
        let mut batch: Vec<Pending> = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(next) = list.front() {
            if next.reply.is_closed() {
                list.pop_front();
                in_flight.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            if let Some(first) = batch.first() {
                let fits = first.fits_with(next)
                    && rows.saturating_add(next.rows()) <= self.max_rows
                    && bytes.saturating_add(next.bytes()) <= MAX_BATCH_INPUT_BYTES;
                if !fits {
                    break;
                }
            }
            let Some(next) = list.pop_front() else { break };
            rows = rows.saturating_add(next.rows());
            bytes = bytes.saturating_add(next.bytes());
            batch.push(next);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn pending(shape: Vec<u64>) -> (Pending, oneshot::Receiver<super::super::ReplyResult>) {
        let n: u64 = shape.iter().product();
        let t = Tensor::from_f32(shape, &vec![0.5; n as usize]).unwrap();
        let (reply, rx) = oneshot::channel();
        (
            Pending {
                inputs: vec![t],
                reply,
            },
            rx,
        )
    }

    fn push(q: &BatchQueue, p: Pending) {
        q.push(p, || Ok::<(), ()>(())).unwrap();
    }

    #[test]
    fn takes_in_order_up_to_the_row_limit_and_stops_at_a_shape_change() {
        let q = BatchQueue::new(4);
        let in_flight = AtomicUsize::new(0);
        let mut keep = Vec::new();
        for shape in [
            vec![1, 8],
            vec![2, 8],
            vec![1, 8],
            vec![1, 8], // over 4 rows: next batch
            vec![1, 9], // different shape outside axis 0: a batch of its own
            vec![1, 8],
        ] {
            let (p, rx) = pending(shape);
            keep.push(rx);
            push(&q, p);
        }
        let rows = |b: &[Pending]| b.iter().map(Pending::rows).collect::<Vec<_>>();
        assert_eq!(rows(&q.take(&in_flight)), [1, 2, 1]);
        let second = q.take(&in_flight);
        assert_eq!(rows(&second), [1]);
        let third = q.take(&in_flight);
        assert_eq!(third[0].inputs[0].shape(), [1, 9]);
        assert_eq!(third.len(), 1);
        assert_eq!(rows(&q.take(&in_flight)), [1]);
        assert!(q.take(&in_flight).is_empty());
    }

    #[test]
    fn a_request_whose_requester_left_is_dropped_and_counted_done() {
        let q = BatchQueue::new(8);
        let in_flight = AtomicUsize::new(3);
        let (a, rx_a) = pending(vec![1, 4]);
        let (b, rx_b) = pending(vec![1, 4]);
        let (c, rx_c) = pending(vec![1, 4]);
        push(&q, a);
        push(&q, b);
        push(&q, c);
        drop(rx_b);
        let batch = q.take(&in_flight);
        assert_eq!(batch.len(), 2);
        assert_eq!(in_flight.load(Ordering::Acquire), 2);
        drop((rx_a, rx_c));
    }

    #[test]
    fn a_refused_token_takes_the_request_back_out() {
        let q = BatchQueue::new(8);
        let (a, _rx) = pending(vec![1, 4]);
        assert_eq!(q.push(a, || Err("busy")), Err("busy"));
        assert!(q.take(&AtomicUsize::new(0)).is_empty());
    }

    #[test]
    fn the_byte_bound_splits_batches_but_a_large_request_still_runs_alone() {
        let q = BatchQueue::new(64);
        let in_flight = AtomicUsize::new(0);
        // 3 MiB each: two do not fit under MAX_BATCH_INPUT_BYTES together.
        let per_row = (3 * 1024 * 1024 / 4) as u64;
        let (a, _ra) = pending(vec![1, per_row]);
        let (b, _rb) = pending(vec![1, per_row]);
        push(&q, a);
        push(&q, b);
        assert_eq!(q.take(&in_flight).len(), 1);
        assert_eq!(q.take(&in_flight).len(), 1);
        // One request over the bound on its own is still taken.
        let (big, _rbig) = pending(vec![2, per_row]);
        push(&q, big);
        assert_eq!(q.take(&in_flight).len(), 1);
    }
}
