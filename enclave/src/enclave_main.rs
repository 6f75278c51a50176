// The body of both enclave binaries, `sealed-enclave` (main.rs) and the benchmark-only
// `sealed-enclave-plain-bench` (plain_bench_main.rs): arguments, tracing, the NSM, then
// `sealed_enclave::run`. Included, not a module, so that each binary is its own crate root and
// `CARGO_BIN_NAME` below names the binary being built.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sealed_enclave::engine::{EngineConfig, MAX_BATCH_ROWS};
use sealed_enclave::freshness::{
    DEFAULT_FRESHNESS_WINDOW_SECS, DEFAULT_REPLAY_CACHE_ENTRIES, FreshnessConfig,
    MAX_FRESHNESS_WINDOW_SECS, MAX_REPLAY_CACHE_ENTRIES,
};
use sealed_enclave::keyring::{
    DEFAULT_KEY_OVERLAP_SECS, DEFAULT_KEY_ROTATION_SECS, KeyRingConfig, MAX_KEY_ROTATION_SECS,
};
use sealed_enclave::kms::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_RETRY_DEADLINE, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    KmsConfig, KmsEndpoint, MAX_RETRY_DEADLINE, RetryConfig,
};
use sealed_enclave::model_store::{
    DEFAULT_MAX_CLOCK_SKEW_SECS, DEFAULT_MAX_MODEL_BYTES, MAX_CLOCK_SKEW_SECS, StoreConfig,
};
use sealed_enclave::nsm::Nsm;
use sealed_enclave::server::{
    DEFAULT_MODEL_LOAD_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, MAX_CONNECTIONS,
    MAX_IN_FLIGHT_PER_CONNECTION, ServerLimits,
};
use sealed_transport::Endpoint;

// Wipes every block freed while a model loads or a loaded model drops (tract's copies of its
// weights), on every target (enclave/alloc, `sealed-alloc`). On musl it also keeps freed large
// blocks: musl's allocator unmaps each on free, so in the image tract's per-run tensors faulted in
// anew on every inference. glibc keeps them itself (its mmap threshold follows the sizes it sees
// freed), and a second cache above it only held more memory (docs/performance.md, round 7).
#[global_allocator]
static ALLOCATOR: sealed_alloc::EnclaveAlloc =
    sealed_alloc::EnclaveAlloc::new(cfg!(target_env = "musl"));

/// With `bench-plaintext` (inference without sealing, for sealed-bench only) the only binary that
/// compiles is `sealed-enclave-plain-bench`: a build of `sealed-enclave` that would carry the
/// feature, shipped or measured into an image, fails here instead.
#[cfg(feature = "bench-plaintext")]
const _: () = assert!(
    same_str(env!("CARGO_BIN_NAME"), "sealed-enclave-plain-bench"),
    "the bench-plaintext feature builds only `sealed-enclave-plain-bench`, never `sealed-enclave`: \
     build it with `cargo build -p sealed-host -p sealed-enclave -p sealed-bench --features \
     sealed-enclave/simulation,sealed-enclave/bench-plaintext --bin sealed-enclave-plain-bench` \
     (the same package list as the other binaries, so that tract is not built twice)"
);

/// `a == b` in a const context (str equality is not const yet).
#[cfg(feature = "bench-plaintext")]
const fn same_str(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.split_first(), b.split_first()) {
            (None, None) => return true,
            (Some((x, rest_a)), Some((y, rest_b))) if *x == *y => (a, b) = (rest_a, rest_b),
            _ => return false,
        }
    }
}

