//! tract's lazy im2col, with each panel's rows copied as runs of the input instead of gathered
//! one element at a time.
//!
//! A convolution that tract lowers to a matrix product reads its input through `LazyIm2col`:
//! each time the kernel needs a panel (`r` consecutive output points, all `k` input channels ×
//! kernel taps), tract fills it one element at a time through a table of byte offsets. In the
//! bench's `conv` model that gather was 27 % of the enclave's CPU (docs/performance.md, round 12).
//! Yet for a convolution with a stride of 1 over a padded input, the `r` points of a panel that
//! lie on one output row are `r` consecutive input values for every row of the panel: one copy
//! of `r` values per row, not `r` loads through a table. [`Im2colRuns`] copies those panels so
//! and gathers the others (a panel that crosses an output row, a strided convolution) element by
//! element, as tract does; the panels it writes are tract's, value for value, in tract's layout.
//!
//! Why by hand, and how it stays tract's: tract 0.23 has no faster gather and keeps its own op's
//! offsets private. So the planner learns them from tract's op itself: it runs tract's
//! `LazyIm2col` once, at plan time, on a probe input whose every value is its own index, and
//! reads each panel back. Every panel value is then the input index tract reads for that (row,
//! point), which must be `k_offset[row] + n_offset[point]`; the op is replaced only if every value
//! of every panel fits that form, so what this op reads is exactly what tract's read, and every
//! index it reads was seen inside the input. Grouped convolutions, types other than f32, inputs
//! too large to probe exactly, and anything tract's op does not do as described stay tract's.

use std::alloc::Layout;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::MaybeUninit;
use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, IntoTensor, TValue, TVec, TractResult, TypedFact, TypedModel, TypedModelPatch,
    tract_ndarray,
};
use tract_onnx::tract_core::dyn_clone;
use tract_onnx::tract_core::internal::Blob;
use tract_onnx::tract_core::internal::{
    EvalContext, EvalOp, ExoticFact, Op, StaticName, TypedOp, as_op, bail, ensure, f16, format_err,
    op_as_typed_op, op_out_of_plan, tvec,
};
use tract_onnx::tract_core::tract_linalg::mmm::{
    MMMInputFormat, MMMInputValue, PackedMatrixStorage,
};

/// The name tract 0.23 gives its lazy im2col op (`Op::name`); its type is private to tract.
pub const TRACT_OP_NAME: &str = "LazyIm2col";

/// Largest input probed: every index below 2^24 is an exact f32, so a probe value names one
/// input element and nothing else. A larger input keeps tract's op.
pub const MAX_PROBED_INPUT: usize = 1 << 24;

/// Panel widths with a copy specialised to the width (the x86_64 and aarch64 kernels' `nr`s).
/// A contiguous panel of another width is gathered element by element, as tract does.
const SPECIALISED_WIDTHS: [usize; 7] = [4, 6, 8, 12, 16, 24, 32];

/// What one replaced node reads: learnt from tract's op, shared by every run's input value.
#[derive(Clone, PartialEq, Eq)]
struct Gather {
    /// tract's packing format and exotic fact for this node (its `LazyIm2colParams`): a panel
    /// this op writes is laid out as they say, and the matrix product checks against them.
    format: Box<dyn MMMInputFormat>,
    exotic: Box<dyn ExoticFact>,
    /// Panel width (the kernel's `nr`), rows per panel (input channels × taps), output points.
    r: usize,
    k: usize,
    mn: usize,
    /// The input this node was planned for, in f32 elements.
    shape: TVec<usize>,
    len: usize,
    /// The scratch buffer a panel is written into, as tract's op asks for it.
    layout: Layout,
    /// Element offsets: panel row `kk`, output point `n` reads `input[k_offsets[kk] +
    /// n_offsets[n]]`, every such index checked below `len` at plan time.
    k_offsets: Vec<usize>,
    n_offsets: Vec<usize>,
    /// How each panel is written.
    panels: Vec<Panel>,
}

/// How one panel's rows are written (every read index checked at plan time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Panel {
    /// A full panel whose points are consecutive input elements from `base`: each row is one
    /// copy of `r` values from `k_offset + base`.
    Run { base: usize },
    /// A full panel whose points are two such runs (it crosses the end of an output row): each
    /// row is two reads of `r` values merged, the first `split` values from `k_offset + first`,
    /// the rest from `k_offset + second` (the second run's start moved back by `split`).
    TwoRuns {
        first: usize,
        second: usize,
        split: usize,
    },
    /// Anything else (a strided convolution, a narrower last panel, more runs): gathered point
    /// by point through the offsets, as tract gathers it.
    Gather,
}

