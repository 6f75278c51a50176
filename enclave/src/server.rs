//! The enclave's listener: frames in, frames out, over vsock (Nitro) or a Unix socket
//! (simulation) — the same code for both through `sealed-transport`.
//!
//! Each connection from the host carries many requests at once, told apart by request id. A reader
//! decodes frames and spawns one task per request (bounded by a semaphore per connection, whose
//! permit a request keeps until its answer is written); answers go out in the order they finish,
//! each written by the thread that has it (an inference worker's, for sealed answers) when the
//! stream is free, else by the connection's writer task. A malformed message is answered with an error for its
//! request id and the connection goes on; a frame that breaks the framing itself (length over the
//! maximum, truncated) closes only that connection. Nothing a peer sends can stop the listener.
//!
//! Every request has a deadline ([`ServerLimits::request_timeout`], model loads
//! [`ServerLimits::model_load_timeout`]): past it the host is answered `timeout` and the request's
//! memory budget and in-flight permit are released at once, so a stuck request cannot hold them
//! (the host, untrusted, may never time anything out itself). Health, attestation and inference
//! are cancelled at the deadline (a queued inference is then skipped by the engine); model loads
//! are left to finish, because the model store accounts for their memory itself and cancelling one
//! mid-load would release its model id while the load still runs.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sealed_transport::{BoxRead, BoxWrite, Endpoint, Listener, OutFrame, TransportError};
use sealed_wire::limits::MAX_FRAME_LEN;
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::service::Service;

/// Most requests in flight on one connection; the reader stops reading when this is reached, which
/// pushes back on the host instead of queueing without bound.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Frame bodies (and the work they cause) held at once across all connections. A frame reserves
/// its share before its body is read and keeps it until its response is written, so many large
/// requests wait at the socket instead of exhausting the enclave's memory.
pub const MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
/// Granularity of that reservation.
const BUDGET_UNIT: usize = 64 * 1024;
/// Largest frame accepted. Only simulation builds take plaintext models in a frame; a production
/// enclave never needs more than one sealed message plus framing.
pub const MAX_ACCEPTED_FRAME_LEN: u32 = if crate::service::PLAINTEXT_MODELS_ALLOWED {
    MAX_FRAME_LEN
} else {
    (sealed_wire::limits::MAX_SEALED_MESSAGE_LEN + 64 * 1024) as u32
};

/// Default deadline of one request (health, attestation, inference, sealed-upload chunks).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline of a model load (`LoadModel`, `LoadSealedModelEnd`: parsing and optimising a
/// large model; above the host's own 300 s default so that the host times out first).
pub const DEFAULT_MODEL_LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Bounds of the listener. `Default` gives the documented defaults (the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Deadline of every request but model loads; past it: `timeout`.
    pub request_timeout: Duration,
    /// Deadline of `LoadModel` and `LoadSealedModelEnd`.
    pub model_load_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests in flight on one connection.
    pub max_in_flight_per_connection: usize,
    /// Frame bodies (and their work) held at once across all connections, in bytes.
    pub max_buffered_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            model_load_timeout: DEFAULT_MODEL_LOAD_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_in_flight_per_connection: MAX_IN_FLIGHT_PER_CONNECTION,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
        }
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        endpoint: Endpoint,
        source: TransportError,
    },
}

/// Binds the endpoint.
pub fn bind(endpoint: &Endpoint) -> Result<Listener, ServerError> {
    Listener::bind(endpoint).map_err(|source| ServerError::Bind {
        endpoint: endpoint.clone(),
        source,
    })
}

/// Serves connections with the default [`ServerLimits`] until the task is cancelled.
pub async fn serve(listener: Listener, service: Arc<Service>) {
    serve_with_limits(listener, service, ServerLimits::default()).await;
}

