//! A mock EC2 instance metadata service (IMDSv2 only) for simulation and tests: the host's
//! `--aws-credentials imds --imds-endpoint http://127.0.0.1:PORT` gets instance-role credentials
//! from it exactly as it would on EC2.
//!
//! Behaviour follows the EC2 user guide ("Use the Instance Metadata Service to access instance
//! metadata", IMDSv2):
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600` returns a
//!   session token and echoes the TTL header; a missing or out-of-range TTL is 400, and a request
//!   carrying `X-Forwarded-For` is 403 (IMDS refuses tokens through proxies).
//! - every `GET` needs a live `X-aws-ec2-metadata-token`, else 401 (IMDSv1 is off, as AWS
//!   recommends);
//! - `GET /latest/meta-data/iam/security-credentials/` lists the role name;
//!   `GET …/security-credentials/ROLE` returns the credentials JSON (`Code`, `LastUpdated`,
//!   `Type`, `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`) with `Expiration` =
//!   now + the configured lifetime; another role is 404;
//! - `GET /latest/meta-data/placement/region` returns the region.
//!
//! It is a test tool: one request per connection (`Connection: close`), request heads bounded to
//! 8 KiB, loopback only by the caller's choice of listener. It never logs the secrets it serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Largest request head read.
const MAX_HEAD_LEN: usize = 8 * 1024;
/// Largest request body read (and discarded).
const MAX_BODY_LEN: usize = 1024;
/// IMDSv2 token TTL bounds (seconds).
pub const MAX_TOKEN_TTL: u64 = 21_600;
/// Most live tokens remembered; the oldest are dropped past it.
const MAX_TOKENS: usize = 1024;
const TOKEN_PATH: &str = "/latest/api/token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const REGION_PATH: &str = "/latest/meta-data/placement/region";

/// Requests the mock has seen, by kind.
#[derive(Debug, Default)]
pub struct ImdsStats {
    pub tokens_issued: AtomicU64,
    pub credentials_served: AtomicU64,
    /// Requests refused for a missing, unknown or expired token.
    pub unauthorized: AtomicU64,
}

impl ImdsStats {
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::SeqCst)
    }
    pub fn credentials_served(&self) -> u64 {
        self.credentials_served.load(Ordering::SeqCst)
    }
    pub fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Ordering::SeqCst)
    }
}

/// What the mock serves.
#[derive(Clone)]
pub struct ImdsConfig {
    pub role: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Each credentials response expires this long after it is served.
    pub credential_lifetime: Duration,
    pub stats: Arc<ImdsStats>,
}

// The secret and the token never reach a log through Debug.
impl std::fmt::Debug for ImdsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsConfig")
            .field("role", &self.role)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("credential_lifetime", &self.credential_lifetime)
            .finish_non_exhaustive()
    }
}

impl ImdsConfig {
    /// A role `sealed-host-role` in `us-east-1` handing out the given key pair and token, valid
    /// for six hours per response (as EC2's instance-role credentials are).
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: &str) -> ImdsConfig {
        ImdsConfig {
            role: "sealed-host-role".into(),
            region: "us-east-1".into(),
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.into(),
            credential_lifetime: Duration::from_secs(6 * 3600),
            stats: Arc::new(ImdsStats::default()),
        }
    }
}

struct State {
    config: ImdsConfig,
    tokens: Mutex<HashMap<String, Instant>>,
    next_token: AtomicU64,
}

/// Serves IMDSv2 on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, config: ImdsConfig) {
    let state = Arc::new(State {
        config,
        tokens: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(1),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            // A client that stalls is cut off rather than holding a task forever.
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, &state)).await;
        });
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

async fn handle(mut stream: TcpStream, state: &State) {
    let response = match read_request(&mut stream).await {
        Some(request) => respond(&request, state).await,
        None => Response::text(400, "Bad Request"),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nServer: EC2ws\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(response.body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() >= MAX_HEAD_LEN {
            return None;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    };
    let head = std::str::from_utf8(buf.get(..head_end)?).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?;
    let path = target.split('?').next()?.to_string();
    let mut headers = HashMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    // Drain a small body so that the client sees our answer rather than a reset.
    let body_len: usize = headers
        .get("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    if body_len > MAX_BODY_LEN {
        return None;
    }
    let mut have = buf.len().saturating_sub(head_end + 4);
    while have < body_len {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain",
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

async fn respond(request: &Request, state: &State) -> Response {
    let config = &state.config;
    if request.path == TOKEN_PATH {
        if request.method != "PUT" {
            return Response::text(405, "Method Not Allowed");
        }
        if request.headers.contains_key("x-forwarded-for") {
            return Response::text(403, "Forbidden");
        }
        let ttl = request
            .headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|t| (1..=MAX_TOKEN_TTL).contains(t));
        let Some(ttl) = ttl else {
            return Response::text(400, "Bad Request");
        };
        let serial = state.next_token.fetch_add(1, Ordering::SeqCst);
        let token = format!("mock-imds-token-{serial}-{}", unix_now_nanos());
        let mut tokens = state.tokens.lock().await;
        let now = Instant::now();
        tokens.retain(|_, expires| *expires > now);
        if tokens.len() >= MAX_TOKENS {
            return Response::text(400, "Bad Request");
        }
        tokens.insert(token.clone(), now + Duration::from_secs(ttl));
        config.stats.tokens_issued.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::text(200, &token);
        response
            .headers
            .push(("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()));
        return response;
    }

    if request.method != "GET" {
        return Response::text(405, "Method Not Allowed");
    }
    let authorized = match request.headers.get("x-aws-ec2-metadata-token") {
        Some(token) => state
            .tokens
            .lock()
            .await
            .get(token)
            .is_some_and(|expires| *expires > Instant::now()),
        None => false,
    };
    if !authorized {
        config.stats.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Response::text(401, "Unauthorized");
    }

    if request.path == REGION_PATH {
        return Response::text(200, &config.region);
    }
    match request.path.strip_prefix(CREDENTIALS_PATH) {
        Some("") => Response::text(200, &config.role),
        Some(role) if role == config.role => {
            config
                .stats
                .credentials_served
                .fetch_add(1, Ordering::SeqCst);
            let now = SystemTime::now();
            let expires = now + config.credential_lifetime;
            let body = serde_json::json!({
                "Code": "Success",
                "LastUpdated": rfc3339(now),
                "Type": "AWS-HMAC",
                "AccessKeyId": config.access_key_id,
                "SecretAccessKey": config.secret_access_key,
                "Token": config.session_token,
                "Expiration": rfc3339(expires),
            });
            Response {
                status: 200,
                content_type: "text/plain",
                headers: Vec::new(),
                body: body.to_string(),
            }
        }
        _ => Response::text(404, "Not Found"),
    }
}

fn unix_now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `2026-01-02T03:04:05Z`, as IMDS writes times (whole seconds, UTC).
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .try_into()
        .unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}
