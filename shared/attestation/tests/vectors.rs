//! Verification of real AWS Nitro attestation documents, and of documents derived from them that
//! must fail at a named check. Sources of every file: `tests/data/README.md`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::value::Value;
use p384::ecdsa::Signature;
use sealed_attestation::{
    CertRole, ChainError, PcrPolicy, TrustAnchor, VerifyError, VerifyOptions, cose, verify,
};

const EVERVAULT: &[u8] = include_bytes!("data/evervault-2022-10-13.cbor");
const NITRITE: &[u8] = include_bytes!("data/nitrite-2024-09-07.cbor");
const VALIDATOR: &[u8] = include_bytes!("data/nitro-validator-2026-01-03.cbor");
const SELF_SIGNED: &[u8] = include_bytes!("data/self-signed-mock.cbor");
const NONCE_BITFLIP: &[u8] = include_bytes!("data/nonce-bitflip.cbor");
const AWS_ROOT_PEM: &str = include_str!("data/aws-nitro-root-g1.pem");

// Document timestamps (ms since the epoch), as published with the vectors.
const EVERVAULT_TS: u64 = 1_665_651_482_136; // 2022-10-13T08:58:02.136Z
const NITRITE_TS: u64 = 1_725_719_859_545; // 2024-09-07T14:37:39.545Z
const VALIDATOR_TS: u64 = 1_767_472_867_402; // 2026-01-03T20:41:07.402Z

// PCR0 of each document, read once from the documents (known answers).
const EVERVAULT_PCR0: &str = "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b";
const NITRITE_PCR0: &str = "e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a";
const VALIDATOR_PCR0: &str = "4b8d4cf2a99e05ce1b5bddaf9d21cb446eb0e606c5bebd1ebf02b473a22165f7b68b0bb0d1ac5a90f0311e493522cfab";
// PCR1 shared by the 2024 and 2026 documents (same nitro-cli kernel blob; nitro-facts §4).
const SHARED_PCR1: &str = "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa";

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn opts(now_ms: u64) -> VerifyOptions {
    VerifyOptions {
        trust_anchor: TrustAnchor::aws_nitro_root_g1(),
        pcr_policy: PcrPolicy::AcceptAny,
        expected_nonce: None,
        max_age: None,
        allow_debug: false,
        now: at_ms(now_ms),
    }
}

fn pcr_map(entries: &[(u16, &str)]) -> BTreeMap<u16, Vec<u8>> {
    entries
        .iter()
        .map(|(i, h)| (*i, hex::decode(h).unwrap()))
        .collect()
}

fn decode(bytes: &[u8]) -> Value {
    ciborium::de::from_reader(bytes).unwrap()
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

/// Re-encodes a document with its payload map edited; the original signature is kept (and so no
/// longer matches).
fn with_payload_edit(doc: &[u8], edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let Value::Array(mut items) = decode(doc) else {
        panic!("not an array")
    };
    let Value::Bytes(payload) = &items[2] else {
        panic!("payload")
    };
    let Value::Map(mut entries) = decode(payload) else {
        panic!("payload map")
    };
    edit(&mut entries);
    items[2] = Value::Bytes(encode(&Value::Map(entries)));
    encode(&Value::Array(items))
}

fn field<'a>(entries: &'a mut [(Value, Value)], key: &str) -> &'a mut Value {
    entries
        .iter_mut()
        .find(|(k, _)| *k == Value::Text(key.into()))
        .map(|(_, v)| v)
        .unwrap()
}

fn cabundle(doc: &[u8]) -> Vec<Vec<u8>> {
    verify(doc, &opts(doc_ts(doc))).unwrap().cabundle
}

fn doc_ts(doc: &[u8]) -> u64 {
    match doc {
        d if d == EVERVAULT => EVERVAULT_TS,
        d if d == NITRITE => NITRITE_TS,
        _ => VALIDATOR_TS,
    }
}

