//! `sealed-sim`: wiring only. See the library docs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sealed_sim::{assets, demo, measure, stack};

/// Run Sealed Inference on one machine: mock CA, enclave (mock NSM) and host as child processes.
#[derive(Parser)]
#[command(name = "sealed-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the mock CA and the enclave socket go (default: a fresh temporary directory).
    #[arg(long, global = true)]
    workdir: Option<PathBuf>,
    /// Directory holding `sealed-enclave` (simulation build) and `sealed-host` (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// The bundled assets directory (default: sim/assets in the source tree).
    #[arg(long, global = true)]
    assets: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start everything, run attested sealed inferences on the bundled model, print what happened, stop.
    Demo,
    /// Start everything and keep it running; prints the host URL, mock root and PCR policy.
    Up,
    /// Run the mock AWS KMS alone (simulation only) until interrupted.
    Kms(Box<KmsArgs>),
    /// Print (or write) the PCRs a simulation enclave binary's mock NSM will attest, in the
    /// measurements.json format of `nitro-cli build-enclave`.
    Measure(MeasureArgs),
}

/// `sealed-sim measure`.
#[derive(clap::Args, Clone)]
struct MeasureArgs {
    /// The simulation build of sealed-enclave to measure.
    #[arg(long, value_name = "BIN")]
    enclave: PathBuf,
    /// Write the JSON here instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `sealed-sim kms`: the mock KMS (see the `sealed-mock-kms` crate docs).
#[derive(clap::Args, Clone)]
struct KmsArgs {
    /// Loopback address to listen on (port 0 picks one; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Key state file (created 0600 if absent; keys persist across restarts).
    #[arg(long)]
    state: PathBuf,
    /// Directory for the TLS material (kms-ca.pem, kms-cert.pem, kms-key.pem), generated if absent.
    #[arg(long)]
    tls_dir: PathBuf,
    /// Mock Nitro root (PEM) that Recipient attestation documents must chain to; without it,
    /// Recipient requests are refused.
    #[arg(long)]
    attestation_root: Option<PathBuf>,
    /// JSON array of {access_key_id, secret_access_key, session_token?, principal_arn?};
    /// takes precedence over the single-key flags and AWS_* variables.
    #[arg(long)]
    credentials: Option<PathBuf>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: Option<String>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    session_token: Option<String>,
    /// Principal the flag/env credentials authenticate as.
    #[arg(long)]
    principal_arn: Option<String>,
    /// Region in the SigV4 scope and key ARNs.
    #[arg(long, default_value = sealed_mock_kms::MOCK_REGION)]
    region: String,
    /// Fault plan for testing clients' retries: comma-separated `KIND[*COUNT][@OPERATION]` with
    /// KIND one of internal, unavailable, throttle, drop, delay:MS (docs/sealed-models.md).
    #[arg(long, value_name = "SPEC")]
    fault: Option<String>,
}

fn run_kms(args: &KmsArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let args = args.clone();
    let credentials = match args.credentials {
        Some(path) => sealed_mock_kms::load_credentials_file(&path)?,
        None => match (args.access_key_id, args.secret_access_key) {
            (Some(id), Some(secret)) => vec![sealed_mock_kms::Credential::new(
                id,
                secret,
                args.session_token,
                args.principal_arn,
            )],
            _ => anyhow::bail!(
                "no credentials: pass --credentials FILE, or --access-key-id and \
                 --secret-access-key (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ),
        },
    };
    let mut config = sealed_mock_kms::Config::new(args.state, args.tls_dir);
    config.listen = args.listen;
    config.credentials = credentials;
    config.region = args.region;
    if let Some(spec) = &args.fault {
        config.faults = sealed_mock_kms::faults::parse_plan(spec)
            .with_context(|| format!("--fault {spec:?}"))?;
    }
    config.attestation_root = args
        .attestation_root
        .as_deref()
        .map(sealed_mock_kms::load_attestation_root)
        .transpose()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let kms = sealed_mock_kms::spawn(config)
            .await
            .context("starting the mock KMS")?;
        println!(
            "mock KMS (simulation only) listening on {}",
            kms.endpoint_url()
        );
        println!("TLS CA to trust explicitly: {}", kms.ca_file.display());
        tokio::signal::ctrl_c().await?;
        kms.shutdown().await;
        Ok(())
    })
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(cli) {
        eprintln!("sealed-sim: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Kms(args) => return run_kms(args),
        Command::Measure(args) => return measure::run(&args.enclave, args.out.as_deref()),
        Command::Demo | Command::Up => {}
    }
    let (workdir, _tmp) = demo::workdir(cli.workdir)?;
    let paths = stack::Paths {
        bin_dir: match cli.bin_dir {
            Some(d) => d,
            None => stack::default_bin_dir()?,
        },
        assets: cli.assets.unwrap_or_else(assets::default_dir),
        workdir,
        child_log: match cli.command {
            Command::Demo => "warn".to_string(),
            Command::Up | Command::Kms(_) | Command::Measure(_) => "info".to_string(),
        },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Demo => demo::demo(&paths).await,
            Command::Up => demo::up(&paths).await,
            Command::Kms(_) | Command::Measure(_) => {
                unreachable!("handled before the stack is set up")
            }
        }
    })
}
