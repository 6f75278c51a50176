//! A small pool of persistent connections to the enclave, each carrying many requests at once.
//!
//! Every request gets a fresh request id (one `u64` counter for the whole pool) and goes out as one
//! frame; the enclave may answer in any order, and the reader task of that connection hands each
//! answer to the waiting caller by id. A caller picks the least-loaded live connection; when every
//! connection is at its in-flight bound it gets [`PoolError::Busy`] at once rather than queueing
//! without limit. A broken connection fails its pending requests with
//! [`PoolError::Unavailable`] and is re-established with exponential backoff.
//!
//! What it does not do: interpret sealed payloads (they are opaque bytes inside
//! [`EnclaveRequest::Infer`]), retry requests (a sealed request is not known to be idempotent, and
//! retrying is the client's call), or log bodies.
//!
//! # Layout
//! - [`EnclavePool`]: the handle: [`EnclavePool::start`], [`EnclavePool::call`].
//! - `Conn`: one live connection: writer queue, pending map, in-flight permits.
//! - `manage`: per-slot task: connect, serve until the connection breaks, back off, reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sealed_transport::{BoxRead, BoxWrite, Endpoint, TransportError};
use sealed_wire::ErrorCode;
use sealed_wire::frame::{Frame, HEADER_LEN};
use sealed_wire::limits::MAX_FRAME_LEN;
use sealed_wire::message::{MessageError, infer_envelope_prefix, infer_envelope_range};
use sealed_wire::{EnclaveRequest, EnclaveResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Bytes of a frame's length field that count the request id rather than the body.
const REQUEST_ID_LEN: usize = 8;

/// Configuration of an [`EnclavePool`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub endpoint: Endpoint,
    /// Number of persistent connections (at least 1).
    pub connections: usize,
    /// Time the enclave has to answer one request.
    pub request_timeout: Duration,
    /// Requests in flight on one connection before it counts as full (at least 1).
    pub max_in_flight_per_connection: usize,
    /// First reconnect delay; doubles after each failed attempt up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl PoolConfig {
    /// Defaults: 4 connections, 30 s timeout, 128 in flight per connection, 50 ms–2 s backoff.
    pub fn new(endpoint: Endpoint) -> PoolConfig {
        PoolConfig {
            endpoint,
            connections: crate::config::DEFAULT_CONNECTIONS,
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            max_in_flight_per_connection: crate::config::DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

/// Why a request to the enclave did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the enclave is not reachable")]
    Unavailable,
    #[error("every enclave connection is at its in-flight limit")]
    Busy,
    #[error("the enclave did not answer within {0:?}")]
    Timeout(Duration),
    #[error("request of {len} bytes does not fit in a frame (at most {max})")]
    TooLarge { len: usize, max: usize },
    #[error("request could not be encoded")]
    Encode(#[source] MessageError),
    #[error("enclave response could not be decoded")]
    Decode(#[source] MessageError),
}

impl PoolError {
    /// The stable code a client receives for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            PoolError::Unavailable => ErrorCode::EnclaveUnavailable,
            PoolError::Busy => ErrorCode::Busy,
            PoolError::Timeout(_) => ErrorCode::Timeout,
            PoolError::TooLarge { .. } => ErrorCode::RequestTooLarge,
            PoolError::Encode(_) => ErrorCode::Internal,
            PoolError::Decode(_) => ErrorCode::MalformedMessage,
        }
    }
}

type Pending = HashMap<u64, oneshot::Sender<Vec<u8>>>;

/// One frame to write.
enum Outgoing {
    /// Body `head ‖ body` (an envelope prefix and the bytes it wraps, or an encoded message and
    /// nothing).
    Parts { head: Vec<u8>, body: Vec<u8> },
    /// A whole frame in one buffer from `start`: header room ‖ body ([`InferFrame`]).
    Framed { buf: Vec<u8>, start: usize },
}

impl Outgoing {
    /// Body length (the frame header and request id not counted).
    fn len(&self) -> usize {
        match self {
            Outgoing::Parts { head, body } => head.len().saturating_add(body.len()),
            Outgoing::Framed { buf, start } => {
                buf.len().saturating_sub(start.saturating_add(HEADER_LEN))
            }
        }
    }
}

/// Longest envelope prefix [`infer_envelope_prefix`] writes: the 15-byte map head and a byte
/// string header of at most 9 bytes (RFC 8949 §3).
const MAX_INFER_PREFIX_LEN: usize = 24;
/// Room kept in front of the sealed bytes of an [`InferFrame`].
const INFER_FRONT: usize = HEADER_LEN + MAX_INFER_PREFIX_LEN;

/// An inference request's frame, built in one buffer as the sealed bytes arrive: room for the frame
/// header and the envelope prefix in front of them, so that the frame goes out in one write and
/// the sealed bytes are never copied after they are received.
pub struct InferFrame {
    buf: Vec<u8>,
}

impl InferFrame {
    /// An empty frame (no room reserved for sealed bytes yet).
    pub fn new() -> InferFrame {
        InferFrame {
            buf: vec![0; INFER_FRONT],
        }
    }

    /// Sealed bytes so far.
    pub fn sealed_len(&self) -> usize {
        self.buf.len() - INFER_FRONT
    }

    /// Makes room for exactly `additional` more sealed bytes (no more, as `Vec::reserve_exact`).
    pub fn reserve_exact(&mut self, additional: usize) {
        self.buf.reserve_exact(additional);
    }

    /// Appends sealed bytes.
    pub fn extend_from_slice(&mut self, sealed: &[u8]) {
        self.buf.extend_from_slice(sealed);
    }

    /// The frame from its start (header room ‖ envelope prefix ‖ sealed bytes) and that start.
    fn finish(mut self) -> Outgoing {
        let prefix = infer_envelope_prefix(self.sealed_len());
        let start = INFER_FRONT - HEADER_LEN - prefix.len().min(MAX_INFER_PREFIX_LEN);
        if let Some(room) = self.buf.get_mut(start + HEADER_LEN..INFER_FRONT) {
            room.copy_from_slice(&prefix);
        }
        Outgoing::Framed {
            buf: self.buf,
            start,
        }
    }
}

impl Default for InferFrame {
    fn default() -> Self {
        InferFrame::new()
    }
}

/// The enclave's answer to an inference.
pub enum InferAnswer {
    /// The sealed response bytes: a view into the frame they arrived in (no copy).
    Sealed(Bytes),
    /// Any other response (an error, or the wrong kind).
    Other(EnclaveResponse),
}

/// One live connection.
struct Conn {
    /// Frames to write, in order. Its capacity equals the permit count, so a caller holding a
    /// permit never waits for queue space.
    tx: mpsc::Sender<(u64, Outgoing)>,
    pending: Mutex<Pending>,
    permits: Arc<Semaphore>,
}

impl Conn {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map stays consistent even if a holder panicked: every operation is a single call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a response to its caller; answers nobody waits for are logged and dropped.
    fn dispatch(&self, slot: usize, frame: Frame) {
        let waiter = self.pending().remove(&frame.request_id);
        match waiter {
            // A send error means the caller gave up (timeout, client gone) in the meantime.
            Some(waiter) => drop(waiter.send(frame.body)),
            None => warn!(
                connection = slot,
                request_id = frame.request_id,
                len = frame.body.len(),
                "dropped enclave response with an unknown request id"
            ),
        }
    }

    /// Fails every pending request (dropping its sender wakes the caller with `Unavailable`).
    fn fail_pending(&self) -> usize {
        let drained: Vec<_> = self.pending().drain().collect();
        drained.len()
    }
}

/// Removes a pending entry when its caller stops waiting, for whatever reason.
struct PendingGuard<'a> {
    conn: &'a Conn,
    request_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.pending().remove(&self.request_id);
    }
}

