//! The `sealed-host` binary's operations surface against a fake enclave: `/livez`, `/readyz`,
//! `/metrics`, JSON logs, supervision (lost enclave → fail fast, back → reload the startup models)
//! and the graceful drain on SIGTERM.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Action, FakeEnclave, Handler, canned, health_status, model_info};
use sealed_transport::Endpoint;
use sealed_wire::{EnclaveRequest, EnclaveResponse};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const LISTENING: &str = "sealed-host listening on http://";
const METRICS: &str = "sealed-host metrics listening on http://";

struct Running {
    child: Child,
    api: String,
    metrics: String,
    client: reqwest::Client,
}

impl Running {
    async fn start(endpoint: &Endpoint, extra: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealed-host"))
            .args([
                "--enclave",
                &endpoint.to_string(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut metrics = None;
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix(METRICS) {
                    metrics = Some(addr.to_string());
                }
                if let Some(addr) = line.strip_prefix(LISTENING) {
                    return addr.to_string();
                }
            }
            panic!("stdout closed before the listening line");
        };
        let api = tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("no listening line within 20 s");
        let metrics = metrics.expect("no metrics line before the listening line");
        // Keep draining stdout so that the host never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Running {
            child,
            api,
            metrics,
            client,
        }
    }

    async fn get(&self, base: &str, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("http://{base}{path}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn readyz(&self) -> (u16, serde_json::Value) {
        let (status, body) = self.get(&self.api, "/readyz").await;
        (status, serde_json::from_str(&body).unwrap())
    }

    /// Polls `/readyz` until it answers `status`; returns the body.
    async fn wait_ready_status(&self, status: u16) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (got, body) = self.readyz().await;
            if got == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz stayed {got} {body}, want {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of an unlabelled metric sample.
    async fn metric(&self, name: &str) -> f64 {
        let (status, text) = self.get(&self.metrics, "/metrics").await;
        assert_eq!(status, 200);
        sample(&text, name).unwrap_or_else(|| panic!("{name} not in {text}"))
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    async fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("host did not exit within 20 s")
            .unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        (status, stderr)
    }
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A fake enclave that serves the models loaded into it (a fresh one has none).
fn stateful_enclave(loads: Arc<Mutex<Vec<String>>>, hung: Arc<AtomicBool>) -> Handler {
    let models: Arc<Mutex<HashSet<String>>> = Arc::default();
    Arc::new(move |request| {
        if hung.load(Ordering::SeqCst) {
            return Action::Ignore;
        }
        match request {
            EnclaveRequest::Health => {
                let mut h = health_status(true);
                let mut ids: Vec<String> = models.lock().unwrap().iter().cloned().collect();
                ids.sort();
                h.models = ids.iter().map(|id| model_info(id)).collect();
                Action::Reply(EnclaveResponse::Health(h))
            }
            EnclaveRequest::LoadModel { model_id, .. } => {
                loads.lock().unwrap().push(model_id.clone());
                models.lock().unwrap().insert(model_id.clone());
                Action::Reply(EnclaveResponse::ModelLoaded(model_info(&model_id)))
            }
            other => canned(other),
        }
    })
}

#[tokio::test]
async fn a_lost_enclave_fails_requests_fast_and_its_return_reloads_the_startup_models() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(dir.path().join("enclave.sock"));
    let model = dir.path().join("mlp.onnx");
    std::fs::write(&model, b"fake onnx bytes").unwrap();
    let loads = Arc::new(Mutex::new(Vec::new()));
    let hung = Arc::new(AtomicBool::new(false));
    let first = FakeEnclave::start_at(
        stateful_enclave(loads.clone(), hung.clone()),
        endpoint.clone(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let host = Running::start(
        &endpoint,
        &[
            "--load-model",
            &format!("mlp={}", model.display()),
            "--request-timeout-secs",
            "60",
        ],
    )
    .await;

    // Up: ready on both listeners, live, metrics say so.
    let body = host.wait_ready_status(200).await;
    assert_eq!(body["status"], "ready");
    let (status, _) = host.get(&host.metrics, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(host.get(&host.api, "/livez").await.0, 200);
    assert_eq!(host.get(&host.metrics, "/livez").await.0, 200);
    assert_eq!(host.metric("sealed_host_enclave_up").await, 1.0);
    assert_eq!(host.metric("sealed_host_models_loaded").await, 1.0);
    assert_eq!(host.metric("sealed_host_enclave_connections_up").await, 4.0);
    assert_eq!(*loads.lock().unwrap(), ["mlp"]);
    // /metrics is not on the client API.
    assert_eq!(host.get(&host.api, "/metrics").await.0, 404);

    // The enclave dies: not ready, and requests fail at once (well within the client's 10 s
    // timeout, against a 60 s request timeout) with 503 enclave_unavailable.
    drop(first);
    let body = host.wait_ready_status(503).await;
    assert_eq!(body["reason"], "enclave_unavailable", "{body}");
    let r = host
        .client
        .post(format!("http://{}/v1/infer", host.api))
        .body(b"sealed".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["name"], "enclave_unavailable", "{v}");
    assert_eq!(host.get(&host.api, "/v1/health").await.0, 503);
    assert_eq!(
        host.get(&host.api, "/livez").await.0,
        200,
        "alive while down"
    );
    assert_eq!(host.metric("sealed_host_enclave_up").await, 0.0);
    let (_, text) = host.get(&host.metrics, "/metrics").await;
    assert!(
        text.contains("sealed_host_errors_total{code=\"enclave_unavailable\"} 1"),
        "{text}"
    );

    // A new enclave on the same socket: reconnect, reload `mlp`, ready again.
    let second = FakeEnclave::start_at(
        stateful_enclave(loads.clone(), hung.clone()),
        endpoint.clone(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    host.wait_ready_status(200).await;
    assert_eq!(*loads.lock().unwrap(), ["mlp", "mlp"], "reloaded once");
    assert_eq!(host.metric("sealed_host_enclave_restarts_total").await, 1.0);
    assert_eq!(host.metric("sealed_host_enclave_up").await, 1.0);
    let r = host
        .client
        .post(format!("http://{}/v1/infer", host.api))
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"cba");

    // A hung enclave (connections up, no answers): the probe times out, and requests fail fast.
    hung.store(true, Ordering::SeqCst);
    let body = host.wait_ready_status(503).await;
    assert_eq!(body["reason"], "enclave_unavailable", "{body}");
    let r = host
        .client
        .post(format!("http://{}/v1/infer", host.api))
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "failed fast, not after the 60 s timeout");
    hung.store(false, Ordering::SeqCst);
    host.wait_ready_status(200).await;
    assert_eq!(
        *loads.lock().unwrap(),
        ["mlp", "mlp"],
        "the same enclave kept its models"
    );

    host.sigterm();
    let (status, stderr) = host.wait_exit().await;
    drop(second);
    assert!(status.success(), "exit {status}: {stderr}");
    // JSON logs, one object per line; each loss is reported once at error level; no raw paths.
    let mut lost = 0;
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["level"] == "ERROR" && v["message"].as_str().unwrap().starts_with("enclave lost") {
            lost += 1;
        }
        assert!(v.get("path").is_none(), "{line}");
    }
    assert_eq!(lost, 2, "{stderr}");
}

#[tokio::test]
async fn a_probe_answered_during_the_startup_load_does_not_load_the_model_again() {
    // The enclave answers health probes late, with the models it had when the probe arrived: the
    // supervisor's first probe goes out as the startup load starts and comes back after it ended,
    // saying `mlp` is missing. That answer predates the load; it must not start a second one.
    let loads = Arc::new(Mutex::new(Vec::new()));
    let models = Arc::new(Mutex::new(HashSet::new()));
    let fake = FakeEnclave::start(Arc::new({
        let loads = loads.clone();
        move |request| match request {
            EnclaveRequest::Health => {
                let mut h = health_status(true);
                let mut ids: Vec<String> = models.lock().unwrap().iter().cloned().collect();
                ids.sort();
                h.models = ids.iter().map(|id| model_info(id)).collect();
                Action::ReplyAfter(Duration::from_millis(800), EnclaveResponse::Health(h))
            }
            EnclaveRequest::LoadModel { model_id, .. } => {
                loads.lock().unwrap().push(model_id.clone());
                models.lock().unwrap().insert(model_id.clone());
                Action::Reply(EnclaveResponse::ModelLoaded(model_info(&model_id)))
            }
            other => canned(other),
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.onnx");
    std::fs::write(&model, b"fake onnx bytes").unwrap();
    let host = Running::start(
        &fake.endpoint,
        &["--load-model", &format!("mlp={}", model.display())],
    )
    .await;
    // Ready takes a probe sent after the load; the supervisor probes one at a time, so by then
    // every earlier probe has been answered.
    host.wait_ready_status(200).await;
    assert_eq!(*loads.lock().unwrap(), ["mlp"], "loaded once");
    host.sigterm();
    let (status, stderr) = host.wait_exit().await;
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(!stderr.contains("reloaded model"), "{stderr}");
}

#[tokio::test]
async fn sigterm_turns_readiness_off_and_drains_in_flight_requests() {
    let slow = Arc::new(AtomicBool::new(true));
    let fake = FakeEnclave::start(Arc::new({
        let slow = slow.clone();
        move |request| match request {
            EnclaveRequest::Infer { sealed } if slow.load(Ordering::SeqCst) => Action::ReplyAfter(
                Duration::from_millis(1500),
                EnclaveResponse::Infer { sealed },
            ),
            other => canned(other),
        }
    }))
    .await;
    let host = Running::start(&fake.endpoint, &["--shutdown-grace-secs", "20"]).await;
    host.wait_ready_status(200).await;

    let url = format!("http://{}/v1/infer", host.api);
    let client = host.client.clone();
    let in_flight = tokio::spawn(async move {
        let r = client
            .post(url)
            .body(b"drain".to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    });
    // Wait until the host has the request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.metric("sealed_host_http_requests_in_flight").await < 1.0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.sigterm();
    // The metrics listener stays up during the drain and says why the host is not ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = host.get(&host.metrics, "/readyz").await;
        if status == 503 {
            break serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(body["reason"], "shutting_down");
    let (status, bytes) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request finished");
    assert_eq!(bytes.as_ref(), b"drain");
    let (exit, stderr) = host.wait_exit().await;
    assert!(exit.success(), "exit {exit}: {stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
    assert!(!stderr.contains("grace expired"), "{stderr}");
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    let fake = FakeEnclave::start(Arc::new(|request| match request {
        EnclaveRequest::Infer { .. } => Action::Ignore,
        other => canned(other),
    }))
    .await;
    let host = Running::start(
        &fake.endpoint,
        &[
            "--shutdown-grace-secs",
            "1",
            "--request-timeout-secs",
            "300",
        ],
    )
    .await;
    host.wait_ready_status(200).await;
    let url = format!("http://{}/v1/infer", host.api);
    let client = host.client.clone();
    let stuck = tokio::spawn(async move { client.post(url).body(b"x".to_vec()).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.metric("sealed_host_http_requests_in_flight").await < 1.0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.sigterm();
    // The host exits although the enclave never answers (the request timeout is 300 s).
    let (exit, stderr) = host.wait_exit().await;
    assert!(exit.success(), "exit {exit}: {stderr}");
    assert!(stderr.contains("grace expired"), "{stderr}");
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request was cut off"
    );
}

#[tokio::test]
async fn readiness_says_starting_until_the_startup_models_are_loaded() {
    // The enclave takes its time to load the startup model.
    let fake = FakeEnclave::start(Arc::new(|request| match request {
        EnclaveRequest::LoadModel { model_id, .. } => Action::ReplyAfter(
            Duration::from_millis(1500),
            EnclaveResponse::ModelLoaded(model_info(&model_id)),
        ),
        other => canned(other),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.onnx");
    std::fs::write(&model, b"fake onnx bytes").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealed-host"))
        .args(["--enclave", &fake.endpoint.to_string()])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--load-model", &format!("mlp={}", model.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let metrics = first.strip_prefix(METRICS).expect(&first).to_string();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!("http://{metrics}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "starting", "{v}");
    // Then the model loads, the API listens, and the host turns ready.
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with(LISTENING) {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .get(format!("http://{metrics}/readyz"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reads_the_configuration_file_and_environment() {
    let fake = FakeEnclave::canned().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "enclave = \"{}\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n",
            fake.endpoint
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealed-host"))
        .env("SEALED_HOST_CONFIG", &config)
        .env("SEALED_HOST_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.starts_with(LISTENING);
            seen.push(line);
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap();
    assert!(seen[0].starts_with(METRICS), "{seen:?}");
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    child.wait().await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let first = stderr.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(v["level"], "INFO", "{first}");

    // An unknown key stops the host before it does anything.
    std::fs::write(&config, "enclave = \"unix:/e\"\nlisten_port = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealed-host"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("unknown key \"listen_port\""), "{stderr}");
}

/// The shipped unit file: starts the host with the shipped configuration path, after the
/// allocator, restarts on failure, runs unprivileged and hardened, and gives the drain time.
#[test]
fn the_systemd_unit_runs_the_host_hardened() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let unit = std::fs::read_to_string(format!("{root}/deploy/host/sealed-host.service")).unwrap();
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        value("ExecStart"),
        ["/usr/local/bin/sealed-host --config /etc/sealed-inference/host.toml"]
    );
    assert!(value("After")[0].contains("nitro-enclaves-allocator.service"));
    assert_eq!(value("Restart"), ["on-failure"]);
    assert_eq!(value("KillSignal"), ["SIGTERM"]);
    for (key, want) in [
        ("User", "sealed-host"),
        ("Group", "sealed-host"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(value(key), [want], "{key}");
    }
    assert!(value("CapabilityBoundingSet") == [""], "no capabilities");
    assert!(value("RestrictAddressFamilies")[0].contains("AF_VSOCK"));
    // systemd must wait longer than the host's own drain before it kills.
    let stop: u64 = value("TimeoutStopSec")[0].parse().unwrap();
    let config = std::fs::read_to_string(format!("{root}/deploy/host/host.toml")).unwrap();
    let grace: u64 = config
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_grace_secs = "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stop > grace,
        "TimeoutStopSec {stop} <= shutdown_grace_secs {grace}"
    );
}