/// Serves connections under `limits` until the task is cancelled.
pub async fn serve_with_limits(listener: Listener, service: Arc<Service>, limits: ServerLimits) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let budget = Arc::new(Semaphore::new(budget_units(&limits)));
    let mut next_conn: u64 = 0;
    loop {
        let permit = match Arc::clone(&connections).acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        match listener.accept().await {
            Ok((reader, writer)) => {
                next_conn = next_conn.wrapping_add(1);
                let service = Arc::clone(&service);
                let budget = Arc::clone(&budget);
                let span = info_span!("connection", id = next_conn);
                tokio::spawn(
                    async move {
                        info!("host connected");
                        serve_connection_with_limits(reader, writer, service, budget, limits).await;
                        info!("host disconnected");
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                // Avoid a hot loop if accept keeps failing (e.g. out of descriptors).
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Budget units (of 64 KiB) for `limits.max_buffered_bytes`: at least one frame's worth, so that
/// the largest accepted frame can always be read.
pub fn budget_units(limits: &ServerLimits) -> usize {
    let min = (MAX_ACCEPTED_FRAME_LEN as usize).div_ceil(BUDGET_UNIT);
    (limits.max_buffered_bytes / BUDGET_UNIT)
        .max(min)
        .min(Semaphore::MAX_PERMITS)
}

/// Serves one connection with the default [`ServerLimits`]. `budget` holds
/// [`MAX_BUFFERED_BYTES`] in units shared by every connection.
pub async fn serve_connection(
    reader: BoxRead,
    writer: BoxWrite,
    service: Arc<Service>,
    budget: Arc<Semaphore>,
) {
    serve_connection_with_limits(reader, writer, service, budget, ServerLimits::default()).await;
}

/// Whether `request` is a model load (its own deadline, and left to finish past it).
fn is_model_load(request: &EnclaveRequest) -> bool {
    matches!(
        request,
        EnclaveRequest::LoadModel { .. } | EnclaveRequest::LoadSealedModelEnd { .. }
    )
}

/// Handles one request under its deadline. Past it: `timeout`. Model loads run in their own task
/// and are left to finish; anything else is dropped (cancelled) at the deadline.
async fn handle_with_deadline(
    service: Arc<Service>,
    request: EnclaveRequest,
    limits: &ServerLimits,
) -> EnclaveResponse {
    if is_model_load(&request) {
        let deadline = limits.model_load_timeout;
        let task = tokio::spawn(async move { service.handle(request).await });
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => EnclaveResponse::error(ErrorCode::Internal, "request task failed"),
            Err(_) => timed_out(deadline),
        }
    } else {
        within(limits.request_timeout, service.handle(request)).await
    }
}

/// `answer` if it comes within `deadline`, else `timeout` (the request is dropped: cancelled).
async fn within(
    deadline: Duration,
    answer: impl std::future::Future<Output = EnclaveResponse>,
) -> EnclaveResponse {
    tokio::time::timeout(deadline, answer)
        .await
        .unwrap_or_else(|_| timed_out(deadline))
}

/// The answer to a request past its deadline.
fn timed_out(deadline: Duration) -> EnclaveResponse {
    warn!(
        deadline_ms = deadline.as_millis() as u64,
        "request deadline passed; answering timeout"
    );
    EnclaveResponse::error(ErrorCode::Timeout, "the enclave did not finish in time")
}

/// Serves one connection under `limits` until the host closes it or breaks the framing. `budget`
/// holds `limits.max_buffered_bytes` in units shared by every connection ([`budget_units`]).
pub async fn serve_connection_with_limits(
    mut reader: BoxRead,
    writer: BoxWrite,
    service: Arc<Service>,
    budget: Arc<Semaphore>,
    limits: ServerLimits,
) {
    let max_in_flight = limits.max_in_flight_per_connection.max(1);
    let (answers, write_task) = Answers::start(writer);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let permit = match Arc::clone(&in_flight).acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let header = match sealed_transport::read_header(&mut reader, MAX_ACCEPTED_FRAME_LEN).await
        {
            Ok(Some(header)) => header,
            Ok(None) => break,
            Err(TransportError::Frame(e)) => {
                // The stream cannot be resynchronised after a bad length: say why, then close.
                warn!(error = %e, "bad frame; closing connection");
                let code = match e {
                    sealed_wire::frame::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    _ => ErrorCode::MalformedFrame,
                };
                answers.send(0, EnclaveResponse::error(code, e.to_string()), None);
                break;
            }
            Err(e) => {
                debug!(error = %e, "read failed; closing connection");
                break;
            }
        };
        // Reserve memory for this request before reading its body (the length is bounded).
        let units = header.body_len.div_ceil(BUDGET_UNIT).max(1);
        let reserved = match u32::try_from(units) {
            Ok(units) => Arc::clone(&budget).acquire_many_owned(units).await,
            Err(_) => break,
        };
        let Ok(reserved) = reserved else { break };
        let frame = match sealed_transport::read_body(&mut reader, header).await {
            Ok(frame) => frame,
            Err(e) => {
                debug!(error = %e, "read failed; closing connection");
                break;
            }
        };
        let request_id = frame.request_id;
        let answer = Arc::new(Answer {
            request_id,
            answers: Arc::clone(&answers),
            held: Mutex::new(Some(Held {
                _slot: permit,
                _budget: reserved,
            })),
        });
        let service = Arc::clone(&service);
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                // An `Infer` envelope is opened where it lies in the frame's own buffer: no
                // copy, not even the move that would bring the sealed bytes to its start. Its
                // answer is sealed and sent by the inference worker that has it.
                if let Some(range) = sealed_wire::message::infer_envelope_range(&frame.body) {
                    let respond = {
                        let answer = Arc::clone(&answer);
                        move |response| answer.once(response)
                    };
                    let infer = service.infer_in_frame_to(frame.body, range.start, respond);
                    let deadline = limits.request_timeout;
                    let finished = tokio::time::timeout(deadline, infer).await;
                    // Nothing to do once answered. Past the deadline the worker may still finish
                    // the inference; whichever answer comes first is the one sent.
                    answer.once_with(|| match finished {
                        // Not answered although it ran: the engine dropped it (it was closing).
                        Ok(()) => EnclaveResponse::error(
                            ErrorCode::Internal,
                            "the worker dropped the request",
                        ),
                        Err(_) => timed_out(deadline),
                    });
                    debug!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "request done"
                    );
                } else {
                    // A sealed model's chunk: up to 8 MiB opened where it lies.
                    let response = match sealed_wire::message::sealed_chunk_range(&frame.body) {
                        Some((upload_id, range)) => {
                            let chunk = service.sealed_chunk_in_frame(upload_id, frame.body, range);
                            within(limits.request_timeout, chunk).await
                        }
                        None => match EnclaveRequest::decode(&frame.body) {
                            Ok(request) => handle_with_deadline(service, request, &limits).await,
                            Err(e) => {
                                warn!(code = %e.code(), error = %e, "malformed request");
                                EnclaveResponse::error(e.code(), e.to_string())
                            }
                        },
                    };
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    if let EnclaveResponse::Error(e) = &response {
                        debug!(code = %e.code, elapsed_ms, "request failed");
                    } else {
                        debug!(elapsed_ms, "request done");
                    }
                    answer.once(response);
                }
            }
            .instrument(info_span!("request", id = request_id)),
        );
    }
    drop(answers);
    let _ = write_task.await;
}

