//! The load run: clients, the RSS sampler, and the report.
//!
//! Every client is a task on one multi-threaded runtime with its own [`Client`] (its own HTTP
//! connection pool) and [`Session`]: it attests once, waits until every client has attested, then
//! sends one sealed inference at a time until the deadline. Each answer is opened and its label
//! compared with the model's expected label, so a wrong answer counts as an error, not a success.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealed_client::{Client, ClientError, Policy, Session, npy};
use sealed_sim::assets::Digits;
use sealed_sim::stack::{ModelFile, Paths, Stack, StackOptions};
use sealed_wire::{NamedTensor, Tensor};
use serde_json::{Value, json};

/// What to load.
pub enum Target {
    /// Start the simulation stack from the binaries in `bin_dir`, with extra host and enclave
    /// arguments.
    Simulation {
        bin_dir: PathBuf,
        host_args: Vec<String>,
        enclave_args: Vec<String>,
    },
    /// A host that is already running.
    Existing {
        url: String,
        policy: PathBuf,
        host_pid: Option<u32>,
        enclave_pid: Option<u32>,
    },
}

pub struct Config {
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub target: Target,
    pub model: String,
}

pub struct Report {
    pub json: Value,
}

/// One input and the label the model must give for it.
struct Example {
    input: Tensor,
    label: i64,
}

/// What one client saw.
#[derive(Default)]
struct ClientStats {
    /// Latency of each successful request, in microseconds.
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    attest_us: Option<u64>,
}

