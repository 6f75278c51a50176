//! `sealed-bench compare`: bare tract vs the sealed path vs the plain-HTTP path
//! (docs/performance.md).
//!
//! For every model (H1's `models.json`, or the bundled digits model when that is missing) and
//! every input size, three variants run at each concurrency C for S seconds after a warm-up:
//! - **bare**: tract in this process, the enclave engine's structure, no transport ([`bare`]);
//! - **sealed**: the simulation stack, the model sealed and uploaded through the admin API, C
//!   attested SDK sessions ([`remote`]);
//! - **plain**: the same stack with `sealed-enclave-plain-bench`, plain `InferRequest` CBOR over
//!   HTTP (no HPKE, no attestation on the request path).
//!
//! Every answer is checked against the bare runner's answer to the same input (names, dtypes,
//! shapes, values; for `echo`, that answer is itself checked to be y = 2x + 1): a wrong answer is
//! counted as an error. Beside latency and throughput: model load (bare tract vs sealed upload →
//! ready), memory (VmRSS/VmHWM of each fresh enclave before the upload, once ready and after one
//! request, beside `sealed-bench bare-rss`, a child holding the model in bare tract, at the same
//! points; and the enclave's VmHWM after the whole run), `/proc/PID/io` bytes and CPU per request
//! for host and enclave, the inference worker threads' CPU per request (enclave and bare pool),
//! and worker scaling. Nothing is asserted about speed: figures are printed and written as JSON.
//! Every cell records the machine's load average (`/proc/loadavg`) as its measured window opens
//! and as it ends, so that a figure taken while something else used the cores shows it.
//!
//! With `--dynamic-batch N`, the sealed and plain enclaves are started with
//! `--dynamic-batch MODEL=N` for every model whose input and outputs share a symbolic axis 0
//! (models.json `batch_dim`; [`batch_selection`]): the variants are then labelled
//! `sealed+batchN` / `plain+batchN`; bare joins its queued jobs the same way in-process
//! (`bare+batchN`, zero wait, up to N rows), so that the ratios compare like with like; every
//! answer is still checked per request against bare's lone reference run.

mod bare;
mod pin;
mod remote;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealed_wire::{DType, NamedTensor, Tensor};
use serde_json::Value;

use crate::load::{AnonPeak, Mem, percentile, read_anon_kb, read_mem};

#[derive(clap::Args)]
pub struct Args {
    /// Directory with `models.json` (scripts/make_bench_models.py); without it, only the bundled
    /// digits model runs.
    #[arg(long, default_value = "target/bench-models")]
    models_dir: PathBuf,
    /// Only these model ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Inference workers for bare tract and the enclave (default: available cores; with --pin,
    /// half of them).
    #[arg(long)]
    workers: Option<usize>,
    /// Concurrent clients per cell (default 1,2,4,16,64; --quick 1,4).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Measured seconds per cell (default 3; --quick 0.5).
    #[arg(long)]
    seconds: Option<f64>,
    /// Short cells and fewer concurrencies: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where sealed-host, sealed-enclave and sealed-enclave-plain-bench are (default: next to
    /// this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run without the plain-HTTP variant (required when sealed-enclave-plain-bench is absent).
    #[arg(long)]
    no_plain: bool,
    /// Skip the worker-scaling runs.
    #[arg(long)]
    no_scaling: bool,
    /// onnxruntime figures (scripts/bench_onnxruntime.py) to print beside bare tract.
    #[arg(long)]
    ort_json: Option<PathBuf>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Dynamic batching in the sealed and plain enclaves: `--dynamic-batch MODEL=N` (2..=64
    /// rows) for every model under test whose input and outputs share a symbolic axis 0
    /// (models.json `batch_dim`); the others run unbatched, with a note. Bare tract batches the
    /// same models the same way in-process.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=64))]
    dynamic_batch: Option<u32>,
    /// Nitro's CPU split: the enclave (and bare tract's workers) on the last `--workers` CPUs,
    /// one per worker; this process (client harness, simulated AWS) and the host on the others.
    /// Sealed beside bare then compares what the enclave's own CPUs do per request. Needs
    /// `taskset` (util-linux) and at least 2 CPUs; the worker-scaling runs are skipped.
    #[arg(long)]
    pin: bool,
    /// Paired latency rounds: after a stack variant's cells, alternate C = 1 blocks of bare
    /// tract and that variant on each model's first input, this many times (default 5; --quick
    /// 2; 0: none). The median of the per-round p50 ratios cancels what the machine's speed does
    /// between cells measured minutes apart; the latency target is judged on it. `echo` is
    /// left out (not judged).
    #[arg(long)]
    paired_rounds: Option<usize>,
    /// Measured seconds of each paired block (default 1; --quick 0.3).
    #[arg(long)]
    paired_seconds: Option<f64>,
    /// Idle milliseconds before each request of the paired rounds, both sides, outside the
    /// timing (default 0: back to back). A diagnostic: what a request costs when it reaches a
    /// stack whose threads have slept that long, as they do between the requests of a model that
    /// takes that long (docs/performance.md, round 16). `targets` flags a report made with it.
    #[arg(long, value_name = "MS")]
    paired_gap_ms: Option<f64>,
}

/// A model to run, as models.json describes it.
pub struct ModelSpec {
    pub id: String,
    pub file: PathBuf,
    pub input_name: String,
    /// None for a symbolic dimension.
    pub shape: Vec<Option<u64>>,
    pub input_bytes: Vec<u64>,
    /// The dim_param that axis 0 of every input and every output shares (models.json
    /// `batch_dim`), when the model declares one.
    pub batch_dim: Option<String>,
}

/// One model × input size: the input every request sends and the answer it must get.
pub struct Case {
    pub input_bytes: u64,
    pub input_name: String,
    pub input: Tensor,
    pub reference: Vec<NamedTensor>,
}

/// When a cell's clients start measuring and stop sending.
#[derive(Clone, Copy)]
pub struct Window {
    pub warm_end: Instant,
    pub end: Instant,
    /// Idle time each client waits before each request, outside the timing.
    pub gap: Duration,
}

impl Window {
    /// A client stops at the end of the window once it has one measured request (a request
    /// slower than the whole cell still gives a figure instead of an empty cell).
    pub fn done(&self, now: Instant, measured: bool) -> bool {
        now >= self.end && measured
    }

    /// Whether an answer at `done` counts towards the cell's throughput: every answer that
    /// arrives inside the measured window, whenever its request was sent. The clients keep the
    /// stack full until the window closes, so these are steady-state completions; counting
    /// only the requests sent inside the window over their own span (as the cells did until
    /// round 19) left out the server's work on the requests in flight when the window opened,
    /// and under-reported throughput by window / (window + latency): ~35 % for conv at C = 64
    /// in 1 s blocks, ~10 % in 3 s cells.
    pub fn counts(&self, done: Instant) -> bool {
        done >= self.warm_end && done <= self.end
    }

    /// The measured window's length in seconds.
    pub fn seconds(&self) -> f64 {
        self.end.duration_since(self.warm_end).as_secs_f64()
    }

    /// The union of two clients' (first measured send, last answer) spans: a cell's measured
    /// requests over this span are its throughput when no answer arrived inside the window.
    pub fn merge(
        a: Option<(Instant, Instant)>,
        b: Option<(Instant, Instant)>,
    ) -> Option<(Instant, Instant)> {
        match (a, b) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, None) => a,
            (None, b) => b,
        }
    }
}

/// What one variant did at one concurrency.
#[derive(Default, Clone)]
pub struct Cell {
    pub concurrency: usize,
    /// Latencies of the correct answers, µs, sorted by [`Cell::finish`].
    pub lat_us: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    /// First measured send to the last answer.
    pub wall_s: f64,
    /// The measured window (warm-up end → end) and the answers that arrived inside it, correct
    /// and all ([`Window::counts`]): throughput and the per-request counters are taken over it.
    pub window_s: f64,
    pub window_ok: u64,
    pub window_answers: u64,
    /// Host and enclave counters over the window (stack variants).
    pub host: Option<Counters>,
    pub enclave: Option<Counters>,
    /// This process's counters over the window (bare: its worker threads are the pool's; stack
    /// variants: the client harness).
    pub bench: Option<Counters>,
    /// The machine's load average when the measured window opened and when the cell ended.
    pub load: LoadSpan,
}

impl Cell {
    fn finish(&mut self) {
        self.lat_us.sort_unstable();
    }
    pub fn ok(&self) -> u64 {
        self.lat_us.len() as u64
    }
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
    /// Correct answers per second inside the measured window; a cell none of whose answers
    /// arrived inside it (requests slower than the window) falls back to its measured requests
    /// over their own span.
    pub fn throughput(&self) -> f64 {
        if self.window_ok > 0 && self.window_s > 0.0 {
            self.window_ok as f64 / self.window_s
        } else {
            self.ok() as f64 / self.wall_s.max(1e-9)
        }
    }
    pub fn p_ms(&self, p: f64) -> f64 {
        percentile(&self.lat_us, p) as f64 / 1000.0
    }
    /// Mean latency of the correct answers, ms (None without any).
    pub fn mean_ms(&self) -> Option<f64> {
        (!self.lat_us.is_empty())
            .then(|| self.lat_us.iter().sum::<u64>() as f64 / self.lat_us.len() as f64 / 1000.0)
    }
    /// A counter per request: the counters cover the measured window, so per answer inside it
    /// (ok + errors over their span when none arrived inside it).
    pub fn per_request(&self, value: Option<u64>) -> Option<f64> {
        let n = if self.window_answers > 0 {
            self.window_answers
        } else {
            self.ok() + self.error_count()
        };
        value.filter(|_| n > 0).map(|b| b as f64 / n as f64)
    }
    /// CPU µs per request of one process.
    pub fn cpu_us_per_request(&self, c: Option<Counters>) -> Option<f64> {
        self.per_request(c.map(|c| c.cpu_ticks))
            .map(|t| t * 1e6 / CLOCK_TICKS_PER_S)
    }
    /// CPU µs per request of the inference worker threads: the enclave's for the stack
    /// variants, the bare pool's for bare.
    pub fn worker_cpu_us_per_request(&self) -> Option<f64> {
        self.per_request(self.enclave.or(self.bench).map(|c| c.worker_ticks))
            .map(|t| t * 1e6 / CLOCK_TICKS_PER_S)
    }
}

/// One variant of one model: per case, per concurrency (None: skipped).
pub struct VariantRun {
    /// Why it did not run at all.
    pub skipped: Option<String>,
    pub cells: Vec<Vec<Option<Cell>>>,
    /// Model load: bare tract parse → runnable, or sealed upload → ready.
    pub load_ms: Option<f64>,
    /// Bare: the bare-rss child's VmHWM; stacks: the enclave's VmHWM after the run.
    pub hwm_kb: Option<u64>,
    /// Memory around the model load, before any cell: the bare-rss child, or the fresh enclave.
    pub mem: MemSteps,
    /// Plaintext bytes per chunk of the sealed file the enclave opened (stack variants).
    pub chunk_size: Option<u32>,
    /// Paired C = 1 rounds on the first input (stack variants; empty when none ran).
    pub paired: Vec<PairedRound>,
    /// Paired throughput rounds at the judged concurrencies above 1, on the first input (the
    /// sealed variant, when the harness has CPUs of its own; empty otherwise).
    pub paired_throughput: Vec<PairedThroughput>,
}

