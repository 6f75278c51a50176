//! The client-facing HTTP API (axum). Every handler turns an HTTP request into one
//! [`EnclaveRequest`], relays it through the [`EnclavePool`], and turns the answer back into HTTP.
//!
//! | route | enclave request | success |
//! | --- | --- | --- |
//! | `GET /v1/attestation?nonce=HEX` | `Attestation` | `{"document": b64, "manifest": b64}` |
//! | `POST /v1/infer` (sealed bytes) | `Infer` | sealed response bytes |
//! | `GET /v1/health` | `Health` | `{"status": "ok", "enclave": HealthStatus}` |
//! | `GET /v1/models` | `Health` | `[ModelInfo, …]` |
//! | `GET /livez` | none | 200 `{"status": "alive"}` while the process serves |
//! | `GET /readyz` | none (the supervisor's last probe) | 200 `{"status": "ready"}`, else 503 `{"status": "not_ready", "reason": …}` |
//!
//! Errors are `{"error": {"code": u16, "name": "snake_case", "message": "…"}}` with the HTTP status
//! from [`status_for`].
//!
//! What it does not do: open, parse or log sealed bodies (the host cannot open them, and their size
//! and timing are all it learns), or log nonces or raw paths (requests are logged and counted by
//! matched route template only, never the path or query).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sealed_wire::limits::{MAX_NONCE_LEN, MAX_SEALED_MESSAGE_LEN, MIN_NONCE_LEN};
use sealed_wire::{
    EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, PROTOCOL_VERSION, WireError,
};
use serde::{Deserialize, Serialize};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::enclave_pool::{InferAnswer, InferFrame, PoolError};
use crate::limits::{ClientKey, HttpLimits, Limiter, Refusal, RejectReason};
use crate::metrics::route_label;
use crate::supervisor::HostState;

#[derive(Clone)]
struct ApiState {
    host: Arc<HostState>,
    http_timeout: Duration,
    next_http_request: Arc<AtomicU64>,
    /// Inference bodies being received or relayed at once. Taken before the body is read, so a
    /// burst of uploads waits for `busy` instead of buffering gigabytes on the host.
    infer_slots: Arc<tokio::sync::Semaphore>,
    /// `/v1/infer` and `/v1/attestation` requests being handled, in total and per client.
    in_flight: Arc<Limiter>,
}

/// Most `/v1/infer` requests in progress at once (each may carry up to MAX_SEALED_MESSAGE_LEN).
pub const MAX_CONCURRENT_INFER: usize = 64;

/// The HTTP API over `host`'s pool with the default in-flight limits. `http_timeout` bounds a
/// whole HTTP request, body transfer included.
pub fn router(host: Arc<HostState>, http_timeout: Duration) -> Router {
    router_with_limits(host, http_timeout, &HttpLimits::default())
}

/// The HTTP API with `limits`' in-flight bounds on `/v1/infer` and `/v1/attestation` (the
/// connection limits are the accept loop's, [`crate::limits::serve_http`]). The client is the
/// peer address the accept loop puts in the request's [`ConnectInfo`]; without one only the total
/// bound applies.
pub fn router_with_limits(
    host: Arc<HostState>,
    http_timeout: Duration,
    limits: &HttpLimits,
) -> Router {
    let state = ApiState {
        host,
        http_timeout,
        next_http_request: Arc::new(AtomicU64::new(1)),
        infer_slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_INFER)),
        in_flight: Limiter::new(limits.max_in_flight, limits.max_in_flight_per_client),
    };
    let admission = || middleware::from_fn_with_state(state.clone(), in_flight_admission);
    Router::new()
        .route("/v1/attestation", get(attestation).layer(admission()))
        .route(
            "/v1/infer",
            // The in-flight bound first (outermost), then the body slots.
            post(infer)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    infer_admission,
                ))
                .layer(admission()),
        )
        .route("/v1/health", get(health))
        .route("/v1/models", get(models))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz_handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // No route here reads more than MAX_SEALED_MESSAGE_LEN (`/v1/infer` reads its body
        // itself and checks the same bound, `read_sealed_body`); a larger upload is cut off
        // without buffering it.
        .layer(DefaultBodyLimit::max(MAX_SEALED_MESSAGE_LEN))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Admits a request that reaches the enclave only while its client and the host are under their
