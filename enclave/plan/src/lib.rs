//! How the enclave engine turns a typed tract model into the model it plans, and how the
//! benchmark's bare tract does the same, so that both run one plan.
//!
//! It is tract's optimiser (`into_optimized`: declutter, then codegen and fusing) with one of its
//! codegen decisions taken differently: which 2-D convolutions become tract's direct spatial
//! convolution (`DirectSpatialConv`, which slides four output channels at a time over the input)
//! rather than a lazy im2col feeding its matrix-product kernels. tract 0.23 goes direct for any
//! f32 convolution with an output row of ≥ 128 points and up to 576 inputs per output point
//! (input channels × kernel taps). On x86_64 that kernel is an AVX2 routine that runs at about
//! 25 GFLOP/s whatever the shape, while the matrix product gets faster as the inputs per point
//! grow: measured on 54 single-convolution models (docs/performance.md, round 11), direct wins
//! up to 36 inputs per point and loses from 45 on for 32 output channels or more, by up to
//! 3.9 × (3 × 3, 64 → 64 channels). The bench's `conv` model runs 27 ms → 18 ms. So here a
//! convolution that tract would make direct stays direct only when it has at most
//! [`DIRECT_SPATIAL_MAX_INPUTS`] inputs per point, or fewer than [`NARROW_FROM_CHANNELS`] output
//! channels (where the measurements went both ways) unless it has [`THIN_NARROW_FROM_CHANNELS`]
//! or more and at least [`THIN_NARROW_FROM_INPUTS`] inputs per point (round 13); the others are
//! planned as tract plans them with its `TRACT_DISABLE_DIRECT_SPATIAL` knob on. Only on x86_64,
//! where it was measured.
//!
//! After tract's optimiser, two ops are swapped for this crate's own. [`pool`]: tract 0.23 runs a
//! 2 × 2 max pool with a stride of 2 through a scalar loop (~2 GB/s), 12 % of the bench's `conv`
//! model; [`pool::MaxPool2x2`] computes the same values over whole rows (~9 × faster here).
//! [`im2col`]: tract gathers each im2col panel of a convolution's matrix product one element at a
//! time (27 % of the enclave's CPU on `conv`); [`im2col::Im2colRuns`] writes the same panels with
//! a copy per row where the row is a run of the input (`conv` ~17.5 → ~13.5 ms). On every
//! architecture: portable Rust (one `unsafe` block, the scratch buffer tract hands the gather).
//!
//! What it does not do: parse, type or run a model, choose any other lowering, or override an
//! operator who set the knob: naming `TRACT_DISABLE_DIRECT_SPATIAL` among the engine's tract knobs
//! (either value) gives tract's own choice for every convolution, as that knob says.
//!
//! Why by hand: tract has no setting for this threshold (its knob turns every direct spatial
//! convolution off, which costs the thin ones up to 9 × — a 1 → 32 channel 3 × 3 convolution on
//! 128 × 128 takes 3.1 ms instead of 0.33), so each of those convolutions is lowered here, ahead
//! of tract's codegen, with the knob in a scope around that one node; the rest of the
//! optimisation is tract's own (`TypedModel::optimize`).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use tract_onnx::prelude::{Datum, OutletId, TractResult, TypedModel, TypedOp};
use tract_onnx::tract_core::knobs::KnobScope;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::cnn::conv::DirectSpatialConv;

/// The tract knob that turns direct spatial convolutions off for the nodes lowered under it.
pub const DIRECT_SPATIAL_KNOB: &str = "TRACT_DISABLE_DIRECT_SPATIAL";

/// Inputs per output point (input channels × kernel taps) up to which a direct spatial
/// convolution is kept: every shape measured with ≤ 36 ran faster direct (0.11–0.87 × the
/// im2col time), and from 45 on, with ≥ 32 output channels, all but two ran slower.
pub const DIRECT_SPATIAL_MAX_INPUTS: usize = 40;

/// Output channels from which the rule applies: with 16, direct won at 256 × 256 and lost at
/// 128 × 128 for the same channels, so tract's own choice is kept below this (but see
/// [`THIN_NARROW_FROM_INPUTS`]).
pub const NARROW_FROM_CHANNELS: usize = 32;

