//! The host HTTP API against a fake enclave: relaying, input checks, error mapping, multiplexing,
//! timeouts and reconnection.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Action, FakeEnclave, Host, canned, error_of};
use sealed_host::PoolConfig;
use sealed_transport::Endpoint;
use sealed_wire::limits::MAX_SEALED_MESSAGE_LEN;
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode};

#[tokio::test]
async fn health_reports_ok_with_the_enclave_status() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    let r = host.get("/v1/health").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["enclave"]["ready"], true);
    assert_eq!(v["enclave"]["workers"], 2);
    assert_eq!(v["enclave"]["models"][0]["model_id"], "mlp");
}

#[tokio::test]
async fn health_is_unavailable_when_the_enclave_is_not_ready() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Health => {
            Action::Reply(EnclaveResponse::Health(common::health_status(false)))
        }
        other => canned(other),
    }))
    .await;
    let host = Host::with_defaults(&fake).await;
    let r = host.get("/v1/health").await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["enclave"]["ready"], false);
}

#[tokio::test]
async fn health_is_unavailable_with_null_enclave_when_the_enclave_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(PoolConfig::new(Endpoint::Unix(
        dir.path().join("absent.sock"),
    )))
    .await;
    let r = host.get("/v1/health").await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unavailable");
    assert!(v["enclave"].is_null());
}

#[tokio::test]
async fn models_lists_the_enclave_model_metadata() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    let r = host.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let models: Vec<sealed_wire::ModelInfo> = r.json().await.unwrap();
    assert_eq!(models, vec![common::model_info("mlp")]);
}

#[tokio::test]
async fn attestation_relays_document_and_manifest_as_base64() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    let nonce: Vec<u8> = (0u8..32).collect();
    let r = host
        .get(&format!("/v1/attestation?nonce={}", hex::encode(&nonce)))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: serde_json::Value = r.json().await.unwrap();
    let document = STANDARD.decode(v["document"].as_str().unwrap()).unwrap();
    let manifest = STANDARD.decode(v["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(document, [b"doc:".as_slice(), &nonce].concat());
    assert_eq!(manifest, b"manifest bytes");
}

#[tokio::test]
async fn attestation_rejects_bad_nonces_without_asking_the_enclave() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    for query in [
        "".to_string(),
        "?other=1".to_string(),
        format!("?nonce={}", "ab".repeat(15)),
        format!("?nonce={}", "ab".repeat(65)),
        format!("?nonce={}a", "ab".repeat(16)),
        format!("?nonce={}", "zz".repeat(16)),
    ] {
        let r = host.get(&format!("/v1/attestation{query}")).await;
        let (status, code, name) = error_of(r).await;
        assert_eq!(
            (status, code),
            (400, ErrorCode::InvalidNonce.as_u16()),
            "{query}"
        );
        assert_eq!(name, "invalid_nonce");
    }
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn infer_relays_sealed_bytes_unchanged_both_ways() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    // Every byte value, and a body large enough to span many TCP reads.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = host.infer(body.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let reversed: Vec<u8> = body.into_iter().rev().collect();
    assert_eq!(r.bytes().await.unwrap().as_ref(), reversed.as_slice());
}

