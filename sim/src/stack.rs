//! Starts the simulated stack: the mock CA on disk; optionally the simulated AWS around it
//! ([`SimAws`]: the mock KMS over HTTPS and a mock IMDSv2, both in this process on 127.0.0.1);
//! and `sealed-enclave` (simulation build, mock NSM, Unix socket) with `sealed-host` (HTTP on
//! loopback) as real child processes. With [`SimAws`], the host runs the KMS proxy (a Unix socket
//! the enclave dials, forwarded to the mock KMS), takes instance credentials from the mock IMDS and
//! serves the admin API for sealed models. Children are killed when the [`Stack`] is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

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
    pub fn kms_state(&self) -> PathBuf {
        self.workdir.join("mock-kms").join("state.json")
    }
    pub fn kms_tls_dir(&self) -> PathBuf {
        self.workdir.join("mock-kms").join("tls")
    }
    pub fn allowlist(&self) -> PathBuf {
        self.workdir.join("vsock-proxy.yaml")
    }
}

/// The model owner's principal in the simulated account (seals models, administers the key).
pub const OWNER_ARN: &str = "arn:aws:iam::111122223333:role/model-owner";
/// The instance role of the simulated EC2 host (the mock IMDS hands out its credentials).
pub const HOST_ROLE_ARN: &str = "arn:aws:iam::111122223333:role/sealed-host-role";
const OWNER_ACCESS_KEY_ID: &str = "AKIASIMMODELOWNER001";
const HOST_ACCESS_KEY_ID: &str = "ASIASIMHOSTROLE00001";

/// The simulated AWS side: mock KMS and mock IMDS, running in this process on 127.0.0.1.
pub struct SimAws {
    pub kms: sealed_mock_kms::MockKmsHandle,
    /// `http://127.0.0.1:PORT` of the mock IMDSv2.
    pub imds_url: String,
    /// The vsock-proxy allowlist naming the mock KMS.
    pub allowlist: PathBuf,
    owner_secret: String,
    imds: tokio::task::JoinHandle<()>,
}

impl SimAws {
    /// Starts the mock KMS (state and TLS material under the work directory, so keys survive a
    /// restart with the same `--workdir`) trusting `paths.root_pem()` for attestation, and the
    /// mock IMDS. Secrets are random per start; access key ids are fixed.
    pub async fn start(paths: &Paths) -> Result<SimAws> {
        let owner_secret = random_secret()?;
        let host_secret = random_secret()?;
        let host_token = random_secret()?;
        let root = std::fs::read_to_string(paths.root_pem())
            .with_context(|| format!("reading {}", paths.root_pem().display()))?;
        let mut config = sealed_mock_kms::Config::new(paths.kms_state(), paths.kms_tls_dir());
        // Named explicitly: the mock KMS trusts the mock root because we say so here.
        config.attestation_root = Some(
            sealed_attestation::TrustAnchor::from_pem(&root).context("parsing the mock CA root")?,
        );
        config.credentials = vec![
            sealed_mock_kms::Credential {
                access_key_id: OWNER_ACCESS_KEY_ID.into(),
                secret_access_key: Zeroizing::new(owner_secret.clone()),
                session_token: None,
                principal_arn: OWNER_ARN.into(),
            },
            sealed_mock_kms::Credential {
                access_key_id: HOST_ACCESS_KEY_ID.into(),
                secret_access_key: Zeroizing::new(host_secret.clone()),
                session_token: Some(Zeroizing::new(host_token.clone())),
                principal_arn: HOST_ROLE_ARN.into(),
            },
        ];
        let kms = sealed_mock_kms::spawn(config)
            .await
            .context("starting the mock KMS")?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the mock IMDS")?;
        let imds_url = format!("http://{}", listener.local_addr()?);
        let imds = tokio::spawn(crate::imds::serve(
            listener,
            crate::imds::ImdsConfig::new(HOST_ACCESS_KEY_ID, &host_secret, &host_token),
        ));

        // The same YAML shape as AWS's /etc/nitro_enclaves/vsock-proxy.yaml.
        let allowlist = paths.allowlist();
        std::fs::write(
            &allowlist,
            format!(
                "# Written by sealed-sim: the only remote the KMS proxy may reach.\nallowlist:\n- {{address: localhost, port: {}}}\n",
                kms.addr.port()
            ),
        )
        .with_context(|| format!("writing {}", allowlist.display()))?;
        Ok(SimAws {
            kms,
            imds_url,
            allowlist,
            owner_secret,
            imds,
        })
    }