/// in-flight bounds: 429 `too_many_requests` over the client's, 503 `busy` over the total. Never
/// queues; answered before the body is read.
async fn in_flight_admission(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| ClientKey::of(peer.ip()));
    match state.in_flight.try_acquire(client) {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(refusal) => {
            let (reason, message) = match refusal {
                Refusal::PerClient => (
                    RejectReason::InFlightPerClient,
                    "too many requests in progress from this client",
                ),
                Refusal::Total => (RejectReason::InFlightTotal, "too many requests in progress"),
            };
            state.host.metrics.observe_rejected(reason);
            let code = refusal.code();
            let mut response = ApiError::new(status_for(code), code, message).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
    }
}

/// Admits an inference request only if a slot is free; answers 503 `busy` otherwise, before the
/// body is read.
async fn infer_admission(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match Arc::clone(&state.infer_slots).try_acquire_owned() {
        Ok(slot) => {
            let response = next.run(request).await;
            drop(slot);
            response
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Busy,
            "too many inference requests in progress",
        )
        .into_response(),
    }
}

/// An HTTP error in the contract's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: u16,
    name: &'static str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// An error the enclave answered with. Its message is operator-facing text that the enclave
    /// guarantees free of payload details, so it is relayed as is.
    fn from_enclave(e: WireError) -> ApiError {
        ApiError::new(status_for(e.code), e.code, e.message)
    }

    fn unexpected(response: &EnclaveResponse) -> ApiError {
        warn!(response = ?response, "enclave answered with the wrong response kind");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::Internal,
            "unexpected response from the enclave",
        )
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> ApiError {
        let message = match &e {
            PoolError::Unavailable => "the enclave is not reachable".to_string(),
            PoolError::Busy => "the enclave is at capacity; retry later".to_string(),
            PoolError::Timeout(_) => "the enclave did not answer in time".to_string(),
            PoolError::TooLarge { .. } => "request too large".to_string(),
            // Internal details stay in the host log.
            PoolError::Encode(_) | PoolError::Decode(_) => {
                let detail = std::error::Error::source(&e).map(ToString::to_string);
                warn!(error = %e, detail = ?detail, "enclave exchange failed");
                "invalid exchange with the enclave".to_string()
            }
        };
        let status = match e {
            // The enclave sent something we cannot decode: a bad gateway, not a bad request.
            PoolError::Decode(_) | PoolError::Encode(_) => StatusCode::BAD_GATEWAY,
            _ => status_for(e.code()),
        };
        ApiError::new(status, e.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_u16(),
                name: self.code.as_str(),
                message: &self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        // Read back by `observe` so that the access log carries the error code.
        response.extensions_mut().insert(self.code);
        response
    }
}

/// The HTTP status for an error code: 400 for what the client sent, 413 for sizes, 503 when the
/// enclave cannot take the request now, 504 for timeouts, 502 for failures inside the enclave.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidNonce
        | ErrorCode::SealedRequestInvalid
        | ErrorCode::UnsupportedKeyConfig
        | ErrorCode::ReplayedRequest
        | ErrorCode::StaleRequest
        | ErrorCode::UnsupportedVersion
        | ErrorCode::UnknownModel
        | ErrorCode::InputMismatch
        | ErrorCode::InvalidTensor => StatusCode::BAD_REQUEST,
        ErrorCode::RequestTooLarge | ErrorCode::FrameTooLarge | ErrorCode::ModelTooLarge => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ErrorCode::Busy | ErrorCode::EnclaveUnavailable | ErrorCode::AttestationUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        // Sealed-model loads (admin API): the key policy refused this enclave; the file itself
        // is bad; KMS is unreachable or the enclave has no KMS settings; KMS refused otherwise.
        ErrorCode::ModelAccessDenied => StatusCode::FORBIDDEN,
        ErrorCode::ModelCorrupt
        | ErrorCode::ModelDigestMismatch
        | ErrorCode::ModelRejected
        | ErrorCode::UnsupportedOperator => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::KmsUnavailable | ErrorCode::KmsNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::KmsError | ErrorCode::UnknownUpload => StatusCode::BAD_GATEWAY,
        // An upload under an id that is already served: the operator's request conflicts.
        ErrorCode::ModelAlreadyLoaded => StatusCode::CONFLICT,
        // The host builds these messages, so a framing or schema complaint from the enclave is
        // not the client's fault.
        ErrorCode::MalformedFrame
        | ErrorCode::MalformedMessage
        | ErrorCode::InferenceFailed
        | ErrorCode::PlaintextModelsDisabled
        | ErrorCode::TooManyModels
        | ErrorCode::Internal
        | ErrorCode::Unknown(_) => StatusCode::BAD_GATEWAY,
    }
}