#[tokio::test]
async fn infer_refuses_an_oversized_body_with_413() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    let r = host.infer(vec![1; MAX_SEALED_MESSAGE_LEN + 1]).await;
    let (status, code, name) = error_of(r).await;
    assert_eq!((status, code), (413, ErrorCode::RequestTooLarge.as_u16()));
    assert_eq!(name, "request_too_large");
    assert_eq!(fake.requests(), 0);
    // The limit is inclusive.
    let r = host.infer(vec![1; MAX_SEALED_MESSAGE_LEN]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn infer_refuses_an_empty_body_with_400() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    let (status, _, _) = error_of(host.infer(Vec::new()).await).await;
    assert_eq!(status, 400);
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn enclave_errors_are_mapped_to_json_and_a_status() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { sealed } => Action::Reply(match sealed.as_slice() {
            b"bad" => EnclaveResponse::error(ErrorCode::SealedRequestInvalid, "cannot open"),
            b"busy" => EnclaveResponse::error(ErrorCode::Busy, "queue full"),
            b"future" => EnclaveResponse::error(ErrorCode::Unknown(999), "new code"),
            _ => EnclaveResponse::error(ErrorCode::Internal, "internal"),
        }),
        EnclaveRequest::Attestation { .. } => Action::Reply(EnclaveResponse::error(
            ErrorCode::AttestationUnavailable,
            "nsm failed",
        )),
        other => canned(other),
    }))
    .await;
    let host = Host::with_defaults(&fake).await;
    let cases: [(&[u8], u16, ErrorCode); 4] = [
        (b"bad", 400, ErrorCode::SealedRequestInvalid),
        (b"busy", 503, ErrorCode::Busy),
        (b"future", 502, ErrorCode::Unknown(999)),
        (b"boom", 502, ErrorCode::Internal),
    ];
    for (body, want_status, want_code) in cases {
        let r = host.infer(body.to_vec()).await;
        let (status, code, name) = error_of(r).await;
        assert_eq!((status, code), (want_status, want_code.as_u16()));
        assert_eq!(name, want_code.as_str());
    }
    let r = host
        .get(&format!("/v1/attestation?nonce={}", "00".repeat(32)))
        .await;
    let v: serde_json::Value = {
        assert_eq!(r.status(), 503);
        r.json().await.unwrap()
    };
    assert_eq!(v["error"]["name"], "attestation_unavailable");
    assert_eq!(v["error"]["message"], "nsm failed");
}

#[tokio::test]
async fn wrong_response_kind_from_the_enclave_is_a_bad_gateway() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { .. } => {
            Action::Reply(EnclaveResponse::Health(common::health_status(true)))
        }
        other => canned(other),
    }))
    .await;
    let host = Host::with_defaults(&fake).await;
    let (status, code, _) = error_of(host.infer(b"x".to_vec()).await).await;
    assert_eq!((status, code), (502, ErrorCode::Internal.as_u16()));
}

#[tokio::test]
async fn enclave_down_gives_503_enclave_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(PoolConfig::new(Endpoint::Unix(
        dir.path().join("absent.sock"),
    )))
    .await;
    let (status, code, name) = error_of(host.infer(b"sealed".to_vec()).await).await;
    assert_eq!(
        (status, code),
        (503, ErrorCode::EnclaveUnavailable.as_u16())
    );
    assert_eq!(name, "enclave_unavailable");
    let r = host
        .get(&format!("/v1/attestation?nonce={}", "00".repeat(16)))
        .await;
    assert_eq!(error_of(r).await.2, "enclave_unavailable");
}

#[tokio::test]
async fn slow_enclave_gives_504_timeout() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { .. } => Action::Ignore,
        other => canned(other),
    }))
    .await;
    let host = Host::start(PoolConfig {
        request_timeout: Duration::from_millis(200),
        ..PoolConfig::new(fake.endpoint.clone())
    })
    .await;
    let started = Instant::now();
    let (status, code, name) = error_of(host.infer(b"sealed".to_vec()).await).await;
    assert_eq!((status, code), (504, ErrorCode::Timeout.as_u16()));
    assert_eq!(name, "timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The connection is still usable after a timeout.
    assert_eq!(host.get("/v1/health").await.status(), 200);
}

