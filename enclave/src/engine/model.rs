//! One loaded model: ONNX bytes parsed by tract, input facts pinned, optimised once into a runnable
//! plan, and the declared inputs and outputs that every request is checked against.
//!
//! tract's error texts are never passed on or logged: they can quote tensor values (a mismatched
//! input is printed with its data) or parts of the model (an unsupported node is printed with its
//! attributes). Errors here name a stage and, at most, a declared input or output name, which the
//! model's published metadata shows anyway.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use sealed_alloc::WipeOnDrop;
use sealed_plan::Planner;
use sealed_wire::limits::{MAX_TENSOR_RANK, MAX_TENSORS};
use sealed_wire::message::valid_name;
use sealed_wire::{DType, ModelInfo, NamedTensor, Tensor, TensorSpec};
use tract_onnx::prelude::multithread::Executor;
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModel, InferenceModelExt, RunOptions, TDim, TValue, TVec,
    TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_core::knobs::KnobScope;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::ops::unimpl::UnimplementedOp;

use super::EngineError;
use super::convert::{self, OutputBudget};

/// One dimension as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A named symbol (ONNX `dim_param`, or one we created for an unnamed dimension): any size
    /// of at least 1, the same wherever the symbol appears.
    Symbol(String),
    /// An expression over symbols (`2*batch`): any size of at least 1 here; tract checks it.
    Expr,
}

/// A declared input.
#[derive(Debug, Clone)]
struct InputSpec {
    name: String,
    dtype: DType,
    dims: Vec<Dim>,
}

/// How the engine loads every model (and, for batching, this one).
pub(super) struct LoadOptions<'a> {
    pub(super) executor: Option<&'a Executor>,
    /// The row limit, for a model served with dynamic batching.
    pub(super) batch_rows: Option<usize>,
    /// tract knobs (`--tract-knob`) in force while the plan is built.
    pub(super) knobs: Option<&'a KnobScope>,
    /// How the typed model is optimised (`sealed_plan`).
    pub(super) planner: &'a Planner,
}

/// A model ready to run.
pub(super) struct LoadedModel {
    info: ModelInfo,
    inputs: Vec<InputSpec>,
    output_names: Vec<String>,
    /// Its constants are the model's weights: dropped with every freed block wiped (the last
    /// `Arc` of the plan is this one; tract's run states live only inside `run_plan`).
    plan: WipeOnDrop<Arc<TypedRunnableModel>>,
    /// The row limit of one batch, for a model served with dynamic batching.
    batch_rows: Option<usize>,
    /// Output bytes of one row, all outputs together, for a model served with dynamic batching
    /// (0 otherwise): known at load, so that a batch's outputs are bounded before it runs.
    output_row_bytes: usize,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("model_id", &self.info.model_id)
            .finish_non_exhaustive()
    }
}

/// Same rule as `sealed-wire` applies to tensor names in requests and responses: a model whose
/// input or output names could never travel on the wire is refused at load time.
fn rejected(reason: impl Into<String>) -> EngineError {
    EngineError::ModelRejected(reason.into())
}

fn spec_dim(dim: &Dim) -> Option<u64> {
    match dim {
        Dim::Fixed(n) => Some(*n),
        Dim::Symbol(_) | Dim::Expr => None,
    }
}

