//! `sealed-sim measure` against the mock NSM itself: the measurements.json it writes for an enclave
//! binary must be exactly what a mock NSM booted from that binary attests, so that a client policy
//! (or a KMS key policy) built from the file accepts the simulation enclave, and nothing else.
#![cfg(feature = "simulation")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealed_attestation::{PcrPolicy, TrustAnchor, VerifyError, VerifyOptions};
use sealed_enclave::nsm::{self, mock::MockNsm};
use sealed_mock_ca::MockCa;
use sealed_sim::measure::Measurements;

const NONCE: &[u8] = b"measure-test-nonce";

/// A mock NSM booted from `image`, one document from it, and the mock root (DER).
fn document_for(image: &Path) -> (Vec<u8>, Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ca = MockCa::generate(now).unwrap();
    let root = ca.root_der();
    let nsm = MockNsm::new(ca, image).unwrap();
    let document = nsm::attest(&nsm, Some(vec![9; 32]), None, Some(NONCE.to_vec())).unwrap();
    (document, root)
}

/// The policy a client would build from a measurements.json: every PCR in it, one set.
fn policy_from_json(json: &str) -> PcrPolicy {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let pcrs: BTreeMap<u16, Vec<u8>> = (0..3u16)
        .map(|i| {
            let hex = value["Measurements"][format!("PCR{i}")].as_str().unwrap();
            (i, hex::decode(hex).unwrap())
        })
        .collect();
    PcrPolicy::AnyOf(vec![pcrs])
}

fn options(root: &[u8], pcr_policy: PcrPolicy) -> VerifyOptions {
    VerifyOptions {
        trust_anchor: TrustAnchor::from_der(root).unwrap(),
        pcr_policy,
        expected_nonce: Some(NONCE.to_vec()),
        max_age: Some(Duration::from_secs(60)),
        allow_debug: false,
        now: SystemTime::now(),
    }
}

#[test]
fn measurements_file_matches_what_the_mock_nsm_attests() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("sealed-enclave");
    // The real thing would be the simulation binary; any file is measured the same way.
    std::fs::write(
        &image,
        b"a simulation enclave build, as far as the mock NSM can tell",
    )
    .unwrap();
    let out = dir.path().join("measurements.json");
    sealed_sim::measure::run(&image, Some(&out)).unwrap();
    let json = std::fs::read_to_string(&out).unwrap();

    let (document, root) = document_for(&image);
    let verified =
        sealed_attestation::verify(&document, &options(&root, policy_from_json(&json))).unwrap();
    let measured = Measurements::of_simulation_enclave(&image).unwrap();
    for (index, value) in measured.pcrs() {
        assert_eq!(
            verified.pcrs.get(&index),
            Some(&value.to_vec()),
            "PCR{index}"
        );
    }
}

#[test]
fn measurements_of_another_binary_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("sealed-enclave");
    std::fs::write(&image, b"release N").unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, b"release N+1").unwrap();
    let json = Measurements::of_simulation_enclave(&other)
        .unwrap()
        .to_nitro_cli_json();

    let (document, root) = document_for(&image);
    let err = sealed_attestation::verify(&document, &options(&root, policy_from_json(&json)))
        .unwrap_err();
    assert!(matches!(err, VerifyError::PcrPolicy(_)), "{err}");
}
