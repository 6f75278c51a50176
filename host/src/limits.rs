//! Limits on what HTTP clients can hold on the host: connections, requests in flight, header size,
//! the time headers may take to arrive, idle keep-alive time, and the accept loop that enforces
//! them (hyper's HTTP/1 connection driver over Tokio, in place of `axum::serve`, whose connection
//! handling has none of these bounds).
//!
//! | limit | default | when exceeded |
//! | --- | --- | --- |
//! | `http_header_timeout_secs` | 10 | connection closed (no answer) |
//! | `http_max_header_bytes` | 16 KiB | 431 (hyper), connection closed |
//! | `http_idle_timeout_secs` | 60 | idle keep-alive connection closed |
//! | `max_connections` | 1024 | 503 `busy`, connection closed |
//! | `max_connections_per_client` | 64 | 429 `too_many_requests`, connection closed |
//! | `max_in_flight` | 256 | 503 `busy` (`/v1/infer`, `/v1/attestation`) |
//! | `max_in_flight_per_client` | 32 | 429 `too_many_requests` (same routes) |
//!
//! A "client" is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64, so per
//! address counting would not bound it; RFC 4291 §2.5.4, RFC 6177). Per-client counts live only
//! while the client holds something, so their map is bounded by `max_connections`.
//!
//! What it does not do: read or log request bodies, look at anything but the peer address, or
//! queue over-limit work (everything over a limit is refused at once).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use sealed_wire::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::supervisor::HostState;

/// Default time a client has to send a request's complete headers (from accept, or from its first
/// byte on a kept-alive connection).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (request line and headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest accepted `http_max_header_bytes`: hyper's minimum read buffer.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest accepted `http_max_header_bytes`.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Largest read buffer of one HTTP connection (hyper's `max_buf_size`): sets how much of a
/// request body one read(2) can take, not how large a request head may be.
pub const HTTP_READ_BUFFER: usize = 256 * 1024;
/// Default time a kept-alive connection may sit with no request before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default bound on open connections from one client.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Default bound on `/v1/infer` and `/v1/attestation` requests being handled.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default bound on those requests from one client.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT: usize = 32;
/// Over-limit connections being answered at once; past this they are dropped without an answer,
/// so that a connection flood cannot make the refusals themselves unbounded.
const MAX_REFUSING: usize = 64;
/// How long a refusal waits to write its answer and to drain what the client already sent (so
/// that closing does not reset the connection before the client reads the answer).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Most bytes drained from a refused connection.
const REFUSAL_DRAIN_BYTES: u64 = 64 * 1024;

/// The HTTP limits of the client API. See the module table for what each one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_in_flight: usize,
    pub max_in_flight_per_client: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_client: DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
        }
    }
}

/// Who a per-client limit counts against: an IPv4 address, or an IPv6 address's /64 prefix
/// (IPv4-mapped IPv6 addresses count as their IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => ClientKey::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Why something was refused or cut off: the `reason` label of `sealed_host_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    ConnectionsTotal,
    ConnectionsPerClient,
    InFlightTotal,
    InFlightPerClient,
    HeaderTimeout,
    HeaderTooLarge,
    /// The whole-request deadline (`http_timeout`) passed: a slow upload or a slow answer.
    RequestDeadline,
    /// A response the client did not take within the idle timeout after the request deadline.
    ResponseStalled,
}

impl RejectReason {
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::ConnectionsTotal,
        RejectReason::ConnectionsPerClient,
        RejectReason::InFlightTotal,
        RejectReason::InFlightPerClient,
        RejectReason::HeaderTimeout,
        RejectReason::HeaderTooLarge,
        RejectReason::RequestDeadline,
        RejectReason::ResponseStalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::ConnectionsTotal => "connections_total",
            RejectReason::ConnectionsPerClient => "connections_per_client",
            RejectReason::InFlightTotal => "in_flight_total",
            RejectReason::InFlightPerClient => "in_flight_per_client",
            RejectReason::HeaderTimeout => "header_timeout",
            RejectReason::HeaderTooLarge => "header_too_large",
            RejectReason::RequestDeadline => "request_deadline",
            RejectReason::ResponseStalled => "response_stalled",
        }
    }
}

