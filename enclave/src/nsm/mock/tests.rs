use super::*;

use std::io::Write;
use std::time::Duration;

use ciborium::Value;
use der::Decode;
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sealed_attestation::{PcrPolicy, TrustAnchor, VerifyError, VerifyOptions};

use crate::nsm::{self, NsmError};

const IMAGE: &[u8] = b"pretend enclave image bytes";

struct Fixture {
    nsm: MockNsm,
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    _image: tempfile::NamedTempFile,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixture() -> Fixture {
    let mut image = tempfile::NamedTempFile::new().unwrap();
    image.write_all(IMAGE).unwrap();
    image.flush().unwrap();
    let ca = MockCa::generate(now_secs()).unwrap();
    let root_der = ca.root_der();
    let intermediate_der = ca.intermediate_der();
    let nsm = MockNsm::new(ca, image.path()).unwrap();
    Fixture {
        nsm,
        root_der,
        intermediate_der,
        _image: image,
    }
}

fn sha384(data: &[u8]) -> Vec<u8> {
    Sha384::digest(data).to_vec()
}

fn describe(nsm: &MockNsm, index: u16) -> (bool, Vec<u8>) {
    match nsm.process(Request::DescribePCR { index }) {
        Response::DescribePCR { lock, data } => (lock, data),
        other => panic!("unexpected {other:?}"),
    }
}

fn attestation_request(user_data: usize, nonce: usize, public_key: usize) -> Request {
    Request::Attestation {
        user_data: Some(ByteBuf::from(vec![1; user_data])),
        nonce: Some(ByteBuf::from(vec![2; nonce])),
        public_key: Some(ByteBuf::from(vec![3; public_key])),
    }
}

fn document(response: Response) -> Vec<u8> {
    match response {
        Response::Attestation { document } => document,
        other => panic!("unexpected {other:?}"),
    }
}

/// Splits a COSE_Sign1 into (protected, unprotected, payload, signature).
fn cose_parts(document: &[u8]) -> (Vec<u8>, Value, Vec<u8>, Vec<u8>) {
    let value: Value = ciborium::de::from_reader(document).unwrap();
    let mut items = value.into_array().unwrap().into_iter();
    let protected = items.next().unwrap().into_bytes().unwrap();
    let unprotected = items.next().unwrap();
    let payload = items.next().unwrap().into_bytes().unwrap();
    let signature = items.next().unwrap().into_bytes().unwrap();
    assert!(items.next().is_none());
    (protected, unprotected, payload, signature)
}

fn payload_map(payload: &[u8]) -> Vec<(String, Value)> {
    let value: Value = ciborium::de::from_reader(payload).unwrap();
    value
        .into_map()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.into_text().unwrap(), v))
        .collect()
}

fn cert_key(der: &[u8]) -> VerifyingKey {
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let point = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .unwrap()
        .to_vec();
    VerifyingKey::from_sec1_bytes(&point).unwrap()
}

