use super::*;

use der::oid::db::rfc5912::ECDSA_WITH_SHA_384;
use x509_cert::ext::pkix::ExtendedKeyUsage;

/// 2026-06-01T00:00:00Z, a fixed "now" so that validity assertions are exact.
const NOW: u64 = 1_780_272_000;
const THREE_HOURS: u64 = 3 * 3600;

fn parse(der: &[u8]) -> Certificate {
    Certificate::from_der(der).unwrap()
}

fn secs(t: &Time) -> u64 {
    t.to_unix_duration().as_secs()
}

fn basic_constraints(cert: &Certificate) -> (bool, BasicConstraints) {
    cert.tbs_certificate()
        .get_extension::<BasicConstraints>()
        .unwrap()
        .unwrap()
}

fn key_usage(cert: &Certificate) -> (bool, KeyUsage) {
    cert.tbs_certificate()
        .get_extension::<KeyUsage>()
        .unwrap()
        .unwrap()
}

#[test]
fn chain_has_mock_names_and_aws_like_profile() {
    let ca = MockCa::generate(NOW).unwrap();
    let leaf = ca.issue_leaf(NOW, THREE_HOURS).unwrap();
    let root = parse(&ca.root_der());
    let intermediate = parse(&ca.intermediate_der());
    let leaf_cert = parse(leaf.certificate_der());

    // Names say MOCK and link root → intermediate → leaf.
    let root_subject = root.tbs_certificate().subject().to_string();
    assert!(root_subject.contains(ROOT_CN), "{root_subject}");
    assert!(
        intermediate
            .tbs_certificate()
            .subject()
            .to_string()
            .contains(INTERMEDIATE_CN)
    );
    assert!(
        leaf_cert
            .tbs_certificate()
            .subject()
            .to_string()
            .contains("MOCK")
    );
    assert_eq!(
        root.tbs_certificate().issuer(),
        root.tbs_certificate().subject()
    );
    assert_eq!(
        intermediate.tbs_certificate().issuer(),
        root.tbs_certificate().subject()
    );
    assert_eq!(
        leaf_cert.tbs_certificate().issuer(),
        intermediate.tbs_certificate().subject()
    );

    for cert in [&root, &intermediate, &leaf_cert] {
        assert_eq!(cert.signature_algorithm().oid, ECDSA_WITH_SHA_384);
        assert_eq!(cert.tbs_certificate().signature().oid, ECDSA_WITH_SHA_384);
        assert!(
            cert.tbs_certificate()
                .get_extension::<ExtendedKeyUsage>()
                .unwrap()
                .is_none(),
            "no EKU anywhere, as in the AWS chain"
        );
    }

    // CA certificates: basicConstraints and keyUsage critical, keyCertSign + cRLSign.
    let (critical, bc) = basic_constraints(&root);
    assert!(critical && bc.ca && bc.path_len_constraint.is_none());
    let (critical, bc) = basic_constraints(&intermediate);
    assert!(critical && bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    for cert in [&root, &intermediate] {
        let (critical, ku) = key_usage(cert);
        assert!(critical);
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    }

    // Leaf: CA:FALSE critical, no pathLen, digitalSignature only.
    let (critical, bc) = basic_constraints(&leaf_cert);
    assert!(critical && !bc.ca && bc.path_len_constraint.is_none());
    let (_, ku) = key_usage(&leaf_cert);
    assert!(ku.digital_signature() && !ku.key_cert_sign());

    // Validity: root ~10 y, intermediate ~1 y (both from a minute ago), leaf from now - 3 s.
    let v = root.tbs_certificate().validity();
    assert_eq!(secs(&v.not_before), NOW - 60);
    assert_eq!(secs(&v.not_after), NOW - 60 + ROOT_VALIDITY_SECS);
    let v = intermediate.tbs_certificate().validity();
    assert_eq!(secs(&v.not_after), NOW - 60 + INTERMEDIATE_VALIDITY_SECS);
    assert_eq!(
        ca.intermediate_not_after(),
        NOW - 60 + INTERMEDIATE_VALIDITY_SECS
    );
    let v = leaf_cert.tbs_certificate().validity();
    assert_eq!(secs(&v.not_before), NOW - 3);
    assert_eq!(secs(&v.not_after), NOW - 3 + THREE_HOURS);
    assert_eq!(leaf.not_before(), NOW - 3);
    assert_eq!(leaf.not_after(), NOW - 3 + THREE_HOURS);

    // cabundle is [root, intermediate], root first as in AWS documents.
    assert_eq!(leaf.cabundle(), vec![ca.root_der(), ca.intermediate_der()]);
    assert!(ca.root_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
}

#[test]
fn chain_signatures_verify_with_p384() {
    let ca = MockCa::generate(NOW).unwrap();
    let leaf = ca.issue_leaf(NOW, THREE_HOURS).unwrap();
    let root = parse(&ca.root_der());
    let intermediate = parse(&ca.intermediate_der());
    let leaf_cert = parse(leaf.certificate_der());
    let root_key = cert_verifying_key(&root).unwrap();
    let intermediate_key = cert_verifying_key(&intermediate).unwrap();

    verify_cert_signature(&root, &root_key).unwrap();
    verify_cert_signature(&intermediate, &root_key).unwrap();
    verify_cert_signature(&leaf_cert, &intermediate_key).unwrap();
    // And the leaf is not signed by the root directly.
    assert!(verify_cert_signature(&leaf_cert, &root_key).is_err());
}

#[test]
fn two_generated_cas_have_different_keys_and_serials() {
    let a = MockCa::generate(NOW).unwrap();
    let b = MockCa::generate(NOW).unwrap();
    let (ra, rb) = (parse(&a.root_der()), parse(&b.root_der()));
    assert_ne!(
        ra.tbs_certificate().subject_public_key_info(),
        rb.tbs_certificate().subject_public_key_info()
    );
    assert_ne!(
        ra.tbs_certificate().serial_number(),
        rb.tbs_certificate().serial_number()
    );
}

#[test]
fn cose_sign1_has_nitro_layout_and_verifies_over_sig_structure() {
    let ca = MockCa::generate(NOW).unwrap();
    let leaf = ca.issue_leaf(NOW, THREE_HOURS).unwrap();
    let payload = vec![0x5au8; 300];
    let document = leaf.sign_cose_sign1(&payload).unwrap();

    // Untagged array(4), bstr(4) a1 01 38 22, empty map a0, payload with a 2-byte length
    // (`nitro-facts.md` §1.1: real documents start `84 44 a1 01 38 22 a0 59`).
    assert_eq!(
        &document[..8],
        &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59]
    );
    let value: ciborium::Value = ciborium::de::from_reader(document.as_slice()).unwrap();
    let items = value.into_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].as_bytes().unwrap(), &COSE_PROTECTED_ES384);
    assert_eq!(items[1].as_map().unwrap().len(), 0);
    assert_eq!(items[2].as_bytes().unwrap(), &payload);
    let signature = items[3].as_bytes().unwrap();
    assert_eq!(signature.len(), ES384_SIGNATURE_LEN);

    // Sig_structure written out byte by byte (RFC 9052 §4.4), independent of `sig_structure`.
    let mut expected = vec![0x84, 0x6a];
    expected.extend_from_slice(b"Signature1");
    expected.extend_from_slice(&[0x44, 0xa1, 0x01, 0x38, 0x22, 0x40, 0x59, 0x01, 0x2c]);
    expected.extend_from_slice(&payload);
    assert_eq!(sig_structure(&payload).unwrap(), expected);

    let key = cert_verifying_key(&parse(leaf.certificate_der())).unwrap();
    let signature = Signature::from_slice(signature).unwrap();
    key.verify(&expected, &signature).unwrap();

    // A changed payload does not verify under the same signature.
    let mut tampered = payload.clone();
    tampered[0] ^= 1;
    assert!(
        key.verify(&sig_structure(&tampered).unwrap(), &signature)
            .is_err()
    );
}

