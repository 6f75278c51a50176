//! Known-answer tests for this crate's HPKE suite, from the RFC 9180 test vectors.
//!
//! Source: the CFRG HPKE vectors published with RFC 9180 (cfrg/draft-irtf-cfrg-hpke
//! `test-vectors.json` at commit 5f503c5), the one entry with mode 0 (base), kem_id 0x0020,
//! kdf_id 0x0001, aead_id 0x0002. See `tests/data/README.md` for the exact provenance.
//!
//! These run the crate's own setup functions (`setup_sender`, `setup_receiver`, `ServerKey`)
//! with the vector's `info`, so they check the suite wiring as well as the `hpke` crate.

use std::convert::Infallible;

use hpke::inout::InOutBuf;
use hpke::{Deserializable, Kem as _, Serializable};
use rand_core::{TryCryptoRng, TryRng};
use serde::Deserialize;

use crate::request::{PrivateKey, ServerKey, setup_receiver, setup_sender};
use crate::{AEAD_ID, Aead, KDF_ID, KEM_ID, Kem};

const VECTORS: &str = include_str!("../tests/data/rfc9180-base-x25519-sha256-aes256gcm.json");

#[derive(Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    #[serde(with = "hex")]
    info: Vec<u8>,
    #[serde(rename = "ikmR", with = "hex")]
    ikm_r: Vec<u8>,
    #[serde(rename = "ikmE", with = "hex")]
    ikm_e: Vec<u8>,
    #[serde(rename = "skRm", with = "hex")]
    sk_rm: Vec<u8>,
    #[serde(rename = "skEm", with = "hex")]
    sk_em: Vec<u8>,
    #[serde(rename = "pkRm", with = "hex")]
    pk_rm: Vec<u8>,
    #[serde(rename = "pkEm", with = "hex")]
    pk_em: Vec<u8>,
    #[serde(with = "hex")]
    enc: Vec<u8>,
    encryptions: Vec<Encryption>,
    exports: Vec<Export>,
}

#[derive(Deserialize)]
struct Encryption {
    #[serde(with = "hex")]
    aad: Vec<u8>,
    #[serde(with = "hex")]
    ct: Vec<u8>,
    #[serde(with = "hex")]
    pt: Vec<u8>,
}

#[derive(Deserialize)]
struct Export {
    #[serde(with = "hex")]
    exporter_context: Vec<u8>,
    #[serde(rename = "L")]
    len: usize,
    #[serde(with = "hex")]
    exported_value: Vec<u8>,
}

fn vector() -> Vector {
    let mut vectors: Vec<Vector> = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(vectors.len(), 1);
    let v = vectors.pop().unwrap();
    assert_eq!(
        (v.mode, v.kem_id, v.kdf_id, v.aead_id),
        (0, KEM_ID, KDF_ID, AEAD_ID)
    );
    assert_eq!(v.encryptions.len(), 257);
    assert_eq!(v.exports.len(), 3);
    v
}

fn array32(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().unwrap()
}

/// Hands out fixed bytes: makes the ephemeral key of `setup_sender` the vector's
/// `DeriveKeyPair(ikmE)`.
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

#[test]
fn derive_key_pair_matches_vector() {
    let v = vector();
    let key = ServerKey::derive(9, &array32(&v.ikm_r));
    // Serialized X25519 private keys are clamped (RFC 9180 §7.1.2) and the vector's are not:
    // compare after deserializing, which clamps.
    assert!(key.secret == PrivateKey::from_bytes(&v.sk_rm).unwrap());
    assert_eq!(key.config().public_key.as_slice(), v.pk_rm.as_slice());
    assert_eq!(key.key_id(), 9);

    let (sk_e, pk_e) = Kem::derive_keypair(&v.ikm_e);
    assert!(sk_e == PrivateKey::from_bytes(&v.sk_em).unwrap());
    assert_eq!(pk_e.to_bytes().as_slice(), v.pk_em.as_slice());
}

