//! `sealed-bench micro`: the two one-off costs of the sealed path, each beside what it is made of,
//! and the host's relay on its own (docs/performance.md).
//!
//! 1. Client attestation verification ([`attest`]): `sealed_attestation::verify` as
//!    `Client::attest` runs it after the HTTP fetch, on real AWS documents (verified as of their
//!    own timestamps) and on a mock-NSM document (plus the commitment and key-configuration checks
//!    the client adds), beside one ES384 verification × the number the verification performs.
//! 2. Sealed-model unseal ([`unseal`]): AES-256-GCM alone, SHA-384 alone and `sealed_model`'s
//!    opener on a ~100 MB model, beside tract's plain load of the same bytes and unseal + load.
//! 3. The host's relay alone ([`relay`]): the real `sealed-host` between an HTTP client and a
//!    stand-in enclave in this process, 1 KiB to 16 MiB bodies: round trip, relay MB/s, the
//!    host's CPU time, context switches and memory per request, beside a minimal forwarder on the
//!    same sockets (the ceiling baseline).
//! 4. The floor of the sealed path's added time (`crate::floor`, `--floor-only`): each HPKE step,
//!    the host↔enclave frame round trip and the HTTP round trip.
//!
//! Every figure except the relay's is single-threaded (one core). Nothing here prints key material
//! or model bytes. Figures for documents come from a release build; the report names the build profile and the
//! machine's load average before and after.
//!
//! # Layout
//! - `micro.rs`: the command line, timing and statistics helpers, the report.
//! - [`attest`]: the attestation cases. [`unseal`]: the unseal and load cases.
//! - [`onnx_gen`]: the ~100 MB ONNX model generated when `--models-dir` has no `large.onnx`.
//! - [`relay`]: the host relay case.

mod attest;
mod onnx_gen;
mod relay;
mod unseal;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of `scripts/make_bench_models.py` (models.json, large.onnx). Without a
    /// `large.onnx` there, a ~100 MB ONNX model is generated in memory instead (and said so).
    #[arg(long, default_value = "target/bench-models")]
    models_dir: PathBuf,
    /// Directory holding the real AWS attestation documents (`*-YYYY-MM-DD.cbor`). Default: the
    /// repository's `shared/attestation/tests/data`, then `../shared/vectors/nitro` beside it.
    #[arg(long)]
    vectors_dir: Option<PathBuf>,
    /// Short runs (smoke test): fewer samples, figures less stable.
    #[arg(long)]
    quick: bool,
    /// Only the attestation part.
    #[arg(long, conflicts_with_all = ["unseal_only", "relay_only", "floor_only"])]
    attest_only: bool,
    /// Only the unseal part.
    #[arg(long, conflicts_with_all = ["relay_only", "floor_only"])]
    unseal_only: bool,
    /// Only the host relay part (needs `sealed-host`, see --bin-dir).
    #[arg(long, conflicts_with = "floor_only")]
    relay_only: bool,
    /// Only the floor of the sealed path's added time (HPKE steps, socket and HTTP round trips).
    #[arg(long)]
    floor_only: bool,
    /// Where `sealed-host` is for the relay part (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How long and how often each case runs.
#[derive(Clone, Copy)]
struct Budget {
    /// Wall time per attestation case (after warm-up).
    attest_time: Duration,
    /// Fewest samples per attestation case, whatever the time.
    attest_min_runs: usize,
    /// Runs of each unseal-side measurement (100 MB each).
    unseal_runs: usize,
    /// Runs of tract loads (seconds each on 100 MB).
    load_runs: usize,
}

