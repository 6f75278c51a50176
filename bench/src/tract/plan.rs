//! Loading a model the way the enclave engine does (`enclave/src/engine/model.rs`: from bytes,
//! every declared input fact pinned — a dimension without a value becomes a symbol —, optimised
//! once by the engine's planner, `sealed_plan`, one plan), with two knobs the engine does not have
//! yet: axis 0 pinned to a batch size, and an intra-op executor. The one loader of the bench: `compare`'s bare runner
//! loads with [`Pin::Declared`] and one thread, exactly as the engine does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use serde_json::{Value, json};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModelExt, IntoTensor, RunOptions, TDim, TValue,
    TVec, Tensor, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::Factoid;

use super::Budget;

/// tract as pinned in the workspace (`Cargo.toml`).
pub const TRACT_VERSION: &str = "0.23.9";

/// Whether this build has tract's multithreaded matmul executor (`multithread-mm`).
pub const MULTITHREAD: bool = cfg!(feature = "multithread-mm");

/// Sets tract's panel threshold below which its executor runs a matmul inline.
pub fn set_panel_threshold(panels: usize) -> Result<()> {
    #[cfg(feature = "multithread-mm")]
    {
        tract_onnx::prelude::multithread::set_threading_panel_threshold(panels);
        Ok(())
    }
    #[cfg(not(feature = "multithread-mm"))]
    {
        let _ = panels;
        bail!("--mt-panel-threshold needs a build with the multithread-mm feature")
    }
}

/// How the input facts are pinned.
#[derive(Debug, Clone, Copy)]
pub enum Pin {
    /// As the engine pins them: declared sizes kept, unnamed dimensions made symbols.
    Declared,
    /// As declared, with axis 0 of every input set to `size`; with `free_outputs`, the declared
    /// output facts are dropped too (a model exported with a fixed batch of 1 declares its
    /// outputs `[1, …]`, which a batch of more contradicts).
    Batch { size: usize, free_outputs: bool },
}

/// One dimension of a declared input, as the engine's plan was pinned with it.
#[derive(Debug, Clone)]
enum Dim {
    Fixed(usize),
    Symbolic,
}

#[derive(Debug, Clone)]
struct InputDecl {
    name: String,
    dt: DatumType,
    dims: Vec<Dim>,
}

/// A plan, the declared inputs it was pinned from and its output names in order.
#[derive(Clone)]
pub struct Loaded {
    pub plan: Arc<TypedRunnableModel>,
    inputs: Vec<InputDecl>,
    /// Each output's label, or its node's name without one (as the engine names them).
    pub output_names: Vec<String>,
}

fn executor_options(threads: usize) -> Result<RunOptions> {
    if threads <= 1 {
        return Ok(RunOptions::default());
    }
    #[cfg(feature = "multithread-mm")]
    {
        Ok(RunOptions {
            executor: Some(tract_onnx::prelude::multithread::Executor::multithread(
                threads,
            )),
            ..RunOptions::default()
        })
    }
    #[cfg(not(feature = "multithread-mm"))]
    {
        bail!("{threads} threads need a build with the multithread-mm feature")
    }
}

