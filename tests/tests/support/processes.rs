//! Starting the real binaries by hand, for tests that kill and restart them one at a time
//! (`faults.rs`, `supervision.rs`); the `Stack` in `sealed-sim` starts a pair at once.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sealed_sim::stack::Paths;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts a child and reads its stdout until a line starting with `prefix`; returns the child,
/// the rest of that line and the lines before it. Stdout keeps being drained afterwards.
pub async fn spawn_until(mut cmd: Command, prefix: &str) -> (Child, String, Vec<String>) {
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
            before.push(line);
        }
        panic!("stdout closed before {prefix:?}");
    };
    let rest = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("no {prefix:?} within 60 s"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, rest, before)
}

/// Starts a simulation enclave listening on `socket`.
pub async fn start_enclave(paths: &Paths, socket: &Path) -> Child {
    let mut cmd = Command::new(paths.enclave());
    cmd.arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--mock-ca-dir")
        .arg(paths.mock_ca_dir());
    spawn_until(cmd, "sealed-enclave listening on ").await.0
}
