//! Test harness: a fake enclave on a Unix socket and the host API on `127.0.0.1:0`.
//!
//! The fake speaks the real framing (`sealed_transport`) and messages (`sealed_wire`) and answers
//! each request through a handler that can reply, reply late, never reply, close the connection or
//! send a stray frame first. Requests on one connection are answered concurrently, so replies can
//! come back out of order, as a real multi-worker enclave's do.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sealed_host::{EnclavePool, PoolConfig};
use sealed_transport::{BoxWrite, Endpoint, Listener};
use sealed_wire::limits::MAX_FRAME_LEN;
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
        | EnclaveRequest::LoadSealedModelEnd { .. } => {
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
