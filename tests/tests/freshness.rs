//! Replay protection, freshness and key rotation, end to end (docs/protocol.md §2.2–2.4): the real
//! enclave and host of the simulation, a client that seals requests itself where the SDK would
//! not (a captured body sent twice, a timestamp an hour old), and the SDK across key rotations.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use rand_core::{TryCryptoRng, TryRng};
use sealed_client::{Client, Session, npy};
use sealed_crypto::{KeyConfig, ResponseOpener, seal_request};
use sealed_wire::{ErrorCode, InferRequest, InferResponse, Tensor};
use sha2::{Digest, Sha256};

/// The first example digit and the label the model gives it.
fn example(run: &common::Sim) -> (Tensor, Vec<i64>) {
    let example = &run.digits.examples[0];
    (
        npy::read_file(&example.file).unwrap(),
        example.predicted_labels.clone(),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).unwrap();
    id
}

/// A deterministic stream (SHA-256 of seed ‖ counter): sealing twice from the same seed gives the
/// same ephemeral key, hence byte-identical requests and two openers of the same response secret.
/// Test-only; never a key generator.
struct Seeded {
    seed: [u8; 32],
    counter: u64,
}

impl TryRng for Seeded {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_be_bytes())
                .finalize();
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for Seeded {}

fn digits_request(tensor: Tensor, request_id: [u8; 16], sent_at_ms: u64) -> Vec<u8> {
    InferRequest {
        request_id,
        sent_at_ms,
        model_id: "digits".to_string(),
        inputs: common::input(tensor),
    }
    .encode()
    .unwrap()
}

/// POSTs sealed bytes as they are (what a host replaying a captured body does).
async fn post(url: &str, sealed: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/infer"))
        .header("content-type", "application/octet-stream")
        .body(sealed)
        .send()
        .await
        .unwrap()
}

/// POSTs a sealed request and opens the 200 answer.
async fn post_and_open(url: &str, sealed: Vec<u8>, opener: ResponseOpener) -> InferResponse {
    let r = post(url, sealed).await;
    assert_eq!(
        r.status(),
        200,
        "a request the enclave opened is answered sealed"
    );
    let body = r.bytes().await.unwrap();
    InferResponse::decode(&opener.open(&body).unwrap()).unwrap()
}

fn label(response: InferResponse) -> Vec<i64> {
    match response {
        InferResponse::Ok { outputs } => outputs
            .iter()
            .find(|o| o.name == "label")
            .unwrap()
            .tensor
            .to_i64()
            .unwrap(),
        InferResponse::Error { code, message } => panic!("{code}: {message}"),
    }
}

fn sealed_error(response: InferResponse) -> ErrorCode {
    match response {
        InferResponse::Error { code, .. } => code,
        InferResponse::Ok { .. } => panic!("expected a sealed error, got outputs"),
    }
}

/// `Session::infer` on a digit; the model's label.
async fn infer_label(session: &Session, digit: &Tensor) -> Vec<i64> {
    let outputs = session
        .infer("digits", common::input(digit.clone()))
        .await
        .unwrap();
    let label = outputs.iter().find(|o| o.name == "label").unwrap();
    label.tensor.to_i64().unwrap()
}

async fn attested_key(run: &common::Sim) -> KeyConfig {
    let session = Client::new(&run.stack.host_url, run.policy())
        .unwrap()
        .attest()
        .await
        .unwrap();
    session.current().key_config().clone()
}

