//! The SDK against a stand-in host on 127.0.0.1 that answers one request with canned bytes: the
//! request the client sends, and how each kind of answer maps to a [`ClientError`]. A live host
//! and enclave are exercised by the workspace end-to-end tests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sealed_client::{Client, ClientError, Policy};
use sealed_wire::ErrorCode;

/// Serves one connection: reads the request head, writes `response`, returns the head.
fn serve_once(response: Vec<u8>) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        // The client may hang up early (it refuses oversized bodies): ignore write errors.
        let _ = stream.write_all(&response);
        let _ = stream.flush();
        String::from_utf8(head).unwrap()
    });
    (url, handle)
}

fn http_response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn client(url: &str) -> Client {
    Client::new(url, Policy::new().no_pcr_policy()).unwrap()
}

#[tokio::test]
async fn attest_sends_a_fresh_32_byte_hex_nonce_and_rejects_a_document_that_does_not_verify() {
    // A real AWS document, but signed in 2024: its leaf certificate has long expired, and its
    // nonce is not ours. Verification must fail, naming the first failed check.
    let doc = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/nitro/nitrite-2024-09-07.cbor"
    ))
    .unwrap();
    let body = format!(r#"{{"document":"{}","manifest":""}}"#, BASE64.encode(&doc));
    let (url, server) = serve_once(http_response("200 OK", "application/json", body.as_bytes()));
    let err = client(&url).attest().await.unwrap_err();
    assert_eq!(err.step(), "verify:certificate_validity", "{err}");
    assert!(err.is_verification_failure());

    let head = server.join().unwrap();
    let request_line = head.lines().next().unwrap();
    let nonce = request_line
        .strip_prefix("GET /v1/attestation?nonce=")
        .and_then(|rest| rest.strip_suffix(" HTTP/1.1"))
        .unwrap_or_else(|| panic!("unexpected request line {request_line:?}"));
    assert_eq!(nonce.len(), 64);
    assert!(
        nonce
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_ne!(nonce, "0".repeat(64));
}

#[tokio::test]
async fn nonces_differ_between_attestations() {
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let (url, server) = serve_once(http_response(
            "500 Internal Server Error",
            "text/plain",
            b"",
        ));
        let _ = client(&url).attest().await;
        nonces.push(server.join().unwrap().lines().next().unwrap().to_string());
    }
    assert_ne!(nonces[0], nonces[1]);
}

#[tokio::test]
async fn host_json_error_becomes_a_host_error_with_its_code() {
    let body =
        br#"{"error":{"code":503,"name":"enclave_unavailable","message":"enclave not connected"}}"#;
    let (url, _server) = serve_once(http_response(
        "503 Service Unavailable",
        "application/json",
        body,
    ));
    match client(&url).attest().await.unwrap_err() {
        ClientError::Host {
            status,
            code,
            name,
            message,
        } => {
            assert_eq!(status, 503);
            assert_eq!(code, Some(ErrorCode::EnclaveUnavailable));
            assert_eq!(name.as_deref(), Some("enclave_unavailable"));
            assert_eq!(message, "enclave not connected");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refuses_a_declared_content_length_over_the_cap_without_reading_it() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n{";
    let (url, _server) = serve_once(head.to_vec());
    let err = client(&url).attest().await.unwrap_err();
    assert!(
        matches!(err, ClientError::ResponseTooLarge { max: 65536, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn cuts_off_a_chunked_body_that_grows_past_the_cap() {
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        response.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        response.extend_from_slice(&chunk);
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"0\r\n\r\n");
    let (url, _server) = serve_once(response);
    let err = client(&url).attest().await.unwrap_err();
    assert!(
        matches!(err, ClientError::ResponseTooLarge { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_attestation_body_is_reported_as_such() {
    let (url, _server) = serve_once(http_response(
        "200 OK",
        "application/json",
        br#"{"document":"not base64!","manifest":""}"#,
    ));
    let err = client(&url).attest().await.unwrap_err();
    assert_eq!(err.step(), "attestation_response", "{err}");
}

#[tokio::test]
async fn unreachable_host_is_an_http_error_of_the_attestation_step() {
    // Bind then drop a listener: the port is closed on loopback.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client(&format!("http://127.0.0.1:{port}"))
        .attest()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err:?}");
    assert_eq!(err.step(), "attestation_request");
}
