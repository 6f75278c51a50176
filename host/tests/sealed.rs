//! Sealed-model loading against the fake enclave, which opens real sealed files with a test data
//! key: the streaming loader, the admin API, and `--models-dir`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Action, DENIED_BLOB, FakeEnclave, Host, UploadEvent, Uploads, error_of, model_bytes,
    seal_model, sealed_handler,
};
use sealed_host::credentials::CredentialProvider;
use sealed_host::sealed_loader::{self, LoadError, LoaderConfig, UPLOAD_CHUNK_LEN};
use sealed_host::{EnclavePool, PoolConfig};
use sealed_wire::limits::MAX_UPLOAD_CHUNK_LEN;
use sealed_wire::{AwsCredentials, EnclaveRequest, EnclaveResponse, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

fn credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "ASIAMOCKHOSTROLE0001".into(),
        secret_access_key: Zeroizing::new("mock/secret/key+for+tests".into()),
        session_token: Some(Zeroizing::new("mock-session-token".into())),
        expires_at: None,
    }
}

async fn sealed_enclave() -> (FakeEnclave, Arc<Uploads>, Arc<EnclavePool>) {
    let uploads = Arc::new(Uploads::default());
    let fake = FakeEnclave::start(sealed_handler(uploads.clone())).await;
    let pool = Arc::new(EnclavePool::start(PoolConfig::new(fake.endpoint.clone())));
    assert!(pool.wait_connected(Duration::from_secs(5)).await);
    (fake, uploads, pool)
}

fn header_len(file: &[u8]) -> usize {
    sealed_model::header_total_len(file).unwrap()
}