#[tokio::test]
async fn concurrent_requests_over_one_connection_get_their_own_responses() {
    // Replies are delayed in inverse order of arrival, so they come back out of order.
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { sealed } => {
            let n = u64::from(sealed[0]);
            Action::ReplyAfter(
                Duration::from_millis(100 - n),
                EnclaveResponse::Infer {
                    sealed: sealed.into_iter().rev().collect(),
                },
            )
        }
        other => canned(other),
    }))
    .await;
    let host = Arc::new(
        Host::start(PoolConfig {
            connections: 1,
            ..PoolConfig::new(fake.endpoint.clone())
        })
        .await,
    );
    let mut tasks = tokio::task::JoinSet::new();
    // 32: the default per-client in-flight bound (every request here comes from 127.0.0.1).
    for n in 0..32u8 {
        let host = host.clone();
        tasks.spawn(async move {
            let body: Vec<u8> = [n]
                .into_iter()
                .chain(std::iter::repeat_n(n, 100 + n as usize))
                .chain([0xff, n])
                .collect();
            let r = host.infer(body.clone()).await;
            assert_eq!(r.status(), 200);
            let got = r.bytes().await.unwrap();
            let want: Vec<u8> = body.into_iter().rev().collect();
            assert_eq!(
                got.as_ref(),
                want.as_slice(),
                "request {n} got another's response"
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.requests(), 32);
}

#[tokio::test]
async fn stray_responses_with_unknown_ids_are_dropped() {
    let fake = FakeEnclave::start(Arc::new(|req| match canned(req) {
        Action::Reply(r) => Action::StrayThenReply(r),
        other => other,
    }))
    .await;
    let host = Host::with_defaults(&fake).await;
    let r = host.infer(b"abc".to_vec()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"cba");
    assert_eq!(host.get("/v1/health").await.status(), 200);
}

#[tokio::test]
async fn full_connections_answer_503_busy() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { sealed } => Action::ReplyAfter(
            Duration::from_millis(500),
            EnclaveResponse::Infer { sealed },
        ),
        other => canned(other),
    }))
    .await;
    let host = Arc::new(
        Host::start(PoolConfig {
            connections: 1,
            max_in_flight_per_connection: 2,
            ..PoolConfig::new(fake.endpoint.clone())
        })
        .await,
    );
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.infer(b"slow".to_vec()).await.status() })
        })
        .collect();
    // Let both reach the enclave before the third arrives.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.requests() < 2 {
        assert!(Instant::now() < deadline, "slow requests never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, code, name) = error_of(host.infer(b"third".to_vec()).await).await;
    assert_eq!(
        (status, code, name.as_str()),
        (503, ErrorCode::Busy.as_u16(), "busy")
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    // Permits come back once requests finish.
    assert_eq!(host.infer(b"again".to_vec()).await.status(), 200);
}

#[tokio::test]
async fn reconnects_after_the_enclave_drops_the_connection() {
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { sealed } if sealed == b"die" => Action::Close,
        EnclaveRequest::Infer { sealed } if sealed == b"hang" => Action::Ignore,
        other => canned(other),
    }))
    .await;
    let host = Arc::new(
        Host::start(PoolConfig {
            connections: 1,
            ..PoolConfig::new(fake.endpoint.clone())
        })
        .await,
    );
    // A request pending on the connection when it breaks fails at once, not at its timeout.
    let pending = {
        let host = host.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = host.infer(b"hang".to_vec()).await;
            (error_of(r).await, started.elapsed())
        })
    };
    while fake.requests() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, name) = error_of(host.infer(b"die".to_vec()).await).await;
    assert_eq!((status, name.as_str()), (503, "enclave_unavailable"));
    let ((status, _, name), took) = pending.await.unwrap();
    assert_eq!((status, name.as_str()), (503, "enclave_unavailable"));
    assert!(took < Duration::from_secs(5), "{took:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = host.infer(b"xyz".to_vec()).await;
        if r.status() == 200 {
            assert_eq!(r.bytes().await.unwrap().as_ref(), b"zyx");
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.connections(), 2);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let fake = FakeEnclave::canned().await;
    let host = Host::with_defaults(&fake).await;
    let (status, code, _) = error_of(host.get("/v1/nope").await).await;
    assert_eq!((status, code), (404, 105));
    let r = host.client.get(host.url("/v1/infer")).send().await.unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code), (405, 105));
    assert_eq!(fake.requests(), 0);
}