/// Which bound a [`Limiter`] refused on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's own bound (answered 429 `too_many_requests`).
    PerClient,
    /// The bound over every client (answered 503 `busy`).
    Total,
}

impl Refusal {
    /// The stable error code of the answer.
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::PerClient => ErrorCode::TooManyRequests,
            Refusal::Total => ErrorCode::Busy,
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<ClientKey, usize>,
}

/// A counter with a total bound and a per-client bound. Refuses at once when either is reached;
/// never queues.
pub struct Limiter {
    max_total: usize,
    max_per_client: usize,
    counts: Mutex<Counts>,
}

/// One unit held in a [`Limiter`]; given back on drop.
pub struct Permit {
    limiter: Arc<Limiter>,
    key: Option<ClientKey>,
}

impl Limiter {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            max_total,
            max_per_client,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic elsewhere: every update is one statement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one unit for `key` (`None`: an unknown peer, counted in the total only). The client's
    /// bound is checked first, so a client over its own bound hears 429 even when the host is
    /// also full.
    pub fn try_acquire(self: &Arc<Self>, key: Option<ClientKey>) -> Result<Permit, Refusal> {
        let mut counts = self.counts();
        if let Some(key) = key {
            let held = counts.per_client.get(&key).copied().unwrap_or(0);
            if held >= self.max_per_client {
                return Err(Refusal::PerClient);
            }
        }
        if counts.total >= self.max_total {
            return Err(Refusal::Total);
        }
        counts.total += 1;
        if let Some(key) = key {
            *counts.per_client.entry(key).or_insert(0) += 1;
        }
        Ok(Permit {
            limiter: Arc::clone(self),
            key,
        })
    }

    /// Units held now, in total.
    pub fn total(&self) -> usize {
        self.counts().total
    }

    /// Clients holding at least one unit now.
    pub fn clients(&self) -> usize {
        self.counts().per_client.len()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(held) = counts.per_client.get_mut(&key)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                // Entries exist only while held, so the map never outgrows the open connections.
                counts.per_client.remove(&key);
            }
        }
    }
}

/// The raw HTTP/1.1 answer to a connection refused at accept (before any byte is read):
/// the contract's JSON error, `Connection: close`.
pub fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let (status, message) = match refusal {
        Refusal::PerClient => (
            "429 Too Many Requests",
            "too many connections from this client",
        ),
        Refusal::Total => ("503 Service Unavailable", "too many connections"),
    };
    let code = refusal.code();
    let body = serde_json::json!({
        "error": { "code": code.as_u16(), "name": code.as_str(), "message": message }
    })
    .to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What one connection is doing, for its watchdog.
struct ConnState {
    /// Requests handed to the router whose responses are not yet fully written.
    busy: usize,
    /// When the current request head started (accept for the first request, the first byte for
    /// the next ones); `None` while idle between requests or while busy.
    head_started: Option<Instant>,
    /// When the connection last became idle.
    idle_since: Instant,
    /// When the request being handled arrived.
    request_started: Instant,
}

struct Conn {
    state: Mutex<ConnState>,
    changed: Notify,
}

