//! A stand-in host on 127.0.0.1 that plays the enclave too: it signs attestation documents under
//! a mock CA (`sealed-mock-ca`) with the client's nonce, its HPKE key and the manifest commitment,
//! and opens and answers sealed requests with a real `sealed_crypto::ServerKey`. The "enclave"
//! serves one model, `add` (sum = a + b over i64), and lists `add` and `digits` in its manifest.
//! [`Misbehave`] makes it misbehave in one way. Used by `attested_session.rs` and `cli.rs`.
//!
//! Key rotation: [`StandIn::rotate_key`] makes the next request find a new current key (id + 1)
//! and the old one retired at once (no overlap). A request sealed to a retired key is opened only
//! to record its request id, then answered as the real host does: HTTP 400 with the JSON error
//! `unsupported_key_config` (201). [`StandIn::request_ids`] lists the id of every request received.
#![allow(dead_code)] // each test crate uses a different part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ciborium::Value;
use rand_core::UnwrapErr;
use sealed_attestation::commitment;
use sealed_crypto::ServerKey;
use sealed_mock_ca::{MockCa, MockLeaf};
use sealed_wire::{ErrorCode, InferRequest, InferResponse, ModelManifest, NamedTensor, Tensor};

pub const PCR0: [u8; 48] = [0x5a; 48];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    Nothing,
    /// Sends a document signed for another nonce (a replay).
    StaleNonce,
    /// Relays a manifest other than the one the enclave committed to.
    OtherManifest,
    /// Flips a bit of the sealed response.
    TamperResponse,
    /// The enclave answers with an inference error.
    EnclaveError,
    /// Every request is answered `unsupported_key_config`, as if every key were retired.
    RefuseEveryKey,
    /// The enclave answers `replayed_request`, sealed.
    ReplayedError,
}

/// What a test changes or reads while the stand-in runs.
#[derive(Default)]
pub struct Control {
    /// Rotate the key before the next request.
    rotate: AtomicBool,
    /// Sign documents for another nonce from now on.
    stale_nonce: AtomicBool,
    /// Attestation requests served.
    attestations: AtomicUsize,
    /// `(request_id, sent_at_ms)` of every sealed request received, in order.
    requests: Mutex<Vec<([u8; 16], u64)>>,
}

struct Enclave {
    leaf: MockLeaf,
    key: ServerKey,
    /// The key before the last rotation: no longer served.
    retired: Option<ServerKey>,
    control: Arc<Control>,
    manifest_bytes: Vec<u8>,
    mode: Misbehave,
    posts: Arc<AtomicUsize>,
}

pub struct StandIn {
    pub url: String,
    pub root_pem: String,
    pub posts: Arc<AtomicUsize>,
    pub control: Arc<Control>,
}

impl StandIn {
    /// Retires the current key (no overlap) and makes a new one current, id + 1.
    pub fn rotate_key(&self) {
        self.control.rotate.store(true, Ordering::SeqCst);
    }

    /// From now on, documents are signed for another nonce than the client's.
    pub fn sign_stale_nonces(&self) {
        self.control.stale_nonce.store(true, Ordering::SeqCst);
    }

    /// Attestation requests served so far.
    pub fn attestations(&self) -> usize {
        self.control.attestations.load(Ordering::SeqCst)
    }

    /// `(request_id, sent_at_ms)` of every sealed request received so far.
    pub fn requests(&self) -> Vec<([u8; 16], u64)> {
        self.control.requests.lock().unwrap().clone()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn start(mode: Misbehave) -> StandIn {
    let ca = MockCa::generate(now_secs()).unwrap();
    let leaf = ca.issue_leaf(now_secs(), 3600).unwrap();
    let key = ServerKey::generate(7, &mut UnwrapErr(getrandom::SysRng));
    let mut manifest = ModelManifest::default();
    manifest.insert("add".into(), vec![0xab; 48]);
    manifest.insert("digits".into(), vec![0xcd; 48]);
    let posts = Arc::new(AtomicUsize::new(0));
    let control = Arc::new(Control::default());
    let mut enclave = Enclave {
        leaf,
        key,
        retired: None,
        control: control.clone(),
        manifest_bytes: manifest.encode().unwrap(),
        mode,
        posts: posts.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            enclave.serve(stream);
        }
    });
    StandIn {
        url,
        root_pem: ca.root_pem(),
        posts,
        control,
    }
}

impl Enclave {
    /// One HTTP/1.1 request per connection (answers with `Connection: close`).
    fn serve(&mut self, mut stream: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let request_line = head.lines().next().unwrap().to_string();
        let content_length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; content_length];
        stream.read_exact(&mut body).unwrap();

