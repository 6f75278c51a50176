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
    // The enclave opened the request: it is not sent again.
    assert_eq!(s.posts.load(Ordering::SeqCst), 1);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_retired_key_leads_to_one_reattestation_and_one_retry_under_a_new_request_id() {
    let s = start(Misbehave::Nothing);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let want = vec![11, 22, -27];
    let sum = |outputs: Vec<NamedTensor>| outputs[0].tensor.to_i64().unwrap();
    assert_eq!(sum(session.infer("add", inputs()).await.unwrap()), want);
    assert_eq!((s.attestations(), s.posts.load(Ordering::SeqCst)), (1, 1));

    s.rotate_key();
    let before = now_ms();
    assert_eq!(sum(session.infer("add", inputs()).await.unwrap()), want);
    // Refused under key 7, attested again, answered under key 8.
    assert_eq!((s.attestations(), s.posts.load(Ordering::SeqCst)), (2, 3));
    assert_eq!(session.current().key_config().key_id, 8);
    assert_eq!(
        session.key_config().key_id,
        7,
        "the first attestation is kept"
    );
    let requests = s.requests();
    assert_eq!(requests.len(), 3);
    // Every attempt has its own id and a current timestamp.
    assert_ne!(requests[1].0, requests[2].0);
    assert_ne!(requests[0].0, requests[1].0);
    for (_, sent_at) in &requests[1..] {
        assert!(*sent_at >= before && *sent_at <= now_ms(), "{sent_at}");
    }
    // Later requests go straight to the new key.
    assert_eq!(sum(session.infer("add", inputs()).await.unwrap()), want);
    assert_eq!((s.attestations(), s.posts.load(Ordering::SeqCst)), (2, 4));
}

#[tokio::test]
async fn a_second_unsupported_key_config_is_returned_as_the_error() {
    let s = start(Misbehave::RefuseEveryKey);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let err = session.infer("add", inputs()).await.unwrap_err();
    assert!(err.needs_reattestation(), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::UnsupportedKeyConfig));
    // One re-attestation, one retry, then the error: no loop.
    assert_eq!((s.attestations(), s.posts.load(Ordering::SeqCst)), (2, 2));
}

#[tokio::test]
async fn a_sealed_replayed_request_error_is_not_retried() {
    let s = start(Misbehave::ReplayedError);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let err = session.infer("add", inputs()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ReplayedRequest), "{err:?}");
    assert!(matches!(err, ClientError::Inference { .. }));
    assert_eq!((s.attestations(), s.posts.load(Ordering::SeqCst)), (1, 1));
}

#[tokio::test]
async fn reattestation_verifies_fully_and_keeps_the_old_key_when_it_fails() {
    let s = start(Misbehave::Nothing);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    s.rotate_key();
    s.sign_stale_nonces();
    let err = session.infer("add", inputs()).await.unwrap_err();
    assert_eq!(err.step(), "verify:nonce", "{err}");
    assert_eq!(session.current().key_config().key_id, 7);
    let err = session.reattest().await.unwrap_err();
    assert_eq!(err.step(), "verify:nonce", "{err}");
    assert_eq!(session.current().key_config().key_id, 7);
    // Nothing was sent under a key that did not verify.
    assert_eq!(s.posts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn reattest_replaces_key_and_document_for_every_clone() {
    let s = start(Misbehave::Nothing);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    let clone = session.clone();
    s.rotate_key();
    session.reattest().await.unwrap();
    assert_eq!(s.attestations(), 2);
    let current = clone.current();
    assert_eq!(current.key_config().key_id, 8);
    assert_ne!(current.document().nonce, session.document().nonce);
    assert_eq!(current.models().collect::<Vec<_>>(), ["add", "digits"]);
    clone.infer("add", inputs()).await.unwrap();
    assert_eq!(s.posts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_requests_refused_together_attest_once() {
    let s = start(Misbehave::Nothing);
    let session = Client::new(&s.url, policy(&s))
        .unwrap()
        .attest()
        .await
        .unwrap();
    s.rotate_key();
    let (a, b, c, d) = tokio::join!(
        session.infer("add", inputs()),
        session.infer("add", inputs()),
        session.infer("add", inputs()),
        session.infer("add", inputs()),
    );
    for r in [a, b, c, d] {
        r.unwrap();
    }
    assert_eq!(s.attestations(), 2);
    assert_eq!(s.posts.load(Ordering::SeqCst), 8);
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
