//! Starts the simulated stack as real child processes: the mock CA on disk, `sealed-enclave`
//! (simulation build, mock NSM, Unix socket) and `sealed-host` (HTTP on loopback). Children are
//! killed when the [`Stack`] is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha384};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a child may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the binaries and the bundled assets are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub bin_dir: PathBuf,
    pub assets: PathBuf,
    pub workdir: PathBuf,
    /// Child log filter when RUST_LOG is not set (`warn` keeps the demo readable).
    pub child_log: String,
}

impl Paths {
    pub fn enclave(&self) -> PathBuf {
        self.bin_dir.join("sealed-enclave")
    }
    pub fn host(&self) -> PathBuf {
        self.bin_dir.join("sealed-host")
    }
    pub fn mock_ca_dir(&self) -> PathBuf {
        self.workdir.join("mock-ca")
    }
    pub fn root_pem(&self) -> PathBuf {
        self.mock_ca_dir().join("root.pem")
    }
    pub fn socket(&self) -> PathBuf {
        self.workdir.join("enclave.sock")
    }
}

/// A model the host loads at start.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub id: String,
    pub path: PathBuf,
}

/// The running stack.
pub struct Stack {
    pub host_url: String,
    /// SHA-384 of the enclave binary: the PCR0 the mock NSM reports.
    pub pcr0: [u8; 48],
    pub root_pem: PathBuf,
    enclave: Child,
    host: Child,
}

impl Stack {
    /// Creates the mock CA, starts the enclave, then the host with `models` loaded.
    pub async fn start(paths: &Paths, models: &[ModelFile]) -> Result<Stack> {
        for bin in [paths.enclave(), paths.host()] {
            if !bin.is_file() {
                bail!(
                    "{} not found: build with `cargo build --workspace --all-targets --features sealed-enclave/simulation`",
                    bin.display()
                );
            }
        }
        std::fs::create_dir_all(&paths.workdir)
            .with_context(|| format!("creating {}", paths.workdir.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("system clock before 1970")?
            .as_secs();
        let ca = sealed_mock_ca::MockCa::generate(now).context("generating the mock CA")?;
        ca.write_dir(&paths.mock_ca_dir())
            .context("writing the mock CA")?;

        let image = std::fs::read(paths.enclave())
            .with_context(|| format!("reading {}", paths.enclave().display()))?;
        let pcr0: [u8; 48] = Sha384::digest(&image).into();

        let mut enclave = Command::new(paths.enclave());
        enclave
            .arg("--listen")
            .arg(format!("unix:{}", paths.socket().display()))
            .arg("--mock-ca-dir")
            .arg(paths.mock_ca_dir());
        let (enclave, _) =
            spawn_and_wait(enclave, &paths.child_log, "sealed-enclave listening on ")
                .await
                .context("starting sealed-enclave (is it a simulation build?)")?;

        let mut host = Command::new(paths.host());
        host.arg("--enclave")
            .arg(format!("unix:{}", paths.socket().display()))
            .arg("--listen")
            .arg("127.0.0.1:0");
        for m in models {
            host.arg("--load-model")
                .arg(format!("{}={}", m.id, m.path.display()));
        }
        let (host, rest) = spawn_and_wait(host, &paths.child_log, "sealed-host listening on ")
            .await
            .context("starting sealed-host")?;
        let host_url = rest.trim().to_string();
        Ok(Stack {
            host_url,
            pcr0,
            root_pem: paths.root_pem(),
            enclave,
            host,
        })
    }

    /// Stops both children (the host first, so it stops sending).
    pub async fn stop(mut self) {
        let _ = self.host.kill().await;
        let _ = self.enclave.kill().await;
    }

    /// Resolves when either child exits on its own.
    pub async fn wait_any_exit(&mut self) -> String {
        tokio::select! {
            s = self.enclave.wait() => format!("sealed-enclave exited: {s:?}"),
            s = self.host.wait() => format!("sealed-host exited: {s:?}"),
        }
    }
}

/// Spawns a child whose stdout is read until a line starting with `ready_prefix`; returns the
/// rest of that line. Its stderr (logs) is inherited so the user sees them; the rest of its stdout
/// is forwarded too.
async fn spawn_and_wait(
    mut cmd: Command,
    child_log: &str,
    ready_prefix: &str,
) -> Result<(Child, String)> {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", child_log);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(ready_prefix) {
                return Ok::<_, std::io::Error>(Some(rest.to_string()));
            }
            println!("{line}");
        }
        Ok(None)
    })
    .await;
    let rest = match found {
        Ok(Ok(Some(rest))) => rest,
        Ok(Ok(None)) => {
            let status = child.wait().await.ok();
            bail!("exited before it was ready ({status:?})")
        }
        Ok(Err(e)) => bail!("reading its output: {e}"),
        Err(_) => bail!("not ready after {START_TIMEOUT:?}"),
    };
    // Keep forwarding stdout so the child never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
    });
    Ok((child, rest))
}

/// The directory of the running executable (where cargo puts the sibling binaries).
pub fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating sealed-sim")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("sealed-sim has no parent directory"))
}
