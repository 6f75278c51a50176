//! The stock `aws-sdk-kms` client against the mock, unchanged but for the endpoint URL and the
//! mock TLS CA: request shape, SigV4, response and error deserialisation must all fit.

use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::ProvideErrorMetadata as _;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use sealed_mock_kms::{Config, Credential, MockKmsHandle, spawn};
use zeroize::Zeroizing;

fn client(kms: &MockKmsHandle, secret: &str, token: Option<&str>) -> aws_sdk_kms::Client {
    let tls_context = TlsContext::builder()
        .with_trust_store(
            TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(kms.ca_pem.as_bytes()),
        )
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(tls_context)
        .build_https();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(kms.endpoint_url())
        .credentials_provider(Credentials::new(
            "ASIASDK",
            secret,
            token.map(str::to_owned),
            None,
            "test",
        ))
        .http_client(http)
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

#[tokio::test]
async fn stock_sdk_round_trips_and_reads_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("state.json"), dir.path().join("tls"));
    config.credentials = vec![Credential {
        access_key_id: "ASIASDK".into(),
        secret_access_key: Zeroizing::new("sdk-secret".into()),
        session_token: Some(Zeroizing::new("sdk-token".into())),
        principal_arn: "arn:aws:sts::111122223333:assumed-role/owner/s".into(),
    }];
    let kms = spawn(config).await.unwrap();
    let sdk = client(&kms, "sdk-secret", Some("sdk-token"));

    let created = sdk
        .create_key()
        .description("sdk test")
        .send()
        .await
        .unwrap();
    let meta = created.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert!(meta.creation_date().unwrap().secs() > 1_600_000_000);
    let arn = meta.arn().unwrap().to_owned();

    let described = sdk.describe_key().key_id(&arn).send().await.unwrap();
    assert_eq!(described.key_metadata().unwrap().key_id(), meta.key_id());

    let policy = sdk.get_key_policy().key_id(&arn).send().await.unwrap();
    assert!(policy.policy().unwrap().contains("kms:*"));
    sdk.put_key_policy()
        .key_id(&arn)
        .policy(policy.policy().unwrap())
        .send()
        .await
        .unwrap();

    let dk = sdk
        .generate_data_key()
        .key_id(&arn)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let plain = dk.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(plain.len(), 32);
    assert_eq!(dk.key_id(), Some(arn.as_str()));
    let back = sdk
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext().unwrap().as_ref(), plain.as_slice());

    let enc = sdk
        .encrypt()
        .key_id(meta.key_id())
        .plaintext(Blob::new(b"hello".to_vec()))
        .send()
        .await
        .unwrap();
    let mut tampered = enc.ciphertext_blob().unwrap().as_ref().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = sdk
        .decrypt()
        .ciphertext_blob(Blob::new(tampered))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_ciphertext_exception(), "{err:?}");

    let random = sdk
        .generate_random()
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    assert_eq!(random.plaintext().unwrap().as_ref().len(), 64);

    let err = sdk
        .describe_key()
        .key_id("arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");

    // Bad credentials surface as the AWS error codes the SDK users match on.
    let wrong = client(&kms, "not-the-secret", Some("sdk-token"));
    let err = wrong
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));
    let wrong = client(&kms, "sdk-secret", Some("other-token"));
    let err = wrong
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UnrecognizedClientException"));
}
