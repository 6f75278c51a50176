//! The KMS proxy: an allowlisted byte forwarder from the enclave to `host:port` pairs, the job AWS's
//! `vsock-proxy` does on a parent instance (`nitro-facts.md` §5).
//!
//! `--kms-proxy LISTEN=HOST:PORT` listens on `LISTEN` (`vsock:3:8000` on Nitro, `unix:/PATH` in
//! simulation, through the same [`sealed_transport::Listener`]) and joins every connection to a
//! fresh TCP connection to `HOST:PORT`. The remote must be in `--proxy-allowlist`, a file in the
//! vsock-proxy YAML shape (`allowlist: - {address: HOST, port: PORT}`), checked once at start like
//! vsock-proxy's `check_allowlist`: the port must match, then the host name (ASCII
//! case-insensitive, as DNS names are), else the addresses the two names resolve to.
//!
//! What it does not do: look at the bytes. TLS runs end to end between the enclave and KMS, and
//! the enclave verifies KMS's certificate itself; the proxy sees ciphertext only and logs
//! connection counts, byte counts and durations, never payload. It does not pick the remote from
//! anything the enclave sends: the target is fixed by configuration.
//!
//! # Layout
//! - [`Allowlist`]: parse the YAML ([`Allowlist::parse`]) and check a remote ([`Allowlist::check`]).
//! - [`ProxySpec`]: one `--kms-proxy` argument.
//! - [`spawn`] → [`ProxyHandle`]: the accept loop; `relay`: one connection, both ways.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sealed_transport::{BoxRead, BoxWrite, Endpoint, Listener, TransportError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Largest allowlist file read (AWS's default lists ~50 entries in under 3 KB).
pub const MAX_ALLOWLIST_LEN: usize = 1024 * 1024;
/// Longest host name accepted (RFC 1035 §2.3.4: 255 octets on the wire, 253 as text).
pub const MAX_HOST_LEN: usize = 253;
/// Default bound on proxied connections open at once; more are closed at accept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default time a proxied connection may carry no byte in either direction before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time to open the TCP connection to the remote.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes moved per read; one buffer per direction per connection.
const RELAY_BUFFER_LEN: usize = 16 * 1024;

/// Why the allowlist could not be read, or a remote is not on it.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("cannot read the allowlist {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("allowlist file is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("allowlist is not valid YAML: {0}")]
    Yaml(String),
    #[error("allowlist uses YAML aliases, which this format never needs")]
    Alias,
    #[error("allowlist has no `allowlist` sequence at the top level")]
    NoAllowlist,
    #[error("allowlist entry {index}: {reason}")]
    BadEntry { index: usize, reason: &'static str },
    #[error("{host}:{port} is not in the proxy allowlist")]
    NotAllowed { host: String, port: u16 },
}

/// One allowed remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRemote {
    pub address: String,
    pub port: u16,
}

/// The parsed `--proxy-allowlist` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist {
    pub entries: Vec<AllowedRemote>,
}

/// Resolves a host name to addresses; the system resolver in production, a table in tests (which
/// must never look up a real name).
pub trait Resolve: Sync {
    fn resolve(&self, host: &str) -> impl Future<Output = std::io::Result<Vec<IpAddr>>> + Send;
}

/// The system resolver (`getaddrinfo` through tokio).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        // The port is irrelevant to the lookup; getaddrinfo wants one.
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}

/// Rejects alias events before the document is built: yaml-rust2 expands an alias by cloning the
/// anchored node, so nested aliases could make a small file expand without bound.
struct NoAliases {
    alias: bool,
}

impl MarkedEventReceiver for NoAliases {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        if matches!(event, Event::Alias(_)) {
            self.alias = true;
        }
    }
}

impl Allowlist {
    /// Reads and parses an allowlist file, refusing one over [`MAX_ALLOWLIST_LEN`] before reading.
    pub async fn load(path: &Path) -> Result<Allowlist, AllowlistError> {
        let read_err = |source| AllowlistError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = tokio::fs::metadata(path).await.map_err(read_err)?.len();
        if len > MAX_ALLOWLIST_LEN as u64 {
            return Err(AllowlistError::TooLarge {
                max: MAX_ALLOWLIST_LEN,
            });
        }
        let text = tokio::fs::read_to_string(path).await.map_err(read_err)?;
        Allowlist::parse(&text)
    }