impl Hash for Gather {
    // The format and fact are tract's and derived from the same plan: the offsets say it all.
    fn hash<H: Hasher>(&self, state: &mut H) {
        (
            self.r,
            self.k,
            self.mn,
            &self.shape,
            &self.k_offsets,
            &self.n_offsets,
        )
            .hash(state);
    }
}

impl Gather {
    /// Panels of `r` output points (the last may be narrower).
    fn panels(&self) -> usize {
        self.panels.len()
    }

    /// Writes panel `i` of `input` into `dst` (`k` rows of `r` values; the columns past a
    /// narrower last panel are left as they are, as tract leaves them).
    fn write_panel(
        &self,
        input: &[f32],
        i: usize,
        dst: &mut [MaybeUninit<f32>],
    ) -> TractResult<()> {
        ensure!(
            input.len() == self.len && dst.len() >= self.k * self.r,
            "Im2colRuns: an input of {} values or a buffer of {} for a plan of {} and {}",
            input.len(),
            dst.len(),
            self.len,
            self.k * self.r
        );
        let Some(&panel) = self.panels.get(i) else {
            bail!("Im2colRuns: panel {i} of {}", self.panels());
        };
        let ko = &self.k_offsets[..];
        let done = match (panel, self.r) {
            (Panel::Run { base }, 4) => copy_rows::<4>(input, ko, base, dst),
            (Panel::Run { base }, 6) => copy_rows::<6>(input, ko, base, dst),
            (Panel::Run { base }, 8) => copy_rows::<8>(input, ko, base, dst),
            (Panel::Run { base }, 12) => copy_rows::<12>(input, ko, base, dst),
            (Panel::Run { base }, 16) => copy_rows::<16>(input, ko, base, dst),
            (Panel::Run { base }, 24) => copy_rows::<24>(input, ko, base, dst),
            (Panel::Run { base }, 32) => copy_rows::<32>(input, ko, base, dst),
            (
                Panel::TwoRuns {
                    first,
                    second,
                    split,
                },
                r,
            ) => {
                let runs = (first, second, split);
                match r {
                    4 => merge_rows::<4>(input, ko, runs, dst),
                    6 => merge_rows::<6>(input, ko, runs, dst),
                    8 => merge_rows::<8>(input, ko, runs, dst),
                    12 => merge_rows::<12>(input, ko, runs, dst),
                    16 => merge_rows::<16>(input, ko, runs, dst),
                    24 => merge_rows::<24>(input, ko, runs, dst),
                    32 => merge_rows::<32>(input, ko, runs, dst),
                    _ => None,
                }
            }
            _ => None,
        };
        if done.is_some() {
            return Ok(());
        }
        let start = i * self.r;
        let end = (start + self.r).min(self.mn);
        let Some(points) = self.n_offsets.get(start..end) else {
            bail!("Im2colRuns: panel {i} is outside the plan");
        };
        gather_rows(input, &self.k_offsets, points, self.r, dst)
            .ok_or_else(|| format_err!("Im2colRuns: panel {i} out of bounds"))
    }
}

/// The `k` rows of `R` values of a panel in `dst`, each with its row offset; `None` if `dst` is
/// too short for them.
fn rows_of<'a, const R: usize>(
    dst: &'a mut [MaybeUninit<f32>],
    k_offsets: &'a [usize],
) -> Option<impl Iterator<Item = (&'a mut [MaybeUninit<f32>; R], usize)>> {
    let (rows, _) = dst.as_chunks_mut::<R>();
    (rows.len() >= k_offsets.len()).then(|| rows.iter_mut().zip(k_offsets.iter().copied()))
}

/// A panel whose `R` points are consecutive input elements from `base`: row `kk` is one copy of
/// `R` values from `k_offsets[kk] + base`. `None` (nothing promised written) if an index falls
/// outside `input` or `dst`, which the plan-time checks rule out.
fn copy_rows<const R: usize>(
    input: &[f32],
    k_offsets: &[usize],
    base: usize,
    dst: &mut [MaybeUninit<f32>],
) -> Option<()> {
    for (row, ko) in rows_of::<R>(dst, k_offsets)? {
        let from = input.get(ko.checked_add(base)?..)?.first_chunk::<R>()?;
        // One array move: the compiler copies it with vector loads and stores.
        *row = from.map(MaybeUninit::new);
    }
    Some(())
}

