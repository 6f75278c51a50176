//! 2 × 2 max pooling with a stride of 2 over f32 planes: the pool every stage of a VGG- or
//! ResNet-style network ends with.
//!
//! Why by hand: tract 0.23's `OptMaxPool` has a vectorised path for stride-1 2 × 2 pools only;
//! a stride-2 one goes through its scalar loop, which checks both taps' bounds for every output
//! point: ~1 ms (2 GB/s) for 32 × 128 × 128 here; the five in the bench's `conv` model took 12 %
//! of its run. This op computes the same values, in the same order (`f32::MIN`, then `f32::max`
//! over the four taps row by row, as tract's loop folds them), over rows the compiler vectorises,
//! and splits the planes over tract's intra-op threads as tract's does. Anything else (other
//! kernels, strides, padding, layouts, types, an index output) stays tract's.

use tract_onnx::prelude::{
    Datum, TValue, TVec, Tensor, TractResult, TypedFact, TypedModel, TypedModelPatch,
};
use tract_onnx::tract_core::internal::{
    EvalContext, EvalOp, Op, StaticName, TypedOp, as_op, bail, ensure, op_as_typed_op,
    op_out_of_plan, tvec,
};
use tract_onnx::tract_core::ops::cnn::{OptMaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::tract_linalg::multithread::par_chunks_mut;

/// The pool for one node: `planes` planes of `h` × `w` points in, `planes` of `h / 2` × `w / 2`
/// out (an odd last row or column is dropped, as a valid 2 × 2 pool drops it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2x2 {
    /// tract's op for the same node: this op's output facts are its.
    tract: OptMaxPool,
    /// The input's concrete shape, checked at every run.
    shape: TVec<usize>,
    planes: usize,
    h: usize,
    w: usize,
}

impl MaxPool2x2 {
    /// The op for a node running `pool` over `input`, or `None` where this op does not apply: the
    /// input is not an f32 NCHW (or CHW) tensor of concrete shape with planes of at least 2 × 2
    /// points, or the pool is not a 2 × 2, stride-2, undilated, unpadded one without an index
    /// output.
    pub fn for_node(input: &TypedFact, pool: &OptMaxPool) -> Option<Self> {
        let spec = &pool.pool_spec;
        let channels_first = matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW);
        let unpadded = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) => is_zero(before) && is_zero(after),
            PaddingSpec::ExplicitOnnxPool(before, after, ceil) => {
                !ceil && is_zero(before) && is_zero(after)
            }
            PaddingSpec::SameUpper | PaddingSpec::SameLower => false,
        };
        let undilated = spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|&x| x == 1));
        let stride_2 = spec.strides.as_ref().is_some_and(|s| s[..] == [2, 2]);
        if input.datum_type != f32::datum_type()
            || pool.with_index_outputs.is_some()
            || !channels_first
            || !unpadded
            || !undilated
            || !stride_2
            || spec.kernel_shape[..] != [2, 2]
        {
            return None;
        }
        let shape: TVec<usize> = input.shape.as_concrete()?.into();
        let (&w, rest) = shape.split_last()?;
        let (&h, lead) = rest.split_last()?;
        // NCHW has two leading axes, CHW one: anything else is not a shape this op knows.
        let expected_lead = if spec.data_format == DataFormat::NCHW {
            2
        } else {
            1
        };
        if lead.len() != expected_lead || h < 2 || w < 2 {
            return None;
        }
        let planes = lead.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
        // The shape comes from the model file: every product `eval` and `pool_chunk` form from it
        // (a plane, all planes) must fit a usize, or the pool stays tract's.
        h.checked_mul(w)?.checked_mul(planes)?;
        // tract's own output shape must be the one this op writes (a ceil-mode pool over an odd
        // size would have one more row or column).
        let out = pool.output_facts(&[input]).ok()?;
        let out_shape = out.first()?.shape.as_concrete()?;
        let mut expected: TVec<usize> = lead.into();
        expected.extend([h / 2, w / 2]);
        if out_shape != &expected[..] || out.len() != 1 {
            return None;
        }
        Some(MaxPool2x2 {
            tract: pool.clone(),
            shape,
            planes,
            h,
            w,
        })
    }
}