#[test]
fn describe_nsm_reports_mock_identity_and_boot_locks() {
    let f = fixture();
    match f.nsm.process(Request::DescribeNSM) {
        Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
        } => {
            assert_eq!((version_major, version_minor, version_patch), (1, 0, 0));
            assert_eq!(module_id, "i-mock0000000000000-enc0000000000000000");
            assert_eq!(max_pcrs, 32);
            assert_eq!(locked_pcrs, BTreeSet::from([0, 1, 2, 3, 4, 8]));
            assert_eq!(digest, Digest::SHA384);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn boot_pcrs_are_the_documented_measurements() {
    let f = fixture();
    assert_eq!(describe(&f.nsm, 0), (true, sha384(IMAGE)));
    assert_eq!(describe(&f.nsm, 1), (true, sha384(PCR1_LABEL.as_bytes())));
    assert_eq!(describe(&f.nsm, 2), (true, sha384(PCR2_LABEL.as_bytes())));
    assert_eq!(describe(&f.nsm, 3), (true, vec![0; 48]));
    assert_eq!(describe(&f.nsm, 4), (true, vec![0; 48]));
    assert_eq!(describe(&f.nsm, 5), (false, vec![0; 48]));
    assert_eq!(describe(&f.nsm, 8), (true, vec![0; 48]));
    assert_eq!(describe(&f.nsm, 31), (false, vec![0; 48]));
    assert!(matches!(
        f.nsm.process(Request::DescribePCR { index: 32 }),
        Response::Error(ErrorCode::InvalidIndex)
    ));
    assert_eq!(
        measure_image(f._image.path()).unwrap().to_vec(),
        sha384(IMAGE)
    );
}

#[test]
fn new_fails_for_a_missing_image() {
    let ca = MockCa::generate(now_secs()).unwrap();
    let err = MockNsm::new(ca, Path::new("/nonexistent/sealed-enclave")).unwrap_err();
    assert!(matches!(err, MockNsmError::Image { .. }), "{err}");
}

#[test]
fn extend_pcr_hashes_old_value_with_data() {
    let f = fixture();
    let expected_first = {
        let mut input = vec![0u8; 48];
        input.extend_from_slice(b"first");
        sha384(&input)
    };
    match f.nsm.process(Request::ExtendPCR {
        index: 16,
        data: b"first".to_vec(),
    }) {
        Response::ExtendPCR { data } => assert_eq!(data, expected_first),
        other => panic!("unexpected {other:?}"),
    }
    let expected_second = {
        let mut input = expected_first.clone();
        input.extend_from_slice(b"second");
        sha384(&input)
    };
    let new = nsm::extend_pcr(&f.nsm, 16, b"second".to_vec()).unwrap();
    assert_eq!(new, expected_second);
    assert_eq!(describe(&f.nsm, 16), (false, expected_second));
}

#[test]
fn locked_pcrs_reject_extension() {
    let f = fixture();
    for index in [0, 1, 2, 3, 4, 8] {
        assert!(matches!(
            f.nsm.process(Request::ExtendPCR {
                index,
                data: vec![1]
            }),
            Response::Error(ErrorCode::ReadOnlyIndex)
        ));
    }
    assert_eq!(describe(&f.nsm, 0).1, sha384(IMAGE), "PCR0 unchanged");

    nsm::extend_pcr(&f.nsm, 20, vec![1]).unwrap();
    nsm::lock_pcr(&f.nsm, 20).unwrap();
    assert_eq!(
        nsm::extend_pcr(&f.nsm, 20, vec![2]),
        Err(NsmError::ReadOnlyIndex)
    );
    assert!(nsm::describe_pcr(&f.nsm, 20).unwrap().locked);
    // Locking again is accepted; out-of-range indices are not.
    nsm::lock_pcr(&f.nsm, 20).unwrap();
    assert_eq!(nsm::lock_pcr(&f.nsm, 32), Err(NsmError::InvalidIndex));
    assert_eq!(
        nsm::extend_pcr(&f.nsm, 32, vec![1]),
        Err(NsmError::InvalidIndex)
    );
}

#[test]
fn lock_pcrs_locks_the_range_from_zero() {
    let f = fixture();
    assert!(matches!(
        f.nsm.process(Request::LockPCRs { range: 20 }),
        Response::LockPCRs
    ));
    assert!(describe(&f.nsm, 19).0);
    assert!(!describe(&f.nsm, 20).0);
    assert!(matches!(
        f.nsm.process(Request::LockPCRs { range: 33 }),
        Response::Error(ErrorCode::InvalidIndex)
    ));
    assert!(matches!(
        f.nsm.process(Request::LockPCRs { range: 32 }),
        Response::LockPCRs
    ));
    assert!(describe(&f.nsm, 31).0);
}

#[test]
fn get_random_returns_256_fresh_bytes() {
    let f = fixture();
    let take = || match f.nsm.process(Request::GetRandom) {
        Response::GetRandom { random } => random,
        other => panic!("unexpected {other:?}"),
    };
    let (a, b) = (take(), take());
    assert_eq!(a.len(), 256);
    assert_eq!(b.len(), 256);
    assert_ne!(a, b);
    let mut out = [0u8; 600];
    nsm::get_random(&f.nsm, &mut out).unwrap();
    assert!(out[512..].iter().any(|&b| b != 0));
}

#[test]
fn attestation_accepts_1024_byte_fields_and_rejects_1025() {
    let f = fixture();
    let doc = document(f.nsm.process(attestation_request(1024, 1024, 1024)));
    let (_, _, payload, _) = cose_parts(&doc);
    let parsed = AttestationDoc::from_binary(&payload).unwrap();
    assert_eq!(parsed.user_data.unwrap().len(), 1024);
    assert_eq!(parsed.nonce.unwrap().len(), 1024);
    assert_eq!(parsed.public_key.unwrap().len(), 1024);

    for request in [
        attestation_request(1025, 0, 0),
        attestation_request(0, 1025, 0),
        attestation_request(0, 0, 1025),
    ] {
        assert!(matches!(
            f.nsm.process(request),
            Response::Error(ErrorCode::InputTooLarge)
        ));
    }
    assert_eq!(
        nsm::attest(&f.nsm, None, None, Some(vec![0; 1025])),
        Err(NsmError::InputTooLarge)
    );
}

#[test]
fn extend_pcr_data_over_the_driver_limit_is_too_large() {
    let f = fixture();
    assert!(matches!(
        f.nsm.process(Request::ExtendPCR {
            index: 16,
            data: vec![0; 4096]
        }),
        Response::Error(ErrorCode::InputTooLarge)
    ));
    assert_eq!(describe(&f.nsm, 16).1, vec![0; 48], "PCR16 unchanged");
}

#[test]
fn document_has_real_layout_and_verifies_with_leaf_key() {
    let f = fixture();
    let before_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let doc = nsm::attest(
        &f.nsm,
        Some(b"public key".to_vec()),
        Some(b"user data".to_vec()),
        Some(b"client nonce 0123".to_vec()),
    )
    .unwrap();

    // Envelope: untagged, {1: -35}, {}, payload, 96-byte signature (nitro-facts §1.1).
    assert_eq!(doc[0], 0x84, "untagged array(4)");
    let (protected, unprotected, payload, signature) = cose_parts(&doc);
    assert_eq!(protected, [0xa1, 0x01, 0x38, 0x22]);
    assert_eq!(unprotected, Value::Map(vec![]));
    assert_eq!(signature.len(), 96);

    // Payload: exactly the nine keys, in the real order.
    let map = payload_map(&payload);
    let keys: Vec<&str> = map.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "module_id",
            "digest",
            "timestamp",
            "pcrs",
            "certificate",
            "cabundle",
            "public_key",
            "user_data",
            "nonce"
        ]
    );
    let field = |name: &str| &map.iter().find(|(k, _)| k == name).unwrap().1;
    assert_eq!(field("module_id"), &Value::Text(MODULE_ID.to_string()));
    assert_eq!(field("digest"), &Value::Text("SHA384".to_string()));
    let timestamp = u64::try_from(field("timestamp").as_integer().unwrap()).unwrap();
    assert!(timestamp >= before_ms && timestamp < before_ms + 60_000);
    let pcrs = field("pcrs").as_map().unwrap();
    assert_eq!(pcrs.len(), 16);
    for (i, (index, value)) in pcrs.iter().enumerate() {
        assert_eq!(
            u64::try_from(index.as_integer().unwrap()).unwrap(),
            i as u64
        );
        assert_eq!(value.as_bytes().unwrap().len(), 48);
    }
    assert_eq!(pcrs[0].1.as_bytes().unwrap(), &sha384(IMAGE));
    assert_eq!(
        field("cabundle"),
        &Value::Array(vec![
            Value::Bytes(f.root_der.clone()),
            Value::Bytes(f.intermediate_der.clone())
        ])
    );
    assert_eq!(field("public_key"), &Value::Bytes(b"public key".to_vec()));
    assert_eq!(field("user_data"), &Value::Bytes(b"user data".to_vec()));
    assert_eq!(field("nonce"), &Value::Bytes(b"client nonce 0123".to_vec()));

    // Same bytes as the nsm-api crate's own (serde_cbor) encoding.
    let parsed = AttestationDoc::from_binary(&payload).unwrap();
    assert_eq!(parsed.to_binary(), payload);

    // ES384 over Sig_structure (RFC 9052 §4.4) with the key of the certificate in the document.
    let certificate = field("certificate").as_bytes().unwrap();
    let key = cert_key(certificate);
    let signed = sealed_mock_ca::sig_structure(&payload).unwrap();
    let signature = Signature::from_slice(&signature).unwrap();
    key.verify(&signed, &signature).unwrap();
    // The intermediate's key does not verify it: the leaf signed it.
    assert!(
        cert_key(&f.intermediate_der)
            .verify(&signed, &signature)
            .is_err()
    );
}