/// A panel of two runs (see [`Panel::TwoRuns`]): row `kk` is the first `split` values read
/// from `k_offsets[kk] + first`, then the rest of the `R` read from `k_offsets[kk] + second`.
fn merge_rows<const R: usize>(
    input: &[f32],
    k_offsets: &[usize],
    (first, second, split): (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
) -> Option<()> {
    for (row, ko) in rows_of::<R>(dst, k_offsets)? {
        let a = input.get(ko.checked_add(first)?..)?.first_chunk::<R>()?;
        let b = input.get(ko.checked_add(second)?..)?.first_chunk::<R>()?;
        let mut merged = *b;
        for (m, v) in merged.iter_mut().zip(a).take(split) {
            *m = *v;
        }
        *row = merged.map(MaybeUninit::new);
    }
    Some(())
}

/// Any panel: row `kk`, column `j` is `input[k_offsets[kk] + points[j]]` (tract's gather).
fn gather_rows(
    input: &[f32],
    k_offsets: &[usize],
    points: &[usize],
    r: usize,
    dst: &mut [MaybeUninit<f32>],
) -> Option<()> {
    if r == 0 || dst.len() / r < k_offsets.len() {
        return None;
    }
    for (row, &ko) in dst.chunks_exact_mut(r).zip(k_offsets) {
        let from = input.get(ko..)?;
        for (d, &no) in row.iter_mut().zip(points) {
            d.write(*from.get(no)?);
        }
    }
    Some(())
}

/// The op replacing one of tract's `LazyIm2col` nodes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Im2colRuns {
    gather: Arc<Gather>,
    /// The replaced node's output fact (tract's packed-matrix fact).
    output: TypedFact,
}

impl fmt::Debug for Im2colRuns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.gather;
        write!(
            f,
            "Im2colRuns {{ input: {:?}, k: {}, mn: {}, r: {} }}",
            g.shape, g.k, g.mn, g.r
        )
    }
}

impl Im2colRuns {
    /// The op for a node running `tract_op` (tract's `LazyIm2col`) over `input` with `output`
    /// as its fact, or `None` where it does not apply: tract's op is not what the module doc
    /// describes for this input, the input is not a concrete f32 tensor of at most
    /// [`MAX_PROBED_INPUT`] values, or the convolution is grouped.
    pub fn for_node(tract_op: &dyn TypedOp, input: &TypedFact, output: &TypedFact) -> Option<Self> {
        if tract_op.name() != TRACT_OP_NAME || input.datum_type != DatumType::F32 {
            return None;
        }
        // One value: an ungrouped convolution, batched as `[1, 1]`.
        if output.shape.as_concrete()? != [1, 1] {
            return None;
        }
        let shape: TVec<usize> = input.shape.as_concrete()?.into();
        let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
        if len == 0 || len > MAX_PROBED_INPUT {
            return None;
        }
        let gather = learn(tract_op, &shape, len).ok()??;
        Some(Im2colRuns {
            gather: Arc::new(gather),
            output: output.clone(),
        })
    }

    /// Panels copied as runs and panels in all.
    pub fn run_panels(&self) -> (usize, usize) {
        let g = &self.gather;
        let copied = g.panels.iter().filter(|p| **p != Panel::Gather).count();
        (copied, g.panels())
    }
}

