//! tract alone, built the way the enclave is: same crate graph, same target, same global
//! allocator (`sealed-alloc`, which keeps freed large blocks on musl), same planner
//! (`sealed-plan`). Built once for glibc and
//! once for musl, the two runs show what the C library costs tract by itself, apart from
//! anything the sealed path adds (docs/performance.md, round 8).
//!
//! ```text
//! cargo run --release -p sealed-enclave --features simulation --example tract_alone -- \
//!     target/bench-models/conv.onnx 1,3,128,128 300 [wipe]
//! ```
//!
//! Prints the p50 / p90 / mean wall time of `runs` inferences on one thread after 30 warm-up
//! runs (pin it with `taskset -c N` to compare builds). The input is a fixed pattern, not data.
//! With `wipe`, the thread wipes what it frees as the enclave's inference workers do
//! (`sealed_alloc::wipe_this_thread`), and the bytes wiped per run are printed: the wipe's cost
//! beside the same runs without it (round 9).

#[global_allocator]
static ALLOCATOR: sealed_alloc::EnclaveAlloc =
    sealed_alloc::EnclaveAlloc::new(cfg!(target_env = "musl"));

use anyhow::{Context, bail};
use std::time::Instant;
use tract_onnx::prelude::*;

const WARM_UP: usize = 30;
/// 1 GiB of f32: more than any benchmark model takes.
const MAX_INPUT_ELEMENTS: usize = 1 << 28;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(shape)) = (args.next(), args.next()) else {
        bail!("usage: tract_alone MODEL.onnx DIM,DIM,... [RUNS] [wipe]");
    };
    let runs: usize = match args.next() {
        Some(n) => n.parse().context("RUNS")?,
        None => 300,
    };
    if runs == 0 {
        bail!("RUNS must be at least 1");
    }
    let wipe = match args.next().as_deref() {
        None => false,
        Some("wipe") => true,
        Some(other) => bail!("unknown argument {other:?} (expected `wipe`)"),
    };
    let shape = shape
        .split(',')
        .map(|d| d.parse::<usize>().context("a DIM"))
        .collect::<anyhow::Result<Vec<usize>>>()?;
    // Optimised by the engine's planner (`sealed_plan`); TRACT_DISABLE_DIRECT_SPATIAL in the
    // environment hands the convolutions back to tract's choice, as `--tract-knob` does.
    let knob = std::env::var(sealed_plan::DIRECT_SPATIAL_KNOB).ok();
    let knobs = knob
        .as_deref()
        .map(|v| (sealed_plan::DIRECT_SPATIAL_KNOB, v));
    let model = sealed_plan::Planner::new(knobs)?
        .optimize(tract_onnx::onnx().model_for_path(&path)?.into_typed()?)?
        .model
        .into_runnable()?;
    // A shape from the command line: bounded before the input is allocated.
    let len = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_INPUT_ELEMENTS)
        .with_context(|| format!("the input shape has more than {MAX_INPUT_ELEMENTS} elements"))?;
    let data: Vec<f32> = (0..len).map(|i| (i % 997) as f32 / 997.0).collect();
    let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into();

    if wipe {
        sealed_alloc::wipe_this_thread();
    }
    for _ in 0..WARM_UP {
        model.run(tvec!(input.clone().into()))?;
    }
    let mut ms = Vec::with_capacity(runs);
    let wiped_before = sealed_alloc::wiped_bytes();
    for _ in 0..runs {
        let start = Instant::now();
        let outputs = model.run(tvec!(input.clone().into()))?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        drop(outputs);
    }
    let wiped_per_run = (sealed_alloc::wiped_bytes() - wiped_before) / runs;
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms.get(((ms.len() - 1) as f64 * q) as usize).copied();
    let libc = if cfg!(target_env = "musl") {
        "musl + sealed-alloc"
    } else {
        "glibc"
    };
    println!(
        "{libc}: {runs} runs  p50 {:.3} ms  p90 {:.3} ms  mean {:.3} ms  wiped {:.1} kB per run",
        at(0.5).unwrap_or_default(),
        at(0.9).unwrap_or_default(),
        ms.iter().sum::<f64>() / runs as f64,
        wiped_per_run as f64 / 1e3,
    );
    Ok(())
}
