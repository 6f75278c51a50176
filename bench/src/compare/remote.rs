//! The stack variants: the simulated AWS side (mock KMS, mock IMDS) once per run, keys whose
//! policy names each enclave binary's PCR0, models sealed in process with the `sealed` CLI's code
//! and uploaded through the host's admin API, and the client tasks of the sealed and plain cells.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use sealed_client::seal::{SealRequest, seal_model_file};
use sealed_client::{Client, Policy, Session};
use sealed_sim::stack::{Paths, SimAws, Stack, StackOptions, key_policy, measure};
use sealed_wire::{InferRequest, InferResponse, NamedTensor};

use super::{Case, Cell, Counters, LoadAvg, Window, check_answer};
use crate::load::{AnonPeak, Mem, read_anon_kb, read_mem};

/// Which path requests take through the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HPKE-sealed requests through the client SDK, after attestation.
    Sealed,
    /// Plain `InferRequest` CBOR over HTTP to `sealed-enclave-plain-bench`.
    Plain,
}

/// The simulated AWS side and what was sealed with it.
pub struct Sim {
    paths: Paths,
    aws: SimAws,
    /// Key ARN per PCR0.
    keys: HashMap<[u8; 48], String>,
    /// Sealed file per (model id, PCR0).
    sealed: HashMap<(String, [u8; 48]), PathBuf>,
    stacks: usize,
    _tmp: tempfile::TempDir,
}

impl Sim {
    pub async fn start(bin_dir: &Path) -> Result<Sim> {
        let tmp = tempfile::tempdir()?;
        let paths = Paths {
            bin_dir: bin_dir.to_path_buf(),
            assets: sealed_sim::assets::default_dir(),
            workdir: tmp.path().to_path_buf(),
            child_log: "warn".to_string(),
        };
        sealed_sim::stack::write_mock_ca(&paths)?;
        let aws = SimAws::start(&paths).await?;
        Ok(Sim {
            paths,
            aws,
            keys: HashMap::new(),
            sealed: HashMap::new(),
            stacks: 0,
            _tmp: tmp,
        })
    }

    pub async fn stop(self) {
        self.aws.stop().await;
    }

    /// A KMS key whose policy lets the host role decrypt only for an enclave measuring `pcr0`.
    async fn key_for(&mut self, pcr0: [u8; 48]) -> Result<String> {
        if let Some(k) = self.keys.get(&pcr0) {
            return Ok(k.clone());
        }
        let kms = self.aws.owner_kms_client().await?;
        let out = kms
            .create_key()
            .policy(key_policy(&pcr0))
            .send()
            .await
            .context("creating a KMS key in the mock KMS")?;
        let arn = out
            .key_metadata()
            .and_then(|m| m.arn())
            .context("CreateKey returned no ARN")?
            .to_string();
        self.keys.insert(pcr0, arn.clone());
        Ok(arn)
    }

    /// `model` sealed under the key for `pcr0` (the `sealed seal-model` code, in process).
    async fn sealed_file(&mut self, id: &str, model: &Path, pcr0: [u8; 48]) -> Result<PathBuf> {
        let key = (id.to_string(), pcr0);
        if let Some(p) = self.sealed.get(&key) {
            return Ok(p.clone());
        }
        let arn = self.key_for(pcr0).await?;
        let kms = self.aws.owner_kms_client().await?;
        let out = self
            .paths
            .workdir
            .join(format!("{id}-{}.sealed", self.sealed.len()));
        seal_model_file(
            &kms,
            &SealRequest {
                model,
                out: &out,
                model_id: id,
                key_id: &arn,
                chunk_size: sealed_model::DEFAULT_CHUNK_SIZE,
                overwrite: true,
            },
            indicatif::ProgressBar::hidden(),
        )
        .await
        .with_context(|| format!("sealing {}", model.display()))?;
        self.sealed.insert(key, out.clone());
        Ok(out)
    }

