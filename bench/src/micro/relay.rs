//! The host's relay alone (issue 6: "≥ 1 GB/s for 16 MB tensors over the Unix socket; no
//! per-request allocation that grows with payload beyond one buffer").
//!
//! The real release `sealed-host` (next to this binary, or `--bin-dir`) relays to a stand-in
//! enclave inside this process: a tokio task on a Unix socket in a tempdir, speaking the frame
//! protocol with `sealed-transport`. It answers `Health` (so the host's supervisor finds it ready)
//! and answers each `Infer { sealed }` with `Infer { sealed }` carrying the same bytes, after
//! checking they are exactly the bytes the client sent: a wrong relay is an error, not a figure.
//! The client POSTs `/v1/infer` bodies of 1 KiB, 1 MiB, 4 MiB and 16 MiB (the largest sealed
//! message) over one HTTP/1.1 keep-alive connection (reqwest), one request at a time, reads each
//! answer into one buffer reused by every request (as the forwarder's client does), and checks
//! the answer is the body it sent.
//!
//! Per size:
//! - round trip: client send → whole answer received, p50 and p99;
//! - stand-in time: from the stand-in having the whole request frame to its starting to write the
//!   answer (its byte check and envelope), p50;
//! - relay throughput: payload bytes each way / p50 of (round trip − stand-in time), in MB/s
//!   (10⁶ B/s); what is left in that time is the host, the client's HTTP and both sockets;
//! - host CPU µs per request: `/proc/PID/stat` utime + stime over the timed run / requests (the
//!   host idles during the ceiling's requests, which alternate with its own);
//! - host context switches per request: voluntary + involuntary, summed over the host's threads
//!   (`/proc/PID/task/*/status`);
//! - host VmRSS / VmHWM after the size's warm-up and after its timed run: equal figures mean the
//!   per-request buffers do not grow over the run.
//!
//! The host runs with `RUST_LOG=warn` unless RUST_LOG is set (as the simulation stack runs it),
//! so that its per-request access log line is not part of the relay's cost. The bench side (client
//! and stand-in) shares one thread, leaving the other core(s) to the host.
//!
//! Beside each size, the same measurement through a minimal forwarder instead of the host
//! ([`ceiling`]): a child process that relays length-prefixed messages from a TCP client to the
//! same stand-in, with no HTTP and no user-space copy. Its MB/s is what this machine's socket
//! copies allow in this topology; host / ceiling says how much of that the host reaches. The two
//! alternate request by request (after both warm up), so that both see the same machine load;
//! each size runs for twice the time budget.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealed_transport::{BoxRead, BoxWrite, Endpoint, Listener};
use sealed_wire::limits::{MAX_FRAME_LEN, MAX_SEALED_MESSAGE_LEN};
use sealed_wire::message::{infer_envelope_prefix, infer_envelope_range};
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, PROTOCOL_VERSION};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::{Stats, round3};

mod ceiling;

/// Payload sizes: 1 KiB to the largest sealed message the host accepts.
const SIZES: [usize; 4] = [1 << 10, 1 << 20, 4 << 20, MAX_SEALED_MESSAGE_LEN];

/// `USER_HZ`: the unit of utime/stime in `/proc/PID/stat` (proc(5)); 100 on every Linux ABI.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// How long the host has to print its address and to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each payload size runs.
#[derive(Clone, Copy)]
pub(super) struct Budget {
    /// Wall time per payload size and path (after warm-up): host and ceiling requests alternate
    /// for twice this.
    time: Duration,
    /// Fewest timed requests per payload size, whatever the time.
    min_runs: usize,
    /// Untimed requests per payload size first.
    warmup_runs: usize,
}

impl Budget {
    pub(super) fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                time: Duration::from_millis(500),
                min_runs: 5,
                warmup_runs: 3,
            }
        } else {
            Budget {
                time: Duration::from_secs(3),
                min_runs: 30,
                warmup_runs: 10,
            }
        }
    }
}

/// One payload size's figures.
pub(super) struct Case {
    bytes: usize,
    runs: usize,
    /// Round trip, µs.
    round_trip: Stats,
    /// The stand-in's own time per request, µs.
    stand_in: Stats,
    /// Round trip − stand-in time, µs.
    relay: Stats,
    host_cpu_us_per_request: f64,
    host_ctx_switches_per_request: f64,
    mem_warm: Mem,
    mem_end: Mem,
    /// The same payloads through the minimal forwarder.
    ceiling: CeilingCase,
}

