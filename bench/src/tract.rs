//! `sealed-bench tract`: tract alone on the benchmark models, to find how fast it can be here and
//! how far it is from onnxruntime (issue 6).
//!
//! Per model it measures the plan built the way the enclave engine builds it (input facts pinned,
//! declutter + optimise once, `enclave/src/engine/model.rs`), timing `plan.run` only (the wire
//! conversion around it is measured by `compare`):
//! - the p50 single-threaded, and with tract's multithreaded matmul executor at N threads
//!   (`--threads`, needs the `multithread-mm` feature), alone and with C callers at once
//!   (`--concurrency`, the engine's workers);
//! - **batching potential**: the input's axis 0 pinned to B (`with_input_fact`), per-sample time
//!   at B = 1, 2, 4, 8, 16 against B = 1, and whether every row of the batched output equals
//!   the same sample run alone (a model that mixes samples along axis 0 fails that);
//! - beside them, onnxruntime's figures from `scripts/bench_onnxruntime.py` (`--ort-json`).
//!
//! `--plan` prints the optimised plan's op kinds with their share of the run time.
//!
//! What it does not do: measure the engine's queue, the wire conversion or anything sealed, or
//! assert anything about speed.
//!
//! # Layout
//! - this file: the command line, the measurements and the report;
//! - [`plan`]: loading a model the way the engine does, with a pinned batch and an executor.

mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tract_onnx::prelude::{IntoTensor, TValue, TVec, TypedRunnableModel};

// The bench's one model loader: `compare`'s bare runner loads with it too.
pub(crate) use plan::{Loaded, Pin};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of the benchmark models (`models.json` + the ONNX files). Named as in
    /// `compare` and `micro`; `--models` is the name it had first, kept for scripts.
    #[arg(long, visible_alias = "models", default_value = "target/bench-models")]
    models_dir: PathBuf,
    /// Only these model ids (repeatable; default: every model in models.json).
    #[arg(long = "model")]
    only: Vec<String>,
    /// onnxruntime's figures (`scripts/bench_onnxruntime.py`), shown beside tract's if present.
    #[arg(long, default_value = "target/bench-results/onnxruntime.json")]
    ort_json: PathBuf,
    /// Intra-op threads to measure (tract's multithreaded matmul executor above 1; needs the
    /// `multithread-mm` feature). Default: 1, and 1,2 when the feature is on.
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Concurrent callers of one plan (the engine's workers). Default: 1,2 (1 with --quick).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Batch sizes for the batching-potential table.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    batches: Vec<usize>,
    /// Panels below which tract's executor runs a matmul inline (tract's default: 64).
    #[arg(long)]
    mt_panel_threshold: Option<usize>,
    /// Print the optimised plan: op kinds, counts, share of the run time, concrete shapes.
    #[arg(long)]
    plan: bool,
    /// Short measurements (about a tenth of the time), for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One model of `models.json`.
struct ModelEntry {
    id: String,
    file: PathBuf,
    /// Bytes of each input in the benchmark's requests (sizes a symbolic dimension).
    input_bytes: Vec<u64>,
}

fn read_models(dir: &Path, only: &[String]) -> Result<Vec<ModelEntry>> {
    let path = dir.join("models.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (scripts/make_bench_models.py)", path.display()))?;
    let doc: Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for m in doc["models"]
        .as_array()
        .context("models.json: no `models`")?
    {
        let id = m["id"]
            .as_str()
            .context("models.json: a model without id")?;
        if !only.is_empty() && !only.iter().any(|o| o == id) {
            continue;
        }
        let file = m["file"]
            .as_str()
            .context("models.json: a model without file")?;
        let input_bytes = m["input_bytes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        out.push(ModelEntry {
            id: id.to_owned(),
            file: dir.join(file),
            input_bytes,
        });
    }
    if out.is_empty() {
        bail!("no model selected in {}", path.display());
    }
    Ok(out)
}

