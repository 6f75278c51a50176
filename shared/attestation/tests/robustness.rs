//! Property tests: no input makes the verifier panic, and no single-byte change to a real document
//! still verifies.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use sealed_attestation::{PcrPolicy, TrustAnchor, VerifyOptions, cose, verify};

const NITRITE: &[u8] = include_bytes!("data/nitrite-2024-09-07.cbor");
const VALIDATOR: &[u8] = include_bytes!("data/nitro-validator-2026-01-03.cbor");
const NITRITE_TS: u64 = 1_725_719_859_545;
const VALIDATOR_TS: u64 = 1_767_472_867_402;

fn opts(now_ms: u64) -> VerifyOptions {
    VerifyOptions {
        trust_anchor: TrustAnchor::aws_nitro_root_g1(),
        pcr_policy: PcrPolicy::AcceptAny,
        expected_nonce: None,
        max_age: None,
        allow_debug: true,
        now: UNIX_EPOCH + Duration::from_millis(now_ms),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        prop_assert!(verify(&bytes, &opts(NITRITE_TS)).is_err());
        let _ = cose::parse(&bytes);
    }

    #[test]
    fn cbor_shaped_prefixes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        // Start like a real document so that decoding gets past the first bytes.
        let mut doc = vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0];
        doc.extend_from_slice(&tail);
        prop_assert!(verify(&doc, &opts(NITRITE_TS)).is_err());
    }

    #[test]
    fn single_byte_change_never_verifies(pos in 0..NITRITE.len(), xor in 1u8..=255) {
        let mut doc = NITRITE.to_vec();
        doc[pos] ^= xor;
        prop_assert!(verify(&doc, &opts(NITRITE_TS)).is_err());
    }

    #[test]
    fn truncation_and_insertion_never_verify(
        cut in 0..VALIDATOR.len(),
        insert_at in 0..VALIDATOR.len(),
        byte in any::<u8>(),
    ) {
        prop_assert!(verify(&VALIDATOR[..cut], &opts(VALIDATOR_TS)).is_err());
        let mut doc = VALIDATOR.to_vec();
        doc.insert(insert_at, byte);
        prop_assert!(verify(&doc, &opts(VALIDATOR_TS)).is_err());
    }
}