    /// An AWS SDK KMS client acting as the model owner, trusting the mock KMS's TLS CA.
    pub async fn owner_kms_client(&self) -> Result<aws_sdk_kms::Client> {
        let endpoint = self.kms.endpoint_url();
        sealed_client::kms::sdk_client_with(sealed_client::kms::KmsClientConfig {
            endpoint: Some(&endpoint),
            region: Some(sealed_mock_kms::MOCK_REGION),
            ca_bundle: Some(&self.kms.ca_file),
            profile: None,
            credentials: Some(aws_credential_types::Credentials::new(
                OWNER_ACCESS_KEY_ID,
                self.owner_secret.clone(),
                None,
                None,
                "sealed-sim",
            )),
        })
        .await
        .context("building the model owner's KMS client")
    }

    /// The environment a `sealed seal-model` child needs to act as the model owner.
    pub fn owner_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", OWNER_ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", self.owner_secret.clone()),
            ("AWS_REGION", sealed_mock_kms::MOCK_REGION.to_string()),
        ]
    }

    pub async fn stop(self) {
        self.imds.abort();
        self.kms.shutdown().await;
    }
}

/// A key policy in AWS's format: the model owner administers the key and seals with it; the host's
/// instance role may `Decrypt` only with an attestation document whose PCR0 (`ImageSha384`) is
/// `pcr0` (the same statement an operator writes on AWS, `docs/sealed-models.md`).
pub fn key_policy(pcr0: &[u8; 48]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ModelOwnerAdministersAndSeals",
                "Effect": "Allow",
                "Principal": {"AWS": OWNER_ARN},
                "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:GenerateDataKey"],
                "Resource": "*"
            },
            {
                "Sid": "OnlyTheAttestedEnclaveUnwraps",
                "Effect": "Allow",
                "Principal": {"AWS": HOST_ROLE_ARN},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEqualsIgnoreCase": {
                    "kms:RecipientAttestation:ImageSha384": hex::encode(pcr0)
                }}
            }
        ]
    })
    .to_string()
}

fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 30];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("OS random number generator: {e}"))?;
    Ok(hex::encode(bytes))
}

/// How to start one enclave + host pair.
pub struct StackOptions<'a> {
    /// Prefix for this pair's sockets in the work directory ("" for the first pair).
    pub name: &'a str,
    /// The enclave binary to run (its SHA-384 is the mock PCR0).
    pub enclave_binary: PathBuf,
    /// Plaintext models the host loads at start (simulation enclaves only).
    pub plaintext_models: Vec<ModelFile>,
    /// Simulated AWS: KMS proxy, IMDS credentials and the admin API for sealed models.
    pub aws: Option<&'a SimAws>,
    /// Extra arguments for `sealed-enclave` (after the ones the stack sets).
    pub enclave_args: Vec<String>,
    /// Extra arguments for `sealed-host` (after the ones the stack sets).
    pub host_args: Vec<String>,
    /// The Unix socket the host dials instead of the enclave's own (a test puts a relay there).
    /// The enclave listens on [`Stack::enclave_socket`] either way.
    pub host_enclave_socket: Option<PathBuf>,
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
    /// `http://ADDR` of the admin API (sealed model uploads), when started with [`SimAws`].
    pub admin_url: Option<String>,
    /// SHA-384 of the enclave binary: the PCR0 the mock NSM reports.
    pub pcr0: [u8; 48],
    pub root_pem: PathBuf,
    enclave_socket: PathBuf,
    enclave: Child,
    host: Child,
}

impl Stack {
    /// Creates the mock CA, starts the enclave, then the host with plaintext `models` loaded.
    pub async fn start(paths: &Paths, models: &[ModelFile]) -> Result<Stack> {
        write_mock_ca(paths)?;
        Stack::start_with(
            paths,
            StackOptions {
                name: "",
                enclave_binary: paths.enclave(),
                plaintext_models: models.to_vec(),
                aws: None,
                enclave_args: Vec::new(),
                host_args: Vec::new(),
                host_enclave_socket: None,
            },
        )
        .await
    }