/// The Sealed Inference enclave.
#[derive(Parser)]
#[command(name = "sealed-enclave", version)]
struct Args {
    /// Where to listen for the host: `vsock:any:PORT` on Nitro, `unix:/PATH` in simulation.
    #[arg(long)]
    listen: Endpoint,
    /// Inference worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Threads one inference may use for tract's matrix products: above 1, one pool of this many
    /// threads shared by every worker (builds with the `multithread-mm` feature only). 1 runs
    /// each inference on its worker alone.
    #[arg(long, env = "SEALED_INTRA_OP_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    intra_op_threads: u16,
    /// Inference jobs that may wait for a worker before requests are refused as busy.
    #[arg(long, default_value_t = 64)]
    queue_depth: usize,
    /// Serve this model with dynamic batching: requests already queued for it run together,
    /// joined along axis 0, up to MAX_ROWS rows (2..=64; no waiting for company). Only for a
    /// model that computes each row from that row alone, with one symbolic axis 0 on every
    /// input and output (its load is refused otherwise). Repeat for several models. Part of the
    /// measured image: see docs/operations.md, "Dynamic batching".
    #[arg(long, value_name = "MODEL_ID=MAX_ROWS", value_parser = dynamic_batch_entry)]
    dynamic_batch: Vec<(String, usize)>,
    /// A tract knob in force while model plans are built, e.g.
    /// `TRACT_DISABLE_DIRECT_SPATIAL=true` (im2col + matrix product instead of tract's direct
    /// convolution everywhere). Without that knob, on x86_64 the engine keeps tract's direct
    /// convolution only where it was measured to pay (≤ 40 inputs per output point, or < 32
    /// output channels); naming it, `=false` included, hands every convolution back to tract's
    /// own choice. Only knobs tract reads while preparing a model; an unknown one stops the
    /// enclave at start with the list. Repeatable. Part of the measured image.
    #[arg(long, value_name = "NAME=VALUE", value_parser = tract_knob_entry)]
    tract_knob: Vec<(String, String)>,
    /// Directory with the mock CA made by `sealed-sim` (simulation builds only).
    #[cfg(feature = "simulation")]
    #[arg(long)]
    mock_ca_dir: std::path::PathBuf,
    /// The host's proxy to KMS, which forwards bytes to the KMS endpoint: `vsock:3:8000` on Nitro
    /// (the parent's vsock-proxy), `unix:/PATH` in simulation. Without it, sealed models are
    /// refused with `kms_not_configured`. TLS to KMS ends inside the enclave.
    #[arg(long, value_name = "ENDPOINT")]
    kms_proxy: Option<Endpoint>,
    /// KMS host name (and port) for TLS and the signed Host header. Default:
    /// `kms.<region>.amazonaws.com:443`, the region taken from the sealed model's key ARN. The
    /// host's proxy must forward to the same place.
    #[arg(long, value_name = "HOST[:PORT]", requires = "kms_proxy")]
    kms_endpoint: Option<KmsEndpoint>,
    /// Region used when a sealed model names its key by alias or bare key id instead of an ARN.
    #[arg(long, value_name = "REGION", requires = "kms_proxy")]
    kms_region: Option<String>,
    /// Plaintext bytes that sealed-model uploads in progress may hold together; also the largest
    /// single sealed model (plaintext models, simulation only, are capped at 64 MiB).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_MODEL_BYTES)]
    max_model_bytes: u64,
    /// Largest difference, in seconds, between the time the host reports and this enclave's clock
    /// for which a sealed-model load signs its KMS request with the host's time (docs/time.md).
    /// At most 900: AWS refuses SigV4 requests dated more than 15 minutes from its own clock.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_CLOCK_SKEW_SECS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CLOCK_SKEW_SECS))]
    max_clock_skew_secs: u64,
    /// How far, in seconds, a sealed request's timestamp may be from this enclave's clock, either
    /// way, before it is refused as `stale_request` (docs/protocol.md §2.2). Request ids are
    /// remembered for as long as their timestamp is inside this window.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_FRESHNESS_WINDOW_SECS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_FRESHNESS_WINDOW_SECS))]
    freshness_window_secs: u64,
    /// Request ids the replay cache holds at most (58 bytes each: 58 MiB at the default). When it holds
    /// this many ids that are all still inside the window, requests are answered `busy`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REPLAY_CACHE_ENTRIES,
          value_parser = replay_cache_entries)]
    replay_cache_entries: usize,
    /// Seconds between HPKE key rotations; clients re-attest when their key is retired. Values
    /// below 3600 are for tests.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_KEY_ROTATION_SECS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_KEY_ROTATION_SECS))]
    key_rotation_secs: u64,
    /// Seconds a retired key still opens requests after a rotation; must be less than
    /// --key-rotation-secs.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_KEY_OVERLAP_SECS,
          value_parser = clap::value_parser!(u64).range(0..MAX_KEY_ROTATION_SECS))]
    key_overlap_secs: u64,
    /// Deadline, in seconds, of every host request except model loads (inference, attestation,
    /// health, upload chunks); past it the request is answered `timeout` and its memory and
    /// in-flight slot are released.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_timeout_secs: u64,
    /// Deadline, in seconds, of a model load (plaintext load, or the end of a sealed upload).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MODEL_LOAD_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=7200))]
    model_load_timeout_secs: u64,
    /// Host connections served at once.
    #[arg(long, value_name = "N", default_value_t = MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    max_connections: usize,
    /// Requests in flight on one host connection; the enclave stops reading that connection
    /// beyond it.
    #[arg(long, value_name = "N", default_value_t = MAX_IN_FLIGHT_PER_CONNECTION,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65536))]
    max_in_flight_per_connection: usize,
    /// First KMS retry delay in milliseconds; delays double up to --kms-retry-max-ms.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RETRY_INITIAL.as_millis() as u64,
          requires = "kms_proxy")]
    kms_retry_initial_ms: u64,
    /// Longest KMS retry delay in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RETRY_MAX.as_millis() as u64,
          requires = "kms_proxy")]
    kms_retry_max_ms: u64,
    /// Overall deadline, in seconds, of one KMS call with its retries (0: one attempt, no retry).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_RETRY_DEADLINE.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=MAX_RETRY_DEADLINE.as_secs()),
          requires = "kms_proxy")]
    kms_deadline_secs: u64,
    /// Deadline, in seconds, of one KMS attempt (connect, TLS, request and answer).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_ATTEMPT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300), requires = "kms_proxy")]
    kms_attempt_timeout_secs: u64,
    /// PEM file with the CA that signed the mock KMS's TLS certificate; it then becomes the only
    /// KMS trust root (simulation builds only; production builds trust the public web PKI roots).
    #[cfg(feature = "simulation")]
    #[arg(long, value_name = "FILE", requires = "kms_proxy")]
    kms_ca: Option<std::path::PathBuf>,
}