/// Reads one declared input, choosing the fact it is pinned to: the declared dtype and rank, fixed
/// dimensions kept, named symbols kept, and a fresh symbol for a dimension left unnamed.
fn declared_input(
    model: &InferenceModel,
    ix: usize,
) -> Result<(InputSpec, InferenceFact), EngineError> {
    let outlet = *model
        .input_outlets()
        .ok()
        .and_then(|o| o.get(ix))
        .ok_or(EngineError::Internal("input outlet out of range"))?;
    let name = model.node(outlet.node).name.clone();
    if !valid_name(&name) {
        return Err(rejected(format!(
            "input #{ix} has a name the wire cannot carry"
        )));
    }
    let fact = model
        .input_fact(ix)
        .map_err(|_| EngineError::Internal("input fact out of range"))?;
    let dt = fact
        .datum_type
        .concretize()
        .ok_or_else(|| rejected(format!("input `{name}` declares no element type")))?;
    let dtype = convert::wire_dtype(dt).ok_or_else(|| {
        rejected(format!(
            "input `{name}` has an element type the wire cannot carry"
        ))
    })?;
    if fact.shape.is_open() {
        return Err(rejected(format!("input `{name}` declares no shape")));
    }
    let mut dims = Vec::new();
    let mut pinned: TVec<TDim> = TVec::new();
    for d in fact.shape.dims() {
        let tdim = match d.concretize() {
            Some(t) => t,
            None => TDim::Sym(model.symbols.new_with_prefix("unnamed")),
        };
        let dim =
            match &tdim {
                TDim::Val(v) => Dim::Fixed(u64::try_from(*v).map_err(|_| {
                    rejected(format!("input `{name}` declares a negative dimension"))
                })?),
                TDim::Sym(s) => Dim::Symbol(s.to_string()),
                _ => Dim::Expr,
            };
        dims.push(dim);
        pinned.push(tdim);
    }
    if dims.len() > MAX_TENSOR_RANK {
        return Err(rejected(format!(
            "input `{name}` has a rank over {MAX_TENSOR_RANK}"
        )));
    }
    Ok((
        InputSpec { name, dtype, dims },
        InferenceFact::dt_shape(dt, pinned),
    ))
}

impl LoadedModel {
    /// Parses, checks, pins and optimises; the plan runs on `executor` (tract's default, one
    /// thread, when `None`), tract's scoped knobs set from `knobs` while it is built. Runs tract
    /// under `catch_unwind`: a crafted model that makes the parser panic is rejected like any
    /// other bad model.
    pub(super) fn load(
        model_id: &str,
        onnx: Bytes,
        sha384: Vec<u8>,
        options: &LoadOptions<'_>,
    ) -> Result<Self, EngineError> {
        let load = || Self::load_inner(model_id, onnx, sha384, options);
        // tract copies the model as it loads (the decoded protobuf's weights, then tensors, then
        // packed panels) and frees the copies: every block freed during the load is wiped, and
        // none is kept for reuse (sealed_alloc).
        let _hold = sealed_alloc::hold_off();
        match catch_unwind(AssertUnwindSafe(|| match options.knobs {
            Some(scope) => scope.enter(load),
            None => load(),
        })) {
            Ok(result) => result,
            Err(_) => Err(rejected("the engine panicked while loading the model")),
        }
    }

    fn load_inner(
        model_id: &str,
        onnx: Bytes,
        sha384: Vec<u8>,
        options: &LoadOptions<'_>,
    ) -> Result<Self, EngineError> {
        let framework = tract_onnx::onnx();
        // From bytes only: with no model directory, tract refuses external weight files rather
        // than reading anything from the enclave's file system. Decoded straight from the
        // caller's `Bytes`, which prost slices without a copy before copying each field once into
        // the protobuf: tract's `proto_model_for_read` would first copy the model into a buffer
        // of its own (`read_to_end`), and decoding from a plain slice makes prost copy every
        // weight twice (once into a temporary). Round 9 of docs/performance.md measured both.
        let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(onnx)
            .map_err(|_| rejected("not an ONNX protobuf"))?;
        let mut model = framework.model_for_proto_model(&proto).map_err(|_| {
            rejected("the ONNX graph could not be translated (unsupported operator?)")
        })?;
        drop(proto);
        // tract turns an operator it has no builder for into an `UnimplementedOp` node, which
        // only fails later, at typing: name the cause here.
        if model.nodes().iter().any(|n| n.op_is::<UnimplementedOp>()) {
            return Err(EngineError::UnsupportedOperator);
        }

        let input_count = model.input_outlets().map(|o| o.len()).unwrap_or(0);
        let output_outlets = model
            .output_outlets()
            .map_err(|_| EngineError::Internal("model has no output list"))?
            .to_vec();
        if input_count > MAX_TENSORS || output_outlets.len() > MAX_TENSORS {
            return Err(rejected(format!(
                "the model has more than {MAX_TENSORS} inputs or outputs"
            )));
        }
        if output_outlets.is_empty() {
            return Err(rejected("the model declares no output"));
        }

        let mut inputs = Vec::with_capacity(input_count);
        for ix in 0..input_count {
            let (spec, fact) = declared_input(&model, ix)?;
            // Pinned once here, so that optimisation happens once, at load, for these facts.
            model = model
                .with_input_fact(ix, fact)
                .map_err(|_| EngineError::Internal("could not pin an input fact"))?;
            inputs.push(spec);
        }

        let mut output_names: Vec<String> = Vec::with_capacity(output_outlets.len());
        for (ix, outlet) in output_outlets.iter().enumerate() {
            let name = model
                .outlet_label(*outlet)
                .map(str::to_owned)
                .unwrap_or_else(|| model.node(outlet.node).name.clone());
            if !valid_name(&name) {
                return Err(rejected(format!(
                    "output #{ix} has a name the wire cannot carry"
                )));
            }
            if output_names.contains(&name) {
                return Err(rejected(format!("output `{name}` is declared twice")));
            }
            output_names.push(name);
        }

        let typed = model
            .into_typed()
            .map_err(|_| rejected("types and shapes could not be inferred"))?;
        Self::from_typed(model_id, sha384, inputs, output_names, typed, options)
    }