impl Budget {
    fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                attest_time: Duration::from_millis(300),
                attest_min_runs: 10,
                unseal_runs: 2,
                load_runs: 1,
            }
        } else {
            Budget {
                attest_time: Duration::from_secs(3),
                attest_min_runs: 100,
                unseal_runs: 5,
                load_runs: 5,
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let budget = Budget::new(args.quick);
    let machine_start = machine();
    println!("# sealed-bench micro");
    println!();
    println!("{}", machine_line(&machine_start));
    if cfg!(debug_assertions) {
        println!("**debug build: these figures are for smoke tests, not for docs**");
    }
    println!();

    let mut report = serde_json::Map::new();
    // First in the file; the load average after the run is added at the end.
    report.insert("machine".into(), machine_start.clone());
    let only = args.attest_only || args.unseal_only || args.relay_only || args.floor_only;
    // Located first: a missing binary fails the run before minutes of other cases.
    let host = if !only || args.relay_only {
        Some(relay::host_binary(args.bin_dir.as_deref())?)
    } else {
        None
    };
    if !only || args.attest_only {
        let vectors = attest::locate_vectors(args.vectors_dir.as_deref());
        let result = attest::run(&vectors, budget)?;
        print!("{}", attest::table(&result));
        println!();
        report.insert("attestation".into(), attest::json(&result));
    }
    if !only || args.unseal_only {
        let model = unseal::locate_model(&args.models_dir)?;
        let result = unseal::run(model, budget)?;
        print!("{}", unseal::table(&result));
        println!();
        report.insert("unseal".into(), unseal::json(&result));
    }

    if !only || args.floor_only {
        let floor = crate::floor::measure(args.quick)?;
        let us = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "## Floor of the sealed path's added time (a digits request; one f32 row each way)"
        );
        println!();
        let larger = &floor["larger"][0];
        println!(
            "| step | digits, median µs | f32 [1, {}] in and out, median µs |",
            crate::floor::ROW_LEN
        );
        println!("| --- | ---: | ---: |");
        let row = |label: &str, f: &dyn Fn(&Value) -> f64| {
            println!("| {label} | {:.1} | {:.1} |", f(&floor), f(larger));
        };
        for (step, label) in [
            ("seal_request", "HPKE: seal request (client)"),
            ("open_request", "HPKE: open request (enclave)"),
            ("seal_response", "HPKE: seal response (enclave)"),
            ("open_response", "HPKE: open response (client)"),
        ] {
            row(label, &|f| us(&f["hpke"][step], "median_us"));
        }
        row("HPKE: seal + open request, seal + open response", &|f| {
            us(&f["hpke"], "total_median_us")
        });
        row(
            "(beside, not in the floor) the client SDK's seal from its second request: the \
             setup was made while the previous request was on the wire",
            &|f| us(&f["hpke"]["seal_request_set_up_ahead"], "median_us"),
        );
        row(
            "(beside, not in the floor) that setup alone (X25519)",
            &|f| us(&f["hpke"]["setup_ahead"], "median_us"),
        );
        row("host↔enclave frame round trip (Unix socket)", &|f| {
            us(&f["frame_round_trip"], "median_us")
        });
        row(
            "client↔host HTTP/1.1 keep-alive round trip (127.0.0.1)",
            &|f| us(&f["http_round_trip"], "median_us"),
        );
        println!(
            "| **floor** | **{:.1}** | **{:.1}** |",
            us(&floor, "floor_us"),
            us(larger, "floor_us")
        );
        println!();
        report.insert("floor".into(), floor);
    }
    if let Some(host) = host {
        let result = relay::run(&host, relay::Budget::new(args.quick))?;
        print!("{}", relay::table(&result));
        println!();
        report.insert("relay".into(), relay::json(&result));
    }

    let machine_end = machine();
    println!(
        "load average after: {}",
        machine_end["loadavg"].as_str().unwrap_or("?")
    );
    let mut machine_json = machine_start;
    machine_json["loadavg_after"] = machine_end["loadavg"].clone();
    // Same key: keeps its first position (serde_json's `preserve_order`).
    report.insert("machine".into(), machine_json);
    report.insert("quick".into(), json!(args.quick));
    if let Some(path) = args.json {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(report))? + "\n",
        )?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// CPU model, cores, kernel, load average, build profile.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": cores,
        "kernel": kernel,
        "loadavg": loadavg,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn machine_line(m: &Value) -> String {
    format!(
        "machine: {} ({} cores), Linux {}, {} build, load average before: {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["profile"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
    )
}

/// Order statistics of a set of samples (any unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Stats {
    /// Nearest-rank percentiles; `None` for no samples.
    pub(crate) fn of(samples: &[f64]) -> Option<Stats> {
        let mut s: Vec<f64> = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let rank = |p: f64| -> f64 {
            // Nearest rank: the smallest value with at least p of the samples at or below it.
            let r = ((p * n as f64).ceil() as usize).clamp(1, n);
            s[r - 1]
        };
        (n > 0).then(|| Stats {
            n,
            min: s[0],
            median: rank(0.5),
            p99: rank(0.99),
            max: s[n - 1],
        })
    }

    fn json(&self) -> Value {
        json!({
            "n": self.n,
            "min": round3(self.min),
            "median": round3(self.median),
            "p99": round3(self.p99),
            "max": round3(self.max),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs `f` a few times to warm up, then at least `min_runs` times and until `time` has passed;
/// returns each run's duration in microseconds. An error from `f` stops the measurement: a case
/// that fails is not timed.
fn sample_us(
    time: Duration,
    min_runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..3 {
        f()?;
    }
    let mut out = Vec::with_capacity(min_runs);
    let start = Instant::now();
    while out.len() < min_runs || start.elapsed() < time {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// `runs` timings of `f` in seconds (no warm-up: each run is long).
fn time_runs<T>(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<f64>, T)> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let out = f()?;
        times.push(t.elapsed().as_secs_f64());
        // Dropped outside the timing (a model-sized drop wipes memory).
        last = Some(out);
    }
    match last {
        Some(out) => Ok((times, out)),
        None => anyhow::bail!("no run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_nearest_rank() {
        let samples: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let s = Stats::of(&samples).unwrap();
        assert_eq!(s.n, 200);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.median, 100.0);
        assert_eq!(s.p99, 198.0);
        assert_eq!(s.max, 200.0);
        let one = Stats::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.p99), (7.0, 7.0));
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn sampling_stops_on_error_and_honours_min_runs() {
        let mut calls = 0;
        let got = sample_us(Duration::ZERO, 5, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(calls, 8);
        let err = sample_us(Duration::ZERO, 5, || anyhow::bail!("broken"));
        assert!(err.is_err());
    }
}
