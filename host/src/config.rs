//! Configuration: command-line flags, `SEALED_HOST_*` environment variables and a TOML file,
//! merged into the runtime [`Config`].
//!
//! Every setting has one name, the long flag with `_` for `-` (`request_timeout_secs`), used as the
//! TOML key and, upper-cased after `SEALED_HOST_`, as the environment variable. Precedence: flag >
//! environment > file > default. The file is `--config FILE` or `SEALED_HOST_CONFIG`. Unknown keys
//! in the file and unknown `SEALED_HOST_*` variables are errors, so that a typo never silently
//! leaves a default in place. List settings (`load_model`, `kms_proxy`) are TOML arrays in the file
//! and comma-separated in the environment; a layer that sets a list replaces the lower layer's.
//!
//! [`Args`] is the clap surface; [`Config`] is what the rest of the crate takes, with every duration
//! and bound resolved, so that tests can build one directly (for example with a 200 ms request
//! timeout) without going through the command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sealed_transport::Endpoint;

use crate::credentials::{CredentialSourceKind, DEFAULT_REFRESH_MARGIN};
use crate::enclave_pool::PoolConfig;
use crate::limits::{self, HttpLimits};
use crate::model_loader::ModelSpec;
use crate::proxy::{ProxyConfig, ProxySpec};

/// Default number of persistent connections to the enclave.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Default time the enclave has to answer one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on requests in flight on one enclave connection; past it the host answers 503
/// `busy` instead of queueing without limit.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;
/// How long startup waits for the enclave to accept a connection before loading models.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the enclave has to parse and optimise one model at startup (tract optimises once per
/// model, which takes far longer than an inference for large models).
pub const DEFAULT_MODEL_LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Extra time an HTTP request gets beyond the enclave timeout, for uploading and downloading
/// sealed bodies of up to 16 MiB.
pub const HTTP_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often the supervisor asks the enclave for its health.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one health probe may take before it counts as failed. A health answer needs no
/// inference worker, so a slow one means a hung or overloaded enclave.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "SEALED_HOST_";
/// Environment variable naming the configuration file (like `--config`).
pub const CONFIG_ENV: &str = "SEALED_HOST_CONFIG";
/// Largest configuration file read (it is a dozen lines).
pub const MAX_CONFIG_FILE_LEN: u64 = 64 * 1024;

const CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=64;
const REQUEST_TIMEOUT_RANGE: RangeInclusive<u64> = 1..=3600;
const SHUTDOWN_GRACE_RANGE: RangeInclusive<u64> = 0..=3600;
const HEADER_TIMEOUT_RANGE: RangeInclusive<u64> = 1..=300;
const IDLE_TIMEOUT_RANGE: RangeInclusive<u64> = 1..=3600;
const MAX_HEADER_BYTES_RANGE: RangeInclusive<u64> =
    limits::MIN_MAX_HEADER_BYTES as u64..=limits::MAX_MAX_HEADER_BYTES as u64;
const CONNECTIONS_LIMIT_RANGE: RangeInclusive<u64> = 1..=1_000_000;
const IN_FLIGHT_LIMIT_RANGE: RangeInclusive<u64> = 1..=100_000;

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (journald, log shippers).
    Json,
}

/// `sealed-host`: the untrusted relay between HTTP clients and the enclave.
///
/// Every option can also be set in the `--config` TOML file (key = option name with `_`) or in the
/// environment (`SEALED_HOST_<KEY>`); a flag wins over the environment, which wins over the file.
#[derive(Debug, Default, Parser)]
#[command(name = "sealed-host", version, about)]
pub struct Args {
    /// TOML configuration file (flat keys named like the options: `listen = "0.0.0.0:8080"`).
    /// Also `SEALED_HOST_CONFIG`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Enclave endpoint: `unix:/PATH` (simulation) or `vsock:CID:PORT` (Nitro). Required (here,
    /// in the environment or in the file).
    #[arg(long, value_name = "ENDPOINT")]
    pub enclave: Option<Endpoint>,

    /// Address for the client HTTP API [default: 127.0.0.1:8080]. Port 0 picks a free port; the
    /// bound address is printed on stdout as `sealed-host listening on http://ADDR`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Persistent connections to the enclave; each multiplexes many requests [default: 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections: Option<u64>,

    /// Seconds the enclave has to answer a request before the client gets 504 `timeout`
    /// [default: 30].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: Option<u64>,

    /// Load a plaintext ONNX model at startup, and again whenever the enclave comes back after a
    /// restart (simulation enclaves only; a production enclave refuses with
    /// `plaintext_models_disabled` and startup fails). Repeatable.
    #[arg(long = "load-model", value_name = "ID=PATH")]
    pub load_model: Vec<ModelSpec>,

    /// Forward connections from the enclave on LISTEN (`vsock:3:8000` on Nitro, `unix:/PATH` in
    /// simulation) to HOST:PORT, which must be in --proxy-allowlist. The enclave reaches KMS
    /// through this; TLS runs end to end. Repeatable.
    #[arg(long = "kms-proxy", value_name = "LISTEN=HOST:PORT")]
    pub kms_proxy: Vec<ProxySpec>,