/// Access log, metrics and whole-request timeout. Logs an id, method, matched route template
/// (never the path or query: the query carries the client's nonce), status, error code, sizes and
/// duration; never bodies. Probes (`/livez`, `/readyz`) are logged at debug level only.
async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let id = state.next_http_request.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let request_len = request.body().size_hint().exact();
    let metrics = &state.host.metrics;
    metrics.http_in_flight.inc();
    let started = Instant::now();
    // The span ties the pool's per-exchange debug lines (enclave request ids) to this request.
    let handled = next.run(request).instrument(info_span!("http", id));
    let response = match tokio::time::timeout(state.http_timeout, handled).await {
        Ok(response) => response,
        Err(_) => {
            // A slow upload or download is cut here, whatever stage it reached.
            metrics.observe_rejected(RejectReason::RequestDeadline);
            let mut response = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::Timeout,
                "request timed out",
            )
            .into_response();
            // Part of the body may still be on its way: close rather than read it to the end.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            response
        }
    };
    metrics.http_in_flight.dec();
    let status = response.status().as_u16();
    let response_len = response.body().size_hint().exact();
    let elapsed = started.elapsed();
    let duration_ms = elapsed.as_millis() as u64;
    metrics.observe_request(route, status, elapsed.as_secs_f64());
    match response.extensions().get::<ErrorCode>() {
        Some(code) => {
            metrics.observe_error(*code);
            warn!(
                http_request = id, %method, route, status, error = code.as_str(),
                request_len, duration_ms, "request failed"
            );
        }
        None if route == "/livez" || route == "/readyz" => debug!(
            http_request = id, %method, route, status, duration_ms, "probe served"
        ),
        None => info!(
            http_request = id, %method, route, status,
            request_len, response_len, duration_ms, "request served"
        ),
    }
    response
}

/// The metrics listener's router: `GET /metrics` (OpenMetrics text), `/livez` and `/readyz`.
pub fn metrics_router(host: Arc<HostState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/livez", get(livez))
        .route("/readyz", get(metrics_readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(host)
}

async fn metrics_page(State(host): State<Arc<HostState>>) -> Response {
    host.refresh_gauges();
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        host.metrics.encode(),
    )
        .into_response()
}

async fn metrics_readyz(State(host): State<Arc<HostState>>) -> Response {
    readyz(&host)
}

#[derive(Serialize)]
struct ProbeBody {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<crate::supervisor::NotReady>,
}

/// `GET /livez`: the process is up and serving HTTP.
pub async fn livez() -> Response {
    axum::Json(ProbeBody {
        status: "alive",
        reason: None,
    })
    .into_response()
}

/// `GET /readyz` for `host`: 200 when it should receive traffic, else 503 with the reason.
pub fn readyz(host: &HostState) -> Response {
    match host.readiness() {
        Ok(()) => axum::Json(ProbeBody {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ProbeBody {
                status: "not_ready",
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

async fn readyz_handler(State(state): State<ApiState>) -> Response {
    readyz(&state.host)
}

#[derive(Deserialize)]
struct AttestationQuery {
    nonce: Option<String>,
}

#[derive(Serialize)]
struct AttestationBody {
    document: String,
    manifest: String,
}

fn invalid_nonce(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidNonce, message)
}

/// Parses the nonce, checking its length before decoding (and before the enclave is involved).
fn parse_nonce(nonce: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let hex_nonce = nonce.ok_or_else(|| invalid_nonce("missing nonce query parameter"))?;
    let len = hex_nonce.len();
    if len % 2 != 0 || len / 2 < MIN_NONCE_LEN || len / 2 > MAX_NONCE_LEN {
        return Err(invalid_nonce(&format!(
            "nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes, hex-encoded"
        )));
    }
    hex::decode(hex_nonce).map_err(|_| invalid_nonce("nonce is not valid hex"))
}

async fn attestation(
    State(state): State<ApiState>,
    query: Result<Query<AttestationQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query.map_err(|_| invalid_nonce("malformed query string"))?;
    let nonce = parse_nonce(query.nonce.as_deref())?;
    match state
        .host
        .call(&EnclaveRequest::Attestation { nonce })
        .await?
    {
        EnclaveResponse::Attestation { document, manifest } => Ok(axum::Json(AttestationBody {
            document: STANDARD.encode(document),
            manifest: STANDARD.encode(manifest),
        })
        .into_response()),
        EnclaveResponse::Error(e) => Err(ApiError::from_enclave(e)),
        other => Err(ApiError::unexpected(&other)),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTooLarge,
        format!("sealed request exceeds {MAX_SEALED_MESSAGE_LEN} bytes"),
    )
}

/// Reads a sealed request body straight into the frame that carries it to the enclave: one copy
/// out of hyper's read buffer, no collecting of chunks. The announced length is checked against
/// [`MAX_SEALED_MESSAGE_LEN`] before anything is read, and the buffer is sized to it only once the
/// first bytes have arrived (a client that announces 16 MiB and sends nothing holds nothing); a
/// body without a length grows as it arrives, checked against the same bound.
async fn read_sealed_body(mut body: Body) -> Result<InferFrame, ApiError> {
    let announced = body.size_hint().exact();
    let announced = match announced.map(usize::try_from) {
        Some(Ok(n)) if n <= MAX_SEALED_MESSAGE_LEN => Some(n),
        Some(_) => return Err(too_large()),
        None => None,
    };
    let mut frame = InferFrame::new();
    while let Some(next) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let next = next.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedMessage,
                "request body could not be read",
            )
        })?;
        // Trailers carry nothing a sealed request needs.
        let Ok(data) = next.into_data() else {
            continue;
        };
        let total = frame.sealed_len().saturating_add(data.len());
        if total > MAX_SEALED_MESSAGE_LEN {
            return Err(too_large());
        }
        if frame.sealed_len() == 0
            && let Some(n) = announced
        {
            frame.reserve_exact(n);
        }
        frame.extend_from_slice(&data);
    }
    Ok(frame)
}

async fn infer(State(state): State<ApiState>, request: Request) -> Result<Response, ApiError> {
    let frame = read_sealed_body(request.into_body()).await?;
    if frame.sealed_len() == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedMessage,
            "empty request body: expected a sealed request",
        ));
    }
    match state.host.call_infer(frame).await? {
        // The answer's bytes go to hyper as a view into the frame they arrived in.
        InferAnswer::Sealed(sealed) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(sealed),
        )
            .into_response()),
        InferAnswer::Other(EnclaveResponse::Error(e)) => Err(ApiError::from_enclave(e)),
        InferAnswer::Other(other) => Err(ApiError::unexpected(&other)),
    }
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    enclave: Option<HealthStatus>,
}