/// One round of the paired latency blocks: bare tract, then the stack variant, back to back on
/// the same input at C = 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedRound {
    pub bare_p50_ms: f64,
    pub p50_ms: f64,
    /// Each block's requests per second: the throughput pair at C = 1 (none with
    /// `--paired-gap-ms`, whose idle time is not the stack's).
    pub bare_rps: Option<f64>,
    pub rps: Option<f64>,
}

/// Paired throughput at one concurrency: bare tract's and the stack's requests per second in
/// alternating blocks, one pair per round (see [`Paired::throughput_at`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PairedThroughput {
    pub concurrency: usize,
    /// (bare, stack) requests per second.
    pub rounds: Vec<(f64, f64)>,
}

/// How the paired rounds run (see [`Args::paired_rounds`]).
pub struct Paired<'a> {
    pub pool: &'a bare::Pool,
    pub rounds: usize,
    pub warmup: f64,
    pub secs: f64,
    /// Idle time before each request ([`Args::paired_gap_ms`]).
    pub gap: Duration,
    /// Concurrencies above 1 at which the sealed variant's throughput is also measured in
    /// alternating blocks, each round after the C = 1 ones: the throughput target's cells
    /// (C ≥ the enclave's CPUs) when the clients and the host have CPUs of their own. A cell
    /// measured minutes after bare tract's measures the VM's drift too (`large` pinned at C = 4:
    /// 0.79, 0.92 and 1.01 in three runs the same hour, round 19).
    pub throughput_at: Vec<usize>,
}

/// One process's VmRSS / VmHWM (proc(5) `/proc/PID/status`) at three points around loading one
/// model: what the model costs in memory, apart from what requests in flight add later.
#[derive(Default, Clone, Copy)]
pub struct MemSteps {
    /// Before the model: the enclave started, nothing uploaded; bare-rss before reading the file.
    pub(crate) baseline: Option<Mem>,
    /// Model ready (sealed upload → ready, or bare tract load), no inference yet.
    pub(crate) loaded: Option<Mem>,
    /// After one inference at C = 1.
    pub(crate) inferred: Option<Mem>,
    /// RssAnon before the model, and its highest sample from then until after the inference
    /// (`load::AnonPeak`): the heap's peak, which the target is judged on (round 8: VmHWM also
    /// counts the binary's code pages).
    pub(crate) anon_baseline_kb: Option<u64>,
    pub(crate) anon_peak_kb: Option<u64>,
}

impl VariantRun {
    fn skipped(reason: String) -> VariantRun {
        VariantRun {
            skipped: Some(reason),
            cells: Vec::new(),
            load_ms: None,
            hwm_kb: None,
            mem: MemSteps::default(),
            chunk_size: None,
            paired: Vec::new(),
            paired_throughput: Vec::new(),
        }
    }
}

pub struct ModelResult {
    pub id: String,
    pub bytes: u64,
    pub cases: Vec<u64>,
    pub bare: VariantRun,
    pub sealed: VariantRun,
    pub plain: VariantRun,
    /// `--dynamic-batch` rows the sealed and plain enclaves had for this model (None: unbatched).
    pub batch_rows: Option<u32>,
}

/// One worker count of a scaling run.
pub struct ScalingRow {
    pub workers: usize,
    pub bare_rps: Option<f64>,
    pub sealed_rps: Option<f64>,
    pub bare_load: LoadSpan,
    pub sealed_load: LoadSpan,
}

/// Worker scaling: throughput at C = 2 × cores for each worker count.
pub struct Scaling {
    pub model: String,
    pub concurrency: usize,
    pub rows: Vec<ScalingRow>,
    /// `--dynamic-batch` rows of the sealed enclaves (None: unbatched).
    pub batch_rows: Option<u32>,
}

pub struct Settings {
    pub workers: usize,
    pub cores: usize,
    pub concurrency: Vec<usize>,
    pub seconds: f64,
    pub warmup: f64,
    /// Paired rounds per stack variant (0: none) and each block's measured seconds.
    pub paired_rounds: usize,
    pub paired_seconds: f64,
    /// `--paired-gap-ms` (0: requests back to back).
    pub paired_gap_ms: f64,
    pub quick: bool,
    pub plain: bool,
    /// `--dynamic-batch N` as given (which models it applied to: [`ModelResult::batch_rows`]).
    pub dynamic_batch: Option<u32>,
    /// `--pin`: the CPU split the cells ran under.
    pub pin: Option<pin::Pin>,
    pub notes: Vec<String>,
}

/// `compare`'s payload sweep (y = 2x + 1 over 1 kB … 16 MB): no model work, so its time is the
/// data's movement, which the relay target covers. Its latency rows are shown, not judged, and
/// it gets no paired rounds.
pub const PAYLOAD_SWEEP: &str = "echo";

/// Cells whose requests would hold more than this many input bytes in flight are skipped (and
/// listed as skipped): 64 × 16 MB requests would hold gigabytes in client, host and enclave.
const MAX_IN_FLIGHT_BYTES: u64 = 256 * 1024 * 1024;

/// The system load averages over 1, 5 and 15 minutes (proc(5) `/proc/loadavg`, its first three
/// fields): runnable plus uninterruptible tasks, so a cell that shared the cores with a build or
/// another benchmark shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl LoadAvg {
    /// The first three fields of the text of `/proc/loadavg` (`0.68 1.42 1.58 2/87 16227`).
    pub fn parse(text: &str) -> Option<LoadAvg> {
        let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
        let (one, five, fifteen) = (f.next()??, f.next()??, f.next()??);
        Some(LoadAvg { one, five, fifteen })
    }

    pub fn read() -> Option<LoadAvg> {
        LoadAvg::parse(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }
}

/// The load average at the start and the end of one measured cell (None: unreadable).
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct LoadSpan {
    pub start: Option<LoadAvg>,
    pub end: Option<LoadAvg>,
}

impl LoadSpan {
    /// `1.23→2.34` (the 1-minute figures), for the lines printed while the cells run.
    pub fn one_minute(&self) -> String {
        let one = |l: Option<LoadAvg>| l.map_or("?".to_string(), |l| format!("{:.2}", l.one));
        format!("{}→{}", one(self.start), one(self.end))
    }
}

/// Per-process counters read at the start and the end of a measured window.
#[derive(Default, Clone, Copy)]
pub struct Counters {
    /// rchar + wchar (proc(5) `/proc/PID/io`): bytes through read(2)/write(2)-family calls.
    /// Linux does not count send(2)/recv(2)-family calls here, which is how Rust's std and tokio
    /// move socket data, so socket payloads are mostly missing from this figure.
    pub io_bytes: u64,
    /// utime + stime in clock ticks (proc(5) `/proc/PID/stat` fields 14 and 15).
    pub cpu_ticks: u64,
    /// Voluntary + involuntary context switches summed over the live threads.
    pub ctx_switches: u64,
    /// utime + stime of the inference worker threads alone ([`WORKER_THREAD_PREFIXES`]), in
    /// clock ticks: the model's own cost per request, apart from the path around it.
    pub worker_ticks: u64,
}

/// Names of inference worker threads: the enclave engine's (`engine-worker-N`) and the bare
/// pool's ([`bare::Pool`]).
const WORKER_THREAD_PREFIXES: [&str; 2] = ["engine-worker", "bare-worker"];

/// The command name and utime + stime (clock ticks) from the text of a `/proc/PID/stat` or
/// `/proc/PID/task/TID/stat` file (proc(5): fields 2, 14 and 15). The name is in parentheses and
/// may itself hold spaces or parentheses, so the fields after it are found from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let rest: Vec<&str> = rest.split_whitespace().collect();
    // `rest[0]` is field 3 (`state`): utime and stime, fields 14 and 15, are at 11 and 12.
    let tick = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((comm, tick(11)? + tick(12)?))
}

/// USER_HZ: the unit of `/proc/PID/stat` times (100 on every Linux architecture Rust targets
/// with a Nitro host).
const CLOCK_TICKS_PER_S: f64 = 100.0;

impl Counters {
    pub fn read(pid: Option<u32>) -> Option<Counters> {
        let pid = pid?;
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, cpu_ticks) = parse_stat(&stat)?;
        let mut ctx_switches = 0;
        let mut worker_ticks = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                ctx_switches += field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
                    + field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
            }
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
                && let Some((comm, ticks)) = parse_stat(&stat)
                && WORKER_THREAD_PREFIXES.iter().any(|p| comm.starts_with(p))
            {
                worker_ticks += ticks;
            }
        }
        Some(Counters {
            io_bytes: field(&io, "rchar:")? + field(&io, "wchar:")?,
            cpu_ticks,
            ctx_switches,
            worker_ticks,
        })
    }

    /// `after - self`.
    pub fn delta(self, after: Counters) -> Counters {
        Counters {
            io_bytes: after.io_bytes.saturating_sub(self.io_bytes),
            cpu_ticks: after.cpu_ticks.saturating_sub(self.cpu_ticks),
            ctx_switches: after.ctx_switches.saturating_sub(self.ctx_switches),
            worker_ticks: after.worker_ticks.saturating_sub(self.worker_ticks),
        }
    }
}