/// One payload size through the minimal forwarder ([`ceiling`]).
struct CeilingCase {
    runs: usize,
    /// Round trip, µs.
    round_trip: Stats,
    /// The stand-in's own time per request, µs.
    stand_in: Stats,
    /// Round trip − stand-in time, µs.
    relay: Stats,
    forwarder_cpu_us_per_request: f64,
    forwarder_ctx_switches_per_request: f64,
}

pub(super) struct Report {
    host_binary: PathBuf,
    cases: Vec<Case>,
}

/// Resident and peak resident set of a process, kB (`/proc/PID/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
}

/// Where `sealed-host` is: `bin_dir`, else the directory of this executable.
pub(super) fn host_binary(bin_dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => sealed_sim::stack::default_bin_dir()?,
    };
    let host = dir.join("sealed-host");
    if !host.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p sealed-host …) or pass --bin-dir",
            host.display()
        );
    }
    Ok(host)
}

pub(super) fn run(host: &Path, budget: Budget) -> Result<Report> {
    // The re-executed binary of the ceiling measurement: be the forwarder, nothing else.
    if let Some(stand_in) = std::env::var_os(ceiling::FORWARDER_ENV) {
        let never = ceiling::forwarder_main(PathBuf::from(stand_in))?;
        match never {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(host, budget))
}

/// What the client expects the stand-in to receive next, and where the stand-in reports each
/// inference (its own time, or why the relay was wrong).
struct Expect {
    payload: Mutex<Arc<Vec<u8>>>,
    report: mpsc::UnboundedSender<Result<Duration, String>>,
}

async fn run_async(host_bin: &Path, budget: Budget) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("enclave.sock");
    let listener = Listener::bind(&Endpoint::Unix(socket.clone()))?;
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let expect = Arc::new(Expect {
        payload: Mutex::new(Arc::new(Vec::new())),
        report: report_tx,
    });
    let stand_in = tokio::spawn(stand_in(listener, expect.clone()));

    let mut cmd = tokio::process::Command::new(host_bin);
    cmd.arg("--enclave")
        .arg(format!("unix:{}", socket.display()))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut host = cmd
        .spawn()
        .with_context(|| format!("starting {}", host_bin.display()))?;
    let pid = host.id().context("sealed-host exited at once")?;
    let url = child_line(&mut host, "sealed-host listening on ", "sealed-host").await?;

    // The ceiling's forwarder: this binary again, as a child like the host, on the same stand-in.
    let mut fwd = tokio::process::Command::new(std::env::current_exe()?)
        .args(["micro", "--relay-only", "--bin-dir"])
        .arg(host_bin.parent().context("sealed-host has no directory")?)
        .env(ceiling::FORWARDER_ENV, &socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its end of this pipe closing (this process ending) stops it.
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the relay forwarder")?;
    let fwd_pid = fwd.id().context("the relay forwarder exited at once")?;
    let fwd_addr = child_line(&mut fwd, ceiling::LISTENING, "the relay forwarder").await?;
    let mut fwd_client = ceiling::Client::connect(&fwd_addr).await?;

    let client = reqwest::Client::builder()
        // One connection, kept alive: every request reuses it.
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()?;
    wait_ready(&client, &url).await?;

    // The answer's bytes land in one buffer reused by every request (its pages faulted in by the
    // warm-up requests): the forwarder's client reads into one reused buffer too, so neither
    // side's figure carries a fresh 16 MiB allocation and its page faults per request, which are
    // the client's cost, not the relay's.
    let mut answer = vec![0u8; MAX_SEALED_MESSAGE_LEN];
    answer.clear();

    let mut cases = Vec::with_capacity(SIZES.len());
    for &bytes in &SIZES {
        // Two payloads differing at both ends, alternated, so that a relay answering with an
        // earlier request's bytes is caught.
        let payloads: [Arc<Vec<u8>>; 2] = [payload(bytes, 1), payload(bytes, 2)];
        let requests = payloads
            .iter()
            .map(|p| {
                client
                    .post(format!("{url}/v1/infer"))
                    .header("content-type", "application/octet-stream")
                    .body(p.as_ref().clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The ceiling's messages: the same payloads behind a length.
        let messages = payloads.each_ref().map(|p| ceiling::message(p));
        // One request through the host (`via_ceiling` false) or the forwarder: round trip and the
        // stand-in's own time.
        let mut one = async |i: usize, via_ceiling: bool| -> Result<(Duration, Duration)> {
            let k = i % 2;
            *expect
                .payload
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = payloads[k].clone();
            let round_trip = if via_ceiling {
                let (round_trip, answer) = fwd_client.round_trip(&messages[k]).await?;
                match answer {
                    Some(answer) if answer == payloads[k].as_slice() => {}
                    Some(_) => bail!("{bytes} B: the forwarder's answer is not the bytes sent"),
                    None => match report_rx.try_recv() {
                        Ok(Err(e)) => bail!("{bytes} B (ceiling): {e}"),
                        _ => bail!("{bytes} B (ceiling): the stand-in answered no sealed bytes"),
                    },
                }
                round_trip
            } else {
                // A body built from bytes is cloned by reference, not copied.
                let request = requests[k]
                    .try_clone()
                    .context("request body not clonable")?;
                let t = Instant::now();
                let mut response = client.execute(request).await?;
                let status = response.status();
                answer.clear();
                while let Some(chunk) = response.chunk().await? {
                    if answer.len() + chunk.len() > answer.capacity() {
                        bail!("{bytes} B: the answer is longer than any sealed message");
                    }
                    answer.extend_from_slice(&chunk);
                }
                let round_trip = t.elapsed();
                let body = &answer;
                if !status.is_success() {
                    // The stand-in's own finding, if it has one, says more than the status.
                    if let Ok(Err(e)) = report_rx.try_recv() {
                        bail!("{bytes} B: {e}");
                    }
                    bail!(
                        "{bytes} B: host answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    );
                }
                if body[..] != payloads[k][..] {
                    bail!("{bytes} B: the answer is not the bytes sent");
                }
                round_trip
            };
            let own = match report_rx.recv().await {
                Some(Ok(own)) => own,
                Some(Err(e)) => bail!("{bytes} B: {e}"),
                None => bail!("the stand-in enclave stopped"),
            };
            Ok((round_trip, own))
        };
        for i in 0..budget.warmup_runs {
            one(i, false).await?;
            one(i, true).await?;
        }
        let mem_warm = mem(pid)?;
        let cpu_start = cpu_ticks(pid)?;
        let ctx_start = ctx_switches(pid)?;
        let fwd_cpu_start = cpu_ticks(fwd_pid)?;
        let fwd_ctx_start = ctx_switches(fwd_pid)?;
        let mut host_samples = Samples::default();
        let mut ceiling_samples = Samples::default();
        // Host and ceiling alternate request by request, so that both see the same machine (other
        // processes' load comes and goes within seconds here); each pair gets the time two
        // separate runs would.
        let start = Instant::now();
        let mut i = 0;
        while host_samples.round_trip.len() < budget.min_runs || start.elapsed() < 2 * budget.time {
            host_samples.push(one(i, false).await?);
            ceiling_samples.push(one(i, true).await?);
            i += 1;
        }
        let cpu = cpu_ticks(pid)?.saturating_sub(cpu_start);
        let ctx = ctx_switches(pid)?.saturating_sub(ctx_start);
        let fwd_cpu = cpu_ticks(fwd_pid)?.saturating_sub(fwd_cpu_start);
        let fwd_ctx = ctx_switches(fwd_pid)?.saturating_sub(fwd_ctx_start);
        let mem_end = mem(pid)?;
        let runs = host_samples.round_trip.len();
        let per_request = |ticks: u64| ticks as f64 / CLOCK_TICKS_PER_SEC * 1e6 / runs as f64;
        let (round_trip, stand_in, relay) = ceiling_samples.stats()?;
        let ceiling = CeilingCase {
            runs,
            round_trip,
            stand_in,
            relay,
            forwarder_cpu_us_per_request: per_request(fwd_cpu),
            forwarder_ctx_switches_per_request: fwd_ctx as f64 / runs as f64,
        };
        let (round_trip, stand_in, relay) = host_samples.stats()?;
        cases.push(Case {
            bytes,
            runs,
            round_trip,
            stand_in,
            relay,
            host_cpu_us_per_request: per_request(cpu),
            host_ctx_switches_per_request: ctx as f64 / runs as f64,
            mem_warm,
            mem_end,
            ceiling,
        });
    }
    drop(client);
    drop(fwd_client);
    stand_in.abort();
    // kill_on_drop would do it too; waiting reaps the children before the tempdir goes.
    host.kill().await.ok();
    fwd.kill().await.ok();
    Ok(Report {
        host_binary: host_bin.to_path_buf(),
        cases,
    })
}

/// Per-request timings, µs.
#[derive(Default)]
struct Samples {
    round_trip: Vec<f64>,
    stand_in: Vec<f64>,
    /// Round trip − stand-in time.
    relay: Vec<f64>,
}

impl Samples {
    fn push(&mut self, (round_trip, stand_in): (Duration, Duration)) {
        self.round_trip.push(round_trip.as_secs_f64() * 1e6);
        self.stand_in.push(stand_in.as_secs_f64() * 1e6);
        self.relay
            .push(round_trip.saturating_sub(stand_in).as_secs_f64() * 1e6);
    }

    /// Round trip, stand-in and relay statistics, in that order.
    fn stats(&self) -> Result<(Stats, Stats, Stats)> {
        let stats = |s: &[f64]| Stats::of(s).context("no samples");
        Ok((
            stats(&self.round_trip)?,
            stats(&self.stand_in)?,
            stats(&self.relay)?,
        ))
    }
}

/// `bytes` bytes of a simple pattern, marked with `tag` at both ends.
fn payload(bytes: usize, tag: u8) -> Arc<Vec<u8>> {
    let mut p: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    if let Some(first) = p.first_mut() {
        *first = tag;
    }
    if let Some(last) = p.last_mut() {
        *last = tag;
    }
    Arc::new(p)
}

/// Reads a child's stdout up to `PREFIX ADDRESS` (`sealed-host listening on URL`), then keeps
/// draining it; returns the address.
async fn child_line(child: &mut tokio::process::Child, prefix: &str, name: &str) -> Result<String> {
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix(prefix) {
                return Ok(url.trim().to_string());
            }
        }
        bail!("{name} exited before listening")
    })
    .await
    .with_context(|| format!("{name} did not start"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(url)
}

/// Waits for `/readyz` 200: connected to the stand-in and its health probe answered.
async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let ready = client.get(format!("{url}/readyz")).send().await;
        if matches!(&ready, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("sealed-host not ready after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Accepts the host's connections and serves each.
async fn stand_in(listener: Listener, expect: Arc<Expect>) {
    while let Ok((r, w)) = listener.accept().await {
        tokio::spawn(serve(r, w, expect.clone()));
    }
}

/// One host connection: health answers and checked echoes, in order.
async fn serve(
    mut r: BoxRead,
    mut w: BoxWrite,
    expect: Arc<Expect>,
) -> Result<(), sealed_transport::TransportError> {
    while let Some(frame) = sealed_transport::read_frame(&mut r, MAX_FRAME_LEN).await? {
        let received = Instant::now();
        if let Some(range) = infer_envelope_range(&frame.body) {
            let expected = expect
                .payload
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let sealed = frame.body.get(range).unwrap_or_default();
            if sealed == expected.as_slice() {
                let head = infer_envelope_prefix(sealed.len());
                let _ = expect.report.send(Ok(received.elapsed()));
                sealed_transport::write_frame_parts(&mut w, frame.request_id, &head, sealed)
                    .await?;
            } else {
                let _ = expect.report.send(Err(format!(
                    "the stand-in enclave received {} bytes that differ from the {} sent",
                    sealed.len(),
                    expected.len()
                )));
                let answer = EnclaveResponse::error(ErrorCode::Internal, "relay corrupted");
                write(&mut w, frame.request_id, &answer).await?;
            }
            continue;
        }
        let answer = match EnclaveRequest::decode(&frame.body) {
            Ok(EnclaveRequest::Health) => EnclaveResponse::Health(HealthStatus {
                protocol_version: PROTOCOL_VERSION,
                ready: true,
                simulation: true,
                workers: 1,
                in_flight: 0,
                batched_requests: 0,
                models: Vec::new(),
            }),
            Ok(EnclaveRequest::Infer { .. }) => {
                let _ = expect.report.send(Err(
                    "the host sent an Infer envelope of another shape".into()
                ));
                EnclaveResponse::error(ErrorCode::Internal, "unexpected encoding")
            }
            Ok(_) => EnclaveResponse::error(ErrorCode::Internal, "not served by the stand-in"),
            Err(e) => EnclaveResponse::error(e.code(), "undecodable request"),
        };
        write(&mut w, frame.request_id, &answer).await?;
    }
    Ok(())
}

async fn write(
    w: &mut BoxWrite,
    request_id: u64,
    answer: &EnclaveResponse,
) -> Result<(), sealed_transport::TransportError> {
    let body = answer
        .encode()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    sealed_transport::write_frame(w, request_id, &body).await
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).context("unreadable /proc/PID/stat")
}

/// Fields 14 and 15 (utime, stime) of a `/proc/PID/stat` line (proc(5)); the command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state): utime is the 12th field of it, stime the 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Voluntary + involuntary context switches summed over the threads of `pid`
/// (`/proc/PID/status` counts the main thread only).
fn ctx_switches(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that exits between the listing and the read is skipped.
        if let Ok(status) = std::fs::read_to_string(task?.path().join("status")) {
            total += status_value(&status, "voluntary_ctxt_switches").unwrap_or(0)
                + status_value(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
        }
    }
    Ok(total)
}

fn mem(pid: u32) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(Mem {
        rss_kb: status_value(&status, "VmRSS").context("no VmRSS")?,
        hwm_kb: status_value(&status, "VmHWM").context("no VmHWM")?,
    })
}

/// The number of a `Key:  value [kB]` line of `/proc/PID/status`.
fn status_value(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// Payload bytes per second (10⁶) when one direction takes `us` µs.
/// The columns both tables start with: payload, runs, round trip p50 and p99 ms, stand-in p50
/// ms, relay MB/s.
fn timing_cells(
    bytes: usize,
    runs: usize,
    round_trip: &Stats,
    stand_in: &Stats,
    relay: &Stats,
) -> String {
    format!(
        "{} | {} | {:.3} | {:.3} | {:.3} | {:.0}",
        size_label(bytes),
        runs,
        round_trip.median / 1e3,
        round_trip.p99 / 1e3,
        stand_in.median / 1e3,
        mb_per_s(bytes, relay.median),
    )
}

fn mb_per_s(bytes: usize, us: f64) -> f64 {
    if us > 0.0 { bytes as f64 / us } else { 0.0 }
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Host relay MB/s ÷ ceiling MB/s (the ratio of their p50 relay times, inverted).
fn host_to_ceiling(c: &Case) -> f64 {
    if c.relay.median > 0.0 {
        c.ceiling.relay.median / c.relay.median
    } else {
        0.0
    }
}

pub(super) fn table(r: &Report) -> String {
    let mut out = Vec::new();
    let _ = writeln!(
        out,
        "## Host relay (sealed-host → stand-in enclave on a Unix socket, one keep-alive \
         connection)\n"
    );
    let _ = writeln!(
        out,
        "| payload | runs | round trip p50 ms | p99 ms | stand-in p50 ms | relay MB/s | host CPU \
         µs/req | host ctx sw/req | host RSS warm → end MiB | host HWM warm → end MiB |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in &r.cases {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} → {:.1} | {:.1} → {:.1} |",
            timing_cells(c.bytes, c.runs, &c.round_trip, &c.stand_in, &c.relay),
            c.host_cpu_us_per_request,
            c.host_ctx_switches_per_request,
            mib(c.mem_warm.rss_kb),
            mib(c.mem_end.rss_kb),
            mib(c.mem_warm.hwm_kb),
            mib(c.mem_end.hwm_kb),
        );
    }
    let _ = writeln!(
        out,
        "\nrelay MB/s = payload bytes each way / p50(round trip − stand-in time); target ≥ 1000 \
         MB/s at 16 MiB (issue 6)."
    );

    let _ = writeln!(
        out,
        "\n## Relay ceiling (minimal forwarder instead of sealed-host, no HTTP, same sockets)\n"
    );
    let _ = writeln!(
        out,
        "| payload | runs | round trip p50 ms | p99 ms | stand-in p50 ms | ceiling MB/s | host MB/s \
         | host / ceiling | forwarder CPU µs/req | host CPU µs/req | forwarder ctx sw/req |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in &r.cases {
        let k = &c.ceiling;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.1} |",
            timing_cells(c.bytes, k.runs, &k.round_trip, &k.stand_in, &k.relay),
            mb_per_s(c.bytes, c.relay.median),
            host_to_ceiling(c),
            k.forwarder_cpu_us_per_request,
            c.host_cpu_us_per_request,
            k.forwarder_ctx_switches_per_request,
        );
    }
    let _ = writeln!(
        out,
        "\nceiling: the same client → relay → stand-in topology and the same relay MB/s, with a \
         minimal forwarder (a child process, one thread) in place of sealed-host: the client sends \
         an 8-byte length and the payload over TCP 127.0.0.1 (kernel-default buffers, no Nagle), \
         the forwarder reads it into one reused buffer and sends it as one Infer frame over the \
         Unix socket (4 MiB buffers, as the host asks), then returns the stand-in's answer the \
         same way. It includes every kernel copy of the host's path (TCP in, Unix out, Unix back, \
         TCP out), the same process boundaries and the same stand-in; it leaves out HTTP on both \
         sides (reqwest's client work, hyper's parsing), the host's user-space copy of the body \
         and its per-request allocations, and the host's tasks, limits and metrics. Host and \
         ceiling requests alternate, one each in turn; host / ceiling = host MB/s ÷ ceiling MB/s. \
         The ceiling is a baseline, not a proven bound: a ratio near or above 1 means the host \
         already relays as fast as a forwarder without HTTP or user-space copies, and the rest \
         of the time is the kernel's socket copies and scheduling and this process's own client \
         and stand-in (one thread)."
    );
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn json(r: &Report) -> Value {
    let cases: Vec<Value> = r
        .cases
        .iter()
        .map(|c| {
            json!({
                "payload_bytes": c.bytes,
                "runs": c.runs,
                "round_trip_us": c.round_trip.json(),
                "stand_in_us": c.stand_in.json(),
                "relay_us": c.relay.json(),
                "relay_mb_per_s": round3(mb_per_s(c.bytes, c.relay.median)),
                "host_cpu_us_per_request": round3(c.host_cpu_us_per_request),
                "host_ctx_switches_per_request": round3(c.host_ctx_switches_per_request),
                "host_mem_after_warmup_kb": { "vm_rss": c.mem_warm.rss_kb, "vm_hwm": c.mem_warm.hwm_kb },
                "host_mem_after_run_kb": { "vm_rss": c.mem_end.rss_kb, "vm_hwm": c.mem_end.hwm_kb },
                "ceiling": {
                    "runs": c.ceiling.runs,
                    "round_trip_us": c.ceiling.round_trip.json(),
                    "stand_in_us": c.ceiling.stand_in.json(),
                    "relay_us": c.ceiling.relay.json(),
                    "relay_mb_per_s": round3(mb_per_s(c.bytes, c.ceiling.relay.median)),
                    "forwarder_cpu_us_per_request": round3(c.ceiling.forwarder_cpu_us_per_request),
                    "forwarder_ctx_switches_per_request":
                        round3(c.ceiling.forwarder_ctx_switches_per_request),
                },
                "host_to_ceiling": round3(host_to_ceiling(c)),
            })
        })
        .collect();
    json!({
        "host_binary": r.host_binary.display().to_string(),
        "transport": "unix socket",
        "http": "HTTP/1.1, one keep-alive connection, one request at a time",
        "ceiling": {
            "forwarder": "child process (sealed-bench re-executed), one thread, in place of sealed-host",
            "client_protocol": "8-byte big-endian length + payload over TCP 127.0.0.1, no HTTP",
            "enclave_side": "one Infer frame per message over the same Unix socket and stand-in",
            "user_space_copies_in_forwarder": 0,
            "relay_mb_per_s": "payload bytes each way / p50(round trip - stand-in time), as the host's",
        },
        "cases": cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (sealed ho)st) S 1 4242 4242 0 -1 4194560 2300 0 0 0 157 43 0 0 20 0 \
                    3 0 12345 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(200));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_values_are_read_by_exact_key() {
        let status = "Name:\tsealed-host\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n\
                      voluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_value(status, "VmRSS"), Some(10240));
        assert_eq!(status_value(status, "VmHWM"), Some(20480));
        assert_eq!(status_value(status, "voluntary_ctxt_switches"), Some(17));
        assert_eq!(status_value(status, "nonvoluntary_ctxt_switches"), Some(3));
        assert_eq!(status_value(status, "Vm"), None);
        assert_eq!(status_value(status, "VmSwap"), None);
    }

    #[test]
    fn throughput_and_labels() {
        // 16 MiB in 16.777216 ms is 1000 MB/s.
        assert!((mb_per_s(16 << 20, 16_777.216) - 1000.0).abs() < 1e-9);
        assert_eq!(mb_per_s(1, 0.0), 0.0);
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(16 << 20), "16 MiB");
        let p = payload(5, 9);
        assert_eq!(p.as_slice(), &[9, 1, 2, 3, 9]);
        assert_ne!(payload(5, 1), payload(5, 2));
    }
}
