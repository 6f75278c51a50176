//! `sealed-bench targets`: issue 6's targets judged from the JSON the other subcommands wrote
//! (`scripts/bench.sh` runs it last), so that a run on another machine (a Nitro instance) says in
//! one table which targets it meets, which it misses, and which it cannot judge and why.
//!
//! Nothing is measured here: every figure is read from `compare.json`, `compare-batch.json`,
//! `compare-pinned.json`, `compare-musl.json` and `micro.json`. A target gets one of four verdicts:
//! - **met** / **not met**: the figure against the threshold (the issue's, printed beside it);
//! - **not judgeable**: the run could not show the target on this machine, with the reason. Two
//!   rules, both about a load generator that shares the machine with what it measures:
//!   throughput cells where the clients and the host ran on the workers' cores (unpinned, no spare
//!   core), or where the enclave's CPUs idled while the harness's were busy (the clients and host
//!   set the rate, not the sealed path); and the relay when even a forwarder with no HTTP and no
//!   user-space copy stays under 1 GB/s on the same sockets (the machine's ceiling is below the
//!   target);
//! - **missing**: the file or the figure is not there (a step skipped or failed).
//!
//! The rules are the doc comments of the `check_*` functions below; docs/performance.md quotes
//! them.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::compare::PAYLOAD_SWEEP;
use crate::compare::report::size;

#[derive(clap::Args)]
pub struct Args {
    /// Directory of the JSON reports (`scripts/bench.sh` writes them to target/bench-results).
    #[arg(long, default_value = "target/bench-results")]
    results_dir: PathBuf,
    /// Write the verdicts as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Issue 6's thresholds.
const LATENCY_RATIO: f64 = 1.05;
/// A model "takes ≥ 5 ms" when bare tract's p50 at C = 1 is at least this.
const SLOW_MODEL_MS: f64 = 5.0;
const FLOOR_FACTOR: f64 = 2.0;
const THROUGHPUT_RATIO: f64 = 0.95;
const UNSEAL_MB_S: f64 = 1000.0;
const UNSEAL_LOAD_RATIO: f64 = 1.1;
const RELAY_MB_S: f64 = 1000.0;
const RELAY_BYTES: u64 = 16 << 20;
/// Fraction of its CPUs a side must keep busy to be called the bottleneck of a cell.
const BUSY: f64 = 0.9;

/// The comparison runs bench.sh writes, in the order of its steps. `compare-musl` is the pinned
/// run again with the enclave built for musl, the enclave image's libc (round 7).
const COMPARE_RUNS: [&str; 4] = ["compare", "compare-batch", "compare-pinned", "compare-musl"];

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Met,
    NotMet,
    NotJudgeable(String),
    Missing(String),
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "NOT MET",
            Verdict::NotJudgeable(_) => "not judgeable",
            Verdict::Missing(_) => "missing",
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            Verdict::NotJudgeable(r) | Verdict::Missing(r) => Some(r),
            _ => None,
        }
    }
    fn of(met: bool) -> Verdict {
        if met { Verdict::Met } else { Verdict::NotMet }
    }
}

#[derive(Clone, Debug)]
pub struct Check {
    /// Which target (a short name shared by its rows).
    pub target: &'static str,
    /// Which run and part of it: `compare-pinned: large 196.6 kB`.
    pub scope: String,
    /// The figure(s) and the threshold, as text.
    pub figure: String,
    pub verdict: Verdict,
}

fn check(target: &'static str, scope: String, figure: String, verdict: Verdict) -> Check {
    Check {
        target,
        scope,
        figure,
        verdict,
    }
}

fn missing(target: &'static str, scope: &str, why: String) -> Check {
    check(target, scope.into(), "-".into(), Verdict::Missing(why))
}

