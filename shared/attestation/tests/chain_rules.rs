//! Certificate-path rules and policy checks on small P-384 chains issued here (root →
//! intermediate → leaf, the shape of the Nitro PKI), each varying one property. Keys are fixed
//! scalars and ECDSA signing is deterministic (RFC 6979), so no randomness is involved.

use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use ciborium::value::Value;
use der::Encode;
use der::asn1::{ObjectIdentifier, OctetString};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use sealed_attestation::{
    CertRole, ChainError, PcrPolicy, TrustAnchor, VerifyError, VerifyOptions, cose, verify,
};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

const NOW_S: u64 = 1_767_472_867; // 2026-01-03T20:41:07Z
const HOUR: u64 = 3600;

struct Profile {
    subject: Name,
    issuer: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 48]).unwrap()
}

fn ext(oid: &str, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: ObjectIdentifier::new(oid).unwrap(),
        critical,
        extn_value: OctetString::new(value).unwrap(),
    }
}

fn bc(critical: bool, ca: bool, path_len: Option<u8>) -> Extension {
    let v = BasicConstraints {
        ca,
        path_len_constraint: path_len,
    };
    ext("2.5.29.19", critical, v.to_der().unwrap())
}

fn ku(usages: impl Into<der::flagset::FlagSet<KeyUsages>>) -> Extension {
    ext("2.5.29.15", true, KeyUsage(usages.into()).to_der().unwrap())
}

fn ca_exts(path_len: Option<u8>) -> Vec<Extension> {
    vec![
        bc(true, true, path_len),
        ku(KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature),
    ]
}

fn leaf_exts() -> Vec<Extension> {
    vec![bc(true, false, None), ku(KeyUsages::DigitalSignature)]
}

fn time(s: u64) -> Time {
    Time::from(der::DateTime::from_unix_duration(Duration::from_secs(s)).unwrap())
}

struct Spec {
    subject: &'static str,
    issuer: &'static str,
    subject_key: u8,
    issuer_key: u8,
    not_before: u64,
    not_after: u64,
    extensions: Vec<Extension>,
}

fn issue(spec: Spec) -> Vec<u8> {
    let profile = Profile {
        subject: Name::from_str(spec.subject).unwrap(),
        issuer: Name::from_str(spec.issuer).unwrap(),
        extensions: spec.extensions,
    };
    let spki = SubjectPublicKeyInfo::from_key(key(spec.subject_key).verifying_key()).unwrap();
    let builder = CertificateBuilder::new(
        profile,
        SerialNumber::from(u32::from(spec.subject_key)),
        Validity::new(time(spec.not_before), time(spec.not_after)),
        spki,
    )
    .unwrap();
    let cert: Certificate = builder
        .build::<_, DerSignature>(&key(spec.issuer_key))
        .unwrap();
    cert.to_der().unwrap()
}

const ROOT: &str = "CN=sealed test root,O=Sealed";
const INTER: &str = "CN=sealed test intermediate,O=Sealed";
const LEAF: &str = "CN=sealed test leaf,O=Sealed";

/// A chain that passes; each test edits one part of it.
struct Pki {
    root: Spec,
    inter: Spec,
    leaf: Spec,
}

fn pki() -> Pki {
    Pki {
        root: Spec {
            subject: ROOT,
            issuer: ROOT,
            subject_key: 1,
            issuer_key: 1,
            not_before: NOW_S - 1000 * HOUR,
            not_after: NOW_S + 1000 * HOUR,
            extensions: ca_exts(None),
        },
        inter: Spec {
            subject: INTER,
            issuer: ROOT,
            subject_key: 2,
            issuer_key: 1,
            not_before: NOW_S - 10 * HOUR,
            not_after: NOW_S + 10 * HOUR,
            extensions: ca_exts(Some(0)),
        },
        leaf: Spec {
            subject: LEAF,
            issuer: INTER,
            subject_key: 3,
            issuer_key: 2,
            not_before: NOW_S - 60,
            not_after: NOW_S + 3 * HOUR,
            extensions: leaf_exts(),
        },
    }
}

struct Doc {
    bytes: Vec<u8>,
    anchor: TrustAnchor,
}