/// Deterministic inputs in [-1, 1) (xorshift64*, fixed seed): the same bytes for every variant.
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            (r as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The input shape for `input_bytes` of f32: a symbolic dimension takes what the fixed ones leave.
fn resolve_shape(shape: &[Option<u64>], input_bytes: u64) -> Result<Vec<u64>> {
    let fixed: u64 = shape.iter().flatten().product();
    let symbolic = shape.iter().filter(|d| d.is_none()).count();
    let elements = input_bytes / 4;
    match symbolic {
        0 => Ok(shape.iter().flatten().copied().collect()),
        1 if fixed > 0 && elements.is_multiple_of(fixed) => Ok(shape
            .iter()
            .map(|d| d.unwrap_or(elements / fixed))
            .collect()),
        _ => bail!("cannot shape {input_bytes} bytes of f32 into {shape:?}"),
    }
}

fn values_match(got: &Tensor, want: &Tensor) -> bool {
    match want.dtype() {
        DType::F32 => match (got.to_f32(), want.to_f32()) {
            (Ok(g), Ok(w)) => g
                .iter()
                .zip(&w)
                .all(|(g, w)| (g - w).abs() <= 1e-4 + 1e-4 * w.abs()),
            _ => false,
        },
        _ => got.data() == want.data(),
    }
}

/// An answer is right when it has the reference's outputs (names, dtypes, shapes) with the same
/// values (f32 within 1e-4 relative + absolute).
pub fn check_answer(case: &Case, outputs: &[NamedTensor]) -> Result<(), String> {
    if outputs.len() != case.reference.len() {
        return Err("wrong_answer".into());
    }
    for want in &case.reference {
        let Some(got) = outputs.iter().find(|o| o.name == want.name) else {
            return Err("wrong_answer".into());
        };
        if got.tensor.dtype() != want.tensor.dtype()
            || got.tensor.shape() != want.tensor.shape()
            || !values_match(&got.tensor, &want.tensor)
        {
            return Err("wrong_answer".into());
        }
    }
    Ok(())
}

/// echo: y = 2x + 1 elementwise (checks the reference itself).
fn check_echo(input: &Tensor, outputs: &[NamedTensor]) -> Result<()> {
    let x = input.to_f32()?;
    let [out] = outputs else {
        bail!("echo: expected one output")
    };
    let y = out.tensor.to_f32()?;
    if y.len() != x.len()
        || x.iter()
            .zip(&y)
            .any(|(x, y)| (x * 2.0 + 1.0 - y).abs() > 1e-5)
    {
        bail!("echo: bare tract did not answer y = 2x + 1");
    }
    Ok(())
}

fn load_specs(dir: &Path, only: &[String], notes: &mut Vec<String>) -> Result<Vec<ModelSpec>> {
    let index = dir.join("models.json");
    let mut specs = Vec::new();
    if index.is_file() {
        let j: Value = serde_json::from_str(&std::fs::read_to_string(&index)?)
            .with_context(|| format!("{}", index.display()))?;
        for m in j["models"].as_array().context("models.json: no models")? {
            let id = m["id"].as_str().context("models.json: id")?.to_string();
            if m["input"]["dtype"].as_str() != Some("f32") {
                bail!("models.json: {id}: only f32 inputs are supported");
            }
            let shape = m["input"]["shape"]
                .as_array()
                .context("models.json: shape")?
                .iter()
                .map(Value::as_u64)
                .collect();
            specs.push(ModelSpec {
                file: dir.join(m["file"].as_str().context("models.json: file")?),
                input_name: m["input"]["name"]
                    .as_str()
                    .context("models.json: input name")?
                    .to_string(),
                shape,
                input_bytes: m["input_bytes"]
                    .as_array()
                    .context("models.json: input_bytes")?
                    .iter()
                    .filter_map(Value::as_u64)
                    .collect(),
                batch_dim: m["batch_dim"].as_str().map(str::to_string),
                id,
            });
        }
    } else {
        notes.push(format!(
            "{} not found (scripts/bench.sh makes it): bundled digits model only",
            index.display()
        ));
        let digits = sealed_sim::assets::Digits::load(&sealed_sim::assets::default_dir())?;
        specs.push(ModelSpec {
            id: "digits".into(),
            file: digits.model,
            input_name: "input".into(),
            shape: vec![Some(1), Some(64)],
            input_bytes: vec![256],
            // sim/assets/digits/digits.onnx: input [batch, 64], outputs [batch, 10] and [batch].
            batch_dim: Some("batch".into()),
        });
    }
    if !only.is_empty() {
        for want in only {
            if !specs.iter().any(|s| &s.id == want) {
                bail!("model {want:?} is not in the model list");
            }
        }
        specs.retain(|s| only.contains(&s.id));
    }
    Ok(specs)
}

/// Whether `--dynamic-batch rows` applies to `spec`: its input must be a batch of samples along
/// axis 0 (rank ≥ 2) that every output shares as one symbolic dimension (models.json
/// `batch_dim`, written by scripts/make_bench_models.py from the ONNX graph), which is what the
/// enclave requires of a model it batches. Rank 1 (`echo`'s [n]) is one sample, not a batch.
/// Err: why the model runs unbatched.
fn batch_selection(spec: &ModelSpec, rows: u32) -> Result<u32, String> {
    match &spec.batch_dim {
        None => Err(
            "axis 0 is not a symbolic dimension shared by the input and every output \
             (models.json batch_dim is null or absent: scripts/make_bench_models.py writes it)"
                .into(),
        ),
        Some(_) if spec.shape.len() < 2 => {
            Err("its input has rank 1: axis 0 is the sample itself, not a batch of samples".into())
        }
        Some(_) => Ok(rows),
    }
}

/// Fails unless `enclave --help` lists `--dynamic-batch` (a binary built before the flag would
/// otherwise exit at start with a usage error, less clear than this).
fn check_dynamic_batch_flag(enclave: &Path) -> Result<()> {
    let out = std::process::Command::new(enclave)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", enclave.display()))?;
    if !String::from_utf8_lossy(&out.stdout).contains("--dynamic-batch") {
        bail!(
            "--dynamic-batch: {} has no --dynamic-batch option (a build from before dynamic \
             batching): rebuild it{}, or run without --dynamic-batch",
            enclave.display(),
            if enclave.ends_with("sealed-enclave-plain-bench") {
                ", pass --no-plain"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The concurrencies of the paired throughput rounds: those above 1 where the throughput target
/// is judged (C ≥ the workers' CPUs), when the clients and the host have CPUs of their own (the
/// target is not judged otherwise, `targets::check_throughput`) and requests come back to back.
/// C = 1 comes from the latency rounds.
fn paired_throughput_at(
    concurrency: &[usize],
    workers: usize,
    harness_cpus: usize,
    gap_ms: f64,
) -> Vec<usize> {
    if harness_cpus == 0 || gap_ms > 0.0 {
        return Vec::new();
    }
    concurrency
        .iter()
        .copied()
        .filter(|&c| c > 1 && c >= workers)
        .collect()
}

/// Bare cell: `concurrency` threads sending jobs to the pool back to back.
fn bare_cell(
    pool: &bare::Pool,
    case: &Case,
    concurrency: usize,
    warmup: f64,
    secs: f64,
    gap: Duration,
) -> Cell {
    let start = Instant::now();
    let w = Window {
        warm_end: start + Duration::from_secs_f64(warmup),
        end: start + Duration::from_secs_f64(warmup + secs),
        gap,
    };
    let mut out = Cell {
        concurrency,
        ..Cell::default()
    };
    let mut span: Option<(Instant, Instant)> = None;
    let me = Some(std::process::id());
    let (mut before, mut after) = (None, None);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                    let mut span: Option<(Instant, Instant)> = None;
                    let mut in_window = (0u64, 0u64);
                    loop {
                        if !w.gap.is_zero() {
                            std::thread::sleep(w.gap);
                        }
                        let sent = Instant::now();
                        if w.done(sent, span.is_some()) {
                            break;
                        }
                        let answer = pool.infer(vec![case.input.clone()]);
                        let done = Instant::now();
                        let checked = answer.and_then(|o| check_answer(case, &o));
                        if w.counts(done) {
                            in_window.0 += u64::from(checked.is_ok());
                            in_window.1 += 1;
                        }
                        if sent < w.warm_end {
                            continue;
                        }
                        span = Some((span.map_or(sent, |s| s.0), done));
                        match checked {
                            Ok(()) => lat.push(done.duration_since(sent).as_micros() as u64),
                            Err(e) => *errors.entry(e).or_default() += 1,
                        }
                    }
                    (lat, errors, span, in_window)
                })
            })
            .collect();
        std::thread::sleep(w.warm_end.saturating_duration_since(Instant::now()));
        before = Counters::read(me);
        out.load.start = LoadAvg::read();
        // The counters cover the measured window, as the throughput does.
        std::thread::sleep(w.end.saturating_duration_since(Instant::now()));
        after = Counters::read(me);
        for t in threads {
            if let Ok((lat, errors, s, in_window)) = t.join() {
                out.lat_us.extend(lat);
                for (k, v) in errors {
                    *out.errors.entry(k).or_default() += v;
                }
                span = Window::merge(span, s);
                out.window_ok += in_window.0;
                out.window_answers += in_window.1;
            } else {
                *out.errors.entry("client_panicked".into()).or_default() += 1;
            }
        }
    });
    out.window_s = w.seconds();
    out.bench = before.zip(after).map(|(a, b)| a.delta(b));
    out.load.end = LoadAvg::read();
    out.wall_s = span.map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
    out.finish();
    out
}

/// Runs `sealed-bench bare-rss` on `file` in a child process: its memory before reading the
/// model, after loading it and after one inference.
fn bare_rss_child(spec: &ModelSpec, shape: &[u64]) -> Result<MemSteps> {
    let exe = std::env::current_exe()?;
    let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
    let out = std::process::Command::new(exe)
        .arg("bare-rss")
        .arg("--model")
        .arg(&spec.file)
        .arg("--shape")
        .arg(shape.join(","))
        .output()?;
    if !out.status.success() {
        bail!(
            "bare-rss failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_bare_rss(text.trim())
}

/// The `bare-rss` child's JSON line (see [`bare_rss`]).
fn parse_bare_rss(line: &str) -> Result<MemSteps> {
    let j: Value = serde_json::from_str(line).context("bare-rss output")?;
    let mem = |key: &str| -> Result<Mem> {
        let m = &j[key];
        Ok(Mem {
            rss_kb: m["vmrss_kb"]
                .as_u64()
                .with_context(|| format!("bare-rss: no {key}.vmrss_kb"))?,
            hwm_kb: m["vmhwm_kb"]
                .as_u64()
                .with_context(|| format!("bare-rss: no {key}.vmhwm_kb"))?,
        })
    };
    Ok(MemSteps {
        baseline: Some(mem("baseline")?),
        loaded: Some(mem("loaded")?),
        inferred: Some(mem("inferred")?),
        anon_baseline_kb: j["rssanon_baseline_kb"].as_u64(),
        anon_peak_kb: j["rssanon_peak_kb"].as_u64(),
    })
}

fn skip_reason(case: &Case, c: usize) -> bool {
    case.input_bytes.saturating_mul(c as u64) > MAX_IN_FLIGHT_BYTES
}

/// Machine description for the report header.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "kernel": kernel,
        "bench_profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        // 1, 5 and 15 minutes; `loadavg_end` is added when the run ends. Each cell has its own.
        "loadavg_start": report::loadavg_json(LoadAvg::read()),
    })
}

/// One block of bare tract, then one of the stack variant, at concurrency `c`: a round of the
/// paired latency or throughput measurements. Errors in either block fail the pair.
async fn paired_blocks(
    p: &Paired<'_>,
    mode: remote::Mode,
    running: &remote::RunningStack,
    model: &str,
    case: &Arc<Case>,
    c: usize,
    gap: Duration,
) -> Result<(Cell, Cell)> {
    let b = bare_cell(p.pool, case, c, p.warmup, p.secs, gap);
    let s = remote::cell(
        mode,
        running,
        model,
        case,
        c,
        remote::CellTiming {
            warmup: Duration::from_secs_f64(p.warmup),
            seconds: Duration::from_secs_f64(p.secs),
            gap,
        },
    )
    .await?;
    if b.ok() == 0 || s.ok() == 0 || b.error_count() + s.error_count() > 0 {
        bail!("errors (bare {:?}, stack {:?})", b.errors, s.errors);
    }
    Ok((b, s))
}