/// The reports found in `dir`: run name → JSON (None when the file is absent).
pub struct Reports {
    pub compare: Vec<(&'static str, Option<Value>)>,
    pub micro: Option<Value>,
}

/// Largest report read: bench.sh's run up to now writes well under 1 MiB per report; anything
/// far larger is not one of ours, and is refused before it is read into memory.
const MAX_REPORT_BYTES: u64 = 64 << 20;

fn read(dir: &Path, name: &str) -> Result<Option<Value>> {
    let path = dir.join(format!("{name}.json"));
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_REPORT_BYTES => bail!(
            "{} is {} bytes, more than any sealed-bench report ({MAX_REPORT_BYTES})",
            path.display(),
            m.len()
        ),
        _ => {}
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a sealed-bench report: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

impl Reports {
    pub fn load(dir: &Path) -> Result<Reports> {
        let mut compare = Vec::new();
        for name in COMPARE_RUNS {
            compare.push((name, read(dir, name)?));
        }
        let micro = read(dir, "micro")?;
        if micro.is_none() && compare.iter().all(|(_, v)| v.is_none()) {
            bail!(
                "no sealed-bench report in {} (compare.json, compare-batch.json, \
                 compare-pinned.json, compare-musl.json, micro.json): run scripts/bench.sh first",
                dir.display()
            );
        }
        Ok(Reports { compare, micro })
    }
}

fn f64_at(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// The cell of a variant at concurrency `c`, if it ran and answered.
fn cell<'a>(case: &'a Value, variant: &str, c: u64) -> Option<&'a Value> {
    case["variants"][variant]["cells"]
        .as_array()?
        .iter()
        .find(|x| x["concurrency"].as_u64() == Some(c) && x["ok"].as_u64().unwrap_or(0) > 0)
}

/// Every (model, case) of a compare report, with a scope label.
fn cases<'a>(run: &str, report: &'a Value) -> Vec<(String, &'a Value, &'a Value)> {
    let mut out = Vec::new();
    for m in report["models"].as_array().into_iter().flatten() {
        for case in m["cases"].as_array().into_iter().flatten() {
            let batch = m["dynamic_batch_rows"]
                .as_u64()
                .map_or(String::new(), |n| format!(" (batch {n})"));
            out.push((
                format!(
                    "{run}: {}{batch}, {} input",
                    m["id"].as_str().unwrap_or("?"),
                    size(case["input_bytes"].as_u64().unwrap_or(0))
                ),
                m,
                case,
            ));
        }
    }
    out
}

/// The floors micro.json measured (µs) and the request size each was measured for, smallest
/// request first: the digits floor, then the larger ones (`floor.rs`).
fn floors(micro: Option<&Value>) -> Vec<(f64, u64)> {
    let Some(f) = micro.map(|m| &m["floor"]) else {
        return Vec::new();
    };
    let one = |f: &Value| Some((f64_at(f, "floor_us")?, f["hpke"]["request_bytes"].as_u64()?));
    let mut out: Vec<(f64, u64)> = one(f).into_iter().collect();
    if let Some(larger) = f["larger"].as_array() {
        out.extend(larger.iter().filter_map(one));
    }
    out.sort_by_key(|&(_, request)| request);
    out
}

