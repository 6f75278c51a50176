//! End to end, faults: the real enclave and host as processes, the mock KMS in this process with
//! injected faults (`sealed_mock_kms::faults`).
//!
//! - Sealed model loads ride through transient KMS faults (dropped connections, 5xx, throttling,
//!   delays): the enclave's KMS client retries with backoff.
//! - A KMS that keeps failing (5xx, or down: every connection dropped) fails the load clearly with
//!   503 `kms_unavailable` naming the attempts and the last cause; so do a denied key (403) and a
//!   corrupt file (422) in their own way, and every time the model already loaded keeps serving.
//! - The host survives the enclave dying mid-request: the request in flight gets 503
//!   `enclave_unavailable` at once (not the 120 s request timeout), and a new enclave on the
//!   same socket serves again.
//! - The enclave survives host restarts: a new host on the same socket attests the same key and
//!   serves the model the enclave kept.

mod common;
#[path = "support/processes.rs"]
mod processes;

use common::{bin_dir, input, paths};
use processes::{spawn_until, start_enclave};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealed_client::{Client, Policy, Session, npy};
use sealed_sim::assets::Digits;
use sealed_sim::stack::Paths;
use sealed_wire::ErrorCode;
use tokio::process::{Child, Command};

/// The model id the sealed copy of the digits model is loaded under (the plaintext copy is
/// `digits`).
const SEALED_ID: &str = "sealed-digits";

fn policy(root_pem: &Path, pcr0: &[u8; 48]) -> Policy {
    Policy::new()
        .trust_root_pem(&std::fs::read_to_string(root_pem).unwrap())
        .unwrap()
        .expect_pcr(0, pcr0.to_vec())
}

/// Runs the first bundled example through `model_id` and checks the label.
async fn assert_serves(session: &Session, digits: &Digits, model_id: &str) {
    let example = digits.examples.first().unwrap();
    let outputs = session
        .infer(model_id, input(npy::read_file(&example.file).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("inference on {model_id}: {e}"));
    let label = outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(label.tensor.to_i64().unwrap(), example.predicted_labels);
}

fn error_name(body: &serde_json::Value) -> &str {
    body["error"]["name"].as_str().unwrap_or_default()
}

/// A simulated stack with AWS: the plaintext digits model loaded at start, sealed uploads
/// through the admin API.
struct Sim(common::Sim);

impl std::ops::Deref for Sim {
    type Target = common::Sim;
    fn deref(&self) -> &common::Sim {
        &self.0
    }
}

impl Sim {
    async fn start() -> Sim {
        // A short KMS deadline so that persistent faults give up in seconds, not 20 s.
        Sim(common::Sim::start_with_aws(&["--kms-deadline-secs", "8"], &[]).await)
    }

    /// The model ids the enclave attests to, sorted.
    async fn attested_models(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.session().await.models().map(str::to_string).collect();
        ids.sort();
        ids
    }

    /// The plaintext model still serves, and is all the enclave attests to.
    async fn assert_only_plaintext_model_serves(&self) {
        assert_eq!(self.attested_models().await, ["digits"]);
        assert_serves(&self.session().await, &self.digits, "digits").await;
    }

    /// A key whose policy releases data keys to an enclave measuring `pcr0`.
    async fn create_key(&self, pcr0: &[u8; 48]) -> String {
        let kms = self.aws().owner_kms_client().await.unwrap();
        let out = kms
            .create_key()
            .policy(sealed_sim::stack::key_policy(pcr0))
            .send()
            .await
            .unwrap();
        out.key_metadata().unwrap().arn().unwrap().to_string()
    }

    /// Seals the digits model as [`SEALED_ID`] under `key_arn` with the `sealed` CLI.
    async fn seal(&self, key_arn: &str) -> Vec<u8> {
        let out = self.paths.workdir.join(format!("{}.sealed", rand_hex()));
        let output = Command::new(bin_dir().join("sealed"))
            .env_clear()
            .envs(self.aws().owner_env())
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["seal-model", "--model-id", SEALED_ID, "--key-id", key_arn])
            .arg("--model")
            .arg(&self.digits.model)
            .arg("--out")
            .arg(&out)
            .arg("--kms-endpoint")
            .arg(self.aws().kms.endpoint_url())
            .arg("--ca-bundle")
            .arg(&self.aws().kms.ca_file)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "seal-model failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read(&out).unwrap()
    }

    /// A sealed file the enclave may open.
    async fn sealed_model(&self) -> Vec<u8> {
        let key = self.create_key(&self.stack.pcr0).await;
        self.seal(&key).await
    }

    /// POSTs a sealed file to the admin API: (HTTP status, JSON body).
    async fn upload(&self, body: Vec<u8>) -> (u16, serde_json::Value) {
        let admin = self.stack.admin_url.clone().unwrap();
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{admin}/v1/admin/models"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

#[tokio::test]
async fn sealed_loads_ride_through_transient_kms_faults() {
    let sim = Sim::start().await;
    let file = sim.sealed_model().await;
    let faults = sim.aws().kms.faults();
    let before = faults.stats();
    // One of each transient failure, then a slow but good answer: the enclave retries through
    // all of them within its deadline.
    faults
        .set_spec(
            "drop*1@Decrypt,internal*1@Decrypt,unavailable*1@Decrypt,throttle*1@Decrypt,\
             delay:300*1@Decrypt",
        )
        .unwrap();
    let (status, body) = sim.upload(file).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_id"], SEALED_ID);
    assert_eq!(faults.spec(), "", "every fault was used");
    let after = faults.stats();
    assert_eq!(after.faulted - before.faulted, 5);
    // Exactly the five faulted attempts: the delayed one was the one that succeeded.
    assert_eq!(after.requests - before.requests, 5);

    assert_eq!(sim.attested_models().await, ["digits", SEALED_ID]);
    let session = sim.session().await;
    assert_serves(&session, &sim.digits, SEALED_ID).await;
    assert_serves(&session, &sim.digits, "digits").await;
    sim.stop().await;
}

#[tokio::test]
async fn a_kms_that_keeps_failing_fails_the_load_clearly_and_the_loaded_model_keeps_serving() {
    let sim = Sim::start().await;
    let file = sim.sealed_model().await;
    let faults = sim.aws().kms.faults();
    faults.set_spec("unavailable@Decrypt").unwrap();
    let before = faults.stats();
    let (status, body) = sim.upload(file.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_name(&body), "kms_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave up after"), "{message}");
    assert!(message.contains("ServiceUnavailable"), "{message}");
    // Retried, not given up at the first answer.
    assert!(faults.stats().requests - before.requests >= 2);
    sim.assert_only_plaintext_model_serves().await;

    // KMS is back: the same file loads (the failure left no half-loaded state behind).
    faults.clear();
    let (status, body) = sim.upload(file).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.attested_models().await, ["digits", SEALED_ID]);
    assert_serves(&sim.session().await, &sim.digits, SEALED_ID).await;
    sim.stop().await;
}

