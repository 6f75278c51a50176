//! The whole SDK flow against a stand-in host on 127.0.0.1 that plays the enclave too: it signs
//! attestation documents under a mock CA (`sealed-mock-ca`) with the client's nonce, its HPKE key
//! and the manifest commitment, and opens and answers sealed requests with a real
//! `sealed_crypto::ServerKey`. Each test can make the "host" misbehave in one way, and the client
//! must notice. The real host and enclave processes are exercised by the workspace e2e tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ciborium::Value;
use rand_core::UnwrapErr;
use sealed_attestation::commitment;
use sealed_client::{Client, ClientError, Policy};
use sealed_crypto::ServerKey;
use sealed_mock_ca::{MockCa, MockLeaf};
use sealed_wire::{ErrorCode, InferRequest, InferResponse, ModelManifest, NamedTensor, Tensor};

const PCR0: [u8; 48] = [0x5a; 48];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehave {
    Nothing,
    /// Sends a document signed for another nonce (a replay).
    StaleNonce,
    /// Relays a manifest other than the one the enclave committed to.
    OtherManifest,
    /// Flips a bit of the sealed response.
    TamperResponse,
    /// The enclave answers with an inference error.
    EnclaveError,
}

struct Enclave {
    leaf: MockLeaf,
    key: ServerKey,
    manifest_bytes: Vec<u8>,
    mode: Misbehave,
    posts: Arc<AtomicUsize>,
}

struct StandIn {
    url: String,
    root_pem: String,
    posts: Arc<AtomicUsize>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn start(mode: Misbehave) -> StandIn {
    let ca = MockCa::generate(now_secs()).unwrap();
    let leaf = ca.issue_leaf(now_secs(), 3600).unwrap();
    let key = ServerKey::generate(7, &mut UnwrapErr(getrandom::SysRng));
    let mut manifest = ModelManifest::default();
    manifest.insert("add".into(), vec![0xab; 48]);
    manifest.insert("digits".into(), vec![0xcd; 48]);
    let posts = Arc::new(AtomicUsize::new(0));
    let mut enclave = Enclave {
        leaf,
        key,
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

        let (content_type, response) =
            if let Some(rest) = request_line.strip_prefix("GET /v1/attestation?nonce=") {
                let nonce = hex::decode(rest.split(' ').next().unwrap()).unwrap();
                ("application/json", self.attestation(nonce))
            } else if request_line.starts_with("POST /v1/infer ") {
                self.posts.fetch_add(1, Ordering::SeqCst);
                ("application/octet-stream", self.infer(&body))
            } else {
                panic!("unexpected request {request_line:?}");
            };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            response.len()
        )
        .into_bytes();
        out.extend_from_slice(&response);
        let _ = stream.write_all(&out);
    }

    fn attestation(&self, nonce: Vec<u8>) -> Vec<u8> {
        let nonce = if self.mode == Misbehave::StaleNonce {
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

    /// The enclave side: open, run `add` (sum = a + b over i64), seal.
    fn infer(&self, sealed: &[u8]) -> Vec<u8> {
        let (plaintext, sealer) = self.key.open_request(sealed).unwrap();
        let request = InferRequest::decode(&plaintext).unwrap();
        let response = if self.mode == Misbehave::EnclaveError {
            InferResponse::Error {
                code: ErrorCode::InputMismatch,
                message: "input b has shape [2], expected [3]".into(),
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
        out
    }
}

fn policy(stand_in: &StandIn) -> Policy {
    Policy::new()
        .trust_root_pem(&stand_in.root_pem)
        .unwrap()
        .expect_pcr(0, PCR0.to_vec())
}

fn inputs() -> Vec<NamedTensor> {
    vec![
        NamedTensor {
            name: "a".into(),
            tensor: Tensor::from_i64(vec![3], &[1, 2, 3]).unwrap(),
        },
        NamedTensor {
            name: "b".into(),
            tensor: Tensor::from_i64(vec![3], &[10, 20, -30]).unwrap(),
        },
    ]
}

#[tokio::test]
async fn attests_then_seals_a_request_and_opens_the_answer() {
    let s = start(Misbehave::Nothing);
    let client = Client::new(&s.url, policy(&s)).unwrap();
    let session = client.attest().await.unwrap();
    assert_eq!(session.models().collect::<Vec<_>>(), ["add", "digits"]);
    assert_eq!(session.document().pcrs[&0], PCR0);
    assert_eq!(session.document().nonce.as_ref().map(Vec::len), Some(32));
    assert_eq!(session.key_config().key_id, 7);

    let outputs = session.infer("add", inputs()).await.unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].name, "sum");
    assert_eq!(outputs[0].tensor.to_i64().unwrap(), vec![11, 22, -27]);
    // A session serves several requests, each under a fresh HPKE context.
    let again = session.infer("add", inputs()).await.unwrap();
    assert_eq!(again, outputs);
    assert_eq!(s.posts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_mock_signed_document_is_not_trusted_under_the_default_aws_anchor() {
    let s = start(Misbehave::Nothing);
    let client = Client::new(&s.url, Policy::new().no_pcr_policy()).unwrap();
    let err = client.attest().await.unwrap_err();
    assert_eq!(err.step(), "verify:certificate_chain", "{err}");
}

#[tokio::test]
async fn refuses_an_enclave_with_other_measurements() {
    let s = start(Misbehave::Nothing);
    let policy = Policy::new()
        .trust_root_pem(&s.root_pem)
        .unwrap()
        .expect_pcr(0, vec![0x11; 48]);
    let err = Client::new(&s.url, policy)
        .unwrap()
        .attest()
        .await
        .unwrap_err();
    assert_eq!(err.step(), "verify:pcr_policy", "{err}");
    // Another accepted set that matches makes it pass.
    let policy = Policy::new()
        .trust_root_pem(&s.root_pem)
        .unwrap()
        .expect_pcr(0, vec![0x11; 48])
        .or_pcrs([(0, PCR0.to_vec())]);
    assert!(Client::new(&s.url, policy).unwrap().attest().await.is_ok());
}

#[tokio::test]
async fn refuses_a_replayed_document_signed_for_another_nonce() {
    let s = start(Misbehave::StaleNonce);
    let err = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap_err();
    assert_eq!(err.step(), "verify:nonce", "{err}");
}

#[tokio::test]
async fn refuses_a_manifest_the_enclave_did_not_commit_to() {
    let s = start(Misbehave::OtherManifest);
    let err = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap_err();
    assert_eq!(err.step(), "commitment:commitment_digest", "{err}");
    assert!(err.is_verification_failure());
}

#[tokio::test]
async fn a_tampered_response_does_not_open() {
    let s = start(Misbehave::TamperResponse);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let err = session.infer("add", inputs()).await.unwrap_err();
    assert!(matches!(err, ClientError::Open(_)), "{err:?}");
}

#[tokio::test]
async fn an_enclave_error_comes_back_with_its_code() {
    let s = start(Misbehave::EnclaveError);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let err = session.infer("add", inputs()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InputMismatch), "{err:?}");
    assert!(err.to_string().contains("expected [3]"), "{err}");
}

#[tokio::test]
async fn nothing_is_sent_for_a_model_outside_the_attested_manifest() {
    let s = start(Misbehave::Nothing);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let err = session.infer("resnet", inputs()).await.unwrap_err();
    assert_eq!(err.step(), "model_not_attested");
    assert_eq!(s.posts.load(Ordering::SeqCst), 0);
}