/// Latency at C = 1, on the paired rounds' medians when the report has them (else on the C = 1
/// cells). A model whose bare p50 is ≥ 5 ms: sealed p50 / bare p50 ≤ 1.05. A faster
/// ("tiny") model: sealed p50 − bare p50 ≤ 2 × the floor micro.json measured (four HPKE steps, a
/// frame round trip, an HTTP round trip) for the smallest request at least half the model's
/// input; not judged when every floor was measured for a smaller request (a larger input's floor
/// has more AES-GCM and copying in it).
/// The payload sweep (`echo`) is listed with its figures and not judged: it has no model work.
pub fn check_latency(run: &str, report: &Value, micro: Option<&Value>) -> Vec<Check> {
    const SLOW: &str = "p50 at C=1, model ≥ 5 ms: sealed/bare ≤ 1.05";
    const TINY: &str = "p50 at C=1, tiny model: sealed − bare ≤ 2 × floor";
    const SWEEP: &str = "p50 at C=1, payload sweep (echo)";
    let mut out = Vec::new();
    for (scope, model, case) in cases(run, report) {
        let p50 = |v: &str| cell(case, v, 1).and_then(|c| f64_at(c, "p50_ms"));
        let (Some(bare), Some(sealed)) = (p50("bare"), p50("sealed")) else {
            out.push(missing(
                SLOW,
                &scope,
                "no C=1 cell for bare and sealed".into(),
            ));
            continue;
        };
        if model["id"].as_str() == Some(PAYLOAD_SWEEP) {
            out.push(check(
                SWEEP,
                scope,
                format!(
                    "{sealed:.3} / {bare:.3} ms = {:.3}, +{:.0} µs",
                    sealed / bare,
                    (sealed - bare) * 1000.0
                ),
                Verdict::NotJudgeable(
                    "no model work: the time is the payload's movement (the relay target)".into(),
                ),
            ));
            continue;
        }
        // Judged on the paired rounds when the report has them (bare and sealed in alternating
        // blocks: the machine's drift between cells cancels); the cells' figures are shown too.
        let paired = &case["paired_c1"]["sealed"];
        let paired = f64_at(paired, "median_ratio")
            .zip(f64_at(paired, "median_added_us"))
            .map(|(r, a)| (r, a, paired));
        if bare >= SLOW_MODEL_MS {
            let cells = sealed / bare;
            let (r, figure) = match paired {
                Some((r, _, p)) => (
                    r,
                    format!(
                        "paired median {r:.3} over {} rounds ({:.3}–{:.3}); cells {sealed:.3} / \
                         {bare:.3} ms = {cells:.3} (≤ {LATENCY_RATIO})",
                        p["rounds"],
                        f64_at(p, "min_ratio").unwrap_or(f64::NAN),
                        f64_at(p, "max_ratio").unwrap_or(f64::NAN),
                    ),
                ),
                None => (
                    cells,
                    format!("{sealed:.3} / {bare:.3} ms = {cells:.3} (≤ {LATENCY_RATIO})"),
                ),
            };
            out.push(check(SLOW, scope, figure, Verdict::of(r <= LATENCY_RATIO)));
            continue;
        }
        let cells_us = (sealed - bare) * 1000.0;
        let (added_us, added) = match paired {
            Some((_, a, p)) => (
                a,
                format!(
                    "paired median +{a:.0} µs over {} rounds (cells +{cells_us:.0})",
                    p["rounds"]
                ),
            ),
            None => (cells_us, format!("+{cells_us:.0} µs")),
        };
        let input = case["input_bytes"].as_u64().unwrap_or(0);
        let floors = floors(micro);
        let fitting = floors
            .iter()
            .find(|&&(_, request)| input <= 2 * request)
            .copied();
        let (figure, verdict) = match (fitting, floors.last()) {
            (_, None) => (
                added,
                Verdict::Missing("no floor in micro.json (sealed-bench micro)".into()),
            ),
            (None, Some(&(floor_us, request))) => (
                added,
                Verdict::NotJudgeable(format!(
                    "the largest floor ({floor_us:.0} µs) was measured for a {} request",
                    size(request)
                )),
            ),
            (Some((floor_us, request)), _) => (
                format!(
                    "{added} vs floor {floor_us:.0} µs ({} request) = {:.2} × (≤ {FLOOR_FACTOR})",
                    size(request),
                    added_us / floor_us
                ),
                Verdict::of(added_us <= FLOOR_FACTOR * floor_us),
            ),
        };
        out.push(check(TINY, scope, figure, verdict));
    }
    out
}

/// CPUs busy on average over a cell: CPU µs per request × requests per second.
fn busy(c: &Value, keys: &[&str]) -> Option<f64> {
    let rps = f64_at(c, "throughput_rps")?;
    let mut us = 0.0;
    for k in keys {
        us += f64_at(c, k)?;
    }
    Some(us * rps / 1e6)
}