/// With 16 to 31 output channels, inputs per point from which direct is turned down all the same:
/// since round 13's faster im2col gather ([`im2col`]), every 16-channel shape measured with ≥ 144
/// inputs per point ran 1.6–3 × faster as im2col at both 128 × 128 and 256 × 256, in two sweeps
/// (docs/performance.md, round 13); between 54 and 108 the winner still depends on the size.
pub const THIN_NARROW_FROM_INPUTS: usize = 144;

/// The fewest output channels [`THIN_NARROW_FROM_INPUTS`] applies to (the thinnest measured).
pub const THIN_NARROW_FROM_CHANNELS: usize = 16;

/// How a model is optimised: with the direct spatial convolutions narrowed to where they pay
/// ([`Planner::new`]), or exactly as tract does ([`Planner::tract`]).
pub struct Planner {
    /// Whether stride-2 2 × 2 max pools run as [`pool::MaxPool2x2`] instead of tract's
    /// `OptMaxPool` after tract's optimiser (the same values, ~9 × faster here).
    max_pools: bool,
    /// Whether tract's lazy im2col inputs are replaced by [`im2col::Im2colRuns`] after tract's
    /// optimiser (the same panels; rows copied as runs where they are runs of the input).
    im2col_runs: bool,
    /// The scope the narrowed convolutions are lowered under: the operator's knobs and
    /// [`DIRECT_SPATIAL_KNOB`] on (a scope replaces the one around it, it does not add to it).
    /// `None`: tract's choice everywhere.
    im2col: Option<KnobScope>,
}

impl Planner {
    /// The engine's planner, given the tract knobs the operator set (`--tract-knob`, already in
    /// force around the load): narrows direct spatial convolutions on x86_64 unless those knobs
    /// name [`DIRECT_SPATIAL_KNOB`]. Fails only where tract refuses the knobs themselves.
    pub fn new<'a>(knobs: impl IntoIterator<Item = (&'a str, &'a str)>) -> TractResult<Planner> {
        let knobs: Vec<(&str, &str)> = knobs.into_iter().collect();
        let im2col = if !cfg!(target_arch = "x86_64")
            || knobs.iter().any(|(k, _)| *k == DIRECT_SPATIAL_KNOB)
        {
            // Checked all the same, so that a bad set fails here as it would anywhere else.
            KnobScope::new(knobs)?;
            None
        } else {
            Some(KnobScope::new(
                knobs.into_iter().chain([(DIRECT_SPATIAL_KNOB, "true")]),
            )?)
        };
        Ok(Planner {
            max_pools: true,
            im2col_runs: true,
            im2col,
        })
    }

    /// tract's own optimiser, unchanged.
    pub fn tract() -> Planner {
        Planner {
            max_pools: false,
            im2col_runs: false,
            im2col: None,
        }
    }

    /// Whether this planner runs stride-2 2 × 2 max pools as [`pool::MaxPool2x2`].
    pub fn replaces_max_pools(&self) -> bool {
        self.max_pools
    }

    /// Whether this planner gathers tract's lazy im2col panels as [`im2col::Im2colRuns`].
    pub fn replaces_lazy_im2col(&self) -> bool {
        self.im2col_runs
    }

    /// Whether this planner lowers some direct spatial convolutions as im2col.
    pub fn narrows_direct_spatial(&self) -> bool {
        self.im2col.is_some()
    }

    /// What `model.into_optimized()` does, with the convolutions narrowed and the max pools
    /// replaced as the crate doc says.
    pub fn optimize(&self, model: TypedModel) -> TractResult<Planned> {
        let (mut model, narrowed) = match &self.im2col {
            None => (model.into_optimized()?, 0),
            Some(im2col) => {
                let mut model = model.into_decluttered()?;
                let narrowed = narrow_direct_spatial(&mut model, im2col)?;
                model.optimize()?;
                (model, narrowed)
            }
        };
        let mut max_pools = 0;
        if self.max_pools {
            max_pools = pool::replace_max_pools(&mut model)?;
        }
        let mut im2col_runs = 0;
        if self.im2col_runs {
            im2col_runs = im2col::replace_lazy_im2cols(&mut model)?;
        }
        if max_pools + im2col_runs > 0 {
            // The replaced nodes are left as dummies: dropped here, as tract's optimiser does.
            model.compact()?;
        }
        Ok(Planned {
            model,
            narrowed,
            max_pools,
            im2col_runs,
        })
    }
}