#[test]
fn real_documents_verify_as_of_their_timestamps() {
    let d = verify(EVERVAULT, &opts(EVERVAULT_TS)).unwrap();
    assert_eq!(d.module_id, "i-020b6af9246d90e92-enc0183d09086c24190");
    assert_eq!(d.timestamp_ms, EVERVAULT_TS);
    assert_eq!(d.digest, "SHA384");
    assert_eq!(d.nonce.as_ref().map(Vec::len), Some(256));
    assert_eq!(d.public_key, None);
    assert_eq!(d.user_data, None);
    assert!(d.pcrs[&3].iter().any(|b| *b != 0) && d.pcrs[&8].iter().any(|b| *b != 0));

    let d = verify(NITRITE, &opts(NITRITE_TS)).unwrap();
    assert_eq!(d.module_id, "i-0a22e5c5f24d22174-enc0191cceb4289903f");
    // 1024-byte optional fields: the real limit is 1024, not 512.
    assert_eq!(d.public_key.as_ref().map(Vec::len), Some(1024));
    assert_eq!(d.user_data.as_ref().map(Vec::len), Some(1024));
    assert_eq!(d.nonce.as_ref().map(Vec::len), Some(1024));

    let d = verify(VALIDATOR, &opts(VALIDATOR_TS)).unwrap();
    assert_eq!(d.module_id, "i-0368fa67e156d6d23-enc019b8596b1a9dad6");
    assert_eq!(
        d.user_data.as_deref().map(hex::encode).as_deref(),
        Some("69553adc61d6e9fcdecbe1ea49bb2b52a60238e0")
    );
    assert_eq!(d.pcrs.len(), 16);
    assert!(d.pcrs.values().all(|v| v.len() == 48));
    assert_eq!(d.cabundle.len(), 4);
    assert_eq!(d.cabundle[0], TrustAnchor::aws_nitro_root_g1().der());
}

#[test]
fn real_documents_pass_a_policy_pinning_their_pcr0() {
    for (doc, ts, pcr0) in [
        (EVERVAULT, EVERVAULT_TS, EVERVAULT_PCR0),
        (NITRITE, NITRITE_TS, NITRITE_PCR0),
        (VALIDATOR, VALIDATOR_TS, VALIDATOR_PCR0),
    ] {
        let o = VerifyOptions {
            pcr_policy: PcrPolicy::AnyOf(vec![pcr_map(&[(0, pcr0)])]),
            ..opts(ts)
        };
        let d = verify(doc, &o).unwrap();
        assert_eq!(hex::encode(&d.pcrs[&0]), pcr0);
    }
}

#[test]
fn any_of_accepts_second_alternative_with_several_pcrs() {
    let o = VerifyOptions {
        pcr_policy: PcrPolicy::AnyOf(vec![
            pcr_map(&[(0, NITRITE_PCR0)]),
            pcr_map(&[(0, VALIDATOR_PCR0), (1, SHARED_PCR1)]),
        ]),
        ..opts(VALIDATOR_TS)
    };
    verify(VALIDATOR, &o).unwrap();
}

#[test]
fn wrong_pcr0_fails_pcr_policy() {
    let o = VerifyOptions {
        pcr_policy: PcrPolicy::AnyOf(vec![pcr_map(&[(0, EVERVAULT_PCR0)])]),
        ..opts(NITRITE_TS)
    };
    let err = verify(NITRITE, &o).unwrap_err();
    assert_eq!(err.check(), "pcr_policy");
    // Right PCR0 but a wrong PCR1 in the same alternative also fails.
    let o = VerifyOptions {
        pcr_policy: PcrPolicy::AnyOf(vec![pcr_map(&[(0, EVERVAULT_PCR0), (1, SHARED_PCR1)])]),
        ..opts(EVERVAULT_TS)
    };
    assert_eq!(verify(EVERVAULT, &o).unwrap_err().check(), "pcr_policy");
}

#[test]
fn empty_any_of_policy_is_refused() {
    let o = VerifyOptions {
        pcr_policy: PcrPolicy::AnyOf(vec![]),
        ..opts(NITRITE_TS)
    };
    assert_eq!(verify(NITRITE, &o).unwrap_err().check(), "pcr_policy");
}

#[test]
fn built_in_root_equals_the_published_pem() {
    let from_file = TrustAnchor::from_pem(AWS_ROOT_PEM).unwrap();
    assert_eq!(from_file, TrustAnchor::aws_nitro_root_g1());
    assert_eq!(
        hex::encode(from_file.sha256_fingerprint()),
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );
}