/// One RSS sample, kB.
#[derive(Clone, Copy)]
struct Sample {
    t_s: f64,
    host: Option<Mem>,
    enclave: Option<Mem>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mem {
    pub(crate) rss_kb: u64,
    pub(crate) hwm_kb: u64,
}

/// VmRSS and VmHWM from `/proc/PID/status` (proc(5)); None once the process is gone.
pub(crate) fn read_mem(pid: Option<u32>) -> Option<Mem> {
    parse_status(&std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?)
}

/// VmRSS and VmHWM (kB) from the text of a `/proc/PID/status` file (proc(5): `Name:\tvalue kB`
/// lines); None when either is missing or not a number (a kernel thread has neither).
pub(crate) fn parse_status(status: &str) -> Option<Mem> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

/// RssAnon (kB) from the text of a `/proc/PID/status` file: the process's anonymous memory (heap,
/// stacks), without the file-backed pages of its binary that VmRSS and VmHWM also count, whose
/// number depends on the page cache (docs/performance.md, round 8).
pub(crate) fn parse_anon_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// RssAnon of a process now; None once it is gone.
pub(crate) fn read_anon_kb(pid: u32) -> Option<u64> {
    parse_anon_kb(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The highest RssAnon of a process while this runs: proc(5) keeps a peak (VmHWM) only for the
/// whole RSS, so a thread samples `/proc/PID/status` every [`AnonPeak::PERIOD`] (each read costs
/// tens of µs of this process's CPU, not the sampled one's). A peak shorter than the period can
/// be missed; a model load's lasts for its parse and optimisation.
pub(crate) struct AnonPeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<u64>>>,
}

impl AnonPeak {
    pub(crate) const PERIOD: Duration = Duration::from_millis(1);

    pub(crate) fn start(pid: u32) -> AnonPeak {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("anon-peak".into())
            .spawn(move || {
                let mut peak = read_anon_kb(pid);
                loop {
                    // One last sample after the stop: the caller's last step counts.
                    let last = flag.load(std::sync::atomic::Ordering::Acquire);
                    peak = peak.max(read_anon_kb(pid));
                    if last {
                        return peak;
                    }
                    std::thread::sleep(Self::PERIOD);
                }
            })
            .ok();
        AnonPeak { stop, thread }
    }

    /// Stops sampling; the highest RssAnon seen (None when the process had none to read).
    pub(crate) fn finish(mut self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for AnonPeak {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The bundled digits examples with one row each (batch 1, the common case).
fn examples() -> Result<Vec<Example>> {
    let digits = Digits::load(&sealed_sim::assets::default_dir())?;
    let mut out = Vec::new();
    for e in &digits.examples {
        let input = npy::read_file(&e.file).with_context(|| format!("{}", e.file.display()))?;
        if let ([1, _], [label]) = (input.shape(), e.predicted_labels.as_slice()) {
            out.push(Example {
                input,
                label: *label,
            });
        }
    }
    if out.is_empty() {
        bail!("no single-row digits examples found");
    }
    Ok(out)
}

fn error_key(e: &ClientError) -> String {
    match e.code() {
        Some(code) => code.as_str().to_string(),
        None => e.step(),
    }
}

async fn client_task(
    url: String,
    policy: Policy,
    model: String,
    examples: Arc<Vec<Example>>,
    first: usize,
    attested_tx: tokio::sync::mpsc::Sender<()>,
    mut deadline_rx: tokio::sync::watch::Receiver<Option<Instant>>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let attested = Instant::now();
    let session: Option<Session> = match Client::new(&url, policy) {
        Ok(client) => match client.attest().await {
            Ok(s) => {
                stats.attest_us = Some(attested.elapsed().as_micros() as u64);
                Some(s)
            }
            Err(e) => {
                *stats
                    .errors
                    .entry(format!("attest:{}", error_key(&e)))
                    .or_default() += 1;
                None
            }
        },
        Err(e) => {
            *stats
                .errors
                .entry(format!("client:{}", error_key(&e)))
                .or_default() += 1;
            None
        }
    };
    // Attested (or failed to): the clock starts once every client is here.
    let _ = attested_tx.send(()).await;
    drop(attested_tx);
    let deadline = match deadline_rx.wait_for(Option::is_some).await {
        Ok(d) => *d,
        Err(_) => None,
    };
    let (Some(session), Some(deadline)) = (session, deadline) else {
        return stats;
    };
    let mut i = first;
    while Instant::now() < deadline {
        let example = &examples[i % examples.len()];
        i += 1;
        let inputs = vec![NamedTensor {
            name: "input".into(),
            tensor: example.input.clone(),
        }];
        let sent = Instant::now();
        match session.infer(&model, inputs).await {
            Ok(outputs) => {
                let elapsed = sent.elapsed().as_micros() as u64;
                let label = outputs
                    .iter()
                    .find(|o| o.name == "label")
                    .and_then(|o| o.tensor.to_i64().ok());
                if label.as_deref() == Some(&[example.label]) {
                    stats.latencies_us.push(elapsed);
                } else {
                    *stats.errors.entry("wrong_answer".into()).or_default() += 1;
                }
            }
            Err(e) => *stats.errors.entry(error_key(&e)).or_default() += 1,
        }
    }
    stats
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(config: Config) -> Result<Report> {
    let examples = Arc::new(examples()?);
    let digits = Digits::load(&sealed_sim::assets::default_dir())?;
    let _tmp;
    let mut stack = None;
    let (url, policy, host_pid, enclave_pid, target) = match &config.target {
        Target::Simulation {
            bin_dir,
            host_args,
            enclave_args,
        } => {
            let tmp = tempfile::tempdir()?;
            let paths = Paths {
                bin_dir: bin_dir.clone(),
                assets: sealed_sim::assets::default_dir(),
                workdir: tmp.path().to_path_buf(),
                child_log: "warn".to_string(),
            };
            _tmp = tmp;
            let models = [ModelFile {
                id: config.model.clone(),
                path: digits.model.clone(),
            }];
            sealed_sim::stack::write_mock_ca(&paths)?;
            let s = Stack::start_with(
                &paths,
                StackOptions {
                    name: "",
                    enclave_binary: paths.enclave(),
                    plaintext_models: models.to_vec(),
                    aws: None,
                    enclave_args: enclave_args.clone(),
                    host_args: host_args.clone(),
                    host_enclave_socket: None,
                },
            )
            .await?;
            let pem = std::fs::read_to_string(&s.root_pem)?;
            let sha384: Vec<u8> = (0..digits.model_sha384.len() / 2)
                .map(|i| u8::from_str_radix(&digits.model_sha384[2 * i..2 * i + 2], 16))
                .collect::<Result<_, _>>()
                .context("expected.json: model_sha384")?;
            let policy = Policy::new()
                .trust_root_pem(&pem)?
                .expect_pcr(0, s.pcr0.to_vec())
                .expect_model(config.model.clone(), sha384);
            let r = (
                s.host_url.clone(),
                policy,
                s.host_pid(),
                s.enclave_pid(),
                format!(
                    "simulation stack from {} (host args: {}; enclave args: {})",
                    bin_dir.display(),
                    host_args.join(" "),
                    enclave_args.join(" ")
                ),
            );
            stack = Some(s);
            r
        }
        Target::Existing {
            url,
            policy,
            host_pid,
            enclave_pid,
        } => (
            url.clone(),
            Policy::from_file(policy)?,
            *host_pid,
            *enclave_pid,
            format!("existing host {url}"),
        ),
    };
    eprintln!(
        "sealed-bench: {} clients for {} s against {target}",
        config.clients,
        config.duration.as_secs()
    );

    let idle = Sample {
        t_s: 0.0,
        host: read_mem(host_pid),
        enclave: read_mem(enclave_pid),
    };
    let (attested_tx, mut attested_rx) = tokio::sync::mpsc::channel(config.clients);
    let (deadline_tx, deadline_rx) = tokio::sync::watch::channel(None);
    let attest_started = Instant::now();
    let mut tasks = Vec::with_capacity(config.clients);
    for n in 0..config.clients {
        tasks.push(tokio::spawn(client_task(
            url.clone(),
            policy.clone(),
            config.model.clone(),
            examples.clone(),
            n,
            attested_tx.clone(),
            deadline_rx.clone(),
        )));
    }
    drop(attested_tx);
    // Every client has attested (or failed to) before the clock starts; `recv` ends early only
    // if a client task died.
    let mut ready = 0;
    while ready < config.clients && attested_rx.recv().await.is_some() {
        ready += 1;
    }
    let attest_phase = attest_started.elapsed();
    let t0 = Instant::now();
    let end = t0 + config.duration;
    deadline_tx.send_replace(Some(end));
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        samples.push(Sample {
            t_s: now.duration_since(t0).as_secs_f64(),
            host: read_mem(host_pid),
            enclave: read_mem(enclave_pid),
        });
        if now >= end {
            break;
        }
    }
    let mut all = ClientStats::default();
    let mut attest_us = Vec::new();
    for task in tasks {
        let s = task.await?;
        all.latencies_us.extend(s.latencies_us);
        for (k, v) in s.errors {
            *all.errors.entry(k).or_default() += v;
        }
        attest_us.extend(s.attest_us);
    }
    let wall = t0.elapsed();
    // The final sample, after the last answer.
    samples.push(Sample {
        t_s: wall.as_secs_f64(),
        host: read_mem(host_pid),
        enclave: read_mem(enclave_pid),
    });
    if let Some(s) = stack {
        s.stop().await;
    }
    all.latencies_us.sort_unstable();
    attest_us.sort_unstable();
    Ok(Report {
        json: report_json(
            &config,
            &target,
            &all,
            &attest_us,
            attest_phase,
            wall,
            idle,
            &samples,
        ),
    })
}

/// What each process's memory did: idle (before any client), at the end of the warm-up (the
/// baseline), at the end, and the growth between the last two.
fn memory_json(
    idle: Option<Mem>,
    samples: &[Sample],
    warmup: Duration,
    pick: fn(&Sample) -> Option<Mem>,
) -> Value {
    let baseline = samples
        .iter()
        .find(|s| s.t_s >= warmup.as_secs_f64())
        .or(samples.first())
        .and_then(pick);
    let last = samples.last().and_then(pick);
    let kb = |m: Option<Mem>, f: fn(Mem) -> u64| m.map(f);
    json!({
        "idle_rss_kb": kb(idle, |m| m.rss_kb),
        "baseline_rss_kb": kb(baseline, |m| m.rss_kb),
        "end_rss_kb": kb(last, |m| m.rss_kb),
        "end_hwm_kb": kb(last, |m| m.hwm_kb),
        "growth_kb": match (baseline, last) {
            (Some(b), Some(l)) => Some(l.rss_kb as i64 - b.rss_kb as i64),
            _ => None,
        },
        "max_rss_kb": samples.iter().filter_map(pick).map(|m| m.rss_kb).max(),
    })
}

#[allow(clippy::too_many_arguments)]
fn report_json(
    config: &Config,
    target: &str,
    all: &ClientStats,
    attest_us: &[u64],
    attest_phase: Duration,
    wall: Duration,
    idle: Sample,
    samples: &[Sample],
) -> Value {
    let ok = all.latencies_us.len() as u64;
    let errors: u64 = all.errors.values().sum();
    let ms = |us: u64| us as f64 / 1000.0;
    let lat = &all.latencies_us;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0
    };
    json!({
        "target": target,
        "bench_profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "clients": config.clients,
        "duration_s": config.duration.as_secs(),
        "warmup_s": config.warmup.as_secs(),
        "measured_s": wall.as_secs_f64(),
        "attest_phase_s": attest_phase.as_secs_f64(),
        "attest_ms": {
            "p50": ms(percentile(attest_us, 50.0)),
            "max": ms(attest_us.last().copied().unwrap_or(0)),
        },
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "errors_by_code": all.errors,
        "throughput_rps": ok as f64 / wall.as_secs_f64().max(1e-9),
        "latency_ms": {
            "p50": ms(percentile(lat, 50.0)),
            "p90": ms(percentile(lat, 90.0)),
            "p99": ms(percentile(lat, 99.0)),
            "max": ms(lat.last().copied().unwrap_or(0)),
            "mean": mean,
        },
        "memory": {
            "host": memory_json(idle.host, samples, config.warmup, |s| s.host),
            "enclave": memory_json(idle.enclave, samples, config.warmup, |s| s.enclave),
            "samples": samples.iter().map(|s| json!({
                "t_s": (s.t_s * 10.0).round() / 10.0,
                "host_rss_kb": s.host.map(|m| m.rss_kb),
                "host_hwm_kb": s.host.map(|m| m.hwm_kb),
                "enclave_rss_kb": s.enclave.map(|m| m.rss_kb),
                "enclave_hwm_kb": s.enclave.map(|m| m.hwm_kb),
            })).collect::<Vec<_>>(),
        },
    })
}

/// The report as a plain-text table.
pub fn table(report: &Report) -> String {
    let j = &report.json;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<24} {v}\n"));
    line(
        "target",
        j["target"].as_str().unwrap_or_default().to_string(),
    );
    line(
        "bench build",
        j["bench_profile"].as_str().unwrap_or_default().to_string(),
    );
    line(
        "clients × duration",
        format!(
            "{} × {} s (warm-up {} s)",
            j["clients"], j["duration_s"], j["warmup_s"]
        ),
    );
    line(
        "attestation",
        format!(
            "all clients in {:.2} s; per client p50 {:.1} ms, max {:.1} ms",
            j["attest_phase_s"].as_f64().unwrap_or(0.0),
            j["attest_ms"]["p50"].as_f64().unwrap_or(0.0),
            j["attest_ms"]["max"].as_f64().unwrap_or(0.0)
        ),
    );
    line(
        "requests",
        format!("{} ({} ok, {} errors)", j["requests"], j["ok"], j["errors"]),
    );
    if let Some(errors) = j["errors_by_code"].as_object() {
        for (code, n) in errors {
            line(&format!("  error {code}"), n.to_string());
        }
    }
    line(
        "throughput",
        format!(
            "{:.1} req/s over {:.1} s",
            j["throughput_rps"].as_f64().unwrap_or(0.0),
            j["measured_s"].as_f64().unwrap_or(0.0)
        ),
    );
    let l = &j["latency_ms"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    line(
        "latency ms",
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            f(&l["p50"]),
            f(&l["p90"]),
            f(&l["p99"]),
            f(&l["max"]),
            f(&l["mean"])
        ),
    );
    for who in ["host", "enclave"] {
        let m = &j["memory"][who];
        let mib = |v: &Value| {
            v.as_f64()
                .map_or("-".to_string(), |kb| format!("{:.1}", kb / 1024.0))
        };
        line(
            &format!("{who} RSS MiB"),
            format!(
                "idle {}  after warm-up {}  end {}  max {}  HWM {}  growth {}",
                mib(&m["idle_rss_kb"]),
                mib(&m["baseline_rss_kb"]),
                mib(&m["end_rss_kb"]),
                mib(&m["max_rss_kb"]),
                mib(&m["end_hwm_kb"]),
                mib(&m["growth_kb"])
            ),
        );
    }
    out.push_str("RSS every second (MiB, host / enclave):\n");
    if let Some(samples) = j["memory"]["samples"].as_array() {
        let cells: Vec<String> = samples
            .iter()
            .map(|s| {
                let mib = |v: &Value| {
                    v.as_f64()
                        .map_or("-".to_string(), |kb| format!("{:.0}", kb / 1024.0))
                };
                format!(
                    "{:>5.0}s {}/{}",
                    f(&s["t_s"]),
                    mib(&s["host_rss_kb"]),
                    mib(&s["enclave_rss_kb"])
                )
            })
            .collect();
        for row in cells.chunks(6) {
            out.push_str(&format!("  {}\n", row.join("  ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn reads_this_processs_memory_from_proc() {
        let m = read_mem(Some(std::process::id())).unwrap();
        assert!(m.rss_kb > 0 && m.hwm_kb >= m.rss_kb);
        assert!(read_mem(None).is_none());
    }

    #[test]
    fn the_anon_peak_sees_memory_touched_and_freed_while_it_runs() {
        let me = std::process::id();
        let before = read_anon_kb(me).unwrap();
        let sampler = AnonPeak::start(me);
        // 64 MiB touched, held for many periods, then freed before the sampler stops.
        let block = vec![1u8; 64 << 20];
        std::thread::sleep(AnonPeak::PERIOD * 50);
        assert_eq!(std::hint::black_box(&block)[12345], 1);
        drop(block);
        let peak = sampler.finish().unwrap();
        assert!(
            peak >= before + 60 * 1024,
            "peak {peak} kB, before {before} kB"
        );
    }

    #[test]
    fn parses_vmrss_and_vmhwm_from_a_status_file() {
        let status = "Name:\tsealed-enclave\nVmPeak:\t  900000 kB\nVmHWM:\t  345678 kB\n\
                      VmRSS:\t  123456 kB\nRssAnon:\t  100000 kB\nThreads:\t5\n";
        assert_eq!(
            parse_status(status),
            Some(Mem {
                rss_kb: 123_456,
                hwm_kb: 345_678
            })
        );
        assert_eq!(parse_anon_kb(status), Some(100_000));
        assert_eq!(parse_anon_kb("Name:\tkthreadd\n"), None);
        // A kernel thread's status has no Vm lines; a garbled value is not a reading.
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(parse_status("VmHWM:\t 12 kB\nVmRSS:\t x kB\n"), None);
    }

    #[test]
    fn growth_counts_from_the_end_of_the_warm_up() {
        let mem = |rss_kb| {
            Some(Mem {
                rss_kb,
                hwm_kb: rss_kb,
            })
        };
        let samples: Vec<Sample> = [(0.0, 100), (1.0, 150), (2.0, 160), (3.0, 170)]
            .into_iter()
            .map(|(t_s, kb)| Sample {
                t_s,
                host: mem(kb),
                enclave: None,
            })
            .collect();
        let j = memory_json(mem(90), &samples, Duration::from_secs(1), |s| s.host);
        assert_eq!(j["baseline_rss_kb"], 150);
        assert_eq!(j["growth_kb"], 20);
        assert_eq!(j["max_rss_kb"], 170);
        assert_eq!(j["idle_rss_kb"], 90);
        let e = memory_json(None, &samples, Duration::from_secs(1), |s| s.enclave);
        assert!(e["growth_kb"].is_null());
    }
}
