//! `sealed-sim`: wiring only. See the library docs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sealed_sim::{assets, demo, stack};

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
            Command::Up => "info".to_string(),
        },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Demo => demo::demo(&paths).await,
            Command::Up => demo::up(&paths).await,
        }
    })
}