/// The one answer to one request: sent once, by whoever has it first (the inference worker, the
/// request's task, or the deadline).
struct Answer {
    request_id: u64,
    answers: Arc<Answers>,
    /// Taken by the first answer; `None` once answered.
    held: Mutex<Option<Held>>,
}

/// What a request holds until its answer is on the stream: its in-flight slot and its share of
/// the memory budget. A host that stops reading answers thereby stops the reader from taking
/// more requests, instead of making the enclave queue answers without bound.
struct Held {
    _slot: OwnedSemaphorePermit,
    _budget: OwnedSemaphorePermit,
}

impl Answer {
    /// Sends `response` unless the request was answered already.
    fn once(&self, response: EnclaveResponse) {
        self.once_with(|| response);
    }

    /// Sends the answer `make` gives unless the request was answered already (then `make` is
    /// not called).
    fn once_with(&self, make: impl FnOnce() -> EnclaveResponse) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(held) = held {
            self.answers.send(self.request_id, make(), Some(held));
        }
    }
}

/// The write side of one host connection, shared by its writer task and whatever answers a
/// request: an inference worker thread or a request's task. An answer is written by the thread
/// that has it when the stream is free and takes the whole frame at once (one non-blocking
/// `writev`); otherwise the writer task writes it. On this path every answer used to wake the
/// writer task first, which on a VM whose idle vCPUs sleep costs tens to hundreds of µs per
/// request (docs/performance.md, round 17).
struct Answers {
    stream: Arc<Mutex<Stream>>,
    /// Frames for the writer task; `None` only wakes it to finish [`Stream::unfinished`].
    /// Unbounded, but every message is sent by a request holding an in-flight permit (at most
    /// [`ServerLimits::max_in_flight_per_connection`]) or by the reader's last word.
    queue: mpsc::UnboundedSender<Option<Queued>>,
}