#[test]
fn receiver_opens_every_vector_ciphertext_and_matches_exports() {
    let v = vector();
    let key = ServerKey::derive(0, &array32(&v.ikm_r));
    let mut ctx = setup_receiver(&key.secret, &array32(&v.enc), &v.info).unwrap();
    // Sequence numbers advance with each open, in vector order (RFC 9180 §5.2).
    for (i, e) in v.encryptions.iter().enumerate() {
        let (body, tag) = e.ct.split_at(e.ct.len() - crate::TAG_LEN);
        let tag = hpke::aead::AeadTag::<Aead>::from_bytes(tag).unwrap();
        let mut buf = body.to_vec();
        ctx.open_inout_detached(InOutBuf::from(buf.as_mut_slice()), &e.aad, &tag)
            .unwrap_or_else(|err| panic!("encryption {i} did not open: {err}"));
        assert_eq!(buf, e.pt, "encryption {i}");
    }
    for x in &v.exports {
        let mut out = vec![0u8; x.len];
        ctx.export(&x.exporter_context, &mut out).unwrap();
        assert_eq!(out, x.exported_value);
    }
}

#[test]
fn receiver_rejects_vector_ciphertext_out_of_sequence() {
    let v = vector();
    let key = ServerKey::derive(0, &array32(&v.ikm_r));
    let mut ctx = setup_receiver(&key.secret, &array32(&v.enc), &v.info).unwrap();
    // Encryption 1 under sequence number 0 must not open.
    let e = &v.encryptions[1];
    let (body, tag) = e.ct.split_at(e.ct.len() - crate::TAG_LEN);
    let tag = hpke::aead::AeadTag::<Aead>::from_bytes(tag).unwrap();
    let mut buf = body.to_vec();
    assert!(
        ctx.open_inout_detached(InOutBuf::from(buf.as_mut_slice()), &e.aad, &tag)
            .is_err()
    );
}

#[test]
fn sender_reproduces_vector_enc_ciphertexts_and_exports() {
    let v = vector();
    let mut rng = FixedBytes(v.ikm_e.clone());
    let (enc, mut ctx) = setup_sender(&array32(&v.pk_rm), &v.info, &mut rng).unwrap();
    assert_eq!(enc.as_slice(), v.enc.as_slice());
    for (i, e) in v.encryptions.iter().enumerate() {
        let mut buf = e.pt.clone();
        let tag = ctx
            .seal_inout_detached(InOutBuf::from(buf.as_mut_slice()), &e.aad)
            .unwrap();
        buf.extend_from_slice(&tag.to_bytes());
        assert_eq!(buf, e.ct, "encryption {i}");
    }
    for x in &v.exports {
        let mut out = vec![0u8; x.len];
        ctx.export(&x.exporter_context, &mut out).unwrap();
        assert_eq!(out, x.exported_value);
    }
}

/// The in-place functions give the same bytes as the allocating ones (same ephemeral key from the
/// vector's `ikmE`, same response nonce), open each other's output, and refuse a tampered tag.
#[test]
fn in_place_seal_and_open_match_the_allocating_versions_on_vector_keys() {
    use crate::{REQUEST_PREFIX_LEN, RESPONSE_NONCE_LEN, TAG_LEN, seal_request_in_place};

    let v = vector();
    let key = ServerKey::derive(3, &array32(&v.ikm_r));
    let config = key.config();
    for e in v.encryptions.iter().take(4).chain(v.encryptions.last()) {
        let plaintext = &e.pt;
        let (alloc, alloc_opener) =
            crate::seal_request(&config, plaintext, &mut FixedBytes(v.ikm_e.clone())).unwrap();
        let mut buf = Vec::with_capacity(REQUEST_PREFIX_LEN + plaintext.len() + TAG_LEN);
        buf.resize(REQUEST_PREFIX_LEN, 0xee);
        buf.extend_from_slice(plaintext);
        let ptr = buf.as_ptr();
        let opener =
            seal_request_in_place(&config, &mut buf, &mut FixedBytes(v.ikm_e.clone())).unwrap();
        assert_eq!(buf, alloc);
        assert_eq!(buf.as_ptr(), ptr, "sealed without moving");
        // The enc is the vector's: the ephemeral key came from ikmE.
        assert_eq!(&buf[7..REQUEST_PREFIX_LEN], v.enc.as_slice());

        // Opened in place: the same plaintext as the allocating open, where the range says.
        let (copied, sealer_a) = key.open_request(&alloc).unwrap();
        let (range, sealer_b) = key.open_request_in_place(&mut buf).unwrap();
        assert_eq!(range, REQUEST_PREFIX_LEN..alloc.len() - TAG_LEN);
        assert_eq!(&buf[range], plaintext.as_slice());
        assert_eq!(copied.as_slice(), plaintext.as_slice());

        // Responses: same nonce bytes in → same sealed bytes out, either way.
        let nonce = vec![0x42; RESPONSE_NONCE_LEN];
        let sealed = sealer_a
            .seal(plaintext, &mut FixedBytes(nonce.clone()))
            .unwrap();
        let mut rbuf = vec![0u8; RESPONSE_NONCE_LEN];
        rbuf.extend_from_slice(plaintext);
        sealer_b
            .seal_in_place(&mut rbuf, &mut FixedBytes(nonce))
            .unwrap();
        assert_eq!(rbuf, sealed);
        let opened = alloc_opener.open(&sealed).unwrap();
        assert_eq!(opened.as_slice(), plaintext.as_slice());
        let range = opener.open_in_place(&mut rbuf).unwrap();
        assert_eq!(range, RESPONSE_NONCE_LEN..sealed.len() - TAG_LEN);
        assert_eq!(&rbuf[range], plaintext.as_slice());
    }
}