#[allow(clippy::too_many_arguments)]
fn run_stack_variant(
    rt: &tokio::runtime::Runtime,
    sim: &mut remote::Sim,
    mode: remote::Mode,
    enclave: &Path,
    spec: &ModelSpec,
    cases: &[Arc<Case>],
    concurrency: &[usize],
    workers: usize,
    batch_rows: Option<u32>,
    pinning: Option<&pin::Pin>,
    warmup: f64,
    secs: f64,
    paired: Option<&Paired<'_>>,
) -> Result<VariantRun> {
    let max_c = concurrency.iter().copied().max().unwrap_or(1);
    let label = report::variant_label(
        if mode == remote::Mode::Sealed {
            "sealed"
        } else {
            "plain"
        },
        batch_rows.map(u64::from),
    );
    rt.block_on(async {
        let started = sim
            .start_stack(enclave, workers, max_c, &spec.id, &spec.file, batch_rows)
            .await?;
        let running = started.running;
        if let (Some(p), Some(pid)) = (pinning, running.enclave_pid()) {
            pin::pin_process(pid, &p.server)?;
        }
        let mut mem = MemSteps {
            baseline: started.baseline,
            loaded: started.loaded,
            inferred: None,
            anon_baseline_kb: started.anon_baseline_kb,
            anon_peak_kb: None,
        };
        // One request at C = 1 before any cell: what the first inference adds (tract's scratch,
        // a worker's stack, a session), apart from what many requests in flight add later.
        let mut failure = match cases.first() {
            Some(case) => remote::one_request(mode, &running, &spec.id, case)
                .await
                .err(),
            None => None,
        };
        mem.inferred = read_mem(running.enclave_pid());
        mem.anon_peak_kb = started.anon_peak.and_then(AnonPeak::finish);
        let mut cells = Vec::new();
        let cases = if failure.is_some() { &[][..] } else { cases };
        'cases: for case in cases {
            let mut row = Vec::new();
            for &c in concurrency {
                if skip_reason(case, c) {
                    row.push(None);
                    continue;
                }
                let cell = remote::cell(
                    mode,
                    &running,
                    &spec.id,
                    case,
                    c,
                    remote::CellTiming {
                        warmup: Duration::from_secs_f64(warmup),
                        seconds: Duration::from_secs_f64(secs),
                        gap: Duration::ZERO,
                    },
                )
                .await;
                match cell {
                    Ok(cell) => {
                        eprintln!(
                            "  {label:<6} {:>9} B  C={c:<3} {:>8.1} req/s  p50 {:.3} ms  errors {}  load {}",
                            case.input_bytes,
                            cell.throughput(),
                            cell.p_ms(50.0),
                            cell.error_count(),
                            cell.load.one_minute()
                        );
                        row.push(Some(cell));
                    }
                    Err(e) => {
                        failure = Some(e);
                        cells.push(row);
                        break 'cases;
                    }
                }
            }
            cells.push(row);
        }
        // Paired rounds: bare and this variant alternate in short blocks, so that both see the
        // machine in the same state (this VM's bare p50 for `large` moved 6.4 → 9.7 ms between
        // runs minutes apart; cells a minute apart measure that drift as much as the stack).
        let mut rounds = Vec::new();
        if let (Some(p), Some(case), None) = (paired, cases.first(), &failure) {
            for r in 0..p.rounds {
                let (b, s) = match paired_blocks(p, mode, &running, &spec.id, case, 1, p.gap).await
                {
                    Ok(pair) => pair,
                    Err(e) => {
                        failure = Some(e.context(format!("paired round {r}, {label}")));
                        break;
                    }
                };
                let no_gap = p.gap.is_zero();
                let round = PairedRound {
                    bare_p50_ms: b.p_ms(50.0),
                    p50_ms: s.p_ms(50.0),
                    bare_rps: no_gap.then(|| b.throughput()),
                    rps: no_gap.then(|| s.throughput()),
                };
                eprintln!(
                    "  paired {}/{}: bare p50 {:.3} ms, {label} p50 {:.3} ms ({:.3})",
                    r + 1,
                    p.rounds,
                    round.bare_p50_ms,
                    round.p50_ms,
                    round.p50_ms / round.bare_p50_ms
                );
                rounds.push(round);
            }
        }
        // Paired throughput: the sealed variant only (the target is sealed / bare), each round
        // visiting every concurrency in turn so that each one's rounds spread over the whole run.
        let mut throughput: Vec<PairedThroughput> = Vec::new();
        if let (Some(p), Some(case), None, remote::Mode::Sealed) =
            (paired, cases.first(), &failure, mode)
        {
            let at: Vec<usize> = p
                .throughput_at
                .iter()
                .copied()
                .filter(|&c| !skip_reason(case, c))
                .collect();
            throughput = at
                .iter()
                .map(|&concurrency| PairedThroughput {
                    concurrency,
                    rounds: Vec::new(),
                })
                .collect();
            'rounds: for r in 0..p.rounds {
                for t in &mut throughput {
                    let c = t.concurrency;
                    let pair =
                        paired_blocks(p, mode, &running, &spec.id, case, c, Duration::ZERO).await;
                    let (b, s) = match pair {
                        Ok(pair) => pair,
                        Err(e) => {
                            failure = Some(
                                e.context(format!("paired throughput round {r} at C={c}, {label}")),
                            );
                            break 'rounds;
                        }
                    };
                    let (bare_rps, rps) = (b.throughput(), s.throughput());
                    eprintln!(
                        "  paired {}/{} C={c}: bare {bare_rps:.1} req/s, {label} {rps:.1} req/s ({:.3})",
                        r + 1,
                        p.rounds,
                        rps / bare_rps
                    );
                    t.rounds.push((bare_rps, rps));
                }
            }
        }
        let hwm_kb = read_mem(running.enclave_pid()).map(|m| m.hwm_kb);
        running.stack.stop().await;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(VariantRun {
            skipped: None,
            cells,
            load_ms: Some(started.upload_ms),
            hwm_kb,
            mem,
            chunk_size: started.chunk_size,
            paired: rounds,
            paired_throughput: throughput,
        })
    })
}

