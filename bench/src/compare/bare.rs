//! Bare inference: tract in this process on the same model bytes, with the enclave engine's
//! structure (input facts pinned, optimised once, W worker threads fed by one bounded queue, wire
//! tensors decoded into tract tensors and outputs encoded back on every request), and nothing
//! else: no HTTP, no framing, no sealing.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use sealed_wire::{DType, NamedTensor, Tensor};
use tract_onnx::prelude::{
    Datum, DatumType, TValue, TVec, Tensor as TractTensor, TypedRunnableModel,
};

use crate::tract::{Loaded, Pin};

/// A model ready to run, with its output names in order.
pub struct Plan {
    plan: Arc<TypedRunnableModel>,
    output_names: Vec<String>,
}

/// Loads `onnx` as the engine does (every declared input fact pinned, a dimension without a
/// value a symbol; optimised once; tract's default executor): [`Loaded::load`].
pub fn load(onnx: &[u8]) -> Result<Plan> {
    let loaded = Loaded::load(onnx, Pin::Declared, 1)?;
    Ok(Plan {
        plan: loaded.plan,
        output_names: loaded.output_names,
    })
}

impl Plan {
    /// One inference: wire tensors in, wire tensors out.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<NamedTensor>> {
        let values = inputs
            .iter()
            .map(to_tract)
            .collect::<Result<TVec<TValue>>>()?;
        let outputs = self.plan.run(values)?;
        self.output_names
            .iter()
            .zip(outputs.iter())
            .map(|(name, value)| {
                Ok(NamedTensor {
                    name: name.clone(),
                    tensor: from_tract(value)?,
                })
            })
            .collect()
    }

    /// Several requests as one run, the way the enclave's `--dynamic-batch` runs them: each
    /// input joined along axis 0 in request order, outputs split back by each request's rows.
    pub fn run_rows(&self, requests: &[Vec<Tensor>]) -> Result<Vec<Vec<NamedTensor>>> {
        let rows: Vec<usize> = requests.iter().map(|r| rows(r)).collect();
        let total: usize = rows.iter().sum();
        let inputs = requests.first().map_or(0, Vec::len);
        let mut values = TVec::new();
        for ix in 0..inputs {
            let parts = requests
                .iter()
                .map(|r| r.get(ix).context("a request lacks an input"))
                .collect::<Result<Vec<&Tensor>>>()?;
            let first = parts.first().context("no request")?;
            let mut shape = first.shape().to_vec();
            if let Some(axis0) = shape.first_mut() {
                *axis0 = total as u64;
            }
            let data: Vec<u8> = parts
                .iter()
                .flat_map(|t| t.data().iter().copied())
                .collect();
            values.push(to_tract(&Tensor::new(first.dtype(), shape, data)?)?);
        }
        let outputs = self.plan.run(values)?;
        let mut answers = Vec::with_capacity(rows.len());
        let mut start = 0;
        for n in rows {
            let answer = self
                .output_names
                .iter()
                .zip(outputs.iter())
                .map(|(name, value)| {
                    let part: TValue = value.slice(0, start, start + n)?.into();
                    Ok(NamedTensor {
                        name: name.clone(),
                        tensor: from_tract(&part)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            answers.push(answer);
            start += n;
        }
        Ok(answers)
    }
}

/// Rows along axis 0 of a request's first input.
fn rows(inputs: &[Tensor]) -> usize {
    inputs
        .first()
        .and_then(|t| t.shape().first())
        .map_or(0, |&n| n as usize)
}

/// Fills a zeroed tract tensor from little-endian chunks (the engine's conversion).
fn fill<T: Datum, const N: usize>(
    tensor: &mut TractTensor,
    data: &[u8],
    decode: fn([u8; N]) -> T,
) -> Result<()> {
    let mut view = tensor.try_as_plain_ram_mut()?;
    let slots = view.as_slice_mut::<T>()?;
    if slots.len() * N != data.len() {
        bail!("input length disagrees with its shape");
    }
    for (slot, chunk) in slots.iter_mut().zip(data.as_chunks::<N>().0) {
        *slot = decode(*chunk);
    }
    Ok(())
}

fn to_tract(tensor: &Tensor) -> Result<TValue> {
    let shape: Vec<usize> = tensor
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()?;
    let data = tensor.data();
    let dt = match tensor.dtype() {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        other => bail!("bare runner: input dtype {other} not supported"),
    };
    let mut out = TractTensor::zero_dt(dt, &shape)?;
    match tensor.dtype() {
        DType::F32 => fill::<f32, 4>(&mut out, data, f32::from_le_bytes)?,
        DType::F64 => fill::<f64, 8>(&mut out, data, f64::from_le_bytes)?,
        DType::I32 => fill::<i32, 4>(&mut out, data, i32::from_le_bytes)?,
        _ => fill::<i64, 8>(&mut out, data, i64::from_le_bytes)?,
    }
    Ok(out.into())
}

fn encode<T: Datum, const N: usize>(t: &TractTensor, to_le: fn(&T) -> [u8; N]) -> Result<Vec<u8>> {
    let view = t.try_as_plain_ram()?;
    let values = view.as_slice::<T>()?;
    let mut out = Vec::with_capacity(values.len() * N);
    // Block by block through a stack buffer, as the enclave's `engine::convert::encode` does, so
    // that bare pays the same conversion cost as the enclave and no more.
    let mut block = [0u8; 4096];
    for values in values.chunks(block.len() / N) {
        let n = values.len() * N;
        for (slot, v) in block.as_chunks_mut::<N>().0.iter_mut().zip(values) {
            *slot = to_le(v);
        }
        out.extend_from_slice(&block[..n]);
    }
    Ok(out)
}

fn from_tract(value: &TValue) -> Result<Tensor> {
    let t: &TractTensor = value;
    let shape = t.shape().iter().map(|&d| d as u64).collect();
    let (dtype, data) = match t.datum_type() {
        DatumType::F32 => (DType::F32, encode::<f32, 4>(t, |v| v.to_le_bytes())?),
        DatumType::F64 => (DType::F64, encode::<f64, 8>(t, |v| v.to_le_bytes())?),
        DatumType::I32 => (DType::I32, encode::<i32, 4>(t, |v| v.to_le_bytes())?),
        DatumType::I64 => (DType::I64, encode::<i64, 8>(t, |v| v.to_le_bytes())?),
        DatumType::U8 => (DType::U8, encode::<u8, 1>(t, |v| [*v])?),
        DatumType::Bool => (DType::Bool, encode::<bool, 1>(t, |v| [u8::from(*v)])?),
        other => bail!("bare runner: output dtype {other:?} not supported"),
    };
    Ok(Tensor::new(dtype, shape, data)?)
}

/// What one job gets back.
pub type Answer = Result<Vec<NamedTensor>, String>;

struct Job {
    inputs: Vec<Tensor>,
    reply: SyncSender<Answer>,
}

/// W worker threads sharing one bounded queue (the engine's bounded queue + shared receiver),
/// optionally joining queued jobs like the enclave's `--dynamic-batch`.
pub struct Pool {
    queue: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

/// The name every worker thread's name starts with (`--pin` finds them by it).
pub const WORKER_THREAD_PREFIX: &str = "bare-worker-";

impl Pool {
    /// `batch_rows`: join up to that many rows of jobs already queued (zero wait), as the
    /// enclave does for a model named by `--dynamic-batch`; `None` runs one job at a time.
    pub fn start(plan: Arc<Plan>, workers: usize, batch_rows: Option<usize>) -> Result<Pool> {
        let (queue, rx) = sync_channel::<Job>(64);
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Pool {
            queue: Some(queue),
            workers: Vec::new(),
        };
        // Named like the engine's workers so that their CPU time can be read apart
        // (`/proc/self/task/*/stat`, `super::Counters`).
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let plan = Arc::clone(&plan);
            let handle = std::thread::Builder::new()
                .name(format!("{WORKER_THREAD_PREFIX}{i}"))
                .spawn(move || worker(&plan, &rx, batch_rows.unwrap_or(1)))
                .with_context(|| format!("spawning bare worker {i}"))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Runs one job on a worker and waits for its answer.
    pub fn infer(&self, inputs: Vec<Tensor>) -> Answer {
        let (reply, answer) = sync_channel(1);
        self.queue
            .as_ref()
            .ok_or("pool stopped")?
            .send(Job { inputs, reply })
            .map_err(|_| "pool stopped".to_string())?;
        answer.recv().map_err(|_| "worker gone".to_string())?
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(plan: &Plan, rx: &Mutex<Receiver<Job>>, max_rows: usize) {
    // A job taken while gathering that could not join (another shape, or over the rows) starts
    // the next batch; the bench sends one shape per cell, so this is rare.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => {
                let job = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                job
            }
        };
        let mut batch = vec![first];
        if max_rows > 1 {
            let mut total = rows(&batch[0].inputs);
            loop {
                // `try_lock`: another worker may hold the receiver while it waits in `recv`
                // for new work, which may never come while this worker holds the callers'
                // jobs; then this batch is complete.
                let next = match rx.try_lock() {
                    Ok(rx) => rx.try_recv().ok(),
                    Err(_) => None,
                };
                let Some(next) = next else { break };
                let fits = total + rows(&next.inputs) <= max_rows
                    && next.inputs.len() == batch[0].inputs.len()
                    && next
                        .inputs
                        .iter()
                        .zip(&batch[0].inputs)
                        .all(|(a, b)| a.shape().get(1..) == b.shape().get(1..));
                if !fits {
                    carried = Some(next);
                    break;
                }
                total += rows(&next.inputs);
                batch.push(next);
            }
        }
        if batch.len() == 1 {
            for job in batch {
                let answer = plan.run(&job.inputs).map_err(|e| format!("{e:#}"));
                drop(job.inputs);
                let _ = job.reply.send(answer);
            }
            continue;
        }
        let (inputs, replies): (Vec<Vec<Tensor>>, Vec<SyncSender<Answer>>) =
            batch.into_iter().map(|j| (j.inputs, j.reply)).unzip();
        match plan.run_rows(&inputs) {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                for reply in replies {
                    let _ = reply.send(Err(why.clone()));
                }
            }
        }
    }
}