fn payload(leaf: Vec<u8>, cabundle: Vec<Vec<u8>>, pcr0: u8, timestamp_ms: u64) -> Vec<u8> {
    let t = |s: &str| Value::Text(s.into());
    let pcrs = (0..16u8)
        .map(|i| {
            let fill = if i == 0 { pcr0 } else { 0 };
            (Value::Integer(i.into()), Value::Bytes(vec![fill; 48]))
        })
        .collect();
    let map = Value::Map(vec![
        (t("module_id"), t("i-0test-enc0test")),
        (t("digest"), t("SHA384")),
        (t("timestamp"), Value::Integer(timestamp_ms.into())),
        (t("pcrs"), Value::Map(pcrs)),
        (t("certificate"), Value::Bytes(leaf)),
        (
            t("cabundle"),
            Value::Array(cabundle.into_iter().map(Value::Bytes).collect()),
        ),
        (t("public_key"), Value::Null),
        (t("user_data"), Value::Null),
        (t("nonce"), Value::Bytes(vec![0x42; 32])),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&map, &mut out).unwrap();
    out
}

fn sign_doc(payload: Vec<u8>, leaf_key: u8) -> Vec<u8> {
    let signed = cose::sig_structure(&cose::PROTECTED_ES384, &payload);
    let sig: Signature = key(leaf_key).sign(&signed);
    let sign1 = Value::Array(vec![
        Value::Bytes(cose::PROTECTED_ES384.to_vec()),
        Value::Map(vec![]),
        Value::Bytes(payload),
        Value::Bytes(sig.to_bytes().to_vec()),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&sign1, &mut out).unwrap();
    out
}

fn build_with(p: Pki, pcr0: u8, timestamp_ms: u64) -> Doc {
    let leaf_key = p.leaf.subject_key;
    let root = issue(p.root);
    let inter = issue(p.inter);
    let leaf = issue(p.leaf);
    let anchor = TrustAnchor::from_der(&root).unwrap();
    let bytes = sign_doc(
        payload(leaf, vec![root, inter], pcr0, timestamp_ms),
        leaf_key,
    );
    Doc { bytes, anchor }
}

fn build(p: Pki) -> Doc {
    build_with(p, 0x11, NOW_S * 1000)
}

fn opts(anchor: &TrustAnchor) -> VerifyOptions {
    VerifyOptions {
        trust_anchor: anchor.clone(),
        pcr_policy: PcrPolicy::AcceptAny,
        expected_nonce: Some(vec![0x42; 32]),
        max_age: Some(Duration::from_secs(300)),
        allow_debug: false,
        now: UNIX_EPOCH + Duration::from_secs(NOW_S),
    }
}

fn chain_err(doc: &Doc) -> ChainError {
    match verify(&doc.bytes, &opts(&doc.anchor)) {
        Err(VerifyError::Chain(e)) => e,
        other => panic!("expected a chain error, got {other:?}"),
    }
}

#[test]
fn well_formed_chain_verifies_with_its_root_only() {
    let doc = build(pki());
    let d = verify(&doc.bytes, &opts(&doc.anchor)).unwrap();
    assert_eq!(d.module_id, "i-0test-enc0test");
    assert_eq!(d.cabundle[0], doc.anchor.der());
    // The same document is refused under the AWS root: nothing is trusted implicitly.
    let err = verify(&doc.bytes, &opts(&TrustAnchor::aws_nitro_root_g1())).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Chain(ChainError::RootMismatch { .. })
    ));
}

#[test]
fn anchor_loads_from_pem() {
    let doc = build(pki());
    let pem =
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, doc.anchor.der()).unwrap();
    assert_eq!(TrustAnchor::from_pem(&pem).unwrap(), doc.anchor);
}

#[test]
fn debug_mode_document_is_rejected_unless_allowed() {
    let doc = build_with(pki(), 0x00, NOW_S * 1000);
    let err = verify(&doc.bytes, &opts(&doc.anchor)).unwrap_err();
    assert_eq!(err.check(), "debug_mode");
    let o = VerifyOptions {
        allow_debug: true,
        ..opts(&doc.anchor)
    };
    verify(&doc.bytes, &o).unwrap();
}

#[test]
fn future_timestamp_is_rejected() {
    let doc = build_with(pki(), 0x11, (NOW_S + 600) * 1000);
    assert_eq!(
        verify(&doc.bytes, &opts(&doc.anchor)).unwrap_err().check(),
        "timestamp"
    );
}

#[test]
fn leaf_that_is_a_ca_is_rejected() {
    let mut p = pki();
    p.leaf.extensions = vec![bc(true, true, None), ku(KeyUsages::DigitalSignature)];
    assert_eq!(chain_err(&build(p)), ChainError::LeafIsCa);
}

