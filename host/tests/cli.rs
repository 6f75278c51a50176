//! The `sealed-host` binary, started the way a launcher starts it: against a fake enclave, with
//! `--listen 127.0.0.1:0`, reading the bound address from stdout.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Action, FakeEnclave, canned};
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const LISTENING: &str = "sealed-host listening on http://";

fn host_command(fake_endpoint: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealed-host"));
    cmd.args(["--enclave", fake_endpoint, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads stdout lines until the listening line; returns the lines before it and the address.
async fn wait_listening(stdout: ChildStdout) -> (Vec<String>, String) {
    let mut lines = BufReader::new(stdout).lines();
    let mut before = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix(LISTENING) {
                return addr.to_string();
            }
            before.push(line);
        }
        panic!("stdout closed before the listening line");
    };
    let addr = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("no listening line within 20 s");
    (before, addr)
}

async fn wait_exit(child: &mut Child) -> (std::process::ExitStatus, String) {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("host did not exit within 20 s")
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    (status, stderr)
}

#[tokio::test]
async fn prints_its_address_serves_and_stops_on_sigterm() {
    let fake = FakeEnclave::canned().await;
    let mut child = host_command(&fake.endpoint.to_string(), &[])
        .spawn()
        .unwrap();
    let (_, addr) = wait_listening(child.stdout.take().unwrap()).await;

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        let r = client
            .get(format!("http://{addr}/v1/health"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            healthy = true;
            break;
        }
        // The pool may still be connecting.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "host never became healthy");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, stderr) = wait_exit(&mut child).await;
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[tokio::test]
async fn loads_models_before_listening() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeEnclave::start(Arc::new({
        let seen = seen.clone();
        move |req| {
            if let EnclaveRequest::LoadModel { model_id, onnx } = &req {
                seen.lock().unwrap().push((model_id.clone(), onnx.clone()));
            }
            canned(req)
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.onnx");
    std::fs::write(&path, b"fake onnx bytes").unwrap();
    let spec = format!("mlp={}", path.display());
    let mut child = host_command(&fake.endpoint.to_string(), &["--load-model", &spec])
        .spawn()
        .unwrap();
    let (before, _) = wait_listening(child.stdout.take().unwrap()).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("mlp".to_string(), b"fake onnx bytes".to_vec())]
    );
    let want = format!("sealed-host loaded model mlp sha384={}", "ab".repeat(48));
    assert!(before.contains(&want), "{before:?}");
}

#[tokio::test]
async fn fails_startup_when_the_enclave_refuses_a_model() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::LoadModel { .. } => Action::Reply(EnclaveResponse::error(
            ErrorCode::PlaintextModelsDisabled,
            "plaintext models are disabled in production builds",
        )),
        other => canned(other),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.onnx");
    std::fs::write(&path, b"fake onnx bytes").unwrap();
    let spec = format!("mlp={}", path.display());
    let mut child = host_command(&fake.endpoint.to_string(), &["--load-model", &spec])
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    let (status, stderr) = wait_exit(&mut child).await;
    assert!(!status.success());
    assert!(!stdout.contains(LISTENING), "{stdout}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("sealed-host: "), "{stderr}");
    assert!(last.contains("plaintext_models_disabled"), "{last}");
    assert!(last.contains("\"mlp\""), "{last}");
}

#[tokio::test]
async fn fails_startup_on_a_missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix:{}", dir.path().join("absent.sock").display());
    let missing = format!("mlp={}", dir.path().join("missing.onnx").display());
    let mut child = host_command(&endpoint, &["--load-model", &missing])
        .spawn()
        .unwrap();
    let (status, stderr) = wait_exit(&mut child).await;
    assert!(!status.success());
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("sealed-host: "), "{stderr}");
    assert!(last.contains("cannot read model file"), "{stderr}");
    // The path is checked before any connection attempt.
    assert!(
        !stderr.contains("cannot connect to the enclave"),
        "{stderr}"
    );
}

#[tokio::test]
async fn rejects_an_invalid_endpoint_on_the_command_line() {
    let mut child = host_command("tcp:127.0.0.1:1", &[]).spawn().unwrap();
    let (status, stderr) = wait_exit(&mut child).await;
    assert!(!status.success());
    assert!(stderr.contains("--enclave"), "{stderr}");
}

#[tokio::test]
async fn check_config_validates_the_http_limits() {
    let mut ok = host_command(
        "unix:/nonexistent/enclave.sock",
        &[
            "--check-config",
            "--max-connections",
            "10",
            "--http-header-timeout-secs",
            "2",
        ],
    )
    .spawn()
    .unwrap();
    let mut stdout = String::new();
    ok.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    let (status, stderr) = wait_exit(&mut ok).await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("max_connections: 10"), "{stdout}");
    // The per-client bound left at its default (64) follows the smaller total.
    assert!(
        stdout.contains("max_connections_per_client: 10"),
        "{stdout}"
    );
    assert!(stdout.contains("header_timeout: 2s"), "{stdout}");

    let mut bad = host_command(
        "unix:/nonexistent/enclave.sock",
        &[
            "--check-config",
            "--max-in-flight",
            "4",
            "--max-in-flight-per-client",
            "5",
        ],
    )
    .spawn()
    .unwrap();
    let (status, stderr) = wait_exit(&mut bad).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("max_in_flight_per_client (5) is larger than max_in_flight (4)"),
        "{stderr}"
    );
}