    /// Allowlist for --kms-proxy remotes, in the AWS vsock-proxy YAML format
    /// (`allowlist: - {address: kms.us-east-1.amazonaws.com, port: 443}`).
    #[arg(long, value_name = "FILE")]
    pub proxy_allowlist: Option<PathBuf>,

    /// Where the AWS credentials handed to the enclave for KMS come from: `imds` (the instance
    /// role, IMDSv2), `env` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), or
    /// `none` (sealed models cannot be loaded) [default: none].
    #[arg(long, value_name = "SOURCE", value_enum)]
    pub aws_credentials: Option<CredentialSourceKind>,

    /// IMDS base URL for --aws-credentials imds (default: AWS_EC2_METADATA_SERVICE_ENDPOINT, else
    /// http://169.254.169.254); the mock IMDS in simulation.
    #[arg(long, value_name = "URL")]
    pub imds_endpoint: Option<String>,

    /// Load every `*.sealed` file in DIR at startup, in name order (startup fails if one fails),
    /// and again whenever the enclave comes back after a restart.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// Address for the admin API (`POST /v1/admin/models`); off unless given. Bind it where only
    /// operators can reach it: it has no authentication of its own.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Address for Prometheus metrics (`GET /metrics`) and the `/livez` and `/readyz` probes; off
    /// unless given. The bound address is printed as `sealed-host metrics listening on
    /// http://ADDR`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log format on stderr [default: text].
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT before the host exits
    /// anyway [default: 30].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: Option<u64>,

    /// Seconds a client has to send a request's complete headers (from connecting, or from the
    /// first byte of a later request on the same connection); the connection is closed otherwise
    /// (slowloris) [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=300))]
    pub http_header_timeout_secs: Option<u64>,

    /// Largest request head (request line and headers) in bytes; a larger one is answered 431
    /// and the connection closed [default: 16384; at least 8192].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    pub http_max_header_bytes: Option<u64>,

    /// Seconds a kept-alive connection may wait for its next request before it is closed
    /// [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_idle_timeout_secs: Option<u64>,

    /// Client connections open at once; a connection over it gets 503 `busy` and is closed
    /// [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,

    /// Connections open at once from one client (IPv4 address or IPv6 /64); over it: 429
    /// `too_many_requests` and closed [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_client: Option<u64>,

    /// `/v1/infer` and `/v1/attestation` requests handled at once; over it: 503 `busy`
    /// [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight: Option<u64>,

    /// Those requests handled at once for one client; over it: 429 `too_many_requests`
    /// [default: 32].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight_per_client: Option<u64>,

    /// Resolve the configuration (flags, environment, file), print it and exit: 0 if it is valid,
    /// 2 if not. Starts nothing (for ExecStartPre, or after editing host.toml).
    #[arg(long)]
    pub check_config: bool,
}

/// Resolved configuration of a host instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub enclave: Endpoint,
    pub listen: SocketAddr,
    pub connections: usize,
    /// Time the enclave has to answer one request.
    pub request_timeout: Duration,
    /// Time one HTTP request may take end to end, body transfer included.
    pub http_timeout: Duration,
    pub max_in_flight_per_connection: usize,
    pub startup_timeout: Duration,
    pub model_load_timeout: Duration,
    pub models: Vec<ModelSpec>,
    pub kms_proxies: Vec<ProxySpec>,
    pub proxy_allowlist: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub aws_credentials: CredentialSourceKind,
    pub imds_endpoint: Option<String>,
    /// Cached credentials are fetched again this long before they expire.
    pub credentials_refresh_margin: Duration,
    pub models_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Time in-flight requests get to finish after the shutdown signal.
    pub shutdown_grace: Duration,
    /// Interval and timeout of the supervisor's enclave health probe.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// Client connection and request limits of the HTTP API.
    pub limits: HttpLimits,
}

impl Config {
    /// A configuration with every default, for `enclave` and `listen`.
    pub fn new(enclave: Endpoint, listen: SocketAddr) -> Config {
        Config {
            enclave,
            listen,
            connections: DEFAULT_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            http_timeout: DEFAULT_REQUEST_TIMEOUT + HTTP_TIMEOUT_MARGIN,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            model_load_timeout: DEFAULT_MODEL_LOAD_TIMEOUT,
            models: Vec::new(),
            kms_proxies: Vec::new(),
            proxy_allowlist: None,
            proxy: ProxyConfig::default(),
            aws_credentials: CredentialSourceKind::None,
            imds_endpoint: None,
            credentials_refresh_margin: DEFAULT_REFRESH_MARGIN,
            models_dir: None,
            admin_listen: None,
            metrics_listen: None,
            log_format: LogFormat::Text,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            limits: HttpLimits::default(),
        }
    }