/// onnxruntime p50s by (model, mode), mode `single` (one intra-op thread) or `default`.
fn read_ort(path: &Path) -> BTreeMap<(String, String), f64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    let Ok(doc) = serde_json::from_str::<Value>(&text) else {
        return BTreeMap::new();
    };
    doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                (
                    r["model"].as_str()?.to_owned(),
                    r["mode"].as_str()?.to_owned(),
                ),
                r["p50_ms"].as_f64()?,
            ))
        })
        .collect()
}

/// Latencies of one measurement.
#[derive(Debug, Clone)]
struct Stats {
    runs: usize,
    /// The fastest run: the least disturbed by other processes on a busy machine.
    min_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    /// Runs per second over all callers.
    rps: f64,
    /// CPU time of the calling threads per run (mean; `/proc/thread-self/schedstat`): unlike wall
    /// time, it does not count the time other processes had the core. Intra-op pool threads are
    /// not included.
    cpu_ms: f64,
}

/// CPU time this thread has run, in ns (Linux `schedstat`, first field).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let ix = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[ix.min(sorted.len() - 1)]
}

/// Time budget and run bounds of one measurement.
#[derive(Clone, Copy)]
struct Budget {
    time: Duration,
    warmup: usize,
    min_runs: usize,
    max_runs: usize,
}

impl Budget {
    fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                time: Duration::from_millis(300),
                warmup: 3,
                min_runs: 5,
                max_runs: 20_000,
            }
        } else {
            Budget {
                time: Duration::from_secs(3),
                warmup: 10,
                min_runs: 20,
                max_runs: 200_000,
            }
        }
    }
}

/// Runs the plan back to back on `callers` threads for the budget, fresh input values each run
/// (the engine builds new tract tensors for every request, so ops may take their input in place).
fn measure(
    plan: &Arc<TypedRunnableModel>,
    inputs: &TVec<TValue>,
    callers: usize,
    budget: Budget,
) -> Result<Stats> {
    let fresh = || -> TVec<TValue> {
        inputs
            .iter()
            .map(|v| v.clone().into_tensor().into())
            .collect()
    };
    for _ in 0..budget.warmup {
        plan.run(fresh())?;
    }
    let started = Instant::now();
    let per_caller = |_: usize| -> Result<(Vec<f64>, u64)> {
        let cpu_start = thread_cpu_ns();
        let mut lat = Vec::new();
        while lat.len() < budget.min_runs
            || (started.elapsed() < budget.time && lat.len() < budget.max_runs)
        {
            let values = fresh();
            let t = Instant::now();
            plan.run(values)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let cpu = thread_cpu_ns()
            .zip(cpu_start)
            .map_or(0, |(end, start)| end.saturating_sub(start));
        Ok((lat, cpu))
    };
    let (mut all, cpu_ns) = if callers <= 1 {
        per_caller(0)?
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..callers)
                .map(|c| s.spawn(move || per_caller(c)))
                .collect();
            let (mut all, mut cpu_ns) = (Vec::new(), 0u64);
            for h in handles {
                match h.join() {
                    Ok(r) => {
                        let (lat, cpu) = r?;
                        all.extend(lat);
                        cpu_ns += cpu;
                    }
                    Err(_) => bail!("a caller thread panicked"),
                }
            }
            Ok((all, cpu_ns))
        })?
    };
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(Stats {
        runs: all.len(),
        min_ms: all.first().copied().unwrap_or(f64::NAN),
        p50_ms: percentile(&all, 0.5),
        p90_ms: percentile(&all, 0.9),
        rps: all.len() as f64 / wall,
        cpu_ms: cpu_ns as f64 / 1e6 / all.len().max(1) as f64,
    })
}

/// One row of the batching table.
struct BatchRow {
    batch: usize,
    outcome: Result<BatchFigures, String>,
}

struct BatchFigures {
    stats: Stats,
    per_sample_ms: f64,
    /// Largest |difference| between a row of the batched output and that sample run alone.
    max_row_diff: f32,
    /// Accepted only with the declared output facts dropped.
    freed: bool,
}