/// `--replay-cache-entries`: 1 to [`MAX_REPLAY_CACHE_ENTRIES`].
fn replay_cache_entries(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (1..=MAX_REPLAY_CACHE_ENTRIES).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be 1..={MAX_REPLAY_CACHE_ENTRIES}"))
    }
}

/// `--dynamic-batch MODEL_ID=MAX_ROWS`: a valid model id and 2 to [`MAX_BATCH_ROWS`] rows.
fn dynamic_batch_entry(s: &str) -> Result<(String, usize), String> {
    let (id, rows) = s
        .split_once('=')
        .ok_or_else(|| "expected MODEL_ID=MAX_ROWS".to_owned())?;
    if !sealed_wire::message::valid_model_id(id) {
        return Err(format!("`{id}` is not a valid model id"));
    }
    let rows: usize = rows
        .parse()
        .map_err(|_| format!("MAX_ROWS must be a number from 2 to {MAX_BATCH_ROWS}"))?;
    if !(2..=MAX_BATCH_ROWS).contains(&rows) {
        return Err(format!("MAX_ROWS must be from 2 to {MAX_BATCH_ROWS}"));
    }
    Ok((id.to_owned(), rows))
}

/// `--tract-knob NAME=VALUE`, split; the engine checks the name and value.
fn tract_knob_entry(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| "expected NAME=VALUE".to_owned())?;
    Ok((name.to_owned(), value.to_owned()))
}

/// `--tract-knob` entries checked against tract's scoped knobs; the error lists those accepted.
fn check_tract_knobs(knobs: &[(String, String)]) -> anyhow::Result<()> {
    if let Err(e) = sealed_enclave::engine::tract_knob_scope(knobs) {
        let names: Vec<&str> = sealed_enclave::engine::scoped_tract_knobs()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        anyhow::bail!("--tract-knob: {e} (accepted: {})", names.join(", "));
    }
    Ok(())
}

/// The `--dynamic-batch` entries as the engine takes them; a model named twice is an error.
fn dynamic_batch_config(
    entries: &[(String, usize)],
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let mut map = std::collections::BTreeMap::new();
    for (id, rows) in entries {
        if map.insert(id.clone(), *rows).is_some() {
            anyhow::bail!("--dynamic-batch names model `{id}` twice");
        }
    }
    Ok(map)
}