struct Shared {
    config: PoolConfig,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next_request_id: AtomicU64,
    next_slot: AtomicUsize,
    connected: watch::Sender<usize>,
    /// Times the connection count fell to zero: each is an outage, even one that ends before
    /// anybody looks.
    outages: AtomicU64,
}

impl Shared {
    fn slot(&self, index: usize) -> Option<MutexGuard<'_, Option<Arc<Conn>>>> {
        self.slots
            .get(index)
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set_slot(&self, index: usize, conn: Option<Arc<Conn>>) {
        if let Some(mut slot) = self.slot(index) {
            *slot = conn;
        }
    }
}

/// Handle to the pool. Dropping it stops the connection tasks.
pub struct EnclavePool {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl EnclavePool {
    /// Starts one connection task per configured connection and returns at once; connections come
    /// up in the background (see [`EnclavePool::wait_connected`]). Must run inside a tokio runtime.
    pub fn start(mut config: PoolConfig) -> EnclavePool {
        config.connections = config.connections.max(1);
        config.max_in_flight_per_connection = config.max_in_flight_per_connection.max(1);
        let (connected, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            slots: (0..config.connections).map(|_| Mutex::new(None)).collect(),
            config,
            next_request_id: AtomicU64::new(1),
            next_slot: AtomicUsize::new(0),
            connected,
            outages: AtomicU64::new(0),
        });
        let tasks = (0..shared.config.connections)
            .map(|index| tokio::spawn(manage(shared.clone(), index)))
            .collect();
        EnclavePool { shared, tasks }
    }