#[test]
fn write_dir_then_load_dir_round_trips_with_private_key_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("mock-ca");
    let ca = MockCa::generate(NOW).unwrap();
    ca.write_dir(&ca_dir).unwrap();

    let mode = |name: &str| {
        fs::metadata(ca_dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(INTERMEDIATE_KEY_FILE), 0o600);
    assert_eq!(
        fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::read_to_string(ca_dir.join(ROOT_FILE)).unwrap(),
        ca.root_pem()
    );
    let key_pem = fs::read_to_string(ca_dir.join(INTERMEDIATE_KEY_FILE)).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // Only the three files: the root key is never written.
    assert_eq!(fs::read_dir(&ca_dir).unwrap().count(), 3);

    let loaded = MockCa::load_dir(&ca_dir).unwrap();
    assert_eq!(loaded.root_der(), ca.root_der());
    assert_eq!(loaded.intermediate_der(), ca.intermediate_der());
    assert_eq!(loaded.intermediate_not_after(), ca.intermediate_not_after());

    // A leaf from the loaded CA chains to the original intermediate.
    let leaf = loaded.issue_leaf(NOW + 10, THREE_HOURS).unwrap();
    let intermediate_key = cert_verifying_key(&parse(&ca.intermediate_der())).unwrap();
    verify_cert_signature(&parse(leaf.certificate_der()), &intermediate_key).unwrap();
}