    /// The second half of a load, from tract's typed model on: optimise, plan, read the outputs,
    /// check what batching needs.
    fn from_typed(
        model_id: &str,
        sha384: Vec<u8>,
        inputs: Vec<InputSpec>,
        output_names: Vec<String>,
        typed: TypedModel,
        options: &LoadOptions<'_>,
    ) -> Result<Self, EngineError> {
        let planned = options
            .planner
            .optimize(typed)
            .map_err(|_| rejected("the model could not be optimised"))?;
        if planned.narrowed > 0 {
            tracing::info!(
                model_id,
                convolutions = planned.narrowed,
                "convolutions planned as matrix products instead of tract's direct spatial one"
            );
        }
        if planned.max_pools > 0 {
            tracing::info!(
                model_id,
                max_pools = planned.max_pools,
                "2x2 stride-2 max pools planned as sealed-plan's row kernel instead of tract's"
            );
        }
        if planned.im2col_runs > 0 {
            tracing::info!(
                model_id,
                convolutions = planned.im2col_runs,
                "im2col panels copied as runs of the input (sealed-plan) instead of tract's gather"
            );
        }
        let run_options = RunOptions {
            executor: options.executor.cloned(),
            ..RunOptions::default()
        };
        let batch_rows = options.batch_rows;
        let plan = planned
            .model
            .into_runnable_with_options(&run_options)
            .map_err(|_| rejected("the model could not be planned"))?;

        let plan_model = plan.model();
        if plan_model.output_outlets().map(|o| o.len()).ok() != Some(output_names.len()) {
            return Err(EngineError::Internal(
                "optimisation changed the number of outputs",
            ));
        }
        let mut outputs = Vec::with_capacity(output_names.len());
        for (ix, name) in output_names.iter().enumerate() {
            let fact = plan_model
                .output_fact(ix)
                .map_err(|_| EngineError::Internal("output fact out of range"))?;
            let dtype = convert::wire_dtype(fact.datum_type).ok_or_else(|| {
                rejected(format!(
                    "output `{name}` has an element type the wire cannot carry"
                ))
            })?;
            if fact.shape.rank() > MAX_TENSOR_RANK {
                return Err(rejected(format!(
                    "output `{name}` has a rank over {MAX_TENSOR_RANK}"
                )));
            }
            let shape = fact
                .shape
                .dims()
                .iter()
                .map(|d| d.to_i64().ok().and_then(|v| u64::try_from(v).ok()))
                .collect();
            outputs.push(TensorSpec {
                name: name.clone(),
                dtype: Some(dtype),
                shape,
            });
        }

        let (batch_rows, output_row_bytes) = match batch_rows {
            Some(rows) => {
                check_batch_axis(&inputs, plan_model)?;
                (
                    Some(rows.clamp(1, super::MAX_BATCH_ROWS)),
                    output_row_bytes(plan_model)?,
                )
            }
            None => (None, 0),
        };

        let info = ModelInfo {
            model_id: model_id.to_owned(),
            sha384,
            inputs: inputs
                .iter()
                .map(|i| TensorSpec {
                    name: i.name.clone(),
                    dtype: Some(i.dtype),
                    shape: i.dims.iter().map(spec_dim).collect(),
                })
                .collect(),
            outputs,
        };
        Ok(LoadedModel {
            info,
            inputs,
            output_names,
            plan: WipeOnDrop::new(plan),
            batch_rows,
            output_row_bytes,
        })
    }