/// Runs `tract_op` on the probe (input element `i` holds `i`) and learns its offsets from the
/// panels it writes; `None` if they are not of the form the module doc says.
fn learn(tract_op: &dyn TypedOp, shape: &[usize], len: usize) -> TractResult<Option<Gather>> {
    // Built in place (no second copy): up to 64 MiB at load for the largest input probed.
    let probe: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let probe = tract_ndarray::Array::from_shape_vec(shape, probe)?.into_tensor();
    let outputs = tract_op.eval(&EvalContext::out_of_plan(), tvec!(probe.into()))?;
    let [packed] = outputs.as_slice() else {
        return Ok(None);
    };
    let storage = packed.try_storage_as::<PackedMatrixStorage>()?;
    let [value] = storage.values() else {
        return Ok(None);
    };
    let (k, mn, r) = (value.k(), value.mn(), value.format().r());
    let Some(layout) = value.scratch_panel_buffer_layout() else {
        return Ok(None);
    };
    let Some(panel_len) = k.checked_mul(r) else {
        return Ok(None);
    };
    let panels = mn.div_ceil(r.max(1));
    if k == 0
        || mn == 0
        || r == 0
        || value.panels_count() != panels
        || layout.align() < align_of::<f32>()
        || panel_len
            .checked_mul(size_of::<f32>())
            .is_none_or(|b| b > layout.size())
    {
        return Ok(None);
    }
    let mut buffer = Blob::from_bytes_alignment(&vec![0u8; layout.size()], layout.align())?;
    let mut k_offsets = vec![0usize; k];
    let mut n_offsets = vec![0usize; mn];
    let mut plans = Vec::with_capacity(panels);
    for i in 0..panels {
        let at = buffer.as_bytes_mut().as_mut_ptr();
        // tract's lazy input writes the panel into the buffer it is given and returns it.
        if value.panel_bytes(i, Some(at))? != at.cast_const() {
            return Ok(None);
        }
        let (values, _) = buffer.as_bytes().as_chunks::<4>();
        let value_at = |at: usize| values.get(at).map(|b| f32::from_ne_bytes(*b));
        let (n0, width) = (i * r, r.min(mn - i * r));
        // The first panel's first point fixes each row's offset (the point's is 0), the first
        // row of each panel each point's; every value of the panel must then be their sum.
        if i == 0 {
            for (kk, ko) in k_offsets.iter_mut().enumerate() {
                let Some(index) = value_at(kk * r).and_then(|v| probe_index(v, len)) else {
                    return Ok(None);
                };
                *ko = index;
            }
        }
        let Some(&k0) = k_offsets.first() else {
            return Ok(None);
        };
        let Some(points) = n_offsets.get_mut(n0..n0 + width) else {
            return Ok(None);
        };
        for (j, no) in points.iter_mut().enumerate() {
            let index = value_at(j).and_then(|v| probe_index(v, len));
            let Some(offset) = index.and_then(|index| index.checked_sub(k0)) else {
                return Ok(None);
            };
            *no = offset;
        }
        let points = &*points;
        let every_value_is_the_sum = values.chunks_exact(r).zip(&k_offsets).all(|(row, &ko)| {
            row.iter().zip(points).all(|(bytes, &no)| {
                // Below `len` (≤ 2^24), so the sum is an exact f32: compared as bits.
                ko.checked_add(no).is_some_and(|index| {
                    index < len && f32::from_ne_bytes(*bytes).to_bits() == (index as f32).to_bits()
                })
            })
        });
        if !every_value_is_the_sum || values.len() / r < k {
            return Ok(None);
        }
        let points = n_offsets.get(i * r..i * r + width).unwrap_or_default();
        plans.push(if width == r && SPECIALISED_WIDTHS.contains(&r) {
            // Every row offset is known once the first panel is read.
            let max_k = k_offsets.iter().max().copied().unwrap_or(0);
            panel_plan(points, max_k, len)
        } else {
            Panel::Gather
        });
    }
    Ok(Some(Gather {
        format: dyn_clone::clone_box(value.format()),
        exotic: dyn_clone::clone_box(value.exotic_fact()),
        r,
        k,
        mn,
        shape: shape.into(),
        len,
        layout,
        k_offsets,
        n_offsets,
        panels: plans,
    }))
}

/// How a full panel whose points read the input offsets `points` is written: as one run, as
/// two, or gathered. Two runs are read as two runs of `r` values each, so values past the
/// first run and before the second are read too: that panel is merged only if both reads stay
/// inside the input for the largest row offset `max_k` (else it is gathered).
fn panel_plan(points: &[usize], max_k: usize, len: usize) -> Panel {
    let breaks: Vec<usize> = points
        .iter()
        .zip(points.iter().skip(1))
        .enumerate()
        .filter(|(_, (a, b))| a.checked_add(1) != Some(**b))
        .map(|(j, _)| j + 1)
        .collect();
    let (Some(&first), r) = (points.first(), points.len()) else {
        return Panel::Gather;
    };
    let inside = |start: usize| {
        max_k
            .checked_add(start)
            .and_then(|e| e.checked_add(r))
            .is_some_and(|end| end <= len)
    };
    match breaks[..] {
        [] => Panel::Run { base: first },
        [split] => match points.get(split).and_then(|s| s.checked_sub(split)) {
            Some(second) if inside(first) && inside(second) => Panel::TwoRuns {
                first,
                second,
                split,
            },
            _ => Panel::Gather,
        },
        _ => Panel::Gather,
    }
}

/// The input index a probe value names, if it names one.
fn probe_index(value: f32, len: usize) -> Option<usize> {
    let fits = value >= 0.0 && value.fract() == 0.0 && value < len as f32;
    fits.then_some(value as usize)
}

