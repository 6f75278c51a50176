//! Command-line arguments and the runtime configuration derived from them.
//!
//! [`Args`] is the clap surface (`sealed-host --enclave … --listen …`); [`Config`] is what the rest
//! of the crate takes, with every duration and bound resolved, so that tests can build one directly
//! (for example with a 200 ms request timeout) without going through the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sealed_transport::Endpoint;

use crate::credentials::{CredentialSourceKind, DEFAULT_REFRESH_MARGIN};
use crate::enclave_pool::PoolConfig;
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

/// `sealed-host`: the untrusted relay between HTTP clients and the enclave.
#[derive(Debug, Parser)]
#[command(name = "sealed-host", version, about)]
pub struct Args {
    /// Enclave endpoint: `unix:/PATH` (simulation) or `vsock:CID:PORT` (Nitro).
    #[arg(long, value_name = "ENDPOINT")]
    pub enclave: Endpoint,

    /// Address for the client HTTP API. Port 0 picks a free port; the bound address is printed on
    /// stdout as `sealed-host listening on http://ADDR`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Persistent connections to the enclave; each multiplexes many requests.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections: u64,

    /// Seconds the enclave has to answer a request before the client gets 504 `timeout`.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Load a plaintext ONNX model at startup (simulation enclaves only; a production enclave
    /// refuses with `plaintext_models_disabled` and startup fails). Repeatable.
    #[arg(long = "load-model", value_name = "ID=PATH")]
    pub load_model: Vec<ModelSpec>,

    /// Forward connections from the enclave on LISTEN (`vsock:3:8000` on Nitro, `unix:/PATH` in
    /// simulation) to HOST:PORT, which must be in --proxy-allowlist. The enclave reaches KMS
    /// through this; TLS runs end to end. Repeatable.
    #[arg(
        long = "kms-proxy",
        value_name = "LISTEN=HOST:PORT",
        requires = "proxy_allowlist"
    )]
    pub kms_proxy: Vec<ProxySpec>,

    /// Allowlist for --kms-proxy remotes, in the AWS vsock-proxy YAML format
    /// (`allowlist: - {address: kms.us-east-1.amazonaws.com, port: 443}`).
    #[arg(long, value_name = "FILE")]
    pub proxy_allowlist: Option<PathBuf>,

    /// Where the AWS credentials handed to the enclave for KMS come from: `imds` (the instance
    /// role, IMDSv2), `env` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), or
    /// `none` (sealed models cannot be loaded).
    #[arg(long, value_name = "SOURCE", value_enum, default_value_t = CredentialSourceKind::None)]
    pub aws_credentials: CredentialSourceKind,

    /// IMDS base URL for --aws-credentials imds (default: AWS_EC2_METADATA_SERVICE_ENDPOINT, else
    /// http://169.254.169.254); the mock IMDS in simulation.
    #[arg(long, value_name = "URL")]
    pub imds_endpoint: Option<String>,

    /// Load every `*.sealed` file in DIR at startup, in name order; startup fails if one fails.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// Address for the admin API (`POST /v1/admin/models`); off unless given. Bind it where only
    /// operators can reach it: it has no authentication of its own.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
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
        }
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

impl From<Args> for Config {
    fn from(args: Args) -> Config {
        let request_timeout = Duration::from_secs(args.request_timeout_secs);
        Config {
            // Bounded to 1..=64 by the clap value parser.
            connections: usize::try_from(args.connections).unwrap_or(DEFAULT_CONNECTIONS),
            request_timeout,
            http_timeout: request_timeout + HTTP_TIMEOUT_MARGIN,
            models: args.load_model,
            kms_proxies: args.kms_proxy,
            proxy_allowlist: args.proxy_allowlist,
            aws_credentials: args.aws_credentials,
            imds_endpoint: args.imds_endpoint,
            models_dir: args.models_dir,
            admin_listen: args.admin_listen,
            ..Config::new(args.enclave, args.listen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut argv = vec!["sealed-host"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).map(Config::from)
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