#[test]
fn self_signed_mock_is_rejected() {
    // Null unprotected header: refused at the envelope, before anything else.
    let err = verify(SELF_SIGNED, &opts(1_713_379_906_000)).unwrap_err();
    assert_eq!(err.check(), "cose");
    assert!(matches!(
        err,
        VerifyError::Cose(sealed_attestation::CoseError::InvalidUnprotectedHeader)
    ));
}

#[test]
fn nonce_bitflip_fails_signature() {
    let err = verify(NONCE_BITFLIP, &opts(NITRITE_TS)).unwrap_err();
    assert_eq!(err.check(), "signature");
}

#[test]
fn expired_leaf_fails_validity() {
    // Leaf notAfter is 17:37:39Z; the bound itself is inclusive (RFC 5280 §4.1.2.5).
    verify(NITRITE, &opts(1_725_730_659_000)).unwrap();
    let err = verify(NITRITE, &opts(1_725_730_660_000)).unwrap_err();
    assert_eq!(err.check(), "certificate_validity");
    assert_eq!(err, VerifyError::Chain(ChainError::Expired(CertRole::Leaf)));
}

#[test]
fn not_yet_valid_leaf_fails_validity() {
    // Leaf notBefore is 14:37:36Z.
    let err = verify(NITRITE, &opts(1_725_719_855_000)).unwrap_err();
    assert_eq!(err.check(), "certificate_validity");
    assert_eq!(
        err,
        VerifyError::Chain(ChainError::NotYetValid(CertRole::Leaf))
    );
}

#[test]
fn foreign_cabundle_root_fails_root_pin_before_signature() {
    let other = cabundle(EVERVAULT)[1].clone();
    let doc = with_payload_edit(NITRITE, |e| {
        let Value::Array(bundle) = field(e, "cabundle") else {
            panic!()
        };
        bundle[0] = Value::Bytes(other);
    });
    let err = verify(&doc, &opts(NITRITE_TS)).unwrap_err();
    assert_eq!(err.check(), "certificate_chain");
    assert!(matches!(
        err,
        VerifyError::Chain(ChainError::RootMismatch { .. })
    ));
}

#[test]
fn other_trust_anchor_rejects_real_document() {
    let intermediate = cabundle(NITRITE)[1].clone();
    let o = VerifyOptions {
        trust_anchor: TrustAnchor::from_der(&intermediate).unwrap(),
        ..opts(NITRITE_TS)
    };
    let err = verify(NITRITE, &o).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Chain(ChainError::RootMismatch { .. })
    ));
}

#[test]
fn dropped_last_intermediate_fails_issuer_chaining() {
    let doc = with_payload_edit(NITRITE, |e| {
        let Value::Array(bundle) = field(e, "cabundle") else {
            panic!()
        };
        bundle.pop();
    });
    let err = verify(&doc, &opts(NITRITE_TS)).unwrap_err();
    assert_eq!(err.check(), "certificate_chain");
    assert_eq!(
        err,
        VerifyError::Chain(ChainError::IssuerMismatch(CertRole::Leaf))
    );
}

#[test]
fn swapped_intermediates_fail_the_chain() {
    let doc = with_payload_edit(NITRITE, |e| {
        let Value::Array(bundle) = field(e, "cabundle") else {
            panic!()
        };
        bundle.swap(1, 2);
    });
    assert_eq!(
        verify(&doc, &opts(NITRITE_TS)).unwrap_err().check(),
        "certificate_chain"
    );
}

#[test]
fn expected_nonce_must_match() {
    let nonce = verify(EVERVAULT, &opts(EVERVAULT_TS))
        .unwrap()
        .nonce
        .unwrap();
    let o = VerifyOptions {
        expected_nonce: Some(nonce.clone()),
        ..opts(EVERVAULT_TS)
    };
    verify(EVERVAULT, &o).unwrap();
    let mut other = nonce;
    other[0] ^= 1;
    let o = VerifyOptions {
        expected_nonce: Some(other),
        ..opts(EVERVAULT_TS)
    };
    let err = verify(EVERVAULT, &o).unwrap_err();
    assert_eq!(err.check(), "nonce");
    assert_eq!(err, VerifyError::NonceMismatch);
    // A document without a nonce fails when one is expected.
    let o = VerifyOptions {
        expected_nonce: Some(vec![7; 32]),
        ..opts(VALIDATOR_TS)
    };
    assert_eq!(
        verify(VALIDATOR, &o).unwrap_err(),
        VerifyError::NonceMissing
    );
}