/// A frame for the writer task, and what its request holds until the frame is written.
type Queued = (OutFrame, Option<Held>);

/// The connection's write half and what is owed on it.
struct Stream {
    /// `None` while the writer task writes with it (across awaits), and once writing failed.
    writer: Option<BoxWrite>,
    /// A frame begun by a thread that could not finish it without waiting: the writer task
    /// writes the rest before any other frame, and nobody else writes until then.
    unfinished: Option<Queued>,
    /// Writing failed: the connection is going away and nothing more is written.
    failed: bool,
}

fn lock(stream: &Mutex<Stream>) -> MutexGuard<'_, Stream> {
    // Nothing panics while holding it; were it poisoned, the stream's state is still whole.
    stream.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Answers {
    /// Shares `writer` and starts the writer task, which ends once every [`Answers`] is dropped
    /// or writing fails.
    fn start(writer: BoxWrite) -> (Arc<Answers>, tokio::task::JoinHandle<()>) {
        let stream = Arc::new(Mutex::new(Stream {
            writer: Some(writer),
            unfinished: None,
            failed: false,
        }));
        let (queue, mut rx) = mpsc::unbounded_channel::<Option<Queued>>();
        let shared = Arc::clone(&stream);
        let task = tokio::spawn(async move {
            while let Some(next) = rx.recv().await {
                let (writer, unfinished) = {
                    let mut s = lock(&shared);
                    (s.writer.take(), s.unfinished.take())
                };
                let Some(mut writer) = writer else { break };
                let mut written = Ok(());
                for (mut frame, held) in unfinished.into_iter().chain(next) {
                    written = frame.write_rest(&mut writer).await;
                    drop(held);
                    if written.is_err() {
                        break;
                    }
                }
                let mut s = lock(&shared);
                if let Err(e) = written {
                    debug!(error = %e, "write failed; closing connection");
                    s.failed = true;
                    break;
                }
                s.writer = Some(writer);
            }
        });
        (Arc::new(Answers { stream, queue }), task)
    }

    /// Sends `response` as frame `request_id`: written here if the stream is free and takes it
    /// whole, else (the rest of it) by the writer task. Never waits. `held` is released once the
    /// frame is written (or cannot be).
    fn send(&self, request_id: u64, response: EnclaveResponse, held: Option<Held>) {
        let Some(mut frame) = frame_of(request_id, response) else {
            return;
        };
        let mut s = lock(&self.stream);
        if s.failed {
            return;
        }
        if s.unfinished.is_none()
            && let Some(writer) = s.writer.as_mut()
        {
            match frame.try_write(writer) {
                Ok(true) => return,
                // Nothing taken: the writer task sends it whole, as any other frame.
                Ok(false) if frame.written() == 0 => {}
                Ok(false) => {
                    s.unfinished = Some((frame, held));
                    drop(s);
                    let _ = self.queue.send(None);
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "write failed; closing connection");
                    s.writer = None;
                    s.failed = true;
                    drop(s);
                    // Wakes the writer task, which finds no stream and ends.
                    let _ = self.queue.send(None);
                    return;
                }
            }
        }
        drop(s);
        // A closed queue means the connection is gone; the host will time the request out.
        let _ = self.queue.send(Some((frame, held)));
    }
}

