//! `build_ciphertext_for_recipient` and `decrypt` are inverses, and the built structure is the one
//! KMS emits (it parses like the AWS vectors). One RSA-2048 key per test binary: generation is
//! slow in debug builds.

use std::sync::OnceLock;

use getrandom::SysRng;
use proptest::prelude::*;
use sealed_kms::cms;
use sealed_kms::rsa::PrivateKey;

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::new(&mut SysRng, 2048).unwrap())
}

fn build(plaintext: &[u8]) -> Vec<u8> {
    cms::build_ciphertext_for_recipient(plaintext, &key().to_public_key(), &[7u8; 32], &mut SysRng)
        .unwrap()
}

#[test]
fn round_trips_a_data_key() {
    let data_key = [0x5au8; 32];
    let ber = build(&data_key);
    let r = cms::parse(&ber).unwrap();
    assert_eq!(r.subject_key_id, [7u8; 32]);
    assert_eq!(r.encrypted_key.len(), 256);
    // 32 bytes plus a full PKCS#7 block, as in the first AWS vector.
    assert_eq!(r.encrypted_content.len(), 48);
    let plain = cms::decrypt(&r, key(), &mut SysRng).unwrap();
    assert_eq!(plain.as_slice(), data_key);
}

#[test]
fn built_structure_matches_aws_layout() {
    let ber = build(&[1u8; 32]);
    let aws = include_bytes!("data/aws-nitro-enclaves-sdk-c_cms_test_input_ber.ber");
    // Same header up to the SKI, and same OAEP AlgorithmIdentifier and ECI header bytes.
    assert_eq!(ber[..0x21], aws[..0x21]);
    assert_eq!(ber[0x41..0x83], aws[0x41..0x83]);
    assert_eq!(ber.len(), aws.len());
    assert_eq!(ber[0x183..0x19f], aws[0x183..0x19f]);
    assert_eq!(ber[0x1af..0x1b3], aws[0x1af..0x1b3]);
    assert!(ber.ends_with(&[0; 10]));
}

#[test]
fn round_trips_a_multi_segment_plaintext() {
    let plaintext: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let r = cms::parse(&build(&plaintext)).unwrap();
    assert_eq!(r.encrypted_content.len(), 4096 + 16);
    assert_eq!(
        cms::decrypt(&r, key(), &mut SysRng).unwrap().as_slice(),
        plaintext
    );
}

#[test]
fn rejects_plaintext_over_kms_limit() {
    let err = cms::build_ciphertext_for_recipient(
        &[0u8; 4097],
        &key().to_public_key(),
        &[0u8; 32],
        &mut SysRng,
    )
    .unwrap_err();
    assert!(matches!(err, cms::BuildError::PlaintextTooLarge { .. }));
}

#[test]
fn decrypt_fails_opaquely_with_a_tampered_key_or_content() {
    let mut r = cms::parse(&build(&[9u8; 32])).unwrap();
    let good = r.clone();
    r.encrypted_key[100] ^= 1;
    assert_eq!(
        cms::decrypt(&r, key(), &mut SysRng).unwrap_err(),
        cms::DecryptError
    );
    let mut r = good.clone();
    // Flipping the last block's byte breaks PKCS#7 padding (or yields a different plaintext).
    let last = r.encrypted_content.len() - 1;
    r.encrypted_content[last] ^= 0x80;
    match cms::decrypt(&r, key(), &mut SysRng) {
        Err(e) => assert_eq!(e, cms::DecryptError),
        Ok(p) => assert_ne!(p.as_slice(), [9u8; 32]),
    }
}

#[test]
fn decrypt_rejects_a_content_key_that_is_not_32_bytes() {
    // KMS always wraps an AES-256 key; a 16-byte key must not be accepted.
    let mut r = cms::parse(&build(&[1u8; 16])).unwrap();
    r.encrypted_key = key()
        .to_public_key()
        .oaep_encrypt_with_rng::<sha2::Sha256, _>(&mut SysRng, &[0u8; 16])
        .unwrap();
    assert_eq!(
        cms::decrypt(&r, key(), &mut SysRng).unwrap_err(),
        cms::DecryptError
    );
}

#[test]
fn decrypt_fails_with_another_key() {
    let r = cms::parse(&build(&[3u8; 32])).unwrap();
    // A second key costs one more generation; keep it to this test.
    let other = PrivateKey::new(&mut SysRng, 2048).unwrap();
    assert!(cms::decrypt(&r, &other, &mut SysRng).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn decrypt_inverts_build(plaintext in proptest::collection::vec(any::<u8>(), 0..300)) {
        let r = cms::parse(&build(&plaintext)).unwrap();
        let plain = cms::decrypt(&r, key(), &mut SysRng).unwrap();
        prop_assert_eq!(plain.as_slice(), plaintext.as_slice());
    }
}

#[test]
fn recipient_key_round_trips_through_spki() {
    let spki = cms::recipient_public_key_spki(&key().to_public_key()).unwrap();
    let public = cms::recipient_public_key_from_spki(&spki).unwrap();
    assert_eq!(public, key().to_public_key());
    assert_eq!(cms::subject_key_id(&spki).len(), 32);
    assert_ne!(cms::subject_key_id(&spki), cms::subject_key_id(&spki[1..]));
}

#[test]
fn recipient_key_must_be_rsa_2048() {
    let small = PrivateKey::new(&mut SysRng, 1024).unwrap().to_public_key();
    let spki = cms::recipient_public_key_spki(&small).unwrap();
    assert_eq!(
        cms::recipient_public_key_from_spki(&spki).unwrap_err(),
        cms::RecipientKeyError::NotRsa2048 { bits: 1024 }
    );
    assert_eq!(
        cms::recipient_public_key_from_spki(&[0x30, 0x00]).unwrap_err(),
        cms::RecipientKeyError::NotRsaSpki
    );
}