pub fn run(args: Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinning = if args.pin {
        let allowed = pin::allowed_cpus()?;
        let server = args.workers.unwrap_or(allowed.len() / 2).max(1);
        Some(pin::Pin::split(&allowed, server)?)
    } else {
        None
    };
    let workers = match &pinning {
        Some(p) => p.server.len(),
        None => args.workers.unwrap_or(cores).max(1),
    };
    let concurrency = if !args.concurrency.is_empty() {
        args.concurrency.clone()
    } else if args.quick {
        vec![1, 4]
    } else {
        vec![1, 2, 4, 16, 64]
    };
    if concurrency.contains(&0) {
        bail!("--concurrency: every value must be at least 1");
    }
    let seconds = args
        .seconds
        .unwrap_or(if args.quick { 0.5 } else { 3.0 })
        .max(0.05);
    let warmup = if args.quick { 0.2 } else { 0.5 };
    let paired_rounds = args.paired_rounds.unwrap_or(if args.quick { 2 } else { 5 });
    let paired_seconds = args
        .paired_seconds
        .unwrap_or(if args.quick { 0.3 } else { 1.0 })
        .max(0.05);
    // Each block's own warm-up: the first requests after the switch pay for waking the other
    // side's threads, which a C = 1 client pays between any two requests anyway.
    let paired_warmup = if args.quick { 0.05 } else { 0.2 };
    let paired_gap_ms = args.paired_gap_ms.unwrap_or(0.0);
    if !(0.0..=1000.0).contains(&paired_gap_ms) {
        bail!("--paired-gap-ms {paired_gap_ms}: expected 0 to 1000");
    }
    let throughput_at = paired_throughput_at(
        &concurrency,
        workers,
        pinning
            .as_ref()
            .map_or(cores.saturating_sub(workers), |p| p.harness.len()),
        paired_gap_ms,
    );
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => sealed_sim::stack::default_bin_dir()?,
    };
    let mut notes = Vec::new();
    let plain_bin = bin_dir.join("sealed-enclave-plain-bench");
    let plain = if args.no_plain {
        notes.push("plain-HTTP variant not run (--no-plain)".to_string());
        false
    } else if plain_bin.is_file() {
        true
    } else {
        // The same packages as the build of the other binaries, plus the feature: built with
        // `-p sealed-enclave` alone, the dependencies unify to other features (serde_json,
        // indexmap, syn, ...) and cargo rebuilds tract (scripts/bench.sh).
        bail!(
            "{} not found: build it with `cargo build{} -p sealed-host -p sealed-enclave -p sealed-bench --features sealed-enclave/simulation,sealed-enclave/bench-plaintext --bin sealed-enclave-plain-bench` (the package list of the other binaries' build, so that tract is not rebuilt; scripts/bench.sh does this), or pass --no-plain",
            plain_bin.display(),
            if cfg!(debug_assertions) {
                ""
            } else {
                " --release"
            }
        );
    };
    let specs = load_specs(&args.models_dir, &args.models, &mut notes)?;
    if let Some(p) = &pinning {
        // Before the runtime starts: its threads, and every child (the host), inherit this.
        pin::pin_process(std::process::id(), &p.harness)?;
        if !args.no_scaling {
            notes.push(
                "worker scaling not run (--pin: the enclave's CPUs are fixed by --workers)".into(),
            );
        }
    }
    let batch: Vec<Option<u32>> = specs
        .iter()
        .map(|spec| {
            let rows = args.dynamic_batch?;
            batch_selection(spec, rows)
                .map_err(|why| {
                    notes.push(format!(
                        "{}: not batched (--dynamic-batch {rows}): {why}",
                        spec.id
                    ));
                })
                .ok()
        })
        .collect();
    if batch.iter().any(Option::is_some) {
        check_dynamic_batch_flag(&bin_dir.join("sealed-enclave"))?;
        if plain {
            check_dynamic_batch_flag(&plain_bin)?;
        }
    }
    let ort = match &args.ort_json {
        Some(p) => Some(
            serde_json::from_str::<Value>(&std::fs::read_to_string(p)?)
                .with_context(|| format!("{}", p.display()))?,
        ),
        None => None,
    };
    let settings = Settings {
        workers,
        cores,
        concurrency: concurrency.clone(),
        seconds,
        warmup,
        paired_rounds,
        paired_seconds,
        paired_gap_ms,
        quick: args.quick,
        plain,
        dynamic_batch: args.dynamic_batch,
        pin: pinning.clone(),
        notes,
    };
    let mut machine = machine();
    eprintln!(
        "sealed-bench compare: {} model(s), variants {}, workers {workers}, concurrency {concurrency:?}, {seconds} s cells, dynamic batching {}, load average {}",
        specs.len(),
        if plain {
            "bare, sealed, plain"
        } else {
            "bare, sealed (no plain)"
        },
        args.dynamic_batch
            .map_or("off".to_string(), |n| format!("up to {n} rows")),
        report::loadavg_text(&machine["loadavg_start"]),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut sim = rt.block_on(remote::Sim::start(&bin_dir))?;
    let sealed_bin = bin_dir.join("sealed-enclave");
    let mut results = Vec::new();
    let mut scaling = Vec::new();
    let outcome = (|| -> Result<()> {
        for (spec, &batch_rows) in specs.iter().zip(&batch) {
            eprintln!(
                "model {} ({}){}",
                spec.id,
                spec.file.display(),
                batch_rows.map_or(String::new(), |n| format!(
                    ", {} with --dynamic-batch {}={n}",
                    if plain { "enclaves" } else { "enclave" },
                    spec.id
                ))
            );
            let bytes = std::fs::read(&spec.file)
                .with_context(|| format!("reading {}", spec.file.display()))?;
            let t = Instant::now();
            let plan =
                Arc::new(bare::load(&bytes).with_context(|| format!("loading {}", spec.id))?);
            let bare_load_ms = t.elapsed().as_secs_f64() * 1000.0;
            let model_bytes = bytes.len() as u64;
            drop(bytes);

            let mut cases = Vec::new();
            for (k, &n) in spec.input_bytes.iter().enumerate() {
                let shape = resolve_shape(&spec.shape, n)?;
                let elements: u64 = shape.iter().product();
                let input =
                    Tensor::from_f32(shape, &pseudo_random(elements as usize, 0x5EA1 + k as u64))?;
                let reference = plan
                    .run(std::slice::from_ref(&input))
                    .with_context(|| format!("{}: bare reference run", spec.id))?;
                if spec.id == PAYLOAD_SWEEP {
                    check_echo(&input, &reference)?;
                }
                cases.push(Arc::new(Case {
                    input_bytes: elements * 4,
                    input_name: spec.input_name.clone(),
                    input,
                    reference,
                }));
            }
            let Some(first) = cases.first() else {
                bail!("{}: no input sizes", spec.id)
            };
            let bare_mem = bare_rss_child(spec, first.input.shape())
                .map_err(|e| eprintln!("  bare-rss: {e:#}"))
                .unwrap_or_default();

            let pool =
                bare::Pool::start(Arc::clone(&plan), workers, batch_rows.map(|n| n as usize))?;
            if let Some(p) = &pinning {
                pin::pin_own_threads(bare::WORKER_THREAD_PREFIX, &p.server)?;
            }
            let mut bare_cells = Vec::new();
            for case in &cases {
                let mut row = Vec::new();
                for &c in &concurrency {
                    if skip_reason(case, c) {
                        row.push(None);
                        continue;
                    }
                    let cell = bare_cell(&pool, case, c, warmup, seconds, Duration::ZERO);
                    eprintln!(
                        "  {:<6} {:>9} B  C={c:<3} {:>8.1} req/s  p50 {:.3} ms  errors {}  load {}",
                        report::variant_label("bare", batch_rows.map(u64::from)),
                        case.input_bytes,
                        cell.throughput(),
                        cell.p_ms(50.0),
                        cell.error_count(),
                        cell.load.one_minute()
                    );
                    row.push(Some(cell));
                }
                bare_cells.push(row);
            }
            let bare_run = VariantRun {
                skipped: None,
                cells: bare_cells,
                load_ms: Some(bare_load_ms),
                hwm_kb: bare_mem.inferred.map(|m| m.hwm_kb),
                mem: bare_mem,
                chunk_size: None,
                paired: Vec::new(),
                paired_throughput: Vec::new(),
            };
            // The pool stays up (idle) through the stack variants for the paired rounds.
            let paired = (paired_rounds > 0 && spec.id != PAYLOAD_SWEEP).then_some(Paired {
                pool: &pool,
                rounds: paired_rounds,
                warmup: paired_warmup,
                secs: paired_seconds,
                gap: Duration::from_secs_f64(paired_gap_ms / 1000.0),
                throughput_at: throughput_at.clone(),
            });
            let sealed = run_stack_variant(
                &rt,
                &mut sim,
                remote::Mode::Sealed,
                &sealed_bin,
                spec,
                &cases,
                &concurrency,
                workers,
                batch_rows,
                pinning.as_ref(),
                warmup,
                seconds,
                paired.as_ref(),
            )?;
            let plain_run = if plain {
                run_stack_variant(
                    &rt,
                    &mut sim,
                    remote::Mode::Plain,
                    &plain_bin,
                    spec,
                    &cases,
                    &concurrency,
                    workers,
                    batch_rows,
                    pinning.as_ref(),
                    warmup,
                    seconds,
                    paired.as_ref(),
                )?
            } else {
                VariantRun::skipped("not run (--no-plain)".into())
            };
            drop(pool);

            if !args.no_scaling && pinning.is_none() && (spec.id == "digits" || spec.id == "conv") {
                let c = 2 * cores;
                let case = &cases[0];
                let mut rows = Vec::new();
                for w in 1..=cores {
                    eprintln!("  scaling: workers {w}, C={c}");
                    let pool =
                        bare::Pool::start(Arc::clone(&plan), w, batch_rows.map(|n| n as usize))?;
                    let b = bare_cell(&pool, case, c, warmup, seconds, Duration::ZERO);
                    drop(pool);
                    let s = run_stack_variant(
                        &rt,
                        &mut sim,
                        remote::Mode::Sealed,
                        &sealed_bin,
                        spec,
                        std::slice::from_ref(case),
                        &[c],
                        w,
                        batch_rows,
                        None,
                        warmup,
                        seconds,
                        None,
                    )?;
                    let s_cell = s
                        .cells
                        .first()
                        .and_then(|r| r.first())
                        .and_then(|c| c.as_ref());
                    eprintln!(
                        "  scaling: workers {w}: bare {:.1} req/s (load {}), sealed {} req/s (load {})",
                        b.throughput(),
                        b.load.one_minute(),
                        s_cell.map_or("-".to_string(), |c| format!("{:.1}", c.throughput())),
                        s_cell.map_or("?→?".to_string(), |c| c.load.one_minute()),
                    );
                    rows.push(ScalingRow {
                        workers: w,
                        bare_rps: Some(b.throughput()),
                        sealed_rps: s_cell.map(Cell::throughput),
                        bare_load: b.load,
                        sealed_load: s_cell.map(|c| c.load).unwrap_or_default(),
                    });
                }
                scaling.push(Scaling {
                    model: spec.id.clone(),
                    concurrency: c,
                    rows,
                    batch_rows,
                });
            }

            results.push(ModelResult {
                id: spec.id.clone(),
                bytes: model_bytes,
                cases: cases.iter().map(|c| c.input_bytes).collect(),
                bare: bare_run,
                sealed,
                plain: plain_run,
                batch_rows,
            });
        }
        Ok(())
    })();
    rt.block_on(sim.stop());
    outcome?;
    machine["loadavg_end"] = report::loadavg_json(LoadAvg::read());

    let json = report::json(&machine, &settings, &results, &scaling, ort.as_ref());
    print!("{}", report::table(&json));
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// `sealed-bench bare-rss`: a child process that holds one model in bare tract and reports its
/// peak RSS.
#[derive(clap::Args)]
pub struct BareRssArgs {
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Input shape, comma-separated (symbolic dimensions resolved).
    #[arg(long, value_delimiter = ',', required = true)]
    shape: Vec<u64>,
}

/// Loads the model as the bare runner does, runs one inference, prints one JSON line: VmRSS and
/// VmHWM (proc(5), kB) before reading the model (`baseline`), once it is loaded (`loaded`) and
/// after the inference (`inferred`); `vmhwm_kb`/`vmrss_kb` at the top repeat the last; RssAnon
/// before reading the model and its sampled peak until after the inference.
pub fn bare_rss(args: BareRssArgs) -> Result<()> {
    let me = Some(std::process::id());
    let status = || read_mem(me).context("reading /proc/self/status");
    let baseline = status()?;
    let anon_baseline = read_anon_kb(std::process::id());
    let anon = AnonPeak::start(std::process::id());
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let plan = bare::load(&bytes)?;
    drop(bytes);
    let loaded = status()?;
    let elements: u64 = args.shape.iter().product();
    let input = Tensor::from_f32(args.shape, &pseudo_random(elements as usize, 0x5EA1))?;
    let outputs = plan.run(&[input])?;
    if outputs.is_empty() {
        bail!("the model gave no output");
    }
    let inferred = status()?;
    let anon_peak = anon.finish();
    let j = |m: Mem| serde_json::json!({"vmrss_kb": m.rss_kb, "vmhwm_kb": m.hwm_kb});
    println!(
        "{}",
        serde_json::json!({
            "vmhwm_kb": inferred.hwm_kb,
            "vmrss_kb": inferred.rss_kb,
            "baseline": j(baseline),
            "loaded": j(loaded),
            "inferred": j(inferred),
            "rssanon_baseline_kb": anon_baseline,
            "rssanon_peak_kb": anon_peak,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by every test that starts a bare pool: tests run on parallel threads of one process,
    /// and another test's busy `bare-worker-N` threads would count in this process's worker
    /// ticks while one test compares them with its own.
    static BARE_POOLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn bare_pools() -> std::sync::MutexGuard<'static, ()> {
        BARE_POOLS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The settings of a report test: 2 workers on 2 cores, 1 s quick cells, unpinned.
    fn test_settings(
        concurrency: Vec<usize>,
        plain: bool,
        dynamic_batch: Option<u32>,
        notes: Vec<String>,
    ) -> Settings {
        Settings {
            workers: 2,
            cores: 2,
            concurrency,
            seconds: 1.0,
            warmup: 0.1,
            paired_rounds: 0,
            paired_seconds: 1.0,
            paired_gap_ms: 0.0,
            quick: true,
            plain,
            dynamic_batch,
            pin: None,
            notes,
        }
    }

    /// A variant that ran one case with these cells and nothing else recorded.
    fn ran(cells: Vec<Option<Cell>>) -> VariantRun {
        VariantRun {
            skipped: None,
            cells: vec![cells],
            load_ms: None,
            hwm_kb: None,
            mem: MemSteps::default(),
            chunk_size: None,
            paired: Vec::new(),
            paired_throughput: Vec::new(),
        }
    }

    #[test]
    fn a_symbolic_dimension_takes_the_remaining_elements() {
        assert_eq!(resolve_shape(&[None], 1024).unwrap(), vec![256]);
        assert_eq!(
            resolve_shape(&[Some(1), None], 16_000_000).unwrap(),
            vec![1, 4_000_000]
        );
        assert_eq!(
            resolve_shape(&[Some(1), Some(64)], 999).unwrap(),
            vec![1, 64]
        );
        assert!(resolve_shape(&[Some(3), None], 16).is_err());
        assert!(resolve_shape(&[None, None], 16).is_err());
    }

    #[test]
    fn pseudo_random_inputs_are_deterministic_and_in_range() {
        let a = pseudo_random(1000, 7);
        assert_eq!(a, pseudo_random(1000, 7));
        assert_ne!(a, pseudo_random(1000, 8));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }

    fn case(values: &[f32]) -> Case {
        let t = Tensor::from_f32(vec![values.len() as u64], values).unwrap();
        Case {
            input_bytes: 4 * values.len() as u64,
            input_name: "x".into(),
            input: t.clone(),
            reference: vec![NamedTensor {
                name: "y".into(),
                tensor: t,
            }],
        }
    }

    #[test]
    fn answers_are_checked_against_the_reference() {
        let c = case(&[1.0, 2.0, 3.0]);
        let answer = |name: &str, v: &[f32]| {
            vec![NamedTensor {
                name: name.into(),
                tensor: Tensor::from_f32(vec![v.len() as u64], v).unwrap(),
            }]
        };
        assert!(check_answer(&c, &answer("y", &[1.0, 2.0, 3.00001])).is_ok());
        assert!(check_answer(&c, &answer("y", &[1.0, 2.0, 3.1])).is_err());
        assert!(check_answer(&c, &answer("z", &[1.0, 2.0, 3.0])).is_err());
        assert!(check_answer(&c, &answer("y", &[1.0, 2.0])).is_err());
        assert!(check_answer(&c, &[]).is_err());
        let wrong_dtype = vec![NamedTensor {
            name: "y".into(),
            tensor: Tensor::from_i64(vec![3], &[1, 2, 3]).unwrap(),
        }];
        assert!(check_answer(&c, &wrong_dtype).is_err());
    }

    #[test]
    fn echo_check_wants_two_x_plus_one() {
        let x = Tensor::from_f32(vec![3], &[0.0, 1.0, -0.5]).unwrap();
        let out = |v: &[f32]| {
            vec![NamedTensor {
                name: "y".into(),
                tensor: Tensor::from_f32(vec![3], v).unwrap(),
            }]
        };
        assert!(check_echo(&x, &out(&[1.0, 3.0, 0.0])).is_ok());
        assert!(check_echo(&x, &out(&[1.0, 3.0, 0.1])).is_err());
    }

    #[test]
    fn reads_this_processs_counters() {
        let pid = Some(std::process::id());
        let before = Counters::read(pid).unwrap();
        std::fs::write(
            std::env::temp_dir().join("sealed-bench-io-test"),
            [0u8; 4096],
        )
        .unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(pseudo_random(1000, 1));
        }
        let d = before.delta(Counters::read(pid).unwrap());
        assert!(d.io_bytes >= 4096);
        assert!(d.cpu_ticks >= 1);
        assert!(Counters::read(None).is_none());
    }

    #[test]
    fn stat_lines_give_the_name_and_cpu_ticks_even_with_odd_names() {
        // proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let line = "4242 (engine-worker-0) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 12 0 0 20 0";
        assert_eq!(parse_stat(line), Some(("engine-worker-0", 743)));
        let odd = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c", 11)));
        assert_eq!(parse_stat("7 (short) R 1 2"), None);
        assert_eq!(parse_stat("no parentheses 1 2 3"), None);
    }

    #[test]
    fn the_bare_pools_worker_threads_are_counted_apart() {
        let digits = sealed_sim::assets::Digits::load(&sealed_sim::assets::default_dir()).unwrap();
        let plan = Arc::new(bare::load(&std::fs::read(&digits.model).unwrap()).unwrap());
        let input = sealed_client::npy::read_file(&digits.examples[0].file).unwrap();
        let _only_pool = bare_pools();
        let pool = bare::Pool::start(plan, 1, None).unwrap();
        let me = Some(std::process::id());
        let before = Counters::read(me).unwrap();
        // Until the worker has used one clock tick (10 ms) of CPU: on a busy machine that can
        // take much longer than it would idle, so the bound is generous and not a timing claim.
        let spin = Instant::now();
        let mut d = before.delta(Counters::read(me).unwrap());
        while d.worker_ticks == 0 && spin.elapsed() < Duration::from_secs(30) {
            for _ in 0..100 {
                pool.infer(vec![input.clone()]).unwrap();
            }
            d = before.delta(Counters::read(me).unwrap());
        }
        assert!(d.worker_ticks >= 1, "{}", d.worker_ticks);
        // Process and thread times are each rounded down to whole ticks, so the worker's delta
        // can exceed the process's by one.
        assert!(
            d.cpu_ticks + 1 >= d.worker_ticks,
            "process {} ticks, workers {}",
            d.cpu_ticks,
            d.worker_ticks
        );
    }

    #[test]
    fn bare_runner_answers_the_digits_model_and_a_pool_serves_concurrent_jobs() {
        let digits = sealed_sim::assets::Digits::load(&sealed_sim::assets::default_dir()).unwrap();
        let plan = Arc::new(bare::load(&std::fs::read(&digits.model).unwrap()).unwrap());
        let example = digits
            .examples
            .iter()
            .find(|e| e.predicted_labels.len() == 1)
            .unwrap();
        let input = sealed_client::npy::read_file(&example.file).unwrap();
        let out = plan.run(std::slice::from_ref(&input)).unwrap();
        let label = out.iter().find(|o| o.name == "label").unwrap();
        assert_eq!(label.tensor.to_i64().unwrap(), example.predicted_labels);
        let c = Case {
            input_bytes: input.data().len() as u64,
            input_name: "input".into(),
            input,
            reference: out,
        };
        let _only_pool = bare_pools();
        let pool = bare::Pool::start(plan, 2, None).unwrap();
        let cell = bare_cell(&pool, &c, 3, 0.01, 0.05, Duration::ZERO);
        assert!(cell.ok() > 0);
        assert_eq!(cell.error_count(), 0);
    }

    #[test]
    fn bare_joined_runs_answer_each_request_as_its_lone_run_does() {
        let digits = sealed_sim::assets::Digits::load(&sealed_sim::assets::default_dir()).unwrap();
        let plan = Arc::new(bare::load(&std::fs::read(&digits.model).unwrap()).unwrap());
        let inputs: Vec<Tensor> = digits
            .examples
            .iter()
            .map(|e| sealed_client::npy::read_file(&e.file).unwrap())
            .collect();
        assert!(
            inputs.iter().any(|t| t.shape()[0] > 1),
            "a multi-row example"
        );
        let requests: Vec<Vec<Tensor>> = inputs.iter().map(|t| vec![t.clone()]).collect();
        let joined = plan.run_rows(&requests).unwrap();
        assert_eq!(joined.len(), requests.len());
        for (request, answer) in requests.iter().zip(&joined) {
            let alone = plan.run(request).unwrap();
            assert_eq!(answer.len(), alone.len());
            for (a, b) in answer.iter().zip(&alone) {
                assert_eq!(a.name, b.name);
                assert_eq!(a.tensor.shape(), b.tensor.shape());
                if b.name == "label" {
                    assert_eq!(a.tensor.to_i64().unwrap(), b.tensor.to_i64().unwrap());
                } else {
                    let (x, y) = (a.tensor.to_f32().unwrap(), b.tensor.to_f32().unwrap());
                    assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() <= 1e-5));
                }
            }
        }
        // And through a batching pool of 2 workers under concurrent callers (one worker gathering
        // while the other waits for work must not hold each other up): every answer is the lone
        // one.
        let _only_pool = bare_pools();
        let pool = Arc::new(bare::Pool::start(Arc::clone(&plan), 2, Some(8)).unwrap());
        let threads: Vec<_> = (0..6)
            .map(|k| {
                let (pool, plan, input) = (
                    Arc::clone(&pool),
                    Arc::clone(&plan),
                    inputs[k % inputs.len()].clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let got = pool.infer(vec![input.clone()]).unwrap();
                        let want = plan.run(std::slice::from_ref(&input)).unwrap();
                        let label = |o: &[NamedTensor]| {
                            o.iter()
                                .find(|t| t.name == "label")
                                .unwrap()
                                .tensor
                                .to_i64()
                                .unwrap()
                        };
                        assert_eq!(label(&got), label(&want));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn models_json_is_read_and_filtered_and_unknown_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let index = serde_json::json!({"models": [
            {"id": "conv", "file": "conv.onnx", "input": {"name": "input", "dtype": "f32",
             "shape": [1, 3, 8, 8]}, "outputs": ["logits"], "input_bytes": [768]},
            {"id": "echo", "file": "echo.onnx", "input": {"name": "x", "dtype": "f32",
             "shape": ["n"]}, "outputs": ["y"], "input_bytes": [1024, 16000000]},
        ]});
        std::fs::write(dir.path().join("models.json"), index.to_string()).unwrap();
        let mut notes = Vec::new();
        let all = load_specs(dir.path(), &[], &mut notes).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].shape, vec![None]);
        assert_eq!(all[1].input_bytes, vec![1024, 16_000_000]);
        assert_eq!(all[0].file, dir.path().join("conv.onnx"));
        assert!(notes.is_empty());
        let echo = load_specs(dir.path(), &["echo".into()], &mut notes).unwrap();
        assert_eq!(echo.len(), 1);
        assert!(load_specs(dir.path(), &["nope".into()], &mut notes).is_err());

        let missing = load_specs(&dir.path().join("none"), &[], &mut notes).unwrap();
        assert_eq!(missing[0].id, "digits");
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn the_bare_rss_line_gives_three_readings_and_a_missing_one_is_an_error() {
        let line = serde_json::json!({
            "vmhwm_kb": 30, "vmrss_kb": 20,
            "baseline": {"vmrss_kb": 5, "vmhwm_kb": 6},
            "loaded": {"vmrss_kb": 18, "vmhwm_kb": 29},
            "inferred": {"vmrss_kb": 20, "vmhwm_kb": 30},
            "rssanon_baseline_kb": 2, "rssanon_peak_kb": 17,
        })
        .to_string();
        let m = parse_bare_rss(&line).unwrap();
        assert_eq!((m.anon_baseline_kb, m.anon_peak_kb), (Some(2), Some(17)));
        assert_eq!(
            m.baseline,
            Some(Mem {
                rss_kb: 5,
                hwm_kb: 6
            })
        );
        assert_eq!(
            m.loaded,
            Some(Mem {
                rss_kb: 18,
                hwm_kb: 29
            })
        );
        assert_eq!(
            m.inferred,
            Some(Mem {
                rss_kb: 20,
                hwm_kb: 30
            })
        );
        assert!(parse_bare_rss(r#"{"vmhwm_kb": 30, "vmrss_kb": 20}"#).is_err());
        assert!(parse_bare_rss("listening on 127.0.0.1").is_err());
    }

    #[test]
    fn a_window_waits_for_one_measured_request_and_spans_merge() {
        let t0 = Instant::now();
        let w = Window {
            warm_end: t0,
            end: t0 + Duration::from_secs(1),
            gap: Duration::ZERO,
        };
        assert!(!w.done(t0 + Duration::from_secs(2), false));
        assert!(w.done(t0 + Duration::from_secs(2), true));
        assert!(!w.done(t0, true));
        let s = |a: u64, b: u64| Some((t0 + Duration::from_secs(a), t0 + Duration::from_secs(b)));
        assert_eq!(Window::merge(s(1, 3), s(2, 5)), s(1, 5));
        assert_eq!(Window::merge(None, s(2, 5)), s(2, 5));
        assert_eq!(Window::merge(None, None), None);
    }

    #[test]
    fn throughput_counts_the_answers_inside_the_window() {
        let t0 = Instant::now();
        let w = Window {
            warm_end: t0 + Duration::from_millis(500),
            end: t0 + Duration::from_millis(1500),
            gap: Duration::ZERO,
        };
        assert!(!w.counts(t0 + Duration::from_millis(499)));
        assert!(w.counts(t0 + Duration::from_millis(500)));
        assert!(w.counts(t0 + Duration::from_millis(1500)));
        assert!(!w.counts(t0 + Duration::from_millis(1501)));
        assert_eq!(w.seconds(), 1.0);
        // 64 clients, 10 ms a request: 100 answers a second inside the window, whenever their
        // requests were sent; only 37 of them were sent inside it, over a 1.64 s span (what the
        // cells counted before).
        let cell = Cell {
            lat_us: vec![640_000; 37],
            wall_s: 1.64,
            window_s: w.seconds(),
            window_ok: 99,
            window_answers: 100,
            ..Cell::default()
        };
        assert_eq!(cell.throughput(), 99.0);
        // Counters cover the window: per answer inside it.
        assert_eq!(cell.per_request(Some(1000)), Some(10.0));
        // None inside the window (requests slower than it): the measured requests' own span.
        let slow = Cell {
            lat_us: vec![2_000_000; 4],
            wall_s: 2.0,
            window_s: 1.0,
            ..Cell::default()
        };
        assert_eq!(slow.throughput(), 2.0);
        assert_eq!(slow.per_request(Some(8)), Some(2.0));
    }

    #[test]
    fn the_report_puts_ratios_and_onnxruntime_beside_each_case() {
        let cell = |c: usize, lat: Vec<u64>| Cell {
            concurrency: c,
            lat_us: lat,
            wall_s: 1.0,
            ..Cell::default()
        };
        let mem = |rss_kb, hwm_kb| Some(Mem { rss_kb, hwm_kb });
        let run = |lat: u64, steps: MemSteps, chunk_size| VariantRun {
            skipped: None,
            cells: vec![vec![Some(cell(1, vec![lat; 100])), None]],
            load_ms: Some(1.0),
            hwm_kb: Some(2048),
            mem: steps,
            chunk_size,
            paired: Vec::new(),
            paired_throughput: Vec::new(),
        };
        // Bare: 5 MiB before, peak 25 MiB (Δ 20 MiB), 15 MiB held. The enclave: 10 MiB before,
        // peak 30.5 MiB (Δ 20.5 MiB, within bare + a 1 MiB chunk), 21 MiB held. The heap
        // (RssAnon) says otherwise: bare Δ 10 000 kB, the enclave's 11 500 kB, 1 500 over: the
        // verdict is the heap's.
        let bare = MemSteps {
            baseline: mem(5120, 5200),
            loaded: mem(15_000, 25_600),
            inferred: mem(15_360, 25_600),
            anon_baseline_kb: Some(1_000),
            anon_peak_kb: Some(11_000),
        };
        let sealed = MemSteps {
            baseline: mem(10_240, 11_000),
            loaded: mem(20_000, 30_720),
            inferred: mem(21_504, 31_232),
            anon_baseline_kb: Some(2_000),
            anon_peak_kb: Some(13_500),
        };
        let results = [ModelResult {
            id: "echo".into(),
            bytes: 218,
            cases: vec![1024],
            bare: run(100, bare, None),
            sealed: VariantRun {
                // 100 requests, 3 ticks (30 ms) in the enclave's workers: 300 µs each.
                cells: vec![vec![
                    Some(Cell {
                        enclave: Some(Counters {
                            worker_ticks: 3,
                            ..Counters::default()
                        }),
                        ..cell(1, vec![400; 100])
                    }),
                    None,
                ]],
                ..run(400, sealed, Some(1 << 20))
            },
            plain: VariantRun::skipped("not run (--no-plain)".into()),
            batch_rows: None,
        }];
        let settings = test_settings(vec![1, 64], false, None, vec!["a note".into()]);
        let ort = serde_json::json!({"onnxruntime": "1.0.0", "results": [
            {"model": "echo", "input_bytes": 1024, "mode": "single", "p50_ms": 0.01,
             "throughput_rps": 9000.0, "load_ms": 3.0}]});
        let j = report::json(&machine(), &settings, &results, &[], Some(&ort));
        let case = &j["models"][0]["cases"][0];
        assert_eq!(case["ratios"]["p50_c1_sealed_over_bare"], 4.0);
        assert_eq!(case["ratios"]["p50_c1_sealed_minus_bare_us"], 300.0);
        assert!(case["ratios"]["p50_c1_sealed_over_plain"].is_null());
        assert_eq!(case["ratios"]["throughput"][0]["sealed_over_bare"], 1.0);
        assert!(case["variants"]["bare"]["cells"][1]["skipped"].is_string());
        assert_eq!(case["variants"]["plain"]["skipped"], "not run (--no-plain)");
        assert_eq!(case["onnxruntime"]["single"]["p50_ms"], 0.01);
        assert!(case["onnxruntime"]["default"].is_null());
        let m = &j["models"][0]["memory"];
        assert_eq!(m["bare"]["peak_delta_kb"], 20_480);
        assert_eq!(m["bare"]["held_delta_kb"], 10_240);
        assert_eq!(m["sealed"]["peak_delta_kb"], 20_992);
        assert_eq!(m["sealed"]["held_delta_kb"], 11_264);
        assert_eq!(m["sealed_peak_over_bare_kb"], 512);
        assert_eq!(m["sealed"]["anon_peak_delta_kb"], 11_500);
        assert_eq!(m["sealed_anon_peak_over_bare_kb"], 1_500);
        assert_eq!(m["sealed_judged_on"], "RssAnon peak");
        assert_eq!(m["allowance_kb"], 1024);
        assert_eq!(m["sealed_target_met"], false);
        assert!(m["plain_target_met"].is_null());
        assert_eq!(m["sealed"]["model_ready"]["vmhwm_kb"], 30_720);
        assert_eq!(case["variants"]["sealed"]["cells"][0]["mean_ms"], 0.4);
        assert_eq!(
            case["variants"]["sealed"]["cells"][0]["worker_cpu_us_per_request"],
            300.0
        );
        let table = report::table(&j);
        assert!(
            table.contains("| echo | 1.0 kB | sealed | 400 | 300 | 100 |"),
            "{table}"
        );
        assert!(
            table.contains("| echo | 1.0 kB | bare | 100 | - | - |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| echo | sealed | 10.0 | 19.5 / 30.0 | 21.0 / 30.5 | 20.5 | 11.0 | 0.5 | 11.2 | 1.5 | 1.0 | not met |"
            ),
            "{table}"
        );
        assert!(table.contains("| echo | 1.0 kB | sealed | 0.400 |"));
        assert!(table.contains("not run (--no-plain)"));
        assert!(table.contains("onnxruntime single"));
        assert!(table.contains("Note: a note"));
        assert!(table.contains("Dynamic batching off"));
        assert!(j["settings"]["dynamic_batch"].is_null());
        assert!(j["models"][0]["dynamic_batch_rows"].is_null());
        assert_eq!(case["variants"]["sealed"]["label"], "sealed");
    }

    fn spec(id: &str, shape: Vec<Option<u64>>, batch_dim: Option<&str>) -> ModelSpec {
        ModelSpec {
            id: id.into(),
            file: PathBuf::from(format!("{id}.onnx")),
            input_name: "input".into(),
            shape,
            input_bytes: vec![256],
            batch_dim: batch_dim.map(str::to_string),
        }
    }

    #[test]
    fn dynamic_batch_applies_only_to_models_with_a_shared_symbolic_batch_axis() {
        let digits = spec("digits", vec![Some(1), Some(64)], Some("batch"));
        assert_eq!(batch_selection(&digits, 8), Ok(8));
        let fixed = spec("conv", vec![Some(1), Some(3), Some(8), Some(8)], None);
        assert!(
            batch_selection(&fixed, 8)
                .unwrap_err()
                .contains("batch_dim")
        );
        // echo: [n] shares its symbolic axis 0 with its output, but one request is one sample.
        let echo = spec("echo", vec![None], Some("n"));
        assert!(batch_selection(&echo, 8).unwrap_err().contains("rank 1"));
    }

    #[test]
    fn the_enclave_gets_dynamic_batch_for_its_model_only_when_asked() {
        assert_eq!(
            remote::enclave_args(2, "large", None),
            vec!["--workers", "2"]
        );
        assert_eq!(
            remote::enclave_args(2, "large", Some(8)),
            vec!["--workers", "2", "--dynamic-batch", "large=8"]
        );
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn dynamic_batch_is_off_by_default_and_bounded_like_the_enclaves_flag() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(["compare"].iter().chain(extra)).map(|c| c.args.dynamic_batch)
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["--dynamic-batch", "8"]).unwrap(), Some(8));
        assert_eq!(parse(&["--dynamic-batch", "2"]).unwrap(), Some(2));
        assert_eq!(parse(&["--dynamic-batch", "64"]).unwrap(), Some(64));
        assert!(parse(&["--dynamic-batch", "1"]).is_err());
        assert!(parse(&["--dynamic-batch", "65"]).is_err());
        assert!(parse(&["--dynamic-batch", "large=8"]).is_err());
    }

    #[test]
    fn models_json_gives_the_batch_dimension() {
        let dir = tempfile::tempdir().unwrap();
        let index = serde_json::json!({"models": [
            {"id": "large", "file": "large.onnx", "input": {"name": "input", "dtype": "f32",
             "shape": [1, 16]}, "outputs": ["output"], "input_bytes": [64], "batch_dim": "batch"},
            {"id": "old", "file": "old.onnx", "input": {"name": "input", "dtype": "f32",
             "shape": [1, 16]}, "outputs": ["output"], "input_bytes": [64]},
        ]});
        std::fs::write(dir.path().join("models.json"), index.to_string()).unwrap();
        let specs = load_specs(dir.path(), &[], &mut Vec::new()).unwrap();
        assert_eq!(specs[0].batch_dim.as_deref(), Some("batch"));
        assert_eq!(specs[1].batch_dim, None);
        let bundled = load_specs(&dir.path().join("none"), &[], &mut Vec::new()).unwrap();
        assert_eq!(batch_selection(&bundled[0], 4), Ok(4));
    }

    #[test]
    fn a_batched_run_is_labelled_in_the_table_and_the_json() {
        let cell = Cell {
            concurrency: 1,
            lat_us: vec![1000; 10],
            wall_s: 1.0,
            ..Cell::default()
        };
        let run = || ran(vec![Some(cell.clone())]);
        let result = |id: &str, batch_rows| ModelResult {
            id: id.into(),
            bytes: 1,
            cases: vec![64],
            bare: run(),
            sealed: run(),
            plain: run(),
            batch_rows,
        };
        let settings = test_settings(vec![1], true, Some(8), Vec::new());
        let results = [result("large", Some(8)), result("echo", None)];
        let scaling = [Scaling {
            model: "large".into(),
            concurrency: 4,
            rows: vec![ScalingRow {
                workers: 1,
                bare_rps: Some(10.0),
                sealed_rps: Some(12.0),
                bare_load: LoadSpan::default(),
                sealed_load: LoadSpan::default(),
            }],
            batch_rows: Some(8),
        }];
        let j = report::json(&machine(), &settings, &results, &scaling, None);
        assert_eq!(j["settings"]["dynamic_batch"], 8);
        assert_eq!(j["models"][0]["dynamic_batch_rows"], 8);
        assert!(j["models"][1]["dynamic_batch_rows"].is_null());
        let v = &j["models"][0]["cases"][0]["variants"];
        assert_eq!(v["bare"]["label"], "bare+batch8");
        assert_eq!(v["sealed"]["label"], "sealed+batch8");
        assert_eq!(v["plain"]["label"], "plain+batch8");
        assert_eq!(
            j["models"][1]["cases"][0]["variants"]["sealed"]["label"],
            "sealed"
        );
        assert_eq!(j["scaling"][0]["sealed_dynamic_batch_rows"], 8);
        let table = report::table(&j);
        assert!(table.contains("Dynamic batching ON"), "{table}");
        assert!(table.contains("for large=8 ("), "{table}");
        assert!(
            table.contains("| large | 64 B | sealed+batch8 | 1.000 |"),
            "{table}"
        );
        assert!(table.contains("| large | 64 B | plain+batch8 |"), "{table}");
        assert!(table.contains("| large | 64 B | bare+batch8 |"), "{table}");
        assert!(
            table.contains("| echo | 64 B | sealed | 1.000 |"),
            "{table}"
        );
        assert!(
            table.contains("| large (sealed+batch8) | 4 | 1 | 10.0 | 12.0 | 1.20 | - | - |"),
            "{table}"
        );
        // Plain ran: the header names it and the batching sentence covers both enclaves.
        assert!(table.contains("plain (the same stack"), "{table}");
        assert!(
            table.contains("the sealed and plain enclaves ran with"),
            "{table}"
        );
        assert!(table.contains("## Sealed beside bare and plain"), "{table}");
    }

    #[test]
    fn loadavg_is_parsed_from_proc_and_read_on_this_machine() {
        let l = LoadAvg::parse("0.68 1.42 1.58 2/87 16227\n").unwrap();
        assert_eq!(
            l,
            LoadAvg {
                one: 0.68,
                five: 1.42,
                fifteen: 1.58
            }
        );
        assert_eq!(LoadAvg::parse("0.68 1.42"), None);
        assert_eq!(LoadAvg::parse("0.68 x 1.58 2/87 1"), None);
        assert_eq!(LoadAvg::parse(""), None);
        let now = LoadAvg::read().expect("/proc/loadavg on Linux");
        assert!(now.one >= 0.0 && now.five >= 0.0 && now.fifteen >= 0.0);
        let span = LoadSpan {
            start: Some(l),
            end: None,
        };
        assert_eq!(span.one_minute(), "0.68→?");
    }

    #[test]
    fn each_cell_and_scaling_row_carries_its_load_average_and_the_tables_show_it() {
        let at = |one: f64| {
            Some(LoadAvg {
                one,
                five: 1.0,
                fifteen: 0.5,
            })
        };
        let cell = |c: usize, start: f64, end: f64| Cell {
            concurrency: c,
            lat_us: vec![1000; 10],
            wall_s: 1.0,
            load: LoadSpan {
                start: at(start),
                end: at(end),
            },
            ..Cell::default()
        };
        let results = [ModelResult {
            id: "digits".into(),
            bytes: 1,
            cases: vec![256],
            // Bare: steady. Sealed: a busy machine in the middle cell (2.9), above both ends.
            bare: ran(vec![Some(cell(1, 0.2, 0.3)), Some(cell(4, 0.3, 0.4))]),
            sealed: ran(vec![Some(cell(1, 0.4, 2.9)), Some(cell(4, 2.9, 1.1))]),
            plain: VariantRun::skipped("not run (--no-plain)".into()),
            batch_rows: None,
        }];
        let settings = test_settings(vec![1, 4], false, Some(8), Vec::new());
        let scaling = [Scaling {
            model: "digits".into(),
            concurrency: 4,
            rows: vec![ScalingRow {
                workers: 2,
                bare_rps: Some(10.0),
                sealed_rps: None,
                bare_load: LoadSpan {
                    start: at(0.5),
                    end: at(0.75),
                },
                sealed_load: LoadSpan::default(),
            }],
            batch_rows: None,
        }];
        let mut machine = machine();
        machine["loadavg_start"] = report::loadavg_json(at(0.25));
        machine["loadavg_end"] = report::loadavg_json(at(1.5));
        let j = report::json(&machine, &settings, &results, &scaling, None);
        let sealed = &j["models"][0]["cases"][0]["variants"]["sealed"]["cells"];
        assert_eq!(
            sealed[0]["loadavg_start"],
            serde_json::json!([0.4, 1.0, 0.5])
        );
        assert_eq!(sealed[0]["loadavg_end"], serde_json::json!([2.9, 1.0, 0.5]));
        assert_eq!(sealed[1]["loadavg_end"][0], 1.1);
        // The fields the report had before stay as they were.
        assert_eq!(sealed[0]["p50_ms"], 1.0);
        assert_eq!(sealed[0]["throughput_rps"], 10.0);
        let row = &j["scaling"][0]["rows"][0];
        assert_eq!(row["bare_loadavg_start"][0], 0.5);
        assert_eq!(row["bare_loadavg_end"][0], 0.75);
        assert!(row["sealed_loadavg_start"].is_null());
        assert_eq!(row["bare_rps"], 10.0);

        let table = report::table(&j);
        assert!(table.contains("| C=1 | C=4 | errors | load |"), "{table}");
        assert!(
            table.contains(
                "| digits | 256 B | bare | 1.000 | 1.000 | 1.000 | 10.0 | 10.0 | 0 | 0.20→0.40 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| digits | 256 B | sealed | 1.000 | 1.000 | 1.000 | 10.0 | 10.0 | 0 | 0.40→1.10 (max 2.90) |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| digits | 256 B | plain | - | - | - | - | - | not run (--no-plain) | - |"
            ),
            "{table}"
        );
        assert!(
            table.contains("Load average (1, 5, 15 min): 0.25 1.00 0.50 at the start, 1.50 1.00 0.50 at the end"),
            "{table}"
        );
        assert!(
            table.contains("| digits | 4 | 2 | 10.0 | - | - | 0.50→0.75 | - |"),
            "{table}"
        );
        // --no-plain: the header says what ran, and no table has plain columns.
        assert!(
            table.contains("The plain-HTTP variant did not run"),
            "{table}"
        );
        assert!(
            table.contains("Dynamic batching ON: the sealed enclave ran with"),
            "{table}"
        );
        assert!(table.contains("(variant `sealed+batch8`)"), "{table}");
        assert!(!table.contains("sealed and plain"), "{table}");
        assert!(!table.contains("sealed/plain"), "{table}");
        assert!(!table.contains("plain upload"), "{table}");
        assert!(table.contains("## Sealed beside bare\n"), "{table}");
    }

    /// `sealed-bench targets` reads the keys `report::json` writes: a pinned report whose sealed
    /// cell kept the enclave's CPU busy is judged, one whose harness was the bottleneck is not.
    #[test]
    fn the_targets_rules_read_the_report_this_module_writes() {
        let counters = |cpu_ticks| Counters {
            cpu_ticks,
            ..Counters::default()
        };
        // 100 answers in 1 s: 100 req/s; 98 ticks = 0.98 s of CPU over the window.
        let cell = |c, enclave_ticks, harness_ticks| Cell {
            concurrency: c,
            lat_us: vec![20_000; 100],
            wall_s: 1.0,
            enclave: Some(counters(enclave_ticks)),
            host: Some(counters(harness_ticks)),
            bench: Some(counters(harness_ticks)),
            ..Cell::default()
        };
        let mut settings = test_settings(vec![1, 16], false, None, Vec::new());
        settings.workers = 1;
        settings.pin = Some(pin::Pin {
            server: vec![1],
            harness: vec![0],
        });
        let report = |enclave_ticks, harness_ticks| {
            let result = ModelResult {
                id: "large".into(),
                bytes: 1,
                cases: vec![64],
                bare: ran(vec![Some(cell(1, 0, 0)), Some(cell(16, 0, 0))]),
                sealed: ran(vec![
                    Some(cell(1, enclave_ticks, harness_ticks)),
                    Some(cell(16, enclave_ticks, harness_ticks)),
                ]),
                plain: VariantRun::skipped("not run (--no-plain)".into()),
                batch_rows: None,
            };
            report::json(&machine(), &settings, &[result], &[], None)
        };
        let judged = crate::targets::check_throughput("compare-pinned", &report(98, 1));
        assert_eq!(
            judged[0].verdict,
            crate::targets::Verdict::Met,
            "{judged:?}"
        );
        let excused = crate::targets::check_throughput("compare-pinned", &report(50, 48));
        assert!(
            matches!(&excused[0].verdict, crate::targets::Verdict::NotJudgeable(w) if w.contains("load generator")),
            "{excused:?}"
        );
        // Latency: 20 ms on both sides at C = 1.
        let latency = crate::targets::check_latency("compare-pinned", &report(98, 1), None);
        assert_eq!(
            latency[0].verdict,
            crate::targets::Verdict::Met,
            "{latency:?}"
        );
        assert!(latency[0].figure.contains("= 1.000"), "{latency:?}");
        // Paired rounds at 1.08 judge the latency, whatever the cells say.
        let mut settings = test_settings(vec![1], false, None, Vec::new());
        settings.paired_rounds = 3;
        let round = |bare_p50_ms, p50_ms| PairedRound {
            bare_p50_ms,
            p50_ms,
            bare_rps: None,
            rps: None,
        };
        let result = ModelResult {
            id: "large".into(),
            bytes: 1,
            cases: vec![64],
            bare: ran(vec![Some(cell(1, 0, 0))]),
            sealed: VariantRun {
                paired: vec![round(20.0, 21.6), round(25.0, 27.0), round(20.0, 21.4)],
                ..ran(vec![Some(cell(1, 0, 0))])
            },
            plain: VariantRun::skipped("not run (--no-plain)".into()),
            batch_rows: None,
        };
        let j = report::json(&machine(), &settings, &[result], &[], None);
        // Rounds without rates (as with --paired-gap-ms) give no throughput pairs.
        assert!(j["models"][0]["cases"][0]["paired_throughput"]["sealed"].is_null());
        let p = &j["models"][0]["cases"][0]["paired_c1"]["sealed"];
        assert_eq!(p["ratio"], serde_json::json!([1.08, 1.08, 1.07]));
        assert_eq!(p["median_added_us"], 1600.0);
        let latency = crate::targets::check_latency("compare", &j, None);
        assert_eq!(
            latency[0].verdict,
            crate::targets::Verdict::NotMet,
            "{latency:?}"
        );
        assert!(
            latency[0]
                .figure
                .contains("paired median 1.080 over 3 rounds"),
            "{latency:?}"
        );
        assert!(
            report::table(&j).contains("| large | sealed | 3 | 20.000, 25.000, 20.000 |"),
            "{}",
            report::table(&j)
        );
    }

    #[test]
    fn paired_throughput_runs_where_the_target_is_judged() {
        // Pinned (one harness CPU), one worker: every C above 1.
        assert_eq!(
            paired_throughput_at(&[1, 2, 4, 16, 64], 1, 1, 0.0),
            vec![2, 4, 16, 64]
        );
        // Four workers with spare cores: only C ≥ 4.
        assert_eq!(paired_throughput_at(&[1, 2, 4, 16], 4, 4, 0.0), vec![4, 16]);
        // The clients and host on the workers' cores, or idle gaps: none.
        assert!(paired_throughput_at(&[1, 2, 4], 2, 0, 0.0).is_empty());
        assert!(paired_throughput_at(&[1, 2, 4], 1, 1, 5.0).is_empty());
    }

    #[test]
    fn paired_throughput_json_has_c1_from_the_latency_rounds_and_the_medians() {
        let cell = |c| Cell {
            concurrency: c,
            lat_us: vec![10_000; 100],
            wall_s: 1.0,
            ..Cell::default()
        };
        let mut settings = test_settings(vec![1, 4], false, None, Vec::new());
        settings.paired_rounds = 3;
        let round = |bare_rps, rps| PairedRound {
            bare_p50_ms: 10.0,
            p50_ms: 10.5,
            bare_rps: Some(bare_rps),
            rps: Some(rps),
        };
        let result = ModelResult {
            id: "large".into(),
            bytes: 1,
            cases: vec![64],
            bare: ran(vec![Some(cell(1)), Some(cell(4))]),
            sealed: VariantRun {
                paired: vec![round(100.0, 95.0), round(100.0, 90.0), round(80.0, 80.0)],
                paired_throughput: vec![PairedThroughput {
                    concurrency: 4,
                    rounds: vec![(200.0, 196.0), (210.0, 180.0), (190.0, 195.0)],
                }],
                ..ran(vec![Some(cell(1)), Some(cell(4))])
            },
            plain: VariantRun::skipped("not run (--no-plain)".into()),
            batch_rows: None,
        };
        let j = report::json(&machine(), &settings, &[result], &[], None);
        let t = &j["models"][0]["cases"][0]["paired_throughput"]["sealed"];
        assert_eq!(t[0]["concurrency"], 1);
        assert_eq!(t[0]["ratio"], serde_json::json!([0.95, 0.9, 1.0]));
        assert_eq!(t[0]["median_ratio"], 0.95);
        assert_eq!(t[1]["concurrency"], 4);
        assert_eq!(t[1]["ratio"], serde_json::json!([0.98, 0.857, 1.026]));
        assert_eq!(t[1]["median_ratio"], 0.98);
        let md = report::table(&j);
        assert!(
            md.contains("## Paired throughput (alternating blocks)"),
            "{md}"
        );
        assert!(md.contains("| large | sealed | 4 | 3 | 200.0, 210.0, 190.0 | 196.0, 180.0, 195.0 | 0.980, 0.857, 1.026 | 0.980 |"), "{md}");
    }
}