/// Rotation settings from the flags, checked (`overlap < rotation`).
fn key_ring_config(args: &Args) -> anyhow::Result<KeyRingConfig> {
    let config = KeyRingConfig {
        rotation: std::time::Duration::from_secs(args.key_rotation_secs),
        overlap: std::time::Duration::from_secs(args.key_overlap_secs),
    };
    config
        .validate()
        .context("--key-overlap-secs / --key-rotation-secs")?;
    Ok(config)
}

fn main() {
    // Before any thread exists: the allocator's process-wide options (one arena on glibc).
    sealed_alloc::init();
    if let Err(err) = real_main() {
        eprintln!("sealed-enclave: {err:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = key_ring_config(&args)?;
    init_tracing();
    // cfg, not `if`: the production binary must not even contain the line (build-enclave.sh greps).
    #[cfg(feature = "bench-plaintext")]
    {
        tracing::warn!(
            "BENCHMARK BUILD: inference requests and answers are NOT sealed (bench-plaintext)"
        );
    }
    // The default hook prints panic messages, which may quote data; log the location only.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic caught (message withheld)");
    }));
    let nsm = open_nsm(&args)?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if args.intra_op_threads > 1 && !sealed_enclave::engine::INTRA_OP_AVAILABLE {
        anyhow::bail!(
            "--intra-op-threads {} needs an enclave built with the multithread-mm feature",
            args.intra_op_threads
        );
    }
    check_tract_knobs(&args.tract_knob)?;
    let kms = kms_config(&args)?;
    let config = sealed_enclave::Config {
        listen: args.listen.clone(),
        engine: EngineConfig {
            workers,
            queue_depth: args.queue_depth,
            // Sealed models are bounded by the same budget as their uploads.
            max_model_len: usize::try_from(args.max_model_bytes).unwrap_or(usize::MAX),
            intra_op_threads: usize::from(args.intra_op_threads),
            dynamic_batch: dynamic_batch_config(&args.dynamic_batch)?,
            tract_knobs: args.tract_knob.clone(),
        },
        nsm,
        kms,
        store: StoreConfig {
            max_model_bytes: args.max_model_bytes,
            max_clock_skew: std::time::Duration::from_secs(args.max_clock_skew_secs),
            ..StoreConfig::default()
        },
        keys,
        limits: ServerLimits {
            request_timeout: std::time::Duration::from_secs(args.request_timeout_secs),
            model_load_timeout: std::time::Duration::from_secs(args.model_load_timeout_secs),
            max_connections: args.max_connections,
            max_in_flight_per_connection: args.max_in_flight_per_connection,
            ..ServerLimits::default()
        },
        freshness: FreshnessConfig {
            window: std::time::Duration::from_secs(args.freshness_window_secs),
            replay_cache_entries: args.replay_cache_entries,
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let serve = sealed_enclave::run(config, |endpoint| {
            // A launcher waits for this line on stdout.
            println!("sealed-enclave listening on {endpoint}");
        });
        tokio::select! {
            r = serve => r.context("enclave server"),
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    })
}

