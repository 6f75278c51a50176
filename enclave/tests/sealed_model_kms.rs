//! Sealed-model loading against the mock KMS (`sealed-mock-kms`), the way it runs in simulation:
//! the enclave's service with the mock NSM (documents under a mock CA that the mock KMS is told to
//! trust), its KMS client reaching the mock's 127.0.0.1 port through a Unix-socket byte proxy
//! written here (the host's part), TLS trusting only the mock's CA, SigV4 with the host's
//! credentials, and key policies on `kms:RecipientAttestation:PCR0`.
#![cfg(feature = "simulation")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sealed_enclave::engine::{Engine, EngineConfig};
use sealed_enclave::kms::https::{self, HttpsTarget};
use sealed_enclave::kms::{KmsClient, KmsConfig, KmsEndpoint, TrustRoots, roots_from_pem};
use sealed_enclave::model_store::{ModelStore, StoreConfig};
use sealed_enclave::nsm::mock::{MockNsm, measure_image};
use sealed_enclave::service::Service;
use sealed_kms::sigv4::{SigningCredentials, sign_kms_request};
use sealed_mock_kms::{Config, Credential, MockKmsHandle};
use sealed_model::SealParams;
use sealed_transport::Endpoint;
use sealed_wire::{AwsCredentials, EnclaveRequest, EnclaveResponse, ErrorCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

const DIGITS: &[u8] = include_bytes!("../../sim/assets/digits/digits.onnx");
const ADMIN_KEY_ID: &str = "AKIDADMINEXAMPLE0001";
const ADMIN_SECRET: &str = "admin-secret-access-key";
const HOST_KEY_ID: &str = "ASIAHOSTEXAMPLE00001";
const HOST_SECRET: &str = "host-secret-access-key";
const HOST_TOKEN: &str = "host-session-token";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The host's KMS proxy: a Unix socket whose connections are forwarded byte for byte to the mock.
fn spawn_proxy(path: &Path, target: std::net::SocketAddr) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

struct Sim {
    _dir: tempfile::TempDir,
    kms: MockKmsHandle,
    proxy: Endpoint,
    roots: TrustRoots,
    nsm: Arc<MockNsm>,
    pcr0: [u8; 48],
}

async fn sim() -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let ca = sealed_mock_ca::MockCa::generate(now()).unwrap();
    let mut config = Config::new(dir.path().join("kms-state.json"), dir.path().join("tls"));
    config.attestation_root =
        Some(sealed_attestation::TrustAnchor::from_pem(&ca.root_pem()).unwrap());
    config.credentials = vec![
        Credential::new(
            ADMIN_KEY_ID.into(),
            ADMIN_SECRET.into(),
            None,
            Some("arn:aws:iam::111122223333:user/admin".into()),
        ),
        Credential::new(
            HOST_KEY_ID.into(),
            HOST_SECRET.into(),
            Some(HOST_TOKEN.into()),
            Some("arn:aws:sts::111122223333:assumed-role/enclave-host/i-0123".into()),
        ),
    ];
    let kms = sealed_mock_kms::spawn(config).await.unwrap();
    let image = dir.path().join("enclave-image");
    std::fs::write(&image, b"the measured enclave image").unwrap();
    let pcr0 = measure_image(&image).unwrap();
    let nsm = Arc::new(MockNsm::new(ca, &image).unwrap());
    let sock = dir.path().join("kms-proxy.sock");
    spawn_proxy(&sock, kms.addr);
    Sim {
        proxy: format!("unix:{}", sock.display()).parse().unwrap(),
        roots: roots_from_pem(kms.ca_pem.as_bytes()).unwrap(),
        _dir: dir,
        kms,
        nsm,
        pcr0,
    }
}

impl Sim {
    fn kms_config(&self) -> KmsConfig {
        let mut config = KmsConfig::new(self.proxy.clone());
        config.endpoint = Some(self.kms.host().parse::<KmsEndpoint>().unwrap());
        config.roots = self.roots.clone();
        config
    }