/// The frame that carries `response`.
fn frame_of(request_id: u64, response: EnclaveResponse) -> Option<OutFrame> {
    // A sealed answer goes out as the envelope's prefix and the sealed bytes as they are, instead
    // of being copied into a CBOR encoding (`prefix ‖ sealed` is that encoding).
    let (head, body) = match response {
        EnclaveResponse::Infer { sealed } => (
            sealed_wire::message::infer_envelope_prefix(sealed.len()),
            sealed,
        ),
        response => {
            let body = response.encode().or_else(|e| {
                warn!(error = %e, "response encoding failed");
                EnclaveResponse::error(ErrorCode::Internal, "response encoding failed").encode()
            });
            (Vec::new(), body.ok()?)
        }
    };
    match OutFrame::new(request_id, head, body) {
        Ok(frame) => Some(frame),
        Err(e) => {
            // Responses are bounded far below the frame limit; were one not, say so.
            warn!(error = %e, "response does not fit a frame");
            let body = EnclaveResponse::error(ErrorCode::Internal, "response too large")
                .encode()
                .ok()?;
            OutFrame::new(request_id, Vec::new(), body).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, PoisonError, mpsc};

    use aws_nitro_enclaves_nsm_api::api::{ErrorCode as NsmErrorCode, Request, Response};
    use sealed_crypto::ServerKey;
    use sealed_wire::limits::MAX_FRAME_LEN;

    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::nsm::Nsm;

    /// An NSM whose every call blocks until released (at most 10 s, so that nothing hangs).
    struct StuckNsm(Mutex<mpsc::Receiver<()>>);

    impl Nsm for StuckNsm {
        fn process(&self, _request: Request) -> Response {
            let rx = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = rx.recv_timeout(Duration::from_secs(10));
            Response::Error(NsmErrorCode::InternalError)
        }
    }
    /// A service on `engine` whose NSM calls block until the returned sender is used or dropped.
    fn stuck_service(engine: Arc<Engine>) -> (Arc<Service>, mpsc::Sender<()>) {
        let (release, stuck) = mpsc::channel();
        let key = ServerKey::generate(0, &mut crate::rng::os_rng());
        let nsm = Arc::new(StuckNsm(Mutex::new(stuck)));
        (Arc::new(Service::new(nsm, key, engine)), release)
    }

    /// The host's end of a connection served under `limits` over an in-memory stream of
    /// `buffer` bytes each way.
    struct HostEnd {
        read: BoxRead,
        write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        server: tokio::task::JoinHandle<()>,
        budget: Arc<Semaphore>,
    }

    impl HostEnd {
        async fn send(&mut self, request_id: u64, request: &EnclaveRequest) {
            let body = request.encode().unwrap();
            sealed_transport::write_frame(&mut self.write, request_id, &body)
                .await
                .unwrap();
        }

        /// The host hangs up; the server must end.
        async fn hang_up(self) {
            drop((self.read, self.write));
            server_ends(self.server).await;
        }
    }

    fn serve_in_memory(service: Arc<Service>, limits: ServerLimits, buffer: usize) -> HostEnd {
        let budget = Arc::new(Semaphore::new(budget_units(&limits)));
        let (host_side, enclave_side) = tokio::io::duplex(buffer);
        let (enclave_read, enclave_write) = tokio::io::split(enclave_side);
        let server = tokio::spawn(serve_connection_with_limits(
            Box::pin(enclave_read),
            Box::pin(enclave_write),
            service,
            Arc::clone(&budget),
            limits,
        ));
        let (read, write) = tokio::io::split(host_side);
        HostEnd {
            read: Box::pin(read),
            write,
            server,
            budget,
        }
    }

    /// Waits (at most 10 s) for the server of a connection the host has closed to end.
    async fn server_ends(server: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server did not end")
            .unwrap();
    }

    async fn read_response(reader: &mut BoxRead) -> (u64, EnclaveResponse) {
        let frame = tokio::time::timeout(
            Duration::from_secs(10),
            sealed_transport::read_frame(reader, MAX_FRAME_LEN),
        )
        .await
        .expect("no answer")
        .unwrap()
        .unwrap();
        (
            frame.request_id,
            EnclaveResponse::decode(&frame.body).unwrap(),
        )
    }

    /// A request stuck past its deadline is answered `timeout`, and its in-flight slot comes back
    /// at once: with one slot per connection, the next request is read and answered only then.
    #[tokio::test]
    async fn a_stuck_request_is_answered_timeout_and_releases_its_slot() {
        let engine = Arc::new(Engine::new(EngineConfig {
            workers: 1,
            queue_depth: 1,
            ..EngineConfig::default()
        }));
        let (service, release) = stuck_service(engine);
        let limits = ServerLimits {
            request_timeout: Duration::from_millis(200),
            max_in_flight_per_connection: 1,
            ..ServerLimits::default()
        };
        let mut host = serve_in_memory(service, limits, 64 * 1024);
        let attest = EnclaveRequest::Attestation { nonce: vec![7; 32] };
        host.send(1, &attest).await;
        host.send(2, &EnclaveRequest::Health).await;

        let (id, response) = read_response(&mut host.read).await;
        assert_eq!(id, 1);
        assert!(
            matches!(&response, EnclaveResponse::Error(e) if e.code == ErrorCode::Timeout),
            "{response:?}"
        );
        let (id, response) = read_response(&mut host.read).await;
        assert_eq!(id, 2);
        assert!(
            matches!(response, EnclaveResponse::Health(_)),
            "{response:?}"
        );
        // Every byte of budget is back once both are answered.
        tokio::time::timeout(Duration::from_secs(10), async {
            while host.budget.available_permits() != budget_units(&limits) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("budget not released");

        let _ = release.send(());
        drop(host.write);
        host.server.abort();
    }

    /// The sealed bytes answer `id` carries in the tests below: its own, so that a frame mixed
    /// with another's shows.
    fn sealed_for(id: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64).wrapping_mul(31).wrapping_add(id) as u8)
            .collect()
    }

    /// A host that sends requests and does not read the answers: once its answers fill the
    /// stream, the requests they answer keep their in-flight slots, so the enclave stops reading
    /// instead of queueing answers without bound; once the host reads, every request is answered.
    #[tokio::test]
    async fn a_host_that_does_not_read_answers_is_not_read_either() {
        const REQUESTS: u64 = 200;
        let (service, _release) = stuck_service(Arc::new(Engine::new(EngineConfig::default())));
        let limits = ServerLimits {
            max_in_flight_per_connection: 2,
            ..ServerLimits::default()
        };
        // Small buffers both ways: a few answers fill one, a few requests the other.
        let HostEnd {
            mut read,
            mut write,
            server,
            ..
        } = serve_in_memory(service, limits, 1024);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sender = {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let health = EnclaveRequest::Health.encode().unwrap();
                for id in 1..=REQUESTS {
                    sealed_transport::write_frame(&mut write, id, &health)
                        .await
                        .unwrap();
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                write
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before_reading = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            before_reading < REQUESTS / 2,
            "{before_reading} requests taken"
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..REQUESTS {
            let (id, response) = read_response(&mut read).await;
            assert!(
                matches!(response, EnclaveResponse::Health(_)),
                "{response:?}"
            );
            assert!(seen.insert(id));
        }
        // The host closes the connection: the server ends.
        drop((sender.await.unwrap(), read));
        server_ends(server).await;
    }

    /// An inference still queued at its deadline is answered `timeout`, once: the worker skips
    /// it when it gets to it, and the next frame on the connection is the next request's answer.
    #[tokio::test]
    async fn an_inference_past_its_deadline_is_answered_timeout_once() {
        let engine = Arc::new(Engine::new(EngineConfig {
            workers: 1,
            queue_depth: 4,
            ..EngineConfig::default()
        }));
        engine
            .load_model(
                "digits",
                include_bytes!("../../sim/assets/digits/digits.onnx"),
            )
            .unwrap();
        let release = engine.hold_worker();
        let (service, _nsm_release) = stuck_service(Arc::clone(&engine));
        let config = service.key_config();
        let limits = ServerLimits {
            request_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        };
        let mut host = serve_in_memory(service, limits, 64 * 1024);

        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let request = sealed_wire::InferRequest {
            request_id: [7; 16],
            sent_at_ms: now_ms,
            model_id: "digits".to_string(),
            inputs: vec![sealed_wire::NamedTensor {
                name: "input".to_string(),
                tensor: sealed_wire::Tensor::from_f32(vec![1, 64], &[0.5; 64]).unwrap(),
            }],
        }
        .encode()
        .unwrap();
        let (sealed, _opener) =
            sealed_crypto::seal_request(&config, &request, &mut crate::rng::os_rng()).unwrap();
        host.send(1, &EnclaveRequest::Infer { sealed }).await;
        let (id, response) = read_response(&mut host.read).await;
        assert_eq!(id, 1);
        assert!(
            matches!(&response, EnclaveResponse::Error(e) if e.code == ErrorCode::Timeout),
            "{response:?}"
        );

        // The worker comes free and reaches the abandoned job: skipped, not answered.
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while engine.in_flight() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the abandoned job stayed in flight");
        host.send(2, &EnclaveRequest::Health).await;
        let (id, response) = read_response(&mut host.read).await;
        assert_eq!(id, 2);
        assert!(
            matches!(response, EnclaveResponse::Health(_)),
            "{response:?}"
        );
        host.hang_up().await;
    }

    /// One request's slot and budget unit.
    fn held(slots: &Arc<Semaphore>, budget: &Arc<Semaphore>) -> Held {
        Held {
            _slot: Arc::clone(slots).try_acquire_owned().unwrap(),
            _budget: Arc::clone(budget).try_acquire_owned().unwrap(),
        }
    }

    /// Answers sent from many plain threads at once, as inference workers send them, while the
    /// host does not read: the socket fills, so some are written whole by their thread, some
    /// begun there and finished by the writer task, some written by it alone. Each arrives
    /// whole, in its own frame, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_from_many_threads_arrive_whole_and_once_each() {
        const THREADS: u64 = 6;
        const EACH: u64 = 20;
        const LEN: usize = 40_000;
        let (host, enclave) = tokio::net::UnixStream::pair().unwrap();
        let (_, enclave_write) = enclave.into_split();
        let (answers, write_task) = Answers::start(Box::pin(enclave_write));
        let total = usize::try_from(THREADS * EACH).unwrap();
        let (slots, budget) = (
            Arc::new(Semaphore::new(total)),
            Arc::new(Semaphore::new(total)),
        );
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let answers = Arc::clone(&answers);
                let (slots, budget) = (Arc::clone(&slots), Arc::clone(&budget));
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let id = t * EACH + i + 1;
                        let sealed = sealed_for(id, LEN);
                        let held = held(&slots, &budget);
                        answers.send(id, EnclaveResponse::Infer { sealed }, Some(held));
                    }
                })
            })
            .collect();
        drop(answers);
        // Let the socket fill before reading anything.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (host_read, _host_write) = host.into_split();
        let mut host_read: BoxRead = Box::pin(host_read);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..THREADS * EACH {
            let (id, response) = read_response(&mut host_read).await;
            match response {
                EnclaveResponse::Infer { sealed } => assert!(sealed == sealed_for(id, LEN)),
                other => panic!("{other:?}"),
            }
            assert!(seen.insert(id), "answer {id} twice");
        }
        for sender in senders {
            sender.join().unwrap();
        }
        // Every answer was sent and nothing else: the writer task ends and the stream closes.
        tokio::time::timeout(Duration::from_secs(10), write_task)
            .await
            .expect("writer task did not end")
            .unwrap();
        assert!(
            sealed_transport::read_frame(&mut host_read, MAX_FRAME_LEN)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(seen.len() as u64, THREADS * EACH);
        // Each request's slot and budget came back once its answer was written.
        assert_eq!(slots.available_permits(), total);
        assert_eq!(budget.available_permits(), total);
    }

    /// Whoever answers first (worker, request task, deadline) is the only one heard.
    #[tokio::test]
    async fn a_request_is_answered_once() {
        let (host_side, enclave_side) = tokio::io::duplex(64 * 1024);
        let (_, enclave_write) = tokio::io::split(enclave_side);
        let (answers, write_task) = Answers::start(Box::pin(enclave_write));
        let (slots, budget) = (Arc::new(Semaphore::new(1)), Arc::new(Semaphore::new(1)));
        let answer = Answer {
            request_id: 9,
            answers,
            held: Mutex::new(Some(held(&slots, &budget))),
        };
        answer.once(EnclaveResponse::Infer {
            sealed: sealed_for(9, 100),
        });
        answer.once(EnclaveResponse::error(ErrorCode::Timeout, "late"));
        assert_eq!(slots.available_permits(), 1);
        drop(answer);
        write_task.await.unwrap();
        let (host_read, _host_write) = tokio::io::split(host_side);
        let mut host_read: BoxRead = Box::pin(host_read);
        let (id, response) = read_response(&mut host_read).await;
        assert_eq!(id, 9);
        assert!(
            matches!(response, EnclaveResponse::Infer { sealed } if sealed == sealed_for(9, 100))
        );
        assert!(
            sealed_transport::read_frame(&mut host_read, MAX_FRAME_LEN)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A host that went away: answers sent from a worker find the stream broken, nothing
    /// panics, later answers are dropped, and the writer task ends.
    #[tokio::test]
    async fn answers_to_a_closed_connection_are_dropped() {
        let (host, enclave) = tokio::net::UnixStream::pair().unwrap();
        drop(host);
        let (_, enclave_write) = enclave.into_split();
        let (answers, write_task) = Answers::start(Box::pin(enclave_write));
        let worker = {
            let answers = Arc::clone(&answers);
            std::thread::spawn(move || {
                for id in 1..=3 {
                    let sealed = sealed_for(id, 1000);
                    answers.send(id, EnclaveResponse::Infer { sealed }, None);
                }
            })
        };
        worker.join().unwrap();
        assert!(lock(&answers.stream).failed);
        answers.send(
            4,
            EnclaveResponse::error(ErrorCode::Internal, "after"),
            None,
        );
        drop(answers);
        tokio::time::timeout(Duration::from_secs(10), write_task)
            .await
            .expect("writer task did not end")
            .unwrap();
    }

    #[test]
    fn the_budget_always_fits_the_largest_frame() {
        let tiny = ServerLimits {
            max_buffered_bytes: 1,
            ..ServerLimits::default()
        };
        assert!(budget_units(&tiny) * BUDGET_UNIT >= MAX_ACCEPTED_FRAME_LEN as usize);
        assert_eq!(
            budget_units(&ServerLimits::default()),
            MAX_BUFFERED_BYTES / BUDGET_UNIT
        );
    }
}