fn chunk_lens(events: &[UploadEvent]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            UploadEvent::Chunk { len, .. } => Some(*len),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn streams_a_sealed_model_in_bounded_chunks_in_order() {
    let (_fake, uploads, pool) = sealed_enclave().await;
    // 9 MiB + a bit, sealed in 64 KiB chunks: three upload pieces of at most 4 MiB.
    let plaintext = model_bytes(9 * 1024 * 1024 + 12_345);
    let file = seal_model("big-model", &plaintext, 64 * 1024, b"blob");
    let (header, _) = sealed_model::parse_header(&file).unwrap();
    let hlen = header_len(&file);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.sealed");
    std::fs::write(&path, &file).unwrap();
    let reader = tokio::fs::File::open(&path).await.unwrap();
    let info = sealed_loader::load_sealed(&pool, reader, credentials(), &LoaderConfig::default())
        .await
        .unwrap();
    assert_eq!(info.model_id, "big-model");
    assert_eq!(info.sha384, header.plaintext_sha384.to_vec());

    let events = uploads.events();
    assert_eq!(
        events.first(),
        Some(&UploadEvent::Begin {
            header_len: hlen,
            access_key_id: "ASIAMOCKHOSTROLE0001".into(),
            has_session_token: true,
        })
    );
    assert_eq!(events.last(), Some(&UploadEvent::End { upload_id: 1 }));
    let lens = chunk_lens(&events);
    let body = file.len() - hlen;
    assert_eq!(
        lens.iter().sum::<usize>(),
        body,
        "every byte after the header, once"
    );
    assert_eq!(lens.len(), body.div_ceil(UPLOAD_CHUNK_LEN));
    assert!(lens.iter().all(|&l| l > 0 && l <= UPLOAD_CHUNK_LEN));
    const { assert!(UPLOAD_CHUNK_LEN <= MAX_UPLOAD_CHUNK_LEN) };
    assert_eq!(events.len(), lens.len() + 2);
}

#[tokio::test]
async fn any_split_of_the_body_is_accepted() {
    let (_fake, uploads, pool) = sealed_enclave().await;
    let plaintext = model_bytes(300_000);
    let file = seal_model("odd-split", &plaintext, 4096, b"blob");
    // Pieces that straddle the 4 KiB + 16 sealed chunks, from a reader that returns little at a
    // time.
    let config = LoaderConfig {
        chunk_len: 10_007,
        ..LoaderConfig::default()
    };
    let reader = tokio_test_reader(file.clone(), 1000);
    let info = sealed_loader::load_sealed(&pool, reader, credentials(), &config)
        .await
        .unwrap();
    assert_eq!(info.model_id, "odd-split");
    let lens = chunk_lens(&uploads.events());
    assert_eq!(lens.iter().sum::<usize>(), file.len() - header_len(&file));
    assert!(lens.iter().all(|&l| l <= 10_007));
}

/// A reader that hands out at most `step` bytes per read.
fn tokio_test_reader(bytes: Vec<u8>, step: usize) -> impl tokio::io::AsyncRead + Unpin {
    let (mut w, r) = tokio::io::duplex(step);
    tokio::spawn(async move {
        for piece in bytes.chunks(step) {
            w.write_all(piece).await.unwrap();
        }
    });
    r
}

/// A source that notes when it first hands out a byte at or past `mark`.
struct MarkingReader {
    bytes: Vec<u8>,
    at: usize,
    mark: usize,
    reached: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl tokio::io::AsyncRead for MarkingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let at = self.at;
        let n = buf.remaining().min(self.bytes.len() - at);
        buf.put_slice(&self.bytes[at..at + n]);
        self.at += n;
        if self.at > self.mark {
            self.reached
                .lock()
                .unwrap()
                .get_or_insert_with(std::time::Instant::now);
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// The next piece is read from the source while the enclave still works on the previous one:
/// with the enclave's first answer held back, the loader reads on into the second piece before
/// that answer exists (stop-and-wait would read nothing until it came).
#[tokio::test]
async fn the_next_piece_is_read_while_the_enclave_works_on_the_last() {
    const HOLD: Duration = Duration::from_secs(2);
    let uploads = Arc::new(Uploads::default());
    let first_chunk = Arc::new(std::sync::Mutex::new(None));
    let inner = sealed_handler(uploads.clone());
    let seen = Arc::clone(&first_chunk);
    let handler: common::Handler = Arc::new(move |request| {
        let first = matches!(request, EnclaveRequest::LoadSealedModelChunk { .. }) && {
            let mut seen = seen.lock().unwrap();
            let first = seen.is_none();
            seen.get_or_insert_with(std::time::Instant::now);
            first
        };
        match inner(request) {
            common::Action::Reply(answer) if first => common::Action::ReplyAfter(HOLD, answer),
            other => other,
        }
    });
    let fake = FakeEnclave::start(handler).await;
    let pool = Arc::new(EnclavePool::start(PoolConfig::new(fake.endpoint.clone())));
    assert!(pool.wait_connected(Duration::from_secs(5)).await);

    let file = seal_model("ahead", &model_bytes(200_000), 4096, b"blob");
    let config = LoaderConfig {
        chunk_len: 50_000,
        ..LoaderConfig::default()
    };
    let reached = Arc::new(std::sync::Mutex::new(None));
    let reader = MarkingReader {
        mark: header_len(&file) + config.chunk_len,
        bytes: file.clone(),
        at: 0,
        reached: Arc::clone(&reached),
    };
    let info = sealed_loader::load_sealed(&pool, reader, credentials(), &config)
        .await
        .unwrap();
    assert_eq!(info.model_id, "ahead");
    let sent = first_chunk
        .lock()
        .unwrap()
        .expect("no chunk reached the enclave");
    let read_on = reached
        .lock()
        .unwrap()
        .expect("the second piece was never read");
    // Read within the hold, not after it (stop-and-wait: ≥ HOLD later).
    assert!(
        read_on.saturating_duration_since(sent) < HOLD / 2,
        "the second piece was read {:?} after the first chunk was sent",
        read_on.saturating_duration_since(sent)
    );
    let lens = chunk_lens(&uploads.events());
    assert_eq!(lens.iter().sum::<usize>(), file.len() - header_len(&file));
    assert!(lens.iter().all(|&l| l <= config.chunk_len));
}

#[tokio::test]
async fn a_truncated_file_is_refused_before_end() {
    let (_fake, uploads, pool) = sealed_enclave().await;
    let file = seal_model("m", &model_bytes(50_000), 4096, b"blob");
    let cut = &file[..file.len() - 100];
    let err = sealed_loader::load_sealed(&pool, cut, credentials(), &LoaderConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Truncated { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::ModelCorrupt);
    let events = uploads.events();
    assert!(!events.iter().any(|e| matches!(e, UploadEvent::End { .. })));
    // The enclave is told at once, so the model id is free for a retry.
    assert!(
        matches!(events.last(), Some(UploadEvent::Abort { .. })),
        "{events:?}"
    );
    let whole =
        sealed_loader::load_sealed(&pool, &file[..], credentials(), &LoaderConfig::default())
            .await
            .unwrap();
    assert_eq!(whole.model_id, "m");
}

#[tokio::test]
async fn trailing_bytes_are_refused() {
    let (_fake, _uploads, pool) = sealed_enclave().await;
    let mut file = seal_model("m", &model_bytes(5000), 4096, b"blob");
    file.extend_from_slice(b"extra");
    let err = sealed_loader::load_sealed(&pool, &file[..], credentials(), &LoaderConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::TrailingData), "{err}");
    assert_eq!(err.code(), ErrorCode::ModelCorrupt);
}

#[tokio::test]
async fn bad_prefixes_are_refused_without_asking_the_enclave() {
    let (fake, _uploads, pool) = sealed_enclave().await;
    let config = LoaderConfig::default();
    let err = sealed_loader::load_sealed(
        &pool,
        &b"PK\x03\x04 not a sealed model"[..],
        credentials(),
        &config,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LoadError::BadMagic), "{err}");

    let err = sealed_loader::load_sealed(&pool, &b"SIMOD"[..], credentials(), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Truncated { .. }), "{err}");

    // A header length over the limit is refused from the prefix alone.
    let mut huge = b"SIMODEL1".to_vec();
    huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let err = sealed_loader::load_sealed(&pool, &huge[..], credentials(), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::HeaderTooLarge { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::ModelCorrupt);
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn a_stalled_source_times_out() {
    let (_fake, _uploads, pool) = sealed_enclave().await;
    let (_writer_kept_open, reader) = tokio::io::duplex(64);
    let config = LoaderConfig {
        read_timeout: Duration::from_millis(100),
        ..LoaderConfig::default()
    };
    let err = sealed_loader::load_sealed(&pool, reader, credentials(), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::ReadTimeout(_)), "{err}");
}

#[tokio::test]
async fn enclave_refusals_keep_their_codes() {
    let (_fake, _uploads, pool) = sealed_enclave().await;
    let denied = seal_model("m", &model_bytes(5000), 4096, DENIED_BLOB);
    let err =
        sealed_loader::load_sealed(&pool, &denied[..], credentials(), &LoaderConfig::default())
            .await
            .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ModelAccessDenied, "{err}");

    // One flipped bit in the body: the chunk fails authentication inside the enclave.
    let mut flipped = seal_model("m", &model_bytes(20_000), 4096, b"blob");
    let at = flipped.len() - 3000;
    flipped[at] ^= 0x01;
    let err =
        sealed_loader::load_sealed(&pool, &flipped[..], credentials(), &LoaderConfig::default())
            .await
            .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Refused {
                code: ErrorCode::ModelCorrupt,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_acknowledgement_is_a_protocol_error() {
    let fake = FakeEnclave::start(Arc::new(|request| {
        Action::Reply(match request {
            EnclaveRequest::LoadSealedModelBegin { .. } => EnclaveResponse::SealedModelReady {
                upload_id: 7,
                sealed_len: 100,
            },
            // Claims fewer bytes than were sent.
            EnclaveRequest::LoadSealedModelChunk { upload_id, .. } => {
                EnclaveResponse::SealedChunkAccepted {
                    upload_id,
                    received: 1,
                }
            }
            other => return common::canned(other),
        })
    }))
    .await;
    let pool = EnclavePool::start(PoolConfig::new(fake.endpoint.clone()));
    assert!(pool.wait_connected(Duration::from_secs(5)).await);
    let mut file = seal_model("m", &model_bytes(10), 4096, b"blob");
    file.truncate(header_len(&file));
    file.extend_from_slice(&[0u8; 100]);
    let err = sealed_loader::load_sealed(&pool, &file[..], credentials(), &LoaderConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Protocol(_)), "{err}");
    assert_eq!(err.code(), ErrorCode::Internal);
}

// --- admin API ------------------------------------------------------------------------------

struct Admin {
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Admin {
    async fn start(pool: Arc<EnclavePool>, credentials: CredentialProvider) -> Admin {
        let router =
            sealed_host::admin::router(pool, Arc::new(credentials), LoaderConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            sealed_host::admin::serve(listener, router, std::future::pending())
                .await
                .unwrap();
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Admin { addr, client, task }
    }

    async fn post(&self, body: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.client
            .post(format!("http://{}/v1/admin/models", self.addr))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// Credentials from the mock IMDS would need a server; `env` needs process-wide variables. The
/// admin tests use a provider over a private mock IMDS (see credentials.rs for its own tests).
#[path = "../../sim/src/imds.rs"]
#[allow(dead_code)]
mod imds;

async fn imds_provider() -> (CredentialProvider, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = imds::ImdsConfig::new(
        "ASIAMOCKHOSTROLE0001",
        "mock/secret/key+for+tests",
        "mock-session-token",
    );
    let task = tokio::spawn(imds::serve(listener, config));
    let provider =
        CredentialProvider::imds(Some(&format!("http://{addr}")), Duration::from_secs(300))
            .unwrap();
    (provider, task)
}

#[tokio::test]
async fn admin_loads_a_posted_sealed_model() {
    let (_fake, uploads, pool) = sealed_enclave().await;
    let (provider, _imds) = imds_provider().await;
    let admin = Admin::start(pool.clone(), provider).await;
    let file = seal_model("posted", &model_bytes(600_000), 64 * 1024, b"blob");
    let (header, _) = sealed_model::parse_header(&file).unwrap();
    let response = admin.post(file.clone(), "application/octet-stream").await;
    assert_eq!(response.status(), 200);
    let v: serde_json::Value = response.json().await.unwrap();
    assert_eq!(v["model_id"], "posted");
    assert_eq!(v["sha384"], hex::encode(header.plaintext_sha384));
    let events = uploads.events();
    assert!(matches!(
        &events[0],
        UploadEvent::Begin { access_key_id, has_session_token: true, .. } if access_key_id == "ASIAMOCKHOSTROLE0001"
    ));
    assert_eq!(
        chunk_lens(&events).iter().sum::<usize>(),
        file.len() - header_len(&file)
    );
}

#[tokio::test]
async fn admin_errors_use_the_public_error_shape_and_statuses() {
    let (_fake, _uploads, pool) = sealed_enclave().await;
    let (provider, _imds) = imds_provider().await;
    let admin = Admin::start(pool.clone(), provider).await;

    let denied = seal_model("m", &model_bytes(5000), 4096, DENIED_BLOB);
    let r = admin.post(denied, "application/octet-stream").await;
    assert_eq!(error_of(r).await, (403, 405, "model_access_denied".into()));

    let mut flipped = seal_model("m", &model_bytes(20_000), 4096, b"blob");
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    let r = admin.post(flipped, "application/octet-stream").await;
    assert_eq!(error_of(r).await, (422, 407, "model_corrupt".into()));

    let r = admin
        .post(b"not a model".to_vec(), "application/octet-stream")
        .await;
    assert_eq!(error_of(r).await.0, 422);

    let r = admin.post(b"{}".to_vec(), "application/json").await;
    assert_eq!(error_of(r).await.0, 415);

    let r = admin
        .client
        .get(format!("http://{}/v1/admin/models", admin.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 405);
    let r = admin
        .client
        .get(format!("http://{}/v1/infer", admin.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await.0,
        404,
        "the admin listener serves admin routes only"
    );
}

#[tokio::test]
async fn admin_maps_every_kms_failure_to_its_status() {
    for (code, status) in [
        (ErrorCode::ModelAccessDenied, 403),
        (ErrorCode::ModelDigestMismatch, 422),
        (ErrorCode::UnsupportedOperator, 422),
        (ErrorCode::KmsUnavailable, 503),
        (ErrorCode::KmsNotConfigured, 503),
        (ErrorCode::KmsError, 502),
    ] {
        let fake = FakeEnclave::start(Arc::new(move |request| match request {
            EnclaveRequest::LoadSealedModelBegin { .. } => {
                Action::Reply(EnclaveResponse::error(code, "refused by the test"))
            }
            other => common::canned(other),
        }))
        .await;
        let pool = Arc::new(EnclavePool::start(PoolConfig::new(fake.endpoint.clone())));
        assert!(pool.wait_connected(Duration::from_secs(5)).await);
        let (provider, _imds) = imds_provider().await;
        let admin = Admin::start(pool, provider).await;
        let file = seal_model("m", &model_bytes(100), 4096, b"blob");
        let r = admin.post(file, "application/octet-stream").await;
        assert_eq!(
            error_of(r).await,
            (status, code.as_u16(), code.as_str().to_string()),
            "{code}"
        );
    }
}

#[tokio::test]
async fn admin_without_credentials_answers_kms_not_configured() {
    let (fake, _uploads, pool) = sealed_enclave().await;
    let admin = Admin::start(pool, CredentialProvider::none()).await;
    let file = seal_model("m", &model_bytes(100), 4096, b"blob");
    let r = admin.post(file, "application/octet-stream").await;
    assert_eq!(error_of(r).await, (503, 412, "kms_not_configured".into()));
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn admin_refuses_an_oversized_declared_length_before_reading() {
    let (_fake, _uploads, pool) = sealed_enclave().await;
    let (provider, _imds) = imds_provider().await;
    let admin = Admin::start(pool, provider).await;
    let mut stream = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
    let request = format!(
        "POST /v1/admin/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        sealed_host::admin::MAX_SEALED_FILE_LEN + 1
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("model_too_large"), "{response}");
}

#[tokio::test]
async fn the_public_api_has_no_admin_route() {
    let (fake, _uploads, _pool) = sealed_enclave().await;
    let host = Host::with_defaults(&fake).await;
    let r = host
        .client
        .post(host.url("/v1/admin/models"))
        .body(seal_model("m", &model_bytes(100), 4096, b"blob"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 404);
}

// --- --models-dir ---------------------------------------------------------------------------

#[tokio::test]
async fn loads_every_sealed_file_in_a_directory_in_name_order() {
    let (_fake, uploads, pool) = sealed_enclave().await;
    let (provider, _imds) = imds_provider().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("b.sealed"),
        seal_model("beta", &model_bytes(70_000), 4096, b"blob"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.sealed"),
        seal_model("alpha", &model_bytes(9000), 4096, b"blob"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a model").unwrap();
    std::fs::write(
        dir.path().join("c.onnx"),
        b"plaintext is not loaded from here",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("d.sealed")).unwrap();

    let loaded = sealed_loader::load_dir(
        &pool,
        "fake",
        dir.path(),
        &provider,
        Duration::from_secs(5),
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    let ids: Vec<&str> = loaded.iter().map(|(_, m)| m.model_id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert!(loaded[0].0.ends_with("a.sealed"), "{:?}", loaded[0].0);
    let ends = uploads
        .events()
        .iter()
        .filter(|e| matches!(e, UploadEvent::End { .. }))
        .count();
    assert_eq!(ends, 2);
    // Credentials were fetched once and reused for the second model.
    assert_eq!(provider.fetch_count(), 1);
}

#[tokio::test]
async fn a_bad_file_in_the_models_directory_fails_startup_loading() {
    let (_fake, _uploads, pool) = sealed_enclave().await;
    let (provider, _imds) = imds_provider().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.sealed"),
        seal_model("alpha", &model_bytes(9000), 4096, b"blob"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.sealed"),
        seal_model("denied", &model_bytes(9000), 4096, DENIED_BLOB),
    )
    .unwrap();
    let err = sealed_loader::load_dir(
        &pool,
        "fake",
        dir.path(),
        &provider,
        Duration::from_secs(5),
        &LoaderConfig::default(),
    )
    .await
    .unwrap_err();
    let sealed_loader::ModelsDirError::Load { path, source } = err else {
        panic!("{err}");
    };
    assert!(path.ends_with("b.sealed"));
    assert_eq!(source.code(), ErrorCode::ModelAccessDenied);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_upload_frees_the_enclave_upload_at_once() {
    use tokio::io::AsyncWriteExt;
    let (_fake, uploads, pool) = sealed_enclave().await;
    let (provider, _imds) = imds_provider().await;
    let admin = Admin::start(pool.clone(), provider).await;
    let file = seal_model("gone", &model_bytes(600_000), 64 * 1024, b"blob");
    // Announce the whole file, send the header and a little more, then hang up.
    let mut tcp = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
    let head = format!(
        "POST /v1/admin/models HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        file.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&file[..header_len(&file) + 1000])
        .await
        .unwrap();
    let began = async {
        while !uploads
            .events()
            .iter()
            .any(|e| matches!(e, UploadEvent::Begin { .. }))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), began)
        .await
        .expect("the upload never began");
    drop(tcp);
    // The enclave hears about it well before its idle expiry (120 s).
    let aborted = async {
        while !uploads
            .events()
            .iter()
            .any(|e| matches!(e, UploadEvent::Abort { .. }))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), aborted)
        .await
        .expect("the enclave was never told to drop the upload");
}
