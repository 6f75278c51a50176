//! The compare report: JSON (the record) and Markdown tables rendered from it.

use serde_json::{Value, json};

use super::{
    Cell, LoadAvg, MAX_IN_FLIGHT_BYTES, MemSteps, ModelResult, Scaling, Settings, VariantRun,
};
use crate::load::Mem;
use crate::micro::Stats;

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// `[1 min, 5 min, 15 min]` (null when `/proc/loadavg` could not be read).
pub fn loadavg_json(l: Option<LoadAvg>) -> Value {
    l.map_or(Value::Null, |l| json!([l.one, l.five, l.fifteen]))
}

/// `0.68 1.42 1.58` from [`loadavg_json`]'s array, `?` without one.
pub fn loadavg_text(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(|x| num(x, 2)).collect::<Vec<_>>().join(" "),
        _ => "?".into(),
    }
}

fn cell_json(cell: &Option<Cell>, concurrency: usize) -> Value {
    let Some(c) = cell else {
        return json!({
            "concurrency": concurrency,
            "skipped": format!("more than {} MiB of input in flight", MAX_IN_FLIGHT_BYTES >> 20),
        });
    };
    json!({
        "concurrency": c.concurrency,
        "ok": c.ok(),
        "errors": c.error_count(),
        "errors_by_code": c.errors,
        "measured_s": round(c.wall_s, 3),
        // Throughput and the per-request counters: answers inside this window (round 19).
        "window_s": round(c.window_s, 3),
        "window_answers": c.window_answers,
        "throughput_rps": round(c.throughput(), 2),
        "p50_ms": c.p_ms(50.0),
        "mean_ms": c.mean_ms(),
        "p90_ms": c.p_ms(90.0),
        "p99_ms": c.p_ms(99.0),
        "host_io_bytes_per_request": c.per_request(c.host.map(|h| h.io_bytes)).map(|v| v.round()),
        "enclave_io_bytes_per_request": c.per_request(c.enclave.map(|e| e.io_bytes)).map(|v| v.round()),
        "host_cpu_us_per_request": c.cpu_us_per_request(c.host).map(|v| v.round()),
        "enclave_cpu_us_per_request": c.cpu_us_per_request(c.enclave).map(|v| v.round()),
        "worker_cpu_us_per_request": c.worker_cpu_us_per_request().map(|v| v.round()),
        // This process: the client harness for the stack variants, the pool and its callers for
        // bare.
        "bench_cpu_us_per_request": c.cpu_us_per_request(c.bench).map(|v| v.round()),
        "host_ctx_switches_per_request": c.per_request(c.host.map(|h| h.ctx_switches)).map(|v| round(v, 1)),
        "enclave_ctx_switches_per_request": c.per_request(c.enclave.map(|e| e.ctx_switches)).map(|v| round(v, 1)),
        // The machine's load average (1, 5, 15 min) as the measured window opened and as the
        // cell ended: a cell that shared the cores with something else shows it.
        "loadavg_start": loadavg_json(c.load.start),
        "loadavg_end": loadavg_json(c.load.end),
    })
}

/// A variant's name in the report: `sealed+batchN` / `plain+batchN` / `bare+batchN` when the
/// model ran with dynamic batching of N rows (the enclaves' `--dynamic-batch MODEL=N`, bare's
/// pool the same in-process); the plain variant name otherwise.
pub fn variant_label(variant: &str, batch_rows: Option<u64>) -> String {
    match (variant, batch_rows) {
        (_, None) => variant.to_string(),
        (_, Some(n)) => format!("{variant}+batch{n}"),
    }
}

fn variant_json(v: &VariantRun, label: String, case: usize, concurrency: &[usize]) -> Value {
    if let Some(reason) = &v.skipped {
        return json!({ "label": label, "skipped": reason });
    }
    let row = v.cells.get(case);
    json!({
        "label": label,
        "cells": concurrency.iter().enumerate().map(|(k, &c)| {
            cell_json(row.and_then(|r| r.get(k)).unwrap_or(&None), c)
        }).collect::<Vec<_>>(),
    })
}

fn cell_of(v: &VariantRun, case: usize, k: usize) -> Option<&Cell> {
    v.cells.get(case)?.get(k)?.as_ref().filter(|c| c.ok() > 0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round(a / b, 3)),
        _ => None,
    }
}

/// The highest VmHWM seen once the model was loaded, minus VmRSS before it: what loading the
/// model (and one inference) cost at its peak.
fn peak_delta_kb(m: &MemSteps) -> Option<i64> {
    let base = m.baseline?.rss_kb as i64;
    let peak = m.loaded.iter().chain(&m.inferred).map(|x| x.hwm_kb).max()?;
    Some(peak as i64 - base)
}

/// The highest RssAnon sampled from before the model until after one inference, minus RssAnon
/// before: the heap's peak growth, without the binary's file-backed code pages that VmHWM counts
/// and whose number the page cache decides (docs/performance.md, round 8).
fn anon_peak_delta_kb(m: &MemSteps) -> Option<i64> {
    Some(m.anon_peak_kb? as i64 - m.anon_baseline_kb? as i64)
}