impl Loaded {
    /// Parses `onnx`, pins its input facts as `pin` says, optimises once and plans with an
    /// executor of `threads` threads (1: tract's default, inline, as the engine runs).
    pub fn load(onnx: &[u8], pin: Pin, threads: usize) -> Result<Loaded> {
        let framework = tract_onnx::onnx();
        // As the engine's plaintext load decodes (enclave/src/engine/model.rs): one exact copy
        // into `Bytes`, which prost then slices without copying (decoding from the plain slice
        // would copy every weight twice; tract's `read_to_end` copies the whole model first).
        let proto =
            <tract_onnx::pb::ModelProto as prost::Message>::decode(Bytes::copy_from_slice(onnx))
                .context("parsing the ONNX protobuf")?;
        let mut model = framework
            .model_for_proto_model(&proto)
            .context("translating the ONNX graph")?;
        drop(proto);
        let count = model.input_outlets()?.len();
        let mut inputs = Vec::with_capacity(count);
        for ix in 0..count {
            let name = model.node(model.input_outlets()?[ix].node).name.clone();
            let fact = model.input_fact(ix)?.clone();
            let dt = fact
                .datum_type
                .concretize()
                .ok_or_else(|| anyhow!("input `{name}` declares no element type"))?;
            ensure!(!fact.shape.is_open(), "input `{name}` declares no shape");
            let mut dims = Vec::new();
            let mut pinned: TVec<TDim> = TVec::new();
            for (axis, d) in fact.shape.dims().enumerate() {
                let declared = match d.concretize() {
                    Some(t) => t,
                    None => TDim::Sym(model.symbols.new_with_prefix("unnamed")),
                };
                dims.push(match declared.to_i64() {
                    Ok(v) => Dim::Fixed(usize::try_from(v)?),
                    Err(_) => Dim::Symbolic,
                });
                pinned.push(match pin {
                    Pin::Batch { size, .. } if axis == 0 => TDim::Val(i64::try_from(size)?),
                    _ => declared,
                });
            }
            model = model.with_input_fact(ix, InferenceFact::dt_shape(dt, pinned))?;
            inputs.push(InputDecl { name, dt, dims });
        }
        let output_names = model
            .output_outlets()?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_owned)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        if let Pin::Batch {
            free_outputs: true, ..
        } = pin
        {
            for ix in 0..model.output_outlets()?.len() {
                model.set_output_fact(ix, InferenceFact::default())?;
            }
        }
        let typed = model.into_typed().context("typing")?;
        // Optimised as the engine optimises. The bench takes tract's knobs from its environment
        // (tract reads them there); the direct spatial one, set there, hands the convolutions
        // back to tract's choice as `--tract-knob` does in the enclave.
        let knob = std::env::var(sealed_plan::DIRECT_SPATIAL_KNOB).ok();
        let knobs = knob
            .as_deref()
            .map(|v| (sealed_plan::DIRECT_SPATIAL_KNOB, v));
        let plan = sealed_plan::Planner::new(knobs)
            .context("the engine's planner (TRACT_DISABLE_DIRECT_SPATIAL)")?
            .optimize(typed)
            .context("optimising")?
            .model
            .into_runnable_with_options(&executor_options(threads)?)
            .context("planning")?;
        Ok(Loaded {
            plan,
            inputs,
            output_names,
        })
    }

    pub fn describe_inputs(&self) -> String {
        self.inputs
            .iter()
            .map(|i| {
                let dims: Vec<String> = i
                    .dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => n.to_string(),
                        Dim::Symbolic => "?".to_owned(),
                    })
                    .collect();
                format!("{} {:?} [{}]", i.name, i.dt, dims.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Why axis 0 cannot be a batch here, if it cannot.
    pub fn batch_axis_refusal(&self) -> Option<String> {
        self.inputs.iter().find_map(|i| match i.dims.first() {
            None => Some(format!("input `{}` is a scalar", i.name)),
            Some(_) if i.dims.len() < 2 => Some(format!(
                "input `{}` has rank 1: axis 0 is its only axis, not a batch",
                i.name
            )),
            Some(Dim::Fixed(n)) if *n != 1 => Some(format!(
                "input `{}` declares axis 0 = {n}, not a batch of 1",
                i.name
            )),
            Some(_) => None,
        })
    }

    /// One sample for every input, at the declared shape (a symbolic dimension sized from the
    /// benchmark's input bytes, or 1), with values drawn from `seed`.
    pub fn sample_inputs(&self, input_bytes: &[u64], seed: u64) -> Result<TVec<TValue>> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(ix, decl)| {
                let fixed: usize = decl
                    .dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Symbolic => 1,
                    })
                    .product();
                let symbolic = decl
                    .dims
                    .iter()
                    .filter(|d| matches!(d, Dim::Symbolic))
                    .count();
                let elem = decl.dt.size_of().max(1);
                let free = match (symbolic, input_bytes.get(ix)) {
                    (1, Some(&bytes)) => (usize::try_from(bytes)? / elem / fixed.max(1)).max(1),
                    _ => 1,
                };
                let shape: Vec<usize> = decl
                    .dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Symbolic => free,
                    })
                    .collect();
                Ok(sample_tensor(decl.dt, &shape, seed * 31 + ix as u64 + 1)?.into())
            })
            .collect()
    }
}