/// The first line of an error chain, as the bench reports why a pin failed.
fn short(e: &anyhow::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let text = chain.join(": ");
    text.chars().take(240).collect()
}

fn fmt_ms(ms: f64) -> String {
    if ms < 0.1 {
        format!("{ms:.4}")
    } else if ms < 10.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.2}")
    }
}

fn fmt_opt(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), fmt_ms)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

pub fn run(args: Args) -> Result<()> {
    let models = read_models(&args.models_dir, &args.only)?;
    let ort = read_ort(&args.ort_json);
    let budget = Budget::new(args.quick);
    let threads = if args.threads.is_empty() {
        if plan::MULTITHREAD {
            vec![1, 2]
        } else {
            vec![1]
        }
    } else {
        args.threads.clone()
    };
    let concurrency = if !args.concurrency.is_empty() {
        args.concurrency.clone()
    } else if args.quick {
        vec![1]
    } else {
        vec![1, 2]
    };
    if let Some(panels) = args.mt_panel_threshold {
        plan::set_panel_threshold(panels)?;
    }

    println!(
        "sealed-bench tract: tract {} , multithread-mm {}, {} cores, load average {}",
        plan::TRACT_VERSION,
        if plan::MULTITHREAD { "on" } else { "off" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let mut summary = Vec::new();
    let mut json_models = Vec::new();
    for entry in &models {
        let onnx = std::fs::read(&entry.file)
            .with_context(|| format!("reading {}", entry.file.display()))?;
        let ort_single = ort.get(&(entry.id.clone(), "single".into())).copied();
        let ort_default = ort.get(&(entry.id.clone(), "default".into())).copied();
        println!(
            "\n## {} ({} bytes)  load average {}",
            entry.id,
            onnx.len(),
            loadavg()
        );

        // The plan as the engine builds it, one thread.
        let started = Instant::now();
        let base = Loaded::load(&onnx, Pin::Declared, 1)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let inputs = base.sample_inputs(&entry.input_bytes, 0)?;
        println!(
            "input {}  load+optimise {load_ms:.1} ms  onnxruntime p50: single {} ms, default {} ms",
            base.describe_inputs(),
            fmt_opt(ort_single),
            fmt_opt(ort_default)
        );

        // Threads × concurrent callers.
        println!(
            "\n| threads | callers | runs | min ms | p50 ms | p90 ms | cpu ms/run | runs/s | vs ort single |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let mut thread_rows = Vec::new();
        let mut p50_by_threads: BTreeMap<usize, f64> = BTreeMap::new();
        for &t in &threads {
            let loaded = if t == 1 {
                base.clone()
            } else {
                match Loaded::load(&onnx, Pin::Declared, t) {
                    Ok(l) => l,
                    Err(e) => {
                        println!("| {t} | - | - | - | - | - | - | - | {} |", short(&e));
                        continue;
                    }
                }
            };
            for &c in &concurrency {
                let s = measure(&loaded.plan, &inputs, c, budget)?;
                if c == 1 {
                    p50_by_threads.insert(t, s.p50_ms);
                }
                let ratio = ort_single.map_or("-".to_owned(), |o| format!("{:.2}x", s.p50_ms / o));
                println!(
                    "| {t} | {c} | {} | {} | {} | {} | {} | {:.1} | {ratio} |",
                    s.runs,
                    fmt_ms(s.min_ms),
                    fmt_ms(s.p50_ms),
                    fmt_ms(s.p90_ms),
                    fmt_ms(s.cpu_ms),
                    s.rps
                );
                thread_rows.push(json!({
                    "threads": t, "callers": c, "runs": s.runs, "min_ms": s.min_ms, "p50_ms": s.p50_ms,
                    "p90_ms": s.p90_ms, "cpu_ms_per_run": s.cpu_ms, "rps": s.rps, "loadavg": loadavg(),
                }));
            }
        }

        // Batching potential (one thread, one caller).
        let batch_rows = batching(&onnx, &base, entry, &args.batches, budget);
        println!("\nbatching potential (axis 0 of every input pinned to B; 1 thread, 1 caller):");
        println!(
            "| B | batch min ms | batch p50 ms | per sample ms (p50) | cpu ms/sample | per sample vs B=1 | max row diff | pin |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        let per_sample_1 = batch_rows
            .iter()
            .find(|r| r.batch == 1)
            .and_then(|r| r.outcome.as_ref().ok())
            .map(|f| f.per_sample_ms);
        let mut json_batches = Vec::new();
        for row in &batch_rows {
            match &row.outcome {
                Ok(f) => {
                    let vs = per_sample_1.map_or("-".to_owned(), |one| {
                        format!("{:.2}", f.per_sample_ms / one)
                    });
                    println!(
                        "| {} | {} | {} | {} | {} | {vs} | {:.2e} | {} |",
                        row.batch,
                        fmt_ms(f.stats.min_ms),
                        fmt_ms(f.stats.p50_ms),
                        fmt_ms(f.per_sample_ms),
                        fmt_ms(f.stats.cpu_ms / row.batch as f64),
                        f.max_row_diff,
                        if f.freed {
                            "declared output shapes dropped"
                        } else {
                            "as declared"
                        }
                    );
                    json_batches.push(json!({
                        "batch": row.batch, "min_ms": f.stats.min_ms, "p50_ms": f.stats.p50_ms,
                        "per_sample_ms": f.per_sample_ms,
                        "cpu_ms_per_sample": f.stats.cpu_ms / row.batch as f64,
                        "per_sample_vs_b1": per_sample_1.map(|one| f.per_sample_ms / one),
                        "max_row_diff": f.max_row_diff,
                        "output_facts_dropped": f.freed,
                    }));
                }
                Err(why) => {
                    println!("| {} | not accepted: {why} | | | | | | |", row.batch);
                    json_batches.push(json!({"batch": row.batch, "error": why}));
                }
            }
        }

        let profile = if args.plan {
            let p = plan::profile(&base, &inputs, budget)?;
            println!("\noptimised plan ({} nodes):", p.nodes);
            println!(
                "shapes: {}",
                if p.symbolic.is_empty() {
                    "all concrete".to_owned()
                } else {
                    format!("symbolic at {}", p.symbolic.join(", "))
                }
            );
            println!("| op | count | share of run time | ms per run |");
            println!("| --- | --- | --- | --- |");
            for op in &p.ops {
                println!(
                    "| {} | {} | {:.1}% | {} |",
                    op.name,
                    op.count,
                    op.share * 100.0,
                    fmt_ms(op.ms_per_run)
                );
            }
            println!("\nslowest nodes (tract's description of each):");
            println!("| node | op | ms per run | tract's info |");
            println!("| --- | --- | --- | --- |");
            for n in &p.slowest {
                println!(
                    "| {} | {} | {} | {} |",
                    n.name,
                    n.op,
                    fmt_ms(n.ms_per_run),
                    n.info.join("; ").replace('|', "/")
                );
            }
            Some(p.to_json())
        } else {
            None
        };

        let best_batch = batch_rows
            .iter()
            .filter_map(|r| r.outcome.as_ref().ok().map(|f| (r.batch, f.per_sample_ms)))
            .filter(|(b, _)| *b > 1)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        summary.push((
            entry.id.clone(),
            p50_by_threads.clone(),
            ort_single,
            ort_default,
            best_batch
                .zip(per_sample_1)
                .map(|((b, ps), one)| (b, ps / one)),
        ));
        json_models.push(json!({
            "model": entry.id,
            "input": base.describe_inputs(),
            "load_ms": load_ms,
            "ort_single_p50_ms": ort_single,
            "ort_default_p50_ms": ort_default,
            "threads": thread_rows,
            "batching": json_batches,
            "plan": profile,
        }));
    }

    println!("\n## summary  load average {}", loadavg());
    let header: Vec<String> = threads.iter().map(|t| format!("tract {t}t p50")).collect();
    println!(
        "| model | {} | ort single | ort default | tract 1t / ort single | best batch per-sample vs B=1 |",
        header.join(" | ")
    );
    println!("|{}", " --- |".repeat(threads.len() + 5));
    for (id, by_t, os, od, best) in &summary {
        let cells: Vec<String> = threads
            .iter()
            .map(|t| fmt_opt(by_t.get(t).copied()))
            .collect();
        let gap = match (by_t.get(&1), os) {
            (Some(t), Some(o)) => format!("{:.2}x", t / o),
            _ => "-".to_owned(),
        };
        let best = best.map_or("-".to_owned(), |(b, r)| format!("{r:.2} at B={b}"));
        println!(
            "| {id} | {} | {} | {} | {gap} | {best} |",
            cells.join(" | "),
            fmt_opt(*os),
            fmt_opt(*od)
        );
    }

    if let Some(path) = &args.json {
        let doc = json!({
            "tract": plan::TRACT_VERSION,
            "multithread_mm": plan::MULTITHREAD,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "quick": args.quick,
            "loadavg_end": loadavg(),
            "models": json_models,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// Pins axis 0 to each B, runs B different samples as one batch, checks every output row against
/// the same sample run alone on the engine's plan, and times the batched run.
fn batching(
    onnx: &[u8],
    base: &Loaded,
    entry: &ModelEntry,
    batches: &[usize],
    budget: Budget,
) -> Vec<BatchRow> {
    if let Some(why) = base.batch_axis_refusal() {
        return batches
            .iter()
            .map(|&batch| BatchRow {
                batch,
                outcome: Err(why.clone()),
            })
            .collect();
    }
    batches
        .iter()
        .map(|&batch| BatchRow {
            batch,
            outcome: batch_one(onnx, base, entry, batch, budget).map_err(|e| short(&e)),
        })
        .collect()
}

fn batch_one(
    onnx: &[u8],
    base: &Loaded,
    entry: &ModelEntry,
    batch: usize,
    budget: Budget,
) -> Result<BatchFigures> {
    // As declared first; a model exported with a fixed batch of 1 may only accept B with its
    // declared output shapes dropped, which the report says.
    let (loaded, freed) = match Loaded::load(
        onnx,
        Pin::Batch {
            size: batch,
            free_outputs: false,
        },
        1,
    ) {
        Ok(l) => (l, false),
        Err(_) => (
            Loaded::load(
                onnx,
                Pin::Batch {
                    size: batch,
                    free_outputs: true,
                },
                1,
            )?,
            true,
        ),
    };
    let samples = (0..batch)
        .map(|k| base.sample_inputs(&entry.input_bytes, k as u64))
        .collect::<Result<Vec<_>>>()?;
    let batched = plan::stack(&samples)?;
    let out = loaded.plan.run(batched.clone())?;
    let mut max_row_diff = 0f32;
    for (k, sample) in samples.iter().enumerate() {
        let alone = base.plan.run(sample.clone())?;
        max_row_diff = max_row_diff.max(plan::row_diff(&out, &alone, k)?);
    }
    let stats = measure(&loaded.plan, &batched, 1, budget)?;
    Ok(BatchFigures {
        per_sample_ms: stats.p50_ms / batch as f64,
        stats,
        max_row_diff,
        freed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_models_directory_flag_has_its_old_name_as_an_alias() {
        let dir = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().args.models_dir;
        assert_eq!(dir(&["t"]), PathBuf::from("target/bench-models"));
        assert_eq!(dir(&["t", "--models-dir", "/a"]), PathBuf::from("/a"));
        assert_eq!(dir(&["t", "--models", "/b"]), PathBuf::from("/b"));
        // One flag, two names: giving both is an error, not a silent pick.
        assert!(Cli::try_parse_from(["t", "--models", "/a", "--models-dir", "/b"]).is_err());
    }
}