    /// Parses the vsock-proxy YAML: a top-level map whose `allowlist` is a sequence of maps, each
    /// with a string `address` and an integer `port` (other keys ignored, as vsock-proxy does).
    /// An empty sequence is valid and allows nothing.
    pub fn parse(text: &str) -> Result<Allowlist, AllowlistError> {
        if text.len() > MAX_ALLOWLIST_LEN {
            return Err(AllowlistError::TooLarge {
                max: MAX_ALLOWLIST_LEN,
            });
        }
        let mut scan = NoAliases { alias: false };
        Parser::new_from_str(text)
            .load(&mut scan, true)
            .map_err(|e| AllowlistError::Yaml(e.to_string()))?;
        if scan.alias {
            return Err(AllowlistError::Alias);
        }
        let docs = yaml_rust2::YamlLoader::load_from_str(text)
            .map_err(|e| AllowlistError::Yaml(e.to_string()))?;
        let list = match docs.first() {
            Some(Yaml::Hash(map)) => map.get(&Yaml::String("allowlist".into())),
            _ => None,
        };
        let Some(Yaml::Array(items)) = list else {
            return Err(AllowlistError::NoAllowlist);
        };
        let entries = items
            .iter()
            .enumerate()
            .map(|(index, item)| parse_entry(index, item))
            .collect::<Result<_, _>>()?;
        Ok(Allowlist { entries })
    }

    /// Checks `host:port` as vsock-proxy does: entries with the same port, by name first (no
    /// lookup), then by resolved address. A lookup failure counts as no match.
    pub async fn check<R: Resolve>(
        &self,
        host: &str,
        port: u16,
        resolver: &R,
    ) -> Result<(), AllowlistError> {
        let not_allowed = || AllowlistError::NotAllowed {
            host: host.to_string(),
            port,
        };
        let candidates: Vec<&AllowedRemote> =
            self.entries.iter().filter(|e| e.port == port).collect();
        if candidates.is_empty() {
            return Err(not_allowed());
        }
        if candidates
            .iter()
            .any(|e| e.address.eq_ignore_ascii_case(host))
        {
            return Ok(());
        }
        let remote: HashSet<IpAddr> = match resolver.resolve(host).await {
            Ok(addrs) => addrs.into_iter().collect(),
            Err(e) => {
                warn!(host, error = %e, "cannot resolve the proxy remote");
                return Err(not_allowed());
            }
        };
        for entry in candidates {
            match resolver.resolve(&entry.address).await {
                Ok(addrs) if addrs.iter().any(|a| remote.contains(a)) => {
                    info!(host, allowed = %entry.address, port, "proxy remote allowed by address");
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(allowed = %entry.address, error = %e, "cannot resolve an allowlist entry")
                }
            }
        }
        Err(not_allowed())
    }
}

fn parse_entry(index: usize, item: &Yaml) -> Result<AllowedRemote, AllowlistError> {
    let bad = |reason| AllowlistError::BadEntry { index, reason };
    let Yaml::Hash(map) = item else {
        return Err(bad("expected a map with `address` and `port`"));
    };
    let address = match map.get(&Yaml::String("address".into())) {
        Some(Yaml::String(s)) => s.clone(),
        Some(_) => return Err(bad("`address` must be a string")),
        None => return Err(bad("missing `address`")),
    };
    if !valid_host(&address) {
        return Err(bad("`address` is not a host name or IP address"));
    }
    let port = match map.get(&Yaml::String("port".into())) {
        Some(Yaml::Integer(p)) => u16::try_from(*p)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("`port` must be 1..=65535"))?,
        Some(_) => return Err(bad("`port` must be an integer")),
        None => return Err(bad("missing `port`")),
    };
    Ok(AllowedRemote { address, port })
}

/// A DNS name (letters, digits, `-`, `.`, `_`) or an IP literal; nothing that could smuggle a
/// path, a port or whitespace.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && (host.parse::<IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
}

/// One `--kms-proxy LISTEN=HOST:PORT` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub listen: Endpoint,
    pub remote_host: String,
    pub remote_port: u16,
}

/// Why a `--kms-proxy` argument is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxySpecError {
    #[error("expected LISTEN=HOST:PORT, e.g. vsock:3:8000=kms.us-east-1.amazonaws.com:443")]
    Shape,
    #[error("invalid listen endpoint {0:?}: expected unix:/PATH or vsock:CID:PORT")]
    Listen(String),
    #[error("invalid remote host {0:?}")]
    Host(String),
    #[error("invalid remote port {0:?}")]
    Port(String),
}

