//! The two real KMS `CiphertextForRecipient` responses from aws-nitro-enclaves-sdk-c
//! (`tests/kmstool-enclaves/cms_test.c` @56936aa3; see `tests/data/README.md`) parse, and damaged
//! copies are rejected without panicking.

use proptest::prelude::*;
use sealed_kms::cms;

const CONSTRUCTED: &[u8] = include_bytes!("data/aws-nitro-enclaves-sdk-c_cms_test_input_ber.ber");
const PRIMITIVE: &[u8] =
    include_bytes!("data/aws-nitro-enclaves-sdk-c_cms_test_input_ber_w_ctx.ber");

#[test]
fn parses_aws_vector_with_constructed_content() {
    let r = cms::parse(CONSTRUCTED).unwrap();
    assert_eq!(r.subject_key_id.len(), 32);
    assert_eq!(r.encrypted_key.len(), 256);
    assert_eq!(r.encrypted_content.len(), 48);
    assert_eq!(
        hex::encode(&r.subject_key_id[..4]),
        "7087b55d",
        "SKI taken from rid [0]"
    );
    assert_eq!(hex::encode(r.iv), "688c6d5f7f31b0fecedf09f2e7c99ac9");
    assert_eq!(hex::encode(&r.encrypted_content[..4]), "70e5caaf");
    assert_eq!(hex::encode(&r.encrypted_key[..4]), "a0614593");
}

#[test]
fn parses_aws_vector_with_primitive_content() {
    let r = cms::parse(PRIMITIVE).unwrap();
    assert_eq!(r.subject_key_id.len(), 32);
    assert_eq!(r.encrypted_key.len(), 256);
    assert_eq!(r.encrypted_content.len(), 16);
    assert_eq!(hex::encode(r.iv), "e66c1172aee0f2f7be34e3afc6b0e4fe");
    assert_eq!(
        hex::encode(&r.encrypted_content),
        "1f943eb0105c1b0644df4f7130448a28"
    );
}

#[test]
fn rejects_every_truncation_of_the_vectors() {
    for vector in [CONSTRUCTED, PRIMITIVE] {
        for len in 0..vector.len() {
            assert!(cms::parse(&vector[..len]).is_err(), "prefix of {len} bytes");
        }
    }
}

#[test]
fn rejects_trailing_bytes() {
    let mut v = CONSTRUCTED.to_vec();
    v.push(0);
    assert!(cms::parse(&v).is_err());
}

/// Replaces the first occurrence of `from` (an encoded OID or field) with `to` of equal length.
fn patched(vector: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let pos = vector
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut v = vector.to_vec();
    v[pos..pos + to.len()].copy_from_slice(to);
    v
}

#[test]
fn rejects_other_content_encryption_algorithm() {
    // aes256-CBC (…04 01 2a) → aes128-CBC (…04 01 02).
    let v = patched(
        PRIMITIVE,
        &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
        ],
        &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02,
        ],
    );
    assert_eq!(
        cms::parse(&v).unwrap_err(),
        cms::CmsError::UnsupportedContentEncryption
    );
}

#[test]
fn rejects_oaep_hash_other_than_sha256() {
    // First sha256 (the OAEP hashFunc) → sha384 (…04 02 02).
    let v = patched(
        CONSTRUCTED,
        &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ],
        &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        ],
    );
    assert_eq!(
        cms::parse(&v).unwrap_err(),
        cms::CmsError::UnsupportedKeyEncryption
    );
}

#[test]
fn rejects_mgf1_hash_other_than_sha256() {
    // The second sha256 is MGF1's: patch after the mgf1 OID.
    let mgf1 = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
    ];
    let at = CONSTRUCTED
        .windows(mgf1.len())
        .position(|w| w == mgf1)
        .unwrap();
    let mut v = CONSTRUCTED.to_vec();
    let tail = patched(
        &CONSTRUCTED[at..],
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
    );
    v[at..].copy_from_slice(&tail);
    assert_eq!(
        cms::parse(&v).unwrap_err(),
        cms::CmsError::UnsupportedKeyEncryption
    );
}

#[test]
fn rejects_enveloped_data_version_other_than_2() {
    // EnvelopedData starts "30 80 02 01 02 31".
    let v = patched(
        CONSTRUCTED,
        &[0x30, 0x80, 0x02, 0x01, 0x02, 0x31],
        &[0x30, 0x80, 0x02, 0x01, 0x00, 0x31],
    );
    assert!(matches!(
        cms::parse(&v).unwrap_err(),
        cms::CmsError::UnsupportedVersion { .. }
    ));
}

#[test]
fn rejects_content_type_other_than_enveloped_data() {
    // id-envelopedData → id-signedData (…07 02).
    let v = patched(
        CONSTRUCTED,
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02],
    );
    assert_eq!(cms::parse(&v).unwrap_err(), cms::CmsError::NotEnvelopedData);
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = cms::parse(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_vectors(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut v = [CONSTRUCTED, PRIMITIVE][which].to_vec();
        for (pos, byte) in edits {
            let len = v.len();
            v[pos % len] = byte;
        }
        if let Ok(r) = cms::parse(&v) {
            // Whatever parses still satisfies the structural invariants.
            prop_assert!(!r.encrypted_content.is_empty());
            prop_assert_eq!(r.encrypted_content.len() % 16, 0);
            prop_assert!(!r.encrypted_key.is_empty());
        }
    }

    #[test]
    fn never_panics_on_spliced_vectors(cut in 0usize..493, insert in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut v = CONSTRUCTED[..cut].to_vec();
        v.extend_from_slice(&insert);
        v.extend_from_slice(&CONSTRUCTED[cut..]);
        let _ = cms::parse(&v);
    }
}
