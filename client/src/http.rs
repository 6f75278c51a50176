//! The HTTP side of the client: the host's base URL, bounded body reads, and the host's JSON error
//! shape. Nothing here is trusted: every body is read with a cap (checked against
//! `Content-Length` first, then while reading), and host text is sanitised before it is shown.
//!
//! What it does not do: TLS. This build speaks plain `http://` only (see the crate docs); other
//! schemes are refused rather than silently downgraded.

use reqwest::{Response, Url};
use serde::Deserialize;

use crate::error::{ClientError, sanitize};
use sealed_wire::ErrorCode;
use sealed_wire::limits::MAX_ERROR_MESSAGE_LEN;

/// Largest attestation response body (`{"document": b64, "manifest": b64}`): a 16 KiB document and
/// a manifest of a few KiB, base64-encoded, fit with room to spare.
pub const MAX_ATTESTATION_RESPONSE_LEN: usize = 64 * 1024;
/// Largest error body read from the host.
pub const MAX_ERROR_RESPONSE_LEN: usize = 16 * 1024;

/// A validated base URL of a `sealed-host`: `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUrl {
    base: Url,
}

impl HostUrl {
    /// Parses and checks a base URL: scheme `http`, a host, no credentials, query or fragment.
    pub fn parse(url: &str) -> Result<HostUrl, ClientError> {
        let bad = |reason| ClientError::InvalidUrl {
            url: sanitize(url, 200),
            reason,
        };
        let mut base =
            Url::parse(url).map_err(|_| bad("not a valid URL (expected http://HOST:PORT)"))?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(bad(
                    "https is not supported by this build (no TLS yet); use http:// — the \
                     sealed channel protects the payload, the attestation authenticates the enclave",
                ));
            }
            _ => return Err(bad("only http:// URLs are supported")),
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed in the base URL"));
        }
        // `Url::join` replaces the last path segment unless the path ends with '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(HostUrl { base })
    }

    /// `{base}/v1/{path}`.
    pub fn endpoint(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join("v1/")
            .and_then(|v1| v1.join(path))
            .map_err(|_| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "cannot form an endpoint URL",
            })
    }

    /// The base URL as given (with a trailing slash).
    pub fn as_str(&self) -> &str {
        self.base.as_str()
    }
}

/// Reads a whole body of at most `max` bytes. A `Content-Length` over the cap is refused before
/// reading; a body without one (or lying about it) is cut off as soon as it passes the cap.
pub async fn read_bounded(
    mut response: Response,
    max: usize,
    step: &'static str,
) -> Result<Vec<u8>, ClientError> {
    let too_large = ClientError::ResponseTooLarge { step, max };
    let declared = response.content_length();
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large);
    }
    // Pre-size from the declared length only once it has passed the cap.
    let mut body = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| ClientError::Http { step, source })?
    {
        if body.len().saturating_add(chunk.len()) > max {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: u16,
    name: String,
    message: String,
}

/// Turns a non-200 response into [`ClientError::Host`], reading at most
/// [`MAX_ERROR_RESPONSE_LEN`] bytes of its `{"error": {"code", "name", "message"}}` body.
pub async fn host_error(response: Response, step: &'static str) -> ClientError {
    let status = response.status().as_u16();
    match read_bounded(response, MAX_ERROR_RESPONSE_LEN, step).await {
        Ok(body) => parse_host_error(status, &body),
        Err(e) => ClientError::Host {
            status,
            code: None,
            name: None,
            message: format!("(error body unreadable: {e})"),
        },
    }
}

/// [`host_error`] over a body already read.
pub fn parse_host_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Host {
            status,
            code: Some(ErrorCode::from_u16(error.code)),
            name: Some(sanitize(&error.name, 64)),
            message: sanitize(&error.message, MAX_ERROR_MESSAGE_LEN),
        },
        Err(_) => ClientError::Host {
            status,
            code: None,
            name: None,
            message: if body.is_empty() {
                "(empty body)".to_string()
            } else {
                format!(
                    "(not a JSON error) {}",
                    sanitize(&String::from_utf8_lossy(body), 200)
                )
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_urls_and_forms_endpoints_under_a_prefix() {
        let h = HostUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            h.endpoint("attestation").unwrap().as_str(),
            "http://127.0.0.1:8080/v1/attestation"
        );
        let h = HostUrl::parse("http://example.test/sealed").unwrap();
        assert_eq!(
            h.endpoint("infer").unwrap().as_str(),
            "http://example.test/sealed/v1/infer"
        );
        let h = HostUrl::parse("http://example.test/sealed/").unwrap();
        assert_eq!(
            h.endpoint("infer").unwrap().as_str(),
            "http://example.test/sealed/v1/infer"
        );
    }

    #[test]
    fn refuses_https_other_schemes_and_odd_urls_with_a_reason() {
        for (url, needle) in [
            ("https://example.test", "no TLS"),
            ("ftp://example.test", "only http://"),
            ("unix:/tmp/x", "only http://"),
            ("127.0.0.1:8080", "expected http://HOST:PORT"),
            ("not a url", "not a valid URL"),
            ("http://user:pw@example.test", "credentials"),
            ("http://example.test/?x=1", "query"),
            ("http://example.test/#f", "fragment"),
        ] {
            let err = HostUrl::parse(url).unwrap_err();
            assert!(matches!(err, ClientError::InvalidUrl { .. }), "{url}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
            assert_eq!(err.step(), "url");
        }
    }

    #[test]
    fn parses_the_host_json_error_shape() {
        let body = br#"{"error":{"code":503,"name":"enclave_unavailable","message":"no enclave"}}"#;
        match parse_host_error(503, body) {
            ClientError::Host {
                status,
                code,
                name,
                message,
            } => {
                assert_eq!(status, 503);
                assert_eq!(code, Some(ErrorCode::EnclaveUnavailable));
                assert_eq!(name.as_deref(), Some("enclave_unavailable"));
                assert_eq!(message, "no enclave");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keeps_unknown_codes_and_sanitises_host_text() {
        let body = br#"{"error":{"code":999,"name":"new\u001b[0m","message":"line1\nline2"}}"#;
        let ClientError::Host {
            code,
            name,
            message,
            ..
        } = parse_host_error(400, body)
        else {
            panic!("expected Host");
        };
        assert_eq!(code, Some(ErrorCode::Unknown(999)));
        assert_eq!(name.as_deref(), Some("new?[0m"));
        assert_eq!(message, "line1?line2");
    }

    #[test]
    fn non_json_error_body_is_reported_not_parsed() {
        let ClientError::Host { code, message, .. } = parse_host_error(502, b"Bad Gateway\r\n")
        else {
            panic!("expected Host");
        };
        assert_eq!(code, None);
        assert_eq!(message, "(not a JSON error) Bad Gateway??");
        let ClientError::Host { message, .. } = parse_host_error(502, b"") else {
            panic!("expected Host");
        };
        assert_eq!(message, "(empty body)");
    }
}