    pub(super) fn batch_rows(&self) -> Option<usize> {
        self.batch_rows
    }

    /// Output bytes of one row of a batching model, all outputs together (0 for other models).
    pub(super) fn output_row_bytes(&self) -> usize {
        self.output_row_bytes
    }

    pub(super) fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Checks inputs against the declared names, dtypes and shapes and returns their tensors in
    /// declared order. Cheap: runs on the caller's task, before a worker is taken.
    pub(super) fn check_inputs(&self, given: Vec<NamedTensor>) -> Result<Vec<Tensor>, EngineError> {
        let mismatch = |m: String| EngineError::InputMismatch(m);
        if given.len() > self.inputs.len() {
            return Err(mismatch(format!(
                "{} inputs given, the model declares {}",
                given.len(),
                self.inputs.len()
            )));
        }
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for (k, named) in given.into_iter().enumerate() {
            // The unknown name itself is not echoed: it is client data.
            let ix = self
                .inputs
                .iter()
                .position(|s| s.name == named.name)
                .ok_or_else(|| mismatch(format!("input #{k} is not an input of the model")))?;
            let slot = slots
                .get_mut(ix)
                .ok_or(EngineError::Internal("input slot out of range"))?;
            if slot.is_some() {
                return Err(mismatch(format!("input `{}` is given twice", named.name)));
            }
            *slot = Some(named.tensor);
        }

        let mut symbols: BTreeMap<&str, u64> = BTreeMap::new();
        let mut ordered = Vec::with_capacity(slots.len());
        for (spec, slot) in self.inputs.iter().zip(slots) {
            let name = &spec.name;
            let tensor = slot.ok_or_else(|| mismatch(format!("input `{name}` is missing")))?;
            if tensor.dtype() != spec.dtype {
                return Err(mismatch(format!(
                    "input `{name}` is {}, the model declares {}",
                    tensor.dtype(),
                    spec.dtype
                )));
            }
            if tensor.shape().len() != spec.dims.len() {
                return Err(mismatch(format!(
                    "input `{name}` has rank {}, the model declares {}",
                    tensor.shape().len(),
                    spec.dims.len()
                )));
            }
            for (axis, (dim, &size)) in spec.dims.iter().zip(tensor.shape()).enumerate() {
                match dim {
                    Dim::Fixed(n) if *n != size => {
                        return Err(mismatch(format!(
                            "input `{name}` axis {axis} is {size}, the model declares {n}"
                        )));
                    }
                    Dim::Fixed(_) => {}
                    Dim::Symbol(_) | Dim::Expr if size == 0 => {
                        return Err(mismatch(format!("input `{name}` axis {axis} is empty")));
                    }
                    Dim::Symbol(s) => match symbols.get(s.as_str()) {
                        Some(&bound) if bound != size => {
                            return Err(mismatch(format!(
                                "input `{name}` axis {axis} is {size}, but `{s}` is {bound} elsewhere"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            symbols.insert(s, size);
                        }
                    },
                    Dim::Expr => {}
                }
            }
            ordered.push(tensor);
        }
        Ok(ordered)
    }

    /// Runs several checked requests as one: each input joined along axis 0 in request order, one
    /// run, every output split back by rows. The outer error means the joined run failed as a
    /// whole (the caller runs the requests alone); an inner one concerns that request's outputs.
    /// Called on a worker thread, inside `catch_unwind`, for a model that passed
    /// [`check_batch_axis`] at load.
    pub(super) fn run_rows(
        &self,
        requests: &[Vec<Tensor>],
    ) -> Result<Vec<Result<Vec<NamedTensor>, EngineError>>, EngineError> {
        let rows = requests
            .iter()
            .map(|r| {
                r.first()
                    .and_then(|t| t.shape().first())
                    .and_then(|&n| usize::try_from(n).ok())
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or(EngineError::Internal("a batched request has no axis 0"))?;
        let total = rows
            .iter()
            .try_fold(0usize, |acc, &n| acc.checked_add(n))
            .ok_or(EngineError::Internal("batch rows overflow"))?;
        let mut values = TVec::with_capacity(self.inputs.len());
        for ix in 0..self.inputs.len() {
            let parts = requests
                .iter()
                .map(|r| r.get(ix))
                .collect::<Option<Vec<&Tensor>>>()
                .ok_or(EngineError::Internal("a batched request lacks an input"))?;
            values.push(convert::join_rows(&parts)?);
        }
        let outputs = self.run_plan(values)?;
        if outputs.iter().any(|v| v.shape().first() != Some(&total)) {
            return Err(EngineError::InferenceFailed(
                "a batched output does not have one row per input row",
            ));
        }
        let mut results = Vec::with_capacity(rows.len());
        let mut start = 0usize;
        for n in rows {
            let end = start.saturating_add(n);
            let mut budget = OutputBudget::default();
            let one = self
                .output_names
                .iter()
                .zip(outputs.iter())
                .map(|(name, value)| {
                    let part = value
                        .slice(0, start, end)
                        .map_err(|_| EngineError::Internal("could not split a batched output"))?;
                    Ok(NamedTensor {
                        name: name.clone(),
                        tensor: convert::from_tract(&part.into(), &mut budget)?,
                    })
                })
                .collect();
            results.push(one);
            start = end;
        }
        Ok(results)
    }

    /// One run of the plan; tract's error text is dropped (it may quote values).
    fn run_plan(&self, values: TVec<TValue>) -> Result<TVec<TValue>, EngineError> {
        let outputs = self
            .plan
            .run(values)
            .map_err(|_| EngineError::InferenceFailed("the engine returned an error"))?;
        if outputs.len() != self.output_names.len() {
            return Err(EngineError::Internal(
                "the plan returned an unexpected number of outputs",
            ));
        }
        Ok(outputs)
    }

    /// Runs the plan on checked inputs (in declared order). Called on a worker thread, inside
    /// `catch_unwind`.
    pub(super) fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<NamedTensor>, EngineError> {
        let values = inputs
            .iter()
            .map(convert::to_tract)
            .collect::<Result<TVec<_>, _>>()?;
        drop(inputs);
        let outputs = self.run_plan(values)?;
        let mut budget = OutputBudget::default();
        self.output_names
            .iter()
            .zip(outputs.iter())
            .map(|(name, value)| {
                Ok(NamedTensor {
                    name: name.clone(),
                    tensor: convert::from_tract(value, &mut budget)?,
                })
            })
            .collect()
    }
}

/// Whether requests to this model can be joined along axis 0: every input's axis 0 is one
/// symbol, shared by all and found on no other axis, and every output's axis 0 is that symbol
/// and no other output axis mentions it. Necessary, not sufficient: a model may still mix rows
/// (a mean over axis 0 keeps every shape), which is why batching is opted into per model.
fn check_batch_axis(inputs: &[InputSpec], plan_model: &TypedModel) -> Result<(), EngineError> {
    let refuse = batch_refused;
    let symbol = match inputs.first().and_then(|i| i.dims.first()) {
        Some(Dim::Symbol(s)) => s.clone(),
        _ => {
            return Err(refuse(
                "axis 0 of its first input is not a named symbolic dimension",
            ));
        }
    };
    for input in inputs {
        if input.dims.first() != Some(&Dim::Symbol(symbol.clone())) {
            return Err(refuse(&format!(
                "axis 0 of input `{}` is not `{symbol}`",
                input.name
            )));
        }
        if input
            .dims
            .iter()
            .skip(1)
            .any(|d| matches!(d, Dim::Symbol(s) if *s == symbol) || *d == Dim::Expr)
        {
            return Err(refuse(&format!(
                "input `{}` uses `{symbol}` or an expression beyond axis 0",
                input.name
            )));
        }
    }
    let mentions = |d: &TDim| d.symbols().iter().any(|s| s.to_string() == symbol);
    let outputs = plan_model
        .output_outlets()
        .map_err(|_| EngineError::Internal("model has no output list"))?;
    for ix in 0..outputs.len() {
        let fact = plan_model
            .output_fact(ix)
            .map_err(|_| EngineError::Internal("output fact out of range"))?;
        let dims = fact.shape.dims();
        let axis0_is_symbol = matches!(dims.first(), Some(TDim::Sym(s)) if s.to_string() == symbol);
        if !axis0_is_symbol || dims.iter().skip(1).any(mentions) {
            return Err(refuse(&format!(
                "output #{ix} does not have `{symbol}` on axis 0 alone"
            )));
        }
    }
    Ok(())
}

fn batch_refused(why: &str) -> EngineError {
    rejected(format!(
        "dynamic batching is configured for this model, but {why}"
    ))
}

/// Output bytes of one row along axis 0, all outputs together, for a model that passed
/// [`check_batch_axis`]: every output dimension past axis 0 must be a known size, so that the
/// output tract allocates for a joined run (rows × this) is known, and bounded, before it runs.
/// An output with another symbolic dimension (a sequence length, say) could grow with each
/// request's inputs, times the rows of the batch, and is refused.
fn output_row_bytes(plan_model: &TypedModel) -> Result<usize, EngineError> {
    let outputs = plan_model
        .output_outlets()
        .map_err(|_| EngineError::Internal("model has no output list"))?;
    let mut total = 0usize;
    for ix in 0..outputs.len() {
        let fact = plan_model
            .output_fact(ix)
            .map_err(|_| EngineError::Internal("output fact out of range"))?;
        let mut bytes = Some(fact.datum_type.size_of());
        for dim in fact.shape.dims().iter().skip(1) {
            let Some(size) = dim.as_i64() else {
                return Err(batch_refused(&format!(
                    "output #{ix} has a symbolic dimension besides axis 0: the size of a joined \
                     run's outputs must be known before it runs"
                )));
            };
            bytes = usize::try_from(size)
                .ok()
                .and_then(|n| bytes.and_then(|b| b.checked_mul(n)));
        }
        total = bytes
            .and_then(|b| total.checked_add(b))
            .ok_or_else(|| batch_refused(&format!("output #{ix} is too large per row")))?;
    }
    Ok(total)
}

#[cfg(test)]
impl LoadedModel {
    /// A model built in a test from tract's typed model, loaded as an ONNX one would be from
    /// there on; inputs are named after their source nodes and typed from their facts, outputs
    /// named `y0`, `y1`, ….
    pub(super) fn from_typed_for_test(
        typed: TypedModel,
        batch_rows: Option<usize>,
    ) -> Result<LoadedModel, EngineError> {
        let mut inputs = Vec::new();
        for (ix, outlet) in typed.input_outlets().unwrap().iter().enumerate() {
            let fact = typed.input_fact(ix).unwrap();
            let dims = fact
                .shape
                .dims()
                .iter()
                .map(|d| match d {
                    TDim::Val(v) => Dim::Fixed(u64::try_from(*v).unwrap()),
                    TDim::Sym(s) => Dim::Symbol(s.to_string()),
                    _ => Dim::Expr,
                })
                .collect();
            inputs.push(InputSpec {
                name: typed.node(outlet.node).name.clone(),
                dtype: convert::wire_dtype(fact.datum_type).unwrap(),
                dims,
            });
        }
        let outputs = typed.output_outlets().unwrap().len();
        let output_names = (0..outputs).map(|ix| format!("y{ix}")).collect();
        let planner = Planner::new([]).unwrap();
        let options = LoadOptions {
            executor: None,
            batch_rows,
            knobs: None,
            planner: &planner,
        };
        Self::from_typed("test", vec![0; 48], inputs, output_names, typed, &options)
    }

    /// `y0 = x + 1`, `x` of shape `[batch, 1]` and `y0` of `[batch, row_elements]` (f32): large
    /// outputs per row from a one-element row of input.
    pub(super) fn wide_for_test(
        row_elements: usize,
        batch_rows: Option<usize>,
    ) -> Result<LoadedModel, EngineError> {
        use tract_onnx::prelude::{DatumExt, SpecialOps, Tensor as TractTensor};
        use tract_onnx::tract_core::ops::{change_axes::wire_with_rank_broadcast, math};
        let mut m = TypedModel::default();
        let batch = TDim::Sym(m.symbols.sym("batch"));
        let x = m
            .add_source("x", f32::fact(vec![batch, TDim::Val(1)]))
            .unwrap();
        let ones = TractTensor::from_shape(&[1, row_elements], &vec![1f32; row_elements]).unwrap();
        let c = m.add_const("ones", ones).unwrap();
        let y = wire_with_rank_broadcast("y0", &mut m, math::add(), &[x, c]).unwrap();
        m.select_output_outlets(&y).unwrap();
        Self::from_typed_for_test(m, batch_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::{DatumExt, TypedModel};

    /// A one-node model: its source is its output, with `shape`.
    fn identity(shape: impl Fn(&TypedModel) -> Vec<TDim>) -> TypedModel {
        let mut m = TypedModel::default();
        let dims = shape(&m);
        let x = m.add_source("x", f32::fact(dims)).unwrap();
        m.select_output_outlets(&[x]).unwrap();
        m
    }

    fn spec(dims: Vec<Dim>) -> Vec<InputSpec> {
        vec![InputSpec {
            name: "x".into(),
            dtype: DType::F32,
            dims,
        }]
    }

    fn batch(m: &TypedModel) -> TDim {
        TDim::Sym(m.symbols.sym("batch"))
    }

    #[test]
    fn a_shared_symbolic_axis_0_is_batchable() {
        let m = identity(|m| vec![batch(m), 3.into()]);
        let dims = vec![Dim::Symbol("batch".into()), Dim::Fixed(3)];
        check_batch_axis(&spec(dims), &m).unwrap();
    }

    #[test]
    fn a_fixed_or_misplaced_batch_axis_is_refused_with_the_reason() {
        let fixed = identity(|_| vec![1.into(), 3.into()]);
        let err = check_batch_axis(&spec(vec![Dim::Fixed(1), Dim::Fixed(3)]), &fixed).unwrap_err();
        assert!(matches!(err, EngineError::ModelRejected(_)), "{err:?}");
        assert!(err.to_string().contains("dynamic batching"), "{err}");

        // The symbol also on axis 1 of the input.
        let twice = identity(|m| vec![batch(m), batch(m)]);
        let dims = vec![Dim::Symbol("batch".into()), Dim::Symbol("batch".into())];
        assert!(check_batch_axis(&spec(dims), &twice).is_err());

        // Inputs fine, but the output carries the symbol on axis 1, not 0.
        let moved = identity(|m| vec![3.into(), batch(m)]);
        let dims = vec![Dim::Symbol("batch".into()), Dim::Fixed(3)];
        let err = check_batch_axis(&spec(dims), &moved).unwrap_err();
        assert!(err.to_string().contains("output #0"), "{err}");
    }

    #[test]
    fn a_batching_model_with_another_symbolic_output_dim_is_refused_with_the_reason() {
        let seq = |m: &TypedModel| vec![batch(m), TDim::Sym(m.symbols.sym("seq"))];
        // The batch axis alone is fine: only the output size per row is unknown.
        let dims = vec![Dim::Symbol("batch".into()), Dim::Symbol("seq".into())];
        check_batch_axis(&spec(dims), &identity(seq)).unwrap();

        let err = LoadedModel::from_typed_for_test(identity(seq), Some(8)).unwrap_err();
        assert!(matches!(err, EngineError::ModelRejected(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("dynamic batching is configured"), "{msg}");
        assert!(msg.contains("output #0 has a symbolic dimension"), "{msg}");
        assert!(msg.contains("must be known before it runs"), "{msg}");
        assert_eq!(err.code(), sealed_wire::ErrorCode::ModelRejected);

        // Without batching the same model loads: its outputs are checked after each run.
        let plain = LoadedModel::from_typed_for_test(identity(seq), None).unwrap();
        assert_eq!(plain.batch_rows(), None);
    }

    #[test]
    fn output_bytes_per_row_sum_every_output_past_axis_0() {
        // Two outputs, [batch, 3, 5] f32 and [batch, 2] i64: 60 + 16 bytes a row.
        let mut m = TypedModel::default();
        let b = batch(&m);
        let x = m
            .add_source("x", f32::fact(vec![b.clone(), 3.into(), 5.into()]))
            .unwrap();
        let n = m.add_source("n", i64::fact(vec![b, 2.into()])).unwrap();
        m.select_output_outlets(&[x, n]).unwrap();
        let loaded = LoadedModel::from_typed_for_test(m, Some(8)).unwrap();
        assert_eq!(loaded.batch_rows(), Some(8));
        assert_eq!(loaded.output_row_bytes(), 76);

        let wide = LoadedModel::wide_for_test(1000, Some(8)).unwrap();
        assert_eq!(wide.output_row_bytes(), 4000);
        // Not batching: not computed, and not needed.
        let plain = LoadedModel::wide_for_test(1000, None).unwrap();
        assert_eq!(plain.output_row_bytes(), 0);
    }
}
