//! The enclave's listener: frames in, frames out, over vsock (Nitro) or a Unix socket
//! (simulation) — the same code for both through `sealed-transport`.
//!
//! Each connection from the host carries many requests at once, told apart by request id. A reader
//! decodes frames and spawns one task per request (bounded by a semaphore per connection); a writer
//! sends responses in the order they finish. A malformed message is answered with an error for its
//! request id and the connection goes on; a frame that breaks the framing itself (length over the
//! maximum, truncated) closes only that connection. Nothing a peer sends can stop the listener.

use std::sync::Arc;

use sealed_transport::{BoxRead, BoxWrite, Endpoint, Listener, TransportError};
use sealed_wire::limits::MAX_FRAME_LEN;
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode};
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::service::Service;

/// Most requests in flight on one connection; the reader stops reading when this is reached, which
/// pushes back on the host instead of queueing without bound.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Frame bodies (and the work they cause) held at once across all connections. A frame reserves
/// its share before its body is read and keeps it until its response is queued, so many large
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

/// Serves connections until the task is cancelled.
pub async fn serve(listener: Listener, service: Arc<Service>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let budget = Arc::new(Semaphore::new(MAX_BUFFERED_BYTES / BUDGET_UNIT));
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
                        serve_connection(reader, writer, service, budget).await;
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

/// Serves one connection until the host closes it or breaks the framing. `budget` holds
/// [`MAX_BUFFERED_BYTES`] in units shared by every connection.
pub async fn serve_connection(
    mut reader: BoxRead,
    mut writer: BoxWrite,
    service: Arc<Service>,
    budget: Arc<Semaphore>,
) {
    let (tx, mut rx) = mpsc::channel::<(u64, Vec<u8>)>(MAX_IN_FLIGHT_PER_CONNECTION);
    let write_task = tokio::spawn(async move {
        while let Some((id, body)) = rx.recv().await {
            if let Err(e) = sealed_transport::write_frame(&mut writer, id, &body).await {
                debug!(error = %e, "write failed; closing connection");
                break;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
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
                send(&tx, 0, &EnclaveResponse::error(code, e.to_string())).await;
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
        let tx = tx.clone();
        let service = Arc::clone(&service);
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let response = match EnclaveRequest::decode(&frame.body) {
                    Ok(request) => {
                        drop(frame);
                        service.handle(request).await
                    }
                    Err(e) => {
                        warn!(code = %e.code(), error = %e, "malformed request");
                        EnclaveResponse::error(e.code(), e.to_string())
                    }
                };
                if let EnclaveResponse::Error(e) = &response {
                    debug!(code = %e.code, elapsed_ms = started.elapsed().as_millis() as u64, "request failed");
                } else {
                    debug!(elapsed_ms = started.elapsed().as_millis() as u64, "request done");
                }
                send(&tx, request_id, &response).await;
                drop(reserved);
                drop(permit);
            }
            .instrument(info_span!("request", id = request_id)),
        );
    }
    drop(tx);
    let _ = write_task.await;
}

async fn send(tx: &mpsc::Sender<(u64, Vec<u8>)>, request_id: u64, response: &EnclaveResponse) {
    let body = match response.encode() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "response encoding failed");
            match EnclaveResponse::error(ErrorCode::Internal, "response encoding failed").encode() {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    // A closed channel means the connection is gone; the host will time the request out.
    let _ = tx.send((request_id, body)).await;
}