    fn service(&self) -> Arc<Service> {
        let engine = Arc::new(Engine::new(EngineConfig {
            workers: 1,
            queue_depth: 8,
            ..EngineConfig::default()
        }));
        let client = KmsClient::new(self.kms_config(), self.nsm.clone()).unwrap();
        let store = ModelStore::new(
            Arc::clone(&engine),
            Some(Arc::new(client)),
            StoreConfig::default(),
        );
        let key = sealed_crypto::ServerKey::generate(0, &mut sealed_enclave::rng::os_rng());
        Arc::new(Service::with_store(self.nsm.clone(), key, engine, store))
    }

    /// A signed admin call through the same proxy and TLS settings (the model owner's side).
    async fn admin(&self, op: &str, body: Value) -> Value {
        let body = serde_json::to_vec(&body).unwrap();
        let headers = sign_kms_request(
            &SigningCredentials {
                access_key_id: ADMIN_KEY_ID,
                secret_access_key: ADMIN_SECRET,
                session_token: None,
            },
            "us-east-1",
            &self.kms.host(),
            &format!("TrentService.{op}"),
            &body,
            SystemTime::now(),
        )
        .unwrap();
        let TrustRoots::Only(certs) = &self.roots else {
            unreachable!()
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs[0].clone()).unwrap();
        let target = HttpsTarget {
            proxy: self.proxy.clone(),
            connector: Arc::new(https::TransportConnect),
            server_name: "localhost".try_into().unwrap(),
            tls: Arc::new(https::client_config(roots).unwrap()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_response_len: 64 * 1024,
        };
        let response = https::post(&target, &headers, body).await.unwrap();
        let value: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(response.status, 200, "{op}: {value}");
        value
    }

    /// A key whose policy lets the host role decrypt only for an enclave with this PCR0.
    async fn create_key(&self, pcr0: &[u8; 48]) -> String {
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "Owner", "Effect": "Allow",
                 "Principal": {"AWS": "arn:aws:iam::111122223333:user/admin"},
                 "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy",
                            "kms:GenerateDataKey"],
                 "Resource": "*"},
                {"Sid": "Enclave", "Effect": "Allow",
                 "Principal": {"AWS": "arn:aws:iam::111122223333:role/enclave-host"},
                 "Action": "kms:Decrypt", "Resource": "*",
                 "Condition": {"StringEqualsIgnoreCase": {
                     "kms:RecipientAttestation:PCR0": hex::encode(pcr0)}}}
            ]
        })
        .to_string();
        let created = self
            .admin(
                "CreateKey",
                json!({"Description": "models", "Policy": policy}),
            )
            .await;
        created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned()
    }

    /// Seals `onnx` under a fresh data key of `key_arn`, as `sealed seal-model` does.
    async fn seal(&self, key_arn: &str, model_id: &str, onnx: &[u8]) -> Vec<u8> {
        let dk = self
            .admin(
                "GenerateDataKey",
                json!({
                    "KeyId": key_arn,
                    "KeySpec": "AES_256",
                    "EncryptionContext": {sealed_model::ENCRYPTION_CONTEXT_KEY: model_id},
                }),
            )
            .await;
        let plaintext = Zeroizing::new(STANDARD.decode(dk["Plaintext"].as_str().unwrap()).unwrap());
        let blob = STANDARD
            .decode(dk["CiphertextBlob"].as_str().unwrap())
            .unwrap();
        let key: [u8; 32] = plaintext.as_slice().try_into().unwrap();
        sealed_model::seal(
            SealParams {
                model_id: model_id.into(),
                kms_key_id: key_arn.into(),
                encrypted_data_key: blob,
                chunk_size: 8 * 1024,
            },
            &key,
            onnx,
            [5; 7],
        )
        .unwrap()
    }
}