/// 200 only when the enclave answers, says it is ready and speaks our protocol version.
async fn health(State(state): State<ApiState>) -> Response {
    let enclave = match state.host.call(&EnclaveRequest::Health).await {
        Ok(EnclaveResponse::Health(h)) => Some(h),
        Ok(other) => {
            warn!(response = ?other, "enclave answered a health check with the wrong kind");
            None
        }
        Err(e) => {
            warn!(error = %e, "enclave health check failed");
            None
        }
    };
    let ok = enclave
        .as_ref()
        .is_some_and(|h| h.ready && h.protocol_version == PROTOCOL_VERSION);
    let (status, text) = if ok {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = HealthBody {
        status: text,
        enclave,
    };
    (status, axum::Json(body)).into_response()
}

async fn models(State(state): State<ApiState>) -> Result<Response, ApiError> {
    match state.host.call(&EnclaveRequest::Health).await? {
        EnclaveResponse::Health(h) => Ok(axum::Json(h.models).into_response()),
        EnclaveResponse::Error(e) => Err(ApiError::from_enclave(e)),
        other => Err(ApiError::unexpected(&other)),
    }
}

// Routing errors share one code; the HTTP status says which.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::NotFound,
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_checked_for_presence_length_and_hex() {
        assert_eq!(parse_nonce(Some(&"ab".repeat(16))).unwrap(), vec![0xab; 16]);
        assert_eq!(parse_nonce(Some(&"00".repeat(64))).unwrap(), vec![0; 64]);
        for bad in [
            None,
            Some("ab".repeat(15)),
            Some("ab".repeat(65)),
            Some(format!("{}a", "ab".repeat(16))),
            Some("zz".repeat(16)),
        ] {
            let err = parse_nonce(bad.as_deref()).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.code, ErrorCode::InvalidNonce);
        }
    }

    #[test]
    fn every_error_code_maps_to_an_error_status() {
        for &code in ErrorCode::ALL {
            let s = status_for(code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}: {s}");
        }
        assert_eq!(
            status_for(ErrorCode::EnclaveUnavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_for(ErrorCode::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status_for(ErrorCode::SealedRequestInvalid),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_for(ErrorCode::Internal), StatusCode::BAD_GATEWAY);
        assert_eq!(status_for(ErrorCode::Unknown(999)), StatusCode::BAD_GATEWAY);
    }
}