impl Conn {
    fn new() -> Conn {
        let now = Instant::now();
        Conn {
            state: Mutex::new(ConnState {
                busy: 0,
                head_started: Some(now),
                idle_since: now,
                request_started: now,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: if the connection was idle, a request head has started.
    fn on_read(&self) {
        let mut s = self.state();
        if s.busy == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    fn begin_request(self: &Arc<Self>) -> BusyGuard {
        let mut s = self.state();
        s.busy += 1;
        s.head_started = None;
        s.request_started = Instant::now();
        drop(s);
        self.changed.notify_one();
        BusyGuard(Arc::clone(self))
    }
}

/// Marks a request as in progress on its connection until its response body is dropped (written
/// out, or abandoned with the connection).
struct BusyGuard(Arc<Conn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.busy = s.busy.saturating_sub(1);
        if s.busy == 0 {
            s.idle_since = Instant::now();
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    HeaderTimeout,
    Idle,
    ResponseStalled,
}

/// Resolves when the connection has overstayed: headers not complete within the header timeout,
/// idle past the idle timeout, or a response still unwritten `idle_timeout` after the request
/// deadline. Re-evaluates whenever the connection's state changes.
async fn watchdog(conn: &Conn, limits: HttpLimits, http_timeout: Duration) -> Expiry {
    loop {
        let (deadline, expiry) = {
            let s = conn.state();
            if s.busy > 0 {
                (
                    s.request_started + http_timeout + limits.idle_timeout,
                    Expiry::ResponseStalled,
                )
            } else if let Some(started) = s.head_started {
                (started + limits.header_timeout, Expiry::HeaderTimeout)
            } else {
                (s.idle_since + limits.idle_timeout, Expiry::Idle)
            }
        };
        if Instant::now() >= deadline {
            return expiry;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = conn.changed.notified() => {}
        }
    }
}

/// How a finished connection is closed: in stages (RFC 9112 §9.6, "Tear-down"). Closing a
/// socket that still has unread bytes makes the kernel send a reset, which can erase our last
/// response from the client's receive buffer before it reads it — a client that writes a whole
/// refused body before reading (most HTTP clients do) would see "connection reset" instead of
/// the 413 that names the problem. So the host half-closes after the response and reads and
/// discards what the client still sends until it closes too, within these bounds.
#[derive(Clone, Copy, Debug)]
pub struct Linger {
    /// Longest the whole drain may take.
    pub total: Duration,
    /// Longest wait for the next bytes: a client that stops sending without closing is cut.
    pub idle: Duration,
    /// Most bytes read and discarded (the refused body is never stored; this bounds the CPU).
    pub max_bytes: u64,
}

/// 5 s, 1 s idle, 64 MiB: a refused 16 MiB body crosses even a slow link within them, and a
/// client that keeps sending costs at most 5 s of one connection slot.
pub const LINGER: Linger = Linger {
    total: Duration::from_secs(5),
    idle: Duration::from_secs(1),
    max_bytes: 64 * 1024 * 1024,
};

/// Half-closes `stream` (our side is done) and discards what the peer still sends until it
/// closes, goes quiet for `linger.idle`, or a bound of `linger` is reached. Returns the bytes
/// discarded.
async fn linger_close(mut stream: TcpStream, linger: Linger) -> u64 {
    if stream.shutdown().await.is_err() {
        return 0;
    }
    let deadline = Instant::now() + linger.total;
    // On the heap: an array here would grow every connection task's future by its size.
    let mut buf = vec![0u8; 8 * 1024];
    let mut discarded: u64 = 0;
    while discarded < linger.max_bytes {
        let wait = linger
            .idle
            .min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded = discarded.saturating_add(n as u64),
            // Closed by the peer, reset, quiet for too long, or out of time.
            _ => break,
        }
    }
    discarded
}

/// The TCP stream with reads reported to the watchdog (the first byte of a request head starts
/// its header timer).
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request marked busy until it is dropped.
struct GuardedBody<B> {
    inner: B,
    _guard: BusyGuard,
}

impl<B: HttpBody + Unpin> HttpBody for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes; then stops accepting,
/// lets in-flight requests finish (idle connections close at once) and returns when every
/// connection is closed. `http_timeout` is the router's whole-request deadline (used to bound how
/// long a response may take to be written after it).
pub async fn serve_http<F>(
    listener: TcpListener,
    router: Router,
    host: Arc<HostState>,
    http_timeout: Duration,
    limits: HttpLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let connections = Limiter::new(limits.max_connections, limits.max_connections_per_client);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match connections.try_acquire(Some(ClientKey::of(peer.ip()))) {
                    Ok(permit) => {
                        tasks.spawn(serve_connection(
                            stream,
                            peer,
                            router.clone(),
                            Arc::clone(&host),
                            http_timeout,
                            limits,
                            stop_rx.clone(),
                            permit,
                        ));
                    }
                    Err(refusal) => {
                        host.metrics.observe_rejected(match refusal {
                            Refusal::PerClient => RejectReason::ConnectionsPerClient,
                            Refusal::Total => RejectReason::ConnectionsTotal,
                        });
                        debug!(?refusal, "connection refused");
                        if let Ok(slot) = Arc::clone(&refusing).try_acquire_owned() {
                            tasks.spawn(async move {
                                refuse(stream, refusal).await;
                                drop(slot);
                            });
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Answers a refused connection and closes it.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let answer = refusal_response(refusal);
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what the client sent so that closing does not reset the connection (which could
        // discard the answer before the client reads it).
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut (&mut stream).take(REFUSAL_DRAIN_BYTES), &mut sink).await?;
        Ok::<_, io::Error>(())
    })
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    host: Arc<HostState>,
    http_timeout: Duration,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
    permit: Permit,
) {
    let metrics = &host.metrics;
    metrics.http_connections.inc();
    // Small answers go out at once rather than waiting for more to coalesce.
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(Conn::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        conn: Arc::clone(&conn),
    });
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn({
        let conn = Arc::clone(&conn);
        move |mut request: Request<Incoming>| {
            let guard = conn.begin_request();
            request.extensions_mut().insert(ConnectInfo(peer));
            let call = hyper::service::Service::call(&tower, request);
            // Boxed: `poll_without_shutdown` (below) needs an `Unpin` future.
            Box::pin(async move {
                let response: Response<_> = call.await?;
                Ok::<_, std::convert::Infallible>(response.map(|inner| GuardedBody {
                    inner,
                    _guard: guard,
                }))
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // The request head is bounded on its own (past it hyper answers 431 and closes), so the
        // read buffer can be larger than the head limit: a 16 MiB sealed body then arrives in
        // ~64 reads of up to 256 KiB instead of ~1,000 of 16 KiB. hyper grows the buffer only
        // when reads fill it (its adaptive strategy), so idle connections stay small.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(HTTP_READ_BUFFER))
        // The watchdog times headers (hyper's own timer would also cut idle keep-alive
        // connections at the header timeout).
        .header_read_timeout(None);
    let mut connection = builder.serve_connection(io, service);
    let watchdog = watchdog(&conn, limits, http_timeout);
    let mut watchdog = std::pin::pin!(watchdog);
    let mut draining = false;
    let mut shutdown_asked = false;
    // Whether hyper finished the connection itself (then it is closed in stages, see `Linger`).
    let mut finished = false;
    loop {
        if draining && !shutdown_asked {
            shutdown_asked = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        tokio::select! {
            // Without hyper's own shutdown: the socket is closed below, in stages.
            served = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                if let Err(e) = served {
                    if e.is_parse_too_large() {
                        metrics.observe_rejected(RejectReason::HeaderTooLarge);
                    }
                    debug!(error = %e, "connection ended with an error");
                }
                finished = true;
                break;
            }
            expiry = &mut watchdog => {
                match expiry {
                    Expiry::HeaderTimeout => {
                        metrics.observe_rejected(RejectReason::HeaderTimeout);
                        debug!("request headers not complete in time; closing");
                    }
                    Expiry::ResponseStalled => {
                        metrics.observe_rejected(RejectReason::ResponseStalled);
                        debug!("response not taken in time; closing");
                    }
                    Expiry::Idle => debug!("idle keep-alive connection; closing"),
                }
                // Dropping the connection closes the socket.
                break;
            }
            _ = stop.wait_for(|stop| *stop), if !draining => draining = true,
        }
    }
    // A stopping host does not wait for clients; a timed-out one has waited enough.
    if finished && !draining {
        let stream = connection.into_parts().io.into_inner().inner;
        let discarded = linger_close(stream, LINGER).await;
        if discarded > 0 {
            debug!(
                discarded,
                "read and discarded the client's remaining bytes before closing"
            );
        }
    }
    metrics.http_connections.dec();
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn lingering_close_half_closes_then_drains_until_the_client_closes() {
        let (mut client, server) = pair().await;
        let drain = tokio::spawn(linger_close(server, LINGER));
        // Our side is done first: the client reads the end of the stream while it can still send.
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        client.write_all(&[7u8; 100_000]).await.unwrap();
        drop(client);
        assert_eq!(drain.await.unwrap(), 100_000);
    }

    #[tokio::test]
    async fn lingering_close_stops_at_its_byte_bound() {
        let (mut client, server) = pair().await;
        let linger = Linger {
            max_bytes: 64 * 1024,
            ..LINGER
        };
        let sender = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            // Ends with an error once the server has stopped reading and closed.
            while client.write_all(&chunk).await.is_ok() {}
        });
        let discarded = linger_close(server, linger).await;
        assert!(
            (64 * 1024..64 * 1024 + 8 * 1024).contains(&discarded),
            "{discarded}"
        );
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn lingering_close_gives_up_on_a_client_that_goes_quiet_or_never_stops() {
        // Quiet without closing: cut after `idle`.
        let (mut quiet, server) = pair().await;
        quiet.write_all(b"0123456789").await.unwrap();
        let linger = Linger {
            idle: Duration::from_millis(100),
            ..LINGER
        };
        assert_eq!(linger_close(server, linger).await, 10);
        drop(quiet);

        // Sending a little forever: cut at `total` (bytes and idle never reached).
        let (mut endless, server) = pair().await;
        let sender = tokio::spawn(async move {
            while endless.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let linger = Linger {
            total: Duration::from_millis(300),
            ..LINGER
        };
        assert!(linger_close(server, linger).await > 0);
        sender.await.unwrap();
    }

    #[test]
    fn ipv6_clients_are_counted_by_64_prefix_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), ClientKey::of(v4));
    }

    #[test]
    fn limiter_refuses_per_client_first_then_total_and_forgets_idle_clients() {
        let limiter = Limiter::new(3, 2);
        let a = Some(ClientKey::of("10.0.0.1".parse().unwrap()));
        let b = Some(ClientKey::of("10.0.0.2".parse().unwrap()));
        let a1 = limiter.try_acquire(a).unwrap();
        let a2 = limiter.try_acquire(a).unwrap();
        assert_eq!(limiter.try_acquire(a).err(), Some(Refusal::PerClient));
        let b1 = limiter.try_acquire(b).unwrap();
        assert_eq!(limiter.try_acquire(b).err(), Some(Refusal::Total));
        assert_eq!(limiter.try_acquire(None).err(), Some(Refusal::Total));
        // A client at its own bound hears 429 even when the host is full too.
        assert_eq!(limiter.try_acquire(a).err(), Some(Refusal::PerClient));
        drop(a1);
        assert_eq!(limiter.total(), 2);
        let n = limiter.try_acquire(None).unwrap();
        drop((a2, b1, n));
        assert_eq!(limiter.total(), 0);
        assert_eq!(limiter.clients(), 0, "no entry outlives its permits");
    }

    #[test]
    fn refusals_are_complete_http_answers_with_the_json_error() {
        for (refusal, status, name) in [
            (Refusal::PerClient, "429", "too_many_requests"),
            (Refusal::Total, "503", "busy"),
        ] {
            let text = String::from_utf8(refusal_response(refusal)).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains(&format!("content-length: {}", body.len())));
            assert!(head.contains("connection: close"));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["name"], name);
            assert_eq!(v["error"]["code"], refusal.code().as_u16());
        }
    }
}