#[test]
fn write_dir_forces_mode_0600_on_existing_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join(INTERMEDIATE_KEY_FILE);
    fs::write(&key_path, b"old").unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    MockCa::generate(NOW)
        .unwrap()
        .write_dir(dir.path())
        .unwrap();
    assert_eq!(
        fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn load_dir_rejects_key_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    MockCa::generate(NOW)
        .unwrap()
        .write_dir(dir.path())
        .unwrap();
    MockCa::generate(NOW)
        .unwrap()
        .write_dir(other.path())
        .unwrap();
    fs::copy(
        other.path().join(INTERMEDIATE_KEY_FILE),
        dir.path().join(INTERMEDIATE_KEY_FILE),
    )
    .unwrap();
    let err = MockCa::load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, MockCaError::Inconsistent(m) if m.contains("does not match")),
        "{err}"
    );
}

#[test]
fn load_dir_rejects_intermediate_from_another_root() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    MockCa::generate(NOW)
        .unwrap()
        .write_dir(dir.path())
        .unwrap();
    MockCa::generate(NOW)
        .unwrap()
        .write_dir(other.path())
        .unwrap();
    fs::copy(other.path().join(ROOT_FILE), dir.path().join(ROOT_FILE)).unwrap();
    assert!(matches!(
        MockCa::load_dir(dir.path()),
        Err(MockCaError::Inconsistent(_))
    ));
}

#[test]
fn load_dir_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = MockCa::load_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, MockCaError::Io { path, .. } if path.ends_with(ROOT_FILE)));
}

#[test]
fn load_dir_rejects_oversized_file_before_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    MockCa::generate(NOW)
        .unwrap()
        .write_dir(dir.path())
        .unwrap();
    fs::write(
        dir.path().join(ROOT_FILE),
        vec![b'A'; MAX_PEM_FILE_LEN as usize + 1],
    )
    .unwrap();
    assert!(matches!(
        MockCa::load_dir(dir.path()),
        Err(MockCaError::FileTooLarge { .. })
    ));
}

#[test]
fn issue_leaf_refuses_to_outlive_the_intermediate() {
    let ca = MockCa::generate(NOW).unwrap();
    let late = ca.intermediate_not_after() - 60;
    assert!(matches!(
        ca.issue_leaf(late, THREE_HOURS),
        Err(MockCaError::LeafOutlivesIntermediate { .. })
    ));
    // A leaf that fits is fine.
    ca.issue_leaf(late, 30).unwrap();
}

#[test]
fn issue_leaf_refuses_times_outside_the_intermediate_validity() {
    let ca = MockCa::generate(NOW).unwrap();
    assert!(matches!(
        ca.issue_leaf(NOW - 3600, 60),
        Err(MockCaError::IntermediateNotValid { .. })
    ));
    assert!(matches!(
        ca.issue_leaf(ca.intermediate_not_after() + 1, 60),
        Err(MockCaError::IntermediateNotValid { .. })
    ));
    assert!(matches!(
        ca.issue_leaf(NOW, 0),
        Err(MockCaError::ZeroValidity)
    ));
}

#[test]
fn debug_output_names_no_key_material() {
    let ca = MockCa::generate(NOW).unwrap();
    let leaf = ca.issue_leaf(NOW, THREE_HOURS).unwrap();
    let key_pem = ca.intermediate_key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let body: String = key_pem.lines().nth(1).unwrap().to_string();
    let ca_debug = format!("{ca:?}");
    let leaf_debug = format!("{leaf:?}");
    assert!(ca_debug.starts_with("MockCa {") && !ca_debug.contains(&body));
    assert!(leaf_debug.starts_with("MockLeaf {") && !leaf_debug.contains("key"));
}