impl Op for Im2colRuns {
    fn name(&self) -> StaticName {
        "Im2colRuns".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let (runs, panels) = self.run_panels();
        let g = &self.gather;
        Ok(vec![format!(
            "k {} x mn {}, panels of {}: {runs} of {panels} copied as runs (sealed-plan)",
            g.k, g.mn, g.r
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Im2colRuns {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.gather;
        let input = crate::planned_input("Im2colRuns", &inputs, &g.shape)?;
        let value: Box<dyn MMMInputValue> = Box::new(RunsInput {
            input: input.clone(),
            gather: Arc::clone(g),
        });
        let packed = PackedMatrixStorage::new_batched(&[1, 1], tvec!(value));
        Ok(tvec!(packed.into_tensor(DatumType::F32).into()))
    }
}

impl TypedOp for Im2colRuns {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [input] = inputs else {
            bail!("Im2colRuns takes one input, got {}", inputs.len());
        };
        ensure!(
            input.datum_type == DatumType::F32
                && input.shape.as_concrete() == Some(&self.gather.shape[..]),
            "Im2colRuns planned for f32 {:?}, wired to {input:?}",
            self.gather.shape
        );
        Ok(tvec!(self.output.clone()))
    }

    as_op!();
}

/// One run's input, as the matrix product sees it: panels written on demand into the scratch
/// buffer each of its threads has.
#[derive(Clone, PartialEq, Eq)]
struct RunsInput {
    input: TValue,
    gather: Arc<Gather>,
}

impl Hash for RunsInput {
    // Consistent with `PartialEq`: equal inputs have equal gathers. The values are not hashed.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.gather.hash(state);
    }
}

// No input values in either: they are a request's plaintext.
impl fmt::Debug for RunsInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Im2colRuns input {:?}", self.gather.shape)
    }
}

impl fmt::Display for RunsInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl MMMInputValue for RunsInput {
    fn format(&self) -> &dyn MMMInputFormat {
        &*self.gather.format
    }

    fn scratch_panel_buffer_layout(&self) -> Option<Layout> {
        Some(self.gather.layout)
    }

    #[allow(unsafe_code)]
    fn panel_bytes(&self, i: usize, buffer: Option<*mut u8>) -> TractResult<*const u8> {
        let g = &*self.gather;
        let Some(buffer) = buffer else {
            bail!("Im2colRuns: no scratch buffer for panel {i}");
        };
        ensure!(
            buffer.align_offset(align_of::<f32>()) == 0,
            "Im2colRuns: a scratch buffer not aligned for f32"
        );
        let plain = self.input.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        // SAFETY: tract's matrix product calls `panel_bytes` with the scratch buffer it sized
        // and aligned from `scratch_panel_buffer_layout` (tract-linalg `frame/mmm/scratch.rs`),
        // private to the calling thread for the duration of the call; `learn` checked that
        // layout holds `k × r` f32s (alignment checked above). The slice is of `MaybeUninit`,
        // as the buffer may not be initialised, and lives only for this call.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(buffer.cast::<MaybeUninit<f32>>(), g.k * g.r) };
        g.write_panel(input, i, dst)?;
        Ok(buffer.cast_const())
    }

    fn mn(&self) -> usize {
        self.gather.mn
    }

    fn k(&self) -> usize {
        self.gather.k
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        &*self.gather.exotic
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("Im2colRuns holds f32 values")
    }

    fn extract_at_mn_f32(&self, mn: usize, slice: &mut [f32]) -> TractResult<()> {
        let g = &*self.gather;
        let plain = self.input.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let Some(&no) = g.n_offsets.get(mn) else {
            bail!("Im2colRuns: point {mn} of {}", g.mn);
        };
        ensure!(
            slice.len() == g.k,
            "Im2colRuns: {} rows asked of {}",
            slice.len(),
            g.k
        );
        for (out, &ko) in slice.iter_mut().zip(&g.k_offsets) {
            let Some(&v) = input.get(ko + no) else {
                bail!("Im2colRuns: point {mn} out of bounds");
            };
            *out = v;
        }
        Ok(())
    }
}

/// Replaces every `LazyIm2col` node of an optimised model that [`Im2colRuns`] covers; returns
/// how many.
pub(crate) fn replace_lazy_im2cols(model: &mut TypedModel) -> TractResult<usize> {
    let ids: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op.name() == TRACT_OP_NAME)
        .map(|n| n.id)
        .collect();
    let mut replaced = 0;
    for id in ids {
        let node = model.node(id);
        let ([input], [output]) = (&node.inputs[..], &node.outputs[..]) else {
            continue;
        };
        let fact = model.outlet_fact(*input)?;
        let Some(op) = Im2colRuns::for_node(node.op.as_ref(), fact, &output.fact) else {
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
