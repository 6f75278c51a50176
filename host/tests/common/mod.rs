//! Test harness: a fake enclave on a Unix socket and the host API on `127.0.0.1:0`.
//!
//! The fake speaks the real framing (`sealed_transport`) and messages (`sealed_wire`) and answers
//! each request through a handler that can reply, reply late, never reply, close the connection or
//! send a stray frame first. Requests on one connection are answered concurrently, so replies can
//! come back out of order, as a real multi-worker enclave's do.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use sealed_host::{EnclavePool, PoolConfig};
use sealed_transport::{BoxWrite, Endpoint, Listener};
use sealed_wire::limits::{MAX_FRAME_LEN, MAX_UPLOAD_CHUNK_LEN};
use sealed_wire::{
    EnclaveRequest, EnclaveResponse, ErrorCode, HealthStatus, ModelInfo, TensorSpec,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

/// What the fake does with one request.
pub enum Action {
    Reply(EnclaveResponse),
    ReplyAfter(Duration, EnclaveResponse),
    /// Never answer.
    Ignore,
    /// Close the connection without answering.
    Close,
    /// First a response under an id nobody asked for, then the real one.
    StrayThenReply(EnclaveResponse),
}

pub type Handler = Arc<dyn Fn(EnclaveRequest) -> Action + Send + Sync>;

pub struct FakeEnclave {
    pub endpoint: Endpoint,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Requests received so far.
    pub requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FakeEnclave {
    pub async fn start(handler: Handler) -> FakeEnclave {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::Unix(dir.path().join("enclave.sock"));
        FakeEnclave::start_at(handler, endpoint, dir).await
    }

    /// A fake on `endpoint` (a restarted enclave takes over its predecessor's socket), keeping
    /// `dir` alive as long as the fake.
    pub async fn start_at(
        handler: Handler,
        endpoint: Endpoint,
        dir: tempfile::TempDir,
    ) -> FakeEnclave {
        let listener = Listener::bind(&endpoint).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            // Dropping the JoinSet (when this task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                let Ok((read, write)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(read, write, handler.clone(), r.clone()));
            }
        });
        FakeEnclave {
            endpoint,
            connections,
            requests,
            task,
            _dir: dir,
        }
    }

    pub async fn canned() -> FakeEnclave {
        FakeEnclave::start(Arc::new(canned)).await
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeEnclave {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut read: sealed_transport::BoxRead,
    write: BoxWrite,
    handler: Handler,
    requests: Arc<AtomicUsize>,
) {
    let write = Arc::new(Mutex::new(write));
    let mut replies = JoinSet::new();
    while let Ok(Some(frame)) = sealed_transport::read_frame(&mut read, MAX_FRAME_LEN).await {
        requests.fetch_add(1, Ordering::SeqCst);
        let request = EnclaveRequest::decode(&frame.body).unwrap();
        let id = frame.request_id;
        let (delay, response, stray) = match handler(request) {
            Action::Reply(r) => (Duration::ZERO, r, false),
            Action::ReplyAfter(d, r) => (d, r, false),
            Action::StrayThenReply(r) => (Duration::ZERO, r, true),
            Action::Ignore => continue,
            Action::Close => {
                let _ = write.lock().await.shutdown().await;
                return;
            }
        };
        let write = write.clone();
        replies.spawn(async move {
            tokio::time::sleep(delay).await;
            let body = response.encode().unwrap();
            let mut w = write.lock().await;
            if stray {
                let junk = EnclaveResponse::Infer {
                    sealed: b"not yours".to_vec(),
                }
                .encode()
                .unwrap();
                let _ =
                    sealed_transport::write_frame(&mut *w, id.wrapping_add(1 << 40), &junk).await;
            }
            let _ = sealed_transport::write_frame(&mut *w, id, &body).await;
        });
    }
    // Keep answering delayed replies after the host stops sending.
    while replies.join_next().await.is_some() {}
}

pub fn model_info(id: &str) -> ModelInfo {
    ModelInfo {
        model_id: id.to_string(),
        sha384: vec![0xab; 48],
        inputs: vec![TensorSpec {
            name: "x".into(),
            dtype: Some(sealed_wire::DType::F32),
            shape: vec![Some(1), None],
        }],
        outputs: vec![],
    }
}

pub fn health_status(ready: bool) -> HealthStatus {
    HealthStatus {
        protocol_version: sealed_wire::PROTOCOL_VERSION,
        ready,
        simulation: true,
        workers: 2,
        in_flight: 0,
        batched_requests: 0,
        models: vec![model_info("mlp")],
    }
}

/// Health → ready; Attestation → `doc:` + nonce and a fixed manifest; Infer → the sealed bytes
/// reversed; LoadModel → loaded.
pub fn canned(request: EnclaveRequest) -> Action {
    Action::Reply(match request {
        EnclaveRequest::Health => EnclaveResponse::Health(health_status(true)),
        EnclaveRequest::Attestation { nonce } => EnclaveResponse::Attestation {
            document: [b"doc:".as_slice(), &nonce].concat(),
            manifest: b"manifest bytes".to_vec(),
        },
        EnclaveRequest::Infer { sealed } => EnclaveResponse::Infer {
            sealed: sealed.into_iter().rev().collect(),
        },
        EnclaveRequest::LoadModel { model_id, .. } => {
            EnclaveResponse::ModelLoaded(model_info(&model_id))
        }
        EnclaveRequest::LoadSealedModelBegin { .. }
        | EnclaveRequest::LoadSealedModelChunk { .. }
        | EnclaveRequest::LoadSealedModelEnd { .. }
        | EnclaveRequest::LoadSealedModelAbort { .. } => {
            EnclaveResponse::error(ErrorCode::KmsNotConfigured, "canned enclave")
        }
    })
}

/// The host API over a pool to `endpoint`, on 127.0.0.1:0.
pub struct Host {
    pub addr: SocketAddr,
    pub pool: Arc<EnclavePool>,
    pub client: reqwest::Client,
    task: JoinHandle<()>,
}

impl Host {
    pub async fn start(config: PoolConfig) -> Host {
        let wait = !matches!(&config.endpoint, Endpoint::Unix(p) if !p.exists());
        let pool = Arc::new(EnclavePool::start(config));
        if wait {
            assert!(
                pool.wait_connected(Duration::from_secs(5)).await,
                "pool never connected"
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn({
            let pool = pool.clone();
            async move {
                sealed_host::serve(
                    listener,
                    pool,
                    Duration::from_secs(30),
                    std::future::pending(),
                )
                .await
                .unwrap();
            }
        });
        // No proxy: test traffic must stay on loopback whatever the environment says.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Host {
            addr,
            pool,
            client,
            task,
        }
    }

    pub async fn with_defaults(fake: &FakeEnclave) -> Host {
        Host::start(PoolConfig::new(fake.endpoint.clone())).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn infer(&self, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url("/v1/infer"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts the contract's error shape and returns (status, code, name).
pub async fn error_of(response: reqwest::Response) -> (u16, u16, String) {
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let v: serde_json::Value = response.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    (
        status,
        e["code"].as_u64().unwrap() as u16,
        e["name"].as_str().unwrap().to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// Sealed-model uploads. The fake opens real sealed files (sealed-model format) with a fixed test
// data key in place of KMS, so that it checks what a real enclave checks: the header, the order
// and size of every chunk, the byte count, each tag and the digest.

/// The data key the fake "KMS" releases for every file except [`DENIED_BLOB`].
pub const TEST_DATA_KEY: [u8; 32] = [0x5a; 32];
/// An `encrypted_data_key` whose key policy "denies" this enclave.
pub const DENIED_BLOB: &[u8] = b"blob-denied-by-key-policy";
pub const TEST_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/0f4d8a8e-6f1c-4d55-9a31-3b2f3c1e9b77";

/// Seals `plaintext` as the model owner's CLI would (with the test data key).
pub fn seal_model(model_id: &str, plaintext: &[u8], chunk_size: u32, blob: &[u8]) -> Vec<u8> {
    sealed_model::seal(
        sealed_model::SealParams {
            model_id: model_id.into(),
            kms_key_id: TEST_KEY_ARN.into(),
            encrypted_data_key: blob.to_vec(),
            chunk_size,
        },
        &TEST_DATA_KEY,
        plaintext,
        [9; sealed_model::NONCE_PREFIX_LEN],
    )
    .unwrap()
}

/// A deterministic, incompressible-enough test "model".
pub fn model_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// What the fake saw of the upload protocol, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEvent {
    Begin {
        header_len: usize,
        access_key_id: String,
        has_session_token: bool,
    },
    Chunk {
        upload_id: u64,
        len: usize,
    },
    End {
        upload_id: u64,
    },
    Abort {
        upload_id: u64,
    },
}

struct Upload {
    model_id: String,
    sha384: Vec<u8>,
    opener: sealed_model::Opener,
    out: zeroize::Zeroizing<Vec<u8>>,
    pending: Vec<u8>,
    received: u64,
    sealed_len: u64,
}

#[derive(Default)]
pub struct Uploads {
    next_id: AtomicU64,
    open: StdMutex<HashMap<u64, Upload>>,
    pub events: StdMutex<Vec<UploadEvent>>,
}

impl Uploads {
    pub fn events(&self) -> Vec<UploadEvent> {
        self.events.lock().unwrap().clone()
    }

    fn record(&self, event: UploadEvent) {
        self.events.lock().unwrap().push(event);
    }

    /// Answers the three upload messages; `None` for any other request.
    pub fn handle(&self, request: EnclaveRequest) -> Option<EnclaveResponse> {
        use ErrorCode as E;
        Some(match request {
            EnclaveRequest::LoadSealedModelBegin {
                header,
                credentials,
                host_time,
            } => {
                self.record(UploadEvent::Begin {
                    header_len: header.len(),
                    access_key_id: credentials.access_key_id.clone(),
                    has_session_token: credentials.session_token.is_some(),
                });
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                if credentials.validate().is_err() || host_time.abs_diff(now) > 300 {
                    return Some(EnclaveResponse::error(
                        E::KmsError,
                        "bad credentials or clock",
                    ));
                }
                let Ok((h, used)) = sealed_model::parse_header(&header) else {
                    return Some(EnclaveResponse::error(E::ModelCorrupt, "bad header"));
                };
                if used != header.len() {
                    return Some(EnclaveResponse::error(E::ModelCorrupt, "header length"));
                }
                if h.encrypted_data_key == DENIED_BLOB {
                    return Some(EnclaveResponse::error(
                        E::ModelAccessDenied,
                        "KMS AccessDeniedException: the key policy does not allow this enclave",
                    ));
                }
                let opener = sealed_model::Opener::new(&h, &header, &TEST_DATA_KEY).unwrap();
                let sealed_len = h.sealed_len(used).unwrap() - used as u64;
                let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
                let out = opener.output_buffer().unwrap();
                self.open.lock().unwrap().insert(
                    id,
                    Upload {
                        model_id: h.model_id.clone(),
                        sha384: h.plaintext_sha384.to_vec(),
                        opener,
                        out,
                        pending: Vec::new(),
                        received: 0,
                        sealed_len,
                    },
                );
                EnclaveResponse::SealedModelReady {
                    upload_id: id,
                    sealed_len,
                }
            }
            EnclaveRequest::LoadSealedModelChunk { upload_id, data } => {
                self.record(UploadEvent::Chunk {
                    upload_id,
                    len: data.len(),
                });
                let mut open = self.open.lock().unwrap();
                let Some(upload) = open.get_mut(&upload_id) else {
                    return Some(EnclaveResponse::error(E::UnknownUpload, "unknown upload"));
                };
                if data.is_empty() || data.len() > MAX_UPLOAD_CHUNK_LEN {
                    open.remove(&upload_id);
                    return Some(EnclaveResponse::error(E::MalformedMessage, "chunk size"));
                }
                if upload.received + data.len() as u64 > upload.sealed_len {
                    open.remove(&upload_id);
                    return Some(EnclaveResponse::error(E::ModelCorrupt, "too many bytes"));
                }
                upload.received += data.len() as u64;
                upload.pending.extend_from_slice(&data);
                while let Some(n) = upload.opener.next_chunk_len() {
                    if upload.pending.len() < n {
                        break;
                    }
                    let piece: Vec<u8> = upload.pending.drain(..n).collect();
                    if upload.opener.open_chunk(&piece, &mut upload.out).is_err() {
                        open.remove(&upload_id);
                        return Some(EnclaveResponse::error(
                            E::ModelCorrupt,
                            "chunk failed authentication",
                        ));
                    }
                }
                EnclaveResponse::SealedChunkAccepted {
                    upload_id,
                    received: upload.received,
                }
            }
            EnclaveRequest::LoadSealedModelEnd { upload_id } => {
                self.record(UploadEvent::End { upload_id });
                let Some(upload) = self.open.lock().unwrap().remove(&upload_id) else {
                    return Some(EnclaveResponse::error(E::UnknownUpload, "unknown upload"));
                };
                if upload.received != upload.sealed_len || !upload.pending.is_empty() {
                    return Some(EnclaveResponse::error(E::ModelCorrupt, "truncated"));
                }
                match upload.opener.finish() {
                    Ok(()) => EnclaveResponse::ModelLoaded(ModelInfo {
                        sha384: upload.sha384,
                        ..model_info(&upload.model_id)
                    }),
                    Err(sealed_model::ModelFormatError::DigestMismatch) => {
                        EnclaveResponse::error(E::ModelDigestMismatch, "digest mismatch")
                    }
                    Err(_) => EnclaveResponse::error(E::ModelCorrupt, "truncated"),
                }
            }
            EnclaveRequest::LoadSealedModelAbort { upload_id } => {
                self.record(UploadEvent::Abort { upload_id });
                if self.open.lock().unwrap().remove(&upload_id).is_none() {
                    return Some(EnclaveResponse::error(E::UnknownUpload, "unknown upload"));
                }
                EnclaveResponse::SealedUploadAborted { upload_id }
            }
            _ => return None,
        })
    }
}

/// [`canned`] answers, plus real sealed-model uploads tracked in `uploads`.
pub fn sealed_handler(uploads: Arc<Uploads>) -> Handler {
    Arc::new(move |request| match request {
        EnclaveRequest::LoadSealedModelBegin { .. }
        | EnclaveRequest::LoadSealedModelChunk { .. }
        | EnclaveRequest::LoadSealedModelEnd { .. }
        | EnclaveRequest::LoadSealedModelAbort { .. } => {
            Action::Reply(uploads.handle(request).unwrap())
        }
        other => canned(other),
    })
}
