//! `sealed-bench`: load generation against Sealed Inference (docs/load.md).
//!
//! `sealed-bench load` runs N concurrent clients for T seconds, each attesting once and then
//! sending verified, sealed inferences back to back, against a simulation stack it starts itself
//! (mock NSM enclave + host as child processes, the bundled digits model) or an existing host
//! (`--host-url` + `--policy`). It reports requests, errors by code, throughput, latency
//! percentiles, and the RSS of the enclave and host sampled every second, with the growth from the
//! end of the warm-up to the end of the run.
//!
//! What it does not do: measure a Nitro Enclave (vsock, the NSM and the enclave's own CPUs are
//! simulated here: the figures are for the code paths, on the machine the stack runs on), or
//! assert anything about speed — it prints figures.
//!
//! # Layout
//! - `main.rs`: the command line.
//! - [`load`]: the client tasks, the RSS sampler and the report.
//! - [`tract`]: tract alone on the benchmark models (threads, batching, onnxruntime's figures).
//! - [`targets`]: issue 6's targets judged from the reports the others wrote.

mod compare;
mod floor;
mod load;
mod micro;
mod targets;
mod tract;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

// The enclave's allocator (without the musl block cache: this is a glibc program), so that
// `micro`'s unseal + load pays for the wipe the enclave's load does; bare tract's loads and runs
// open no wipe window and pay only its check of one atomic per free.
#[global_allocator]
static ALLOCATOR: sealed_alloc::EnclaveAlloc = sealed_alloc::EnclaveAlloc::new(false);

#[derive(Parser)]
#[command(name = "sealed-bench", about = "Load generation for Sealed Inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N clients for T seconds of back-to-back sealed inferences.
    Load(LoadArgs),
    /// Bare tract vs sealed vs plain HTTP: latency, throughput, ratios (docs/performance.md).
    Compare(compare::Args),
    /// Attestation verification and sealed-model unseal micro-benchmarks.
    Micro(micro::Args),
    /// tract alone: engine plan, intra-op threads, batching potential, gap to onnxruntime.
    Tract(tract::Args),
    /// Issue 6's targets judged from the JSON reports (met / not met / not judgeable here).
    Targets(targets::Args),
    /// (Internal) hold one model in bare tract and print the process's peak RSS.
    #[command(hide = true)]
    BareRss(compare::BareRssArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Concurrent clients (each attests once, then sends one request at a time).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    clients: u32,
    /// Seconds of load after every client has attested.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seconds at the start whose RSS is not the baseline (allocators and caches fill up).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// An existing host instead of a simulation stack (needs --policy).
    #[arg(long, requires = "policy")]
    host_url: Option<String>,
    /// Policy file (`sealed policy create`) for --host-url.
    #[arg(long, requires = "host_url")]
    policy: Option<PathBuf>,
    /// Process ids to sample RSS from with --host-url (optional).
    #[arg(long)]
    host_pid: Option<u32>,
    #[arg(long)]
    enclave_pid: Option<u32>,
    /// Model id to run (the digits model: input `input` f32 [1, 64]).
    #[arg(long, default_value = "digits")]
    model: String,
    /// Where sealed-enclave (simulation build) and sealed-host are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Extra argument for the simulation's sealed-host (repeatable). Without any, the bench
    /// raises the host's per-client limits to the client count (every simulated client shares
    /// 127.0.0.1, which the host treats as one client): `--max-in-flight-per-client N
    /// --max-connections-per-client N`, N = clamp(clients, 64, 256).
    #[arg(long, allow_hyphen_values = true)]
    host_arg: Vec<String>,
    /// Extra argument for the simulation's sealed-enclave (repeatable), e.g.
    /// `--enclave-arg=--freshness-window-secs --enclave-arg=10` to see the replay cache level off
    /// within a short run.
    #[arg(long, allow_hyphen_values = true)]
    enclave_arg: Vec<String>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Load(args) => args,
        Command::Compare(args) => return compare::run(args),
        Command::Micro(args) => return micro::run(args),
        Command::Tract(args) => return tract::run(args),
        Command::Targets(args) => return targets::run(args),
        Command::BareRss(args) => return compare::bare_rss(args),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = load::Config {
        clients: args.clients as usize,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup.min(args.duration)),
        target: match (args.host_url, args.policy) {
            (Some(url), Some(policy)) => load::Target::Existing {
                url,
                policy,
                host_pid: args.host_pid,
                enclave_pid: args.enclave_pid,
            },
            _ => load::Target::Simulation {
                bin_dir: match args.bin_dir {
                    Some(dir) => dir,
                    None => sealed_sim::stack::default_bin_dir()?,
                },
                host_args: if args.host_arg.is_empty() {
                    let n = args.clients.clamp(64, 256).to_string();
                    vec![
                        "--max-in-flight-per-client".into(),
                        n.clone(),
                        "--max-connections-per-client".into(),
                        n,
                    ]
                } else {
                    args.host_arg
                },
                enclave_args: args.enclave_arg,
            },
        },
        model: args.model,
    };
    let report = runtime.block_on(load::run(config))?;
    print!("{}", load::table(&report));
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json)? + "\n")?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
