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

/// W worker threads sharing one bounded queue (the engine's `sync_channel` + shared receiver).
pub struct Pool {
    queue: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn start(plan: Arc<Plan>, workers: usize) -> Result<Pool> {
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
                .name(format!("bare-worker-{i}"))
                .spawn(move || worker(&plan, &rx))
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

fn worker(plan: &Plan, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let answer = plan.run(&job.inputs).map_err(|e| format!("{e:#}"));
        drop(job.inputs);
        let _ = job.reply.send(answer);
    }
}