/// Everything the enclave logs leaves through the untrusted host, so the filter is an allow-list:
/// `RUST_LOG` may only name a level (`error`…`trace`), which applies to our own crates; every other
/// crate logs warnings at most, and tract (which prints weights and tensors at trace level) nothing.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let requested = std::env::var("RUST_LOG").unwrap_or_default();
    let level = if LEVELS.contains(&requested.trim()) {
        requested.trim().to_string()
    } else {
        "info".to_string()
    };
    let directives = format!(
        "warn,tract=off,sealed_enclave={level},sealed_transport={level},sealed_wire={level}"
    );
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(directives))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if !requested.is_empty() && !LEVELS.contains(&requested.trim()) {
        tracing::warn!("RUST_LOG accepts only a level in the enclave; using {level}");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// KMS settings from the flags; `None` without `--kms-proxy`.
fn kms_config(args: &Args) -> anyhow::Result<Option<KmsConfig>> {
    let Some(proxy) = args.kms_proxy.clone() else {
        return Ok(None);
    };
    let mut config = KmsConfig::new(proxy);
    config.endpoint = args.kms_endpoint.clone();
    config.region = args.kms_region.clone();
    config.request_timeout = std::time::Duration::from_secs(args.kms_attempt_timeout_secs);
    config.retry = RetryConfig {
        initial_backoff: std::time::Duration::from_millis(args.kms_retry_initial_ms),
        max_backoff: std::time::Duration::from_millis(args.kms_retry_max_ms),
        deadline: std::time::Duration::from_secs(args.kms_deadline_secs),
    };
    config
        .retry
        .validate()
        .context("--kms-retry-initial-ms / --kms-retry-max-ms / --kms-deadline-secs")?;
    #[cfg(feature = "simulation")]
    if let Some(path) = &args.kms_ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the KMS CA from {}", path.display()))?;
        config.roots = sealed_enclave::kms::roots_from_pem(&pem)
            .with_context(|| format!("loading the KMS CA from {}", path.display()))?;
        tracing::warn!(
            ca = %path.display(),
            "SIMULATION BUILD: KMS TLS trusts only the named CA"
        );
    }
    Ok(Some(config))
}

#[cfg(feature = "simulation")]
fn open_nsm(args: &Args) -> anyhow::Result<Arc<dyn Nsm>> {
    let ca = sealed_mock_ca::MockCa::load_dir(&args.mock_ca_dir)
        .with_context(|| format!("loading the mock CA from {}", args.mock_ca_dir.display()))?;
    // PCR0 of the mock NSM is the SHA-384 of this very binary, as the image measurement would be.
    let image = std::env::current_exe().context("locating the enclave binary")?;
    let nsm =
        sealed_enclave::nsm::mock::MockNsm::new(ca, &image).context("starting the mock NSM")?;
    tracing::warn!(
        "SIMULATION BUILD: mock NSM, documents signed by the mock CA; not for production"
    );
    Ok(Arc::new(nsm))
}