    /// The configured per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.shared.config.request_timeout
    }

    /// Number of connections currently up.
    pub fn connected(&self) -> usize {
        *self.shared.connected.borrow()
    }

    /// Watches the number of connections up (the supervisor wakes on every change).
    pub fn subscribe_connected(&self) -> watch::Receiver<usize> {
        self.shared.connected.subscribe()
    }

    /// Times every connection was down at once since the pool started.
    pub fn outages(&self) -> u64 {
        self.shared.outages.load(Ordering::SeqCst)
    }

    /// Requests sent (or being sent) to the enclave and not yet answered, over all connections.
    pub fn in_flight(&self) -> usize {
        let max = self.shared.config.max_in_flight_per_connection;
        (0..self.shared.slots.len())
            .filter_map(|i| self.shared.slot(i)?.clone())
            .map(|c| max.saturating_sub(c.permits.available_permits()))
            .sum()
    }

    /// Waits until at least one connection is up; false if none came up within `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|n| *n > 0)).await,
            Ok(Ok(_))
        )
    }

    /// Sends one request and waits for its response, up to the configured request timeout.
    pub async fn call(&self, request: &EnclaveRequest) -> Result<EnclaveResponse, PoolError> {
        self.call_with_timeout(request, self.shared.config.request_timeout)
            .await
    }

    /// Sends one request and waits for its response, up to `timeout`.
    pub async fn call_with_timeout(
        &self,
        request: &EnclaveRequest,
        timeout: Duration,
    ) -> Result<EnclaveResponse, PoolError> {
        let body = request.encode().map_err(PoolError::Encode)?;
        let head = Vec::new();
        self.exchange(Outgoing::Parts { head, body }, timeout).await
    }

    /// [`EnclavePool::call`] on an owned request: an `Infer` request's sealed bytes are written
    /// after the envelope's prefix as they are, without being copied into a CBOR encoding.
    pub async fn call_owned(&self, request: EnclaveRequest) -> Result<EnclaveResponse, PoolError> {
        let timeout = self.shared.config.request_timeout;
        let out = match request {
            EnclaveRequest::Infer { sealed } => Outgoing::Parts {
                head: infer_envelope_prefix(sealed.len()),
                body: sealed,
            },
            other => Outgoing::Parts {
                head: Vec::new(),
                body: other.encode().map_err(PoolError::Encode)?,
            },
        };
        self.exchange(out, timeout).await
    }

    /// Relays one inference built in place ([`InferFrame`]) and returns the sealed answer as a
    /// view into the frame it arrived in: neither direction copies the sealed bytes in user space.
    pub async fn call_infer(&self, frame: InferFrame) -> Result<InferAnswer, PoolError> {
        let timeout = self.shared.config.request_timeout;
        let reply = self.exchange_raw(frame.finish(), timeout).await?;
        match infer_envelope_range(&reply) {
            Some(range) => Ok(InferAnswer::Sealed(Bytes::from(reply).slice(range))),
            // Any other shape goes through the decoder (which accepts every valid encoding).
            None => match EnclaveResponse::decode(&reply).map_err(PoolError::Decode)? {
                EnclaveResponse::Infer { sealed } => Ok(InferAnswer::Sealed(Bytes::from(sealed))),
                other => Ok(InferAnswer::Other(other)),
            },
        }
    }

    /// Sends one frame body and waits for the answer, up to `timeout`.
    async fn exchange(
        &self,
        body: Outgoing,
        timeout: Duration,
    ) -> Result<EnclaveResponse, PoolError> {
        let reply = self.exchange_raw(body, timeout).await?;
        // An `Infer` answer keeps its sealed bytes in the frame's buffer (no copy through CBOR).
        EnclaveResponse::decode_owned(reply).map_err(PoolError::Decode)
    }

    /// Sends one frame and returns the body of the answer, up to `timeout`.
    async fn exchange_raw(&self, body: Outgoing, timeout: Duration) -> Result<Vec<u8>, PoolError> {
        // Checked here rather than in the writer, where an oversized frame would break the
        // connection for every other request on it.
        let max = MAX_FRAME_LEN as usize - REQUEST_ID_LEN;
        if body.len() > max {
            return Err(PoolError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let (slot, conn, permit) = self.pick()?;
        let request_id = self.shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // Registered before the frame is queued, so that the answer always finds its waiter; the
        // connection task drains this map only after its writer queue is closed, so an entry
        // added later fails at `send` instead of waiting forever.
        conn.pending().insert(request_id, tx);
        let guard = PendingGuard {
            conn: &conn,
            request_id,
        };
        let started = Instant::now();
        let len = body.len();
        let exchange = async {
            conn.tx
                .send((request_id, body))
                .await
                .map_err(|_| PoolError::Unavailable)?;
            rx.await.map_err(|_| PoolError::Unavailable)
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        drop(guard);
        drop(permit);
        let reply = match outcome {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(PoolError::Timeout(timeout)),
        };
        debug!(
            connection = slot,
            request_id,
            request_len = len,
            response_len = reply.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "enclave exchange"
        );
        Ok(reply)
    }

    /// The least-loaded live connection with room for one more request, starting the scan at a
    /// rotating slot so that ties spread round-robin.
    fn pick(&self) -> Result<(usize, Arc<Conn>, OwnedSemaphorePermit), PoolError> {
        let n = self.shared.slots.len();
        let start = self.shared.next_slot.fetch_add(1, Ordering::Relaxed);
        let mut live: Vec<(usize, Arc<Conn>)> = (0..n)
            .map(|k| start.wrapping_add(k) % n)
            .filter_map(|i| Some((i, self.shared.slot(i)?.clone()?)))
            .collect();
        if live.is_empty() {
            return Err(PoolError::Unavailable);
        }
        // Stable sort: equal loads keep the rotated order.
        live.sort_by_key(|(_, c)| std::cmp::Reverse(c.permits.available_permits()));
        for (i, conn) in live {
            if let Ok(permit) = conn.permits.clone().try_acquire_owned() {
                return Ok((i, conn, permit));
            }
        }
        Err(PoolError::Busy)
    }
}

impl Drop for EnclavePool {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("the enclave closed the connection")]
    Closed,
    #[error("{0}")]
    Transport(#[from] TransportError),
}

/// A connection that lived at least this long resets the backoff; one that dies sooner (an
/// enclave in a crash loop) keeps backing off.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(1);

/// Keeps slot `index` connected for the life of the pool.
async fn manage(shared: Arc<Shared>, index: usize) {
    let config = &shared.config;
    let mut backoff = config.reconnect_min;
    let mut failures: u32 = 0;
    loop {
        match sealed_transport::connect(&config.endpoint).await {
            Ok((r, w)) => {
                info!(connection = index, endpoint = %config.endpoint, "connected to the enclave");
                failures = 0;
                let up = Instant::now();
                let (tx, rx) = mpsc::channel(config.max_in_flight_per_connection);
                let conn = Arc::new(Conn {
                    tx,
                    pending: Mutex::new(HashMap::new()),
                    permits: Arc::new(Semaphore::new(config.max_in_flight_per_connection)),
                });
                shared.set_slot(index, Some(conn.clone()));
                shared.connected.send_modify(|n| *n += 1);
                let end = serve_connection(&conn, index, r, w, rx).await;
                shared.set_slot(index, None);
                shared.connected.send_modify(|n| {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        shared.outages.fetch_add(1, Ordering::SeqCst);
                    }
                });
                let failed = conn.fail_pending();
                warn!(connection = index, failed_requests = failed, reason = %end, "enclave connection lost");
                if up.elapsed() >= HEALTHY_CONNECTION {
                    backoff = config.reconnect_min;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // The first failure is news; the rest of a retry streak is noise.
                if failures == 1 {
                    warn!(connection = index, endpoint = %config.endpoint, error = %e, "cannot connect to the enclave; retrying");
                } else {
                    debug!(connection = index, attempt = failures, error = %e, "enclave connect retry failed");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(config.reconnect_max);
    }
}

/// Runs the writer and reader of one connection until either fails. On return `rx` is dropped,
/// so later `send`s fail and the caller can drain the pending map.
async fn serve_connection(
    conn: &Conn,
    index: usize,
    mut r: BoxRead,
    mut w: BoxWrite,
    mut rx: mpsc::Receiver<(u64, Outgoing)>,
) -> ConnectionEnd {
    let writer = async move {
        while let Some((request_id, out)) = rx.recv().await {
            match out {
                Outgoing::Parts { head, body } => {
                    sealed_transport::write_frame_parts(&mut w, request_id, &head, &body).await?;
                }
                Outgoing::Framed { mut buf, start } => {
                    let frame = buf.get_mut(start..).unwrap_or_default();
                    sealed_transport::write_frame_in_place(&mut w, request_id, frame).await?;
                }
            }
        }
        Ok::<_, TransportError>(())
    };
    let reader = async {
        loop {
            match sealed_transport::read_frame(&mut r, MAX_FRAME_LEN).await? {
                Some(frame) => conn.dispatch(index, frame),
                None => return Ok::<_, TransportError>(()),
            }
        }
    };
    tokio::select! {
        end = writer => end.err().map_or(ConnectionEnd::Closed, ConnectionEnd::from),
        end = reader => end.err().map_or(ConnectionEnd::Closed, ConnectionEnd::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_unavailable_when_nothing_is_connected() {
        let dir = tempfile::tempdir().unwrap();
        let pool = EnclavePool::start(PoolConfig::new(Endpoint::Unix(dir.path().join("none"))));
        assert!(!pool.wait_connected(Duration::from_millis(100)).await);
        assert_eq!(pool.connected(), 0);
        let err = pool.call(&EnclaveRequest::Health).await.unwrap_err();
        assert!(matches!(err, PoolError::Unavailable), "{err:?}");
        assert_eq!(err.code(), ErrorCode::EnclaveUnavailable);
    }

    #[tokio::test]
    async fn refuses_a_request_larger_than_a_frame_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let pool = EnclavePool::start(PoolConfig::new(Endpoint::Unix(dir.path().join("none"))));
        let request = EnclaveRequest::LoadModel {
            model_id: "m".into(),
            onnx: vec![0; MAX_FRAME_LEN as usize],
        };
        let err = pool.call(&request).await.unwrap_err();
        assert!(matches!(err, PoolError::TooLarge { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::RequestTooLarge);
    }

    /// `len` bytes of stand-in ciphertext and the encoded `Infer` request that carries them.
    fn sealed_and_request(len: u32) -> (Vec<u8>, Vec<u8>) {
        let sealed: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let expected = EnclaveRequest::Infer {
            sealed: sealed.clone(),
        }
        .encode()
        .unwrap();
        (sealed, expected)
    }

    /// A stand-in enclave on a Unix socket and a pool of one connection to it (the stand-in
    /// accepts one). The stand-in checks that each of `rounds` frames carries `expected` and
    /// answers round `i` with `answer(i, body)`; its task ends after the last round. The
    /// directory holds the socket: keep it alive as long as the pool.
    async fn stand_in_enclave(
        expected: Vec<u8>,
        rounds: usize,
        answer: impl Fn(usize, &[u8]) -> EnclaveResponse + Send + 'static,
    ) -> (EnclavePool, tokio::task::JoinHandle<()>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let listener = sealed_transport::Listener::bind(&Endpoint::Unix(path.clone())).unwrap();
        let enclave = tokio::spawn(async move {
            let (mut r, mut w) = listener.accept().await.unwrap();
            for round in 0..rounds {
                let frame = sealed_transport::read_frame(&mut r, MAX_FRAME_LEN)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(frame.body, expected);
                let answer = answer(round, &frame.body).encode().unwrap();
                sealed_transport::write_frame(&mut w, frame.request_id, &answer)
                    .await
                    .unwrap();
            }
        });
        let mut config = PoolConfig::new(Endpoint::Unix(path));
        config.connections = 1;
        config.request_timeout = Duration::from_secs(10);
        let pool = EnclavePool::start(config);
        assert!(pool.wait_connected(Duration::from_secs(5)).await);
        (pool, enclave, dir)
    }

    #[tokio::test]
    async fn call_owned_sends_the_same_bytes_as_an_encoded_infer_request() {
        let (sealed, expected) = sealed_and_request(100_000);
        // Answers each request with its sealed bytes reversed.
        let (pool, enclave, _dir) = stand_in_enclave(expected, 2, |_, body| {
            let EnclaveRequest::Infer { mut sealed } = EnclaveRequest::decode(body).unwrap() else {
                panic!("not an infer request");
            };
            sealed.reverse();
            EnclaveResponse::Infer { sealed }
        })
        .await;
        let mut reversed = sealed.clone();
        reversed.reverse();
        let owned = pool
            .call_owned(EnclaveRequest::Infer {
                sealed: sealed.clone(),
            })
            .await
            .unwrap();
        let borrowed = pool.call(&EnclaveRequest::Infer { sealed }).await.unwrap();
        for answer in [owned, borrowed] {
            assert!(
                answer
                    == EnclaveResponse::Infer {
                        sealed: reversed.clone()
                    }
            );
        }
        enclave.await.unwrap();
    }

    #[test]
    fn an_infer_frame_is_the_encoded_request_behind_a_header() {
        assert_eq!(
            infer_envelope_prefix(usize::MAX).len(),
            MAX_INFER_PREFIX_LEN
        );
        for len in [1usize, 23, 24, 255, 256, 65_536, 70_000] {
            let sealed: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut frame = InferFrame::new();
            frame.reserve_exact(len);
            let (a, b) = sealed.split_at(len / 2);
            frame.extend_from_slice(a);
            frame.extend_from_slice(b);
            assert_eq!(frame.sealed_len(), len);
            let out = frame.finish();
            assert_eq!(out.len(), len + infer_envelope_prefix(len).len());
            let Outgoing::Framed { buf, start } = out else {
                panic!("not framed");
            };
            let expected = EnclaveRequest::Infer { sealed }.encode().unwrap();
            assert_eq!(&buf[start + HEADER_LEN..], expected.as_slice(), "{len}");
        }
    }

    #[tokio::test]
    async fn call_infer_relays_in_place_and_answers_with_the_sealed_bytes() {
        let (sealed, expected) = sealed_and_request(300_000);
        // Answers the first request with the sealed bytes reversed, the second with an error.
        let (pool, enclave, _dir) = stand_in_enclave(expected, 2, |round, body| {
            if round == 0 {
                let mut sealed = body[body.len() - 300_000..].to_vec();
                sealed.reverse();
                EnclaveResponse::Infer { sealed }
            } else {
                EnclaveResponse::error(ErrorCode::Busy, "busy")
            }
        })
        .await;
        let frame = || {
            let mut f = InferFrame::new();
            f.extend_from_slice(&sealed);
            f
        };
        let mut reversed = sealed.clone();
        reversed.reverse();
        match pool.call_infer(frame()).await.unwrap() {
            InferAnswer::Sealed(bytes) => assert!(bytes[..] == reversed[..]),
            InferAnswer::Other(other) => panic!("unexpected answer {other:?}"),
        }
        match pool.call_infer(frame()).await.unwrap() {
            InferAnswer::Other(EnclaveResponse::Error(e)) => assert_eq!(e.code, ErrorCode::Busy),
            _ => panic!("expected the enclave's error"),
        }
        enclave.await.unwrap();
    }

    #[test]
    fn dispatch_drops_unknown_ids_and_delivers_known_ones() {
        let (tx, _rx) = mpsc::channel(1);
        let conn = Conn {
            tx,
            pending: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(1)),
        };
        let (waiter, mut answer) = oneshot::channel();
        conn.pending().insert(7, waiter);
        conn.dispatch(
            0,
            Frame {
                request_id: 8,
                body: b"stray".to_vec(),
            },
        );
        assert!(
            answer.try_recv().is_err(),
            "a stray answer must not reach request 7"
        );
        conn.dispatch(
            0,
            Frame {
                request_id: 7,
                body: b"mine".to_vec(),
            },
        );
        assert_eq!(answer.try_recv().unwrap(), b"mine");
        assert!(conn.pending().is_empty());
    }
}