/// VmRSS after one inference minus VmRSS before the model: what stays held.
fn held_delta_kb(m: &MemSteps) -> Option<i64> {
    Some(m.inferred?.rss_kb as i64 - m.baseline?.rss_kb as i64)
}

fn mem_json(m: &MemSteps) -> Value {
    let one = |x: Option<Mem>| x.map(|m| json!({"vmrss_kb": m.rss_kb, "vmhwm_kb": m.hwm_kb}));
    json!({
        "before_model": one(m.baseline),
        "model_ready": one(m.loaded),
        "after_one_inference": one(m.inferred),
        "peak_delta_kb": peak_delta_kb(m),
        "held_delta_kb": held_delta_kb(m),
        "rssanon_before_kb": m.anon_baseline_kb,
        "rssanon_peak_kb": m.anon_peak_kb,
        "anon_peak_delta_kb": anon_peak_delta_kb(m),
    })
}

/// Memory around the model load for the three variants, and the issue-6 target: the enclave's
/// peak Δ at most the bare process's peak Δ plus one chunk buffer. Judged on the heap (RssAnon's
/// sampled peak) when both sides have it, else on VmHWM, which also counts code pages.
fn memory_json(m: &ModelResult) -> Value {
    let chunk = m.sealed.chunk_size.or(m.plain.chunk_size);
    let bare = peak_delta_kb(&m.bare.mem);
    let bare_anon = anon_peak_delta_kb(&m.bare.mem);
    let over = |v: &VariantRun| peak_delta_kb(&v.mem).zip(bare).map(|(e, b)| e - b);
    let over_anon = |v: &VariantRun| {
        anon_peak_delta_kb(&v.mem)
            .zip(bare_anon)
            .map(|(e, b)| e - b)
    };
    let judged = |v: &VariantRun| over_anon(v).or_else(|| over(v));
    let allowance_kb = chunk.map(|c| i64::from(c.div_ceil(1024)));
    let met = |v: &VariantRun| judged(v).zip(allowance_kb).map(|(o, a)| o <= a);
    let judged_on = |v: &VariantRun| {
        if over_anon(v).is_some() {
            "RssAnon peak"
        } else {
            "VmHWM"
        }
    };
    json!({
        "chunk_size_bytes": chunk,
        "bare": mem_json(&m.bare.mem),
        "sealed": mem_json(&m.sealed.mem),
        "plain": mem_json(&m.plain.mem),
        "allowance_kb": allowance_kb,
        "sealed_peak_over_bare_kb": over(&m.sealed),
        "plain_peak_over_bare_kb": over(&m.plain),
        "sealed_anon_peak_over_bare_kb": over_anon(&m.sealed),
        "plain_anon_peak_over_bare_kb": over_anon(&m.plain),
        "sealed_judged_on": judged_on(&m.sealed),
        "plain_judged_on": judged_on(&m.plain),
        "sealed_target_met": met(&m.sealed),
        "plain_target_met": met(&m.plain),
    })
}

/// A stack variant's paired rounds: each round's two p50s, its ratio and added time, and the
/// medians the latency target is judged on. Null when no round ran.
fn paired_json(v: &VariantRun, block_s: f64) -> Value {
    if v.paired.is_empty() {
        return Value::Null;
    }
    let ratios: Vec<f64> = v.paired.iter().map(|r| r.p50_ms / r.bare_p50_ms).collect();
    let added: Vec<f64> = v
        .paired
        .iter()
        .map(|r| (r.p50_ms - r.bare_p50_ms) * 1000.0)
        .collect();
    // Nearest-rank order statistics, as `micro` reports its samples.
    let (Some(r), Some(a)) = (Stats::of(&ratios), Stats::of(&added)) else {
        return Value::Null;
    };
    json!({
        "rounds": v.paired.len(),
        "block_s": block_s,
        "bare_p50_ms": v.paired.iter().map(|r| round(r.bare_p50_ms, 4)).collect::<Vec<_>>(),
        "p50_ms": v.paired.iter().map(|r| round(r.p50_ms, 4)).collect::<Vec<_>>(),
        "ratio": ratios.iter().map(|&x| round(x, 3)).collect::<Vec<_>>(),
        "median_ratio": round(r.median, 3),
        "median_added_us": a.median.round(),
        "min_ratio": round(r.min, 3),
        "max_ratio": round(r.max, 3),
    })
}

