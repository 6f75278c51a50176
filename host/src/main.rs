//! `sealed-host`: wiring only. Parses arguments and resolves them over the environment and the
//! configuration file, sets up logging (stderr, text or JSON; stdout carries the `listening on`
//! lines), runs [`sealed_host::run`] until SIGINT or SIGTERM, and reports a failure once.

use clap::Parser;
use sealed_host::config::{Args, Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let check_only = args.check_config;
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("sealed-host: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if check_only {
        // The resolved configuration holds paths, addresses and bounds, never a secret.
        println!("{config:#?}");
        println!("sealed-host: configuration ok");
        return std::process::ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        // Colour codes only for a terminal; a launcher or journald gets plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line with the span fields flattened in, for journald and log shippers.
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealed-host: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        sealed_host::run(config, shutdown).await?;
        Ok::<_, anyhow::Error>(())
    });
    // Stop the runtime's tasks first, so that the error is the last line on stderr.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sealed-host: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. Handlers are installed before serving starts, so a
/// signal during startup also stops the host cleanly.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