    /// Starts a stack of `enclave` with `workers` workers (and `--dynamic-batch
    /// MODEL=batch_rows` when given) and the host's per-client limits raised to `max_clients`
    /// (every simulated client shares 127.0.0.1), uploads the model sealed for that binary, and
    /// returns it with the upload's wall time (upload → ready) and the fresh enclave's memory
    /// before the upload and once the model is ready. An enclave that refuses to batch the
    /// model answers the upload with an error, which is returned with its text.
    pub async fn start_stack(
        &mut self,
        enclave: &Path,
        workers: usize,
        max_clients: usize,
        model_id: &str,
        model: &Path,
        batch_rows: Option<u32>,
    ) -> Result<Started> {
        let pcr0 = measure(enclave)?;
        let sealed = self.sealed_file(model_id, model, pcr0).await?;
        self.stacks += 1;
        let name = format!("s{}-", self.stacks);
        // Every bench client is 127.0.0.1, one "client" to the host. Headroom over C: the previous
        // cell's keep-alive connections may still be closing when the next cell starts (at 1×C the
        // plain variant at C=64 met `too_many_requests`).
        let limit = max_clients.saturating_mul(4).clamp(64, 1024).to_string();
        let stack = Stack::start_with(
            &self.paths,
            StackOptions {
                name: &name,
                enclave_binary: enclave.to_path_buf(),
                plaintext_models: Vec::new(),
                aws: Some(&self.aws),
                enclave_args: enclave_args(workers, model_id, batch_rows),
                host_args: vec![
                    "--max-in-flight-per-client".into(),
                    limit.clone(),
                    "--max-connections-per-client".into(),
                    limit,
                ],
                host_enclave_socket: None,
            },
        )
        .await
        .with_context(|| format!("starting a stack with {}", enclave.display()))?;
        let body = std::fs::read(&sealed)?;
        let chunk_size = sealed_model::parse_header(&body)
            .ok()
            .map(|(h, _)| h.chunk_size);
        let admin = stack.admin_url.clone().context("no admin URL")?;
        let baseline = read_mem(stack.enclave_pid());
        let anon_baseline_kb = stack.enclave_pid().and_then(read_anon_kb);
        // Sampled until the caller's first inference is done (`Started::anon_peak`).
        let anon_peak = stack.enclave_pid().map(AnonPeak::start);
        let started = Instant::now();
        let response = reqwest::Client::new()
            .post(format!("{admin}/v1/admin/models"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .context("uploading the sealed model")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let upload_ms = started.elapsed().as_secs_f64() * 1000.0;
        let loaded = read_mem(stack.enclave_pid());
        if !status.is_success() {
            stack.stop().await;
            let batching = batch_rows.map_or(String::new(), |n| {
                format!(" (enclave started with --dynamic-batch {model_id}={n})")
            });
            bail!("sealed upload of {model_id} answered {status}{batching}: {text}");
        }
        let pem = std::fs::read_to_string(&stack.root_pem)?;
        let policy = Policy::new()
            .trust_root_pem(&pem)?
            .expect_pcr(0, stack.pcr0.to_vec());
        Ok(Started {
            running: RunningStack { stack, policy },
            upload_ms,
            baseline,
            loaded,
            anon_baseline_kb,
            anon_peak,
            chunk_size,
        })
    }
}

/// The enclave's command-line options for one stack: its workers and, when batching,
/// `--dynamic-batch MODEL=ROWS` for the one model the stack serves.
pub fn enclave_args(workers: usize, model_id: &str, batch_rows: Option<u32>) -> Vec<String> {
    let mut args = vec!["--workers".to_string(), workers.to_string()];
    if let Some(rows) = batch_rows {
        args.push("--dynamic-batch".into());
        args.push(format!("{model_id}={rows}"));
    }
    args
}

/// A stack with its model loaded.
pub struct Started {
    pub running: RunningStack,
    /// Admin upload → ready, ms.
    pub upload_ms: f64,
    /// The enclave's VmRSS / VmHWM before the upload and once the model is ready.
    pub baseline: Option<Mem>,
    pub loaded: Option<Mem>,
    /// The enclave's RssAnon before the upload, and its sampler, still running (stopped once the
    /// caller has sent the first inference).
    pub anon_baseline_kb: Option<u64>,
    pub anon_peak: Option<AnonPeak>,
    /// Plaintext bytes per chunk in the sealed file's header.
    pub chunk_size: Option<u32>,
}

pub struct RunningStack {
    pub stack: Stack,
    policy: Policy,
}

impl RunningStack {
    pub fn enclave_pid(&self) -> Option<u32> {
        self.stack.enclave_pid()
    }
}

/// One connection of a cell's client task.
enum Conn {
    Sealed(Box<Session>),
    Plain(reqwest::Client, String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn request(conn: &Conn, model: &str, case: &Case) -> Result<Vec<NamedTensor>, String> {
    let inputs = vec![NamedTensor {
        name: case.input_name.clone(),
        tensor: case.input.clone(),
    }];
    match conn {
        Conn::Sealed(session) => session
            .infer(model, inputs)
            .await
            .map_err(|e| match e.code() {
                Some(code) => code.as_str().to_string(),
                None => e.step(),
            }),
        Conn::Plain(client, url) => {
            let mut request_id = [0u8; 16];
            getrandom::fill(&mut request_id).map_err(|e| format!("random: {e}"))?;
            let body = InferRequest {
                request_id,
                sent_at_ms: now_ms(),
                model_id: model.to_string(),
                inputs,
            }
            .encode()
            .map_err(|e| format!("encode: {e}"))?;
            let response = client
                .post(url)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
                .map_err(|_| "http".to_string())?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|_| "http_body".to_string())?;
            if !status.is_success() {
                let name = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["error"]["name"].as_str().map(str::to_string));
                return Err(name.unwrap_or_else(|| format!("http_{}", status.as_u16())));
            }
            match InferResponse::decode(&bytes) {
                Ok(InferResponse::Ok { outputs }) => Ok(outputs),
                Ok(InferResponse::Error { code, .. }) => Err(code.as_str().to_string()),
                Err(_) => Err("bad_response".to_string()),
            }
        }
    }
}

/// One request on a connection of its own (a sealed one attests first), its answer checked.
pub async fn one_request(
    mode: Mode,
    running: &RunningStack,
    model: &str,
    case: &Case,
) -> Result<()> {
    let url = running.stack.host_url.clone();
    let conn = match mode {
        Mode::Sealed => Conn::Sealed(Box::new(
            Client::new(&url, running.policy.clone())?
                .attest()
                .await
                .context("attesting")?,
        )),
        Mode::Plain => Conn::Plain(reqwest::Client::new(), format!("{url}/v1/infer")),
    };
    let outputs = request(&conn, model, case)
        .await
        .map_err(|e| anyhow::anyhow!("the first request failed: {e}"))?;
    check_answer(case, &outputs).map_err(|e| anyhow::anyhow!("the first request: {e}"))
}

/// What one client task saw in the measured window.
#[derive(Default)]
struct TaskStats {
    lat_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    span: Option<(Instant, Instant)>,
    /// Correct answers and all answers that arrived inside the measured window.
    window_ok: u64,
    window_answers: u64,
}

async fn client_task(
    mode: Mode,
    url: String,
    policy: Policy,
    model: String,
    case: Arc<Case>,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    mut window: tokio::sync::watch::Receiver<Option<Window>>,
) -> TaskStats {
    let mut stats = TaskStats::default();
    let conn = match mode {
        Mode::Sealed => match Client::new(&url, policy) {
            Ok(c) => c
                .attest()
                .await
                .map(|s| Conn::Sealed(Box::new(s)))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Mode::Plain => Ok(Conn::Plain(
            reqwest::Client::new(),
            format!("{url}/v1/infer"),
        )),
    };
    let conn = match conn {
        Ok(c) => {
            let _ = ready.send(Ok(())).await;
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return stats;
        }
    };
    drop(ready);
    let Ok(w) = window.wait_for(Option::is_some).await.map(|w| *w) else {
        return stats;
    };
    let Some(w) = w else { return stats };
    loop {
        if !w.gap.is_zero() {
            tokio::time::sleep(w.gap).await;
        }
        let sent = Instant::now();
        if w.done(sent, stats.span.is_some()) {
            break;
        }
        let answer = request(&conn, &model, &case).await;
        let done = Instant::now();
        let checked = answer.and_then(|outputs| check_answer(&case, &outputs));
        if w.counts(done) {
            stats.window_ok += u64::from(checked.is_ok());
            stats.window_answers += 1;
        }
        if sent < w.warm_end {
            continue;
        }
        stats.span = Some((stats.span.map_or(sent, |s| s.0), done));
        match checked {
            Ok(()) => stats
                .lat_us
                .push(done.duration_since(sent).as_micros() as u64),
            Err(e) => *stats.errors.entry(e).or_default() += 1,
        }
    }
    stats
}

/// How long a cell warms up and measures, and the idle time before each of its requests.
#[derive(Clone, Copy)]
pub struct CellTiming {
    pub warmup: Duration,
    pub seconds: Duration,
    pub gap: Duration,
}

/// One cell: `concurrency` client tasks (each its own connection; sealed ones attest first,
/// outside the timing), a warm-up, then `seconds` of back-to-back requests. Host and enclave
/// counters (`/proc/PID/io`, `stat`, `task/*/status`) are read at the start and the end of the measured window.
pub async fn cell(
    mode: Mode,
    running: &RunningStack,
    model: &str,
    case: &Arc<Case>,
    concurrency: usize,
    timing: CellTiming,
) -> Result<Cell> {
    let CellTiming {
        warmup,
        seconds,
        gap,
    } = timing;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(concurrency);
    let (window_tx, window_rx) = tokio::sync::watch::channel(None);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        tasks.push(tokio::spawn(client_task(
            mode,
            running.stack.host_url.clone(),
            running.policy.clone(),
            model.to_string(),
            Arc::clone(case),
            ready_tx.clone(),
            window_rx.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..concurrency {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => bail!("a client could not connect: {e}"),
            None => bail!("a client task died before it was ready"),
        }
    }
    let start = Instant::now();
    let w = Window {
        warm_end: start + warmup,
        end: start + warmup + seconds,
        gap,
    };
    window_tx.send_replace(Some(w));
    tokio::time::sleep_until(w.warm_end.into()).await;
    let (host, enclave) = (running.stack.host_pid(), running.enclave_pid());
    let me = Some(std::process::id());
    let before = (
        Counters::read(host),
        Counters::read(enclave),
        Counters::read(me),
    );
    let mut out = Cell {
        concurrency,
        ..Cell::default()
    };
    out.load.start = LoadAvg::read();
    // The counters cover the measured window, as the throughput does.
    tokio::time::sleep_until(w.end.into()).await;
    let after = (
        Counters::read(host),
        Counters::read(enclave),
        Counters::read(me),
    );
    let mut span = None;
    for t in tasks {
        let s = t.await?;
        out.lat_us.extend(s.lat_us);
        for (k, v) in s.errors {
            *out.errors.entry(k).or_default() += v;
        }
        span = Window::merge(span, s.span);
        out.window_ok += s.window_ok;
        out.window_answers += s.window_answers;
    }
    out.window_s = w.seconds();
    out.wall_s = span.map_or(0.0, |(a, b): (Instant, Instant)| {
        b.duration_since(a).as_secs_f64()
    });
    out.host = before.0.zip(after.0).map(|(a, b)| a.delta(b));
    out.enclave = before.1.zip(after.1).map(|(a, b)| a.delta(b));
    // The client harness's own CPU (and the simulated AWS's, idle once every client has
    // attested): with the host's, what the load generator spent (`sealed-bench targets` tells
    // a harness-bound cell from a server-bound one by it).
    out.bench = before.2.zip(after.2).map(|(a, b)| a.delta(b));
    out.load.end = LoadAvg::read();
    out.finish();
    Ok(out)
}