/// A stack variant's paired throughput: per concurrency, each round's two rates, its ratio, and
/// the median the throughput target is judged on. C = 1 comes from the latency rounds' blocks.
/// Null when no round ran.
fn paired_throughput_json(v: &VariantRun, block_s: f64) -> Value {
    let c1: Vec<(f64, f64)> = v
        .paired
        .iter()
        .filter_map(|r| r.bare_rps.zip(r.rps))
        .collect();
    let mut at: Vec<(usize, &[(f64, f64)])> = Vec::new();
    if !c1.is_empty() && c1.len() == v.paired.len() {
        at.push((1, &c1));
    }
    at.extend(
        v.paired_throughput
            .iter()
            .map(|t| (t.concurrency, t.rounds.as_slice())),
    );
    let entries: Vec<Value> = at
        .into_iter()
        .filter_map(|(concurrency, rounds)| {
            let ratios: Vec<f64> = rounds
                .iter()
                .map(|&(bare, stack)| stack / bare.max(1e-9))
                .collect();
            let r = Stats::of(&ratios)?;
            Some(json!({
                "concurrency": concurrency,
                "rounds": rounds.len(),
                "block_s": block_s,
                "bare_rps": rounds.iter().map(|r| round(r.0, 1)).collect::<Vec<_>>(),
                "rps": rounds.iter().map(|r| round(r.1, 1)).collect::<Vec<_>>(),
                "ratio": ratios.iter().map(|&x| round(x, 3)).collect::<Vec<_>>(),
                "median_ratio": round(r.median, 3),
                "min_ratio": round(r.min, 3),
                "max_ratio": round(r.max, 3),
            }))
        })
        .collect();
    if entries.is_empty() {
        Value::Null
    } else {
        Value::Array(entries)
    }
}

/// onnxruntime figures for one model, size and mode.
fn ort_entry(ort: Option<&Value>, model: &str, bytes: u64, mode: &str) -> Value {
    let Some(results) = ort.and_then(|o| o["results"].as_array()) else {
        return Value::Null;
    };
    results
        .iter()
        .find(|r| {
            r["model"].as_str() == Some(model)
                && r["input_bytes"].as_u64() == Some(bytes)
                && r["mode"].as_str() == Some(mode)
        })
        .map_or(Value::Null, |r| {
            json!({
                "p50_ms": r["p50_ms"],
                "p90_ms": r["p90_ms"],
                "p99_ms": r["p99_ms"],
                "throughput_rps": r["throughput_rps"],
                "load_ms": r["load_ms"],
            })
        })
}