impl FromStr for ProxySpec {
    type Err = ProxySpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The remote has no `=`; a Unix socket path might.
        let (listen, remote) = s.rsplit_once('=').ok_or(ProxySpecError::Shape)?;
        let listen: Endpoint = listen
            .parse()
            .map_err(|_| ProxySpecError::Listen(listen.to_string()))?;
        let (host, port) = remote.rsplit_once(':').ok_or(ProxySpecError::Shape)?;
        // `[::1]:443`: brackets around an IPv6 literal.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if !valid_host(host) {
            return Err(ProxySpecError::Host(host.to_string()));
        }
        let remote_port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| ProxySpecError::Port(port.to_string()))?;
        Ok(ProxySpec {
            listen,
            remote_host: host.to_string(),
            remote_port,
        })
    }
}

impl std::fmt::Display for ProxySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.remote_host.contains(':') {
            write!(
                f,
                "{}=[{}]:{}",
                self.listen, self.remote_host, self.remote_port
            )
        } else {
            write!(
                f,
                "{}={}:{}",
                self.listen, self.remote_host, self.remote_port
            )
        }
    }
}

/// Limits of one proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {endpoint}")]
    Bind {
        endpoint: String,
        #[source]
        source: TransportError,
    },
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicUsize,
}

/// A running proxy. Dropping it stops accepting and closes every proxied connection.
pub struct ProxyHandle {
    spec: ProxySpec,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl ProxyHandle {
    pub fn spec(&self) -> &ProxySpec {
        &self.spec
    }
    /// Connections accepted so far (including ones refused over the limit).
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed at once because the limit was reached.
    pub fn refused(&self) -> u64 {
        self.stats.refused.load(Ordering::Relaxed)
    }
    /// Proxied connections open now.
    pub fn open(&self) -> usize {
        self.stats.open.load(Ordering::Relaxed)
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `spec.listen` and serves it in the background. The remote must already have passed
/// [`Allowlist::check`]; this function does not check it again. Must run inside a tokio runtime.
pub fn spawn(spec: ProxySpec, config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let listener = Listener::bind(&spec.listen).map_err(|source| ProxyError::Bind {
        endpoint: spec.listen.to_string(),
        source,
    })?;
    info!(proxy = %spec, max_connections = config.max_connections, "KMS proxy listening");
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(accept_loop(
        listener,
        spec.clone(),
        config,
        Arc::clone(&stats),
    ));
    Ok(ProxyHandle { spec, stats, task })
}

async fn accept_loop(listener: Listener, spec: ProxySpec, config: ProxyConfig, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    // Dropping the set (when the accept task is aborted) aborts every relay.
    let mut relays = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        // Reap finished relays so the set does not grow with the connection count.
        while relays.try_join_next().is_some() {}
        let (read, write) = match listener.accept().await {
            Ok(halves) => halves,
            Err(e) => {
                warn!(proxy = %spec, error = %e, "KMS proxy accept failed");
                // An accept error (e.g. out of file descriptors) must not become a busy loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id = next_id.wrapping_add(1);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(proxy = %spec, limit = config.max_connections, "KMS proxy at its connection limit; closing a new connection");
            continue;
        };
        let (spec, config, stats) = (spec.clone(), config.clone(), Arc::clone(&stats));
        relays.spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            relay_connection(next_id, &spec, &config, read, write).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

async fn relay_connection(
    id: u64,
    spec: &ProxySpec,
    config: &ProxyConfig,
    inner_read: BoxRead,
    inner_write: BoxWrite,
) {
    let started = Instant::now();
    let target = (spec.remote_host.as_str(), spec.remote_port);
    let remote = match tokio::time::timeout(
        config.connect_timeout,
        tokio::net::TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            warn!(connection = id, remote = %spec.remote_host, port = spec.remote_port, error = %e, "KMS proxy cannot reach the remote");
            return;
        }
        Err(_) => {
            warn!(connection = id, remote = %spec.remote_host, port = spec.remote_port, "KMS proxy connect timed out");
            return;
        }
    };
    // TLS records are small and latency-bound; do not hold them back.
    let _ = remote.set_nodelay(true);
    let (remote_read, remote_write) = remote.into_split();
    let outcome = relay(
        inner_read,
        inner_write,
        remote_read,
        remote_write,
        config.idle_timeout,
    )
    .await;
    info!(
        connection = id,
        remote = %spec.remote_host,
        to_remote = outcome.a_to_b,
        from_remote = outcome.b_to_a,
        end = outcome.end,
        duration_ms = started.elapsed().as_millis() as u64,
        "KMS proxy connection closed"
    );
}

/// What one relay did: bytes each way and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOutcome {
    pub a_to_b: u64,
    pub b_to_a: u64,
    pub end: &'static str,
}

/// Copies bytes both ways until both sides have closed, one fails, or nothing moved for
/// `idle_timeout`. An end of stream on one side is passed on as a write shutdown (TCP half-close)
/// to the other, which may still answer: a TLS peer sends `close_notify` and then reads the
/// other's.
pub async fn relay<AR, AW, BR, BW>(
    mut a_read: AR,
    mut a_write: AW,
    mut b_read: BR,
    mut b_write: BW,
    idle_timeout: Duration,
) -> RelayOutcome
where
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    let mut a_buf = vec![0u8; RELAY_BUFFER_LEN];
    let mut b_buf = vec![0u8; RELAY_BUFFER_LEN];
    let (mut a_open, mut b_open) = (true, true);
    let mut outcome = RelayOutcome {
        a_to_b: 0,
        b_to_a: 0,
        end: "closed",
    };
    while a_open || b_open {
        // `read` is cancel-safe: the losing branch of the select loses no bytes.
        let step = tokio::time::timeout(idle_timeout, async {
            tokio::select! {
                r = a_read.read(&mut a_buf), if a_open => (true, r),
                r = b_read.read(&mut b_buf), if b_open => (false, r),
            }
        })
        .await;
        let (from_a, read) = match step {
            Ok(step) => step,
            Err(_) => {
                outcome.end = "idle timeout";
                break;
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(_) => {
                outcome.end = "read error";
                break;
            }
        };
        let forwarded = if from_a {
            forward(&a_buf, n, &mut b_write, &mut a_open, &mut outcome.a_to_b).await
        } else {
            forward(&b_buf, n, &mut a_write, &mut b_open, &mut outcome.b_to_a).await
        };
        if let Err(end) = forwarded {
            outcome.end = end;
            break;
        }
    }
    // Both halves drop here, closing both connections.
    outcome
}

/// Writes the `n` bytes just read to `dst`, or passes an end of stream (`n == 0`) on as a write
/// shutdown and marks the source closed; the other direction keeps going.
async fn forward<W: AsyncWrite + Unpin>(
    buf: &[u8],
    n: usize,
    dst: &mut W,
    source_open: &mut bool,
    count: &mut u64,
) -> Result<(), &'static str> {
    if n == 0 {
        let _ = dst.shutdown().await;
        *source_open = false;
        return Ok(());
    }
    let data = buf.get(..n).ok_or("read overflow")?;
    dst.write_all(data).await.map_err(|_| "write error")?;
    *count += n as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_specs() {
        let spec: ProxySpec = "vsock:3:8000=kms.us-east-1.amazonaws.com:443"
            .parse()
            .unwrap();
        assert_eq!(spec.listen, Endpoint::Vsock { cid: 3, port: 8000 });
        assert_eq!(spec.remote_host, "kms.us-east-1.amazonaws.com");
        assert_eq!(spec.remote_port, 443);
        assert_eq!(
            spec.to_string(),
            "vsock:3:8000=kms.us-east-1.amazonaws.com:443"
        );

        let spec: ProxySpec = "unix:/tmp/a=b/kms.sock=localhost:4443".parse().unwrap();
        assert_eq!(spec.listen, Endpoint::Unix("/tmp/a=b/kms.sock".into()));
        assert_eq!(
            (spec.remote_host.as_str(), spec.remote_port),
            ("localhost", 4443)
        );

        let spec: ProxySpec = "unix:/k.sock=[::1]:443".parse().unwrap();
        assert_eq!(spec.remote_host, "::1");
        assert_eq!(spec.to_string(), "unix:/k.sock=[::1]:443");

        for bad in [
            "unix:/k.sock",
            "unix:/k.sock=localhost",
            "unix:/k.sock=localhost:0",
            "unix:/k.sock=localhost:70000",
            "unix:/k.sock=:443",
            "unix:/k.sock=a b:443",
            "tcp:1.2.3.4:5=localhost:443",
        ] {
            assert!(bad.parse::<ProxySpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_are_restricted() {
        assert!(valid_host("kms.us-east-1.amazonaws.com"));
        assert!(valid_host("127.0.0.1"));
        assert!(valid_host("::1"));
        assert!(!valid_host(""));
        assert!(!valid_host("a/b"));
        assert!(!valid_host("a b"));
        assert!(!valid_host(&"a".repeat(MAX_HOST_LEN + 1)));
    }
}