/// Deterministic values (xorshift64*): floats in [-1, 1), integers in 0..10.
fn sample_tensor(dt: DatumType, shape: &[usize], seed: u64) -> Result<Tensor> {
    let len: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    Ok(match dt {
        DatumType::F32 => {
            let v: Vec<f32> = (0..len).map(|_| unit(next()) as f32).collect();
            Tensor::from_shape(shape, &v)?
        }
        DatumType::F64 => {
            let v: Vec<f64> = (0..len).map(|_| unit(next())).collect();
            Tensor::from_shape(shape, &v)?
        }
        DatumType::I64 => {
            let v: Vec<i64> = (0..len).map(|_| (next() % 10) as i64).collect();
            Tensor::from_shape(shape, &v)?
        }
        DatumType::I32 => {
            let v: Vec<i32> = (0..len).map(|_| (next() % 10) as i32).collect();
            Tensor::from_shape(shape, &v)?
        }
        other => Tensor::zero_dt(other, shape)?,
    })
}

/// Concatenates samples along axis 0, input by input.
pub fn stack(samples: &[TVec<TValue>]) -> Result<TVec<TValue>> {
    let first = samples.first().context("no sample")?;
    (0..first.len())
        .map(|ix| {
            let parts: Vec<&Tensor> = samples
                .iter()
                .map(|s| s.get(ix).map(|v| &**v).context("ragged samples"))
                .collect::<Result<_>>()?;
            Ok(Tensor::stack_tensors(0, &parts)?.into())
        })
        .collect()
}

/// Largest |difference| between row `k` of every batched output and the same output run alone.
pub fn row_diff(batched: &TVec<TValue>, alone: &TVec<TValue>, k: usize) -> Result<f32> {
    ensure!(batched.len() == alone.len(), "output counts differ");
    let mut worst = 0f32;
    for (b, a) in batched.iter().zip(alone) {
        let b = b.cast_to::<f32>()?;
        let a = a.cast_to::<f32>()?;
        let b = b.try_as_plain_ram()?;
        let a = a.try_as_plain_ram()?;
        let (b, a) = (b.as_slice::<f32>()?, a.as_slice::<f32>()?);
        let n = a.len();
        if n == 0 || b.len() % n != 0 {
            bail!(
                "an output of {} values does not split into rows of {n}",
                b.len()
            );
        }
        let row = b
            .get(k * n..(k + 1) * n)
            .ok_or_else(|| anyhow!("an output is not batched along axis 0"))?;
        for (x, y) in row.iter().zip(a) {
            worst = worst.max((x - y).abs());
        }
    }
    Ok(worst)
}

/// One op kind of the optimised plan.
pub struct OpShare {
    pub name: String,
    pub count: usize,
    pub share: f64,
    pub ms_per_run: f64,
}

/// One node of the optimised plan, with tract's own description of it (for a matrix product:
/// m, k, n and the kernel its cost model picked).
pub struct NodeShare {
    pub name: String,
    pub op: String,
    pub info: Vec<String>,
    pub ms_per_run: f64,
}

/// Nodes listed one by one: the slowest, enough to see which kernels a model's time goes to.
pub const SLOWEST_NODES: usize = 12;

pub struct Profile {
    pub nodes: usize,
    /// Nodes whose output shape is not concrete.
    pub symbolic: Vec<String>,
    pub ops: Vec<OpShare>,
    /// The [`SLOWEST_NODES`] slowest nodes, slowest first.
    pub slowest: Vec<NodeShare>,
}