pub fn json(
    machine: &Value,
    s: &Settings,
    results: &[ModelResult],
    scaling: &[Scaling],
    ort: Option<&Value>,
) -> Value {
    let conc = &s.concurrency;
    let c1 = conc.iter().position(|&c| c == 1);
    let models: Vec<Value> = results
        .iter()
        .map(|m| {
            let cases: Vec<Value> = m
                .cases
                .iter()
                .enumerate()
                .map(|(i, &bytes)| {
                    let p50 = |v: &VariantRun| c1.and_then(|k| cell_of(v, i, k)).map(|c| c.p_ms(50.0));
                    let rps = |v: &VariantRun, k: usize| cell_of(v, i, k).map(Cell::throughput);
                    let label = |variant: &str| variant_label(variant, m.batch_rows.map(u64::from));
                    json!({
                        "input_bytes": bytes,
                        "variants": {
                            "bare": variant_json(&m.bare, label("bare"), i, conc),
                            "sealed": variant_json(&m.sealed, label("sealed"), i, conc),
                            "plain": variant_json(&m.plain, label("plain"), i, conc),
                        },
                        "ratios": {
                            "p50_c1_sealed_over_bare": ratio(p50(&m.sealed), p50(&m.bare)),
                            "p50_c1_sealed_over_plain": ratio(p50(&m.sealed), p50(&m.plain)),
                            "p50_c1_sealed_minus_bare_us": p50(&m.sealed).zip(p50(&m.bare))
                                .map(|(s, b)| ((s - b) * 1000.0).round()),
                            "throughput": conc.iter().enumerate().map(|(k, &c)| json!({
                                "concurrency": c,
                                "sealed_over_bare": ratio(rps(&m.sealed, k), rps(&m.bare, k)),
                                "sealed_over_plain": ratio(rps(&m.sealed, k), rps(&m.plain, k)),
                            })).collect::<Vec<_>>(),
                        },
                        "onnxruntime": {
                            "single": ort_entry(ort, &m.id, bytes, "single"),
                            "default": ort_entry(ort, &m.id, bytes, "default"),
                        },
                        // The paired rounds ran on the first input only.
                        "paired_c1": if i == 0 {
                            json!({
                                "sealed": paired_json(&m.sealed, s.paired_seconds),
                                "plain": paired_json(&m.plain, s.paired_seconds),
                            })
                        } else {
                            Value::Null
                        },
                        // Sealed only: the throughput target is sealed / bare.
                        "paired_throughput": if i == 0 {
                            json!({"sealed": paired_throughput_json(&m.sealed, s.paired_seconds)})
                        } else {
                            Value::Null
                        },
                    })
                })
                .collect();
            json!({
                "id": m.id,
                "bytes": m.bytes,
                "dynamic_batch_rows": m.batch_rows,
                "load_ms": {
                    "bare_tract": m.bare.load_ms.map(|v| round(v, 2)),
                    "sealed_upload_to_ready": m.sealed.load_ms.map(|v| round(v, 2)),
                    "plain_upload_to_ready": m.plain.load_ms.map(|v| round(v, 2)),
                    "onnxruntime_single": ort_entry(ort, &m.id, m.cases.first().copied().unwrap_or(0), "single")["load_ms"],
                },
                "peak_rss_kb": {
                    "bare_process": m.bare.hwm_kb,
                    "sealed_enclave": m.sealed.hwm_kb,
                    "plain_enclave": m.plain.hwm_kb,
                },
                "memory": memory_json(m),
                "cases": cases,
            })
        })
        .collect();
    json!({
        "machine": machine,
        "settings": {
            "workers": s.workers,
            "cores": s.cores,
            "concurrency": s.concurrency,
            "seconds_per_cell": s.seconds,
            "warmup_s": s.warmup,
            "paired_rounds": s.paired_rounds,
            "paired_seconds": s.paired_seconds,
            "paired_gap_ms": s.paired_gap_ms,
            "quick": s.quick,
            "plain": s.plain,
            "dynamic_batch": s.dynamic_batch,
            "pin": s.pin.as_ref().map(|p| p.json()),
            "max_in_flight_input_bytes": MAX_IN_FLIGHT_BYTES,
            "notes": s.notes,
        },
        "onnxruntime": ort.map(|o| json!({
            "version": o["onnxruntime"], "python": o["python"], "cpu": o["cpu"], "cores": o["cores"],
        })),
        "models": models,
        "scaling": scaling.iter().map(|sc| json!({
            "model": sc.model,
            "concurrency": sc.concurrency,
            "sealed_dynamic_batch_rows": sc.batch_rows,
            "rows": sc.rows.iter().map(|r| json!({
                "workers": r.workers,
                "bare_rps": r.bare_rps.map(|v| round(v, 2)),
                "sealed_rps": r.sealed_rps.map(|v| round(v, 2)),
                "sealed_over_bare": ratio(r.sealed_rps, r.bare_rps),
                "bare_loadavg_start": loadavg_json(r.bare_load.start),
                "bare_loadavg_end": loadavg_json(r.bare_load.end),
                "sealed_loadavg_start": loadavg_json(r.sealed_load.start),
                "sealed_loadavg_end": loadavg_json(r.sealed_load.end),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("-".to_string(), |x| format!("{x:.digits$}"))
}

fn mib(v: &Value) -> String {
    v.as_f64()
        .map_or("-".to_string(), |kb| format!("{:.1}", kb / 1024.0))
}

/// Bytes in decimal units, as every bench table prints input sizes.
pub fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else if bytes >= 1000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{bytes} B")
    }
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str("| ");
    out.push_str(&cells.join(" | "));
    out.push_str(" |\n");
}

fn header(out: &mut String, cells: &[&str]) {
    row(
        out,
        &cells.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    row(
        out,
        &cells.iter().map(|_| "---".to_string()).collect::<Vec<_>>(),
    );
}

/// The 1-minute load average over some cells, run one after the other: at the start of the
/// first and at the end of the last (`0.52→1.87`), and the highest reading in between when it
/// is above both (`0.52→0.61 (max 2.40)`); `-` without any reading.
fn load_range<'a>(cells: impl IntoIterator<Item = &'a Value>) -> String {
    let one = |c: &Value, key: &str| c[key].get(0).and_then(Value::as_f64);
    let (mut first, mut last, mut max) = (None, None, None::<f64>);
    for c in cells {
        for v in [one(c, "loadavg_start"), one(c, "loadavg_end")]
            .into_iter()
            .flatten()
        {
            max = Some(max.map_or(v, |m| m.max(v)));
        }
        first = first.or(one(c, "loadavg_start"));
        last = one(c, "loadavg_end").or(last);
    }
    let Some(max) = max else {
        return "-".into();
    };
    let show = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2}"));
    let mut out = format!("{}→{}", show(first), show(last));
    if max > first.unwrap_or(0.0).max(last.unwrap_or(0.0)) + 0.005 {
        out.push_str(&format!(" (max {max:.2})"));
    }
    out
}

/// A variant's label in the tables, from the model's batch rows.
fn label(model: &Value, variant: &str) -> String {
    variant_label(variant, model["dynamic_batch_rows"].as_u64())
}

/// The report as Markdown tables.
pub fn table(j: &Value) -> String {
    let mut out = String::new();
    let m = &j["machine"];
    let s = &j["settings"];
    let conc: Vec<u64> = s["concurrency"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "# sealed-bench compare\n\nMachine: {}, {} cores, Linux {}; {} build of the bench. \
         Workers {} (bare pool and enclave); cells of {} s after {} s of warm-up.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["bench_profile"].as_str().unwrap_or("?"),
        s["workers"],
        s["seconds_per_cell"],
        s["warmup_s"],
    ));
    if let (Some(server), Some(harness)) = (
        s["pin"]["server_cpus"].as_array(),
        s["pin"]["harness_cpus"].as_array(),
    ) {
        let list = |a: &Vec<Value>| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&format!(
            "Pinned (--pin, Nitro's CPU split): the enclave and bare tract's workers on CPU {}; \
             this process (clients, simulated AWS) and the host on CPU {}.\n",
            list(server),
            list(harness),
        ));
    }
    let plain = s["plain"].as_bool().unwrap_or(true);
    out.push_str(if plain {
        "Variants: bare tract in this process; sealed (attested SDK sessions → host → enclave, \
         HPKE both ways); plain (the same stack with sealed-enclave-plain-bench, no HPKE).\n"
    } else {
        "Variants: bare tract in this process; sealed (attested SDK sessions → host → enclave, \
         HPKE both ways). The plain-HTTP variant did not run (--no-plain).\n"
    });
    out.push_str(&format!(
        "Load average (1, 5, 15 min): {} at the start, {} at the end; each cell's 1-minute \
         figure at its start→end is in the `load` columns.\n",
        loadavg_text(&m["loadavg_start"]),
        loadavg_text(&m["loadavg_end"]),
    ));
    if let Some(v) = j["onnxruntime"]["version"].as_str() {
        out.push_str(&format!("onnxruntime {v} figures from --ort-json.\n"));
    }
    let models_batched: Vec<String> = j["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let n = m["dynamic_batch_rows"].as_u64()?;
            Some(format!("{}={n}", m["id"].as_str().unwrap_or("?")))
        })
        .collect();
    match s["dynamic_batch"].as_u64() {
        Some(n) => out.push_str(&format!(
            "Dynamic batching ON: the {} ran with `--dynamic-batch MODEL=ROWS` for {} ({}), and \
             bare tract's pool joined its queued jobs the same way (`bare+batch{n}`: zero wait, \
             up to {n} rows); every answer is still checked, request by request, against bare's \
             lone run.\n",
            if plain {
                "sealed and plain enclaves"
            } else {
                "sealed enclave"
            },
            if models_batched.is_empty() {
                "no model".to_string()
            } else {
                models_batched.join(", ")
            },
            if plain {
                format!("variants `sealed+batch{n}`, `plain+batch{n}`")
            } else {
                format!("variant `sealed+batch{n}`")
            },
        )),
        None => out.push_str("Dynamic batching off: one request per inference everywhere.\n"),
    }
    for note in s["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("Note: {}\n", note.as_str().unwrap_or_default()));
    }
    let empty = Vec::new();
    let models = j["models"].as_array().unwrap_or(&empty);

    out.push_str("\n## Latency at C=1 (ms) and throughput (req/s) at each concurrency C\n\n");
    out.push_str(
        "load: the 1-minute load average at the start of the row's first cell → at the end of \
         its last (max: the highest reading of the row's cells when above both); the kernel \
         updates it every 5 s, so short cells often show one figure.\n\n",
    );
    let mut cols: Vec<String> = ["model", "input", "variant", "p50", "p90", "p99"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cols.extend(conc.iter().map(|c| format!("C={c}")));
    cols.push("errors".into());
    cols.push("load".into());
    header(
        &mut out,
        &cols.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for model in models {
        let id = model["id"].as_str().unwrap_or("?");
        for case in model["cases"].as_array().unwrap_or(&empty) {
            let bytes = size(case["input_bytes"].as_u64().unwrap_or(0));
            for variant in ["bare", "sealed", "plain"] {
                let v = &case["variants"][variant];
                let mut r = vec![id.to_string(), bytes.clone(), label(model, variant)];
                if let Some(reason) = v["skipped"].as_str() {
                    r.extend(["-".into(), "-".into(), "-".into()]);
                    r.extend(conc.iter().map(|_| "-".to_string()));
                    r.push(reason.to_string());
                    r.push("-".into());
                    row(&mut out, &r);
                    continue;
                }
                let cells = v["cells"].as_array().unwrap_or(&empty);
                let c1 = cells.iter().find(|c| c["concurrency"] == 1);
                for p in ["p50_ms", "p90_ms", "p99_ms"] {
                    r.push(c1.map_or("-".into(), |c| num(&c[p], 3)));
                }
                let mut errors = 0;
                for c in cells {
                    errors += c["errors"].as_u64().unwrap_or(0);
                    r.push(if c["skipped"].is_string() {
                        "skip".into()
                    } else {
                        num(&c["throughput_rps"], 1)
                    });
                }
                r.push(errors.to_string());
                r.push(load_range(cells));
                row(&mut out, &r);
            }
            for mode in ["single", "default"] {
                let o = &case["onnxruntime"][mode];
                if o.is_null() {
                    continue;
                }
                let mut r = vec![
                    id.to_string(),
                    bytes.clone(),
                    format!("onnxruntime {mode}"),
                    num(&o["p50_ms"], 3),
                    num(&o["p90_ms"], 3),
                    num(&o["p99_ms"], 3),
                ];
                // One stream, back to back: its throughput sits in the C=1 column.
                r.extend(conc.iter().map(|&c| {
                    if c == 1 {
                        num(&o["throughput_rps"], 1)
                    } else {
                        "-".into()
                    }
                }));
                r.push("-".into());
                r.push("-".into());
                row(&mut out, &r);
            }
        }
    }

    if plain {
        out.push_str("\n## Sealed beside bare and plain\n\n");
        out.push_str(
            "p50 ratios and the added time are at C=1; throughput ratios are per C (sealed / \
             bare, sealed / plain).\n\n",
        );
        header(
            &mut out,
            &[
                "model",
                "input",
                "p50 sealed/bare",
                "p50 sealed/plain",
                "sealed − bare µs",
                "rps sealed/bare",
                "rps sealed/plain",
            ],
        );
    } else {
        out.push_str("\n## Sealed beside bare\n\n");
        out.push_str(
            "p50 ratio and the added time are at C=1; throughput ratios (sealed / bare) are per \
             C.\n\n",
        );
        header(
            &mut out,
            &[
                "model",
                "input",
                "p50 sealed/bare",
                "sealed − bare µs",
                "rps sealed/bare",
            ],
        );
    }
    for model in models {
        for case in model["cases"].as_array().unwrap_or(&empty) {
            let r = &case["ratios"];
            let per_c = |key: &str| {
                r["throughput"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(|t| format!("{}: {}", t["concurrency"], num(&t[key], 2)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut cells = vec![
                model["id"].as_str().unwrap_or("?").to_string(),
                size(case["input_bytes"].as_u64().unwrap_or(0)),
                num(&r["p50_c1_sealed_over_bare"], 2),
            ];
            if plain {
                cells.push(num(&r["p50_c1_sealed_over_plain"], 2));
            }
            cells.extend([
                num(&r["p50_c1_sealed_minus_bare_us"], 0),
                per_c("sealed_over_bare"),
            ]);
            if plain {
                cells.push(per_c("sealed_over_plain"));
            }
            row(&mut out, &cells);
        }
    }

    let paired: Vec<(&Value, &Value)> = models
        .iter()
        .filter_map(|m| {
            let p = &m["cases"].get(0)?["paired_c1"];
            (!p["sealed"].is_null() || !p["plain"].is_null()).then_some((m, p))
        })
        .collect();
    if !paired.is_empty() {
        out.push_str("\n## Paired latency at C=1 (alternating blocks)\n\n");
        out.push_str(&format!(
            "Bare tract and the stack variant in turns, {} s blocks on the first input, after the \
             cells above: each round's p50 ratio, and the median over the rounds (what the \
             latency target is judged on). Both sides of a round see the machine in the same \
             state; cells measured minutes apart do not.\n\n",
            s["paired_seconds"]
        ));
        if let Some(gap) = s["paired_gap_ms"].as_f64().filter(|g| *g > 0.0) {
            out.push_str(&format!(
                "Each request of these rounds, bare and stack alike, came after {gap} ms idle \
                 (`--paired-gap-ms`, outside the timing): a diagnostic run.\n\n"
            ));
        }
        header(
            &mut out,
            &[
                "model",
                "variant",
                "rounds",
                "bare p50 ms",
                "p50 ms",
                "ratio per round",
                "median ratio",
                "median added µs",
            ],
        );
        for (model, p) in paired {
            for variant in ["sealed", "plain"] {
                let v = &p[variant];
                if v.is_null() {
                    continue;
                }
                // p50s get one more digit below 1 ms (a tiny model's are tens of µs).
                let list = |key: &str, ms: bool| {
                    v[key]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|x| {
                            num(
                                x,
                                3 + usize::from(ms && x.as_f64().is_some_and(|x| x < 1.0)),
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                row(
                    &mut out,
                    &[
                        model["id"].as_str().unwrap_or("?").to_string(),
                        label(model, variant),
                        v["rounds"].to_string(),
                        list("bare_p50_ms", true),
                        list("p50_ms", true),
                        list("ratio", false),
                        num(&v["median_ratio"], 3),
                        num(&v["median_added_us"], 0),
                    ],
                );
            }
        }
    }

    let paired_rates: Vec<(&Value, &Vec<Value>)> = models
        .iter()
        .filter_map(|m| {
            let entries = m["cases"].get(0)?["paired_throughput"]["sealed"].as_array()?;
            Some((m, entries))
        })
        .collect();
    if !paired_rates.is_empty() {
        out.push_str("\n## Paired throughput (alternating blocks)\n\n");
        out.push_str(&format!(
            "Bare tract and the sealed stack in turns, {} s blocks on the first input at each \
             concurrency where the throughput target is judged (C = 1: the latency rounds' \
             blocks), after the cells above: each round's sealed / bare requests per second, and \
             the median over the rounds (what the target is judged on).\n\n",
            s["paired_seconds"]
        ));
        header(
            &mut out,
            &[
                "model",
                "variant",
                "C",
                "rounds",
                "bare req/s",
                "req/s",
                "ratio per round",
                "median ratio",
            ],
        );
        for (model, entries) in paired_rates {
            for e in entries {
                let list = |key: &str, digits: usize| {
                    e[key]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|x| num(x, digits))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                row(
                    &mut out,
                    &[
                        model["id"].as_str().unwrap_or("?").to_string(),
                        label(model, "sealed"),
                        e["concurrency"].to_string(),
                        e["rounds"].to_string(),
                        list("bare_rps", 1),
                        list("rps", 1),
                        list("ratio", 3),
                        num(&e["median_ratio"], 3),
                    ],
                );
            }
        }
    }

    out.push_str("\n## Model load and peak memory\n\n");
    out.push_str(&format!(
        "Bare: tract parse → optimised → runnable in this process; {}: admin upload → ready \
         (unseal + load in the enclave). Peak RSS: `sealed-bench bare-rss` (a process holding \
         the model in bare tract after one inference) vs the enclave's VmHWM after its whole run \
         (requests in flight included; the load alone is in the next table).\n\n",
        if plain { "sealed/plain" } else { "sealed" },
    ));
    // The plain columns only when the plain variant ran.
    let keep = |col: &str| plain || !col.starts_with("plain");
    header(
        &mut out,
        &[
            "model",
            "size",
            "bare load ms",
            "sealed upload→ready ms",
            "plain upload→ready ms",
            "bare peak MiB",
            "sealed enclave peak MiB",
            "plain enclave peak MiB",
        ]
        .into_iter()
        .filter(|c| keep(c))
        .collect::<Vec<_>>(),
    );
    for model in models {
        let l = &model["load_ms"];
        let p = &model["peak_rss_kb"];
        let cells = [
            ("model", model["id"].as_str().unwrap_or("?").to_string()),
            ("size", size(model["bytes"].as_u64().unwrap_or(0))),
            ("bare", num(&l["bare_tract"], 1)),
            ("sealed", num(&l["sealed_upload_to_ready"], 1)),
            ("plain", num(&l["plain_upload_to_ready"], 1)),
            ("bare", mib(&p["bare_process"])),
            ("sealed", mib(&p["sealed_enclave"])),
            ("plain", mib(&p["plain_enclave"])),
        ];
        row(
            &mut out,
            &cells
                .into_iter()
                .filter(|(col, _)| keep(col))
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
        );
    }

    out.push_str("\n## Memory the model costs (before any cell)\n\n");
    out.push_str(
        "VmRSS / VmHWM (MiB, proc(5)) of a fresh enclave before the upload, once upload → ready \
         answered, and after one request at C=1; for bare, of `sealed-bench bare-rss` before \
         reading the file, after the tract load and after one inference. Peak Δ: highest VmHWM \
         after the model minus VmRSS before it; held Δ: VmRSS after the inference minus VmRSS \
         before. VmRSS and VmHWM also count the binaries' file-backed code pages, as many as the \
         page cache maps; heap Δ: the highest RssAnon sampled every 1 ms from before the model \
         until after the inference, minus RssAnon before. Target (issue 6): enclave peak ≤ bare \
         peak + one chunk buffer, judged on the heap Δ.\n\n",
    );
    header(
        &mut out,
        &[
            "model",
            "variant",
            "before",
            "ready RSS / HWM",
            "1 inference RSS / HWM",
            "peak Δ",
            "held Δ",
            "peak Δ − bare",
            "heap Δ",
            "heap Δ − bare",
            "chunk",
            "target",
        ],
    );
    for model in models {
        let mem = &model["memory"];
        for variant in ["bare", "sealed", "plain"] {
            let v = &mem[variant];
            if v["before_model"].is_null() {
                continue;
            }
            let pair = |step: &str| {
                format!(
                    "{} / {}",
                    mib(&v[step]["vmrss_kb"]),
                    mib(&v[step]["vmhwm_kb"])
                )
            };
            let (over, over_anon, chunk, target) = if variant == "bare" {
                ("-".into(), "-".into(), "-".into(), "-".into())
            } else {
                (
                    mib(&mem[format!("{variant}_peak_over_bare_kb")]),
                    mib(&mem[format!("{variant}_anon_peak_over_bare_kb")]),
                    mib(&mem["allowance_kb"]),
                    match mem[format!("{variant}_target_met")].as_bool() {
                        Some(true) => "met".into(),
                        Some(false) => "not met".into(),
                        None => "-".into(),
                    },
                )
            };
            row(
                &mut out,
                &[
                    model["id"].as_str().unwrap_or("?").to_string(),
                    label(model, variant),
                    mib(&v["before_model"]["vmrss_kb"]),
                    pair("model_ready"),
                    pair("after_one_inference"),
                    mib(&v["peak_delta_kb"]),
                    mib(&v["held_delta_kb"]),
                    over,
                    mib(&v["anon_peak_delta_kb"]),
                    over_anon,
                    chunk,
                    target,
                ],
            );
        }
    }

    out.push_str("\n## Per request at C=1: syscall bytes, CPU, context switches\n\n");
    out.push_str(
        "Syscall bytes: `/proc/PID/io` rchar + wchar deltas ÷ requests (the payload size is \
         beside it). Linux counts read(2)/write(2)-family calls there, not send(2)/recv(2)/\
         sendmsg(2)/recvmsg(2): socket data moved with those does not show. CPU: utime + stime \
         of the process (10 ms ticks) ÷ requests. Context switches: summed over the process's \
         live threads ÷ requests.\n\n",
    );
    header(
        &mut out,
        &[
            "model",
            "input",
            "variant",
            "host io B",
            "enclave io B",
            "host CPU µs",
            "enclave CPU µs",
            "host ctx sw",
            "enclave ctx sw",
        ],
    );
    for model in models {
        for case in model["cases"].as_array().unwrap_or(&empty) {
            for variant in ["sealed", "plain"] {
                let Some(c) = case["variants"][variant]["cells"]
                    .as_array()
                    .and_then(|cells| cells.iter().find(|c| c["concurrency"] == 1))
                else {
                    continue;
                };
                row(
                    &mut out,
                    &[
                        model["id"].as_str().unwrap_or("?").to_string(),
                        size(case["input_bytes"].as_u64().unwrap_or(0)),
                        label(model, variant),
                        num(&c["host_io_bytes_per_request"], 0),
                        num(&c["enclave_io_bytes_per_request"], 0),
                        num(&c["host_cpu_us_per_request"], 0),
                        num(&c["enclave_cpu_us_per_request"], 0),
                        num(&c["host_ctx_switches_per_request"], 1),
                        num(&c["enclave_ctx_switches_per_request"], 1),
                    ],
                );
            }
        }
    }

    out.push_str("\n## Where the time goes at C=1: inference workers vs the rest\n\n");
    out.push_str(
        "Worker CPU: utime + stime of the inference worker threads (the enclave's \
         `engine-worker-N`, the bare pool's `bare-worker-N`; 10 ms ticks) ÷ requests: the model \
         and the wire ↔ tract conversion. The mean latency minus that is the time spent outside \
         the workers (client, HTTP, host, socket, HPKE, queueing, waiting for a core).\n\n",
    );
    header(
        &mut out,
        &[
            "model",
            "input",
            "variant",
            "mean latency µs",
            "worker CPU µs",
            "outside the workers µs",
        ],
    );
    for model in models {
        for case in model["cases"].as_array().unwrap_or(&empty) {
            for variant in ["bare", "sealed", "plain"] {
                let Some(c) = case["variants"][variant]["cells"]
                    .as_array()
                    .and_then(|cells| cells.iter().find(|c| c["concurrency"] == 1))
                else {
                    continue;
                };
                let mean = c["mean_ms"].as_f64().map(|m| m * 1000.0);
                let worker = c["worker_cpu_us_per_request"].as_f64();
                row(
                    &mut out,
                    &[
                        model["id"].as_str().unwrap_or("?").to_string(),
                        size(case["input_bytes"].as_u64().unwrap_or(0)),
                        label(model, variant),
                        num(&json!(mean), 0),
                        num(&c["worker_cpu_us_per_request"], 0),
                        num(&json!(mean.zip(worker).map(|(m, w)| m - w)), 0),
                    ],
                );
            }
        }
    }

    if let Some(scaling) = j["scaling"].as_array().filter(|a| !a.is_empty()) {
        out.push_str("\n## Worker scaling (throughput, req/s, at C = 2 × cores)\n\n");
        out.push_str(
            "load: the 1-minute load average at the start → the end of the bare cell and of the \
             sealed cell.\n\n",
        );
        header(
            &mut out,
            &[
                "model",
                "C",
                "workers",
                "bare",
                "sealed",
                "sealed/bare",
                "load bare",
                "load sealed",
            ],
        );
        for sc in scaling {
            for r in sc["rows"].as_array().unwrap_or(&empty) {
                row(
                    &mut out,
                    &[
                        match sc["sealed_dynamic_batch_rows"].as_u64() {
                            Some(n) => {
                                format!("{} (sealed+batch{n})", sc["model"].as_str().unwrap_or("?"))
                            }
                            None => sc["model"].as_str().unwrap_or("?").to_string(),
                        },
                        sc["concurrency"].to_string(),
                        r["workers"].to_string(),
                        num(&r["bare_rps"], 1),
                        num(&r["sealed_rps"], 1),
                        num(&r["sealed_over_bare"], 2),
                        load_range([&json!({
                            "loadavg_start": r["bare_loadavg_start"],
                            "loadavg_end": r["bare_loadavg_end"],
                        })]),
                        load_range([&json!({
                            "loadavg_start": r["sealed_loadavg_start"],
                            "loadavg_end": r["sealed_loadavg_end"],
                        })]),
                    ],
                );
            }
        }
    }
    out
}
