//! The admin HTTP API: operator actions, on its own listener (`--admin-listen`, off by default) so
//! that it can be bound to loopback or a management network while the inference API faces
//! clients.
//!
//! | route | action | success |
//! | --- | --- | --- |
//! | `POST /v1/admin/models` (`application/octet-stream`: a sealed model file) | [`load_sealed`] | 200 [`ModelInfo`] JSON |
//!
//! The body is streamed to the enclave in chunks as it arrives ([`crate::sealed_loader`]): the host
//! never holds more than one chunk, and never a plaintext byte. Errors use the public API's JSON
//! shape and status mapping ([`crate::api::status_for`]): 403 `model_access_denied` when the key
//! policy refuses this enclave, 422 for a corrupt file or digest mismatch, 503 when KMS or the
//! host's credentials are unavailable.
//!
//! What it does not do: authenticate the operator (bind it to an address only operators reach),
//! or log bodies.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sealed_wire::ErrorCode;
use sealed_wire::limits::MAX_SEALED_MODEL_HEADER_LEN;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::{ApiError, status_for};
use crate::credentials::CredentialProvider;
use crate::enclave_pool::EnclavePool;
use crate::sealed_loader::{LoadError, LoaderConfig, load_sealed};
use crate::supervisor::HostState;

/// Largest sealed model accepted (`Content-Length` checked before reading): the largest header
/// plus an 8 GiB model (`sealed_model::MAX_MODEL_LEN`) in the smallest chunks (4 KiB), each with
/// its 16-byte tag. The enclave enforces its own, usually smaller, budget on the declared size.
pub const MAX_SEALED_FILE_LEN: u64 =
    MAX_SEALED_MODEL_HEADER_LEN as u64 + (8 << 30) + ((8 << 30) / 4096) * 16;
/// Sealed uploads in progress at once; more are answered 503 `busy` before reading the body.
pub const MAX_CONCURRENT_UPLOADS: usize = 2;

#[derive(Clone)]
struct AdminState {
    pool: Arc<EnclavePool>,
    credentials: Arc<CredentialProvider>,
    loader: LoaderConfig,
    uploads: Arc<tokio::sync::Semaphore>,
    /// Where load outcomes are counted, when the host runs with metrics.
    host: Option<Arc<HostState>>,
}

/// The admin API over `pool`, handing the enclave credentials from `credentials`.
pub fn router(
    pool: Arc<EnclavePool>,
    credentials: Arc<CredentialProvider>,
    loader: LoaderConfig,
) -> Router {
    build(pool, credentials, loader, None)
}

/// [`router`] over `host`'s pool, counting loads and errors in its metrics.
pub fn router_with_metrics(
    host: Arc<HostState>,
    credentials: Arc<CredentialProvider>,
    loader: LoaderConfig,
) -> Router {
    build(host.pool.clone(), credentials, loader, Some(host))
}

fn build(
    pool: Arc<EnclavePool>,
    credentials: Arc<CredentialProvider>,
    loader: LoaderConfig,
    host: Option<Arc<HostState>>,
) -> Router {
    let state = AdminState {
        pool,
        credentials,
        loader,
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS)),
        host,
    };
    Router::new()
        .route("/v1/admin/models", post(load_model))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::NotFound,
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve<F>(listener: TcpListener, router: Router, shutdown: F) -> io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn load_model(State(state): State<AdminState>, request: Request) -> Response {
    let started = Instant::now();
    let result = load_model_inner(&state, request).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(response) => {
            if let Some(host) = &state.host {
                host.metrics.observe_sealed_load(Ok(()));
            }
            info!(duration_ms, "admin: sealed model loaded");
            response
        }
        Err(e) => {
            if let Some(host) = &state.host {
                host.metrics.observe_sealed_load(Err(e.code));
                host.metrics.observe_error(e.code);
            }
            warn!(
                status = e.status.as_u16(),
                error = e.code.as_str(),
                duration_ms,
                "admin: sealed model load failed"
            );
            e.into_response()
        }
    }
}

async fn load_model_inner(state: &AdminState, request: Request) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase());
    if content_type
        .as_deref()
        .is_some_and(|ct| !ct.starts_with("application/octet-stream"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MalformedMessage,
            "expected an application/octet-stream body: a sealed model file",
        ));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_SEALED_FILE_LEN) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ModelTooLarge,
            format!("sealed model exceeds {MAX_SEALED_FILE_LEN} bytes"),
        ));
    }
    let Ok(_slot) = Arc::clone(&state.uploads).try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Busy,
            "too many sealed model uploads in progress",
        ));
    };
    let credentials = state
        .credentials
        .get()
        .await
        .map_err(|e| load_error(LoadError::Credentials(e)))?;
    let reader = BodyReader::new(request.into_body());
    let model = load_sealed(&state.pool, reader, credentials, &state.loader)
        .await
        .map_err(load_error)?;
    Ok(axum::Json(model).into_response())
}

/// The admin API's answer for a failed load.
fn load_error(e: LoadError) -> ApiError {
    let code = e.code();
    match e {
        LoadError::Pool(e) => ApiError::from(e),
        // The enclave's message is operator-facing text free of payload details.
        LoadError::Refused { code, message } => ApiError::new(status_for(code), code, message),
        LoadError::Read(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            "the request body could not be read",
        ),
        LoadError::ReadTimeout(_) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, code, e.to_string())
        }
        other => ApiError::new(status_for(code), code, other.to_string()),
    }
}

/// An HTTP request body as an [`AsyncRead`], frame by frame: no more than one frame of the body
/// is held at a time.
struct BodyReader {
    body: Body,
    pending: Bytes,
}

impl BodyReader {
    fn new(body: Body) -> BodyReader {
        BodyReader {
            body,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = out.remaining().min(self.pending.len());
                let piece = self.pending.split_to(n);
                out.put_slice(&piece);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                // Trailers carry nothing for us.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
            }
        }
    }
}