#[test]
fn in_place_open_refuses_a_tampered_tag_and_zeroes_the_body() {
    use crate::{REQUEST_PREFIX_LEN, RESPONSE_NONCE_LEN};

    let v = vector();
    let key = ServerKey::derive(3, &array32(&v.ikm_r));
    let plaintext = b"in place, tampered";
    let (mut request, _) =
        crate::seal_request(&key.config(), plaintext, &mut FixedBytes(v.ikm_e.clone())).unwrap();
    let last = request.len() - 1;
    request[last] ^= 1;
    let ciphertext = request.clone();
    assert!(key.open_request_in_place(&mut request).is_err());
    assert!(
        request[REQUEST_PREFIX_LEN..last - 15]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        request[..REQUEST_PREFIX_LEN],
        ciphertext[..REQUEST_PREFIX_LEN]
    );

    // A good request, a response with a flipped tag bit: refused, body zeroed.
    let (request, opener) =
        crate::seal_request(&key.config(), plaintext, &mut FixedBytes(v.ikm_e.clone())).unwrap();
    let (_, sealer) = key.open_request(&request).unwrap();
    let mut response = sealer
        .seal(plaintext, &mut FixedBytes(vec![7; RESPONSE_NONCE_LEN]))
        .unwrap();
    let last = response.len() - 1;
    response[last] ^= 0x80;
    assert!(opener.open_in_place(&mut response).is_err());
    assert!(
        response[RESPONSE_NONCE_LEN..last - 15]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn in_place_seal_needs_headroom_and_moves_only_without_spare_capacity() {
    use crate::{REQUEST_PREFIX_LEN, RESPONSE_NONCE_LEN, SealError, seal_request_in_place};

    let v = vector();
    let key = ServerKey::derive(1, &array32(&v.ikm_r));
    let mut short = vec![1u8; REQUEST_PREFIX_LEN - 1];
    assert_eq!(
        seal_request_in_place(&key.config(), &mut short, &mut FixedBytes(v.ikm_e.clone())).err(),
        Some(SealError::MissingHeadroom {
            len: REQUEST_PREFIX_LEN - 1,
            min: REQUEST_PREFIX_LEN
        })
    );
    assert!(short.is_empty(), "wiped on error");

    // No spare capacity: still the same bytes (moved once into a buffer with room).
    let plaintext = b"exact capacity";
    let mut exact = vec![0u8; REQUEST_PREFIX_LEN];
    exact.extend_from_slice(plaintext);
    exact.shrink_to_fit();
    let opener =
        seal_request_in_place(&key.config(), &mut exact, &mut FixedBytes(v.ikm_e.clone())).unwrap();
    let (alloc, _) =
        crate::seal_request(&key.config(), plaintext, &mut FixedBytes(v.ikm_e.clone())).unwrap();
    assert_eq!(exact, alloc);

    let (_, sealer) = key.open_request(&alloc).unwrap();
    let mut tiny = vec![0u8; RESPONSE_NONCE_LEN - 1];
    assert!(matches!(
        sealer.seal_in_place(&mut tiny, &mut FixedBytes(vec![0; 32])),
        Err(SealError::MissingHeadroom { .. })
    ));
    assert!(tiny.is_empty());
    drop(opener);
}