fn is_zero(pads: &[usize]) -> bool {
    pads.iter().all(|&p| p == 0)
}

/// One output row from two input rows: `out[x] = MIN ⊔ r0[2x] ⊔ r0[2x+1] ⊔ r1[2x] ⊔ r1[2x+1]`
/// with `⊔` = `f32::max` (a NaN tap is skipped, as in tract's loop).
fn pool_row(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    let (p0, _) = r0.as_chunks::<2>();
    let (p1, _) = r1.as_chunks::<2>();
    for ((o, [a, b]), [c, d]) in out.iter_mut().zip(p0).zip(p1) {
        *o = f32::MIN.max(*a).max(*b).max(*c).max(*d);
    }
}

/// Pools whole planes: `input` holds `out.len() / (oh × ow)` planes of `h` × `w` points.
fn pool_planes(input: &[f32], out: &mut [f32], h: usize, w: usize) {
    let (oh, ow) = (h / 2, w / 2);
    for (plane, out) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (rows, out) in plane.chunks_exact(2 * w).zip(out.chunks_exact_mut(ow)) {
            let (r0, r1) = rows.split_at(w);
            pool_row(r0, r1, out);
        }
    }
}

/// Pools the output planes `first..` that `chunk` holds (whole planes of `h / 2` × `w / 2`)
/// from the planes of `input` (`h` × `w` each) they come from.
fn pool_chunk(
    input: &[f32],
    first: usize,
    chunk: &mut [f32],
    h: usize,
    w: usize,
) -> TractResult<()> {
    let (plane_in, plane_out) = (h * w, (h / 2) * (w / 2));
    ensure!(
        plane_out > 0 && chunk.len().is_multiple_of(plane_out),
        "MaxPool2x2: a chunk of {} values is not whole planes of {plane_out}",
        chunk.len()
    );
    let planes = chunk.len() / plane_out;
    let Some(src) = first
        .checked_mul(plane_in)
        .and_then(|from| input.get(from..))
        .zip(planes.checked_mul(plane_in))
        .and_then(|(rest, len)| rest.get(..len))
    else {
        bail!("MaxPool2x2: {planes} planes from plane {first} are outside the input");
    };
    pool_planes(src, chunk, h, w);
    Ok(())
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "MaxPool2x2".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} planes of {} x {}, stride 2 (sealed-plan)",
            self.planes, self.h, self.w
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = crate::planned_input("MaxPool2x2", &inputs, &self.shape)?;
        let (oh, ow) = (self.h / 2, self.w / 2);
        let plane_out = oh * ow;
        let plain = input.try_as_plain_ram()?;
        let data = plain.as_slice::<f32>()?;
        let mut shape = self.shape.clone();
        let n = shape.len();
        if let Some(dims) = shape.get_mut(n - 2..) {
            dims.copy_from_slice(&[oh, ow]);
        }
        // Allocated as tract allocates its tensors (aligned, in one buffer): an ndarray turned
        // into a tensor would be copied into a second one.
        let mut out = Tensor::zero::<f32>(&shape)?;
        {
            let mut out_plain = out.try_as_plain_ram_mut()?;
            let values = out_plain.as_slice_mut::<f32>()?;
            let total = values.len();
            // Whole output planes per task, as tract's own pool splits them.
            par_chunks_mut(values, plane_out, total, |first, chunk| {
                pool_chunk(data, first, chunk, self.h, self.w)
            })?;
        }
        Ok(tvec!(out.into()))
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract.output_facts(inputs)
    }

    as_op!();
}

/// Replaces every `OptMaxPool` node of an optimised model that [`MaxPool2x2`] covers; returns
/// how many.
pub(crate) fn replace_max_pools(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in crate::nodes_of::<OptMaxPool>(model) {
        let node = model.node(id);
        let (Some(pool), Some(input)) = (node.op_as::<OptMaxPool>(), node.inputs.first()) else {
            continue;
        };
        let fact = model.outlet_fact(*input)?;
        let Some(op) = MaxPool2x2::for_node(fact, pool) else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests;