        if self.control.rotate.swap(false, Ordering::SeqCst) {
            let next = ServerKey::generate(
                self.key.key_id().wrapping_add(1),
                &mut UnwrapErr(getrandom::SysRng),
            );
            self.retired = Some(std::mem::replace(&mut self.key, next));
        }
        let (status, content_type, response) =
            if let Some(rest) = request_line.strip_prefix("GET /v1/attestation?nonce=") {
                self.control.attestations.fetch_add(1, Ordering::SeqCst);
                let nonce = hex::decode(rest.split(' ').next().unwrap()).unwrap();
                ("200 OK", "application/json", self.attestation(nonce))
            } else if request_line.starts_with("POST /v1/infer ") {
                self.posts.fetch_add(1, Ordering::SeqCst);
                match self.infer(&body) {
                    Ok(sealed) => ("200 OK", "application/octet-stream", sealed),
                    Err(json) => ("400 Bad Request", "application/json", json),
                }
            } else {
                panic!("unexpected request {request_line:?}");
            };
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            response.len()
        )
        .into_bytes();
        out.extend_from_slice(&response);
        let _ = stream.write_all(&out);
    }

    fn attestation(&self, nonce: Vec<u8>) -> Vec<u8> {
        let nonce = if self.mode == Misbehave::StaleNonce
            || self.control.stale_nonce.load(Ordering::SeqCst)
        {
            vec![0x42; 32]
        } else {
            nonce
        };
        let text = |s: &str| Value::Text(s.into());
        let pcrs = (0..16u8)
            .map(|i| {
                let value = if i == 0 { PCR0.to_vec() } else { vec![0; 48] };
                (Value::Integer(i.into()), Value::Bytes(value))
            })
            .collect();
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let payload = Value::Map(vec![
            (
                text("module_id"),
                text("i-0123456789abcdef0-enc0123456789abcdef"),
            ),
            (text("digest"), text("SHA384")),
            (text("timestamp"), Value::Integer(timestamp_ms.into())),
            (text("pcrs"), Value::Map(pcrs)),
            (
                text("certificate"),
                Value::Bytes(self.leaf.certificate_der().to_vec()),
            ),
            (
                text("cabundle"),
                Value::Array(self.leaf.cabundle().into_iter().map(Value::Bytes).collect()),
            ),
            (text("public_key"), Value::Bytes(self.key.config().encode())),
            (
                text("user_data"),
                Value::Bytes(commitment::user_data(&self.manifest_bytes)),
            ),
            (text("nonce"), Value::Bytes(nonce)),
        ]);
        let mut payload_bytes = Vec::new();
        ciborium::ser::into_writer(&payload, &mut payload_bytes).unwrap();
        let document = self.leaf.sign_cose_sign1(&payload_bytes).unwrap();
        let manifest = if self.mode == Misbehave::OtherManifest {
            let mut other = ModelManifest::default();
            other.insert("add".into(), vec![0xee; 48]);
            other.encode().unwrap()
        } else {
            self.manifest_bytes.clone()
        };
        format!(
            r#"{{"document":"{}","manifest":"{}"}}"#,
            BASE64.encode(document),
            BASE64.encode(manifest)
        )
        .into_bytes()
    }

    /// The enclave side: open, run `add` (sum = a + b over i64), seal. A request sealed to a
    /// retired key (or any key, under [`Misbehave::RefuseEveryKey`]) gets the host's JSON error.
    fn infer(&self, sealed: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
        let key_id = sealed_crypto::request_key_id(sealed).unwrap();
        let retired = self.retired.as_ref().filter(|k| k.key_id() == key_id);
        let key = retired.unwrap_or(&self.key);
        let (plaintext, sealer) = key.open_request(sealed).unwrap();
        let request = InferRequest::decode(&plaintext).unwrap();
        self.control
            .requests
            .lock()
            .unwrap()
            .push((request.request_id, request.sent_at_ms));
        if retired.is_some() || self.mode == Misbehave::RefuseEveryKey {
            return Err(br#"{"error":{"code":201,"name":"unsupported_key_config","message":"sealed request names a key id or suite this enclave does not serve (the key may have been retired): attest again"}}"#.to_vec());
        }
        let response = if self.mode == Misbehave::EnclaveError {
            InferResponse::Error {
                code: ErrorCode::InputMismatch,
                message: "input b has shape [2], expected [3]".into(),
            }
        } else if self.mode == Misbehave::ReplayedError {
            InferResponse::Error {
                code: ErrorCode::ReplayedRequest,
                message: "request id already used".into(),
            }
        } else {
            let get = |name: &str| {
                request
                    .inputs
                    .iter()
                    .find(|t| t.name == name)
                    .unwrap()
                    .tensor
                    .to_i64()
                    .unwrap()
            };
            let sum: Vec<i64> = get("a").iter().zip(get("b")).map(|(a, b)| a + b).collect();
            InferResponse::Ok {
                outputs: vec![NamedTensor {
                    name: "sum".into(),
                    tensor: Tensor::from_i64(vec![sum.len() as u64], &sum).unwrap(),
                }],
            }
        };
        let mut out = sealer
            .seal(
                &response.encode().unwrap(),
                &mut UnwrapErr(getrandom::SysRng),
            )
            .unwrap();
        if self.mode == Misbehave::TamperResponse {
            *out.last_mut().unwrap() ^= 1;
        }
        Ok(out)
    }
}