#[test]
fn absent_optional_fields_are_cbor_null() {
    let f = fixture();
    let doc = nsm::attest(&f.nsm, None, None, None).unwrap();
    let (_, _, payload, _) = cose_parts(&doc);
    let map = payload_map(&payload);
    assert_eq!(map.len(), 9);
    for name in ["public_key", "user_data", "nonce"] {
        let value = &map.iter().find(|(k, _)| k == name).unwrap().1;
        assert_eq!(value, &Value::Null, "{name}");
    }
}

#[test]
fn extended_pcr_appears_in_the_next_document() {
    let f = fixture();
    let value = nsm::extend_pcr(&f.nsm, 15, b"app config".to_vec()).unwrap();
    let doc = nsm::attest(&f.nsm, None, None, None).unwrap();
    let (_, _, payload, _) = cose_parts(&doc);
    let parsed = AttestationDoc::from_binary(&payload).unwrap();
    assert_eq!(parsed.pcrs[&15].to_vec(), value);
}

fn leaf_of(document: &[u8]) -> Vec<u8> {
    let (_, _, payload, _) = cose_parts(document);
    AttestationDoc::from_binary(&payload)
        .unwrap()
        .certificate
        .into_vec()
}

#[test]
fn leaf_is_reissued_when_less_than_an_hour_remains() {
    let f = fixture();
    let now = SystemTime::now();
    let at = |t: SystemTime| leaf_of(&document(f.nsm.process_at(attestation_request(0, 0, 0), t)));
    let first = at(now);
    assert_eq!(at(now + Duration::from_secs(3600)), first, "2 h left: kept");
    let later = now + Duration::from_secs(2 * 3600 + 60);
    let second = at(later);
    assert_ne!(second, first, "under 1 h left: re-issued");
    // The new leaf is valid at the document's time.
    let cert = x509_cert::Certificate::from_der(&second).unwrap();
    let validity = cert.tbs_certificate().validity();
    assert!(validity.not_before.to_system_time() <= later);
    assert!(validity.not_after.to_system_time() >= later + Duration::from_secs(2 * 3600));
}