#[test]
fn leaf_without_digital_signature_is_rejected() {
    let mut p = pki();
    p.leaf.extensions = vec![bc(true, false, None), ku(KeyUsages::KeyEncipherment)];
    assert_eq!(
        chain_err(&build(p)),
        ChainError::LeafMissingDigitalSignature
    );
    let mut p = pki();
    p.leaf.extensions = vec![bc(true, false, None)];
    assert_eq!(
        chain_err(&build(p)),
        ChainError::LeafMissingDigitalSignature
    );
}

#[test]
fn leaf_without_basic_constraints_and_eku_is_accepted() {
    // The real leaf has no EKU; basicConstraints is optional on an end entity (RFC 5280 §4.2.1.9).
    let mut p = pki();
    p.leaf.extensions = vec![ku(KeyUsages::DigitalSignature)];
    let doc = build(p);
    verify(&doc.bytes, &opts(&doc.anchor)).unwrap();
}

#[test]
fn intermediate_without_key_cert_sign_is_rejected() {
    let mut p = pki();
    p.inter.extensions = vec![bc(true, true, Some(0)), ku(KeyUsages::DigitalSignature)];
    assert_eq!(
        chain_err(&build(p)),
        ChainError::MissingKeyCertSign(CertRole::CaBundle(1))
    );
}

#[test]
fn intermediate_with_non_critical_or_false_basic_constraints_is_rejected() {
    for bcx in [bc(false, true, Some(0)), bc(true, false, None)] {
        let mut p = pki();
        p.inter.extensions = vec![bcx, ku(KeyUsages::KeyCertSign)];
        assert_eq!(
            chain_err(&build(p)),
            ChainError::NotACa(CertRole::CaBundle(1))
        );
    }
}

#[test]
fn path_length_constraint_is_enforced() {
    // The root allows no intermediate below it, but one is there.
    let mut p = pki();
    p.root.extensions = ca_exts(Some(0));
    assert_eq!(
        chain_err(&build(p)),
        ChainError::PathLenExceeded(CertRole::CaBundle(0))
    );
}

#[test]
fn unknown_critical_extension_is_rejected() {
    let mut p = pki();
    p.leaf
        .extensions
        .push(ext("1.3.6.1.4.1.99999.1", true, vec![0x05, 0x00]));
    assert_eq!(
        chain_err(&build(p)),
        ChainError::UnknownCriticalExtension(CertRole::Leaf)
    );
    // The same extension, non-critical, is ignored.
    let mut p = pki();
    p.leaf
        .extensions
        .push(ext("1.3.6.1.4.1.99999.1", false, vec![0x05, 0x00]));
    let doc = build(p);
    verify(&doc.bytes, &opts(&doc.anchor)).unwrap();
}

#[test]
fn expired_intermediate_fails_validity() {
    let mut p = pki();
    p.inter.not_after = NOW_S - 1;
    let doc = build(p);
    let err = verify(&doc.bytes, &opts(&doc.anchor)).unwrap_err();
    assert_eq!(err.check(), "certificate_validity");
    assert_eq!(
        err,
        VerifyError::Chain(ChainError::Expired(CertRole::CaBundle(1)))
    );
}

#[test]
fn expired_root_fails_validity() {
    let mut p = pki();
    p.root.not_after = NOW_S - 1;
    assert_eq!(
        chain_err(&build(p)),
        ChainError::Expired(CertRole::CaBundle(0))
    );
}

#[test]
fn certificate_signed_by_the_wrong_key_is_rejected() {
    // Right issuer name, wrong issuer key.
    let mut p = pki();
    p.leaf.issuer_key = 9;
    assert_eq!(
        chain_err(&build(p)),
        ChainError::BadSignature(CertRole::Leaf)
    );
}

#[test]
fn document_signed_by_a_key_other_than_the_leaf_fails_signature() {
    let p = pki();
    let root = issue(p.root);
    let inter = issue(p.inter);
    let leaf = issue(p.leaf);
    let anchor = TrustAnchor::from_der(&root).unwrap();
    // Signed by the intermediate's key instead of the leaf's.
    let bytes = sign_doc(payload(leaf, vec![root, inter], 0x11, NOW_S * 1000), 2);
    let err = verify(&bytes, &opts(&anchor)).unwrap_err();
    assert_eq!(err.check(), "signature");
}
