//! End to end, enclave supervision: the real simulation enclave and host as processes. The enclave
//! is killed (SIGKILL): the host reports it (`/readyz` 503, `sealed_host_enclave_up` 0) and fails
//! requests at once with 503 `enclave_unavailable`; a new enclave on the same socket: the host
//! reconnects, reloads its `--load-model` model and is ready again, and a client that attests the
//! new enclave (new HPKE key) gets verified inference.

mod common;
#[path = "support/processes.rs"]
mod processes;

use common::input;
use processes::{spawn_until, start_enclave};
use std::time::{Duration, Instant};

use sealed_client::{Client, Policy, npy};
use sealed_sim::assets::Digits;
use tokio::process::Command;

struct Probe {
    client: reqwest::Client,
    api: String,
    metrics: String,
}

impl Probe {
    async fn get(&self, url: String) -> (u16, String) {
        let r = self.client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn readyz(&self) -> (u16, serde_json::Value) {
        let (status, body) = self.get(format!("{}/readyz", self.api)).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    async fn wait_ready_status(&self, want: u16) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.readyz().await;
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "/readyz stayed {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let (status, text) = self.get(format!("{}/metrics", self.metrics)).await;
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    }
}

#[tokio::test]
async fn the_host_reports_a_killed_enclave_fails_fast_and_recovers_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = common::paths(tmp.path());
    sealed_sim::stack::write_mock_ca(&paths).unwrap();
    let digits = Digits::load(&paths.assets).unwrap();
    let socket = paths.socket();
    let pcr0 = sealed_sim::stack::measure(&paths.enclave()).unwrap();
    let policy = Policy::new()
        .trust_root_pem(&std::fs::read_to_string(paths.root_pem()).unwrap())
        .unwrap()
        .expect_pcr(0, pcr0.to_vec());
    let example = digits.examples.first().unwrap();
    let tensor = npy::read_file(&example.file).unwrap();

    let mut enclave = start_enclave(&paths, &socket).await;
    let mut host_cmd = Command::new(paths.host());
    host_cmd
        .arg("--enclave")
        .arg(format!("unix:{}", socket.display()))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        // Far longer than the test waits: a request that fails must fail fast, not time out.
        .args(["--request-timeout-secs", "120"])
        .arg("--load-model")
        .arg(format!("digits={}", digits.model.display()));
    let (mut host, api, before) = spawn_until(host_cmd, "sealed-host listening on ").await;
    let metrics = before
        .iter()
        .find_map(|l| l.strip_prefix("sealed-host metrics listening on "))
        .expect("no metrics line")
        .to_string();
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("sealed-host loaded model digits sha384=")),
        "{before:?}"
    );
    let probe = Probe {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        api: api.clone(),
        metrics,
    };
    probe.wait_ready_status(200).await;
    assert_eq!(probe.metric("sealed_host_enclave_up").await, 1.0);
    assert_eq!(probe.metric("sealed_host_models_loaded").await, 1.0);

    let client = Client::new(&api, policy.clone()).unwrap();
    let old_session = client.attest().await.unwrap();
    let outputs = old_session
        .infer("digits", input(tensor.clone()))
        .await
        .unwrap();
    assert!(outputs.iter().any(|o| o.name == "label"));

    // SIGKILL: no goodbye from the enclave.
    enclave.kill().await.unwrap();
    let body = probe.wait_ready_status(503).await;
    assert_eq!(body["reason"], "enclave_unavailable", "{body}");
    assert_eq!(probe.metric("sealed_host_enclave_up").await, 0.0);
    assert_eq!(
        probe.metric("sealed_host_enclave_connections_up").await,
        0.0
    );
    // Fails at once with the stable code (the probe client gives up after 20 s; the host's
    // request timeout is 120 s).
    let r = probe
        .client
        .post(format!("{api}/v1/infer"))
        .body(b"any sealed bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["name"], "enclave_unavailable", "{v}");
    assert_eq!(probe.get(format!("{api}/v1/health")).await.0, 503);
    assert!(
        old_session
            .infer("digits", input(tensor.clone()))
            .await
            .is_err()
    );

    // A new enclave process on the same socket.
    let mut enclave = start_enclave(&paths, &socket).await;
    probe.wait_ready_status(200).await;
    assert_eq!(probe.metric("sealed_host_enclave_up").await, 1.0);
    assert_eq!(
        probe.metric("sealed_host_enclave_restarts_total").await,
        1.0
    );
    assert_eq!(probe.metric("sealed_host_models_loaded").await, 1.0);

    // The old session's key died with the old enclave; a new attestation gets the new key, and
    // the reloaded model serves verified inference.
    let session = client.attest().await.unwrap();
    assert_ne!(
        session.key_config(),
        old_session.key_config(),
        "a new enclave has a new HPKE key"
    );
    assert_eq!(session.models().collect::<Vec<_>>(), ["digits"]);
    assert_eq!(
        hex::encode(&session.manifest().models[0].sha384),
        digits.model_sha384
    );
    // A session attested before the restart sealed to a key that died with the old enclave. The
    // new enclave cannot open the request (`unsupported_key_config` for an unknown key id, or
    // `sealed_request_invalid` if its random first id happens to match), so nothing ran: the SDK
    // attests again by itself, seals anew and gets a verified answer under the new key.
    let outputs = old_session
        .infer("digits", input(tensor.clone()))
        .await
        .unwrap();
    let label = outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(label.tensor.to_i64().unwrap(), example.predicted_labels);
    assert_eq!(
        old_session.current().key_config(),
        session.current().key_config(),
        "the old session now holds the new enclave's key"
    );
    let outputs = session.infer("digits", input(tensor)).await.unwrap();
    let label = outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(label.tensor.to_i64().unwrap(), example.predicted_labels);

    let _ = host.kill().await;
    let _ = enclave.kill().await;
}
