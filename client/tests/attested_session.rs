//! The whole SDK flow against the stand-in host of `support/` (mock-CA-signed documents, a real
//! HPKE server key): a verified session round trip, and one test per way the host can misbehave,
//! each of which the client must notice. The real host and enclave processes are exercised by the
//! workspace e2e tests.

mod support;

use std::sync::atomic::Ordering;

use sealed_client::{Client, ClientError, Policy};
use sealed_wire::{ErrorCode, NamedTensor, Tensor};
use support::{Misbehave, PCR0, StandIn, start};

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