/// Throughput at concurrency ≥ cores: sealed / bare ≥ 0.95 (the same worker count; with
/// `--dynamic-batch` both sides batch). The cores are the enclave's CPUs when pinned, the
/// machine's otherwise. A cell is judged only if the clients and the host had CPUs of their own
/// (pinned, or the machine has more cores than workers) and the sealed side was not held back by
/// them: a cell whose enclave kept fewer than 90 % of its CPUs busy while the clients and the host
/// kept 90 % of theirs busy measured the load generator, not the sealed path. A judged cell's
/// ratio is the median of its paired throughput rounds when the report has them (round 19: bare
/// and sealed in alternating blocks; the cells' own ratio is printed beside it), else the cells'.
/// The verdict is on the lowest judged ratio. The payload sweep (`echo`) is not judged, as for
/// latency.
pub fn check_throughput(run: &str, report: &Value) -> Vec<Check> {
    const T: &str = "throughput at C ≥ cores: sealed/bare ≥ 0.95";
    let s = &report["settings"];
    let cores = s["cores"].as_u64().unwrap_or(1) as f64;
    let workers = s["workers"].as_u64().unwrap_or(1) as f64;
    let count = |k: &str| s["pin"][k].as_array().map(|a| a.len() as f64);
    let (server, harness) = match (count("server_cpus"), count("harness_cpus")) {
        (Some(server), Some(harness)) => (server, harness),
        _ => (workers, cores - workers),
    };
    let mut out = Vec::new();
    for (scope, model, case) in cases(run, report) {
        if model["id"].as_str() == Some(PAYLOAD_SWEEP) {
            continue;
        }
        // (C, judged ratio, the cells' ratio when the judged one is the pairs' median)
        let mut judged: Vec<(u64, f64, Option<f64>)> = Vec::new();
        let paired = case["paired_throughput"]["sealed"].as_array();
        let paired_at = |c: u64| {
            paired
                .into_iter()
                .flatten()
                .find(|e| e["concurrency"].as_u64() == Some(c))
                .and_then(|e| f64_at(e, "median_ratio"))
        };
        // Cells not judged: on the workers' cores, or bound by the load generator.
        let mut shared: Vec<String> = Vec::new();
        let mut bound: Vec<String> = Vec::new();
        let concurrency = case["ratios"]["throughput"].as_array();
        for t in concurrency.into_iter().flatten() {
            let Some(c) = t["concurrency"].as_u64() else {
                continue;
            };
            let (Some(ratio), Some(sc)) = (f64_at(t, "sealed_over_bare"), cell(case, "sealed", c))
            else {
                continue;
            };
            if (c as f64) < server {
                continue;
            }
            if harness < 1.0 {
                shared.push(format!("C={c} {ratio:.2}"));
                continue;
            }
            let enclave = busy(sc, &["enclave_cpu_us_per_request"]);
            let harness_busy = busy(sc, &["host_cpu_us_per_request", "bench_cpu_us_per_request"]);
            match (enclave, harness_busy) {
                (Some(e), Some(h)) if e < BUSY * server && h >= BUSY * harness => {
                    bound.push(format!(
                        "C={c} {ratio:.2} (enclave {:.0} % busy, clients and host {:.0} %)",
                        100.0 * e / server,
                        100.0 * h / harness,
                    ));
                }
                _ => match paired_at(c) {
                    Some(median) => judged.push((c, median, Some(ratio))),
                    None => judged.push((c, ratio, None)),
                },
            }
        }
        let mut reasons = Vec::new();
        if !shared.is_empty() {
            reasons.push(format!(
                "{}: the clients and the host ran on the workers' {cores} core(s) (run with \
                 --pin, or with more cores than --workers)",
                shared.join(", ")
            ));
        }
        if !bound.is_empty() {
            reasons.push(format!(
                "{}: the load generator set the rate, not the enclave",
                bound.join(", ")
            ));
        }
        let not_judged = shared.len() + bound.len();
        let Some(&(c, low, _)) = judged.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
            let verdict = if reasons.is_empty() {
                Verdict::Missing(format!("no cell at C ≥ {server}"))
            } else {
                Verdict::NotJudgeable(reasons.join("; "))
            };
            out.push(check(T, scope, "-".into(), verdict));
            continue;
        };
        let all = judged
            .iter()
            .map(|(c, r, cells)| match cells {
                Some(cells) => format!("C={c} {r:.2} (cells {cells:.2})"),
                None => format!("C={c} {r:.2}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let on = if judged.iter().any(|j| j.2.is_some()) {
            "paired medians: "
        } else {
            ""
        };
        let mut figure = format!("lowest {low:.3} at C={c} ({on}{all}; ≥ {THROUGHPUT_RATIO})");
        if not_judged > 0 {
            figure.push_str(&format!("; not judged: {}", reasons.join("; ")));
        }
        out.push(check(
            T,
            scope,
            figure,
            Verdict::of(low >= THROUGHPUT_RATIO),
        ));
    }
    out
}

/// Scaling with workers up to the core count (compare.json's worker-scaling runs, C = 2 × cores):
/// sealed's speedup from 1 to w workers at least 0.95 × bare's, for every w from 2 to cores − 1.
/// At w = cores the clients and the host share the workers' cores, so that row is not judged;
/// a machine with fewer than 3 cores judges nothing here.
pub fn check_scaling(run: &str, report: &Value) -> Vec<Check> {
    const T: &str = "throughput scales with workers up to the cores";
    let cores = report["settings"]["cores"].as_u64().unwrap_or(1);
    let mut out = Vec::new();
    for sc in report["scaling"].as_array().into_iter().flatten() {
        let scope = format!(
            "{run}: {} at C={}",
            sc["model"].as_str().unwrap_or("?"),
            sc["concurrency"]
        );
        let rows: Vec<&Value> = sc["rows"].as_array().into_iter().flatten().collect();
        let at = |w: u64, k: &str| {
            rows.iter()
                .find(|r| r["workers"].as_u64() == Some(w))
                .and_then(|r| f64_at(r, k))
        };
        let (Some(bare1), Some(sealed1)) = (at(1, "bare_rps"), at(1, "sealed_rps")) else {
            out.push(missing(T, &scope, "no 1-worker row".into()));
            continue;
        };
        let mut parts = Vec::new();
        let mut met = true;
        for w in 2..cores {
            let (Some(b), Some(s)) = (at(w, "bare_rps"), at(w, "sealed_rps")) else {
                continue;
            };
            let (bs, ss) = (b / bare1, s / sealed1);
            met &= ss >= THROUGHPUT_RATIO * bs;
            parts.push(format!("{w} workers: sealed ×{ss:.2}, bare ×{bs:.2}"));
        }
        if parts.is_empty() {
            out.push(check(
                T,
                scope,
                "-".into(),
                Verdict::NotJudgeable(format!(
                    "{cores} core(s): every row with 2 workers or more had the clients and the \
                     host on the workers' cores (needs ≥ 3 cores)"
                )),
            ));
            continue;
        }
        out.push(check(
            T,
            scope,
            format!("{} (sealed ≥ {THROUGHPUT_RATIO} × bare)", parts.join("; ")),
            Verdict::of(met),
        ));
    }
    out
}

/// Peak RSS: the enclave's peak growth over the model load at most bare tract's plus one chunk
/// buffer (compare's `memory` section, which computes the comparison, on the heap when it can).
pub fn check_memory(run: &str, report: &Value) -> Vec<Check> {
    const T: &str = "enclave peak RSS ≤ bare + one chunk";
    let mut out = Vec::new();
    for m in report["models"].as_array().into_iter().flatten() {
        let scope = format!("{run}: {}", m["id"].as_str().unwrap_or("?"));
        let mem = &m["memory"];
        let (Some(over), Some(allow), Some(met)) = (
            mem["sealed_peak_over_bare_kb"].as_i64(),
            mem["allowance_kb"].as_i64(),
            mem["sealed_target_met"].as_bool(),
        ) else {
            out.push(missing(T, &scope, "no memory figures".into()));
            continue;
        };
        // Judged on the heap (RssAnon's sampled peak) when the report has it; VmHWM, which also
        // counts the binaries' code pages, is shown beside it (docs/performance.md, round 8).
        let figure = match mem["sealed_anon_peak_over_bare_kb"].as_i64() {
            Some(heap) => format!(
                "heap peak over bare {heap} KiB (≤ {allow} KiB); VmHWM peak over bare {over} KiB"
            ),
            None => format!("peak over bare {over} KiB (≤ {allow} KiB); no heap figures"),
        };
        out.push(check(T, scope, figure, Verdict::of(met)));
    }
    out
}

/// Unseal: AES-256-GCM ≥ 1 GB/s on one core, and unseal + load ≤ 1.1 × a plain tract load of
/// the same bytes (the pipelined opener, the one the enclave uses), judged on the median ratio of
/// alternated pairs of the two loads where the report has them.
pub fn check_unseal(micro: Option<&Value>) -> Vec<Check> {
    const GCM: &str = "unseal ≥ 1 GB/s per core (AES-GCM)";
    const LOAD: &str = "unseal + load ≤ 1.1 × plain load";
    let Some(u) = micro.map(|m| &m["unseal"]).filter(|u| u.is_object()) else {
        let why = "no unseal section in micro.json".to_string();
        return vec![
            missing(GCM, "micro", why.clone()),
            missing(LOAD, "micro", why),
        ];
    };
    let scope = format!(
        "micro: {} model",
        size(u["model_bytes"].as_u64().unwrap_or(0))
    );
    let mut out = Vec::new();
    match f64_at(&u["aes_gcm_only"], "median_mb_s") {
        Some(mb) => {
            let opener = f64_at(&u["opener"], "median_mb_s").map_or(String::new(), |o| {
                format!("; the whole opener (with SHA-384) {o:.0}")
            });
            out.push(check(
                GCM,
                scope.clone(),
                format!("{mb:.0} MB/s (≥ {UNSEAL_MB_S:.0}){opener}"),
                Verdict::of(mb >= UNSEAL_MB_S),
            ));
        }
        None => out.push(missing(GCM, &scope, "no AES-GCM figure".into())),
    }
    // Shown beside the verdict: both loads from a trimmed heap, as a process's first load
    // (round 18; absent from earlier reports).
    let cold = u
        .get("trimmed_heap")
        .and_then(|t| t["pipelined_over_plain"].as_f64())
        .map(|c| format!("; from a trimmed heap {c:.3} × (not judged)"))
        .unwrap_or_default();
    // Judged on the median of the alternated pairs' ratios when the report has them (micro since
    // round 19); reports before that have only the ratio of the two medians.
    let medians = f64_at(u, "pipelined_unseal_plus_load_over_plain_load");
    let paired = &u["paired_loads"];
    match (f64_at(paired, "median_ratio"), medians) {
        (Some(r), _) => {
            let range = match (f64_at(paired, "min_ratio"), f64_at(paired, "max_ratio")) {
                (Some(lo), Some(hi)) => format!(" ({lo:.3}–{hi:.3})"),
                _ => String::new(),
            };
            let medians = medians
                .map(|m| format!("; medians {m:.3} ×"))
                .unwrap_or_default();
            out.push(check(
                LOAD,
                scope,
                format!(
                    "paired median {r:.3} × over {} pairs{range} (≤ {UNSEAL_LOAD_RATIO}){medians}{cold}",
                    paired["pairs"].as_u64().unwrap_or(0)
                ),
                Verdict::of(r <= UNSEAL_LOAD_RATIO),
            ));
        }
        (None, Some(r)) => out.push(check(
            LOAD,
            scope,
            format!("{r:.3} × (≤ {UNSEAL_LOAD_RATIO}){cold}"),
            Verdict::of(r <= UNSEAL_LOAD_RATIO),
        )),
        (None, None) => out.push(missing(LOAD, &scope, "no unseal + load figure".into())),
    }
    out
}

/// The host relay: ≥ 1 GB/s for 16 MiB over the Unix socket. Not judgeable when the minimal
/// forwarder (no HTTP, no user-space copy, same sockets and stand-in) is itself under 1 GB/s and
/// the host is within 10 % of it or above: the machine's ceiling, not the host, is then what
/// keeps the figure under the target.
pub fn check_relay(micro: Option<&Value>) -> Vec<Check> {
    const T: &str = "host relay ≥ 1 GB/s for 16 MiB";
    let case = micro.and_then(|m| {
        m["relay"]["cases"]
            .as_array()?
            .iter()
            .find(|c| c["payload_bytes"].as_u64() == Some(RELAY_BYTES))
    });
    let Some(case) = case else {
        return vec![missing(
            T,
            "micro",
            "no 16 MiB relay case in micro.json".into(),
        )];
    };
    let scope = "micro: relay, 16 MiB".to_string();
    let Some(host) = f64_at(case, "relay_mb_per_s") else {
        return vec![missing(T, &scope, "no relay figure".into())];
    };
    let ceiling = f64_at(&case["ceiling"], "relay_mb_per_s");
    let mut figure = format!("{host:.0} MB/s (≥ {RELAY_MB_S:.0})");
    if let Some(c) = ceiling {
        figure.push_str(&format!("; forwarder without HTTP {c:.0} MB/s"));
    }
    let verdict = match ceiling {
        _ if host >= RELAY_MB_S => Verdict::Met,
        Some(c) if c < RELAY_MB_S && host >= 0.9 * c => Verdict::NotJudgeable(format!(
            "a forwarder with no HTTP and no user-space copy reaches only {c:.0} MB/s on this \
             machine's sockets, and the host {:.2} × that",
            host / c
        )),
        _ => Verdict::NotMet,
    };
    vec![check(T, scope, figure, verdict)]
}

/// Every check over the reports found.
pub fn checks(r: &Reports) -> Vec<Check> {
    let micro = r.micro.as_ref();
    let mut out = Vec::new();
    for (run, report) in &r.compare {
        match report {
            Some(report) => {
                out.extend(check_latency(run, report, micro));
                out.extend(check_throughput(run, report));
                out.extend(check_scaling(run, report));
                out.extend(check_memory(run, report));
            }
            None => out.push(missing(
                "comparison run",
                run,
                format!("{run}.json not found"),
            )),
        }
    }
    out.extend(check_unseal(micro));
    out.extend(check_relay(micro));
    out
}

/// Warnings about the reports themselves: quick runs, builds other than release.
fn caveats(r: &Reports) -> Vec<String> {
    let mut out = Vec::new();
    for (run, report) in &r.compare {
        let Some(report) = report else { continue };
        if report["settings"]["quick"].as_bool() == Some(true) {
            out.push(format!(
                "{run}.json is a --quick run: short cells, figures not to publish"
            ));
        }
        if let Some(p) = report["machine"]["bench_profile"]
            .as_str()
            .filter(|p| *p != "release")
        {
            out.push(format!("{run}.json came from a {p} build, not release"));
        }
        if let Some(gap) = report["settings"]["paired_gap_ms"]
            .as_f64()
            .filter(|g| *g > 0.0)
        {
            out.push(format!(
                "{run}.json ran its paired rounds with --paired-gap-ms {gap}: latency after an \
                 idle gap, a diagnostic, not the standard run"
            ));
        }
    }
    if let Some(m) = &r.micro {
        if m["quick"].as_bool() == Some(true) {
            out.push("micro.json is a --quick run: few samples".into());
        }
        if let Some(p) = m["machine"]["profile"].as_str().filter(|p| *p != "release") {
            out.push(format!("micro.json came from a {p} build, not release"));
        }
    }
    out
}

fn machine_line(r: &Reports) -> String {
    let m = r
        .compare
        .iter()
        .find_map(|(_, v)| v.as_ref().map(|v| &v["machine"]))
        .or(r.micro.as_ref().map(|m| &m["machine"]));
    match m {
        Some(m) => format!(
            "Machine: {}, {} cores.",
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"]
        ),
        None => "Machine: unknown.".into(),
    }
}

/// The verdicts as a Markdown table, with the counts and the caveats.
pub fn table(r: &Reports, checks: &[Check]) -> String {
    let mut out = String::from("# sealed-bench targets (issue 6)\n\n");
    out.push_str(&machine_line(r));
    out.push('\n');
    for c in caveats(r) {
        out.push_str(&format!("Caveat: {c}.\n"));
    }
    out.push_str("\n| target | run | figure | verdict |\n| --- | --- | --- | --- |\n");
    for c in checks {
        let verdict = match c.verdict.reason() {
            Some(why) => format!("{}: {why}", c.verdict.word()),
            None => format!("**{}**", c.verdict.word()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c.target, c.scope, c.figure, verdict
        ));
    }
    let n = |f: fn(&Verdict) -> bool| checks.iter().filter(|c| f(&c.verdict)).count();
    out.push_str(&format!(
        "\n{} met, {} not met, {} not judgeable on this machine, {} missing.\n",
        n(|v| *v == Verdict::Met),
        n(|v| *v == Verdict::NotMet),
        n(|v| matches!(v, Verdict::NotJudgeable(_))),
        n(|v| matches!(v, Verdict::Missing(_))),
    ));
    out
}

pub fn json(r: &Reports, checks: &[Check]) -> Value {
    json!({
        "caveats": caveats(r),
        "checks": checks.iter().map(|c| json!({
            "target": c.target,
            "scope": c.scope,
            "figure": c.figure,
            "verdict": c.verdict.word(),
            "reason": c.verdict.reason(),
        })).collect::<Vec<_>>(),
    })
}

pub fn run(args: Args) -> Result<()> {
    let reports = Reports::load(&args.results_dir)?;
    let checks = checks(&reports);
    print!("{}", table(&reports, &checks));
    if let Some(path) = args.json {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json(&reports, &checks))? + "\n",
        )?;
        println!("verdicts written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