fn host_credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: HOST_KEY_ID.into(),
        secret_access_key: Zeroizing::new(HOST_SECRET.into()),
        session_token: Some(Zeroizing::new(HOST_TOKEN.into())),
        expires_at: Some(now() + 3600),
    }
}

/// Drives Begin / Chunk… / End through the service, as the host does.
async fn load(service: &Arc<Service>, file: &[u8], credentials: AwsCredentials) -> EnclaveResponse {
    let header_len = sealed_model::header_total_len(file).unwrap();
    let begin = service
        .handle(EnclaveRequest::LoadSealedModelBegin {
            header: file[..header_len].to_vec(),
            credentials,
            host_time: now(),
        })
        .await;
    let upload_id = match begin {
        EnclaveResponse::SealedModelReady {
            upload_id,
            sealed_len,
        } => {
            assert_eq!(sealed_len, (file.len() - header_len) as u64);
            upload_id
        }
        other => return other,
    };
    for piece in file[header_len..].chunks(5000) {
        match service
            .handle(EnclaveRequest::LoadSealedModelChunk {
                upload_id,
                data: piece.to_vec(),
            })
            .await
        {
            EnclaveResponse::SealedChunkAccepted { .. } => {}
            other => return other,
        }
    }
    service
        .handle(EnclaveRequest::LoadSealedModelEnd { upload_id })
        .await
}

fn error_code(r: &EnclaveResponse) -> Option<ErrorCode> {
    match r {
        EnclaveResponse::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test]
async fn sealed_model_opens_only_for_the_measured_enclave() {
    let sim = sim().await;
    let service = sim.service();

    let good_key = sim.create_key(&sim.pcr0).await;
    let file = sim.seal(&good_key, "digits", DIGITS).await;
    match load(&service, &file, host_credentials()).await {
        EnclaveResponse::ModelLoaded(info) => {
            assert_eq!(info.model_id, "digits");
            assert_eq!(info.sha384, Sha384::digest(DIGITS).to_vec());
        }
        other => panic!("{other:?}"),
    }
    // The manifest the attestation commits to now lists it.
    match service
        .handle(EnclaveRequest::Attestation { nonce: vec![1; 32] })
        .await
    {
        EnclaveResponse::Attestation { manifest, .. } => {
            let m = sealed_wire::ModelManifest::decode(&manifest).unwrap();
            assert_eq!(m.models.len(), 1);
            assert_eq!(m.models[0].sha384, Sha384::digest(DIGITS).to_vec());
        }
        other => panic!("{other:?}"),
    }

    // A key whose policy names another measurement: KMS refuses, nothing more is loaded.
    let mut other_pcr0 = sim.pcr0;
    other_pcr0[0] ^= 0xff;
    let wrong_key = sim.create_key(&other_pcr0).await;
    let file = sim.seal(&wrong_key, "other", DIGITS).await;
    let r = load(&service, &file, host_credentials()).await;
    assert_eq!(error_code(&r), Some(ErrorCode::ModelAccessDenied), "{r:?}");
    assert_eq!(service.engine().models().len(), 1);
    assert_eq!(service.model_store().uploads_in_progress(), 0);

    // Credentials KMS does not know: its own error, reported as kms_error.
    let file = sim.seal(&good_key, "third", DIGITS).await;
    let mut bad = host_credentials();
    bad.secret_access_key = Zeroizing::new("not-the-secret".into());
    let r = load(&service, &file, bad).await;
    assert_eq!(error_code(&r), Some(ErrorCode::KmsError), "{r:?}");

    // A flipped bit in the body: the data key is released, the chunk fails, nothing loads.
    let mut flipped = file.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x10;
    let r = load(&service, &flipped, host_credentials()).await;
    assert_eq!(error_code(&r), Some(ErrorCode::ModelCorrupt), "{r:?}");
    assert_eq!(service.engine().models().len(), 1);
    // …and the intact file still loads afterwards.
    assert!(matches!(
        load(&service, &file, host_credentials()).await,
        EnclaveResponse::ModelLoaded(_)
    ));
}