#[cfg(not(feature = "simulation"))]
fn open_nsm(_args: &Args) -> anyhow::Result<Arc<dyn Nsm>> {
    let nsm = sealed_enclave::nsm::real::RealNsm::open().context("opening /dev/nsm")?;
    Ok(Arc::new(nsm))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production command line baked into the image (deploy/enclave/Dockerfile); simulation
    /// builds also require --mock-ca-dir.
    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["sealed-enclave", "--listen", "vsock:any:5000"];
        if cfg!(feature = "simulation") {
            argv.extend(["--mock-ca-dir", "/nonexistent"]);
        }
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn dynamic_batch_takes_model_rows_pairs_and_refuses_bad_ones() {
        assert!(parse(&[]).unwrap().dynamic_batch.is_empty());
        let args = parse(&[
            "--dynamic-batch",
            "large=8",
            "--dynamic-batch",
            "digits=64",
        ])
        .unwrap();
        let map = dynamic_batch_config(&args.dynamic_batch).unwrap();
        assert_eq!(map.get("large"), Some(&8));
        assert_eq!(map.get("digits"), Some(&64));
        for bad in ["large", "large=1", "large=65", "large=x", "=8", "bad id=4"] {
            let err = parse(&["--dynamic-batch", bad]).err().unwrap();
            assert!(err.to_string().contains("--dynamic-batch"), "{bad}: {err}");
        }
        let twice = parse(&["--dynamic-batch", "a=2", "--dynamic-batch", "a=4"]).unwrap();
        assert!(dynamic_batch_config(&twice.dynamic_batch).is_err());
    }

    #[test]
    fn tract_knobs_are_checked_against_the_scoped_ones() {
        let args = parse(&["--tract-knob", "TRACT_DISABLE_DIRECT_SPATIAL=true"]).unwrap();
        check_tract_knobs(&args.tract_knob).unwrap();
        assert!(parse(&["--tract-knob", "no-equals"]).is_err());
        for bad in [
            "TRACT_NO_SUCH_KNOB=1",
            "TRACT_DISABLE_DIRECT_SPATIAL=maybe",
        ] {
            let args = parse(&["--tract-knob", bad]).unwrap();
            let err = check_tract_knobs(&args.tract_knob).unwrap_err().to_string();
            assert!(err.contains("TRACT_DISABLE_DIRECT_SPATIAL"), "{bad}: {err}");
        }
    }

    #[test]
    fn kms_proxy_on_the_parent_vsock_reaches_the_kms_config() {
        let args = parse(&["--kms-proxy", "vsock:3:8000", "--kms-region", "us-east-1"]).unwrap();
        let config = kms_config(&args).unwrap().unwrap();
        assert_eq!(config.proxy, Endpoint::Vsock { cid: 3, port: 8000 });
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        // …and is accepted by the client (which dials it only when a sealed model is loaded).
        sealed_enclave::kms::check_proxy(&config.proxy).unwrap();
    }

    #[test]
    fn no_kms_proxy_means_no_kms() {
        assert!(kms_config(&parse(&[]).unwrap()).unwrap().is_none());
        // The KMS options make no sense without a proxy.
        assert!(parse(&["--kms-region", "us-east-1"]).is_err());
    }

    #[test]
    fn bad_kms_proxy_is_a_usage_error() {
        for bad in ["vsock:three:8000", "tcp:127.0.0.1:8000", "vsock:3"] {
            let err = parse(&["--kms-proxy", bad]).err().unwrap();
            assert!(err.to_string().contains("--kms-proxy"), "{err}");
        }
    }

    #[test]
    fn clock_skew_bound_defaults_to_five_minutes_and_stops_at_fifteen() {
        assert_eq!(parse(&[]).unwrap().max_clock_skew_secs, 300);
        assert_eq!(
            parse(&["--max-clock-skew-secs", "900"])
                .unwrap()
                .max_clock_skew_secs,
            900
        );
        assert!(parse(&["--max-clock-skew-secs", "901"]).is_err());
        assert!(parse(&["--max-clock-skew-secs", "0"]).is_err());
    }

    #[test]
    fn freshness_window_defaults_to_two_minutes_and_stops_at_fifteen() {
        assert_eq!(parse(&[]).unwrap().freshness_window_secs, 120);
        let args = parse(&["--freshness-window-secs", "900"]).unwrap();
        assert_eq!(args.freshness_window_secs, 900);
        assert!(parse(&["--freshness-window-secs", "901"]).is_err());
        assert!(parse(&["--freshness-window-secs", "0"]).is_err());
    }

    #[test]
    fn replay_cache_defaults_to_a_million_ids_and_is_bounded() {
        assert_eq!(parse(&[]).unwrap().replay_cache_entries, 1_048_576);
        let args = parse(&["--replay-cache-entries", "1"]).unwrap();
        assert_eq!(args.replay_cache_entries, 1);
        assert!(parse(&["--replay-cache-entries", "0"]).is_err());
        assert!(parse(&["--replay-cache-entries", "16777217"]).is_err());
        assert!(parse(&["--replay-cache-entries", "-1"]).is_err());
    }

    #[test]
    fn key_rotation_defaults_to_an_hour_with_five_minutes_overlap() {
        let config = key_ring_config(&parse(&[]).unwrap()).unwrap();
        assert_eq!(config, KeyRingConfig::default());
        assert_eq!(config.rotation.as_secs(), 3600);
        assert_eq!(config.overlap.as_secs(), 300);
        // The quick schedule the e2e tests use.
        let args = parse(&["--key-rotation-secs", "2", "--key-overlap-secs", "1"]).unwrap();
        assert_eq!(key_ring_config(&args).unwrap().rotation.as_secs(), 2);
        assert!(parse(&["--key-rotation-secs", "0"]).is_err());
    }

    #[test]
    fn key_overlap_must_be_shorter_than_rotation() {
        for (rotation, overlap) in [("60", "60"), ("60", "61"), ("1", "1")] {
            let args = parse(&[
                "--key-rotation-secs",
                rotation,
                "--key-overlap-secs",
                overlap,
            ])
            .unwrap();
            let err = key_ring_config(&args).unwrap_err();
            assert!(format!("{err:#}").contains("shorter than"), "{err:#}");
        }
        let args = parse(&["--key-rotation-secs", "1", "--key-overlap-secs", "0"]).unwrap();
        assert!(key_ring_config(&args).is_ok());
    }
}