    /// Resolves `args` over the process environment and the configuration file they name.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        Config::resolve(args, std::env::vars_os())
    }

    /// Resolves `args` over `env` (the environment's variables) and the configuration file named by
    /// `--config` or `SEALED_HOST_CONFIG`: flag > environment > file > default.
    pub fn resolve<I>(args: Args, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        let mut config_path = None;
        let mut env_layer = Layer::default();
        for (name, value) in env {
            let Some(name) = name.to_str() else { continue };
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Invalid {
                origin: name.to_string(),
                key: "value",
                reason: "not valid UTF-8".into(),
            })?;
            // An empty variable counts as unset, as a systemd `Environment=KEY=` line means.
            if value.is_empty() {
                continue;
            }
            if name == CONFIG_ENV {
                config_path = Some(PathBuf::from(value));
                continue;
            }
            let key = key.to_ascii_lowercase();
            let raw = if LIST_KEYS.contains(&key.as_str()) {
                Raw::Many(value.split(',').map(|s| s.trim().to_string()).collect())
            } else {
                Raw::One(value)
            };
            env_layer.set(name, &key, raw)?;
        }
        let file_layer = match args.config.as_deref().or(config_path.as_deref()) {
            Some(path) => Layer::from_file(path)?,
            None => Layer::default(),
        };
        Layer::from_args(args)
            .over(env_layer)
            .over(file_layer)
            .into_config()
    }

    /// Timeouts of sealed-model loads: `Begin` and each chunk get the request timeout, `End` (digest
    /// check and plan building) the model-load timeout.
    pub fn loader_config(&self) -> crate::sealed_loader::LoaderConfig {
        crate::sealed_loader::LoaderConfig {
            call_timeout: self.request_timeout,
            finish_timeout: self.model_load_timeout,
            ..crate::sealed_loader::LoaderConfig::default()
        }
    }

    /// The enclave connection pool's part of this configuration.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            connections: self.connections,
            request_timeout: self.request_timeout,
            max_in_flight_per_connection: self.max_in_flight_per_connection,
            ..PoolConfig::new(self.enclave.clone())
        }
    }
}

/// Why the configuration is unusable. Messages name where the bad value came from (the file's
/// path or the environment variable) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{origin}: unknown key {key:?} (known: {known})", known = KEYS.join(", "))]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: invalid {key}: {reason}")]
    Invalid {
        origin: String,
        key: &'static str,
        reason: String,
    },
    #[error("no enclave endpoint: give --enclave, SEALED_HOST_ENCLAVE or `enclave` in the file")]
    MissingEnclave,
    #[error("kms_proxy needs proxy_allowlist")]
    ProxyWithoutAllowlist,
    #[error("{per_client_key} ({per_client}) is larger than {total_key} ({total})")]
    PerClientOverTotal {
        per_client_key: &'static str,
        per_client: u64,
        total_key: &'static str,
        total: u64,
    },
}

/// Every configuration key.
pub const KEYS: &[&str] = &[
    "enclave",
    "listen",
    "connections",
    "request_timeout_secs",
    "load_model",
    "kms_proxy",
    "proxy_allowlist",
    "aws_credentials",
    "imds_endpoint",
    "models_dir",
    "admin_listen",
    "metrics_listen",
    "log_format",
    "shutdown_grace_secs",
    "http_header_timeout_secs",
    "http_max_header_bytes",
    "http_idle_timeout_secs",
    "max_connections",
    "max_connections_per_client",
    "max_in_flight",
    "max_in_flight_per_client",
];
/// Keys that take a list.
const LIST_KEYS: &[&str] = &["load_model", "kms_proxy"];

/// One value as written in the file or the environment.
enum Raw {
    One(String),
    Many(Vec<String>),
}

/// The settings one source gives; `None` where it says nothing.
#[derive(Default)]
struct Layer {
    enclave: Option<Endpoint>,
    listen: Option<SocketAddr>,
    connections: Option<u64>,
    request_timeout_secs: Option<u64>,
    load_model: Option<Vec<ModelSpec>>,
    kms_proxy: Option<Vec<ProxySpec>>,
    proxy_allowlist: Option<PathBuf>,
    aws_credentials: Option<CredentialSourceKind>,
    imds_endpoint: Option<String>,
    models_dir: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    shutdown_grace_secs: Option<u64>,
    http_header_timeout_secs: Option<u64>,
    http_max_header_bytes: Option<u64>,
    http_idle_timeout_secs: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_client: Option<u64>,
    max_in_flight: Option<u64>,
    max_in_flight_per_client: Option<u64>,
}

impl Layer {
    fn from_args(a: Args) -> Layer {
        Layer {
            enclave: a.enclave,
            listen: a.listen,
            connections: a.connections,
            request_timeout_secs: a.request_timeout_secs,
            load_model: Some(a.load_model).filter(|v| !v.is_empty()),
            kms_proxy: Some(a.kms_proxy).filter(|v| !v.is_empty()),
            proxy_allowlist: a.proxy_allowlist,
            aws_credentials: a.aws_credentials,
            imds_endpoint: a.imds_endpoint,
            models_dir: a.models_dir,
            admin_listen: a.admin_listen,
            metrics_listen: a.metrics_listen,
            log_format: a.log_format,
            shutdown_grace_secs: a.shutdown_grace_secs,
            http_header_timeout_secs: a.http_header_timeout_secs,
            http_max_header_bytes: a.http_max_header_bytes,
            http_idle_timeout_secs: a.http_idle_timeout_secs,
            max_connections: a.max_connections,
            max_connections_per_client: a.max_connections_per_client,
            max_in_flight: a.max_in_flight,
            max_in_flight_per_client: a.max_in_flight_per_client,
        }
    }

    fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        // Bounded while reading, not by the metadata length: a FIFO or device reports 0, and a
        // file can grow between the two calls.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(path).map_err(read_err)?,
                MAX_CONFIG_FILE_LEN + 1,
            ),
            &mut bytes,
        )
        .map_err(read_err)?;
        if bytes.len() as u64 > MAX_CONFIG_FILE_LEN {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_CONFIG_FILE_LEN,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            ))
        })?;
        Layer::from_toml(&text, &path.display().to_string()).map_err(|e| match e {
            ConfigError::Toml { message, .. } => ConfigError::Toml {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses a TOML document of flat keys; `origin` names it in errors.
    fn from_toml(text: &str, origin: &str) -> Result<Layer, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: PathBuf::from(origin),
            message: e.message().to_string(),
        })?;
        let mut layer = Layer::default();
        for (key, value) in table {
            let scalar = |v: &toml::Value| match v {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(n) => Some(n.to_string()),
                _ => None,
            };
            let raw = match &value {
                toml::Value::Array(items) => Raw::Many(
                    items
                        .iter()
                        .map(|v| scalar(v).ok_or(()))
                        .collect::<Result<_, _>>()
                        .map_err(|()| ConfigError::Invalid {
                            origin: origin.to_string(),
                            key: static_key(&key).unwrap_or("value"),
                            reason: "array items must be strings".into(),
                        })?,
                ),
                other => Raw::One(scalar(other).ok_or_else(|| ConfigError::Invalid {
                    origin: origin.to_string(),
                    key: static_key(&key).unwrap_or("value"),
                    reason: "expected a string or an integer".into(),
                })?),
            };
            layer.set(origin, &key, raw)?;
        }
        Ok(layer)
    }

    /// Sets `key` from `raw`, parsing it as the flag's parser would.
    fn set(&mut self, origin: &str, key: &str, raw: Raw) -> Result<(), ConfigError> {
        let Some(key) = static_key(key) else {
            return Err(ConfigError::UnknownKey {
                origin: origin.to_string(),
                key: key.to_string(),
            });
        };
        let invalid = |reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            reason,
        };
        let one = |raw: Raw| match raw {
            Raw::One(s) => Ok(s),
            Raw::Many(_) => Err(invalid("expected one value, not a list".into())),
        };
        fn parse<T: FromStr>(s: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            s.parse::<T>().map_err(|e| format!("{s:?}: {e}"))
        }
        let ranged = |s: &str, range: RangeInclusive<u64>| {
            let n: u64 = parse(s).map_err(&invalid)?;
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(invalid(format!(
                    "{n} is not in {}..={}",
                    range.start(),
                    range.end()
                )))
            }
        };
        let list = |raw: Raw| match raw {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        match key {
            "enclave" => self.enclave = Some(parse(&one(raw)?).map_err(&invalid)?),
            "listen" => self.listen = Some(parse(&one(raw)?).map_err(&invalid)?),
            "connections" => self.connections = Some(ranged(&one(raw)?, CONNECTIONS_RANGE)?),
            "request_timeout_secs" => {
                self.request_timeout_secs = Some(ranged(&one(raw)?, REQUEST_TIMEOUT_RANGE)?);
            }
            "shutdown_grace_secs" => {
                self.shutdown_grace_secs = Some(ranged(&one(raw)?, SHUTDOWN_GRACE_RANGE)?);
            }
            "http_header_timeout_secs" => {
                self.http_header_timeout_secs = Some(ranged(&one(raw)?, HEADER_TIMEOUT_RANGE)?);
            }
            "http_max_header_bytes" => {
                self.http_max_header_bytes = Some(ranged(&one(raw)?, MAX_HEADER_BYTES_RANGE)?);
            }
            "http_idle_timeout_secs" => {
                self.http_idle_timeout_secs = Some(ranged(&one(raw)?, IDLE_TIMEOUT_RANGE)?);
            }
            "max_connections" => {
                self.max_connections = Some(ranged(&one(raw)?, CONNECTIONS_LIMIT_RANGE)?);
            }
            "max_connections_per_client" => {
                self.max_connections_per_client =
                    Some(ranged(&one(raw)?, CONNECTIONS_LIMIT_RANGE)?);
            }
            "max_in_flight" => {
                self.max_in_flight = Some(ranged(&one(raw)?, IN_FLIGHT_LIMIT_RANGE)?);
            }
            "max_in_flight_per_client" => {
                self.max_in_flight_per_client = Some(ranged(&one(raw)?, IN_FLIGHT_LIMIT_RANGE)?);
            }
            "load_model" => {
                self.load_model = Some(
                    list(raw)
                        .iter()
                        .map(|s| parse(s))
                        .collect::<Result<_, _>>()
                        .map_err(&invalid)?,
                );
            }
            "kms_proxy" => {
                self.kms_proxy = Some(
                    list(raw)
                        .iter()
                        .map(|s| parse(s))
                        .collect::<Result<_, _>>()
                        .map_err(&invalid)?,
                );
            }
            "proxy_allowlist" => self.proxy_allowlist = Some(PathBuf::from(one(raw)?)),
            "aws_credentials" => {
                let s = one(raw)?;
                self.aws_credentials = Some(
                    CredentialSourceKind::from_str(&s, false)
                        .map_err(|_| invalid(format!("{s:?}: expected imds, env or none")))?,
                );
            }
            "imds_endpoint" => self.imds_endpoint = Some(one(raw)?),
            "models_dir" => self.models_dir = Some(PathBuf::from(one(raw)?)),
            "admin_listen" => self.admin_listen = Some(parse(&one(raw)?).map_err(&invalid)?),
            "metrics_listen" => self.metrics_listen = Some(parse(&one(raw)?).map_err(&invalid)?),
            "log_format" => {
                let s = one(raw)?;
                self.log_format = Some(
                    LogFormat::from_str(&s, false)
                        .map_err(|_| invalid(format!("{s:?}: expected text or json")))?,
                );
            }
            // static_key only returns names from KEYS, all matched above.
            _ => return Err(invalid("unhandled key".into())),
        }
        Ok(())
    }

    /// This layer, with `lower` filling what it leaves unset.
    fn over(self, lower: Layer) -> Layer {
        Layer {
            enclave: self.enclave.or(lower.enclave),
            listen: self.listen.or(lower.listen),
            connections: self.connections.or(lower.connections),
            request_timeout_secs: self.request_timeout_secs.or(lower.request_timeout_secs),
            load_model: self.load_model.or(lower.load_model),
            kms_proxy: self.kms_proxy.or(lower.kms_proxy),
            proxy_allowlist: self.proxy_allowlist.or(lower.proxy_allowlist),
            aws_credentials: self.aws_credentials.or(lower.aws_credentials),
            imds_endpoint: self.imds_endpoint.or(lower.imds_endpoint),
            models_dir: self.models_dir.or(lower.models_dir),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            log_format: self.log_format.or(lower.log_format),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            http_header_timeout_secs: self
                .http_header_timeout_secs
                .or(lower.http_header_timeout_secs),
            http_max_header_bytes: self.http_max_header_bytes.or(lower.http_max_header_bytes),
            http_idle_timeout_secs: self.http_idle_timeout_secs.or(lower.http_idle_timeout_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            max_connections_per_client: self
                .max_connections_per_client
                .or(lower.max_connections_per_client),
            max_in_flight: self.max_in_flight.or(lower.max_in_flight),
            max_in_flight_per_client: self
                .max_in_flight_per_client
                .or(lower.max_in_flight_per_client),
        }
    }

    /// The final configuration: defaults for what no layer set.
    fn into_config(self) -> Result<Config, ConfigError> {
        let limits = self.http_limits()?;
        let enclave = self.enclave.ok_or(ConfigError::MissingEnclave)?;
        let listen = self
            .listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let kms_proxies = self.kms_proxy.unwrap_or_default();
        if !kms_proxies.is_empty() && self.proxy_allowlist.is_none() {
            return Err(ConfigError::ProxyWithoutAllowlist);
        }
        let request_timeout = self
            .request_timeout_secs
            .map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_secs);
        let defaults = Config::new(enclave, listen);
        Ok(Config {
            limits,
            connections: self
                .connections
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(DEFAULT_CONNECTIONS),
            request_timeout,
            http_timeout: request_timeout + HTTP_TIMEOUT_MARGIN,
            models: self.load_model.unwrap_or_default(),
            kms_proxies,
            proxy_allowlist: self.proxy_allowlist,
            aws_credentials: self.aws_credentials.unwrap_or(CredentialSourceKind::None),
            imds_endpoint: self.imds_endpoint,
            models_dir: self.models_dir,
            admin_listen: self.admin_listen,
            metrics_listen: self.metrics_listen,
            log_format: self.log_format.unwrap_or_default(),
            shutdown_grace: self
                .shutdown_grace_secs
                .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
            ..defaults
        })
    }

    /// The HTTP limits this layer stack sets, over the defaults. A per-client bound left at its
    /// default follows a smaller total; one set explicitly above its total is an error (it could
    /// never be reached, which is surely not what was meant).
    fn http_limits(&self) -> Result<HttpLimits, ConfigError> {
        let d = HttpLimits::default();
        let size = |n: Option<u64>, default: usize| {
            n.and_then(|n| usize::try_from(n).ok()).unwrap_or(default)
        };
        let pair = |total: Option<u64>,
                    per_client: Option<u64>,
                    (total_default, per_client_default): (usize, usize),
                    (total_key, per_client_key): (&'static str, &'static str)| {
            let total = size(total, total_default);
            match per_client {
                Some(n) if n > total as u64 => Err(ConfigError::PerClientOverTotal {
                    per_client_key,
                    per_client: n,
                    total_key,
                    total: total as u64,
                }),
                Some(n) => Ok((total, size(Some(n), per_client_default))),
                None => Ok((total, per_client_default.min(total))),
            }
        };
        let (max_connections, max_connections_per_client) = pair(
            self.max_connections,
            self.max_connections_per_client,
            (d.max_connections, d.max_connections_per_client),
            ("max_connections", "max_connections_per_client"),
        )?;
        let (max_in_flight, max_in_flight_per_client) = pair(
            self.max_in_flight,
            self.max_in_flight_per_client,
            (d.max_in_flight, d.max_in_flight_per_client),
            ("max_in_flight", "max_in_flight_per_client"),
        )?;
        Ok(HttpLimits {
            header_timeout: self
                .http_header_timeout_secs
                .map_or(d.header_timeout, Duration::from_secs),
            max_header_bytes: size(self.http_max_header_bytes, d.max_header_bytes),
            idle_timeout: self
                .http_idle_timeout_secs
                .map_or(d.idle_timeout, Duration::from_secs),
            max_connections,
            max_connections_per_client,
            max_in_flight,
            max_in_flight_per_client,
        })
    }
}

