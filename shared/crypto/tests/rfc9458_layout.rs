//! Conformance of the request and response layout to RFC 9458 §4.3 and §4.4 (with this
//! project's labels and AES-256-GCM).
//!
//! The round-trip tests cannot see a mistake made identically on both sides (a swapped salt, a
//! wrong HKDF label). Here the same randomness is fed to this crate and to a step-by-step
//! construction written straight from the RFC pseudocode with the building blocks (`hpke`, `hkdf`,
//! `aes-gcm`), and the bytes must be identical. The resulting bytes are also pinned, so that
//! clients in other languages have a vector to test against.

use std::convert::Infallible;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead as _, KeyInit};
use hkdf::Hkdf;
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeS, Serializable};
use rand_core::{TryCryptoRng, TryRng};
use sealed_crypto::{PreparedRequest, REQUEST_PREFIX_LEN, ServerKey, seal_request};
use sha2::Sha256;

/// Hands out fixed bytes, so that both constructions draw the same "randomness".
struct FixedBytes(Vec<u8>);

impl TryRng for FixedBytes {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        unimplemented!("only fill_bytes is used")
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        unimplemented!("only fill_bytes is used")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert!(dst.len() <= self.0.len(), "fixed bytes exhausted");
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}

impl TryCryptoRng for FixedBytes {}

const KEY_ID: u8 = 5;
const IKM_R: [u8; 32] = [0x11; 32];
const IKM_E: [u8; 32] = [0x22; 32];
const RESPONSE_NONCE: [u8; 32] = [0x33; 32];
const REQUEST: &[u8] = b"sealed request";
const RESPONSE: &[u8] = b"sealed response";

/// This crate's output for the fixed inputs above, pinned.
const PINNED_REQUEST: &str = "05002000010002e3b9708aaa21a7f1e62a95ee28d1e5d60b0fceed6c68599013a54b318e9e0b15d36fc21e33e6fc0b4b39e9cd678e59cbaabe48b2efa656e7643088d2db94";
const PINNED_RESPONSE: &str = "33333333333333333333333333333333333333333333333333333333333333336c38e556c9556b68a94726007e813218270900a30717da31b06dd4ce9b5da5";

#[test]
fn request_and_response_match_rfc9458_construction() {
    let key = ServerKey::derive(KEY_ID, &IKM_R);
    let config = key.config();

    // This crate.
    let (request, opener) =
        seal_request(&config, REQUEST, &mut FixedBytes(IKM_E.to_vec())).unwrap();
    let (opened, sealer) = key.open_request(&request).unwrap();
    assert_eq!(opened.as_slice(), REQUEST);
    let response = sealer
        .seal(RESPONSE, &mut FixedBytes(RESPONSE_NONCE.to_vec()))
        .unwrap();

    // RFC 9458 §4.3, step by step.
    let hdr = [KEY_ID, 0x00, 0x20, 0x00, 0x01, 0x00, 0x02];
    let info = [b"sealed-inference request".as_slice(), &[0x00], &hdr].concat();
    let pk_r = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&config.public_key).unwrap();
    let (enc, mut ctx) = hpke::setup_sender_with_rng::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk_r,
        &info,
        &mut FixedBytes(IKM_E.to_vec()),
    )
    .unwrap();
    let enc = enc.to_bytes();
    let ct = ctx.seal(REQUEST, b"").unwrap();
    let expected_request = [hdr.as_slice(), &enc, &ct].concat();
    assert_eq!(request, expected_request);

    // RFC 9458 §4.4, step by step, with Nk = 32 and Nn = 12 for AES-256-GCM.
    let mut secret = [0u8; 32];
    ctx.export(b"sealed-inference response", &mut secret)
        .unwrap();
    let salt = [enc.as_slice(), &RESPONSE_NONCE].concat();
    let prk = Hkdf::<Sha256>::new(Some(&salt), &secret);
    let mut aead_key = [0u8; 32];
    prk.expand(b"key", &mut aead_key).unwrap();
    let mut aead_nonce = [0u8; 12];
    prk.expand(b"nonce", &mut aead_nonce).unwrap();
    let ct = Aes256Gcm::new_from_slice(&aead_key)
        .unwrap()
        .encrypt(&aead_nonce.into(), RESPONSE)
        .unwrap();
    let expected_response = [RESPONSE_NONCE.as_slice(), &ct].concat();
    assert_eq!(response, expected_response);
    assert_eq!(opener.open(&response).unwrap().as_slice(), RESPONSE);

    assert_eq!(hex::encode(&request), PINNED_REQUEST);
    assert_eq!(hex::encode(&response), PINNED_RESPONSE);
}

/// A setup made ahead gives the same bytes as sealing in one step, for the same randomness.
#[test]
fn a_request_set_up_ahead_is_the_same_construction() {
    let key = ServerKey::derive(KEY_ID, &IKM_R);
    let config = key.config();
    let prepared = PreparedRequest::new(&config, &mut FixedBytes(IKM_E.to_vec())).unwrap();
    assert!(prepared.is_for(&config));
    let mut buf = vec![0u8; REQUEST_PREFIX_LEN];
    buf.extend_from_slice(REQUEST);
    let opener = prepared.seal_in_place(&mut buf).unwrap();
    assert_eq!(hex::encode(&buf), PINNED_REQUEST);
    let (opened, sealer) = key.open_request(&buf).unwrap();
    assert_eq!(opened.as_slice(), REQUEST);
    let response = sealer
        .seal(RESPONSE, &mut FixedBytes(RESPONSE_NONCE.to_vec()))
        .unwrap();
    assert_eq!(hex::encode(&response), PINNED_RESPONSE);
    assert_eq!(opener.open(&response).unwrap().as_slice(), RESPONSE);
}

#[test]
fn derived_server_key_is_deterministic_and_distinct_per_ikm() {
    let a = ServerKey::derive(KEY_ID, &IKM_R);
    let b = ServerKey::derive(KEY_ID, &IKM_R);
    let c = ServerKey::derive(KEY_ID, &IKM_E);
    assert_eq!(a.config(), b.config());
    assert_ne!(a.config().public_key, c.config().public_key);
    let (_, pk) = X25519HkdfSha256::derive_keypair(&IKM_R);
    assert_eq!(pk.to_bytes().as_slice(), a.config().public_key.as_slice());
}