impl Profile {
    pub fn to_json(&self) -> Value {
        json!({
            "nodes": self.nodes,
            "symbolic": self.symbolic,
            "ops": self.ops.iter().map(|o| json!({
                "op": o.name, "count": o.count, "share": o.share, "ms_per_run": o.ms_per_run,
            })).collect::<Vec<_>>(),
            "slowest_nodes": self.slowest.iter().map(|n| json!({
                "node": n.name, "op": n.op, "info": n.info, "ms_per_run": n.ms_per_run,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Runs the plan through tract's own evaluation loop with a clock around every node, and sums
/// the time by op kind. The clock adds a little per node: shares, not absolute figures.
pub fn profile(loaded: &Loaded, inputs: &TVec<TValue>, budget: Budget) -> Result<Profile> {
    let model = loaded.plan.model();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut symbolic = Vec::new();
    for node in model.nodes() {
        *counts.entry(node.op().name().to_string()).or_default() += 1;
        if node.outputs.iter().any(|o| !o.fact.shape.is_concrete()) {
            symbolic.push(format!("{} ({})", node.name, node.op().name()));
        }
    }
    let mut spent: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_node = vec![0.0f64; model.nodes().len()];
    let mut runs = 0usize;
    let started = Instant::now();
    while runs < budget.min_runs || started.elapsed() < budget.time {
        let mut state = loaded.plan.spawn()?;
        let values: TVec<TValue> = inputs
            .iter()
            .map(|v| v.clone().into_tensor().into())
            .collect();
        state.run_plan_with_eval(values, |ctx, op_state, node, node_inputs| {
            let t = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, node_inputs);
            let secs = t.elapsed().as_secs_f64();
            *spent.entry(node.op().name().to_string()).or_default() += secs;
            if let Some(n) = by_node.get_mut(node.id) {
                *n += secs;
            }
            out
        })?;
        runs += 1;
    }
    let total: f64 = spent.values().sum();
    let mut ops: Vec<OpShare> = counts
        .into_iter()
        .map(|(name, count)| {
            let s = spent.get(&name).copied().unwrap_or(0.0);
            OpShare {
                share: if total > 0.0 { s / total } else { 0.0 },
                ms_per_run: s * 1e3 / runs.max(1) as f64,
                name,
                count,
            }
        })
        .collect();
    ops.sort_by(|a, b| b.share.total_cmp(&a.share));
    let mut order: Vec<usize> = (0..by_node.len()).collect();
    order.sort_by(|&a, &b| by_node[b].total_cmp(&by_node[a]));
    let slowest = order
        .into_iter()
        .take(SLOWEST_NODES)
        .filter_map(|id| {
            let node = model.nodes().get(id)?;
            Some(NodeShare {
                name: node.name.clone(),
                op: node.op().name().to_string(),
                info: node.op().info().unwrap_or_default(),
                ms_per_run: by_node[id] * 1e3 / runs.max(1) as f64,
            })
        })
        .collect();
    Ok(Profile {
        nodes: model.nodes().len(),
        symbolic,
        ops,
        slowest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sim/assets/digits/digits.onnx"
        );
        std::fs::read(path).unwrap()
    }

    #[test]
    fn batch_pin_gives_each_sample_its_own_row() {
        let onnx = digits();
        let base = Loaded::load(&onnx, Pin::Declared, 1).unwrap();
        assert_eq!(base.batch_axis_refusal(), None);
        // Named as the engine names them (the wire's output names), in the model's order.
        assert_eq!(base.output_names, ["probabilities", "label"]);
        let batched = Loaded::load(
            &onnx,
            Pin::Batch {
                size: 3,
                free_outputs: false,
            },
            1,
        )
        .unwrap();
        let samples: Vec<_> = (0..3)
            .map(|k| base.sample_inputs(&[256], k).unwrap())
            .collect();
        assert_eq!(samples[0][0].shape(), &[1, 64]);
        assert_ne!(samples[0][0], samples[1][0], "seeds draw different samples");
        let out = batched.plan.run(stack(&samples).unwrap()).unwrap();
        assert_eq!(out[0].shape(), &[3, 10]);
        for (k, sample) in samples.iter().enumerate() {
            let alone = base.plan.run(sample.clone()).unwrap();
            assert!(row_diff(&out, &alone, k).unwrap() < 1e-5);
        }
        // A row of another sample does not match: the check can fail.
        let other = base.plan.run(samples[1].clone()).unwrap();
        assert!(row_diff(&out, &other, 0).unwrap() > 1e-6);
    }

    #[test]
    fn rank_one_input_is_not_a_batch() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sim/assets/digits/add_i64.onnx"
        );
        let base = Loaded::load(&std::fs::read(path).unwrap(), Pin::Declared, 1).unwrap();
        assert!(base.batch_axis_refusal().unwrap().contains("rank 1"));
    }
}
