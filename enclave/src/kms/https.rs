//! One HTTPS POST to KMS through the host's byte proxy: connect to the proxy endpoint (vsock on
//! Nitro, a Unix socket in simulation), run TLS over that stream with the KMS host name as SNI, and
//! speak HTTP/1.1 on top (nitro-facts.md §5: the proxy only forwards bytes; TLS ends here, so the
//! host sees neither the credentials' signature inputs nor the response).
//!
//! Bounded: connecting and the TLS handshake share one timeout, the whole exchange another, and
//! the response body is read up to a limit. One connection per request: a model load makes one
//! KMS call, so there is nothing worth keeping open.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sealed_transport::{BoxRead, BoxWrite, Endpoint, TransportError};
use tokio_rustls::TlsConnector;

use super::BoxFuture;

/// Why an exchange failed. Transport-level only: what KMS answered is the caller's business.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("cannot reach the KMS proxy {endpoint}: {reason}{hint}", hint = proxy_hint(.endpoint))]
    Connect { endpoint: String, reason: String },
    #[error("TLS with KMS failed: {0}")]
    Tls(String),
    /// The handshake completed far enough to see that this server will never do: its
    /// certificate does not verify for the KMS name, or it offers nothing we accept.
    #[error("TLS with KMS failed: the server was refused: {0}")]
    TlsRejected(String),
    #[error("HTTP exchange with KMS failed: {0}")]
    Http(String),
    #[error("KMS did not answer within {0:?}")]
    Timeout(Duration),
    #[error("KMS response body exceeds {max} bytes")]
    TooLarge { max: usize },
    #[error("invalid KMS request: {0}")]
    Request(String),
}

/// What an operator should check when the proxy cannot be reached: on Nitro, the parent instance
/// must run the KMS proxy on the vsock port the enclave was built to use.
fn proxy_hint(endpoint: &str) -> String {
    match endpoint.strip_prefix("vsock:") {
        Some(address) => {
            let port = address.rsplit(':').next().unwrap_or("PORT");
            format!(
                " (is sealed-host running on the parent instance with \
                 --kms-proxy vsock:any:{port}=kms.REGION.amazonaws.com:443?)"
            )
        }
        None => String::new(),
    }
}

/// Opens the byte stream to the host's KMS proxy. Production uses [`TransportConnect`]; the
/// trait lets tests see which endpoint a KMS call would dial without opening a vsock socket.
pub trait ProxyConnect: Send + Sync {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<(BoxRead, BoxWrite), TransportError>>;
}

/// [`sealed_transport::connect`]: vsock on Nitro, a Unix socket in simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransportConnect;

impl ProxyConnect for TransportConnect {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<(BoxRead, BoxWrite), TransportError>> {
        Box::pin(sealed_transport::connect(endpoint))
    }
}

/// What the HTTPS layer needs to reach KMS.
#[derive(Clone)]
pub struct HttpsTarget {
    /// The host's proxy, which forwards bytes to KMS.
    pub proxy: Endpoint,
    /// How [`HttpsTarget::proxy`] is dialled.
    pub connector: Arc<dyn ProxyConnect>,
    /// TLS server name (SNI and certificate check): the KMS host name without port.
    pub server_name: ServerName<'static>,
    /// Client TLS settings, roots included.
    pub tls: Arc<rustls::ClientConfig>,
    /// Limit on connecting to the proxy and completing the TLS handshake.
    pub connect_timeout: Duration,
    /// Limit on the whole exchange, connection included.
    pub request_timeout: Duration,
    /// Largest response body read.
    pub max_response_len: usize,
}

/// A response: status and body (at most `max_response_len` bytes).
pub struct HttpsResponse {
    pub status: u16,
    pub body: Bytes,
}

/// Aborts the connection task when the exchange ends, whatever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// POSTs `body` to `/` with exactly `headers` (names lowercase, as signed).
pub async fn post(
    target: &HttpsTarget,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<HttpsResponse, HttpsError> {
    let timeout = target.request_timeout;
    tokio::time::timeout(timeout, post_inner(target, headers, body))
        .await
        .map_err(|_| HttpsError::Timeout(timeout))?
}

async fn post_inner(
    target: &HttpsTarget,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<HttpsResponse, HttpsError> {
    let mut request = http::Request::builder().method(http::Method::POST).uri("/");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpsError::Request(e.to_string()))?;

    let tls = tokio::time::timeout(target.connect_timeout, connect_tls(target))
        .await
        .map_err(|_| HttpsError::Timeout(target.connect_timeout))??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| HttpsError::Http(e.to_string()))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "KMS connection ended with an error");
        }
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpsError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let max = target.max_response_len;
    let collected = Limited::new(response.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                HttpsError::TooLarge { max }
            } else {
                HttpsError::Http(e.to_string())
            }
        })?;
    Ok(HttpsResponse {
        status,
        body: collected.to_bytes(),
    })
}

async fn connect_tls(
    target: &HttpsTarget,
) -> Result<
    tokio_rustls::client::TlsStream<
        tokio::io::Join<sealed_transport::BoxRead, sealed_transport::BoxWrite>,
    >,
    HttpsError,
> {
    let (reader, writer) =
        target
            .connector
            .connect(&target.proxy)
            .await
            .map_err(|e| HttpsError::Connect {
                endpoint: target.proxy.to_string(),
                reason: e.to_string(),
            })?;
    let stream = tokio::io::join(reader, writer);
    TlsConnector::from(Arc::clone(&target.tls))
        .connect(target.server_name.clone(), stream)
        .await
        .map_err(tls_error)
}

/// Tells a server we refuse (retrying meets the same certificate) from a handshake that broke
/// (which another attempt may complete).
fn tls_error(e: std::io::Error) -> HttpsError {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
            )
        });
    if refused {
        HttpsError::TlsRejected(e.to_string())
    } else {
        HttpsError::Tls(e.to_string())
    }
}

impl HttpsError {
    /// Whether another attempt may succeed: the proxy or KMS unreachable, a broken handshake or
    /// exchange (a dropped connection), a timeout. Not: a refused server, our own bad request,
    /// an oversized answer.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpsError::Connect { .. }
            | HttpsError::Tls(_)
            | HttpsError::Http(_)
            | HttpsError::Timeout(_) => true,
            HttpsError::TlsRejected(_) | HttpsError::TooLarge { .. } | HttpsError::Request(_) => {
                false
            }
        }
    }
}

/// Client TLS settings over the ring provider (the workspace's one TLS crypto provider), TLS 1.2
/// and 1.3, HTTP/1.1 by ALPN, trusting exactly `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, HttpsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The public web PKI roots compiled into the image (webpki-roots): an enclave has no trust store
/// of its own, and KMS's certificates chain to these.
pub fn web_pki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}