/// `key` as the static name in [`KEYS`], if it is one.
fn static_key(key: &str) -> Option<&'static str> {
    KEYS.iter().copied().find(|k| *k == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn parse_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
        let mut argv = vec!["sealed-host"];
        argv.extend_from_slice(args);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::resolve(args, env(vars)).map_err(|e| e.to_string())
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_with(args, &[])
    }

    fn write_config(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.display().to_string();
        (dir, path)
    }

    /// The shipped example (`deploy/host/host.toml`) parses, every key in it is known, and it sets
    /// the Nitro constants of the contract.
    #[test]
    fn parses_the_shipped_example_config() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/host/host.toml");
        let c = parse(&["--config", path]).unwrap();
        assert_eq!(
            c.enclave,
            Endpoint::Vsock {
                cid: 16,
                port: 5000
            }
        );
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.aws_credentials, CredentialSourceKind::Imds);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.kms_proxies.len(), 1);
        assert_eq!(c.kms_proxies[0].remote_port, 443);
        assert!(c.proxy_allowlist.is_some());
        assert!(c.models_dir.is_some());
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        // The example spells out every limit at its default.
        assert_eq!(c.limits, HttpLimits::default());
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_dir, path) = write_config(
            "enclave = \"unix:/file.sock\"\nlisten = \"127.0.0.1:1001\"\nconnections = 3\n\
             request_timeout_secs = 7\nlog_format = \"json\"\n",
        );
        let vars = [
            ("SEALED_HOST_CONFIG", path.as_str()),
            ("SEALED_HOST_LISTEN", "127.0.0.1:1002"),
            ("SEALED_HOST_CONNECTIONS", "5"),
            ("UNRELATED", "x"),
        ];
        let c = parse_with(&["--connections", "6"], &vars).unwrap();
        assert_eq!(c.enclave, Endpoint::Unix("/file.sock".into()), "file");
        assert_eq!(c.listen, "127.0.0.1:1002".parse().unwrap(), "env over file");
        assert_eq!(c.connections, 6, "flag over env and file");
        assert_eq!(c.request_timeout, Duration::from_secs(7), "file");
        assert_eq!(c.log_format, LogFormat::Json, "file");
        assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE, "default");
        // --config wins over SEALED_HOST_CONFIG.
        let (_dir2, other) = write_config("enclave = \"unix:/other.sock\"\n");
        let c = parse_with(&["--config", &other], &vars).unwrap();
        assert_eq!(c.enclave, Endpoint::Unix("/other.sock".into()));
    }

    #[test]
    fn lists_come_from_arrays_or_comma_separated_env() {
        let (_dir, path) = write_config(
            "enclave = \"unix:/e\"\nload_model = [\"a=/m/a.onnx\", \"b=/m/b.onnx\"]\n",
        );
        let c = parse(&["--config", &path]).unwrap();
        let ids: Vec<&str> = c.models.iter().map(|m| m.model_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let c = parse_with(
            &["--config", &path],
            &[("SEALED_HOST_LOAD_MODEL", "c=/m/c.onnx, d=/m/d.onnx")],
        )
        .unwrap();
        let ids: Vec<&str> = c.models.iter().map(|m| m.model_id.as_str()).collect();
        assert_eq!(ids, ["c", "d"], "a layer's list replaces the lower one");
        let c = parse(&["--config", &path, "--load-model", "e=/e.onnx"]).unwrap();
        assert_eq!(c.models.len(), 1);
    }

    #[test]
    fn refuses_a_config_file_over_the_limit_while_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        // Valid TOML comments, just too many of them.
        let line = "# padding padding padding padding padding padding padding padding\n";
        let text = line.repeat((MAX_CONFIG_FILE_LEN as usize / line.len()) + 1);
        std::fs::write(&big, &text).unwrap();
        assert!(matches!(
            Layer::from_file(&big),
            Err(ConfigError::TooLarge { .. })
        ));
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "connections = 2\n").unwrap();
        assert!(Layer::from_file(&ok).is_ok());
    }

    #[test]
    fn refuses_unknown_keys_and_variables() {
        let (_dir, path) = write_config("enclave = \"unix:/e\"\nlisten_addr = \"0.0.0.0:1\"\n");
        let err = parse(&["--config", &path]).unwrap_err();
        assert!(err.contains("unknown key \"listen_addr\""), "{err}");
        assert!(err.contains(&path), "names the file: {err}");
        let err = parse_with(
            &["--enclave", "unix:/e"],
            &[("SEALED_HOST_REQUEST_TIMEOUT", "5")],
        )
        .unwrap_err();
        assert!(err.contains("SEALED_HOST_REQUEST_TIMEOUT"), "{err}");
    }

    #[test]
    fn refuses_bad_values_from_file_and_env_naming_the_source() {
        for (text, key) in [
            ("enclave = \"tcp:1.2.3.4:5\"", "enclave"),
            ("enclave = \"unix:/e\"\nconnections = 0", "connections"),
            (
                "enclave = \"unix:/e\"\nconnections = \"many\"",
                "connections",
            ),
            ("enclave = \"unix:/e\"\nlog_format = \"xml\"", "log_format"),
            ("enclave = \"unix:/e\"\nlisten = [\"a\", \"b\"]", "listen"),
            (
                "enclave = \"unix:/e\"\nshutdown_grace_secs = 99999",
                "shutdown_grace_secs",
            ),
            ("enclave = \"unix:/e\"\nadmin_listen = true", "admin_listen"),
        ] {
            let (_dir, path) = write_config(text);
            let err = parse(&["--config", &path]).unwrap_err();
            assert!(err.contains(key) && err.contains(&path), "{text}: {err}");
        }
        let (_dir, path) = write_config("enclave = ");
        let err = parse(&["--config", &path]).unwrap_err();
        assert!(err.contains("not valid TOML"), "{err}");
        let err = parse_with(&[], &[("SEALED_HOST_ENCLAVE", "nope")]).unwrap_err();
        assert!(err.contains("SEALED_HOST_ENCLAVE"), "{err}");
        let err = parse(&["--config", "/nonexistent/host.toml"]).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let err = parse(&[]).unwrap_err();
        assert!(err.contains("no enclave endpoint"), "{err}");
    }

    #[test]
    fn parses_log_format_metrics_and_grace_flags() {
        let c = parse(&[
            "--enclave",
            "unix:/e",
            "--log-format",
            "json",
            "--metrics-listen",
            "127.0.0.1:0",
            "--shutdown-grace-secs",
            "0",
        ])
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert!(parse(&["--enclave", "unix:/e", "--log-format", "xml"]).is_err());
        // Empty variables count as unset.
        let c = parse_with(&["--enclave", "unix:/e"], &[("SEALED_HOST_LISTEN", "")]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn applies_defaults() {
        let c = parse(&["--enclave", "unix:/tmp/e.sock"]).unwrap();
        assert_eq!(c.enclave, Endpoint::Unix("/tmp/e.sock".into()));
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.connections, 4);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert!(c.http_timeout > c.request_timeout);
        assert!(c.models.is_empty());
        assert!(c.kms_proxies.is_empty());
        assert_eq!(c.aws_credentials, CredentialSourceKind::None);
        assert!(c.admin_listen.is_none(), "the admin API is off by default");
        assert!(c.models_dir.is_none());
        assert!(c.metrics_listen.is_none(), "metrics are off by default");
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn parses_sealed_model_flags() {
        let c = parse(&[
            "--enclave",
            "unix:/e",
            "--kms-proxy",
            "unix:/tmp/kms.sock=localhost:4443",
            "--kms-proxy",
            "vsock:3:8000=kms.us-east-1.amazonaws.com:443",
            "--proxy-allowlist",
            "/etc/nitro_enclaves/vsock-proxy.yaml",
            "--aws-credentials",
            "imds",
            "--imds-endpoint",
            "http://127.0.0.1:1338",
            "--models-dir",
            "/models",
            "--admin-listen",
            "127.0.0.1:9090",
        ])
        .unwrap();
        assert_eq!(c.kms_proxies.len(), 2);
        assert_eq!(c.kms_proxies[1].remote_port, 443);
        assert_eq!(c.aws_credentials, CredentialSourceKind::Imds);
        assert_eq!(c.imds_endpoint.as_deref(), Some("http://127.0.0.1:1338"));
        assert_eq!(c.models_dir, Some(PathBuf::from("/models")));
        assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn http_limits_come_from_flags_env_and_file_with_defaults() {
        let c = parse(&["--enclave", "unix:/e"]).unwrap();
        assert_eq!(c.limits, HttpLimits::default());
        assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_header_bytes, 16 * 1024);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            (
                c.limits.max_connections,
                c.limits.max_connections_per_client
            ),
            (1024, 64)
        );
        assert_eq!(
            (c.limits.max_in_flight, c.limits.max_in_flight_per_client),
            (256, 32)
        );
        let (_dir, path) = write_config(
            "enclave = \"unix:/e\"\nhttp_header_timeout_secs = 3\nhttp_max_header_bytes = 8192\n\
             max_connections = 100\nmax_in_flight = 50\nmax_in_flight_per_client = 5\n",
        );
        let c = parse_with(
            &[
                "--config",
                &path,
                "--http-idle-timeout-secs",
                "7",
                "--max-in-flight-per-client",
                "6",
            ],
            &[("SEALED_HOST_MAX_CONNECTIONS_PER_CLIENT", "9")],
        )
        .unwrap();
        assert_eq!(c.limits.header_timeout, Duration::from_secs(3), "file");
        assert_eq!(c.limits.max_header_bytes, 8192, "file");
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(7), "flag");
        assert_eq!(c.limits.max_connections, 100, "file");
        assert_eq!(c.limits.max_connections_per_client, 9, "env");
        assert_eq!(c.limits.max_in_flight, 50, "file");
        assert_eq!(c.limits.max_in_flight_per_client, 6, "flag over file");
        // A per-client bound left at its default follows a smaller total.
        let c = parse(&["--enclave", "unix:/e", "--max-in-flight", "10"]).unwrap();
        assert_eq!(c.limits.max_in_flight_per_client, 10);
    }

    #[test]
    fn refuses_bad_http_limits() {
        for args in [
            ["--http-header-timeout-secs", "0"],
            ["--http-max-header-bytes", "4096"],
            ["--http-idle-timeout-secs", "0"],
            ["--max-connections", "0"],
            ["--max-in-flight-per-client", "0"],
        ] {
            let mut argv = vec!["--enclave", "unix:/e"];
            argv.extend(args);
            assert!(parse(&argv).is_err(), "{args:?}");
        }
        for (text, key) in [
            ("http_max_header_bytes = 100", "http_max_header_bytes"),
            ("http_header_timeout_secs = 301", "http_header_timeout_secs"),
            ("max_in_flight = \"many\"", "max_in_flight"),
        ] {
            let (_dir, path) = write_config(&format!("enclave = \"unix:/e\"\n{text}\n"));
            let err = parse(&["--config", &path]).unwrap_err();
            assert!(err.contains(key) && err.contains(&path), "{text}: {err}");
        }
        let err = parse(&[
            "--enclave",
            "unix:/e",
            "--max-connections",
            "10",
            "--max-connections-per-client",
            "11",
        ])
        .unwrap_err();
        assert!(
            err.contains("max_connections_per_client (11) is larger than max_connections (10)"),
            "{err}"
        );
        let err = parse_with(
            &["--enclave", "unix:/e"],
            &[("SEALED_HOST_MAX_IN_FLIGHT_PER_CLIENT", "257")],
        )
        .unwrap_err();
        assert!(err.contains("max_in_flight_per_client"), "{err}");
    }

    #[test]
    fn a_kms_proxy_needs_an_allowlist() {
        assert!(parse(&["--enclave", "unix:/e", "--kms-proxy", "unix:/k=localhost:1"]).is_err());
        assert!(parse(&["--enclave", "unix:/e", "--kms-proxy", "unix:/k"]).is_err());
        assert!(parse(&["--enclave", "unix:/e", "--aws-credentials", "ec2"]).is_err());
    }

    #[test]
    fn parses_every_flag() {
        let c = parse(&[
            "--enclave",
            "vsock:16:5000",
            "--listen",
            "0.0.0.0:0",
            "--connections",
            "2",
            "--request-timeout-secs",
            "5",
            "--load-model",
            "mlp=/m/mlp.onnx",
            "--load-model",
            "cnn.v2=/m/cnn.onnx",
        ])
        .unwrap();
        assert_eq!(
            c.enclave,
            Endpoint::Vsock {
                cid: 16,
                port: 5000
            }
        );
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.connections, 2);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        let ids: Vec<&str> = c.models.iter().map(|m| m.model_id.as_str()).collect();
        assert_eq!(ids, ["mlp", "cnn.v2"]);
        assert_eq!(c.pool_config().connections, 2);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&[]).is_err(), "--enclave is required");
        assert!(parse(&["--enclave", "tcp:1.2.3.4:5"]).is_err());
        assert!(parse(&["--enclave", "unix:/e", "--connections", "0"]).is_err());
        assert!(parse(&["--enclave", "unix:/e", "--request-timeout-secs", "0"]).is_err());
        assert!(parse(&["--enclave", "unix:/e", "--load-model", "no-path"]).is_err());
        assert!(parse(&["--enclave", "unix:/e", "--load-model", "bad id=/m"]).is_err());
    }
}