#[test]
fn concurrent_requests_are_served() {
    let f = fixture();
    std::thread::scope(|s| {
        for i in 0..4u8 {
            let nsm = &f.nsm;
            s.spawn(move || {
                nsm::extend_pcr(nsm, 16 + u16::from(i), vec![i]).unwrap();
                nsm::attest(nsm, None, Some(vec![i]), None).unwrap();
            });
        }
    });
    for i in 0..4u16 {
        assert_ne!(describe(&f.nsm, 16 + i).1, vec![0; 48]);
    }
}

fn verify_options(anchor: TrustAnchor, nonce: &[u8]) -> VerifyOptions {
    VerifyOptions {
        trust_anchor: anchor,
        pcr_policy: PcrPolicy::AcceptAny,
        expected_nonce: Some(nonce.to_vec()),
        max_age: Some(Duration::from_secs(60)),
        allow_debug: false,
        now: SystemTime::now(),
    }
}

#[test]
fn mock_document_verifies_only_against_the_mock_root() {
    let f = fixture();
    let nonce = b"0123456789abcdef".to_vec();
    let doc = nsm::attest(&f.nsm, Some(vec![7; 41]), None, Some(nonce.clone())).unwrap();

    let anchor = TrustAnchor::from_der(&f.root_der).unwrap();
    let verified = sealed_attestation::verify(&doc, &verify_options(anchor, &nonce)).unwrap();
    assert_eq!(verified.module_id, MODULE_ID);
    assert_eq!(verified.pcrs.get(&0), Some(&sha384(IMAGE)));
    assert_eq!(verified.public_key, Some(vec![7; 41]));

    // The default anchor is the AWS Nitro root: the mock chain must not pass.
    let err = sealed_attestation::verify(
        &doc,
        &verify_options(TrustAnchor::aws_nitro_root_g1(), &nonce),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Chain(_)), "{err}");
}