    /// Starts one enclave + host pair; the mock CA must exist ([`write_mock_ca`]).
    pub async fn start_with(paths: &Paths, options: StackOptions<'_>) -> Result<Stack> {
        for bin in [&options.enclave_binary, &paths.host()] {
            if !bin.is_file() {
                bail!(
                    "{} not found: build with `cargo build --workspace --all-targets --features sealed-enclave/simulation`",
                    bin.display()
                );
            }
        }
        let pcr0 = measure(&options.enclave_binary)?;
        let socket = paths.workdir.join(format!("{}enclave.sock", options.name));
        let kms_proxy = paths
            .workdir
            .join(format!("{}kms-proxy.sock", options.name));

        let mut enclave = Command::new(&options.enclave_binary);
        enclave
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--mock-ca-dir")
            .arg(paths.mock_ca_dir());
        if let Some(aws) = options.aws {
            // TLS ends in the enclave: it dials the host's proxy socket and checks the mock
            // KMS's certificate against the mock TLS CA, named explicitly (simulation flag).
            enclave
                .arg("--kms-proxy")
                .arg(format!("unix:{}", kms_proxy.display()))
                .arg("--kms-endpoint")
                .arg(aws.kms.host())
                .arg("--kms-ca")
                .arg(&aws.kms.ca_file);
        }
        enclave.args(&options.enclave_args);
        let (enclave, _, _) =
            spawn_and_wait(enclave, &paths.child_log, "sealed-enclave listening on ")
                .await
                .context("starting sealed-enclave (is it a simulation build?)")?;

        let host_socket = options.host_enclave_socket.as_ref().unwrap_or(&socket);
        let mut host = Command::new(paths.host());
        host.arg("--enclave")
            .arg(format!("unix:{}", host_socket.display()))
            .arg("--listen")
            .arg("127.0.0.1:0");
        for m in &options.plaintext_models {
            host.arg("--load-model")
                .arg(format!("{}={}", m.id, m.path.display()));
        }
        if let Some(aws) = options.aws {
            host.arg("--kms-proxy")
                .arg(format!("unix:{}={}", kms_proxy.display(), aws.kms.host()))
                .arg("--proxy-allowlist")
                .arg(&aws.allowlist)
                .arg("--aws-credentials")
                .arg("imds")
                .arg("--imds-endpoint")
                .arg(&aws.imds_url)
                .arg("--admin-listen")
                .arg("127.0.0.1:0");
        }
        host.args(&options.host_args);
        let (host, rest, before) =
            spawn_and_wait(host, &paths.child_log, "sealed-host listening on ")
                .await
                .context("starting sealed-host")?;
        let host_url = rest.trim().to_string();
        let admin_url = before.iter().find_map(|line| {
            line.strip_prefix("sealed-host admin listening on ")
                .map(|u| u.trim().to_string())
        });
        if options.aws.is_some() && admin_url.is_none() {
            bail!("sealed-host did not report its admin address");
        }
        Ok(Stack {
            host_url,
            admin_url,
            pcr0,
            root_pem: paths.root_pem(),
            enclave_socket: socket,
            enclave,
            host,
        })
    }

    /// The enclave's process id (None once it has been reaped).
    pub fn enclave_pid(&self) -> Option<u32> {
        self.enclave.id()
    }

    /// The host's process id (None once it has been reaped).
    pub fn host_pid(&self) -> Option<u32> {
        self.host.id()
    }

    /// The Unix socket the enclave listens on.
    pub fn enclave_socket(&self) -> &Path {
        &self.enclave_socket
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

/// Writes a fresh mock CA (the attestation root of the simulated NSMs) to the work directory.
pub fn write_mock_ca(paths: &Paths) -> Result<()> {
    std::fs::create_dir_all(&paths.workdir)
        .with_context(|| format!("creating {}", paths.workdir.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    let ca = sealed_mock_ca::MockCa::generate(now).context("generating the mock CA")?;
    ca.write_dir(&paths.mock_ca_dir())
        .context("writing the mock CA")
}

/// The mock NSM's PCR0 for an enclave binary: SHA-384 of the file.
pub fn measure(binary: &Path) -> Result<[u8; 48]> {
    sealed_mock_ca::measure::image_digest(binary)
        .with_context(|| format!("measuring {}", binary.display()))
}

/// Copies the enclave binary to `dir` with `marker` appended: the copy runs the same code but
/// measures differently, as a rebuilt image would on Nitro.
pub fn other_build(enclave: &Path, dir: &Path, marker: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join("sealed-enclave");
    let mut image =
        std::fs::read(enclave).with_context(|| format!("reading {}", enclave.display()))?;
    image.extend_from_slice(marker.as_bytes());
    std::fs::write(&target, image).with_context(|| format!("writing {}", target.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", target.display()))?;
    }
    Ok(target)
}

/// Spawns a child whose stdout is read until a line starting with `ready_prefix`; returns the
/// rest of that line and the lines before it. Its stderr (logs) is inherited so the user sees
/// them; its stdout lines are forwarded to our stderr, so that a program embedding the stack
/// (`sealed-bench compare`) keeps its own stdout for its report.
async fn spawn_and_wait(
    mut cmd: Command,
    child_log: &str,
    ready_prefix: &str,
) -> Result<(Child, String, Vec<String>)> {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", child_log);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Own process group: a terminal's Ctrl-C reaches sealed-sim only, which then stops the
    // children in order (host first) instead of racing their exits.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().context("spawning")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut before = Vec::new();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(ready_prefix) {
                return Ok::<_, std::io::Error>(Some(rest.to_string()));
            }
            eprintln!("{line}");
            before.push(line);
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
            eprintln!("{line}");
        }
    });
    Ok((child, rest, before))
}

/// The directory of the running executable (where cargo puts the sibling binaries).
pub fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating sealed-sim")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("sealed-sim has no parent directory"))
}