#[tokio::test]
async fn a_replayed_sealed_body_is_answered_replayed_request_sealed_to_the_sender() {
    let run = common::Sim::start(&[], &[]).await;
    let key = attested_key(&run).await;
    let (digit, want) = example(&run);
    let plaintext = digits_request(digit, random_id(), now_ms());
    let seed = [7u8; 32];
    let (sealed, first_opener) =
        seal_request(&key, &plaintext, &mut Seeded { seed, counter: 0 }).unwrap();
    let (again, second_opener) =
        seal_request(&key, &plaintext, &mut Seeded { seed, counter: 0 }).unwrap();
    assert_eq!(
        sealed, again,
        "same seed, same sealed bytes: a faithful capture"
    );

    assert_eq!(
        label(post_and_open(&run.stack.host_url, sealed, first_opener).await),
        want
    );
    // The host sends the captured body again: the enclave opens it, recognises the id, and
    // answers `replayed_request` inside a response only the original sender can open.
    let replayed = post_and_open(&run.stack.host_url, again, second_opener).await;
    assert_eq!(sealed_error(replayed), ErrorCode::ReplayedRequest);

    // A new request (new id) is served as usual.
    let (digit, want) = example(&run);
    let plaintext = digits_request(digit, random_id(), now_ms());
    let (sealed, opener) = seal_request(
        &key,
        &plaintext,
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
    .unwrap();
    assert_eq!(
        label(post_and_open(&run.stack.host_url, sealed, opener).await),
        want
    );
    run.stack.stop().await;
}

#[tokio::test]
async fn a_request_sealed_an_hour_ago_or_an_hour_ahead_is_answered_stale_request() {
    let run = common::Sim::start(&[], &[]).await;
    let key = attested_key(&run).await;
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let hour_ms = 3_600_000;
    for sent_at in [now_ms() - hour_ms, now_ms() + hour_ms] {
        let (digit, _) = example(&run);
        let (sealed, opener) =
            seal_request(&key, &digits_request(digit, random_id(), sent_at), &mut rng).unwrap();
        let response = post_and_open(&run.stack.host_url, sealed, opener).await;
        assert_eq!(sealed_error(response), ErrorCode::StaleRequest);
    }
    // A window of 5 s: a request 10 s old is stale, one 1 s old is not.
    let run5 = common::Sim::start(&["--freshness-window-secs", "5"], &[]).await;
    let key = attested_key(&run5).await;
    let (digit, want) = example(&run5);
    let (sealed, opener) = seal_request(
        &key,
        &digits_request(digit.clone(), random_id(), now_ms() - 10_000),
        &mut rng,
    )
    .unwrap();
    let response = post_and_open(&run5.stack.host_url, sealed, opener).await;
    assert_eq!(sealed_error(response), ErrorCode::StaleRequest);
    let (sealed, opener) = seal_request(
        &key,
        &digits_request(digit, random_id(), now_ms() - 1_000),
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        label(post_and_open(&run5.stack.host_url, sealed, opener).await),
        want
    );
    run5.stack.stop().await;
    run.stack.stop().await;
}

#[tokio::test]
async fn a_session_keeps_working_across_key_rotations_by_attesting_again() {
    // Rotation every 2 s, a retired key still opens requests for 1 s.
    let run = common::Sim::start(
        &["--key-rotation-secs", "2", "--key-overlap-secs", "1"],
        &[],
    )
    .await;
    let session = Client::new(&run.stack.host_url, run.policy())
        .unwrap()
        .attest()
        .await
        .unwrap();
    let first_key = session.current().key_config().clone();
    let (digit, want) = example(&run);
    let infer = || infer_label(&session, &digit);
    assert_eq!(infer().await, want);

    // Past rotation + overlap the first key is gone from the enclave: a request sealed to it is
    // refused in the clear, and the session's next request goes through after re-attesting.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let (d, _) = example(&run);
    let (sealed, _) = seal_request(
        &first_key,
        &digits_request(d, random_id(), now_ms()),
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
    .unwrap();
    let r = post(&run.stack.host_url, sealed).await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["name"], "unsupported_key_config");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attest again"),
        "{v}"
    );

    assert_eq!(infer().await, want);
    let second_key = session.current().key_config().clone();
    assert_ne!(second_key, first_key, "the session attested the new key");
    assert_eq!(
        session.key_config(),
        &first_key,
        "the first attestation is kept"
    );

    // Keep going through several more rotations: every request succeeds.
    let mut keys = vec![first_key.key_id, second_key.key_id];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(infer().await, want);
        let id = session.current().key_config().key_id;
        if keys.last() != Some(&id) {
            keys.push(id);
        }
    }
    // A key lives at most 3 s (rotation + overlap) and the loop ran for over 5 s after the second
    // attestation, so at least one more re-attestation happened.
    assert!(keys.len() >= 3, "{keys:?}");
    run.stack.stop().await;
}