#[test]
fn max_age_is_enforced() {
    let ten_minutes_later = NITRITE_TS + 600_000;
    let o = VerifyOptions {
        max_age: Some(Duration::from_secs(300)),
        ..opts(ten_minutes_later)
    };
    let err = verify(NITRITE, &o).unwrap_err();
    assert_eq!(err.check(), "max_age");
    let o = VerifyOptions {
        max_age: Some(Duration::from_secs(900)),
        ..opts(ten_minutes_later)
    };
    verify(NITRITE, &o).unwrap();
}

#[test]
fn tagged_cose_verifies() {
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(NITRITE);
    let a = verify(&tagged, &opts(NITRITE_TS)).unwrap();
    let b = verify(NITRITE, &opts(NITRITE_TS)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn indefinite_length_payload_verifies() {
    let sign1 = cose::parse(VALIDATOR).unwrap();
    assert_eq!(sign1.payload[0], 0xbf, "vector must use an indefinite map");
    assert_eq!(sign1.payload.last(), Some(&0xff));
    verify(VALIDATOR, &opts(VALIDATOR_TS)).unwrap();
}

#[test]
fn high_s_signature_verifies() {
    let sign1 = cose::parse(VALIDATOR).unwrap();
    let sig = Signature::from_slice(&sign1.signature).unwrap();
    assert_ne!(
        sig.normalize_s(),
        sig,
        "vector must carry a high-S signature"
    );
    verify(VALIDATOR, &opts(VALIDATOR_TS)).unwrap();
    // ECDSA accepts both (r, s) and (r, n-s): the low-S twin verifies too.
    let mut low = VALIDATOR.to_vec();
    let pos = low.len() - 96;
    low[pos..].copy_from_slice(&sig.normalize_s().to_bytes());
    verify(&low, &opts(VALIDATOR_TS)).unwrap();
}

#[test]
fn transplanted_signature_fails() {
    let mut doc = NITRITE.to_vec();
    let n = doc.len();
    let other = cose::parse(VALIDATOR).unwrap().signature;
    doc[n - 96..].copy_from_slice(&other);
    assert_eq!(
        verify(&doc, &opts(NITRITE_TS)).unwrap_err().check(),
        "signature"
    );
}

#[test]
fn debug_mode_document_fails_at_signature_before_policy() {
    // We cannot sign a zero-PCR0 document under the AWS root; re-encoding one keeps the original
    // signature, which no longer matches. Signature comes before policy, so that is what fails:
    // policy checks never run on unauthenticated content. The debug-mode check itself is unit
    // tested in `policy`.
    let doc = with_payload_edit(NITRITE, |e| {
        let Value::Map(pcrs) = field(e, "pcrs") else {
            panic!()
        };
        pcrs[0].1 = Value::Bytes(vec![0; 48]);
    });
    assert_eq!(
        verify(&doc, &opts(NITRITE_TS)).unwrap_err().check(),
        "signature"
    );
}

#[test]
fn duplicate_or_unknown_payload_keys_fail_payload() {
    let doc = with_payload_edit(NITRITE, |e| {
        e.push((Value::Text("nonce".into()), Value::Null));
    });
    assert_eq!(
        verify(&doc, &opts(NITRITE_TS)).unwrap_err().check(),
        "payload"
    );
    let doc = with_payload_edit(NITRITE, |e| {
        e.push((Value::Text("debug".into()), Value::Bool(false)));
    });
    assert_eq!(
        verify(&doc, &opts(NITRITE_TS)).unwrap_err().check(),
        "payload"
    );
}

#[test]
fn oversized_document_fails_cose() {
    let big = vec![0u8; sealed_wire::limits::MAX_ATTESTATION_DOC_LEN + 1];
    assert_eq!(verify(&big, &opts(NITRITE_TS)).unwrap_err().check(), "cose");
}

#[test]
fn errors_display_for_a_cli() {
    let err = verify(NITRITE, &opts(1_725_730_660_000)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate chain rejected: leaf certificate has expired at the verification time"
    );
}
