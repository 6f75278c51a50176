//! `sealed seal-model` against the simulation's mock KMS (`sealed-mock-kms`): the binary's
//! `GenerateDataKey` goes through the real AWS SDK, SigV4 and TLS under the mock CA, and the
//! sealed file must open with the key that a plain KMS `Decrypt` of its header's
//! `CiphertextBlob` returns. A principal the key policy does not name is refused, and a wrong
//! secret is reported as a credentials problem.

use std::path::Path;
use std::process::Output;

use aws_credential_types::Credentials;
use aws_sdk_kms::primitives::Blob;
use sealed_client::kms::{KmsClientConfig, sdk_client_with};
use sealed_mock_kms::{Config, Credential, MockKmsHandle, spawn};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const OWNER_KEY: &str = "AKIAOWNEROWNEROWNER1";
const OWNER_SECRET: &str = "owner-secret-key-for-the-mock-kms-000000";
const OWNER_ARN: &str = "arn:aws:iam::111122223333:user/model-owner";
const OUTSIDER_KEY: &str = "AKIAOUTSIDEROUTSIDER";
const OUTSIDER_SECRET: &str = "outsider-secret-key-for-the-mock-kms-000";
const OUTSIDER_ARN: &str = "arn:aws:iam::111122223333:user/outsider";

async fn mock_kms(dir: &Path) -> MockKmsHandle {
    let mut config = Config::new(dir.join("kms-state.json"), dir.join("kms-tls"));
    let credential = |key: &str, secret: &str, arn: &str| Credential {
        access_key_id: key.into(),
        secret_access_key: Zeroizing::new(secret.into()),
        session_token: None,
        principal_arn: arn.into(),
    };
    config.credentials = vec![
        credential(OWNER_KEY, OWNER_SECRET, OWNER_ARN),
        credential(OUTSIDER_KEY, OUTSIDER_SECRET, OUTSIDER_ARN),
    ];
    spawn(config).await.unwrap()
}

/// An SDK client for the owner, built by the crate's own `sdk_client_with`.
async fn owner_client(kms: &MockKmsHandle) -> aws_sdk_kms::Client {
    sdk_client_with(KmsClientConfig {
        endpoint: Some(&kms.endpoint_url()),
        region: Some("us-east-1"),
        ca_bundle: Some(&kms.ca_file),
        credentials: Some(Credentials::new(
            OWNER_KEY,
            OWNER_SECRET,
            None,
            None,
            "test",
        )),
        ..KmsClientConfig::default()
    })
    .await
    .unwrap()
}

/// A key whose policy lets only the model owner use it.
async fn owner_only_key(client: &aws_sdk_kms::Client) -> String {
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "OwnerOnly",
            "Effect": "Allow",
            "Principal": { "AWS": OWNER_ARN },
            "Action": "kms:*",
            "Resource": "*"
        }]
    });
    let created = client
        .create_key()
        .description("seal-model test")
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    created.key_metadata().unwrap().arn().unwrap().to_string()
}

async fn seal_model(
    dir: &Path,
    kms: &MockKmsHandle,
    key_arn: &str,
    access_key: &str,
    secret: &str,
) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sealed"))
        .env_clear()
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .arg("seal-model")
        .arg("--model")
        .arg(dir.join("model.onnx"))
        .arg("--out")
        .arg(dir.join("model.sealed"))
        .args(["--model-id", "digits", "--key-id", key_arn])
        .args(["--kms-endpoint", &kms.endpoint_url(), "--ca-bundle"])
        .arg(&kms.ca_file)
        .args(["--chunk-size", "16K"])
        .output()
        .await
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_file_opens_with_the_key_a_plain_kms_decrypt_returns() {
    let dir = tempfile::tempdir().unwrap();
    let model: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("model.onnx"), &model).unwrap();
    let kms = mock_kms(dir.path()).await;
    let client = owner_client(&kms).await;
    let key_arn = owner_only_key(&client).await;

    let out = seal_model(dir.path(), &kms, &key_arn, OWNER_KEY, OWNER_SECRET).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["kms_key_id"], key_arn.as_str());
    assert_eq!(summary["plaintext_len"], 100_000);

    let sealed = std::fs::read(dir.path().join("model.sealed")).unwrap();
    let (header, _) = sealed_model::parse_header(&sealed).unwrap();
    assert_eq!(header.kms_key_id, key_arn);
    assert_eq!(header.chunk_size, 16 * 1024);
    let decrypted = client
        .decrypt()
        .ciphertext_blob(Blob::new(header.encrypted_data_key.clone()))
        .encryption_context(
            sealed_model::ENCRYPTION_CONTEXT_KEY,
            header.model_id.clone(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.key_id(), Some(key_arn.as_str()));
    let data_key: [u8; 32] = decrypted.plaintext().unwrap().as_ref().try_into().unwrap();
    let opened = sealed_model::open(&sealed, &data_key).unwrap();
    assert_eq!(&opened[..], &model[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_outside_the_key_policy_is_denied_and_a_wrong_secret_is_a_credentials_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"onnx bytes").unwrap();
    let kms = mock_kms(dir.path()).await;
    let key_arn = owner_only_key(&owner_client(&kms).await).await;

    let out = seal_model(dir.path(), &kms, &key_arn, OUTSIDER_KEY, OUTSIDER_SECRET).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("AccessDeniedException"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("model.sealed").exists());

    let out = seal_model(dir.path(), &kms, &key_arn, OWNER_KEY, "not-the-secret").await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KMS rejected the credentials: InvalidSignatureException"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("model.sealed").exists());

    // A key that does not exist: the key cannot be used (exit 7).
    let missing = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000";
    let out = seal_model(dir.path(), &kms, missing, OWNER_KEY, OWNER_SECRET).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("NotFoundException"),
        "{}",
        stderr(&out)
    );
}