/// An optimised model, ready to be made runnable.
pub struct Planned {
    pub model: TypedModel,
    /// Convolutions tract would have made direct and that were lowered as im2col instead.
    pub narrowed: usize,
    /// tract max pools replaced by [`pool::MaxPool2x2`].
    pub max_pools: usize,
    /// tract lazy im2col inputs replaced by [`im2col::Im2colRuns`].
    pub im2col_runs: usize,
}

/// Whether a direct spatial convolution is kept for `conv` (when tract would choose one).
pub fn direct_spatial_pays(conv: &Conv) -> bool {
    let taps: usize = conv.pool_spec.kernel_shape.iter().product();
    let inputs = conv.input_channels().saturating_mul(taps);
    let outputs = conv.output_channels();
    let thin_but_wide = outputs >= THIN_NARROW_FROM_CHANNELS && inputs >= THIN_NARROW_FROM_INPUTS;
    inputs <= DIRECT_SPATIAL_MAX_INPUTS || (outputs < NARROW_FROM_CHANNELS && !thin_but_wide)
}

/// The shortest output row tract 0.23 makes direct (its `MIN_DIRECT_SPATIAL_W`).
const MIN_DIRECT_SPATIAL_W: usize = 128;

/// A cheap subset of tract's own conditions for a direct spatial convolution (f32, 2-D, one
/// group, not quantized, a concrete input, output rows of at least 128 points), so that only a
/// candidate pays for the trial codegen below, which packs the kernel's weights once more. tract's
/// codegen stays the authority on the rest.
fn may_go_direct(model: &TypedModel, input: Option<&OutletId>, conv: &Conv) -> bool {
    let Some(fact) = input.and_then(|i| model.outlet_fact(*i).ok()) else {
        return false;
    };
    let Some(shape) = fact.shape.as_concrete() else {
        return false;
    };
    fact.datum_type == f32::datum_type()
        && conv.q_params.is_none()
        && conv.group == 1
        && conv.pool_spec.rank() == 2
        && conv
            .pool_spec
            .output_shape(shape)
            .ok()
            .and_then(|s| s.hw_dims().last().copied())
            .is_some_and(|w| w >= MIN_DIRECT_SPATIAL_W)
}

/// The one f32 input of shape `shape` an op of this crate was planned for, or an error naming
/// `op` (a plan run on another input is refused, not trusted).
fn planned_input<'a>(
    op: &str,
    inputs: &'a [tract_onnx::prelude::TValue],
    shape: &[usize],
) -> TractResult<&'a tract_onnx::prelude::TValue> {
    let [input] = inputs else {
        tract_onnx::tract_core::internal::bail!("{op} takes one input, got {}", inputs.len());
    };
    tract_onnx::tract_core::internal::ensure!(
        input.datum_type() == f32::datum_type() && input.shape() == shape,
        "{op} planned for f32 {shape:?}, given {:?} {:?}",
        input.datum_type(),
        input.shape()
    );
    Ok(input)
}

/// The ids of `model`'s nodes running a `T`, collected ahead of patches that add nodes.
fn nodes_of<T: tract_onnx::prelude::Op>(model: &TypedModel) -> Vec<usize> {
    model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<T>())
        .map(|n| n.id)
        .collect()
}

/// Lowers, under `im2col`, each convolution that tract's codegen would make direct and that
/// [`direct_spatial_pays`] turns down; returns how many. Every other node is left for tract's
/// optimiser. Node ids stay valid while patches apply: a patch appends its nodes and turns the
/// replaced one into a dummy that the optimiser drops.
fn narrow_direct_spatial(model: &mut TypedModel, im2col: &KnobScope) -> TractResult<usize> {
    let mut narrowed = 0;
    for id in nodes_of::<Conv>(model) {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        if direct_spatial_pays(conv) || !may_go_direct(model, node.inputs.first(), conv) {
            continue;
        }
        // Only where tract itself goes direct: quantized, grouped, depthwise, 1-D or symbolic
        // convolutions, and rows too short, keep whatever tract does with them.
        let Some(tracts) = conv.codegen(model, node)? else {
            continue;
        };
        if !tracts
            .model
            .nodes()
            .iter()
            .any(|n| n.op_is::<DirectSpatialConv>())
        {
            continue;
        }
        let Some(patch) = im2col.enter(|| conv.codegen(model, node))? else {
            continue;
        };
        patch.apply(model)?;
        narrowed += 1;
    }
    Ok(narrowed)
}

pub mod im2col;
pub mod pool;

#[cfg(test)]
mod tests;
