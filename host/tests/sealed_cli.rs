//! The `sealed-host` binary with the sealed-model flags, as a launcher starts it: KMS proxy on a
//! Unix socket, credentials from a mock IMDS, `--models-dir`, and the admin listener.

mod common;

#[path = "../../sim/src/imds.rs"]
#[allow(dead_code)]
mod imds;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeEnclave, UploadEvent, Uploads, model_bytes, seal_model, sealed_handler};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const LISTENING: &str = "sealed-host listening on http://";
const ADMIN: &str = "sealed-host admin listening on http://";

fn host(enclave: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sealed-host"))
        .args(["--enclave", enclave, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn lines_until_listening(child: &mut Child) -> Vec<String> {
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
        panic!("stdout closed before the listening line: {seen:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("no listening line within 30 s");
    seen
}

async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn runs_the_whole_sealed_model_path() {
    let uploads = Arc::new(Uploads::default());
    let fake = FakeEnclave::start(sealed_handler(uploads.clone())).await;

    let imds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds_url = format!("http://{}", imds_listener.local_addr().unwrap());
    let imds_config = imds::ImdsConfig::new("ASIAMOCKHOSTROLE0001", "mock/secret", "mock-token");
    let stats = imds_config.stats.clone();
    let _imds = tokio::spawn(imds::serve(imds_listener, imds_config));

    let kms_port = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let allowlist = dir.path().join("vsock-proxy.yaml");
    std::fs::write(
        &allowlist,
        format!("allowlist:\n- {{address: 127.0.0.1, port: {kms_port}}}\n"),
    )
    .unwrap();
    let kms_sock = dir.path().join("kms.sock");
    let proxy = format!("unix:{}=127.0.0.1:{kms_port}", kms_sock.display());
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    std::fs::write(
        models.join("alpha.sealed"),
        seal_model("alpha", &model_bytes(100_000), 4096, b"blob"),
    )
    .unwrap();

    let mut child = host(
        &fake.endpoint.to_string(),
        &[
            "--kms-proxy",
            &proxy,
            "--proxy-allowlist",
            allowlist.to_str().unwrap(),
            "--aws-credentials",
            "imds",
            "--imds-endpoint",
            &imds_url,
            "--models-dir",
            models.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let lines = lines_until_listening(&mut child).await;
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("sealed-host kms-proxy {proxy}")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sealed-host loaded sealed model alpha sha384=")),
        "{lines:?}"
    );
    let admin = lines
        .iter()
        .find_map(|l| l.strip_prefix(ADMIN))
        .expect("admin line")
        .to_string();
    assert_eq!(stats.credentials_served(), 1);

    // The proxy forwards.
    let mut kms = tokio::net::UnixStream::connect(&kms_sock).await.unwrap();
    kms.write_all(b"\x16\x03\x01 client hello").await.unwrap();
    let mut back = [0u8; 16];
    kms.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"\x16\x03\x01 client hello");

    // The admin API loads another model with the cached credentials.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("http://{admin}/v1/admin/models"))
        .header("content-type", "application/octet-stream")
        .body(seal_model("beta", &model_bytes(50_000), 4096, b"blob"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["model_id"], "beta");
    let ends = uploads
        .events()
        .iter()
        .filter(|e| matches!(e, UploadEvent::End { .. }))
        .count();
    assert_eq!(ends, 2);
    assert_eq!(stats.credentials_served(), 1);

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

async fn startup_error(child: &mut Child) -> String {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("host did not exit")
        .unwrap();
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr.lines().last().unwrap_or_default().to_string()
}

#[tokio::test]
async fn refuses_to_start_a_proxy_to_a_remote_off_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let allowlist = dir.path().join("vsock-proxy.yaml");
    std::fs::write(&allowlist, include_str!("data/vsock-proxy.yaml")).unwrap();
    let proxy = format!(
        "unix:{}=127.0.0.1:4443",
        dir.path().join("kms.sock").display()
    );
    let enclave = format!("unix:{}", dir.path().join("absent.sock").display());
    let mut child = host(
        &enclave,
        &[
            "--kms-proxy",
            &proxy,
            "--proxy-allowlist",
            allowlist.to_str().unwrap(),
        ],
    );
    let last = startup_error(&mut child).await;
    assert!(
        last.contains("127.0.0.1:4443 is not in the proxy allowlist"),
        "{last}"
    );
    assert!(!dir.path().join("kms.sock").exists(), "nothing may listen");
}

#[tokio::test]
async fn a_models_dir_needs_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let enclave = format!("unix:{}", dir.path().join("absent.sock").display());
    let mut child = host(&enclave, &["--models-dir", dir.path().to_str().unwrap()]);
    let last = startup_error(&mut child).await;
    assert!(last.contains("--aws-credentials"), "{last}");
}