#[tokio::test]
async fn kms_down_denied_or_corrupt_loads_leave_the_other_model_serving() {
    let sim = Sim::start().await;
    let file = sim.sealed_model().await;

    // A corrupt file: one flipped bit in the last chunk.
    let mut corrupt = file.clone();
    let last = corrupt.len() - 20;
    corrupt[last] ^= 0x01;
    let (status, body) = sim.upload(corrupt).await;
    assert_eq!(
        (status, error_name(&body)),
        (422, "model_corrupt"),
        "{body}"
    );
    sim.assert_only_plaintext_model_serves().await;

    // A key whose policy names another enclave: KMS denies, and no retry changes that.
    let mut other = sim.stack.pcr0;
    other[0] ^= 0x01;
    let denied_key = sim.create_key(&other).await;
    let denied = sim.seal(&denied_key).await;
    let before = sim.aws().kms.faults().stats();
    let (status, body) = sim.upload(denied).await;
    assert_eq!(
        (status, error_name(&body)),
        (403, "model_access_denied"),
        "{body}"
    );
    assert_eq!(
        sim.aws().kms.faults().stats().requests - before.requests,
        1,
        "access denied is not retried"
    );
    sim.assert_only_plaintext_model_serves().await;

    // KMS down: every connection to it closes without an answer.
    sim.aws().kms.faults().set_spec("drop@Decrypt").unwrap();
    let (status, body) = sim.upload(file).await;
    assert_eq!(
        (status, error_name(&body)),
        (503, "kms_unavailable"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave up after"), "{message}");
    sim.assert_only_plaintext_model_serves().await;
    sim.stop().await;
}

/// A host process: its API and metrics URLs.
struct Host {
    child: Child,
    api: String,
    metrics: String,
}

async fn start_host(paths: &Paths, socket: &Path, models: &[(&str, &PathBuf)]) -> Host {
    let mut cmd = Command::new(paths.host());
    cmd.arg("--enclave")
        .arg(format!("unix:{}", socket.display()))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        // Far longer than the test waits: a request that fails must fail because the enclave
        // went away, not because it timed out.
        .args(["--request-timeout-secs", "120"]);
    for (id, path) in models {
        cmd.arg("--load-model")
            .arg(format!("{id}={}", path.display()));
    }
    let (child, api, before) = spawn_until(cmd, "sealed-host listening on ").await;
    let metrics = before
        .iter()
        .find_map(|l| l.strip_prefix("sealed-host metrics listening on "))
        .expect("no metrics line")
        .trim()
        .to_string();
    Host {
        child,
        api,
        metrics,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

impl Host {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http().get(format!("{}/readyz", self.api)).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "host never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = http()
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    }
}

/// Sends a signal with kill(1): the test crate has no libc.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

#[tokio::test]
async fn the_host_survives_the_enclave_dying_mid_request_and_serves_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths(tmp.path());
    sealed_sim::stack::write_mock_ca(&paths).unwrap();
    let digits = Digits::load(&paths.assets).unwrap();
    let socket = paths.socket();
    let pcr0 = sealed_sim::stack::measure(&paths.enclave()).unwrap();
    let policy = policy(&paths.root_pem(), &pcr0);

    let enclave = start_enclave(&paths, &socket).await;
    let enclave_pid = enclave.id().unwrap();
    let mut host = start_host(&paths, &socket, &[("digits", &digits.model)]).await;
    host.wait_ready().await;
    let client = Client::new(&host.api, policy.clone()).unwrap();
    let session = client.attest().await.unwrap();
    assert_serves(&session, &digits, "digits").await;

    // Frozen: the enclave's socket stays open, nothing answers. A request goes in and waits.
    signal(enclave_pid, "STOP");
    let example = digits.examples.first().unwrap().file.clone();
    let in_flight = tokio::spawn(async move {
        let started = Instant::now();
        let result = session
            .infer("digits", input(npy::read_file(&example).unwrap()))
            .await;
        (result, started.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.metric("sealed_host_http_requests_in_flight").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the host"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dies with the request in flight.
    signal(enclave_pid, "KILL");
    let (result, waited) = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("the request in flight hangs after the enclave died")
        .unwrap();
    let err = result.expect_err("a dead enclave cannot answer");
    assert_eq!(err.code(), Some(ErrorCode::EnclaveUnavailable), "{err}");
    assert!(
        matches!(err, sealed_client::ClientError::Host { status: 503, .. }),
        "{err}"
    );
    // The request timeout is 120 s: the answer came from the lost connection, not a timeout.
    println!("in-flight request answered {waited:?} after it was sent");
    let r = http()
        .post(format!("{}/v1/infer", host.api))
        .body(b"any sealed bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the host died too"
    );

    // A new enclave on the same socket: the host reconnects, reloads its model, serves.
    let mut enclave = start_enclave(&paths, &socket).await;
    host.wait_ready().await;
    let session = client.attest().await.unwrap();
    assert_serves(&session, &digits, "digits").await;
    let _ = host.child.kill().await;
    let _ = enclave.kill().await;
}

#[tokio::test]
async fn the_enclave_survives_a_killed_host_and_serves_the_next_one_with_the_same_key() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths(tmp.path());
    sealed_sim::stack::write_mock_ca(&paths).unwrap();
    let digits = Digits::load(&paths.assets).unwrap();
    let socket = paths.socket();
    let pcr0 = sealed_sim::stack::measure(&paths.enclave()).unwrap();
    let policy = policy(&paths.root_pem(), &pcr0);

    let mut enclave = start_enclave(&paths, &socket).await;
    let mut host = start_host(&paths, &socket, &[("digits", &digits.model)]).await;
    host.wait_ready().await;
    let first = Client::new(&host.api, policy.clone())
        .unwrap()
        .attest()
        .await
        .unwrap();
    assert_serves(&first, &digits, "digits").await;

    for _ in 0..2 {
        // kill -9: the host's connections die without a goodbye.
        signal(host.child.id().unwrap(), "KILL");
        let _ = host.child.wait().await;
        assert!(
            enclave.try_wait().unwrap().is_none(),
            "the enclave exited with its host"
        );
        // The enclave keeps the model it was given: the new host loads nothing.
        host = start_host(&paths, &socket, &[]).await;
        host.wait_ready().await;
        let session = Client::new(&host.api, policy.clone())
            .unwrap()
            .attest()
            .await
            .unwrap();
        assert_eq!(
            session.key_config(),
            first.key_config(),
            "the same enclave, the same key"
        );
        assert_eq!(session.models().collect::<Vec<_>>(), ["digits"]);
        assert_serves(&session, &digits, "digits").await;
    }
    let _ = host.child.kill().await;
    let _ = enclave.kill().await;
}
